"""The cuda backend's runtime: the array module switch, availability checks with one-line
errors, memory estimates, and how kernels are compiled and launched.

Array module.  `xp()` is CuPy on a real GPU.  In simulator mode it is the strict NumPy
stand-in `cuda_fakecupy` (NumPy arrays that refuse implicit host conversions, as CuPy does),
and numba-cuda kernels run in numba's CUDA simulator.  Simulator mode is on when

    NUMBA_ENABLE_CUDASIM=1     (numba's own switch), or
    LANGEVIN_SIM_CUDA_SIM=1    (this package's switch; sets the former)

set before numba.cuda is imported (numba's config is reloaded where numba itself was).

It is how CI and machines without a GPU run the whole backend, at tiny sizes (the simulator
runs every CUDA thread as a Python thread).  In simulator mode the stand-in is registered as
``sys.modules["cupy"]`` (when no real CuPy is imported), so that code dispatching on CuPy
(`potentials.base.array_module`) sees it.

Errors.  `require()` raises a one-line `BackendUnavailableError` naming the fix for: CuPy
missing (the extra to install), numba-cuda missing, no GPU visible, a driver older than the
CUDA toolkit CuPy was built for; `check_memory` / `out_of_memory_error` say how many
replicas fit when the device memory does not suffice.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import sys
import threading

import numpy as np

from ..errors import BackendUnavailableError, ConfigError

SIM_ENV = "LANGEVIN_SIM_CUDA_SIM"
THREADS_ENV = "LANGEVIN_SIM_CUDA_THREADS"
GRAPH_ENV = "LANGEVIN_SIM_CUDA_GRAPH_STEPS"
INSTALL = ('pip install -e ".[cuda12]" (CUDA 12 driver) or -e ".[cuda13]" (CUDA 13 driver) '
           '(or pip install "langevin_sim[cuda12]" / "langevin_sim[cuda13]")')


# ---------------------------------------------------------------- simulator mode

def simulated() -> bool:
    """True when the backend runs under numba's CUDA simulator with the NumPy stand-in."""
    if os.environ.get(SIM_ENV, "") not in ("", "0"):
        return True
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0"):
        return True
    if "numba" in sys.modules:
        from numba.core import config
        return bool(config.ENABLE_CUDASIM)
    return False


def _enable_numba_simulator() -> None:
    """Make numba.cuda the simulator when LANGEVIN_SIM_CUDA_SIM=1 or NUMBA_ENABLE_CUDASIM=1
    asked for it, also where numba was imported before the switch was set (as `import
    langevin_sim` does; call before importing numba.cuda; a no-op outside simulator mode)."""
    if not simulated():
        return
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" not in sys.modules:
        return
    from numba.core import config
    if config.ENABLE_CUDASIM:
        return
    if "numba.cuda" in sys.modules:
        switch = SIM_ENV if os.environ.get(SIM_ENV, "") not in ("", "0") else "NUMBA_ENABLE_CUDASIM"
        raise ConfigError(f"{switch}=1 but numba.cuda was imported before in this process "
                          "without the simulator; set NUMBA_ENABLE_CUDASIM=1 before starting "
                          "Python instead")
    config.reload_config()


@functools.lru_cache(maxsize=None)
def xp():
    """The array module of device arrays: CuPy, or the NumPy stand-in in simulator mode."""
    if simulated():
        from . import cuda_fakecupy

        _enable_numba_simulator()
        have = sys.modules.get("cupy")
        if have is not None and not getattr(have, "FAKE", False):
            raise ConfigError("simulator mode (NUMBA_ENABLE_CUDASIM=1) uses a NumPy stand-in for "
                              "CuPy, but the real CuPy is already imported in this process; "
                              "start a fresh process with the simulator switch set")
        sys.modules["cupy"] = cuda_fakecupy
        return cuda_fakecupy
    return _import_cupy()


def asnumpy(a) -> np.ndarray:
    """A host (NumPy) copy of a device array."""
    return xp().asnumpy(a)


def is_fake(mod) -> bool:
    return bool(getattr(mod, "FAKE", False))


def empty_pinned(shape: tuple, dtype) -> np.ndarray:
    """An uninitialized C-contiguous NumPy array of `shape` and `dtype` in page-locked host
    memory (`cupyx.empty_pinned`; the stand-in's plain array in simulator mode): the target
    of device -> host copies at full bus bandwidth (`ndarray.get(out=...)`)."""
    mod = xp()
    if is_fake(mod):
        return mod.empty_pinned(shape, dtype)
    import cupyx
    return cupyx.empty_pinned(shape, dtype)


