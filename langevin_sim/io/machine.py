"""The machines a run was written on: the file attribute `machines`, a JSON list of
{"step": the first step written there, "host", "cpu", "arithmetic": {...}}, one entry at the
start and one per `resume` that runs steps (not for a repair at the target; a first entry for
files written before the list existed).

`arithmetic` holds what decides a trajectory's rounding besides the seed: the instruction
set the kernels and libm use (AVX-512, AVX2 and FMA), the BLAS kernels NumPy's OpenBLAS picked
for this CPU, the versions of the libraries that compute (NumPy, SciPy, Numba, llvmlite) and
of this package, and the digest of the kernels' sources this process loaded
(`numba_cache.DIGEST`: an edit of a step rule between a start and its resume), and for a
stretch run on the cuda backend its `device`: the GPU, driver and CUDA runtime, CuPy and the
numba CUDA target with their versions (or that it ran under the CUDA simulator).  Where two
entries differ in a key both hold, the run after the later step follows the same law but
need not follow the uninterrupted run bit for bit: `resume` warns then
(`MachineChangeWarning`; a change of backend is not warned of, `backend_history` holds it).  The
kernels' own products have the same bits on every AVX-512 CPU (`kernels.lanes`); BLAS
products and NumPy's vectorized exp / log / tanh do not.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import platform
import socket
import warnings

from ..errors import MachineChangeWarning

ATTR = "machines"
ISA = ("avx512f", "avx2", "fma")


@functools.lru_cache(maxsize=None)
def _arithmetic() -> tuple:
    import llvmlite.binding as ll
    import numpy as np
    from threadpoolctl import threadpool_info

    from .. import __version__
    from .. import numba_cache

    try:    # provenance only: a platform without these must still write its runs
        features = ll.get_host_cpu_features()
    except Exception:
        features = {}
    try:
        blas = sorted({f"{i.get('internal_api')} {i.get('architecture')}"
                       for i in threadpool_info()
                       if i.get("user_api") == "blas" and "numpy" in i.get("filepath", "")})
    except Exception:
        blas = []

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    return (("isa", ",".join(f for f in ISA if features.get(f))),
            ("blas", "; ".join(blas) or None), ("numpy", np.__version__),
            ("scipy", version("scipy")), ("numba", version("numba")),
            ("llvmlite", version("llvmlite")), ("langevin_sim", __version__),
            ("kernels", numba_cache.DIGEST))


@functools.lru_cache(maxsize=None)
def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_entry(step: int, device: str | None = None) -> dict:
    """This machine's entry for a stretch of a run starting at `step`; `device`: the GPU
    stack a cuda backend runs on (`CudaBackend.provenance`), None on the CPU backends."""
    import llvmlite.binding as ll

    arithmetic = dict(_arithmetic(), **({"device": device} if device else {}))
    return {"step": int(step), "host": socket.gethostname(),
            "cpu": f"{_cpu()} ({ll.get_host_cpu_name()})", "arithmetic": arithmetic}


def machines(f) -> list[dict]:
    """The entries of the open run file f (h5py.File); [] for a file written before them."""
    raw = f.attrs.get(ATTR)
    return json.loads(raw) if raw else []


def record_machine(f, step: int, path: str = "", warn: bool = True,
                   device: str | None = None) -> None:
    """Append this machine's entry at `step` (`device`: see `machine_entry`) to the writable
    run file f, warning (`MachineChangeWarning`, if `warn`) where its arithmetic differs from
    the last entry's in a key both hold."""
    entries = machines(f)
    new = machine_entry(step, device)
    if entries and warn:
        last = entries[-1]
        old = last.get("arithmetic", {})
        changed = [f"{k} {old[k]} -> {v}" for k, v in new["arithmetic"].items()
                   if k in old and old[k] != v]
        if changed:
            warnings.warn(MachineChangeWarning(
                f"{path or 'the run'} was written up to step {step} on {last.get('host')} "
                f"({last.get('cpu')}); here {'; '.join(changed)}: the continuation samples the "
                "same dynamics but may not repeat the uninterrupted run's bits (BLAS kernels, "
                "vector instructions and library versions round differently); resume on a "
                "machine like the first for a bit-for-bit continuation"), stacklevel=3)
    f.attrs[ATTR] = json.dumps(entries + [new])
