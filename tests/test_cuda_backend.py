"""The cuda backend against the NumPy reference, under numba's CUDA simulator with the strict
NumPy stand-in for CuPy (`backends/cuda_fakecupy.py`), at tiny sizes.

numba reads NUMBA_ENABLE_CUDASIM when it is imported, so the simulator tests run in their own
pytest process: in the default suite `test_cuda_backend_under_the_simulator` runs this file
again with NUMBA_ENABLE_CUDASIM=1, and there the tests in the `if SIM:` block run (directly:
``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_backend.py -q -p no:cacheprovider``).
The other tests (errors, extras, the stand-in's strictness) run in either process.

Every (potential, dynamics) pair of the registries is built by `pair_cases()` (a new
potential or dynamics class fails `test_pair_cases_cover_the_registries` until it has a
tiny instance there); tests/test_gpu.py runs the same cases on a real GPU.
"""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.dynamics import (MALA, OBABO, REGISTRY as DYNAMICS, SGD, AdamW, Heun,
                                   LeimkuhlerMatthews, OverdampedLangevin, Schedule,
                                   UnderdampedLangevin)
from langevin_sim.errors import BackendUnavailableError
from langevin_sim.potentials import (REGISTRY as POTENTIALS, ClassifierMLP, DoubleWell,
                                     LinearRegression,
                                     ModularArithmeticMLP, MultiWell, Quadratic, ScaleSymmetric,
                                     ShiftedMultiWell, SphericalPSpin, TeacherStudentMLP, Valley)

from .conftest import (assert_split_matches, check_ptx_compilation, early_result, ptx_compilation,
                       starts_early)

ROOT = Path(__file__).resolve().parents[1]
SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0")


# ---------------------------------------------------------------- the pairs

POTENTIAL_CASES = {
    "DoubleWell": lambda: DoubleWell(d=3, barrier=1.5, a=0.8, tilt=0.1),
    "Quadratic": lambda: Quadratic(spectrum=[0.5, 1.5, 3.0], seed=2, center=[0.1, 0.2, -0.1]),
    "LinearRegression": lambda: LinearRegression(n=12, d=3, seed=3),
    "TeacherStudentMLP": lambda: TeacherStudentMLP(n=10, d_in=2, hidden=2, teacher_hidden=1,
                                                   n_test=4, seed=1, n_val=3),
    "ModularArithmeticMLP": lambda: ModularArithmeticMLP(p=3, hidden=2, embed=1, seed=1),
    "ClassifierMLP": lambda: ClassifierMLP("iris", n=9, n_test=5, hidden=2, seed=1, n_val=3),
    "SphericalPSpin": lambda: SphericalPSpin(N=4, p=3, seed=1),
    "ScaleSymmetric": lambda: ScaleSymmetric(depth=3, n=4, noise=0.1, seed=1),
    "Valley": lambda: Valley(d=3, curve="circle", radius=1.5, profile="cos", alpha=0.3,
                             omega=2 / 1.5),
    "MultiWell": lambda: MultiWell(centers=[[-1, 0, 0], [1, 0.5, 0]],
                                   spectra=[[1, 2, 3], [2, 2, 4]], softness=0.2),
    "ShiftedMultiWell": lambda: ShiftedMultiWell(centers=[[-1, 0], [1, 0.5]],
                                                 shifts=[[0.1, 0.2], [-0.2, 0.1], [0.1, -0.3], [0.0, 0.1], [-0.1, 0.0]],
                                                 spectra=[[1, 2], [2, 4]], softness=0.2),
}


def dynamics_cases(pot) -> dict:
    """Every dynamics class that accepts `pot`, with schedules, momentum, noise and batches
    where the dynamics has them (SGD twice on finite sums: permutations and i.i.d. draws)."""
    fs, c = pot.n_samples is not None, pot.constrained
    out = {"OverdampedLangevin": OverdampedLangevin(Schedule("linear", 0.02, 0.01, 10), 0.4),
           "SGD": SGD(0.02, 3 if fs else None, momentum=0.5, weight_decay=0.0 if c else 1e-2,
                      temperature=0.05),
           "AdamW": AdamW(0.01, 3 if fs else None, weight_decay=0.0 if c else 0.01),
           "Heun": Heun(Schedule("linear", 0.02, 0.01, 10), 0.4),
           "LeimkuhlerMatthews": LeimkuhlerMatthews(0.02, Schedule("cosine", 0.5, 0.2, 10))}
    if not c:
        out["UnderdampedLangevin"] = UnderdampedLangevin(0.05, 1.5, Schedule("cosine", 0.5, 0.2, 10))
        out["OBABO"] = OBABO(Schedule("linear", 0.05, 0.03, 10), 1.5,
                             Schedule("cosine", 0.5, 0.2, 10))
        out["MALA"] = MALA(0.02, 0.5)
    if fs:
        out["SGD-iid"] = SGD(0.02, 4, sampling="iid")
        out["SGD-subset-gradnoise"] = SGD(0.02, 3, momentum=0.5, sampling="subset",
                                          grad_noise=0.05)
        out["AdamW-subset"] = AdamW(0.01, 3, weight_decay=0.01, sampling="subset")
    if callable(getattr(pot, "grad_noisy_labels", None)):
        out["SGD-labelnoise"] = SGD(0.02, 3, label_noise=0.1)
    return out


def pair_cases() -> dict:
    """{"Potential-Dynamics": (potential factory, dynamics)} for every valid pair."""
    out = {}
    for pn, make in POTENTIAL_CASES.items():
        for dn, dyn in dynamics_cases(make()).items():
            out[f"{pn}-{dn}"] = (make, dyn)
    return out


PAIRS = pair_cases()
F32_PAIRS = ["DoubleWell-OverdampedLangevin", "DoubleWell-UnderdampedLangevin",
             "Quadratic-OverdampedLangevin", "Quadratic-UnderdampedLangevin",
             "LinearRegression-SGD", "SphericalPSpin-OverdampedLangevin", "SphericalPSpin-SGD",
             "MultiWell-MALA", "ScaleSymmetric-AdamW"]


# the pairs the generic path is tested on: every dynamics of a finite-sum potential and of the
# sphere (tests/test_gpu.py too)
GENERIC_PAIRS = [n for n in PAIRS if n.split("-")[0] in ("LinearRegression", "SphericalPSpin")]
# long rows for it: many chunks a replica, straddling Philox blocks and thread blocks (every
# rule with a device kernel; SGD with each of its noise models)
WIDE_GENERIC = {"overdamped": OverdampedLangevin(0.005, 0.3),
                "sgd": SGD(0.005, 8, momentum=0.5, weight_decay=0.01, temperature=0.05),
                "baoab": UnderdampedLangevin(0.01, 1.0, 0.3), "adamw": AdamW(0.01, 8),
                "heun": Heun(0.005, 0.3), "lm": LeimkuhlerMatthews(0.005, 0.3),
                "obabo": OBABO(0.01, 1.0, 0.3),
                "sgd-noises": SGD(0.005, 8, momentum=0.5, sampling="subset", label_noise=0.1,
                                  grad_noise=0.05, temperature=0.05)}


def wide_regression():
    return LinearRegression(n=40, d=37, seed=3)


def test_pair_cases_cover_the_registries():
    assert set(POTENTIAL_CASES) == set(POTENTIALS), (
        "potentials without a small instance in this file's POTENTIAL_CASES (or entries of no "
        f"registered class): {sorted(set(POTENTIAL_CASES) ^ set(POTENTIALS))}")
    covered = {name.split("-")[1] for name in PAIRS}
    assert {"OverdampedLangevin", "UnderdampedLangevin", "SGD", "AdamW", "MALA"} <= covered
    assert set(DYNAMICS) <= covered, ("dynamics without a small instance in this file's "
                                      f"dynamics_cases: {sorted(set(DYNAMICS) - covered)}")


def use_cuda_backend():
    """Route get_backend("cuda") to CudaBackend while backends/__init__.py does not (its
    one-line change, docs/gpu.md); a no-op once it does."""
    import langevin_sim.backends as B
    import langevin_sim.simulation as S
    from langevin_sim.backends.cuda_backend import CudaBackend

    try:
        if isinstance(B.get_backend("cuda"), CudaBackend):
            return
    except BackendUnavailableError:
        pass
    orig = B.get_backend

    def get_backend(name):
        return CudaBackend() if name == "cuda" else orig(name)
    B.get_backend = S.get_backend = get_backend


def backends_agree(backend, make, dyn, replicas, steps, rtol=1e-9, atol=1e-11, what="", **kw):
    """The same Simulation on the NumPy reference and on `backend`, advanced by each count in
    `steps`: states equal to rounding, divergence flags equal.  Returns the two sims."""
    out = {}
    for b in ("numpy", backend):
        sim = Simulation(make(), dyn, replicas, backend=b, **kw)
        for n in steps:
            sim.advance(n)
        assert sim.state["x"].dtype == np.dtype(kw.get("dtype", "float64"))
        out[b] = sim
    ref, got = out["numpy"], out[backend]
    np.testing.assert_array_equal(got.diverged_step, ref.diverged_step, err_msg=what)
    for k in ref.state:
        np.testing.assert_allclose(got.state[k], ref.state[k], rtol=rtol, atol=atol,
                                   err_msg=f"{what}: state {k}")
    return ref, got


# ---------------------------------------------------------------- without the simulator

@pytest.mark.parametrize("builtin", [True, False])
def test_launch_gives_numbas_builtin_target_views_of_tuples_of_arrays(builtin, monkeypatch):
    """numba's built-in CUDA target cannot type a tuple of CuPy arrays (numba#8483; the
    generic path's `elementwise` and `freeze` take tuples): `launch` hands it numba device
    views of them (`kernel_arrays`); numba-cuda gets the tuples as they are."""
    from langevin_sim.backends import cuda_runtime as rt
    calls = []

    class Kernel:
        def __getitem__(self, config):
            return lambda *args: calls.append(args)

    monkeypatch.setattr(rt, "simulated", lambda: False)
    monkeypatch.setattr(rt, "builtin_target", lambda: builtin)
    monkeypatch.setattr(rt, "kernel_arrays",
                        lambda *a: tuple(("view", v) if isinstance(v, str) else v for v in a))
    rt.launch(Kernel(), 10, "d", ("x", "g"), (0.5, 2.0), ())
    views = (("view", "x"), ("view", "g")) if builtin else ("x", "g")
    assert calls == [("d", views, (0.5, 2.0), ())]


def test_fake_cupy_refuses_what_cupy_refuses():
    from langevin_sim.backends import cuda_fakecupy as cp

    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    host = np.ones(3)
    for bad in (lambda: np.asarray(a), lambda: a + host, lambda: host * a,
                lambda: np.where(a > 1, a, host), lambda: cp.exp(host),
                lambda: np.concatenate([a, host[None]])):
        with pytest.raises(TypeError):
            bad()
    assert isinstance(a.sum(), cp.ndarray) and a.sum().ndim == 0        # 0-d, as CuPy
    assert isinstance(np.tanh(a), cp.ndarray) and isinstance(np.ones_like(a), cp.ndarray)
    assert type(a).__module__ == "cupy"            # potentials.base.array_module dispatches on it
    h = np.arange(3.0)
    d = cp.asarray(h)
    h[0] = 7.0
    assert float(d[0]) == 0.0                       # host data is copied, never aliased
    np.testing.assert_array_equal(cp.asnumpy(a * 2.0 + 1), np.arange(6.0).reshape(2, 3) * 2 + 1)
    # what CuPy does not have (CuPy 14.2): refused on the module, the array and by dispatch
    for missing in (lambda: cp.insert, lambda: a.resize, lambda: cp.spacing(a)):
        with pytest.raises(AttributeError):
            missing()
    with pytest.raises(TypeError, match="CuPy has no insert"):
        np.insert(a, 0, 1.0)
    with pytest.raises(TypeError, match="CuPy has no spacing"):
        np.spacing(a)


def test_fake_cupy_stream_capture_records_only_launches_and_matmuls():
    """The stand-in's stream capture, as a CUDA graph: nothing runs at capture; matmul into
    `out` is recorded (reading its operands at replay); anything else (an allocation, an
    in-place update, a matmul that would allocate its result) is refused during capture; the
    null stream cannot capture; each `launch` of the graph replays the work."""
    from langevin_sim.backends import cuda_fakecupy as cp

    A, x, out = cp.asarray(np.eye(2) * 2.0), cp.asarray(np.ones((2, 1))), cp.zeros((2, 1))
    s = cp.cuda.Stream(non_blocking=True)
    with pytest.raises(RuntimeError, match="legacy"):
        cp.cuda.Stream.null.begin_capture()
    with s:
        assert cp.cuda.get_current_stream() is s
        s.begin_capture()
        cp.matmul(A, x, out=out)
        for bad in (lambda: cp.zeros(3), lambda: x + 1.0, lambda: out.fill(1.0),
                    lambda: cp.matmul(A, x), lambda: x.__setitem__(0, 3.0)):
            with pytest.raises(RuntimeError, match="during stream capture"):
                bad()
        graph = s.end_capture()
    assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
    assert float(out.sum()) == 0.0                  # captured, not run
    graph.launch()
    np.testing.assert_array_equal(cp.asnumpy(out), [[2.0], [2.0]])
    x[...] = 5.0                                     # replays read the arrays as they are
    graph.launch()
    np.testing.assert_array_equal(cp.asnumpy(out), [[10.0], [10.0]])


def _column_major_gemm(op_b, op_a, n, m, k, B, ldb, A, lda, ldc):
    """cuBLAS's gemm (alpha 1, beta 0) on flat buffers, as its documentation defines it:
    C (n x m, column-major, leading dimension ldc) = op(B) (n x k) @ op(A) (k x m), where a
    buffer read column-major with leading dimension ld is the matrix M[i, j] = buf[i + j ld]."""
    def mat(buf, ld, rows, cols, op):
        r, c = (cols, rows) if op else (rows, cols)     # the stored matrix, before op
        M = np.array([[buf[i + j * ld] for j in range(c)] for i in range(r)])
        return M.T if op else M
    C = mat(B, ldb, n, k, op_b) @ mat(A, lda, k, m, op_a)
    out = np.zeros(ldc * m)
    for j in range(m):
        out[j * ldc:j * ldc + n] = C[:, j]
    return out


@pytest.mark.parametrize("m,k,n", [(3, 4, 5), (1, 4, 2), (4, 1, 3), (2, 3, 1)])
@pytest.mark.parametrize("a_c", [True, False])
@pytest.mark.parametrize("b_c", [True, False])
def test_gemm_args_compute_a_row_major_product_with_column_major_cublas(m, k, n, a_c, b_c):
    """`cuda_runtime.gemm` calls cuBLAS (column-major) on the buffers of C- or
    Fortran-contiguous operands: `gemm_args`' call, run as cuBLAS defines it, writes a @ b
    into the C-contiguous out's buffer (random operands, each layout, degenerate sizes)."""
    from langevin_sim.backends.cuda_runtime import gemm_args

    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = rng.normal(size=(m, k)), rng.normal(size=(k, n))
    A = (a if a_c else np.asfortranarray(a)).ravel(order="K")
    B = (b if b_c else np.asfortranarray(b)).ravel(order="K")
    op_b, op_a, n_, m_, k_, ldb, lda, ldc = gemm_args(a.shape, a_c, b.shape, b_c)
    assert (n_, m_, k_) == (n, m, k) and ldb >= max(1, k if op_b else n)
    assert lda >= max(1, m if op_a else k) and ldc >= max(1, n)
    got = _column_major_gemm(op_b, op_a, n, m, k, B, ldb, A, lda, ldc)
    np.testing.assert_allclose(got[:m * n].reshape(m, n), a @ b, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="do not chain"):
        gemm_args((m, k), a_c, (k + 1, n), b_c)


def test_errors_are_one_line_and_name_the_fix():
    from langevin_sim.backends import cuda_runtime as rt

    numba_init = ("Error at driver init: \n\nCUDA driver library cannot be found.\nIf you are "
                  "sure that a CUDA driver is installed,\ntry setting NUMBA_CUDA_DRIVER " * 3)
    msgs = [str(rt.cupy_missing_error()), str(rt.numba_cuda_missing_error(numba_init)),
            str(rt.no_gpu_error(f"numba-cuda: {numba_init}")),
            str(rt.driver_mismatch_error(12040, 13000)),
            str(rt.cupy_broken_error("ImportError: libnvrtc.so.13: cannot open shared object\nmore"))]
    assert all("\n" not in m for m in msgs)
    # tests/test_errors.py holds get_backend("cuda") to naming the extras
    assert 'pip install -e ".[cuda12]"' in msgs[0] and '-e ".[cuda13]"' in msgs[0]
    assert "backend='numba'" in msgs[0]
    assert "numba-cuda" in msgs[1] and 'pip install -e ".[cuda12]"' in msgs[1]
    assert "driver library cannot be found" in msgs[1] and len(msgs[1]) < 600
    assert "no GPU" in msgs[2]
    assert "12.4" in msgs[3] and "13.0" in msgs[3] and "langevin_sim[cuda12]" in msgs[3]
    assert "libnvrtc" in msgs[4] and "does not load" in msgs[4] and "langevin_sim[cuda13]" in msgs[4]
    sim = Simulation(DoubleWell(d=4), UnderdampedLangevin(0.01), 1 << 16, backend="numpy",
                     init="zeros")
    per = rt.bytes_per_replica(sim)
    assert per >= 2 * 3 * 4 * 8            # x, p, g of 4 float64 coordinates, double-buffered
    err = rt.out_of_memory_error(sim, free=1 << 24, total=1 << 34)
    fit = rt.replicas_that_fit(sim, 1 << 24)
    assert 0 < fit < 1 << 16 and f"replicas <= {fit}" in str(err) and "\n" not in str(err)
    assert "65536 replicas" in str(err) and fit * per <= 1 << 24


def test_memory_estimate_counts_a_fused_kernels_own_buffers():
    """The p-spin's fused path holds its packed products (C(N+p-2, p-1) rows) and the
    transposed state and gradient per replica: N = 64, p = 3, float32 needs > 9000 bytes a
    replica, 5x the generic path's estimate (which it was), and what fits shrinks to match."""
    from langevin_sim.backends import cuda_runtime as rt

    def sim(dyn):
        return Simulation(SphericalPSpin(N=64, p=3, seed=1), dyn, 8, backend="numpy",
                          dtype="float32")
    state = 2 * rt.state_bytes_per_replica(sim(OverdampedLangevin(0.05, 0.5)))
    assert rt.bytes_per_replica(sim(OverdampedLangevin(0.05, 0.5))) == state + (2080 + 2 * 64) * 4
    assert rt.bytes_per_replica(sim(Heun(0.05, 0.5))) == state + (2080 + 4 * 64) * 4
    assert rt.bytes_per_replica(sim(Heun(0.05, 0.5))) > 9000
    dw = Simulation(DoubleWell(d=64), OverdampedLangevin(0.05, 0.5), 8, backend="numpy",
                    dtype="float32")
    assert rt.bytes_per_replica(dw) == 2 * rt.state_bytes_per_replica(dw) + 5 * 64 * 4


def test_out_of_memory_error_never_asks_for_what_already_failed():
    """Raised after the device ran out (CuPy's error in a step): where the estimate fits the
    replicas asked for, the path needed more, so it asks for fewer, never "replicas <= K" with
    K at or above those that failed; where not one replica fits, it says the memory is held."""
    from langevin_sim.backends import cuda_runtime as rt

    sim = Simulation(DoubleWell(d=4), OverdampedLangevin(0.01), 1000, backend="numpy",
                     init="zeros")
    per, gib = rt.bytes_per_replica(sim), 1 << 30
    err = str(rt.out_of_memory_error(sim, free=100 * per * 1000, total=80 * gib))
    assert "\n" not in err and "replicas <= 500" in err and "needs more than" in err
    err = str(rt.out_of_memory_error(sim, free=0, total=80 * gib))
    assert "replicas <= 0" not in err and "not one replica fits" in err
    fit = rt.replicas_that_fit(sim, 100 * per)
    assert 0 < fit < 1000 and f"use replicas <= {fit}," in str(
        rt.out_of_memory_error(sim, free=100 * per, total=80 * gib))


FAKE_CUPY_RUNTIME = """
import os
MODE = os.environ["FAKE_CUPY_MODE"]
class CUDARuntimeError(RuntimeError):
    pass
def getDeviceCount():      # what cudart answers with no driver, or one too old
    if MODE == "nvrtc":
        return 1
    raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient "
                           "for CUDA runtime version")
def driverGetVersion():    # 0: no driver installed (cudaDriverGetVersion's answer then)
    return {"nodriver": 0, "driver11": 11080, "driver12": 12040, "nvrtc": 12040}[MODE]
def runtimeGetVersion():
    return 13000 if MODE == "driver12" else 12090
"""
FAKE_CUPY = """
from . import cuda
__version__ = '14.2.0'
def arange(n):             # the first elementwise kernel: NVRTC does not load
    raise RuntimeError("CompileException: nvrtc: error: failed to open libnvrtc-builtins.so.12.9")
"""