class CopyStream:
    """Device -> host copies that run on a stream of their own while the compute stream goes
    on (the copy engine works beside the kernels): `start` queues copies ordered after all
    work queued so far, `wait` blocks until they are done.  The device arrays must not be
    written, and the host arrays not read, until `wait` returns (`start` keeps references to
    both); the host arrays should be page-locked (`empty_pinned`), or the copy is staged and
    synchronous."""

    def __init__(self):
        self._cuda = xp().cuda
        self._stream = self._cuda.Stream(non_blocking=True)
        self._done = None
        self._held: tuple = ()

    def start(self, pairs: list) -> None:
        """Queue the copies `dev.get(out=host)` of `pairs` [(dev, host)] after the work queued
        on the current stream; one batch is in flight at a time (an unfinished one is
        waited for first)."""
        self.wait()
        ready = self._cuda.Event(disable_timing=True)
        ready.record(self._cuda.get_current_stream())
        self._stream.wait_event(ready)
        for dev, host in pairs:
            dev.get(out=host, stream=self._stream, blocking=False)
        self._done = self._cuda.Event(disable_timing=True)
        self._done.record(self._stream)
        self._held = tuple(pairs)

    def wait(self) -> None:
        """Block until the copies started last are in their host arrays."""
        if self._done is not None:
            self._done.synchronize()
        self._done, self._held = None, ()


# ---------------------------------------------------------------- availability

def _import_cupy():
    try:
        import cupy
    except ModuleNotFoundError as e:
        if e.name in ("cupy", None):
            raise cupy_missing_error() from None
        raise cupy_broken_error(f"{type(e).__name__}: {e}") from None
    except ImportError as e:       # installed, but its CUDA libraries do not load
        raise cupy_broken_error(f"{type(e).__name__}: {e}") from None
    return cupy


def cupy_missing_error() -> BackendUnavailableError:
    return BackendUnavailableError(f"backend 'cuda' needs CuPy: {INSTALL}, on a machine with an "
                                   "NVIDIA GPU; or use backend='numba'")