def test_no_driver_and_a_driver_without_an_extra_are_said_as_such(tmp_path):
    """CuPy installed where no NVIDIA driver is (a laptop, a container started without its
    GPUs): cudart answers getDeviceCount with cudaErrorInsufficientDriver and the driver
    version 0, which is no GPU, not a driver "up to CUDA 0.0" needing 'langevin_sim[cuda0]'; a
    CUDA 11 driver has no extra to install: the fix is a newer driver; a GPU where CuPy's
    first kernel fails to compile (its NVRTC libraries) is CuPy's broken install, said before
    a run starts, not a traceback inside its first step."""
    pkg = tmp_path / "cupy"
    (pkg / "cuda").mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_CUPY)
    (pkg / "cuda" / "__init__.py").write_text("from . import runtime\n")
    (pkg / "cuda" / "runtime.py").write_text(FAKE_CUPY_RUNTIME)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_ENABLE_CUDASIM", "LANGEVIN_SIM_CUDA_SIM")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    lines = {}
    for mode in ("nodriver", "driver11", "driver12", "nvrtc"):
        r = subprocess.run([sys.executable, "-m", "langevin_sim.cli", "backends", "cuda"],
                           env=dict(env, FAKE_CUPY_MODE=mode), capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
        lines[mode] = r.stdout.strip()
        assert "\n" not in lines[mode], lines[mode]
    assert "found no GPU" in lines["nodriver"] and "no NVIDIA driver" in lines["nodriver"]
    assert "cuda0" not in lines["nodriver"] and "0.0" not in lines["nodriver"]
    assert "11.8" in lines["driver11"] and "cuda11" not in lines["driver11"]
    assert "update the driver" in lines["driver11"] and "langevin_sim[cuda12]" in lines["driver11"]
    assert "12.4" in lines["driver12"] and "13.0" in lines["driver12"]
    assert "install the CuPy for your driver ('langevin_sim[cuda12]')" in lines["driver12"]
    assert lines["nvrtc"].startswith("cuda") and "CuPy is installed but does not load" in \
        lines["nvrtc"] and "libnvrtc-builtins" in lines["nvrtc"]

ARRAY_INTERFACE_SYNC = """
import importlib
from langevin_sim.backends import cuda_runtime as rt
from numba.cuda import api
from numba.cuda.cudadrv import devicearray
from numba.cuda import dispatcher
assert api.config.CUDA_ARRAY_INTERFACE_SYNC, "numba's default synchronizes"
assert dispatcher.config.CUDA_LOW_OCCUPANCY_WARNINGS, "numba's default warns"
print(rt.configure_numba())
for mod in (api, devicearray):   # the config modules the conversions of CuPy arrays read
    cfg = getattr(mod, "config", None)
    assert cfg is None or cfg.CUDA_ARRAY_INTERFACE_SYNC is False, (mod.__name__, cfg.__name__)
assert dispatcher.config.CUDA_LOW_OCCUPANCY_WARNINGS is False   # what each launch reads
"""


def test_cuda_array_interface_sync_and_occupancy_warnings_are_off_where_numba_cuda_reads_them():
    """`require` turns off numba's stream synchronization at each conversion of a CuPy
    argument in the config module the installed CUDA target reads (numba-cuda's own
    `numba.cuda.core.config`, or numba's for its built-in target); left on, every launch
    with a CuPy argument waits on the host for the stream.  And the low-occupancy warning of
    each launch of fewer than 128 blocks (the grid is the replica count; on the GPU it set off
    the CLI's warning loop, design_changes 63).  Run in a fresh interpreter: the real CUDA
    target is imported (no GPU needed)."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "NUMBA_ENABLE_CUDASIM", "LANGEVIN_SIM_CUDA_SIM", "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS")}
    p = subprocess.run([sys.executable, "-c", ARRAY_INTERFACE_SYNC], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "numba.core.config" in p.stdout


SWITCH_AFTER_IMPORT = """
import os, sys
import langevin_sim                  # imports numba (not numba.cuda) before the switch is set
if sys.argv[1] == "cuda-imported":
    import numba.cuda
os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import DoubleWell
try:
    Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="cuda").advance(2)
    print("ran")
except ConfigError as e:
    print(e)
"""


@pytest.mark.parametrize("mode", ["numba-imported", "cuda-imported"])
def test_the_simulator_switch_set_in_python_after_numba_is_imported(mode):
    """A notebook's `os.environ["NUMBA_ENABLE_CUDASIM"] = "1"` after `import langevin_sim`
    (which imports numba) was ignored: the real CUDA target raised numba's multi-line
    CudaSupportError (no driver).  Now numba's config is reloaded, as for
    LANGEVIN_SIM_CUDA_SIM; once numba.cuda is imported without the simulator it is one line."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_ENABLE_CUDASIM", "LANGEVIN_SIM_CUDA_SIM")}
    p = subprocess.run([sys.executable, "-c", SWITCH_AFTER_IMPORT, mode], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    expect = ("ran" if mode == "numba-imported" else
              "NUMBA_ENABLE_CUDASIM=1 but numba.cuda was imported before in this process")
    assert p.stdout.startswith(expect), p.stdout + p.stderr[-2000:]


def test_numpy_compat_gives_numba_cuda_the_row_stack_numpy_2_5_removed(monkeypatch):
    """numba-cuda 0.30.4's typing registry overloads np.row_stack, which NumPy 2.5 (the GPU
    image's) removed: without it every real compilation failed with an AttributeError (seen
    under Python 3.12 + NumPy 2.5.2, where the PTX tests then pass). Where NumPy has the name
    it is left alone."""
    from langevin_sim.backends import cuda_runtime as rt

    own = {k: getattr(np, k, None) for k in rt.RENAMED}
    rt.numpy_compat()
    assert all(own[k] is None or getattr(np, k) is own[k] for k in rt.RENAMED)
    for k in rt.RENAMED:
        monkeypatch.delattr(np, k, raising=False)
    rt.numpy_compat()
    assert np.row_stack is np.vstack and np.trapz is np.trapezoid and np.round_ is np.round


def test_extras_name_cupy_and_numba_cuda_per_cuda_major():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = {k: v.split() for k, v in cfg["options.extras_require"].items()}
    assert any(r.startswith("cupy-cuda12x") for r in extras["cuda12"])
    assert any(r.startswith("numba-cuda[cu12]") for r in extras["cuda12"])
    assert any(r.startswith("cupy-cuda13x") for r in extras["cuda13"])
    assert any(r.startswith("numba-cuda[cu13]") for r in extras["cuda13"])
    assert extras["gpu"] == extras["cuda12"]


PTX_IMPORTS = """
from numba import boolean, float32, float64, int32, int64, types, uint64
from langevin_sim.backends import cuda_kernels as ck
from langevin_sim.dynamics import MALA, SGD, AdamW, Heun, UnderdampedLangevin
from langevin_sim.kernels import pspin, quadratic, toynets
import re
"""

PTX_DENSE = """
I1, I2, F1 = int64[::1], int64[:, ::1], float64[::1]
for ft in (float32, float64):
    f32, W, V = ft is float32, ft[:, ::1], ft[::1]
    PS, QS = ck.gemm_signature(f32, (W, I2, I1, I1)), ck.gemm_signature(f32, (V, V, V, V))
    row, refresh, products = pspin._cuda_rules(f32, 5)
    rule = ck.GEMM_CORRECT if f32 else ck.GEMM_LM   # Heun's corrector, Leimkuhler-Matthews
    cuda.compile_ptx(ck.gemm_step(row, refresh, f32, 5, rule).py_func, PS, cc=(9, 0))
    optimizer = ck.GEMM_ADAMW if not f32 else ck.GEMM_SGD   # SGD in float32, AdamW in float64
    cuda.compile_ptx(ck.gemm_step(pspin._cuda_optimizer_row(f32, 5, not f32), refresh, f32, 5,
                                  optimizer).py_func, PS, cc=(9, 0))
    cuda.compile_ptx(products.py_func, (W, W, I2, I1, I1), cc=(9, 0))
    row, refresh = quadratic._cuda_rules()
    cuda.compile_ptx(ck.gemm_step(row, refresh, f32, 3).py_func, QS, cc=(9, 0))
    cuda.compile_ptx(ck.gemm_step(quadratic._cuda_optimizer_row(not f32), refresh, f32, 3,
                                  optimizer).py_func, QS, cc=(9, 0))
    cuda.compile_ptx(ck.gemm_step(row, refresh, f32, 3, ck.GEMM_MALA).py_func, QS, cc=(9, 0))
    blk = (32, 4)       # the sliced kernel: 4 threads per replica (shared-memory sums, votes)
    cuda.compile_ptx(ck.gemm_step(row, refresh, f32, 10, ck.GEMM_LM, blk).py_func, QS, cc=(9, 0))
    cuda.compile_ptx(ck.gemm_step(row, refresh, f32, 10, ck.GEMM_OVERDAMPED, blk,
                                  quadratic._cuda_stages()).py_func, QS, cc=(9, 0))   # streamed
    row, refresh, _ = pspin._cuda_rules(f32, 7, blk)
    cuda.compile_ptx(ck.gemm_step(row, refresh, f32, 7, ck.GEMM_OVERDAMPED, blk).py_func, PS,
                     cc=(9, 0))
    cuda.compile_ptx(ck.gemm_step(row, refresh, f32, 7, ck.GEMM_LM, blk,
                                  pspin._cuda_stages(f32, 7, blk)).py_func, PS, cc=(9, 0))
    cuda.compile_ptx(quadratic.baoab_kernel(f32).py_func,
                     (W,) * 6 + (V, I1, I1, int64, boolean, boolean, uint64, uint64, uint64, F1,
                                 F1, float64, float64, float64), cc=(9, 0))
    cuda.compile_ptx(ck.step_counter().py_func, (I1, int64), cc=(9, 0))
    # the first-passage membership's products and sums carry .rn: ptxas fuses a plain mul.f64
    # feeding an add.f64 into an FMA (one rounding where the reference has two)
    ptx, _ = cuda.compile_ptx(ck.first_passage_columns().py_func,
                              (W, int64) + (I2,) * 5 + (I1, float64[:, ::1], F1, I1, int64),
                              cc=(9, 0))
    assert "mul.rn.f64" in ptx and not re.search(r"\\b(mul|add|fma)\\.f64", ptx), "fusable"
    # the generic path's elementwise kernels, with the types `DeviceRun.elementwise` and
    # `DeviceRun.freeze` launch them with (bad: int32 flags)
    B1, U4 = int32[::1], (uint64,) * 4
    cuda.compile_ptx(ck.normals(f32).py_func, (W,) + U4 + (int64,), cc=(9, 0))
    for rule in ck.EW_ARITY:
        cuda.compile_ptx(ck.elementwise(rule, f32).py_func, ck.elementwise_signature(rule, f32),
                         cc=(9, 0))
    cuda.compile_ptx(ck.freeze().py_func, (I1, B1, int64, types.UniTuple(W, 3),
                                           types.UniTuple(W, 3)), cc=(9, 0))
for out in (int64[:, ::1], uint64[:, ::1]):
    cuda.compile_ptx(ck.words().py_func, (out,) + (uint64,) * 4 + (int64, int64), cc=(9, 0))
"""

PTX_TOYNETS = """
for ft in (float32, float64):
    f32 = ft is float32
    # the toy nets' kernel, batch 32, TeacherStudentMLP at W4's sizes (d_in 16, hidden 32) and
    # ModularArithmeticMLP p = 7, hidden 16 (one-hot, int64 labels), x SGD / AdamW: parameters
    # and optimizer states stay out of local memory; only SGD's normals go there (W4: the 18
    # of the owned parameters; p = 7: 22 owned and 7 of b2, 16-byte aligned: 30 items); W4's
    # SGD in float32 also with gradient and label noise, subset draws and W4's epoch
    # permutations of 1024 samples sorted in the kernel (keys in shared memory; the gradient
    # noise puts the 18 gradients in local memory too: twice the budget); the full-batch
    # BAOAB (float32) and Heun (float64) as SGD: only their normals; MALA (p = 7) too.
    # A toy-net kernel takes ~5 s to compile: PART "default" compiles W4's SGD in both dtypes
    # (the dtypes differ in the literals' and arrays' types), the embedding and the grokking
    # net each in one; PART "slow" the other variants and dtypes.
    variants = {"default": [(16, 32, 0, 18, SGD, True, True, True, 1024)] if f32 else
                [(16, 32, 0, 18, SGD)],
                "slow": [(14, 16, 7, 30, AdamW), (16, 32, 0, 18, SGD),
                         (16, 32, 0, 18, UnderdampedLangevin),
                         (14, 16, 7, 30, MALA)] if f32 else   # x kept, g as state: normals only
                [(16, 32, 0, 18, AdamW), (14, 16, 7, 30, SGD), (16, 32, 0, 18, Heun)]}
    for d_in, hidden, classes, normals, rule, *opts in variants[PART]:
        ptx, _ = cuda.compile_ptx(
            toynets.cuda_kernel(f32, d_in, hidden, 32, rule, classes, *opts).py_func,
            toynets.launch_types(f32, classes), cc=(9, 0))
        depot = re.search(r"__local_depot0\\[(\\d+)\\]", ptx)
        budget = normals * ft.bitwidth // 8 * (2 if opts else 1) if rule is not AdamW else 0
        assert depot is None or int(depot.group(1)) <= budget, (rule, classes, depot.group(0))
    # ClassifierMLP on digits (d_in 64, hidden 32, 10 classes, dense inputs): 75 parameters
    # per lane, in local memory, dW1 summed an entry at a time (`samples_outer` False)
    if f32 and PART == "default":
        cuda.compile_ptx(toynets.cuda_kernel(f32, 64, 32, 32, SGD, 10, outer=False).py_func,
                         toynets.launch_types(f32, 10), cc=(9, 0))
    # a learned embedding (p = 7, e = 4, hidden 16; inputs the operand pairs, int64): the
    # lane's embedding entry stays out of local memory too (SGD in float32: the unit's 16
    # normals only; AdamW in float64: nothing)
    rule = SGD if f32 else AdamW
    if (PART == "default") != f32:
        ptx, _ = cuda.compile_ptx(
            toynets.cuda_kernel(f32, 8, 16, 32, rule, 7, embed=4).py_func,
            toynets.launch_types(f32, 7, pairs=True), cc=(9, 0))
        depot = re.search(r"__local_depot0\\[(\\d+)\\]", ptx)
        assert depot is None or int(depot.group(1)) <= (64 if f32 else 0), ("embed", depot.group(0))
    # the grokking scenario's default net (p = 23, hidden 64, 317 samples, full batch) x AdamW:
    # two warps per replica, the batch in tiles, the one-hot inputs gathered (operand pairs,
    # int64); its 70 parameters per lane and their states go to local memory (at most the four
    # arrays x, m, s, g, 16-byte aligned)
    if (PART == "default") == f32:
        tile = toynets.tile_of(46, 64, 317, ft.bitwidth // 8, 23, gather=True)
        ptx, _ = cuda.compile_ptx(
            toynets.cuda_kernel(f32, 46, 64, 317, AdamW, 23, warps=2, tile=tile,
                                gather=True).py_func,
            toynets.launch_types(f32, 23, pairs=True), cc=(9, 0))
        depot = re.search(r"__local_depot0\\[(\\d+)\\]", ptx)
        assert 0 < tile < 317 and (depot is None or int(depot.group(1)) <= 4 * 72 * ft.bitwidth // 8)
        # its static shared memory (the arrays' sizes, each padded to 8 bytes) within 48 KiB
        shared = re.findall(r"\\.shared \\.align \\d+ \\.b8 \\S+\\[(\\d+)\\]", ptx)
        assert sum(-(-int(n) // 8) * 8 for n in shared) <= 48 * 1024, shared
"""


def fused_ptx(part: str):
    """`starts_early` spec: the dense kernels and the toy nets' PART "default", or the toy
    nets' PART "slow" (-m slow)."""
    code = PTX_IMPORTS + (PTX_DENSE if part == "default" else "")
    return ptx_compilation(code + f"PART = {part!r}\n" + PTX_TOYNETS + 'print("ok")\n')()


if not SIM:
    @pytest.mark.parametrize("part", ["default", pytest.param("slow", marks=pytest.mark.slow)])
    @starts_early(fused_ptx, timeout=600)
    def test_fused_dense_kernels_compile_for_the_real_cuda_target(part):
        """The generic path's elementwise kernels, the fused GEMM-step kernel with the p-spin
        and Quadratic row rules (and the packed products kernel), the dense quadratic forms'
        BAOAB kernel, and the fused toy-net kernel (TeacherStudentMLP, ModularArithmeticMLP,
        ClassifierMLP) with SGD's and AdamW's rules, compile to PTX with numba's CUDA target,
        float32 and float64 (a toy-net variant in one of them; "slow": the other toy-net
        variants, and the embedding's and grokking net's other dtype): the typing the
        simulator does not do (column views, local and shared arrays, block votes, libdevice
        primitives).  No GPU needed; skipped where libNVVM is missing."""
        check_ptx_compilation(test_fused_dense_kernels_compile_for_the_real_cuda_target,
                              part=part)

    def test_kernel_resources_takes_the_newest_ptxas(tmp_path, monkeypatch):
        """libNVVM's PTX needs a ptxas at least as new (numba-cuda 0.30 with the CUDA 13.5
        libNVVM wheel writes PTX 9.5, which CUDA 13.0's ptxas refuses): of several, the newest
        release is taken, wherever it is found."""
        sys.path.insert(0, str(ROOT / "benchmarks"))
        try:
            import kernel_resources as kr
        finally:
            sys.path.remove(str(ROOT / "benchmarks"))
        for name, release in (("old", "12.4"), ("new", "13.5"), ("older", "11.8")):
            tool = tmp_path / name / "bin" / "ptxas"
            tool.parent.mkdir(parents=True)
            tool.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
            tool.chmod(0o755)
        monkeypatch.setenv("PATH", str(tmp_path / "old" / "bin"))
        monkeypatch.setenv("CUDA_HOME", str(tmp_path / "new"))
        monkeypatch.setattr(kr.glob, "glob", lambda pattern: [str(tmp_path / "older")]
                            if pattern == "/usr/local/cuda*" else [])
        assert kr.find_ptxas() == str(tmp_path / "new" / "bin" / "ptxas")
        assert kr.ptxas_release(kr.find_ptxas()) == (13, 5)

    def test_carried_wheels_pth_files_run_and_a_shadowed_sitecustomize_too(tmp_path):
        """gpu_check.sh installs carried wheels (.whl/) into a folder on PYTHONPATH, whose .pth
        files Python does not run; numba-cuda's redirects numba.cuda to it. The folder's
        sitecustomize (benchmarks/gpu_check_site.py) runs them, then the image's own
        sitecustomize that it shadows."""
        site_dir, shadow = tmp_path / "site", tmp_path / "shadow"
        site_dir.mkdir()
        shadow.mkdir()
        (site_dir / "carried.pth").write_text("import os; os.environ['CARRIED_PTH'] = 'ran'\n")
        (site_dir / "sitecustomize.py").write_text(
            (ROOT / "benchmarks" / "gpu_check_site.py").read_text())
        (shadow / "sitecustomize.py").write_text("import os; os.environ['SHADOWED'] = 'ran'\n")
        env = dict(os.environ, PYTHONPATH=f"{site_dir}{os.pathsep}{shadow}")
        p = subprocess.run([sys.executable, "-c", "import os, sys; print(os.environ.get("
                            "'CARRIED_PTH'), os.environ.get('SHADOWED'), "
                            f"sys.path.count({str(site_dir)!r}))"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0 and not p.stderr, p.stderr
        assert p.stdout.split() == ["ran", "ran", "1"], p.stdout

    @pytest.mark.slow
    def test_kernel_resources_report(tmp_path):
        """benchmarks/kernel_resources.py (~4 min): every kernel it lists compiles for sm_90
        with the types the backend launches it with (`cuda_signature`), and ptxas assembles
        it within a block's limits: exit 0, a row per kernel and dtype with its registers
        (1-255).  Skipped without libNVVM or ptxas (exit 3)."""
        out = tmp_path / "resources.md"
        env = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_ENABLE_CUDASIM", "LANGEVIN_SIM_CUDA_SIM")}
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"),
                            "--arch", "sm_90", "--out", str(out)], capture_output=True,
                           text=True, env=env, timeout=1200)
        if r.returncode == 3:
            pytest.skip(r.stderr.strip())
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        table = [line.split("|")[1:-1] for line in out.read_text().splitlines()
                 if line.startswith(("| rows", "| gemm", "| toynets"))]
        fused = [c for c in table if c[3].strip() == "sm_90"]
        assert {c[0].strip() for c in fused} == {"rows", "gemm", "toynets"}
        assert len(fused) >= 20 and all(1 <= int(c[5]) <= 255 for c in fused), table

    # the simulator process selects as this one does: its default tests with the default
    # suite (setup.cfg's -m), its slow ones (the registry's toy-net pairs, ~3 min on 2 cores)
    # with -m slow
    @pytest.mark.parametrize("selection", [pytest.param(None, id="default"),
                                           pytest.param("slow", marks=pytest.mark.slow)])
    @starts_early(lambda selection: ([sys.executable, "-m", "pytest", __file__, "-q", "-p",
                                      "no:cacheprovider", "-x"]
                                     + (["-m", selection] if selection else []),
                                     dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
                                          PYTHONDONTWRITEBYTECODE="1")),
                  timeout=lambda selection: 2400 if selection == "slow" else 900)
    def test_cuda_backend_under_the_simulator(selection):
        """This file's simulator tests of `selection`, in a pytest process with
        NUMBA_ENABLE_CUDASIM=1 (started when collection ends, beside the other tests)."""
        t0 = time.monotonic()
        r = early_result(test_cuda_backend_under_the_simulator, selection=selection)
        tail = (r.stdout + r.stderr)[-6000:]
        assert r.returncode == 0, f"simulator tests failed:\n{tail}"
        print(tail.strip().splitlines()[-1], f"(waited {time.monotonic() - t0:.0f} s)")