def one_line(detail: str, limit: int = 200) -> str:
    """An exception's text as one line of at most `limit` characters (numba's CUDA errors
    span several lines: "Error at driver init: \n\nCUDA driver library cannot be found...")."""
    text = " ".join(str(detail).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def cupy_broken_error(detail: str) -> BackendUnavailableError:
    first = detail.splitlines()[0][:200] if detail else ""
    return BackendUnavailableError(f"CuPy is installed but does not load ({first}): its CUDA "
                                   "libraries are missing or do not match the driver; install the "
                                   "extra for your driver's CUDA major: " + INSTALL)


def numba_cuda_missing_error(detail: str = "") -> BackendUnavailableError:
    why = f" ({one_line(detail)})" if detail else ""
    return BackendUnavailableError(f"backend 'cuda' needs numba-cuda{why}: {INSTALL} (it brings "
                                   "numba-cuda), or pip install 'numba-cuda[cu12]' (CUDA 12 driver) or "
                                   "'numba-cuda[cu13]' (CUDA 13)")


def no_gpu_error(detail: str = "") -> BackendUnavailableError:
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = f"; CUDA_VISIBLE_DEVICES={vis!r}" if vis is not None else ""
    why = f" ({one_line(detail)})" if detail else ""
    return BackendUnavailableError(f"backend 'cuda' found no GPU{why}{shown}: run on a machine "
                                   "with an NVIDIA GPU and driver (nvidia-smi lists it), or use "
                                   "backend='numba'")


EXTRA_MAJORS = (12, 13)    # the CUDA majors with an extra (setup.cfg: cuda12, cuda13)


def driver_mismatch_error(driver: int, runtime: int) -> BackendUnavailableError:
    """The driver (CUDA version `driver`, e.g. 12040) is older than the toolkit CuPy was
    built for (`runtime`); the fix names the extra for the driver's CUDA major when there is
    one, else says to update the driver."""
    major = driver // 1000
    fix = (f"install the CuPy for your driver ('langevin_sim[cuda{major}]'), or update the driver"
           if major in EXTRA_MAJORS else
           "update the driver: the extras need CUDA " + " or ".join(map(str, EXTRA_MAJORS)) +
           " (" + ", ".join(f"'langevin_sim[cuda{m}]'" for m in EXTRA_MAJORS) + ")")
    return BackendUnavailableError(
        f"the NVIDIA driver supports CUDA up to {_version(driver)} but CuPy was built for CUDA "
        f"{_version(runtime)}: {fix}")


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def numba_cuda_installed() -> bool:
    """Whether the numba-cuda package (the maintained CUDA target of numba) is installed."""
    try:
        importlib.metadata.version("numba-cuda")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@functools.lru_cache(maxsize=None)
def require() -> str:
    """Check that the cuda backend can run here; returns a one-line description of the
    device.  Raises a one-line BackendUnavailableError otherwise."""
    mod = xp()
    numpy_compat()
    try:
        from numba import cuda
    except ImportError as e:   # numba without its CUDA target and no numba-cuda
        raise numba_cuda_missing_error(str(e)) from None
    if is_fake(mod):
        return "CUDA simulator (numba) with the NumPy stand-in for CuPy"
    runtime = mod.cuda.runtime
    try:
        n = runtime.getDeviceCount()
    except mod.cuda.runtime.CUDARuntimeError as e:
        msg = str(e)
        if "InsufficientDriver" in msg or "insufficient" in msg.lower():
            drv = _driver_version(runtime)
            if drv == 0:   # no driver at all: the CUDA runtime calls that an insufficient one
                raise no_gpu_error(f"no NVIDIA driver: {msg}") from None
            raise driver_mismatch_error(drv, runtime.runtimeGetVersion()) from None
        raise no_gpu_error(msg) from None
    if n < 1:
        raise no_gpu_error()
    drv, rt = _driver_version(runtime), runtime.runtimeGetVersion()
    if drv and rt and drv < rt and drv // 1000 != rt // 1000:
        raise driver_mismatch_error(drv, rt)
    try:          # CuPy's own kernels compile (NVRTC) and run: not first inside a step
        (mod.arange(2) + 1).sum().item()
    except Exception as e:  # noqa: BLE001 - any failure there is CuPy's libraries'
        raise cupy_broken_error(f"{type(e).__name__}: {e}") from None
    try:
        cuda.current_context()
    except Exception as e:  # numba's driver binding failed while CuPy works
        if not numba_cuda_installed():
            raise numba_cuda_missing_error(f"numba's built-in CUDA target failed: {e}") from None
        raise no_gpu_error(f"numba-cuda: {e}") from None
    configure_numba()
    props = runtime.getDeviceProperties(runtime.getDevice())
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return f"{name}, CUDA driver {_version(drv)}, runtime {_version(rt)}"


def configure_numba() -> list[str]:
    """numba's CUDA settings for this backend, set in every config module numba's CUDA target
    may read (the numba-cuda package reads `numba.cuda.core.config`: numba's own module where
    its import redirection maps it there, as with numba 0.68 and numba-cuda 0.30, its own copy
    otherwise; numba's built-in target `numba.core.config`).  Returns the modules set.

    - CUDA_ARRAY_INTERFACE_SYNC off: numba synchronizes the stream a CuPy array names (its
      CUDA array interface) at every conversion of a CuPy kernel argument, a host-blocking
      wait per launch (and an error inside a stream capture); numba-cuda launches on the
      legacy default stream and CuPy on it too, or on its per-thread default stream (with
      CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1), which synchronizes with the legacy one, so their
      work is ordered already.
    - CUDA_LOW_OCCUPANCY_WARNINGS off, unless NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS is set: the
      grid is the run's replica count (the warning comes at every launch of fewer than 128
      blocks, 16384 replicas), so it says nothing to act on (design_changes 63)."""
    done = []
    quiet = "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" not in os.environ
    for name in ("numba.cuda.core.config", "numba.core.config"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        mod.CUDA_ARRAY_INTERFACE_SYNC = False
        if quiet:
            mod.CUDA_LOW_OCCUPANCY_WARNINGS = False
        done.append(name)
    return done


def targets() -> str:
    """Which CuPy (none in simulator mode: the NumPy stand-in) and which numba CUDA target
    (the numba-cuda package or numba's built-in one) the backend uses here, with versions."""
    mod = xp()
    arrays = "" if is_fake(mod) else f"CuPy {mod.__version__}, "
    import numba
    if builtin_target():
        kernels = f"numba {numba.__version__}'s built-in CUDA target"
    else:
        kernels = f"numba-cuda {importlib.metadata.version('numba-cuda')}"
    return f"{arrays}kernels by {kernels}"


@functools.lru_cache(maxsize=None)
def builtin_target() -> bool:
    """Whether `numba.cuda` is numba's built-in CUDA target (not the numba-cuda package)."""
    from numba import cuda as target
    return "numba_cuda" not in (getattr(target, "__file__", None) or "")


def _driver_version(runtime) -> int:
    try:
        return int(runtime.driverGetVersion())
    except Exception:
        return 0


def device_count() -> int:
    """GPUs visible to this process (CUDA_VISIBLE_DEVICES, else nvidia-smi, else CuPy);
    1 in simulator mode."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        return len([v for v in vis.split(",") if v.strip() not in ("", "-1")])
    if simulated():
        return 1
    import shutil
    import subprocess
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
            if n:
                return n
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return int(_import_cupy().cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def preflight() -> None:
    """The checks of `require` that need no CUDA context in this process, for a launcher that
    hands the GPUs to worker processes (a local scan of cuda points): CuPy installed and at
    least one GPU visible (`device_count`), else `require`'s one-line errors.  Nothing in
    simulator mode."""
    if simulated():
        return
    import importlib.util
    if importlib.util.find_spec("cupy") is None:
        raise cupy_missing_error()
    if device_count() < 1:
        raise no_gpu_error()


# ---------------------------------------------------------------- memory

def state_bytes_per_replica(sim) -> int:
    """Bytes of one replica's state (all state arrays, the divergence flag)."""
    return int(sum(v.nbytes // max(1, v.shape[0]) for v in sim.state.values())) + 8


RECORD_BLOCK_BYTES = 128 << 20   # a record's potential code runs on blocks of rows of this
WORK_FACTOR = 4.0                # temporaries of the potential's array code, per array it maps


def sample_bytes(potential) -> float:
    """Bytes of the potential's data per sample of a finite sum (its arrays over
    `n_samples`: a row of inputs and its label, test sets included), 0 for other potentials:
    what its array code makes per replica and sample (a minibatch's gathered rows, a net's
    activations, the residuals of every sample at a record)."""
    n = getattr(potential, "n_samples", None)
    return potential_bytes(potential) / n if n else 0.0


def record_bytes_per_row(potential) -> int:
    """Device bytes the potential's own code takes per replica at a record: the float64
    positions and `WORK_FACTOR` copies, and per sample of a finite sum (all of them: the
    training loss, and the test and validation sets of observables) as many of its data."""
    return int((1 + WORK_FACTOR) * (8 * potential.d + potential_bytes(potential)
                                    * (getattr(potential, "n_samples", None) is not None)))


def record_rows(potential, M: int) -> int:
    """Replicas per block of a record's energy and observables on the device: all M, or as
    many as keep `record_bytes_per_row` within RECORD_BLOCK_BYTES (a finite sum of 4096
    samples held (M, n) float64 temporaries for all M replicas: 98 KB a replica, 166x the
    step's estimate)."""
    return int(max(1, min(M, RECORD_BLOCK_BYTES // max(1, record_bytes_per_row(potential)))))


def bytes_per_replica(sim, work_factor: float = WORK_FACTOR) -> int:
    """Estimated device bytes per replica: the state twice (double-buffered), then the larger
    of the generic path's gradient and `work_factor` gradient-sized temporaries of the
    potential's own array code (on a finite sum, also per sample of a step's minibatch, or
    of all samples without one: `sample_bytes` each) and the buffers of the fused kernel that
    runs `sim` (its registered `workspace(sim)`, e.g. p-spin's packed products).  A record's
    potential code runs in blocks of bounded size (`record_rows`): `check_memory` adds one."""
    from .cuda_backend import fused_entry

    pot, item = sim.potential, sim.dtype.itemsize
    k = fused_entry(sim)
    own = k.workspace(sim) if k is not None and k.workspace is not None else 0
    generic = (1 + work_factor) * pot.d * item
    if k is None and getattr(pot, "n_samples", None):
        per_step = getattr(sim.dynamics, "batch_size", None) or pot.n_samples
        generic += (1 + work_factor) * per_step * sample_bytes(pot)
    return int(2 * state_bytes_per_replica(sim) + max(generic, own))


def fixed_bytes(sim) -> int:
    """Device bytes beside `bytes_per_replica` times the replicas: the potential's arrays,
    and on a finite sum one block of a record's per-sample temporaries (`record_rows`: at
    most RECORD_BLOCK_BYTES whatever the replicas; other potentials' record temporaries are
    those of a step, within the per-replica estimate)."""
    pot = sim.potential
    if getattr(pot, "n_samples", None) is None:
        return potential_bytes(pot)
    return potential_bytes(pot) + record_rows(pot, sim.n_replicas) * record_bytes_per_row(pot)


def potential_bytes(potential) -> int:
    """Bytes of the potential's arrays (its instance data, copied to the device once)."""
    return int(sum(np.asarray(v).nbytes for v in potential.arrays().values()))


def free_device_bytes() -> tuple[int, int]:
    """(free, total) bytes of the current device (simulator: this machine's memory as a
    stand-in, so the estimate still runs)."""
    mod = xp()
    if is_fake(mod):
        try:
            pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            return int(pages * size), int(os.sysconf("SC_PHYS_PAGES") * size)
        except (ValueError, OSError):
            return 1 << 40, 1 << 40
    free, total = mod.cuda.runtime.memGetInfo()
    pool = mod.get_default_memory_pool()
    return int(free + pool.free_bytes()), int(total)


def replicas_that_fit(sim, free: int) -> int:
    """Replicas of `sim` whose estimate (`bytes_per_replica`) fits in `free` bytes of device
    memory beside the potential's data, with a 10 % margin."""
    per = bytes_per_replica(sim)
    return max(0, int((free - fixed_bytes(sim)) * 0.9 // per))


def out_of_memory_error(sim, free: int | None = None, total: int | None = None) -> BackendUnavailableError:
    """One line: the replicas asked for, the estimate per replica, and how many would fit
    (free, total: device bytes; measured now when not given).  Where the device ran out
    although the estimate fits the replicas asked for (a path needing more than the
    estimate), it says so and asks for half; where not one replica fits, that the memory is
    held elsewhere."""
    if free is None:
        try:
            free, total = free_device_bytes()
        except Exception:
            free, total = 0, 0
    per, M = bytes_per_replica(sim), sim.n_replicas
    fit = replicas_that_fit(sim, free)
    gib = 2.0 ** 30
    if fit >= M:
        fix = (f"this run's path needs more than that estimate: use fewer replicas (replicas <= "
               f"{max(1, M // 2)}, say), or split them over runs with "
               "Simulation(first_replica=...)")
    elif fit == 0:
        fix = ("not one replica fits: free the GPU's memory (nvidia-smi lists the processes "
               "holding it) or use another GPU")
    else:
        fix = (f"use replicas <= {fit}, or split them over runs with "
               "Simulation(first_replica=...)")
    return BackendUnavailableError(
        f"out of GPU memory: {M} replicas of {type(sim.potential).__name__} x "
        f"{type(sim.dynamics).__name__} need about {M * per / gib:.2f} GiB ({per} bytes per replica, "
        f"plus {fixed_bytes(sim) / gib:.2f} GiB of potential data and record blocks) but "
        f"{free / gib:.2f} of {total / gib:.2f} GiB are free: {fix}")


def check_memory(sim) -> None:
    """Raise `out_of_memory_error` before uploading when the estimate (bytes:
    `bytes_per_replica` times the replicas, plus `fixed_bytes`) exceeds the device's
    free bytes."""
    free, total = free_device_bytes()
    need = sim.n_replicas * bytes_per_replica(sim) + fixed_bytes(sim)
    if need > free:
        raise out_of_memory_error(sim, free, total)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is CuPy's or numba-cuda's out-of-memory error."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "CUDA_ERROR_OUT_OF_MEMORY" in str(exc) or \
        "cudaErrorMemoryAllocation" in str(exc)


# ---------------------------------------------------------------- compile and launch

# NumPy names removed after NumPy 2.0 that are plain renames of what remains
RENAMED = {"row_stack": "vstack", "trapz": "trapezoid", "round_": "round"}


def numpy_compat() -> None:
    """Let numba-cuda <= 0.30.4 compile kernels under NumPy >= 2.5: its typing registry
    overloads `np.row_stack`, which NumPy 2.5 removed (an AttributeError at the first
    compilation otherwise), so the name is given back as what it was, `np.vstack`; likewise
    the other removed plain renames (`RENAMED`) that older numba-cuda releases may overload.
    A no-op where NumPy has them.  Called before numba's CUDA target compiles anything."""
    for old, new in RENAMED.items():
        if not hasattr(np, old) and hasattr(np, new):
            setattr(np, old, getattr(np, new))


@functools.lru_cache(maxsize=None)
def cuda():
    """numba.cuda (the simulator in simulator mode, its blocks synchronized without a busy
    wait: `cuda_simulator`).  Set up once per process (numba.cuda's mode is fixed at its
    import); `kernel_arrays` calls it at every launch."""
    _enable_numba_simulator()
    numpy_compat()
    from numba import cuda as mod
    from numba.core import config
    if config.ENABLE_CUDASIM:
        from .cuda_simulator import use_condition_barriers
        use_condition_barriers()
    return mod


def offline_compiler(cc: tuple[int, int] = (9, 0)):
    """numba.cuda set up to compile kernels to PTX (`numba.cuda.compile_ptx`) without a GPU,
    as for a device of compute capability `cc`: needs numba-cuda and libNVVM (the CUDA
    toolkit's, or the `nvidia-cuda-nvcc` wheel's), not a driver.  Not in simulator mode.
    Raises BackendUnavailableError naming what is missing."""
    import types

    if simulated():
        raise BackendUnavailableError("offline compilation needs the real CUDA target: unset "
                                      "NUMBA_ENABLE_CUDASIM and LANGEVIN_SIM_CUDA_SIM")
    numpy_compat()
    try:
        import numba.cuda.dispatcher as dispatcher
        from numba import cuda as mod
        from numba.cuda.cudadrv import nvvm
        available = nvvm.is_available() and hasattr(dispatcher, "get_current_device")
    except Exception as e:           # any import failure: the same fix
        raise BackendUnavailableError(f"offline compilation needs numba-cuda ({e!r:.120}): "
                                      + INSTALL) from None
    if not available:
        raise BackendUnavailableError("offline compilation needs libNVVM: install the CUDA "
                                      "toolkit (set CUDA_HOME) or pip install "
                                      "nvidia-cuda-nvcc-cu12")
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    return mod


@functools.lru_cache(maxsize=None)
def primitives() -> dict:
    """`rng.py`'s target-dependent primitives for numba-cuda: the scalar forms of
    `backends.jit.PRIMITIVES`, and on a real device libdevice's bit casts (the reference's
    NumPy `.view` casts run only in the simulator)."""
    from .jit import PRIMITIVES

    if simulated():
        return dict(PRIMITIVES)
    from numba.cuda import libdevice

    i32, i64, f32, f64 = np.int32, np.int64, np.float32, np.float64

    # closures (compile_functions keeps them): libdevice's casts with their exact argument
    # types, since numba widens int32 arithmetic (`bits & MANT32 | ONE32`) to int64
    def float_bits(x):
        return libdevice.double_as_longlong(f64(x))

    def bits_float(b):
        return libdevice.longlong_as_double(i64(b))

    def float32_bits(x):
        return libdevice.float_as_int(f32(x))

    def bits_float32(b):
        return libdevice.int_as_float(i32(b))

    # np.sqrt and np.floor do not compile for numba-cuda: libdevice's, type-preserving
    def sqrt32(x):
        return libdevice.sqrtf(f32(x))

    def floor(x):
        return libdevice.floor(f64(x))

    def floor32(x):
        return libdevice.floorf(f32(x))

    return dict(PRIMITIVES, float_bits=float_bits, bits_float=bits_float,
                float32_bits=float32_bits, bits_float32=bits_float32, sqrt32=sqrt32,
                floor=floor, floor32=floor32)


def device_compile(module, names):
    """`jit.compile_functions` for numba-cuda device functions: the reference scalar
    functions `names` of `module`, compiled unchanged (one algorithm, another target)."""
    from .jit import compile_functions

    c = cuda()
    return compile_functions(module, names, compiler=c.jit(device=True), primitives=primitives())


def threads_per_block() -> int:
    """Threads per block: 128 on a GPU; 4 in the simulator, so that tiny tests span several
    blocks (and the simulator's thread-per-CUDA-thread cost stays small).  Override with
    LANGEVIN_SIM_CUDA_THREADS."""
    v = os.environ.get(THREADS_ENV)
    if v:
        return max(1, int(v))
    return 4 if simulated() else 128


def kernel_arrays(*arrays) -> tuple:
    """Device arrays as numba-cuda takes them at least cost, for kernels launched many times
    on the same arrays: numba device-array views of CuPy arrays (no copy; numba converts a
    CuPy argument at every launch otherwise), the wrapped NumPy arrays in the simulator."""
    if simulated():
        from .cuda_fakecupy import ndarray as fake
        return tuple(a._a if isinstance(a, fake) else a for a in arrays)
    c = cuda()
    return tuple(c.as_cuda_array(a) if hasattr(a, "__cuda_array_interface__") else a
                 for a in arrays)


_LAUNCH_STREAM: list = []   # numba's handle of the capturing stream, while one captures


def launch(kernel, n: int, *args, block: tuple = (0, 1)) -> None:
    """Run `kernel` on n threads (one per replica), arguments as device arrays or scalars,
    on the default stream (on the capturing stream inside `capture`, where it is recorded);
    block = (R, L) with L > 1: blocks of R replicas x L threads each, ceil(n / R) of them
    (`cuda_kernels.gemm_step`'s sliced kernel).  Tuples of arrays are arguments too (the
    generic path's kernels); numba's built-in target gets numba views of their CuPy arrays.
    In simulator mode the stand-in arrays are handed to numba as the NumPy arrays they wrap
    (the simulator copies top-level ones in and back);
    inside `capture` the launch is recorded with these arguments and runs when the graph is
    launched."""
    if n <= 0:
        return
    tpb = threads_per_block() if block[1] == 1 else block
    per = tpb if block[1] == 1 else block[0]
    grid = (n + per - 1) // per
    smem = 0 if block[1] == 1 else 8 * block[0] * block[1]   # `cuda_kernels.lane_ops`' sums
    if simulated():
        from . import cuda_fakecupy as fake
        args = tuple(fake.unwrapped(a) for a in args)
        config = (grid, tpb, 0, smem) if smem else (grid, tpb)
        if fake.capturing():    # configured at replay: the simulator's kernel[config] sets
            fake.record(lambda: kernel[config](*args))     # the shared kernel object's grid
        else:
            kernel[config](*args)
        return
    if builtin_target():   # it types no tuple of CuPy arrays (numba#8483; numba-cuda does):
        args = tuple(kernel_arrays(*a) if isinstance(a, tuple) else a for a in args)  # views
    if _LAUNCH_STREAM or smem:
        kernel[grid, tpb, _LAUNCH_STREAM[-1] if _LAUNCH_STREAM else 0, smem](*args)
    else:
        kernel[grid, tpb](*args)


def lane_block(lanes: int) -> tuple:
    """(R, lanes): a block of R replicas x `lanes` threads each (`launch`'s block): R = 32 on
    a GPU (a warp holds one slice of 32 consecutive replicas), `threads_per_block` (4) in the
    simulator; (0, 1) for one thread per replica."""
    if lanes <= 1:
        return (0, 1)
    return (min(32, threads_per_block()), lanes)


# ---------------------------------------------------------------- GEMM

def gemm_args(a_shape: tuple, a_c: bool, b_shape: tuple, b_c: bool) -> tuple:
    """The column-major cuBLAS call computing the C-contiguous ``out (m, n) = a (m, k) @ b (k,
    n)``: ``(op_b, op_a, n, m, k, ldb, lda, ldc)`` for ``gemm(op_b, op_a, n, m, k, 1, b, ldb,
    a, lda, 0, out, ldc)``, i.e. out^T = b^T a^T read from the same buffers.  a_c / b_c: the
    operand is C-contiguous (else Fortran-contiguous); op 0 = N, 1 = T."""
    (m, k), (k2, n) = a_shape, b_shape
    if k2 != k:
        raise ValueError(f"gemm: shapes {a_shape} and {b_shape} do not chain")
    return (0 if b_c else 1, 0 if a_c else 1, n, m, k,
            max(1, n if b_c else k), max(1, k if a_c else m), max(1, n))


_CUBLAS: dict = {}          # device id -> _Cublas, or None where it cannot be made
_CUBLAS_LOCK = threading.Lock()
CUBLAS_WORKSPACE = 32 << 20  # bytes: cuBLAS's recommendation for Hopper (enough before it)


class _Cublas:
    """This process's own cuBLAS handle on one device, with its own workspace and the stream
    it is bound to, from the library CuPy loaded; per dtype the gemm and its (1, 0)."""

    def __init__(self, mod):
        import ctypes

        mod.cuda.device.get_cublas_handle()          # CuPy loads libcublas
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "/libcublas.so" in ln}
        if not paths:
            raise RuntimeError("libcublas is not loaded")
        lib = ctypes.CDLL(min(paths))
        self.handle = ctypes.c_void_p()
        if lib.cublasCreate_v2(ctypes.byref(self.handle)) != 0:
            raise RuntimeError("cublasCreate_v2 failed")
        for f in (lib.cublasSgemm_v2, lib.cublasDgemm_v2):
            f.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 5 + [
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.cublasSetStream_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.cublasSetWorkspace_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        self.lib, self.stream = lib, None
        self.work = mod.empty(CUBLAS_WORKSPACE, dtype=np.uint8)
        self.gemm = {np.dtype(np.float32): (lib.cublasSgemm_v2, ctypes.byref(ctypes.c_float(1)),
                                            ctypes.byref(ctypes.c_float(0))),
                     np.dtype(np.float64): (lib.cublasDgemm_v2, ctypes.byref(ctypes.c_double(1)),
                                            ctypes.byref(ctypes.c_double(0)))}

    def bind(self, stream: int) -> None:
        """Queue on `stream` (setting a stream resets the workspace to cuBLAS's pool, so it
        is set again)."""
        if self.stream != stream:
            if (self.lib.cublasSetStream_v2(self.handle, stream) or
                    self.lib.cublasSetWorkspace_v2(self.handle, self.work.data.ptr,
                                                   self.work.nbytes)):
                raise RuntimeError("cuBLAS: binding the stream or the workspace failed")
            self.stream = stream


def _cublas(mod):
    """The current device's `_Cublas` (made once; None where it cannot be made)."""
    dev = mod.cuda.Device().id
    if dev not in _CUBLAS:
        try:
            _CUBLAS[dev] = _Cublas(mod)
        except Exception:   # noqa: BLE001 - then CuPy's matmul (graphs of GEMMs fail, and say so)
            _CUBLAS[dev] = None
    return _CUBLAS[dev]


def gemm(a, b, out) -> None:
    """``out[...] = a @ b`` for 2-D device arrays of one float dtype (`out` C-contiguous, `a`
    and `b` C- or Fortran-contiguous), queued on the current stream.  On a GPU cuBLAS is called
    through a handle of this module's own with its own workspace: CuPy refuses every cuBLAS
    call while a stream captures a CUDA graph (13.6 to 14.2: "calling cuBLAS API during stream
    capture is currently unsupported"), while cuBLAS itself captures fine when the workspace
    is the caller's.  Elsewhere (the simulator, other dtypes or layouts) it is CuPy's matmul."""
    mod = xp()
    c = None if is_fake(mod) else _cublas(mod)
    fa, fb = a.flags, b.flags
    if (c is None or out.dtype not in c.gemm or a.dtype != out.dtype or b.dtype != out.dtype
            or not out.flags.c_contiguous or not (fa.c_contiguous or fa.f_contiguous)
            or not (fb.c_contiguous or fb.f_contiguous)
            or out.shape != (a.shape[0], b.shape[1]) or max(*a.shape, *b.shape) >= 2 ** 31):
        mod.matmul(a, b, out=out)
        return
    op_b, op_a, n, m, k, ldb, lda, ldc = gemm_args(a.shape, fa.c_contiguous, b.shape,
                                                   fb.c_contiguous)
    fn, one, zero = c.gemm[out.dtype]
    with _CUBLAS_LOCK:
        c.bind(mod.cuda.get_current_stream().ptr)
        status = fn(c.handle, op_b, op_a, n, m, k, one, b.data.ptr, ldb, a.data.ptr, lda, zero,
                    out.data.ptr, ldc)
    if status:
        raise RuntimeError(f"cuBLAS {fn.__name__} failed with status {status}")


# ---------------------------------------------------------------- CUDA graphs

def graph_steps() -> int:
    """Steps per captured CUDA graph of the dense paths (`capture`): 32 on a GPU, 3 in the
    simulator (so that tiny tests replay graphs several times, with remainders); 0 turns
    graphs off.  Override with LANGEVIN_SIM_CUDA_GRAPH_STEPS."""
    v = os.environ.get(GRAPH_ENV)
    if v:
        return max(0, int(v))
    return 3 if simulated() else 32


_GRAPHS_FAILED: list = []   # why capture failed on this device (then graphs stay off)


def graphs_enabled() -> bool:
    return graph_steps() > 0 and not _GRAPHS_FAILED


def _refuse_allocation(size: int):
    raise MemoryError(f"a {size}-byte allocation from CuPy's pool during stream capture")


def capture(body):
    """The CUDA graph of the work `body()` queues: CuPy operations and `launch`es are recorded
    on a new non-blocking stream (CuPy's relaxed capture mode), nothing runs; the graph's
    ``launch()`` replays the same kernels with the same arguments (device pointers and scalar
    values as they were at capture) on the current stream.  The body must only launch kernels
    and write into preallocated arrays (a GEMM with ``out=``): CuPy's pool refuses to allocate
    during the capture, since an array freed after it would be reused while the graph still
    writes it.  On a GPU a capture that fails warns once and returns None, and graphs stay off
    in this process (the caller queues the work itself); in the simulator it raises."""
    mod = xp()
    stream = mod.cuda.Stream(non_blocking=True)
    if is_fake(mod):
        with stream:
            stream.begin_capture()
            try:
                body()
            finally:
                graph = stream.end_capture()
        return graph
    import contextlib
    import warnings

    graph = None
    try:
        with stream, mod.cuda.using_allocator(_refuse_allocation):
            _LAUNCH_STREAM.append(cuda().external_stream(stream.ptr))
            stream.begin_capture()
            try:
                body()
            finally:
                _LAUNCH_STREAM.pop()
                with contextlib.suppress(Exception):
                    graph = stream.end_capture()
        if graph is None:
            raise RuntimeError("cudaStreamEndCapture returned no graph")
        return graph
    except Exception as e:   # noqa: BLE001 - any failure: the same work, launched one by one
        _GRAPHS_FAILED.append(f"{type(e).__name__}: {e}")
        warnings.warn(f"cuda: capturing the dense steps as a CUDA graph failed ({_GRAPHS_FAILED[0]}"
                      f"); launching them one by one (set {GRAPH_ENV}=0 to skip the attempt)",
                      RuntimeWarning, stacklevel=2)
        return None