# ---------------------------------------------------------------- under the simulator

if SIM:
    from numba import cuda    # a module global: the simulator swaps it in a kernel's globals

    from langevin_sim import open_run
    from langevin_sim.backends import cuda_backend, cuda_runtime
    from langevin_sim.backends import cuda_kernels as ck
    from langevin_sim.first_passage import Ball, FirstPassage, HalfSpace
    from langevin_sim.simulation import resume

    use_cuda_backend()
    DEVICE_BACKENDS = ["cuda"]

    def test_simulated_blocks_synchronize_by_condition_barriers():
        """The simulator's blocks wait on a condition variable (`cuda_simulator`), not numba's
        polling loop, with numba's barrier semantics: a shared-memory rotation read after
        each barrier, block votes (count, and, or), threads that return early leaving the
        barrier to the live ones, and blocks run one after another."""
        from numba.cuda.simulator import kernel

        assert kernel.BlockManager.condition_barriers

        @cuda.jit
        def rotate(out, votes, rounds):
            s = cuda.shared.array(8, dtype=np.int64)
            i = cuda.threadIdx.x
            n = cuda.blockDim.x
            v = i + 100 * cuda.blockIdx.x
            for _ in range(rounds):
                s[i] = v
                cuda.syncthreads()
                v = s[(i + 1) % n]
                cuda.syncthreads()
            votes[cuda.blockIdx.x, i, 0] = cuda.syncthreads_count(v % 2 == 0)
            votes[cuda.blockIdx.x, i, 1] = cuda.syncthreads_and(v >= 0)
            votes[cuda.blockIdx.x, i, 2] = cuda.syncthreads_or(v == 3)
            if i >= n - 2:      # two threads leave; the others' barrier opens without them
                out[cuda.blockIdx.x, i] = v
                return
            cuda.syncthreads()
            out[cuda.blockIdx.x, i] = -v

        out, votes = np.zeros((3, 8), np.int64), np.zeros((3, 8, 3), np.int64)
        rotate[3, 8](out, votes, 5)
        want = (np.arange(8)[None, :] + 5) % 8 + 100 * np.arange(3)[:, None]
        sign = np.where(np.arange(8) >= 6, 1, -1)
        np.testing.assert_array_equal(out, sign * want)
        np.testing.assert_array_equal(votes[..., 0], 4)
        np.testing.assert_array_equal(votes[..., 1], 1)
        np.testing.assert_array_equal(votes[..., 2], [[1] * 8, [0] * 8, [0] * 8])

    def test_an_exception_in_a_simulated_thread_aborts_its_block_and_is_raised():
        """A thread that raises before a barrier the others wait at: the launch raises its
        error (naming the thread) instead of hanging, and the next launch runs normally."""
        @cuda.jit
        def fails(a, bad):
            i = cuda.threadIdx.x
            if i == bad:
                a[100] = 1.0        # out of bounds: IndexError in this thread
            cuda.syncthreads()
            a[i] = i

        a = np.zeros(4)
        with pytest.raises(IndexError, match=r"tid=\[2, 0, 0\]"):
            fails[1, 4](a, 2)
        fails[1, 4](a, -1)
        np.testing.assert_array_equal(a, np.arange(4.0))

    def test_captured_launch_replays_its_own_grid(monkeypatch):
        """A launch recorded by `cuda_runtime.capture` replays on the grid it was captured with,
        whatever the same kernel was launched on since: the simulator's ``kernel[config]`` sets
        the one kernel object's grid (two runs of different sizes share a compiled kernel, and a
        graph of the smaller one replayed after it ran the larger one's blocks)."""
        from langevin_sim.backends import cuda_fakecupy as cp
        from langevin_sim.backends import cuda_runtime as rt

        monkeypatch.setattr(rt, "threads_per_block", lambda: 2)

        @cuda.jit
        def count(a):
            i = cuda.grid(1)
            if i < a.shape[0]:
                a[i] += 1.0

        small, large = cp.zeros(8), cp.zeros(8)
        graph = rt.capture(lambda: rt.launch(count, 2, *rt.kernel_arrays(small)))   # one block
        rt.launch(count, 8, *rt.kernel_arrays(large))                               # four blocks
        graph.launch()
        np.testing.assert_array_equal(cp.asnumpy(small), [1, 1, 0, 0, 0, 0, 0, 0])
        np.testing.assert_array_equal(cp.asnumpy(large), np.ones(8))

    @pytest.fixture(autouse=True)
    def one_lane_per_replica(monkeypatch):
        """The simulator runs a CUDA thread as a Python thread: the library's hardware default
        of 16 threads per replica in the dense step kernel (`cuda_kernels.GEMM_LANES`, chosen
        on the H200) makes those tests ~10x slower here, so they run with one, and the sliced
        kernel is tested with an explicit count (`..._with_several_threads_per_replica`)."""
        monkeypatch.setattr(ck, "GEMM_LANES", 1)

    # the fused MLP kernel runs a warp per replica in the simulator (16-20 s each here); its
    # parity, sampling modes, partition and chunking are test_fused_teacher_student_*'s and
    # test_fused_embedding_*'s (the registry's ModularArithmeticMLP has a learned embedding);
    # ClassifierMLP's dense inputs and softmax head: its i.i.d. SGD pair by default
    SLOW_PAIRS = {"TeacherStudentMLP-SGD", "TeacherStudentMLP-SGD-iid",
                  "TeacherStudentMLP-AdamW", "TeacherStudentMLP-SGD-labelnoise",
                  "TeacherStudentMLP-SGD-subset-gradnoise", "TeacherStudentMLP-OverdampedLangevin",
                  "TeacherStudentMLP-LeimkuhlerMatthews", "TeacherStudentMLP-UnderdampedLangevin",
                  "TeacherStudentMLP-Heun", "TeacherStudentMLP-MALA",
                  "TeacherStudentMLP-AdamW-subset"} | {
                      n for n in PAIRS if n.startswith("ModularArithmeticMLP-")} | {   # embedding
                      n for n in PAIRS
                      if n.startswith("ClassifierMLP-") and n != "ClassifierMLP-SGD-iid"}

    @pytest.mark.parametrize("backend", DEVICE_BACKENDS)
    @pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PAIRS
                                      else n for n in sorted(PAIRS)])
    def test_pair_matches_reference_and_is_partition_and_chunk_invariant(backend, name):
        """float64 parity with the reference (7 replicas, 3 + 4 steps), and the bits of an
        uneven replica split (first_replica) advanced in one call of 7 steps."""
        make, dyn = PAIRS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # host-run methods say so once
            _, whole = backends_agree(backend, make, dyn, 7, (3, 4), what=name, seed=11)
            parts = []
            for r0, n in ((0, 3), (3, 4)):
                p = Simulation(make(), dyn, n, backend=backend, seed=11, first_replica=r0)
                p.advance(7)
                parts.append(p)
        assert_split_matches(parts, whole, make(), what=name)

    @pytest.mark.parametrize("name", F32_PAIRS)
    def test_float32_pairs_match_reference_to_float32_rounding(name):
        make, dyn = PAIRS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            backends_agree("cuda", make, dyn, 5, (6,), rtol=2e-4, atol=2e-4, what=name, seed=1,
                           dtype="float32")

    def test_numba_partition_and_chunking_bodies_run_on_cuda():
        """tests/test_backends.py's own bodies with backend="cuda" (on its cheapest pairs: they
        run 150 steps, seconds each under the simulator; every pair's partition and chunking
        invariance is tested above at tiny sizes)."""
        from tests import test_backends as tb

        tb.test_partition_invariance("cuda", "linreg-gd")
        tb.test_chunking_invariance("cuda", "dw1-overdamped")

    @pytest.mark.parametrize("dyn", [OverdampedLangevin(1e-2, 0.4), UnderdampedLangevin(0.05, 1.0, 0.4),
                                     SGD(0.01, None, momentum=0.5, temperature=0.1),
                                     AdamW(0.5, None, weight_decay=0.0), MALA(0.01, 0.4),
                                     Heun(1e-2, 0.4), LeimkuhlerMatthews(1e-2, 0.4),
                                     OBABO(0.05, 1.0, 0.4)],
                             ids=["overdamped", "baoab", "sgd", "adamw", "mala", "heun", "lm",
                                  "obabo"])
    @pytest.mark.parametrize("path", ["fused", "generic"])
    def test_divergence_flags_and_frozen_states_match_reference(dyn, path, monkeypatch):
        """Replicas started far out overflow at different steps: same flags, frozen states, by
        the fused row kernel and by the generic path (elementwise kernels, `ck.freeze`)."""
        if path == "generic":
            monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        M, d = 17, 3
        init = np.random.default_rng(0).uniform(-1.5, 1.5, (M, d))
        far = np.arange(2, M, 4)
        init[far, -1] = np.linspace(20.0, 60.0, far.size)
        ref, got = backends_agree("cuda", lambda: DoubleWell(d=d), dyn, M, (4, 6), seed=5,
                                  init=init, what=type(dyn).__name__)
        if not isinstance(dyn, (MALA, AdamW)):   # MALA rejects blown-up proposals, AdamW's
            #                                          steps are ~lr whatever the gradient
            assert (ref.diverged_step[far] > 0).all() and (ref.diverged_step >= 0).sum() == far.size

    @pytest.mark.parametrize("path", ["fused", "generic", "gemm"])
    def test_mala_is_not_frozen_by_its_count_of_accepted_moves(path, monkeypatch):
        """MALA's `accepted` count was held to the divergence bound on every path (rows,
        generic, GEMM): at a bound of 8 each replica froze after 8 accepted moves.  Now the
        flags equal the reference's, none."""
        if path == "generic":
            monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        pot = (lambda: Quadratic(spectrum=np.linspace(0.5, 2.0, 70), seed=1)) if path == "gemm" \
            else (lambda: Quadratic(H=np.eye(2)))
        ref, _ = backends_agree("cuda", pot, MALA(0.05, 0.01), 3, (6, 8), seed=3,
                                init="zeros", divergence_bound=8.0, what="mala")
        assert (ref.diverged_step < 0).all() and (ref.state["accepted"] > 8).all()

    @pytest.mark.parametrize("path", ["fused", "generic"])
    def test_heun_tests_only_the_corrected_step(path, monkeypatch):
        """Heun on a unit quadratic at eta = 1: the predictor is sigma xi (sigma = 2 here),
        the corrector (x + sigma xi) / 2, so under a bound of 2.5 many predictors exceed it
        at steps whose corrected x do not; as in the reference only x' is tested (the flags
        equal the reference's, and replicas live on)."""
        if path == "generic":
            monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        ref, _ = backends_agree("cuda", lambda: Quadratic(H=np.eye(3)), Heun(1.0, 2.0), 16,
                                (2, 3), seed=3, divergence_bound=2.5, what="heun")
        assert 0 < (ref.diverged_step < 0).sum() < 16

    @pytest.mark.parametrize("dyn", [OverdampedLangevin(1e-2, 0.4), UnderdampedLangevin(0.05, 1.0, 0.4),
                                     SGD(0.01, None, momentum=0.5, temperature=0.1),
                                     AdamW(0.5, None, weight_decay=0.0), Heun(1e-2, 0.4),
                                     LeimkuhlerMatthews(1e-2, 0.4), OBABO(0.05, 1.0, 0.4)],
                             ids=["overdamped", "baoab", "sgd", "adamw", "heun", "lm", "obabo"])
    def test_generic_path_resumes_a_run_with_frozen_replicas(dyn, tmp_path, monkeypatch):
        """A run whose far-out replicas froze, resumed on cuda by the generic path: its first
        steps write into fresh scratch arrays (poisoned by the stand-in's `empty`), so the
        frozen replicas' rows must be carried into them entry by entry; the final checkpoint
        equals the uninterrupted reference's."""
        monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        M, d = 9, 3
        init = np.random.default_rng(0).uniform(-1.5, 1.5, (M, d))
        init[::4, -1] = [20.0, 40.0, 60.0]
        make = lambda: DoubleWell(d=d)       # noqa: E731
        kw = dict(seed=5, init=init)
        ref = Simulation(make(), dyn, M, backend="numpy", **kw)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)    # the DivergenceWarning expected
            ref.advance(10)
            path = tmp_path / "run.h5"
            Simulation(make(), dyn, M, backend="cuda", **kw).run(5, record_every=5, out=path,
                                                                 progress=False).close()
            resume(path, steps=10, backend="cuda", progress=False).close()
        assert (ref.diverged_step[::4][:2] >= 0).all() or isinstance(dyn, AdamW)
        with open_run(path) as run:
            step, state, dstep = run.checkpoint()
            assert step == 10
            np.testing.assert_array_equal(dstep, ref.diverged_step)
            for k, v in ref.state.items():
                np.testing.assert_allclose(state[k], v, rtol=1e-9, atol=1e-11, err_msg=k)

    @pytest.mark.parametrize("dyn", [OverdampedLangevin(0.05, 0.8),
                                     SGD(0.05, None, momentum=0.5, temperature=0.1),
                                     AdamW(0.2, None, weight_decay=0.0)],
                             ids=["overdamped", "sgd", "adamw"])
    @pytest.mark.parametrize("path", ["fused", "generic"])
    def test_constrained_steps_freeze_as_the_reference_does(dyn, path, monkeypatch):
        """On the sphere (N = 4, |x| = 2) with a divergence bound of 1.7 on the coordinates,
        replicas freeze when a coordinate passes it: the same flags and frozen states by the
        fused p-spin kernels and by the generic path (candidate step, `project` / `retract`
        in array code, then `commit` and `freeze`)."""
        if path == "generic":
            monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        make = lambda: SphericalPSpin(N=4, p=3, seed=1)       # noqa: E731
        ref, _ = backends_agree("cuda", make, dyn, 9, (3, 5), seed=3, divergence_bound=1.7,
                                what=type(dyn).__name__)
        assert 0 < (ref.diverged_step >= 0).sum() < 9, ref.diverged_step

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("d", [1, 2, 3, 4])
    def test_row_kernel_noise_blocks_whatever_step_a_launch_starts_at(d, dtype, monkeypatch):
        """d = 1, 2, 4: a step's normals lie in one Philox block of 4 / d steps, which the row
        kernel computes once and shifts after each step (d = 3: cached draws).  Launches of at
        most 3 steps, called in chunks of 1, 2, 5, 3 steps, start at every offset within a
        block: the same bits as one launch of 11 steps, and the reference's states."""
        from langevin_sim.kernels import rows

        f32 = dtype == "float32"
        tol = dict(rtol=2e-4, atol=2e-4) if f32 else {}
        for dyn in (OverdampedLangevin(0.05, 0.7), UnderdampedLangevin(0.05, 0.8, 0.7),
                    Heun(0.05, 0.7), MALA(0.05, 0.7)):
            make = lambda: DoubleWell(d=d, barrier=1.0, a=0.8, tilt=0.1)      # noqa: E731
            if f32 and isinstance(dyn, MALA):    # decisions may flip on U's float32 rounding
                continue
            one = Simulation(make(), dyn, 5, backend="cuda", seed=7, dtype=dtype)
            one.advance(11)
            with monkeypatch.context() as m:
                m.setattr(rows, "CUDA_CALL_STEPS", 3)
                ref, got = backends_agree("cuda", make, dyn, 5, (1, 2, 5, 3), seed=7,
                                          dtype=dtype, what=f"d={d} {type(dyn).__name__}",
                                          **tol)
            for k in one.state:
                np.testing.assert_array_equal(got.state[k], one.state[k], err_msg=k)

    @pytest.mark.parametrize("dyn", [OverdampedLangevin(0.3, 2.0), SGD(0.3, None, momentum=0.5,
                                                                       temperature=2.0)],
                             ids=["overdamped", "sgd"])
    def test_constrained_commit_freezes_like_reference(dyn):
        """On the sphere |x|^2 = 4 a bound of 1.8 on |x_i| is crossed by some replicas: the
        commit kernel (after the device projection and retraction) flags the same steps."""
        ref, _ = backends_agree("cuda", lambda: SphericalPSpin(N=4, p=2, seed=3), dyn, 11, (2, 3),
                                seed=2, divergence_bound=1.8, what="pspin commit")
        assert 0 < (ref.diverged_step >= 0).sum() < 11

    def test_first_passage_arrays_equal_reference():
        fp = FirstPassage(HalfSpace([1.0, 0, 0], 0.0, "right"), Ball([-0.8, 0, 0], 0.5, "left"))
        for dyn in (OverdampedLangevin(0.05, 1.0), MALA(0.05, 1.0)):
            ref, got = backends_agree("cuda", lambda: DoubleWell(d=3, a=0.3, barrier=0.2), dyn, 9,
                                      (6, 4), seed=1, first_passage=fp)
            for k in ref.state:
                if k.startswith("fp_"):
                    np.testing.assert_array_equal(got.state[k], ref.state[k], err_msg=k)
            assert ref.state["fp_crossings"].sum() > 5

    def test_run_file_resumes_across_backends(tmp_path):
        """A run started on cuda resumes on numpy and the other way round: records and final
        checkpoint equal the uninterrupted reference run to rounding.  Each cuda stretch's
        machine entry names its device stack (here the simulator), a CPU one none; a change
        of backend is not a MachineChangeWarning (backend_history says it), a change of GPU
        stack between two cuda stretches is."""
        import json
        import warnings

        import h5py

        from langevin_sim.errors import MachineChangeWarning

        make, dyn = PAIRS["Quadratic-UnderdampedLangevin"]
        full = Simulation(make(), dyn, 5, backend="numpy", seed=4).run(12, record_every=3,
                                                                      out=tmp_path / "ref.h5")
        for first, then in (("cuda", "numpy"), ("numpy", "cuda"), ("cuda", "cuda")):
            path = tmp_path / f"{first}-{then}.h5"
            Simulation(make(), dyn, 5, backend=first, seed=4).run(6, record_every=3, out=path).close()
            with warnings.catch_warnings():
                warnings.simplefilter("error", MachineChangeWarning)
                resume(path, steps=12, backend=then, progress=False).close()
            with open_run(path) as a, open_run(tmp_path / "ref.h5") as b:
                devices = [e["arithmetic"].get("device") for e in a.machines]
                assert [d is not None and "CUDA simulator" in d and "kernels by numba" in d
                        for d in devices] == [first == "cuda", then == "cuda"], devices
                assert a.complete and a.steps_done == 12
                np.testing.assert_allclose(np.asarray(a.positions[:]), np.asarray(b.positions[:]),
                                           rtol=1e-9, atol=1e-11, err_msg=f"{first} -> {then}")
                np.testing.assert_allclose(a.energy[:], b.energy[:], rtol=1e-9, atol=1e-11)
                sa, sb = a.checkpoint()[1], b.checkpoint()[1]
                for k in sb:
                    np.testing.assert_allclose(sa[k], sb[k], rtol=1e-9, atol=1e-11, err_msg=k)
        with h5py.File(path, "r+") as f:              # cuda -> cuda on another GPU stack
            entries = json.loads(f.attrs["machines"])
            entries[-1]["arithmetic"]["device"] = "NVIDIA H100; CuPy 13.0, kernels by numba-cuda"
            f.attrs["machines"] = json.dumps(entries)
        with pytest.warns(MachineChangeWarning, match="device NVIDIA H100; CuPy 13.0, .* -> CUDA "
                                                      "simulator"):
            resume(path, steps=15, progress=False).close()
        full.close()

    @pytest.mark.parametrize("dyn", [OverdampedLangevin(0.02), UnderdampedLangevin(0.05, 0.5),
                                     MALA(0.05)], ids=["overdamped", "baoab", "mala"])
    def test_replica_exchange_swaps_on_the_device_like_reference(dyn, tmp_path):
        """A ladder on cuda (the swaps on the device arrays: x, g, u travel, BAOAB momenta
        rescaled, MALA's counters kept) equals the NumPy ladder: the exchange log's decisions
        exactly, energies and states to rounding; ladders 2..3 alone (first_replica=2) equal
        ladders 2..3 of the whole; a cuda ladder resumed on numpy ends where the reference
        does."""
        from langevin_sim.exchange import (ExchangeRun, ReplicaExchange, open_exchange,
                                           resume as resume_ladder)

        pot, T = DoubleWell(d=1, barrier=1.0, tilt=0.1), [0.2, 0.35, 0.6]
        kw = dict(every=7, seed=5)

        def ladder(backend, M=6, **more):
            return ReplicaExchange(pot, dyn, T, M, backend=backend, **kw, **more)
        ref, got = ladder("numpy"), ladder("cuda")
        ref.run(84, 21, out=tmp_path / "ref.h5", progress=False).close()
        got.run(84, 21, out=tmp_path / "got.h5", progress=False).close()
        part = ladder("cuda", M=2, first_replica=2)
        part.run(84, 21, progress=False)
        with open_exchange(tmp_path / "ref.h5") as a, open_exchange(tmp_path / "got.h5") as b:
            assert (a.accepted == 1).sum() >= 5 and (a.accepted == 0).any()
            for name in ("step", "walker", "accepted"):
                np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
            np.testing.assert_allclose(b.energy, a.energy, rtol=1e-12, atol=1e-14)
        p = ExchangeRun(part.runs)
        for r_got, r_part in zip(got.rungs, part.rungs):
            for k in r_got.state:
                np.testing.assert_array_equal(r_part.state[k], r_got.state[k][2:4], err_msg=k)
        for r_ref, r_got in zip(ref.rungs, got.rungs):
            for k in r_ref.state:
                np.testing.assert_allclose(r_got.state[k], r_ref.state[k], rtol=1e-10,
                                           atol=1e-12, err_msg=k)
        with open_exchange(tmp_path / "got.h5") as b:
            np.testing.assert_array_equal(p.walker, b.walker[:, 2:4])
        # half on cuda, the rest on numpy: the reference's end
        ladder("cuda").run(42, 21, out=tmp_path / "half.h5", progress=False).close()
        resume_ladder(tmp_path / "half.h5", steps=84, backend="numpy", progress=False).close()
        with open_exchange(tmp_path / "ref.h5") as a, open_exchange(tmp_path / "half.h5") as b:
            np.testing.assert_array_equal(b.accepted, a.accepted)
            for ra, rb in zip(a.runs, b.runs):
                assert rb.complete and rb.steps_done == 84
                xa, xb = ra.checkpoint()[1], rb.checkpoint()[1]
                for k in xa:
                    np.testing.assert_allclose(xb[k], xa[k], rtol=1e-10, atol=1e-12, err_msg=k)

    class SyncingSimulation(Simulation):
        """Simulation with the proposed host-sync hook (docs/gpu.md, "Simulation"): advance
        leaves the state on the device when sync=False; snapshot syncs first."""

        def advance(self, steps, sync=True):
            self.backend.advance(self, self.step, int(steps))
            self.step += int(steps)
            if sync:
                self.sync()

        def sync(self):
            to_host = getattr(self.backend, "to_host", None)
            if to_host is not None:
                to_host(self)

        def snapshot(self, record_positions=True):
            self.sync()
            return super().snapshot(record_positions)

    def test_state_stays_on_device_until_sync_and_host_replacement_wins():
        make, dyn = PAIRS["DoubleWell-SGD"]
        sim = SyncingSimulation(make(), dyn, 6, backend="cuda", seed=3)
        x0 = sim.state["x"].copy()
        sim.advance(3, sync=False)
        sim.advance(2, sync=False)
        run = sim.backend.device_run(sim)
        assert run.host_stale and np.array_equal(sim.state["x"], x0)     # host untouched
        rec = sim.snapshot()                                               # a record syncs
        assert not run.host_stale and not np.array_equal(sim.state["x"], x0)
        ref = Simulation(make(), dyn, 6, backend="numpy", seed=3)
        ref.advance(5)
        np.testing.assert_allclose(rec["positions"], ref.state["x"], rtol=1e-12)
        # the host's arrays replaced (as resume does): the device takes them
        sim.state = {k: v.copy() for k, v in ref.state.items()}
        sim.advance(4)
        ref.advance(4)
        np.testing.assert_allclose(sim.state["x"], ref.state["x"], rtol=1e-12)
        assert sim.backend.device_run(sim).owns(sim)
        # and a plain Simulation (no sync hook) gets its host copy after every advance
        plain = Simulation(make(), dyn, 6, backend="cuda", seed=3)
        plain.advance(9)
        np.testing.assert_allclose(plain.state["x"], ref.state["x"], rtol=1e-12)
        # the mirror is read-only: an in-place edit raises (it was dropped at the next step);
        # one array replaced is taken; an edit made writeable on purpose, then upload
        with pytest.raises(ValueError, match="read-only"):
            plain.state["x"][:] = 0
        plain.state["x"] = np.zeros_like(plain.state["x"])
        ref.state["x"][:] = 0
        plain.advance(2)
        ref.advance(2)
        np.testing.assert_allclose(plain.state["x"], ref.state["x"], rtol=1e-12)
        plain.state["x"].flags.writeable = True
        plain.state["x"][:] = ref.state["x"][:] = 0.5
        plain.backend.upload(plain)
        plain.advance(2)
        ref.advance(2)
        np.testing.assert_allclose(plain.state["x"], ref.state["x"], rtol=1e-12)

    def test_potential_methods_on_device_arrays():
        """Which methods of which potentials use only the array module of x (with the
        instance's arrays on the device); the others run on the host with one warning."""
        pots = [make() for make in POTENTIAL_CASES.values()]
        report = cuda_backend.xp_clean_report(pots)
        dirty = {}
        for (cls, method), why in report.items():
            if why:
                dirty.setdefault(cls, set()).add(method)
                assert "TypeError" in why or "device array" in why, (cls, method, why)
        assert dirty == {}, dirty      # every registered potential runs on device arrays

        def host_only(x, batch=None):       # converts to NumPy: what CuPy refuses
            return np.asarray(x) * 0.0

        def hosted():
            pot = Quadratic(spectrum=[1.0, 2.0])
            pot.grad = host_only
            return pot

        cuda_backend._warned.clear()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            sim = Simulation(hosted(), OverdampedLangevin(0.01, 0.5), 3, backend="cuda")
            sim.advance(2)
            Simulation(DoubleWell(d=2), OverdampedLangevin(0.01, 0.5), 3, backend="cuda").advance(2)
            Simulation(hosted(), OverdampedLangevin(0.01, 0.5), 3, backend="cuda").advance(2)
        msgs = [str(w.message) for w in rec if "cuda backend" in str(w.message)]
        assert len(msgs) == 1 and "Quadratic.grad is not written with the array module" \
            in msgs[0] and "host" in msgs[0], msgs
        run = sim.backend.device_run(sim)
        assert set(run.pot.bridged) == {"grad"} and type(run.state["x"]).__module__ == "cupy"

    def test_a_registered_cuda_kernel_replaces_the_generic_path(monkeypatch):
        """`backends.registry`: a kernel registered for (pair, "cuda") is called as
        fn(run, sim, t0, K) with the device arrays; with a first-passage observer attached it
        is bypassed unless registered with first_passage=True."""
        import langevin_sim.kernels  # noqa: F401  (the real kernels first: the patch replaces one)
        from langevin_sim.backends import registry

        calls = []

        def fused(run, sim, t0, K):       # stands in for a fused kernel: the generic steps
            calls.append((t0, K, type(run.state["x"]).__module__))
            for t in range(t0, t0 + K):
                run.step(t)
        monkeypatch.setitem(registry.KERNELS, (DoubleWell, OverdampedLangevin, "cuda"),
                            registry.Kernel(fused))
        make, dyn = (lambda: DoubleWell(d=2), OverdampedLangevin(0.02, 0.5))
        backends_agree("cuda", make, dyn, 5, (3, 4), seed=2)
        assert calls == [(0, 3, "cupy"), (3, 4, "cupy")]
        fp = FirstPassage(HalfSpace([1.0, 0.0], 0.0, "right"))
        backends_agree("cuda", make, dyn, 5, (3,), seed=2, first_passage=fp)
        assert len(calls) == 2

    @pytest.mark.parametrize("name", GENERIC_PAIRS)
    def test_generic_path_matches_reference(name, monkeypatch):
        """Every dynamics by the generic per-step path (the path of any pair, size or option
        no fused kernel takes: `ck.elementwise` with each rule, or the dynamics' reference
        step on device arrays),
        on a finite-sum potential (SGD's samplings and noises) and on the sphere (candidate
        steps, projection, retraction): float64 parity with the reference over 3 + 4 steps
        (d = 3 and N = 4 coordinates, so that a step's normals straddle Philox blocks)."""
        make, dyn = PAIRS[name]
        monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            backends_agree("cuda", make, dyn, 5, (3, 4), what=name, seed=4)

    def test_generic_rules_launch_with_their_registered_arity(monkeypatch):
        """Every rule of `ck.EW_ARITY` is launched by some dynamics of the generic path, each
        with the arrays and scalars EW_ARITY gives it (`ck.elementwise_signature`, which the
        PTX compilation test and benchmarks/kernel_resources.py compile, types them from it;
        EW_COMMIT with at most its three pairs)."""
        monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        seen = {}
        launch = cuda_backend.DeviceRun.elementwise

        def recording(run, rule, t, ins, outs, p=(), **kw):
            seen.setdefault(rule, set()).add((len(ins), len(outs), len(p)))
            return launch(run, rule, t, ins, outs, p, **kw)

        monkeypatch.setattr(cuda_backend.DeviceRun, "elementwise", recording)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for name in GENERIC_PAIRS:
                make, dyn = PAIRS[name]
                Simulation(make(), dyn, 2, backend="cuda", seed=1).advance(1)
        assert set(seen) == set(ck.EW_ARITY)
        for rule, arities in seen.items():
            if rule == ck.EW_COMMIT:
                assert all(a[0] == a[1] <= 3 and a[2] == 0 for a in arities), arities
                assert (3, 3, 0) in arities            # AdamW on the sphere: x, m, s
            else:
                assert arities == {ck.EW_ARITY[rule]}, (rule, arities)

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("rule", sorted(WIDE_GENERIC))
    def test_generic_path_steps_long_rows(rule, dtype, monkeypatch):
        """Rows of 37 entries by the generic path: 10 chunks a replica (`ck.chunks_of`), a
        step's normals straddling Philox blocks at every offset, the threads of a replica in
        several thread blocks (4 threads a block here): the reference's states (float32: to
        its rounding)."""
        monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
        tol = dict(rtol=2e-4, atol=2e-4) if dtype == "float32" else {}
        backends_agree("cuda", wide_regression, WIDE_GENERIC[rule], 3, (3, 2), what=rule,
                       seed=6, dtype=dtype, **tol)

    def test_state_and_instance_arrays_live_on_the_device():
        make, dyn = PAIRS["LinearRegression-SGD"]
        sim = Simulation(make(), dyn, 4, backend="cuda", seed=1)
        sim.advance(2)
        run = sim.backend.device_run(sim)
        xp = cuda_runtime.xp()
        assert all(isinstance(v, xp.ndarray) for v in run.state.values())
        assert isinstance(run.dstep, xp.ndarray) and isinstance(run.pot.dev.A, xp.ndarray)
        assert isinstance(sim.state["x"], np.ndarray)                   # the host mirror
        assert "simulator" in sim.backend.device

    @pytest.mark.parametrize("where", ["positions64", "copy_to_host"])
    def test_out_of_memory_at_a_record_or_checkpoint_is_the_one_line_error(where, monkeypatch):
        """CuPy's OutOfMemoryError where a record's or a checkpoint's device arrays are made
        (outside `advance`) is the same one-line error as in a step, not CuPy's own."""
        from langevin_sim.backends import cuda_backend

        class OutOfMemoryError(MemoryError):     # the name of cupy.cuda.memory's
            pass

        def refuse(self, *a, **k):
            raise OutOfMemoryError("Out of memory allocating 8,589,934,592 bytes")
        monkeypatch.setattr(cuda_backend.DeviceRun, where, refuse)
        sim = Simulation(DoubleWell(d=2), OverdampedLangevin(0.01, 0.5), 4, backend="cuda",
                         seed=1)
        with pytest.raises(BackendUnavailableError, match="^out of GPU memory: 4 replicas"):
            sim.run(steps=4, record_every=2)

    def test_backends_command_names_the_simulator_and_the_kernel_target(capsys):
        from langevin_sim.cli import main as cli

        assert cli(["backends", "cuda"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("cuda   CUDA simulator (numba) with the NumPy stand-in for CuPy; "
                              "kernels by numba"), out

    def test_gpu_check_script_runs_dry_under_the_simulator(tmp_path):
        """benchmarks/gpu_check.sh with GPU_CHECK_DRY=1: its steps as on a GPU (the GPU tests
        collected and skipped, gpu_throughput.py --tiny), its one report copied to $OUT; the
        tests of a part (GPU_TESTS passes a quoted -k expression to pytest whole)."""
        env = dict(os.environ, GPU_CHECK_DRY="1", PYTHON=sys.executable, OUT=str(tmp_path),
                   GPU_TEST_WORKERS="1", GPU_TESTS='-k "philox or resume"')
        r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        assert re.search(r"\d+ skipped, \d+ deselected", r.stdout), r.stdout[-3000:]
        text = (tmp_path / "gpu-simulator.md").read_text()
        for w in ("W1", "W2", "W3", "W4", "float32", "float64", "Philox",
                  "A large toy net: the fused kernel against the generic path",
                  "## Settings the table ran with",
                  "A net beyond the fused kernel: the generic path's step and its gradient",
                  "## GPU tests (pytest -m gpu tests/test_gpu.py): exit status 0",
                  "- cuBLAS GEMM ceiling float64 (a square product, n = 16): ",
                  "| % of GEMM (shape / ceiling) |",
                  "skipped", "simulator mode", "benchmark exit status: 0"):
            assert w in text, (w, text[-3000:])

    def test_gpu_check_script_kills_a_step_deaf_to_its_budget(tmp_path):
        """A step that ignores the budget's SIGINT (a kernel that never returns holds Python
        off its signal handler) is killed KILL_AFTER seconds later, so that the script still
        writes its report within the device call's time."""
        fake = tmp_path / "python"
        fake.write_text("#!/usr/bin/env bash\n"
                        'if [[ "$1 $2" == "-m pytest" ]]; then trap "" INT; sleep 120; exit 0; fi\n'
                        f'exec {sys.executable} "$@"\n')
        fake.chmod(0o755)
        env = dict(os.environ, GPU_CHECK_DRY="1", PYTHON=str(fake), OUT=str(tmp_path),
                   TEST_BUDGET="2", KILL_AFTER="2", GPU_BENCH="none")
        t0 = time.time()
        r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                           capture_output=True, text=True, timeout=100, cwd=ROOT)
        assert time.time() - t0 < 60, r.stdout[-2000:]
        assert "pytest exit status: 137" in r.stdout and r.returncode != 0, r.stdout[-2000:]
        text = (tmp_path / "gpu-simulator.md").read_text()     # GPU_BENCH=none: no benchmark
        assert "skipped (GPU_BENCH=none)" in text and "gpu_throughput" not in text

    # ------------------------------------------------------------ fused DoubleWell kernels

    DW_FUSED = {"overdamped": OverdampedLangevin(Schedule("linear", 0.05, 0.01, 12),
                                                 Schedule("linear", 0.8, 0.2, 9)),
                "baoab": UnderdampedLangevin(Schedule("linear", 0.08, 0.02, 12), 1.3,
                                             Schedule("cosine", 0.9, 0.3, 9), mass=1.5)}

    def fused_and_reference(make, dyn, M: int, kw: dict, calls: tuple):
        """The reference, the whole cuda run and an uneven first_replica split of it ((0, 2),
        (2, M - 2) replicas, `kw["init"]` split accordingly), each advanced by every count in
        `calls` (overflows of replicas that freeze are expected: silenced)."""
        init = kw["init"]
        ref = Simulation(make(), dyn, M, backend="numpy", **kw)
        whole = Simulation(make(), dyn, M, backend="cuda", **kw)
        parts = [Simulation(make(), dyn, n, backend="cuda", first_replica=r0,
                            **dict(kw, init=init[r0:r0 + n])) for r0, n in ((0, 2), (2, M - 2))]
        with np.errstate(all="ignore"):
            for K in calls:
                for s in [ref, whole] + parts:
                    s.advance(K)
        return ref, whole, parts

    @pytest.fixture
    def narrow_warps(monkeypatch):
        """The toy nets' kernel with "warps" of 4 lanes (`toynets.WARP`): the kernel's logic
        does not depend on the width (block barriers only, no warp intrinsics; lanes stride by
        the block's width), and the simulator runs every lane as a Python thread, so the parity
        tests run about 3x faster.  The real width of 32 runs in the tiny AdamW and modular
        arithmetic cases, the PTX test and the GPU tests."""
        from langevin_sim.kernels import toynets

        monkeypatch.setattr(toynets, "WARP", 4)

    def no_generic_steps(monkeypatch):
        """Make the generic per-step path fail: what runs is the fused kernel."""
        def generic(run, t):
            raise AssertionError("generic path used for a pair with a fused cuda kernel")
        monkeypatch.setattr(cuda_backend.DeviceRun, "step", generic)

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("dyn", list(DW_FUSED.values()), ids=list(DW_FUSED))
    def test_fused_double_well_kernels_equal_reference(dyn, dtype, monkeypatch):
        """DoubleWell x Overdamped/BAOAB run by the fused kernels (several K-step calls, step
        and temperature schedules, replicas started far out that diverge, an uneven
        first_replica split): bit for bit the reference in float64 (float32 to rounding;
        under the simulator bit for bit as well), the same divergence flags."""
        from langevin_sim.kernels import rows

        no_generic_steps(monkeypatch)
        M, d = 7, 2
        init = np.random.default_rng(3).uniform(-1.5, 1.5, (M, d))
        init[[1, 5], [1, 0]] = [40.0, 25.0]                 # these overflow within a few steps
        make = lambda: DoubleWell(d=d, barrier=1.2, a=0.9, tilt=0.2)   # noqa: E731
        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=1e6)
        ref, whole, parts = fused_and_reference(make, dyn, M, kw, (3, 1, 6, 4))
        assert cuda_backend.fused_kernel(whole) is rows.advance
        assert ((ref.diverged_step >= 0).sum() == 2 and (ref.diverged_step[[1, 5]] > 0).all())
        np.testing.assert_array_equal(whole.diverged_step, ref.diverged_step)
        np.testing.assert_array_equal(np.concatenate([p.diverged_step for p in parts]),
                                      ref.diverged_step)
        for k in ref.state:
            if dtype == "float64":
                np.testing.assert_array_equal(whole.state[k], ref.state[k], err_msg=k)
            else:
                np.testing.assert_allclose(whole.state[k], ref.state[k], rtol=1e-5, atol=1e-5,
                                           err_msg=k)
            np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]),
                                          whole.state[k], err_msg=f"partition, {k}")

    ROW_CASES = {   # every dynamics of the row kernels, each on another row family
        "overdamped": (lambda: MultiWell(centers=[[-1, 0, 0], [1, 0.5, 0]], softness=0.2,
                                         spectra=[[1, 2, 3], [2, 2, 4]]),
                       OverdampedLangevin(Schedule("linear", 0.05, 0.02, 12), 0.4)),
        "baoab": (lambda: ScaleSymmetric(depth=3, n=4, noise=0.1, seed=1),
                  UnderdampedLangevin(0.05, 1.3, Schedule("cosine", 0.5, 0.2, 9), mass=1.5)),
        "heun": (POTENTIAL_CASES["ShiftedMultiWell"],
                 Heun(Schedule("linear", 0.05, 0.02, 12), 0.4)),
        "obabo": (POTENTIAL_CASES["MultiWell"],
                  OBABO(Schedule("linear", 0.05, 0.02, 12), 1.3, 0.4, mass=1.5)),
        "lm": (lambda: Valley(d=3, profile="table", nodes_s=[-1.0, 0.0, 0.5, 2.0],
                              nodes_k=[1.0, 3.0, 2.0, 4.0], bounds=(-0.8, 1.5)),
               LeimkuhlerMatthews(0.05, Schedule("cosine", 0.5, 0.2, 9))),
        "sgd": (POTENTIAL_CASES["ShiftedMultiWell"],
                SGD(Schedule("linear", 0.05, 0.02, 12), None, momentum=0.5, weight_decay=1e-2,
                    temperature=0.1, grad_noise=0.05)),
        "adamw": (POTENTIAL_CASES["MultiWell"], AdamW(0.05, None, weight_decay=0.01)),
        "mala": (lambda: ScaleSymmetric(depth=3, n=4, noise=0.1, seed=1),
                 MALA(Schedule("linear", 0.05, 0.02, 12), 0.4)),
        "sgd-iid": (lambda: ScaleSymmetric(depth=3, n=6, noise=0.1, seed=1),
                    SGD(0.05, 2, sampling="iid", momentum=0.3, temperature=0.05)),
        "adamw-epoch": (POTENTIAL_CASES["ShiftedMultiWell"], AdamW(0.05, 2, weight_decay=0.01)),
        # label noise (with grad noise and temperature: three streams' cached blocks at once)
        "sgd-iid-labels": (lambda: LinearRegression(n=8, d=3, noise=0.2, seed=1),
                           SGD(Schedule("linear", 0.05, 0.02, 12), 3, sampling="iid",
                               momentum=0.3, temperature=0.05, grad_noise=0.05,
                               label_noise=0.4)),
        "sgd-epoch-labels": (lambda: ScaleSymmetric(depth=3, n=6, noise=0.1, seed=1),
                             SGD(0.05, 2, label_noise=0.3)),
        "sgd-subset": (lambda: LinearRegression(n=6, d=3, noise=0.2, seed=1),   # collisions
                       SGD(0.05, 4, sampling="subset", momentum=0.3, label_noise=0.2)),
        "sgd-full-labels": (lambda: ScaleSymmetric(depth=3, n=4, noise=0.1, seed=1),
                            SGD(0.05, None, momentum=0.5, label_noise=0.3)),
        "mala-linreg": (lambda: LinearRegression(n=8, d=3, noise=0.2, seed=1),
                        MALA(Schedule("linear", 0.05, 0.02, 12), 0.4)),
        "mala-quadratic": (lambda: Quadratic(spectrum=[0.5, 2.0, 4.0], seed=2,
                                             center=[0.3, -0.2, 0.1]),
                           MALA(Schedule("linear", 0.05, 0.02, 12), 0.4)),
        "sgd-quadratic": (lambda: Quadratic(spectrum=[0.5, 2.0, 4.0], seed=2),
                          SGD(0.1, None, momentum=0.8, weight_decay=0.01, temperature=0.05)),
    }

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("case", list(ROW_CASES))
    def test_row_kernels_equal_reference(case, dtype, monkeypatch):
        """Every dynamics of `kernels.rows` (full-batch SGD with momentum, weight decay,
        temperature and grad_noise; AdamW; MALA; i.i.d. and epoch minibatches of finite sums,
        epochs crossed within a call; "subset" minibatches by Floyd's algorithm; SGD's label
        noise on full and minibatches), run by the row kernel in several calls, with
        schedules and two replicas started beyond the bound that freeze: the reference's states to
        rounding (the row gradients sum in another order than BLAS), the same divergence
        flags, and an uneven first_replica split bit for bit the whole run."""
        from langevin_sim.kernels import rows

        no_generic_steps(monkeypatch)
        no_host_permutations(monkeypatch)      # epochs of <= MAX_PERM samples: sorted inside
        make, dyn = ROW_CASES[case]
        M, d = 7, make().d
        init = np.random.default_rng(3).uniform(-1.0, 1.0, (M, d))
        init[[1, 5], [0, d - 1]] = [3e6, -5e6]            # these leave the bound at once
        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=1e6)
        ref, whole, parts = fused_and_reference(make, dyn, M, kw, (3, 1, 4))
        kernel = cuda_backend.fused_kernel(whole)    # (a quadratic form's runs the row kernel)
        assert kernel is rows.advance or (kernel.__name__.endswith("_dense_cuda")
                                          and rows.accepts(whole))
        assert (ref.diverged_step[[1, 5]] > 0).all() and (ref.diverged_step >= 0).sum() == 2
        np.testing.assert_array_equal(whole.diverged_step, ref.diverged_step)
        tol = 1e-10 if dtype == "float64" else 2e-4
        for k in ref.state:
            live = ref.diverged_step < 0
            np.testing.assert_allclose(whole.state[k][live], ref.state[k][live], rtol=tol,
                                       atol=tol, err_msg=k)
        assert_split_matches(parts, whole, make(), what=case)

    def no_host_permutations(monkeypatch):
        """Make the device's row sort of epoch permutations fail: the kernel sorts them."""
        def host_sort(run, epoch):
            raise AssertionError("the epoch's permutation was sorted outside the kernel")
        monkeypatch.setattr(cuda_backend.DeviceRun, "permutations", host_sort)

    def test_state_bound_passes_exactly_the_values_the_float64_bound_passes():
        """`cuda_kernels.state_bound`: a float32 value v passes |v| <= state_bound(bound) in
        float32 exactly when |v| <= bound in float64 -- for bounds that round up, down or
        exactly to float32, beyond float32's range, inf, and powers of two (whose float32
        below is half a step closer), and values at, around and between them, inf and NaN;
        float64 states keep the bound."""
        from langevin_sim.backends import cuda_kernels as ck

        within = ck.steps().within_bound
        rng = np.random.default_rng(4)
        bounds = np.concatenate([np.exp(rng.uniform(-40, 80, 300)), 2.0 ** np.arange(-20, 40),
                                 [1e8, 20.0, 1.9, 1e300, 3.4028235e38, 3.4028236e38,
                                  np.inf, np.float64(np.float32(1.9)) + 1e-12]])
        for f32 in (True, False):
            ftype = np.float32 if f32 else np.float64
            bound_of = ck.state_bound(f32)

            @cuda.jit
            def kernel(v, bound, out):
                i = cuda.grid(1)
                if i < v.shape[0]:
                    out[i] = within(v[i], bound_of(bound))

            for bound in bounds:
                with np.errstate(over="ignore"):
                    b = ftype(bound) if np.isfinite(ftype(bound)) else np.finfo(ftype).max
                near = np.array([b, np.nextafter(b, ftype(0)), np.nextafter(b, ftype(np.inf)),
                                 np.inf, np.nan, 0, b / 3], ftype)
                v = np.concatenate([near, -near])
                out = np.zeros(v.shape, np.bool_)
                kernel[4, 4](v, float(bound), out)
                with np.errstate(invalid="ignore"):
                    np.testing.assert_array_equal(out, np.abs(v.astype(np.float64)) <= bound,
                                                  err_msg=f"bound {bound!r}, {ftype.__name__}")

    def test_row_kernels_take_epoch_permutations_from_the_host_beyond_max_perm(monkeypatch):
        """Epoch sampling of more than MAX_PERM samples: the permutations come from the
        device's row sort between launches (one launch per epoch), equal to the reference."""
        from langevin_sim.kernels import rows

        no_generic_steps(monkeypatch)
        monkeypatch.setattr(rows, "MAX_PERM", 5)
        make, dyn = ROW_CASES["sgd-epoch-labels"]            # 6 samples
        init = np.random.default_rng(3).uniform(-1.0, 1.0, (3, make().d))
        ref, whole, parts = fused_and_reference(make, dyn, 3, dict(seed=7, init=init), (4, 3))
        assert not rows.permutes_in_kernel(whole)
        for k in ref.state:
            np.testing.assert_allclose(whole.state[k], ref.state[k], rtol=1e-10, atol=1e-10)
        assert_split_matches(parts, whole, make())

    def test_row_kernels_decline_what_they_do_not_run():
        """d > MAX_D and label noise on a full batch of more than MAX_LABELS samples take the
        generic path; full batches, i.i.d., epoch and "subset" minibatches, label noise and MALA
        run fused; LinearRegression's and Quadratic's Langevin pairs keep their dense
        kernels, and beyond MAX_D their Leimkuhler-Matthews, Heun, MALA and full-batch SGD
        and AdamW take the GEMM path (`quadratic.form_or_rows`, first-passage observers too),
        minibatches and label noise there the generic path."""
        from langevin_sim.kernels import linear_regression, quadratic, rows

        shifted = POTENTIAL_CASES["ShiftedMultiWell"]
        forms = (quadratic._quadratic_dense_cuda, linear_regression._linreg_dense_cuda)

        def kernel(pot, dyn, **kw):
            sim = Simulation(pot, dyn, 2, backend="cuda", **kw)
            return cuda_backend.fused_kernel(sim), rows.accepts(sim)

        def fused(pot, dyn):                  # the row kernel runs it (directly, or by a form's)
            sim = Simulation(pot, dyn, 2, backend="cuda")
            k = cuda_backend.fused_kernel(sim)
            return k is rows.advance or (k in forms and quadratic.by_rows(sim))
        assert fused(shifted(), SGD(0.01, None)) and fused(shifted(), MALA(0.01, 0.5))
        assert fused(shifted(), SGD(0.01, 2)) and fused(shifted(), AdamW(0.01, 2, sampling="iid"))
        assert fused(shifted(), SGD(0.01, 2, sampling="subset"))
        assert fused(ScaleSymmetric(depth=3, n=4, seed=1), SGD(0.01, None, label_noise=0.1))
        big = LinearRegression(n=rows.MAX_LABELS + 1, d=2)
        assert not fused(big, SGD(0.01, None, label_noise=0.1))
        assert fused(big, SGD(0.01, 8, label_noise=0.1)) and fused(big, SGD(0.01, None))
        assert not fused(big, OverdampedLangevin(0.01, 0.5))                  # the dense kernel
        assert fused(Quadratic(spectrum=np.ones(quadratic.FORM_ROWS_MAX_D)), Heun(0.01, 0.5))
        # between FORM_ROWS_MAX_D and MAX_D a form's GEMM path where it can, the rows where not
        mid = quadratic.FORM_ROWS_MAX_D + 1
        assert not fused(Quadratic(spectrum=np.ones(mid)), Heun(0.01, 0.5))
        assert kernel(Quadratic(spectrum=np.ones(mid)), Heun(0.01, 0.5)) == (
            quadratic._quadratic_dense_cuda, True)
        assert not fused(LinearRegression(n=mid + 4, d=mid), SGD(0.01, None))
        assert fused(LinearRegression(n=mid + 4, d=mid), SGD(0.01, 8))
        assert fused(LinearRegression(n=mid + 4, d=mid), SGD(0.01, None, label_noise=0.1))
        wide = Quadratic(spectrum=np.ones(rows.MAX_D + 1))
        for dyn in (Heun(0.01, 0.5), LeimkuhlerMatthews(0.01, 0.5), SGD(0.01, None),
                    AdamW(0.01, None), MALA(0.01, 0.5)):
            assert kernel(wide, dyn) == (quadratic._quadratic_dense_cuda, False), dyn
        fp = FirstPassage(HalfSpace(np.eye(rows.MAX_D + 1)[0], 0.0, "right"))
        assert kernel(wide, Heun(0.01, 0.5), first_passage=fp)[0] is quadratic._quadratic_dense_cuda
        wide = LinearRegression(n=rows.MAX_D + 4, d=rows.MAX_D + 1)
        assert kernel(wide, SGD(0.01, None, momentum=0.5))[0] is linear_regression._linreg_dense_cuda
        assert kernel(wide, SGD(0.01, 8))[0] is None
        assert kernel(wide, SGD(0.01, None, label_noise=0.1))[0] is None
        assert not fused(Quadratic(spectrum=[1.0, 2.0]), UnderdampedLangevin(0.01, 1.0, 0.5))
        assert fused(DoubleWell(d=rows.MAX_D), OverdampedLangevin(0.01, 0.5))
        assert not fused(DoubleWell(d=rows.MAX_D + 1), OverdampedLangevin(0.01, 0.5))

    def test_fused_double_well_first_passage_and_resume(tmp_path, monkeypatch):
        """The fused kernels update first-passage observers (bit for bit the reference's
        arrays), and a run file resumes across backends through them."""
        no_generic_steps(monkeypatch)
        fp = FirstPassage(HalfSpace([1.0, 0.0], 0.0, "right"), Ball([-0.8, 0.0], 0.5, "left"))
        make = lambda: DoubleWell(d=2, a=0.3, barrier=0.2)   # noqa: E731
        for dyn in DW_FUSED.values():
            ref, got = backends_agree("cuda", make, dyn, 9, (6, 5), seed=1, first_passage=fp,
                                      rtol=0, atol=0)
            for k in ref.state:
                np.testing.assert_array_equal(got.state[k], ref.state[k], err_msg=k)
            assert ref.state["fp_crossings"].sum() > 1
        dyn = DW_FUSED["baoab"]
        Simulation(make(), dyn, 5, backend="numpy", seed=4).run(
            10, record_every=5, out=tmp_path / "ref.h5").close()
        for first, then in (("cuda", "cuda"), ("numpy", "cuda"), ("cuda", "numpy")):
            path = tmp_path / f"{first}-{then}.h5"
            Simulation(make(), dyn, 5, backend=first, seed=4).run(5, record_every=5,
                                                                  out=path).close()
            resume(path, steps=10, backend=then, progress=False).close()
            with open_run(path) as a, open_run(tmp_path / "ref.h5") as b:
                assert a.complete and a.steps_done == 10
                sa, sb = a.checkpoint()[1], b.checkpoint()[1]
                for k in sb:
                    np.testing.assert_array_equal(sa[k], sb[k], err_msg=f"{first} -> {then}: {k}")

    # ------------------------------------------------------------ fused dense kernels (GEMM + step)

    def _unstable_quadratic():
        """A Quadratic whose stiffest mode grows by 1.5 per step at eta = 0.1."""
        return Quadratic(spectrum=[0.5, 1.5, 25.0], seed=2, center=[0.1, 0.2, -0.1])

    def _along_unstable_mode(center, H, far=5.0):
        """init(pot, z): replicas at `center` + a multiple of H's stiffest eigenvector (`far`
        for replica 5, 0.01 for the others) + 0.01 z."""
        def init(pot, z):
            scale = np.r_[0.01 * np.ones(5), far, 0.01]
            return center(pot) + scale[:, None] * np.linalg.eigh(H(pot))[1][:, -1] + 0.01 * z
        return init

    _LINREG = LinearRegression(n=12, d=3, seed=3)

    DENSE_FUSED = {
        # replicas on the sphere |x|^2 = 4 (p = 2): |x_i| <= 1.9 is crossed by some
        "pspin": (lambda: SphericalPSpin(N=4, p=2, seed=3),
                  OverdampedLangevin(Schedule("linear", 0.3, 0.2, 12),
                                     Schedule("linear", 2.0, 1.0, 9)), 1.9, None),
        # Leimkuhler-Matthews: the same kernel, the normals of steps t and t + 1 summed;
        # Heun: two GEMMs and two launches per step
        "pspin-lm": (lambda: SphericalPSpin(N=4, p=2, seed=3),
                     LeimkuhlerMatthews(Schedule("linear", 0.3, 0.2, 12),
                                        Schedule("linear", 2.0, 1.0, 9)), 1.9, None),
        "pspin-heun": (lambda: SphericalPSpin(N=4, p=2, seed=3),
                       Heun(Schedule("linear", 0.3, 0.2, 12), Schedule("linear", 2.0, 1.0, 9)),
                       1.9, None),
        # full-batch SGD: the velocity (momentum) transposed beside x, projected at the new x;
        # AdamW: its moments beside x, m projected
        "pspin-sgd": (lambda: SphericalPSpin(N=4, p=2, seed=3),
                      SGD(Schedule("linear", 0.3, 0.2, 12), None, momentum=0.6, grad_noise=0.4,
                          temperature=Schedule("linear", 2.0, 1.0, 9)), 1.9, None),
        "pspin-adamw": (lambda: SphericalPSpin(N=4, p=2, seed=3),
                        AdamW(Schedule("linear", 0.4, 0.2, 12), None, beta2=0.95,
                              weight_decay=0.0), 1.7, None),
        "pspin-p3": (lambda: SphericalPSpin(N=5, p=3, seed=1, planted=0.5),
                     OverdampedLangevin(Schedule("linear", 0.05, 0.02, 12),
                                        Schedule("cosine", 0.9, 0.3, 9)), 1e8, None),
        # the unstable mode carries replicas started far out past the bound first
        "quadratic": (_unstable_quadratic,
                      OverdampedLangevin(0.1, Schedule("linear", 1e-4, 1e-5, 9)), 20.0,
                      _along_unstable_mode(lambda p: p.center, lambda p: p.H)),
        # the full-batch least-squares loss, its stiffest mode grown by 1.5 per step
        "linreg": (lambda: LinearRegression(n=12, d=3, seed=3),
                   OverdampedLangevin(2.5 / np.linalg.eigvalsh(_LINREG.hessian_matrix)[-1],
                                      Schedule("linear", 1e-4, 1e-5, 9)), 20.0,
                   _along_unstable_mode(lambda p: p.minimizer(), lambda p: p.hessian_matrix)),
        # beyond rows.MAX_D (lowered to 2 below) the quadratic forms' other dynamics take the
        # GEMM path too (`quadratic.form_or_rows`): Leimkuhler-Matthews (growth 1.5 a step),
        # Heun (1.625), heavy-ball SGD with weight decay, gradient noise and a temperature
        # (lr lam ~ 3.4: growth ~1.3), AdamW with weight decay
        "quadratic-lm": (_unstable_quadratic,
                         LeimkuhlerMatthews(0.1, Schedule("linear", 1e-4, 1e-5, 9)), 20.0,
                         _along_unstable_mode(lambda p: p.center, lambda p: p.H)),
        "quadratic-heun": (_unstable_quadratic,
                           Heun(0.1, Schedule("linear", 1e-4, 1e-5, 9)), 20.0,
                           _along_unstable_mode(lambda p: p.center, lambda p: p.H)),
        "quadratic-sgd": (_unstable_quadratic,
                          SGD(Schedule("linear", 0.135, 0.134, 12), None, momentum=0.6,
                              weight_decay=0.05, grad_noise=0.3,
                              temperature=Schedule("linear", 1e-4, 1e-5, 9)), 20.0,
                          _along_unstable_mode(lambda p: p.center, lambda p: p.H)),
        "quadratic-adamw": (_unstable_quadratic,
                            AdamW(Schedule("linear", 0.2, 0.1, 12), None, beta2=0.95,
                                  weight_decay=0.05), 1e8, None),
        # MALA: one GEMM at the proposal per step, the Metropolis test on the device;
        # replica 5, started 5 along the stiff mode, has U ~ 312 > the bound: its first new
        # state (accepted or not) freezes it; c != 0 and LinearRegression's constant
        # mean(y^2) / 2 enter U
        "quadratic-mala": (_unstable_quadratic,
                           MALA(Schedule("linear", 0.08, 0.05, 12), 0.5), 300.0,
                           _along_unstable_mode(lambda p: p.center, lambda p: p.H)),
        "linreg-mala": (lambda: LinearRegression(n=12, d=3, seed=3),
                        MALA(0.5 / np.linalg.eigvalsh(_LINREG.hessian_matrix)[-1], 0.3), 1e8,
                        None),
        "linreg-sgd": (lambda: LinearRegression(n=12, d=3, seed=3),
                       SGD(3.36 / (np.linalg.eigvalsh(_LINREG.hessian_matrix)[-1] + 0.02), None,
                           momentum=0.6, weight_decay=0.02), 20.0,
                       _along_unstable_mode(lambda p: p.minimizer(),
                                            lambda p: p.hessian_matrix)),
    }

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("case", list(DENSE_FUSED))
    def test_fused_dense_kernels_equal_reference(case, dtype, monkeypatch):
        """SphericalPSpin, Quadratic and LinearRegression x OverdampedLangevin (and
        SphericalPSpin x Leimkuhler-Matthews, SGD, AdamW, and Heun with two of each; the
        quadratic forms' too beyond the row kernels' size) run by one GEMM + one fused kernel
        per step (several calls, schedules, replicas that diverge, an uneven first_replica
        split): the reference's states to rounding (float64 1e-12 relative, float32 to its
        rounding), the same divergence flags, and the split equal bit for bit."""
        check_fused_dense(case, dtype, monkeypatch)

    SLICED = ["pspin", "pspin-lm", "pspin-p3", "quadratic", "quadratic-lm", "linreg"]

    # float32 on half the cases (each case runs the kernel twice: ~4 s under the simulator)
    @pytest.mark.parametrize("case,dtype", [(c, t) for c in SLICED for t in ("float64", "float32")
                                            if t == "float64" or c in SLICED[::2]])
    def test_fused_dense_kernels_with_several_threads_per_replica(case, dtype, monkeypatch):
        """The same checks with `cuda_kernels.GEMM_LANES` = 3 (`gemm_step`'s sliced kernel,
        streamed (`GEMM_STREAM`): the N = 3, 4, 5 coordinates in slices of 1 or 2 (the last
        one shorter), so slices share Philox blocks and straddle them; the sphere's sums
        completed across the slices): the reference to rounding, the split bit for bit, and
        the quadratic forms (elementwise: the same operations) equal bit for bit to one
        thread per replica."""
        check_sliced(case, dtype, monkeypatch, stream=True)

    @pytest.mark.parametrize("case", ["pspin-lm", "quadratic"])
    def test_sliced_kernel_with_per_thread_arrays(case, monkeypatch):
        """The same with `GEMM_STREAM` off (the sliced kernel's other form, the row rule
        whole on per-thread arrays), float64."""
        check_sliced(case, "float64", monkeypatch, stream=False)

    def check_sliced(case, dtype, monkeypatch, stream):
        from langevin_sim.backends import cuda_backend as cb
        from langevin_sim.backends import cuda_kernels as ck

        blocks, streamed = [], []
        real, real_step = cb.gemm_block, ck.gemm_step
        monkeypatch.setattr(cb, "gemm_block", lambda dyn, N: blocks.append(real(dyn, N))
                            or blocks[-1])
        monkeypatch.setattr(ck, "gemm_step", lambda *a: streamed.append(a[-1] is not None)
                            or real_step(*a))           # stages given: the streamed kernel
        monkeypatch.setattr(ck, "GEMM_STREAM", stream)
        one = check_fused_dense(case, dtype, monkeypatch)
        assert blocks and all(b == (0, 1) for b in blocks)
        assert streamed and not any(streamed)
        blocks.clear()
        streamed.clear()
        monkeypatch.setattr(ck, "GEMM_LANES", 3)
        sliced = check_fused_dense(case, dtype, monkeypatch)
        assert blocks and all(b[1] in (2, 3) and b[0] > 1 for b in blocks), blocks
        assert streamed and set(streamed) == {stream}
        assert (sliced.diverged_step >= 0).any() or DENSE_FUSED[case][2] >= 1e8
        if not case.startswith("pspin"):
            for k in one.state:
                np.testing.assert_array_equal(sliced.state[k], one.state[k], err_msg=k)

    def check_fused_dense(case, dtype, monkeypatch):
        """test_fused_dense_kernels_equal_reference's checks; returns the whole cuda run."""
        from langevin_sim.kernels import rows

        make, dyn, bound, start = DENSE_FUSED[case]
        no_generic_steps(monkeypatch)
        monkeypatch.setattr(rows, "MAX_D", 2)       # d = 3, 4, 5: beyond the row kernels

        def no_rows(*args):
            raise AssertionError("a row kernel ran")
        monkeypatch.setattr(rows, "advance", no_rows)
        M = 7
        pot = make()
        z = np.random.default_rng(3).normal(size=(M, pot.d))
        init = pot.default_init(z) if start is None else start(pot, z)
        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=bound)
        ref, whole, parts = fused_and_reference(make, dyn, M, kw, (3, 1, 6, 4))
        assert cuda_backend.fused_kernel(whole).__module__.startswith("langevin_sim.kernels.")
        if bound < 1e8:
            assert 0 < (ref.diverged_step >= 0).sum() < M
        if start is not None:
            assert ref.diverged_step[5] > 0
        np.testing.assert_array_equal(whole.diverged_step, ref.diverged_step)
        np.testing.assert_array_equal(np.concatenate([p.diverged_step for p in parts]),
                                      ref.diverged_step)
        # float32: LinearRegression's H = A^T A / n is rounded once, the reference's two
        # products every step: float32 rounding, grown ~1.5^14 by the unstable mode (heavy
        # ball's too: x H - c H against the reference's (x - c) H, grown through x and v)
        loose = case.startswith("linreg") or case == "quadratic-sgd"
        tol = 1e-12 if dtype == "float64" else (5e-5 if loose else 2e-6)
        for k in ref.state:                   # x (and SGD's v)
            np.testing.assert_allclose(whole.state[k], ref.state[k], rtol=tol, atol=tol,
                                       err_msg=k)
            np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]),
                                          whole.state[k], err_msg=f"partition, {k}")
        return whole

    @pytest.mark.parametrize("case", ["pspin-heun", "pspin-sgd", "baoab", "pspin-lm-sliced",
                                      "quadratic-sliced"])
    def test_dense_steps_replay_cuda_graphs_bit_for_bit(case, monkeypatch):
        """The dense paths queue their steps as replays of CUDA graphs (`DeviceRun.queue_steps`;
        3 steps a graph in the simulator, a shorter chunk for the rest, the first step of a
        run as queued): calls of 3, 1, 6, 4 and 5 steps replay graphs of 2, 1, 3, 3, 3, 1, 3, 2
        steps (BAOAB, whose first and last launch of a call are not in graphs: 1, 3, 2, 3, 3,
        1), three captured graphs in all (the streamed sliced kernel's, whose state and
        gradient buffers trade places every step, one per chunk length and starting phase,
        five, four kept: six captures), and x, the dynamics' state and the divergence flags
        equal bit for bit those of the same run with graphs off
        (LANGEVIN_SIM_CUDA_GRAPH_STEPS=0), as they equal the reference
        (test_fused_dense_kernels_equal_reference)."""
        from langevin_sim.backends import cuda_fakecupy, cuda_runtime
        from langevin_sim.backends import cuda_kernels as ck

        captures = 3
        if case.endswith("-sliced"):
            case, captures = case[:-len("-sliced")], 6
            monkeypatch.setattr(ck, "GEMM_LANES", 3)
            monkeypatch.setattr(ck, "GEMM_STREAM", True)
        if case == "baoab":
            make, mass, bound, start = DENSE_BAOAB["quadratic"]
            dyn = UnderdampedLangevin(Schedule("linear", 0.52, 0.49, 12), 1.3,
                                      Schedule("cosine", 1e-4, 1e-5, 9), mass=mass)
        else:
            make, dyn, bound, start = DENSE_FUSED[case]
        pot = make()
        z = np.random.default_rng(3).normal(size=(7, pot.d))
        init = pot.default_init(z) if start is None else start(pot, z)
        launched = []
        replay = cuda_fakecupy.Graph.launch
        monkeypatch.setattr(cuda_fakecupy.Graph, "launch",
                            lambda g, stream=None: (launched.append(g), replay(g, stream)))
        runs = {}
        for steps in ("", "0"):
            monkeypatch.setenv(cuda_runtime.GRAPH_ENV, steps)
            launched.clear()
            sim = Simulation(make(), dyn, 7, backend="cuda", seed=7, init=init,
                             divergence_bound=bound)
            with np.errstate(all="ignore"):
                for K in (3, 1, 6, 4, 5):
                    sim.advance(K)
            runs[steps] = sim
            if steps:
                assert not launched, "graphs off: nothing may be replayed"
            else:
                assert len(launched) == (6 if case == "baoab" else 8)
                assert len(set(map(id, launched))) == captures
        assert (runs[""].diverged_step >= 0).any()
        for k in runs[""].state:
            np.testing.assert_array_equal(runs[""].state[k], runs["0"].state[k], err_msg=k)
        np.testing.assert_array_equal(runs[""].diverged_step, runs["0"].diverged_step)

    # ------------------------------------------------------------ fused dense BAOAB (GEMM + step)
    # Quadratic and LinearRegression x UnderdampedLangevin: one GEMM and one launch of
    # `quadratic.baoab_kernel` per step (`quadratic.baoab_form_steps`).

    DENSE_BAOAB = {   # potential, mass, divergence bound, init
        # eta sqrt(lam / m) ~ 2.1 on the stiffest mode (lam = 25, m = 1.5): BAOAB grows it
        # ~1.3-fold per step, and replica 5, started 0.5 along it, leaves the bound first
        "quadratic": (_unstable_quadratic, 1.5, 30.0,
                      _along_unstable_mode(lambda p: p.center, lambda p: p.H, far=0.5)),
        # the same frequency on the stiffest mode of A^T A / n (the mass scaled with it)
        "linreg": (lambda: LinearRegression(n=12, d=3, seed=3),
                   1.5 * np.linalg.eigvalsh(_LINREG.hessian_matrix)[-1] / 25.0, 10.0,
                   _along_unstable_mode(lambda p: p.minimizer(), lambda p: p.hessian_matrix,
                                        far=2.0)),
    }

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("case", list(DENSE_BAOAB))
    def test_fused_dense_baoab_equals_reference(case, dtype, monkeypatch):
        """Quadratic and LinearRegression x BAOAB run by one GEMM + one fused launch per step
        (several calls, step size and temperature schedules, friction and mass != 1, a replica
        that leaves the bound inside a call, an uneven first_replica split): the reference's
        x, p and g to rounding (float64 1e-12 relative, float32 to its rounding), the same
        divergence flags, and the split equal bit for bit."""
        make, mass, bound, start = DENSE_BAOAB[case]
        dyn = UnderdampedLangevin(Schedule("linear", 0.52, 0.49, 12), 1.3,
                                  Schedule("cosine", 1e-4, 1e-5, 9), mass=mass)
        no_generic_steps(monkeypatch)
        M = 7
        pot = make()
        init = start(pot, np.random.default_rng(3).normal(size=(M, pot.d)))
        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=bound)
        ref, whole, parts = fused_and_reference(make, dyn, M, kw, (3, 1, 6, 4))
        assert cuda_backend.fused_kernel(whole).__module__.startswith("langevin_sim.kernels.")
        # replica 5 alone freezes, inside the third call (steps 5 .. 10), not at its first step
        assert 5 < ref.diverged_step[5] <= 10 and (ref.diverged_step >= 0).sum() == 1
        np.testing.assert_array_equal(whole.diverged_step, ref.diverged_step)
        np.testing.assert_array_equal(np.concatenate([p.diverged_step for p in parts]),
                                      ref.diverged_step)
        tol = 1e-12 if dtype == "float64" else 2e-6   # relative to each array's largest entry
        for k in ref.state:
            scale = np.abs(ref.state[k]).max()
            np.testing.assert_allclose(whole.state[k], ref.state[k], rtol=tol, atol=tol * scale,
                                       err_msg=k)
            np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]),
                                          whole.state[k], err_msg=f"partition, {k}")

    @pytest.mark.parametrize("dyn", [OverdampedLangevin(0.05, 0.5), Heun(0.05, 0.5)])
    def test_pspin_workspace_estimate_is_its_buffers(dyn):
        """`pspin._cuda_workspace` (the memory estimate's share of the fused p-spin path) is
        the bytes per replica of the buffers that path allocates: YT, XT, GT, X2, G2."""
        from langevin_sim.kernels import pspin

        sim = Simulation(SphericalPSpin(N=5, p=3, seed=1), dyn, 6, backend="cuda", seed=1)
        sim.advance(2)
        run = sim.backend.device_run(sim)
        arrays = [a for ws in run.workspaces.values() for a in ws.arrays.values()
                  if getattr(a, "ndim", 0) == 2 and a.shape[1] == cuda_backend.padded_columns(6)]
        own = sum(a.shape[0] for a in arrays) * 8
        assert len(arrays) == (5 if isinstance(dyn, Heun) else 3)      # X2, G2: Heun's
        assert pspin._cuda_workspace(sim) == own > 15 * 8

    DENSE_OBSERVED = {   # the dense paths with an observer: pair, regions (d = 4 or 3)
        "pspin": (lambda: SphericalPSpin(N=4, p=2, seed=3), OverdampedLangevin(0.05, 1.0),
                  lambda: FirstPassage(HalfSpace([1.0, 0, 0, 0], 0.0, "right"),
                                       Ball([0, -1.6, 0, 0], 1.0, "left"))),
        "pspin-heun": (lambda: SphericalPSpin(N=4, p=2, seed=3), Heun(0.05, 1.0),
                       lambda: FirstPassage(HalfSpace([1.0, 0, 0, 0], 0.0, "right"))),
        "quadratic": (lambda: Quadratic(spectrum=[0.5, 1.5, 3.0], seed=2), OverdampedLangevin(
            0.05, 1.0), lambda: FirstPassage(HalfSpace([1.0, 0, 0], 0.0, "right"),
                                            Ball([-0.8, 0, 0], 0.5, "left"))),
        "quadratic-sgd": (lambda: Quadratic(spectrum=[0.5, 1.5, 3.0], seed=2),
                          SGD(0.05, None, momentum=0.5, weight_decay=0.01, temperature=1.0),
                          lambda: FirstPassage(HalfSpace([0, 1.0, 0], 0.1, "right"))),
        "linreg-lm": (lambda: LinearRegression(n=12, d=3, seed=3), LeimkuhlerMatthews(0.05, 1.0),
                      lambda: FirstPassage(HalfSpace([1.0, 0, 0], 0.0, "right"))),
        # BAOAB: a step straddles two launches; the observer follows each closing one
        "quadratic-baoab": (lambda: Quadratic(spectrum=[0.5, 1.5, 3.0], seed=2),
                            UnderdampedLangevin(0.1, 1.0, 1.0),
                            lambda: FirstPassage(HalfSpace([1.0, 0, 0], 0.0, "right"),
                                                 Ball([-0.8, 0, 0], 0.5, "left"))),
    }

    @pytest.mark.parametrize("case", list(DENSE_OBSERVED) + ["pspin-sliced", "linreg-lm-sliced"])
    def test_dense_paths_update_first_passage_arrays_like_reference(case, monkeypatch):
        """The dense paths (p-spin's and the quadratic forms' GEMM + fused kernel, beyond
        rows.MAX_D, lowered here, for the forms' other dynamics) update first-passage
        observers after every step on the device (`first_passage_columns`, replayed in the
        CUDA graphs): the reference's arrays exactly, over several calls (odd and even: with
        2 threads per replica, the streamed kernel's state alternates between two buffers)."""
        from langevin_sim.kernels import rows

        if case.endswith("-sliced"):
            case = case[:-len("-sliced")]
            monkeypatch.setattr(ck, "GEMM_LANES", 2)
        make, dyn, fp = DENSE_OBSERVED[case]
        no_generic_steps(monkeypatch)
        monkeypatch.setattr(rows, "MAX_D", 2)
        ref, got = backends_agree("cuda", make, dyn, 9, (6, 4, 5), seed=1, first_passage=fp(),
                                  rtol=1e-11, atol=1e-12, what=case)
        assert cuda_backend.fused_kernel(got) is not None
        for k in ref.state:
            if k.startswith("fp_"):
                np.testing.assert_array_equal(got.state[k], ref.state[k], err_msg=k)
        assert ref.state["fp_crossings"].sum() > 5

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_record_energies_on_the_device_and_resume_through_fused_kernels(dtype, tmp_path,
                                                                           monkeypatch):
        """Records of a cuda run take the potential's energy on the device copy of the state
        (float64) and equal the NumPy backend's to rounding; a run file resumes across
        backends through the fused p-spin kernel."""
        from langevin_sim.potentials.pspin import SphericalPSpin as PS

        seen = []
        energy = PS.energy

        def spy(self, x):
            seen.append((type(x).__module__, x.dtype))
            return energy(self, x)
        monkeypatch.setattr(PS, "energy", spy)
        make = lambda: SphericalPSpin(N=5, p=3, seed=2)   # noqa: E731
        dyn = OverdampedLangevin(0.05, 0.5)
        kw = dict(seed=4, dtype=dtype)
        Simulation(make(), dyn, 6, backend="numpy", **kw).run(
            8, record_every=2, out=tmp_path / "ref.h5").close()
        for first, then in (("cuda", "cuda"), ("cuda", "numpy"), ("numpy", "cuda")):
            path = tmp_path / f"{first}-{then}.h5"
            Simulation(make(), dyn, 6, backend=first, **kw).run(4, record_every=2,
                                                                out=path).close()
            seen.clear()
            resume(path, steps=8, backend=then, progress=False).close()
            if then == "cuda":
                assert ("cupy", np.dtype(np.float64)) in seen, seen
            with open_run(path) as a, open_run(tmp_path / "ref.h5") as b:
                assert a.complete and a.steps_done == 8
                tol = 1e-12 if dtype == "float64" else 1e-5
                np.testing.assert_allclose(a.energy[:], b.energy[:], rtol=tol, atol=tol)
                np.testing.assert_allclose(a.checkpoint()[1]["x"], b.checkpoint()[1]["x"],
                                           rtol=tol, atol=tol)
        sim = Simulation(make(), dyn, 6, backend="cuda", **kw)
        sim.advance(3)
        e = sim.backend.record_energy(sim)
        assert e.dtype == np.float64 and e.shape == (6,)
        np.testing.assert_allclose(e, make().energy(sim.state["x"].astype(np.float64)),
                                   rtol=1e-13)

    # ------------------------------------------------------------ fused TeacherStudentMLP x SGD

    MLP_FUSED = {   # activation, dynamics, init scale of replicas 1 and 3, divergence bound
        "tanh-epoch": ("tanh", SGD(Schedule("linear", 1.5, 3.0, 6), 3, momentum=0.5,
                                   weight_decay=1e-2,
                                   temperature=Schedule("linear", 0.05, 0.01, 9)), 3.0, 20.0),
        "relu-iid-T0": ("relu", SGD(0.3, 4, sampling="iid", momentum=0.9), 3.0, 50.0),
        "quadratic-full": ("quadratic", SGD(0.1, None, momentum=0.3, weight_decay=1e-3,
                                            temperature=0.02), 3.0, 50.0),
        "relu-subset-noises": ("relu", SGD(0.3, 4, sampling="subset", momentum=0.5,
                                           label_noise=0.2, grad_noise=0.1), 3.0, 50.0),
    }

    MLP_DEFAULT = {"relu-iid-T0": "float64",   # the simulator runs a warp per replica: each
                   "quadratic-full": "float32"}       # default case in one dtype (epoch sampling:
    # test_fused_teacher_student_adamw_tiny_run's two paths; the noises: ..._sgd_noises_tiny_run)

    @pytest.mark.parametrize("case, dtype", [
        pytest.param(c, dt, marks=() if MLP_DEFAULT.get(c) == dt else pytest.mark.slow)
        for c in MLP_FUSED for dt in ("float64", "float32")])
    def test_fused_teacher_student_sgd_equals_reference(case, dtype, monkeypatch, narrow_warps):
        """TeacherStudentMLP x SGD run by the fused kernel (one warp per replica; epoch
        permutations, i.i.d. draws, full batch; each activation; T > 0 and T = 0, momentum,
        weight decay, schedules; replicas started far out that diverge): the reference's
        states to rounding, the same divergence flags, and a first_replica split advanced in
        one call equal to the whole run advanced in several, bit for bit."""
        from langevin_sim.kernels import toynets

        act, dyn, scale, bound = MLP_FUSED[case]
        no_generic_steps(monkeypatch)
        M = 4

        def make():
            return TeacherStudentMLP(n=10, d_in=2, hidden=2, teacher_hidden=1, n_test=4, seed=1,
                                     activation=act)
        pot = make()
        init = pot.default_init(np.random.default_rng(3).normal(size=(M, pot.d)))
        init[[1, 3]] *= scale
        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=bound)
        ref = Simulation(make(), dyn, M, backend="numpy", **kw)
        whole = Simulation(make(), dyn, M, backend="cuda", **kw)
        assert cuda_backend.fused_kernel(whole).__module__ == toynets.__name__
        parts = [Simulation(make(), dyn, n, backend="cuda", first_replica=r0,
                            **dict(kw, init=init[r0:r0 + n])) for r0, n in ((0, 1), (1, 3))]
        for K in (2, 1, 3):
            ref.advance(K)
            whole.advance(K)
        for p in parts:
            p.advance(6)
        assert 0 < (ref.diverged_step >= 0).sum() < M and (ref.diverged_step != 1).any()
        np.testing.assert_array_equal(whole.diverged_step, ref.diverged_step)
        np.testing.assert_array_equal(np.concatenate([p.diverged_step for p in parts]),
                                      ref.diverged_step)
        tol = 1e-12 if dtype == "float64" else 2e-5
        for k in ref.state:
            scale_k = np.abs(ref.state[k]).max()
            np.testing.assert_allclose(whole.state[k], ref.state[k], rtol=tol,
                                       atol=tol * scale_k, err_msg=k)
            np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]),
                                          whole.state[k], err_msg=f"partition, {k}")

    def test_fused_teacher_student_sgd_declines_what_it_does_not_run(monkeypatch):
        """Subset sampling, label and gradient noise, and W4's sizes in both dtypes take the
        fused kernel, a batch beyond the shared memory in tiles; a block whose fixed part (the
        batch's indices, W2, b2) leaves no room for one sample takes the generic path
        (`accepts`)."""
        from langevin_sim.kernels import toynets

        def fused(pot, dyn, dtype="float64"):
            sim = Simulation(pot, dyn, 2, backend="cuda", dtype=dtype)
            k = cuda_backend.fused_kernel(sim)
            return k is not None and k.__module__ == toynets.__name__

        small = TeacherStudentMLP(n=10, d_in=2, hidden=2, teacher_hidden=1, n_test=4, seed=1)
        assert fused(small, SGD(0.02, 3)) and fused(small, SGD(0.02, None), "float32")
        for dyn in (SGD(0.02, 3, sampling="subset"), SGD(0.02, 3, label_noise=0.1),
                    SGD(0.02, 3, grad_noise=0.1)):
            assert fused(small, dyn), dyn
        w4 = TeacherStudentMLP(n=1024, d_in=16, hidden=32, teacher_hidden=8, noise=0.01,
                               n_test=4, seed=1)
        for dtype in ("float32", "float64"):
            assert fused(w4, SGD(0.02, 32, momentum=0.9), dtype)
        big = Simulation(w4, SGD(0.02, 256, momentum=0.9), 2, backend="cuda")
        assert fused(w4, big.dynamics) and toynets.layout(big) == (1, 116, False)
        # 8 x 116 x (16 + 33 + 1) (a tile's A, S, dout) + 8 x 33 (W2, b2) + 8 x 256 (indices)
        # bytes of 48 KiB less the slack; the epoch's 1024 sort keys would shrink the tile
        monkeypatch.setattr(toynets, "SHARED_BYTES",
                            toynets.SHARED_SLACK + 8 * (33 + 256) + 8 * 50 - 1)
        assert toynets.layout(big)[1] == 0 and not fused(w4, big.dynamics)

    # ------------------------------------------------------------ fused TeacherStudentMLP x AdamW
    # The same kernel with `adamw_update` compiled in (`toynets.cuda_kernel(..., AdamW)`).

    def bound_passed_once(make, dyn, dtype, init, steps) -> float:
        """A divergence bound that exactly one replica's bounded state (x, g, U) passes first
        at a step in `steps` (its flag t + 1 there), found on an unbounded reference run."""
        sim = Simulation(make(), dyn, init.shape[0], backend="numpy", seed=7, dtype=dtype,
                         init=init)
        peak = []                                  # (steps, M): running max of |state|
        for _ in range(max(steps)):
            sim.advance(1)
            now = np.max([np.abs(v.reshape(v.shape[0], -1)).max(axis=1)
                          for v in sim.dynamics.bounded(sim.state)], axis=0)
            peak.append(now if not peak else np.maximum(peak[-1], now))
        peak = np.array(peak)
        for b in np.unique(peak)[::-1]:
            first = np.argmax(peak > b * 0.999, axis=0) + 1   # the flag: the step after
            hit = (peak > b * 0.999).any(axis=0)
            if hit.sum() == 1 and first[hit][0] in steps:
                return float(b * 0.999)
        raise AssertionError(f"no bound passed once in {steps}: {peak}")

    def toynet_runs(make, dyn, bound, dtype, init, calls, splits=()):
        """(reference, fused whole, fused parts) of the toy net `make()` x `dyn` from `init`
        (M, d): the whole run advanced in `calls` (steps per call), each first_replica part
        ((first, count) in `splits`) in one call of as many steps; the generic path is made to
        fail by the caller (`no_generic_steps`)."""
        from langevin_sim.kernels import toynets

        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=bound)
        M = init.shape[0]
        ref = Simulation(make(), dyn, M, backend="numpy", **kw)
        whole = Simulation(make(), dyn, M, backend="cuda", **kw)
        assert cuda_backend.fused_kernel(whole).__module__ == toynets.__name__
        for K in calls:
            ref.advance(K)
            whole.advance(K)
        parts = [Simulation(make(), dyn, c, backend="cuda", first_replica=r0,
                            **dict(kw, init=init[r0:r0 + c])) for r0, c in splits]
        for p in parts:
            p.advance(sum(calls))
        return ref, whole, parts

    def assert_states_close(got, ref, dtype):
        """got's state arrays and divergence flags against the reference's: float64 to 1e-12,
        float32 to 2e-5, relative to each array's largest entry."""
        np.testing.assert_array_equal(got.diverged_step, ref.diverged_step)
        tol = 1e-12 if dtype == "float64" else 2e-5
        for k in ref.state:
            np.testing.assert_allclose(got.state[k], ref.state[k], rtol=tol,
                                       atol=tol * np.abs(ref.state[k]).max(), err_msg=k)

    @pytest.mark.parametrize("in_kernel", [True, False], ids=["kernel-perms", "host-perms"])
    def test_fused_teacher_student_adamw_tiny_run_equals_reference(in_kernel, monkeypatch):
        """The default suite's AdamW case (a few seconds): 3 replicas, epoch batches of 2 of 4
        samples (3 steps cross an epoch), an lr schedule, two calls, replicas that diverge at
        step 3: the reference's x, m, s to 1e-12 and the same flags, by the fused kernel, with
        the epochs' permutations sorted in the kernel (the device's row sort never runs) or,
        where the sort keys would not fit in shared memory, by the device between launches."""
        from langevin_sim.kernels import toynets

        no_generic_steps(monkeypatch)
        if in_kernel:
            no_host_permutations(monkeypatch)
        else:   # room for the kernel's data but not for the 4 sort keys
            need = toynets.shared_bytes(2, 2, 2, 8)
            monkeypatch.setattr(toynets, "SHARED_BYTES",
                                toynets.SHARED_SLACK + need + toynets.KEY_BYTES * 4 - 1)

        def make():
            return TeacherStudentMLP(n=4, d_in=2, hidden=2, teacher_hidden=1, n_test=4, seed=1,
                                     activation="tanh")
        init = make().default_init(np.random.default_rng(3).normal(size=(3, make().d)))
        dyn = AdamW(Schedule("linear", 1.0, 2.0, 3), 2, weight_decay=1e-2)
        ref, whole, _ = toynet_runs(make, dyn, 3.3, "float64", init, (2, 1))
        assert toynets.permutes_in_kernel(whole) == in_kernel
        assert list(ref.diverged_step) == [-1, 3, 3]
        assert_states_close(whole, ref, "float64")

    @pytest.mark.parametrize("rule, dtype", [("overdamped", "float32"), ("lm", "float64"),
                                             ("baoab", "float64"), ("heun", "float32")])
    def test_fused_teacher_student_langevin_tiny_run_equals_reference(rule, dtype, monkeypatch,
                                                                      narrow_warps):
        """Overdamped Langevin, Leimkuhler-Matthews, BAOAB and Heun on the full batch by the
        same kernel (`sgd_update`'s place taken by `overdamped_lane` / `lm_update`, no
        optimizer state; LM's normals of steps t and t + 1; BAOAB's B A O A before the
        gradient, its closing B after, state p and g, a frozen replica's x restored; Heun's
        second forward and backward pass at the predictor), with step and
        temperature schedules (T = 0 at the last step), 3 replicas, two calls, one replica
        started far out that diverges: the reference's states to rounding, the same flags
        (BAOAB: and a first_replica split bit for bit)."""
        no_generic_steps(monkeypatch)

        def make():
            return TeacherStudentMLP(n=5, d_in=2, hidden=2, teacher_hidden=1, n_test=4, seed=1,
                                     activation="quadratic")
        init = make().default_init(np.random.default_rng(3).normal(size=(3, make().d)))
        init[2] *= 3
        schedules = (Schedule("linear", 0.02, 0.01, 3), Schedule("linear", 0.5, 0.0, 3))
        dyn, bound = {"overdamped": (OverdampedLangevin(*schedules), 60.0),
                      "lm": (LeimkuhlerMatthews(*schedules), 60.0),
                      "heun": (Heun(*schedules), 60.0),
                      "baoab": (UnderdampedLangevin(Schedule("linear", 0.05, 0.02, 3), 2.0,
                                                    schedules[1], mass=0.5), 300.0)}[rule]
        splits = ((0, 1), (1, 2)) if rule == "baoab" else ()   # (the SGD tests split the rest)
        ref, whole, parts = toynet_runs(make, dyn, bound, dtype, init, (2, 2), splits)
        assert list(ref.diverged_step >= 0) == [False, False, True], ref.diverged_step
        assert_states_close(whole, ref, dtype)
        for k in ref.state if parts else ():
            np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]),
                                          whole.state[k], err_msg=f"partition, {k}")

    @pytest.mark.parametrize("net, dtype", [("teacher-student", "float64"),
                                            ("modular", "float32")])
    def test_fused_toynet_mala_tiny_run_equals_reference(net, dtype, monkeypatch, narrow_warps):
        """MALA on the full batch by the toy nets' kernel: the proposal y = x - eta g +
        sigma xi (NOISE normals at t d + p) before the passes, the loss at y summed in float64
        over the samples (squared error / cross-entropy), the proposal's residuals summed over
        the lanes, the Metropolis test with the ACCEPT word of step t, then y, g(y), U(y) or
        x, g, U kept, and the divergence test of that state (not of the count).  3 replicas
        (one started farther out), step and temperature schedules, two calls: proposals
        accepted and rejected, a replica frozen in the second call (a bound that one replica's
        x, g or U passes first at step 5..7, from an unbounded reference run), x, g, U and
        the counts as the reference's to rounding, the same flags (a first_replica split: the
        slow tanh-mala case)."""
        no_generic_steps(monkeypatch)
        if net == "modular":
            make, step = (lambda: ModularArithmeticMLP(p=3, hidden=2, seed=1)), 1.0
        else:
            make, step = (lambda: TeacherStudentMLP(
                n=5, d_in=2, hidden=2, teacher_hidden=1, n_test=4, seed=1, activation="tanh")), 0.3
        init = make().default_init(np.random.default_rng(3).normal(size=(3, make().d)))
        init[2] *= 3
        dyn = MALA(Schedule("linear", step, step / 3, 6), Schedule("linear", 0.5, 0.1, 6))
        bound = bound_passed_once(make, dyn, dtype, init, range(5, 8))
        ref, whole, _ = toynet_runs(make, dyn, bound, dtype, init, (4, 3))
        frozen = ref.diverged_step[ref.diverged_step >= 0]
        assert len(frozen) == 1 and 4 < frozen[0] <= 7, ref.diverged_step   # in the 2nd call
        assert 0 < ref.state["accepted"][ref.diverged_step < 0].min() < 7, ref.state["accepted"]
        assert_states_close(whole, ref, dtype)

    def test_fused_teacher_student_sgd_noises_tiny_run_equals_reference(monkeypatch,
                                                                         narrow_warps):
        """SGD's noise models in the fused kernel (a few seconds): "subset" minibatches (4 of
        6 samples: Floyd's draws collide), label noise, gradient noise and temperature, with
        momentum, 2 replicas over two calls: the reference's x, v to rounding (float64), and
        a first_replica split bit for bit; the label noise moves the run."""
        no_generic_steps(monkeypatch)

        def make():
            return TeacherStudentMLP(n=6, d_in=2, hidden=2, teacher_hidden=1, n_test=4, seed=1,
                                     activation="tanh")
        init = make().default_init(np.random.default_rng(3).normal(size=(2, make().d)))
        dyn = SGD(0.05, 4, sampling="subset", momentum=0.3, label_noise=0.3, grad_noise=0.1,
                  temperature=0.01)
        ref, whole, parts = toynet_runs(make, dyn, 1e6, "float64", init, (2, 1), ((0, 1), (1, 1)))
        assert_states_close(whole, ref, "float64")
        np.testing.assert_array_equal(np.concatenate([p.state["x"] for p in parts]),
                                      whole.state["x"])
        quiet = Simulation(make(), SGD(0.05, 4, sampling="subset", momentum=0.3, grad_noise=0.1,
                                       temperature=0.01), 2, backend="numpy", seed=7, init=init)
        quiet.advance(3)
        assert np.abs(quiet.state["x"] - ref.state["x"]).max() > 1e-3

    MLP_ADAMW = {   # activation, AdamW, divergence bound (replicas 1 and 3 start 3x out)
        "tanh-epoch": ("tanh", AdamW(Schedule("linear", 0.5, 1.0, 6), 3, weight_decay=1e-2), 7.1),
        "relu-iid": ("relu", AdamW(2.0, 4, sampling="iid", weight_decay=0.0), 8.0),
        "quadratic-full": ("quadratic", AdamW(0.3, None, beta1=0.8, beta2=0.99, eps=1e-6,
                                              weight_decay=1e-3), 60.0),
    }

    @pytest.mark.slow
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("case", list(MLP_ADAMW))
    def test_fused_teacher_student_adamw_equals_reference(case, dtype, monkeypatch,
                                                          narrow_warps):
        """TeacherStudentMLP x AdamW by the fused kernel (epoch permutations, i.i.d. draws
        (sampling="iid"), full batch; each activation; lr schedule, betas, eps, weight decay;
        replicas started far out, some diverging after step 1): the reference's x, m, s to
        rounding over calls of 2, 1, 3 steps, the same flags, and an uneven first_replica split
        advanced in one call equal to the whole run bit for bit."""
        act, dyn, bound = MLP_ADAMW[case]
        no_generic_steps(monkeypatch)
        check_fused_toynet(lambda: TeacherStudentMLP(n=10, d_in=2, hidden=2, teacher_hidden=1,
                                                     n_test=4, seed=1, activation=act),
                           dyn, bound, dtype)

    def check_fused_toynet(make, dyn, bound, dtype):
        """4 replicas, 1 and 3 started 3x out (some diverging after step 1): the fused kernel's
        x and optimizer states equal the reference's to rounding over calls of 2, 1, 3 steps,
        the same flags, and an uneven first_replica split advanced in one call equals the
        whole run bit for bit."""
        init = make().default_init(np.random.default_rng(3).normal(size=(4, make().d)))
        init[[1, 3]] *= 3.0
        ref, whole, parts = toynet_runs(make, dyn, bound, dtype, init, (2, 1, 3),
                                        ((0, 1), (1, 3)))
        assert 0 < (ref.diverged_step >= 0).sum() < 4 and (ref.diverged_step > 1).any()
        assert_states_close(whole, ref, dtype)
        np.testing.assert_array_equal(np.concatenate([p.diverged_step for p in parts]),
                                      whole.diverged_step)
        for k in whole.state:
            np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]),
                                          whole.state[k], err_msg=f"partition, {k}")

    def test_fused_teacher_student_adamw_declines_what_it_does_not_run():
        """AdamW takes the fused kernel with either sampling, full batches and both dtypes
        (W4's sizes too; a batch beyond the shared memory in tiles)."""
        from langevin_sim.kernels import toynets

        def fused(pot, dyn, dtype="float64"):
            sim = Simulation(pot, dyn, 2, backend="cuda", dtype=dtype)
            k = cuda_backend.fused_kernel(sim)
            return k is not None and k.__module__ == toynets.__name__

        small = TeacherStudentMLP(n=10, d_in=2, hidden=2, teacher_hidden=1, n_test=4, seed=1)
        assert fused(small, AdamW(0.01, 3)) and fused(small, AdamW(0.01, 3, sampling="iid"))
        assert fused(small, AdamW(0.01, None), "float32")
        w4 = TeacherStudentMLP(n=1024, d_in=16, hidden=32, teacher_hidden=8, noise=0.01,
                               n_test=4, seed=1)
        for dtype in ("float32", "float64"):
            assert fused(w4, AdamW(1e-3, 32), dtype)
        assert fused(w4, AdamW(1e-3, 256))      # 8 x 256 x 49 > 48 KiB: in tiles

    # ------------------------------------------------------------ fused ModularArithmeticMLP
    # The same kernel with p logits and the softmax head (`toynets.cuda_kernel(..., classes=p)`),
    # one-hot inputs only (a learned embedding takes the generic path).

    MA_FUSED = {   # activation, dynamics, divergence bound (replicas 1 and 3 start 3x out)
        "relu-sgd-epoch": ("relu", SGD(Schedule("linear", 0.5, 1.0, 6), 2, momentum=0.5,
                                       weight_decay=1e-2, temperature=0.05), 3.0),
        "tanh-adamw-iid": ("tanh", AdamW(Schedule("linear", 0.5, 1.0, 6), 3, sampling="iid",
                                         weight_decay=1e-2), 4.0),
        "quadratic-sgd-full": ("quadratic", SGD(1.0, None, momentum=0.3), 8.0),
        # the full-batch Langevin rules with the softmax head
        "tanh-baoab": ("tanh", UnderdampedLangevin(Schedule("linear", 0.5, 1.0, 6), 1.0, 0.1),
                       3.0),
        "tanh-heun": ("tanh", Heun(Schedule("linear", 0.5, 1.0, 6), 0.1), 4.0),
        "tanh-mala": ("tanh", MALA(Schedule("linear", 1.0, 0.5, 6), 0.3), 5.0),
    }

    EMB_FUSED = {   # activation, dynamics, divergence bound (replicas 1 and 3 start 3x out)
        "relu-sgd-epoch": ("relu", SGD(Schedule("linear", 0.5, 1.0, 6), 2, momentum=0.5,
                                       weight_decay=1e-2, temperature=0.05), 6.0),
        # (tanh here: float32 rounding grows to ~1% by step 6 in the reference itself)
        "relu-adamw-iid": ("relu", AdamW(Schedule("linear", 0.5, 1.0, 6), 3, sampling="iid",
                                         weight_decay=1e-2), 4.0),
        "tanh-lm": ("tanh", LeimkuhlerMatthews(Schedule("linear", 0.5, 1.0, 6), 0.1), 4.0),
        "tanh-baoab": ("tanh", UnderdampedLangevin(Schedule("linear", 0.5, 1.0, 6), 1.0, 0.1),
                       4.0),
        "tanh-heun": ("tanh", Heun(Schedule("linear", 0.5, 1.0, 6), 0.1), 4.0),
        "relu-mala": ("relu", MALA(Schedule("linear", 1.0, 0.5, 6), 0.3), 3.0),
    }

    def _embedding_net(act):
        return lambda: ModularArithmeticMLP(p=3, hidden=2, embed=2, seed=1, activation=act)

    @pytest.mark.slow
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("case", list(EMB_FUSED))
    def test_fused_embedding_equals_reference(case, dtype, monkeypatch, narrow_warps):
        """ModularArithmeticMLP with a learned embedding E (p, e) by the fused kernel, every
        rule, both dtypes: the lanes own E's entries besides their units, the batch's rows
        [E_a; E_b] are gathered from E mirrored in shared memory (again at Heun's predictor),
        and E's gradient is dA = dZ W1 (W1 mirrored) summed over the samples of each operand;
        as `check_fused_toynet` (the default suite's case: "embed-heun" of TILED)."""
        act, dyn, bound = EMB_FUSED[case]
        no_generic_steps(monkeypatch)
        check_fused_toynet(_embedding_net(act), dyn, bound, dtype)

    def test_toynets_beyond_the_kernel_take_the_generic_path(monkeypatch):
        """A net with more parameters per lane than `MAX_OWNED` takes the generic path (the
        potential's own gradient in array code on the device), equal to the reference."""
        from langevin_sim.kernels import toynets

        monkeypatch.setattr(toynets, "MAX_OWNED", 4)
        make = _embedding_net("tanh")
        dyn = AdamW(0.3, None, weight_decay=1e-2)
        assert toynets.owned(make()) > 4
        assert cuda_backend.fused_kernel(Simulation(make(), dyn, 2, backend="cuda")) is None
        backends_agree("cuda", make, dyn, 3, (2, 1), what="generic net", seed=5)

    @pytest.mark.parametrize("pot, dyn, dtype", [
        ("DoubleWell", "OverdampedLangevin", "float32"), ("Quadratic", "MALA", "float64"),
        ("LinearRegression", "SGD-labelnoise", "float32"), ("TeacherStudentMLP", "SGD", "float64"),
        ("ModularArithmeticMLP", "AdamW", "float32"), ("TeacherStudentMLP", "MALA", "float32")])
    def test_kernel_signatures_type_the_launches(pot, dyn, dtype, monkeypatch):
        """`rows.cuda_signature` and `toynets.cuda_signature` (which
        benchmarks/kernel_resources.py compiles the kernels for, ahead of any launch) are the
        types of the arguments the backend launches `kernel_of(sim)` with."""
        import numba

        from langevin_sim.backends import cuda_runtime as rt
        from langevin_sim.kernels import rows, toynets

        p = POTENTIAL_CASES[pot]()
        sim = Simulation(p, dynamics_cases(p)[dyn], 2, backend="cuda", dtype=dtype)
        mod = toynets if pot.endswith("MLP") else rows
        kernel, seen = mod.kernel_of(sim), []
        launch = rt.launch

        def record(k, n, *args):          # the row kernels' launches
            if k is kernel:
                seen.append(tuple(numba.typeof(a) for a in rt.kernel_arrays(*args)))
            launch(k, n, *args)

        class Recorder:                   # the toy nets' kernel[blocks, threads](*args)
            def __getitem__(self, config):
                def go(*args):
                    seen.append(tuple(numba.typeof(a) for a in args))
                    kernel[config](*args)
                return go

        monkeypatch.setattr(rt, "launch", record)
        monkeypatch.setattr(toynets, "kernel_of", lambda s: Recorder())
        sim.advance(2)
        assert seen and all(s == mod.cuda_signature(sim) for s in seen), (seen[0],
                                                                          mod.cuda_signature(sim))

    def test_fused_modular_arithmetic_tiny_run_equals_reference(monkeypatch):
        """The default suite's ModularArithmeticMLP case (a few seconds): p = 3 (4 training
        pairs), hidden 2, 2 replicas, AdamW with i.i.d. batches of 3 over two calls: the
        reference's x, m, s to 1e-12, by the fused kernel."""
        no_generic_steps(monkeypatch)

        def make():
            return ModularArithmeticMLP(p=3, hidden=2, seed=1, activation="tanh")
        init = make().default_init(np.random.default_rng(3).normal(size=(2, make().d)))
        ref, whole, _ = toynet_runs(make, MA_FUSED["tanh-adamw-iid"][1], 1e6, "float64", init,
                                    (2, 1))
        assert_states_close(whole, ref, "float64")

    @pytest.mark.slow
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("case", list(MA_FUSED))
    def test_fused_modular_arithmetic_equals_reference(case, dtype, monkeypatch,
                                                       narrow_warps):
        """ModularArithmeticMLP (p = 3, one-hot) x SGD / AdamW by the fused kernel (epoch,
        i.i.d., full batch; each activation; temperature, momentum, schedules), and the
        full-batch BAOAB, Heun and MALA: as `check_fused_toynet`."""
        act, dyn, bound = MA_FUSED[case]
        no_generic_steps(monkeypatch)
        check_fused_toynet(lambda: ModularArithmeticMLP(p=3, hidden=2, seed=1, activation=act),
                           dyn, bound, dtype)

    def test_fused_modular_arithmetic_declines_what_it_does_not_run():
        """One-hot nets and a learned embedding take the fused kernel (SGD, AdamW, both
        dtypes), the grokking scenario's default net (p = 23, hidden 64, full batch) with two
        warps per replica and the batch in tiles; more than `toynets.MAX_OWNED` parameters per
        lane (p = 97: 2p + 1 + p per hidden unit) take the generic path (`accepts`); SGD's
        subset sampling and gradient noise run fused."""
        from langevin_sim.kernels import toynets

        def fused(pot, dyn, dtype="float64"):
            sim = Simulation(pot, dyn, 2, backend="cuda", dtype=dtype)
            k = cuda_backend.fused_kernel(sim)
            return k is not None and k.__module__ == toynets.__name__

        onehot = ModularArithmeticMLP(p=7, hidden=16, seed=1)
        assert fused(onehot, SGD(0.1, 8)) and fused(onehot, AdamW(1e-3, 8), "float32")
        assert fused(ModularArithmeticMLP(p=3, hidden=2, embed=1, seed=1), SGD(0.1, 2))
        big_embed = ModularArithmeticMLP(p=23, hidden=32, embed=16, seed=1)   # 56 + 12
        assert toynets.owned(big_embed) == 68 and fused(big_embed, AdamW(1e-3, 32))
        grok = ModularArithmeticMLP(p=23, hidden=64, train_fraction=0.6, seed=1)
        for dtype in ("float32", "float64"):
            sim = Simulation(grok, AdamW(1e-3, None, weight_decay=1.0), 2, backend="cuda",
                             dtype=dtype)
            warps, tile, _ = toynets.layout(sim)
            assert fused(grok, sim.dynamics, dtype) and toynets.owned(grok) == 70
            assert toynets.gathers(grok) and not toynets.gathers(onehot)
            # 4 (or 8) x (65 + 23) bytes a sample (no inputs: gathered), beside W2, b2, indices
            assert warps == 2 and tile == {"float32": 114, "float64": 48}[dtype] < 317
        assert toynets.owned(ModularArithmeticMLP(p=97, hidden=32, seed=1)) == 292
        assert not fused(ModularArithmeticMLP(p=97, hidden=32, seed=1), AdamW(1e-3, 32))
        assert fused(onehot, SGD(0.1, 8, sampling="subset", grad_noise=0.1))

    # ------------------------------------------------------------ several warps, batch tiles
    # Nets with more than 32 hidden units run blocks of `warps_of(hidden)` warps (lane l owns
    # units l, l + 32 W, ...); batches whose block would not fit in shared memory run in tiles
    # of `layout(sim)[1]` samples, every sum over samples carried across the tiles in order.
    # With `narrow_warps` (a "warp" of 4 lanes), hidden 10 with at most 2 warps is a block of
    # 8 lanes, some owning 2 units.

    TILED = {   # net, dynamics, divergence bound, tile, dtype (replicas 1 and 3 start 3x out)
        "onehot-2warps-mala": (lambda: ModularArithmeticMLP(p=3, hidden=10, seed=1,
                                                            activation="tanh"),
                               MALA(Schedule("linear", 0.8, 0.4, 6), 0.3), 4.0, 3, "float64"),
        # the default suite's learned-embedding case (all rules: test_fused_embedding_...)
        "embed-heun": (_embedding_net("tanh"), Heun(Schedule("linear", 0.5, 1.0, 6), 0.1),
                       4.0, 3, "float32"),
        # n = 13: the epoch sort's 16 keys give each of the 4 lanes two pairs per stage
        "teacher-sgd-label-noise": (lambda: TeacherStudentMLP(
            n=13, d_in=2, hidden=3, teacher_hidden=1, n_test=4, seed=1, activation="tanh"),
            SGD(2.0, 5, momentum=0.5, label_noise=0.3, temperature=0.01), 5.0, 2, "float64"),
    }

    @pytest.mark.parametrize("case", ["relu-sgd-epoch", "tanh-heun"])
    def test_fused_one_hot_gather_equals_the_dense_product(case, monkeypatch, narrow_warps):
        """One-hot inputs gathered (`toynets.gathers`, here forced with `REG_OWNED` = 0: z =
        (W1[j, a] + W1[j, p + b]) + b1, dz added into the two entries of dW1) give the bits of
        the dense one-hot product (its sums without their zero terms): relu (exact zeros in dz)
        with SGD's epochs and temperature, and Heun (two passes); and the reference's states
        to rounding, the same flags."""
        from langevin_sim.kernels import toynets

        act, dyn, bound = MA_FUSED[case]
        no_generic_steps(monkeypatch)

        def make():
            return ModularArithmeticMLP(p=3, hidden=2, seed=1, activation=act)
        init = make().default_init(np.random.default_rng(3).normal(size=(4, make().d)))
        init[[1, 3]] *= 3.0
        kw = dict(seed=7, dtype="float64", init=init, divergence_bound=bound)
        runs = {}
        for name in ("numpy", "dense", "gather"):
            if name == "gather":
                monkeypatch.setattr(toynets, "REG_OWNED", 0)
            sim = Simulation(make(), dyn, 4, backend="numpy" if name == "numpy" else "cuda",
                             **kw)
            assert name == "numpy" or toynets.gathers(sim.potential) == (name == "gather")
            sim.advance(6)
            runs[name] = sim
        ref, gather = runs["numpy"], runs["gather"]
        assert 0 < (ref.diverged_step >= 0).sum() < 4 and (ref.diverged_step > 1).any()
        assert_states_close(gather, ref, "float64")
        np.testing.assert_array_equal(gather.diverged_step, runs["dense"].diverged_step)
        for k in ref.state:
            np.testing.assert_array_equal(gather.state[k], runs["dense"].state[k], err_msg=k)

    @pytest.mark.parametrize("tiled", [False, True])
    def test_fused_dw1_sums_in_either_loop_order_give_the_same_bits(tiled, monkeypatch,
                                                                    narrow_warps):
        """dW1's sums samples-outer (`toynets.samples_outer`: a lane's parameters in
        registers) and one entry at a time (forced with `REG_OWNED` = 0, as for parameters in
        local memory) are the same sums in the same order: the same bits, the batch in one
        tile or in tiles, and the reference's states to rounding with the same flags."""
        from langevin_sim.kernels import toynets

        make, dyn, bound, tile, dtype = TILED["teacher-sgd-label-noise"]
        no_generic_steps(monkeypatch)
        init = make().default_init(np.random.default_rng(3).normal(size=(4, make().d)))
        init[[1, 3]] *= 3.0
        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=bound)
        runs = {}
        for name in ("numpy", "outer", "entrywise"):
            if name == "entrywise":
                monkeypatch.setattr(toynets, "REG_OWNED", 0)
            sim = Simulation(make(), dyn, 4, backend="numpy" if name == "numpy" else "cuda",
                             **kw)
            if name != "numpy":
                assert toynets.samples_outer(sim.potential) == (name == "outer")
                if tiled:
                    _force_tile(monkeypatch, sim, tile)
            sim.advance(6)
            runs[name] = sim
        ref, got = runs["numpy"], runs["entrywise"]
        assert 0 < (ref.diverged_step >= 0).sum() < 4
        assert_states_close(got, ref, dtype)
        np.testing.assert_array_equal(got.diverged_step, runs["outer"].diverged_step)
        for k in ref.state:
            np.testing.assert_array_equal(got.state[k], runs["outer"].state[k], err_msg=k)

    def _force_tile(monkeypatch, sim, tile):
        """Shrink `toynets.SHARED_BYTES` to the block of `sim` with `tile` samples a tile."""
        from langevin_sim.kernels import toynets

        d_in, hidden, classes = toynets.net_sizes(sim.potential)
        need = toynets.shared_bytes(d_in, hidden, toynets.batch_of(sim), sim.dtype.itemsize,
                                    classes, isinstance(sim.dynamics, MALA),
                                    toynets.embed_of(sim.potential), tile,
                                    toynets.warps_of(hidden), toynets.gathers(sim.potential))
        monkeypatch.setattr(toynets, "SHARED_BYTES", toynets.SHARED_SLACK + need)
        assert toynets.layout(sim)[1] == tile < toynets.batch_of(sim)

    @pytest.mark.parametrize("case", list(TILED))
    def test_fused_toynet_tiles_and_warps_equal_reference(case, monkeypatch, narrow_warps):
        """The batch in tiles (and blocks of two warps: MALA's residual sums over all the
        block's lanes), 4 replicas (1 and 3 started 3x out, some diverging after step 1), 6
        steps in one call: the reference's states to rounding and the same flags, and the
        tiled run equal to the untiled one bit for bit (the sums over samples, the embedding's
        two operand sums and MALA's losses carried across the tiles in order; label noise
        drawn at the sample's position in the batch)."""
        from langevin_sim.kernels import toynets

        make, dyn, bound, tile, dtype = TILED[case]
        no_generic_steps(monkeypatch)
        monkeypatch.setattr(toynets, "MAX_WARPS", 2)
        init = make().default_init(np.random.default_rng(3).normal(size=(4, make().d)))
        init[[1, 3]] *= 3.0
        kw = dict(seed=7, dtype=dtype, init=init, divergence_bound=bound)
        runs = {}
        for name in ("numpy", "untiled", "tiled"):
            sim = Simulation(make(), dyn, 4, backend="numpy" if name == "numpy" else "cuda",
                             **kw)
            if name == "tiled":
                _force_tile(monkeypatch, sim, tile)
            elif name == "untiled":
                assert toynets.layout(sim)[1] == toynets.batch_of(sim)
            sim.advance(6)
            runs[name] = sim
        ref, tiled = runs["numpy"], runs["tiled"]
        assert 0 < (ref.diverged_step >= 0).sum() < 4 and (ref.diverged_step > 1).any()
        if "2warps" in case:   # 8 lanes, lanes 0 and 1 owning units 8 and 9 too
            assert toynets.warps_of(make().hidden) == 2 and toynets.owned(make()) == 2 * 10
        assert_states_close(tiled, ref, dtype)
        np.testing.assert_array_equal(tiled.diverged_step, runs["untiled"].diverged_step)
        for k in ref.state:
            np.testing.assert_array_equal(tiled.state[k], runs["untiled"].state[k], err_msg=k)


# ---------------------------------------------------------------- records on the device
# Device observables, the host fallback for observables that are not device-clean, and the
# page-locked buffers of the host copies (`CudaBackend.record_observables`, `to_host`,
# `DeviceRun.copy_to_host`); simulator only.

if SIM:
    from langevin_sim.simulation import _in_float64

    def _advanced(pot, M=5, dtype="float64", **kw):
        """A cuda Simulation of `pot` x overdamped Langevin, 2 steps in (state on the device)."""
        sim = Simulation(pot, OverdampedLangevin(0.01, 0.3), M, backend="cuda", seed=1,
                         dtype=dtype, **kw)
        sim.advance(2, sync=False)
        return sim

    @pytest.mark.parametrize("name", sorted(POTENTIAL_CASES) + ["SphericalPSpin-planted"])
    def test_device_observables_equal_the_host_computation(name, narrow_warps):
        """Every registered potential's observables run on the device (a float64 copy of the
        device state, float32 widened as the host widens it) and equal `_in_float64` on the
        host mirror: same keys, dtypes and shapes, values to float64 rounding (and the host
        instance's caches never get the device's arrays: `device_copy`)."""
        make = (lambda: SphericalPSpin(N=4, p=3, seed=1, planted=1.5)) \
            if name == "SphericalPSpin-planted" else POTENTIAL_CASES[name]
        for dtype in ("float64", "float32"):
            sim = _advanced(make(), dtype=dtype)
            run = sim.backend.device_run(sim)
            assert "observables" not in run.pot.bridged, run.pot.bridged
            energy = sim.backend.record_energy(sim)
            got = sim.backend.record_observables(sim, energy)
            sim.sync()
            ref = _in_float64(sim.potential, sim.state["x"], energy)
            assert set(got) == set(ref) and (bool(ref) == run.pot.observes), (name, got, ref)
            if name == "SphericalPSpin-planted":
                assert "overlap" in got
            for k, v in ref.items():
                assert isinstance(got[k], np.ndarray), (name, k, type(got[k]))
                assert (got[k].dtype, got[k].shape) == (v.dtype, v.shape), (name, dtype, k)
                np.testing.assert_allclose(got[k], v, rtol=1e-13, atol=1e-15,
                                           err_msg=f"{name} {dtype} {k}")

    def test_cuda_records_equal_numpy_records_with_diverged_replicas_nan_filled():
        """A cuda run's records (energy, positions, observables; float and int) equal a numpy
        run's, with a diverged replica's float entries NaN-filled the same way."""
        cases = {"LinearRegression": (lambda: LinearRegression(n=12, d=3, seed=3), 2.5),
                 "MultiWell": (POTENTIAL_CASES["MultiWell"], 1.5)}
        for name, (make, eta) in cases.items():
            pot = make()
            init = pot.default_init(np.random.default_rng(1).normal(size=(5, pot.d)))
            init[[1, 3]] *= 30
            runs = {}
            for b in ("numpy", "cuda"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")       # the divergence report
                    runs[b] = Simulation(make(), OverdampedLangevin(eta, 0.1), 5, backend=b,
                                         seed=2, init=init, divergence_bound=40.0).run(
                        4, record_every=2, progress=False)
            ref, got = runs["numpy"], runs["cuda"]
            dead = ref.diverged_step >= 0
            assert 0 < dead.sum() < 5, ref.diverged_step
            np.testing.assert_array_equal(got.diverged_step, ref.diverged_step)
            assert got.names == ref.names and len(ref.names) > 2, (got.names, ref.names)
            for k in ref.names:
                a, b = got[k][:], ref[k][:]
                assert a.dtype == b.dtype and a.shape == b.shape, (name, k)
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"{name} {k}")
                if b.dtype.kind == "f":
                    assert np.isnan(a[-1][dead]).all() and not np.isnan(a[-1][~dead]).any(), k
            ref.close()
            got.close()

    def test_a_record_is_copied_while_the_next_block_computes():
        """`begin_snapshot` computes a record on the device and starts its copy to the host;
        the steps queued next overwrite the state (the stand-in runs the copy only when it is
        waited for, as late as a GPU could), yet the completed record is the state at its own
        step: energies, positions, observables, MALA's acceptances, and NaN only for the
        replicas diverged by then (here replica 3 at step 4; replica 1 diverges at step 6)."""
        pot = LinearRegression(n=12, d=3, seed=3)
        init = pot.default_init(np.random.default_rng(1).normal(size=(5, pot.d)))
        far = init.copy()
        far[[1, 3]] *= 30
        for dyn, x0, at, more in [(OverdampedLangevin(2.0, 0.1), far, 5, 4),
                                  (MALA(0.05, 0.3), init, 3, 5)]:
            sims, records = {}, {}
            for b in ("numpy", "cuda"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")       # the divergence report
                    sim = sims[b] = Simulation(LinearRegression(n=12, d=3, seed=3), dyn, 5,
                                               backend=b, seed=2, init=x0,
                                               divergence_bound=40.0)
                    sim.advance(at, sync=False)
                    taking = sim.begin_snapshot(True)
                    sim.advance(more, sync=False)
                    sim.sync()
                    records[b] = taking()
            want, got = records["numpy"], records["cuda"]
            assert list(got) == list(want), (list(got), list(want))
            for k, v in want.items():
                assert np.asarray(got[k]).dtype == np.asarray(v).dtype, k
                np.testing.assert_allclose(got[k], v, rtol=1e-12, atol=1e-14, err_msg=f"{dyn} {k}")
            ds = sims["cuda"].diverged_step
            np.testing.assert_array_equal(ds, sims["numpy"].diverged_step)
            if isinstance(dyn, OverdampedLangevin):     # one diverged before, one after
                assert np.isnan(got["energy"]).sum() == 1 and ((ds > at) & (ds <= at + more)).any()
            else:
                assert "accepted" in got and not np.isnan(got["energy"]).any()

    def test_dynamics_observables_written_for_numpy_come_from_the_host_mirror():
        """A dynamics whose observables convert to NumPy (TypeError on device arrays) or return
        host arrays: its records are taken from the host mirror at the record's step (as on
        the CPU backends), the same as the numpy backend's."""
        class Converting(OverdampedLangevin):
            def observables(self, state):
                return {"norm": np.linalg.norm(np.asarray(state["x"]), axis=1)}

        class HostArrays(OverdampedLangevin):
            def observables(self, state):
                return {"ones": np.ones(len(state["x"]))}

        for cls in (Converting, HostArrays):
            runs = {b: Simulation(LinearRegression(n=12, d=3, seed=3), cls(0.05, 0.2), 4,
                                  backend=b, seed=2).run(6, record_every=2, progress=False)
                    for b in ("numpy", "cuda")}
            ref, got = runs["numpy"], runs["cuda"]
            assert got.names == ref.names and len(got["energy"]) == 4, (got.names, ref.names)
            for k in ref.names:
                np.testing.assert_allclose(got[k][:], ref[k][:], rtol=1e-12, err_msg=k)
            ref.close()
            got.close()

    def test_observables_that_are_not_device_clean_run_on_the_host_with_one_warning():
        """An observables method that converts to NumPy (TypeError on device arrays) or that
        returns host arrays is computed on the host mirror, with one warning per class."""
        class HostConversion(LinearRegression):
            def observables(self, x, energy=None):
                return {"weight_error": np.sum((np.asarray(x) - self.w_star) ** 2, axis=1)}

        class HostResult(LinearRegression):
            def observables(self, x, energy=None):
                return {"zeros": np.zeros(len(x))}

        for cls in (HostConversion, HostResult):
            cuda_backend._warned.discard((cls.__name__, "observables"))
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                sims = [_advanced(cls(n=12, d=3, seed=3)) for _ in range(2)]
                snaps = [s.snapshot() for s in sims]
            msgs = [str(w.message) for w in rec if "cuda backend" in str(w.message)]
            assert len(msgs) == 1 and f"{cls.__name__}.observables is not written" in msgs[0] \
                and "every record" in msgs[0], msgs
            run = sims[0].backend.device_run(sims[0])
            assert set(run.pot.bridged) == {"observables"}, run.pot.bridged
            assert sims[0].backend.record_observables(sims[0], snaps[0]["energy"]) is None
            want = sims[0].potential.observables(sims[0].state["x"])
            for k, v in want.items():
                np.testing.assert_array_equal(snaps[0][k], v, err_msg=k)

    def test_host_copies_go_through_the_runs_pinned_buffers(monkeypatch, tmp_path):
        """Checkpoints copy the device state through page-locked buffers allocated once per run
        (state arrays, divergence flags) and reused at every sync, the host mirror staying the
        Simulation's own arrays; a run's records land in page-locked arrays (the backend's
        `empty_host`, which the run's Recycler allocates from).  The stand-in's get(out=) refuses what CuPy
        refuses."""
        allocated = []
        empty_pinned = cuda_runtime.empty_pinned

        def counting(shape, dtype):
            allocated.append((tuple(shape), np.dtype(dtype)))
            return empty_pinned(shape, dtype)
        monkeypatch.setattr(cuda_runtime, "empty_pinned", counting)
        monkeypatch.setattr(cuda_backend.CudaBackend, "empty_host", staticmethod(counting))
        make, dyn = PAIRS["DoubleWell-UnderdampedLangevin"]
        sim = Simulation(make(), dyn, 5, backend="cuda", seed=3)
        ref = Simulation(make(), dyn, 5, backend="numpy", seed=3)
        host = dict(sim.state)
        run, buffers = None, None
        for _ in range(3):
            sim.advance(2, sync=False)
            ref.advance(2)
            sim.sync()
            run = sim.backend.device_run(sim)
            if buffers is None:
                buffers = {k: id(v) for k, v in run.pinned.items()}
            assert {k: id(v) for k, v in run.pinned.items()} == buffers
            for k, v in ref.state.items():
                np.testing.assert_allclose(sim.state[k], v, rtol=1e-12, err_msg=k)
        assert set(buffers) == set(sim.state) | {"diverged_step"}
        assert len(allocated) == len(buffers)                   # once per run
        assert all(sim.state[k] is v and all(v is not b for b in run.pinned.values())
                   for k, v in host.items())                    # the mirror is the host's own
        del allocated[:]
        with sim.run(60, record_every=2, out=tmp_path / "r.h5", progress=False) as r:
            assert len(r["energy"]) == 31
        positions = [a for a in allocated if a == ((5, 3), np.dtype(np.float64))]
        assert len(positions) >= 30, allocated                  # every record after the probe
        xp = cuda_runtime.xp()
        a = xp.asarray(np.arange(6.0).reshape(2, 3))
        for out, err in ((np.empty((2, 3), np.float32), TypeError), ([0.0] * 6, TypeError),
                         (np.empty((3, 2)), ValueError),
                         (np.empty((2, 6))[:, ::2], RuntimeError)):
            with pytest.raises(err):
                a.get(out=out)
        out = np.empty((2, 3))
        assert a.get(out=out) is out and np.array_equal(out, np.arange(6.0).reshape(2, 3))


def test_memory_estimate_counts_a_finite_sums_samples_and_records_run_in_blocks(monkeypatch):
    """A finite sum's generic path gathers (M, B, d) minibatch rows and its records evaluate
    every sample, (M, n) float64: the estimate counted neither (592 bytes a replica for
    LinearRegression n = 4096, d = 8, where a record took 98 KB: 'use replicas <= K' on 8 GiB
    named 13 million, which needed 816 GiB).  Now the step's samples count per replica, and
    records run in blocks of `record_rows` replicas, equal to one block of all to rounding."""
    from langevin_sim.backends import cuda_backend as cb
    from langevin_sim.backends import cuda_runtime as rt

    pot = LinearRegression(n=4096, d=8, seed=1)
    sim = Simulation(pot, SGD(0.01, 32, momentum=0.9), 64, backend="numpy", seed=0)
    per_sample = rt.potential_bytes(pot) / 4096
    fused = rt.bytes_per_replica(sim)        # the dense form's kernel: no per-sample buffers
    with monkeypatch.context() as m:         # the generic path gathers a minibatch's rows
        m.setattr(cb, "fused_entry", lambda sim: None)
        assert per_sample >= 8 * 9 and rt.bytes_per_replica(sim) >= 5 * 32 * per_sample > fused
    assert rt.record_bytes_per_row(pot) >= 5 * 4096 * 8 * 9
    fit = rt.replicas_that_fit(sim, 8 << 30)
    assert fit * rt.bytes_per_replica(sim) + rt.fixed_bytes(sim) <= 8 << 30
    assert fit * rt.record_bytes_per_row(pot) > rt.RECORD_BLOCK_BYTES   # records need blocks
    assert rt.record_rows(pot, fit) * rt.record_bytes_per_row(pot) <= rt.RECORD_BLOCK_BYTES
    if not rt.simulated():
        pytest.skip("the device records run under the CUDA simulator (or on a GPU)")
    run = Simulation(pot, SGD(0.01, 32, momentum=0.9), 7, backend="cuda", seed=0)
    whole = run.snapshot()
    monkeypatch.setattr(rt, "record_rows", lambda potential, M: 3)     # blocks of 3, 3, 1
    parts = run.snapshot()
    assert parts.keys() == whole.keys()
    for k in whole:     # (a product over fewer rows may round differently: BLAS's blocking)
        np.testing.assert_allclose(parts[k], whole[k], rtol=1e-13, atol=0, err_msg=k)
