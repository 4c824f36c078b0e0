import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- subprocesses started early
# A test whose work is one long subprocess (the CUDA simulator's pytest, PTX compilations)
# names it with `@starts_early(spec)`: the subprocess starts when collection ends and runs
# beside the tests before it (mostly one busy core: Numba compiles on one), and the test
# takes its result with `early_result`.

_started: dict = {}


def starts_early(spec):
    """Decorator: spec() -> (argv, env) of the test's subprocess (cwd: the repository)."""
    def mark(fn):
        fn.early_spec = spec
        return fn
    return mark


def _start(spec):
    argv, env = spec()
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=err, text=True), out, err


def pytest_collection_finish(session):
    for item in session.items:
        fn = getattr(item, "function", None)
        spec = getattr(fn, "early_spec", None)
        if spec is not None and fn not in _started:
            _started[fn] = _start(spec)


def early_result(fn, timeout: float = 900) -> subprocess.CompletedProcess:
    """The finished subprocess of the `starts_early` test function fn (started now if it was
    not collected early)."""
    proc, out, err = _started.pop(fn, None) or _start(fn.early_spec)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    with out, err:
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def pytest_sessionfinish(session):
    for proc, _, _ in _started.values():    # deselected at run time, or the session aborted
        proc.kill()


@pytest.fixture
def tmp_run(tmp_path):
    """A fresh run-file path."""
    return tmp_path / "run.h5"


def both_backends(potential, dynamics, replicas, *steps, **kw):
    """{"numpy": sim, "numba": sim}: the same Simulation(potential, dynamics, replicas, **kw)
    on each backend, advanced by each count in `steps` in turn; the state keeps its dtype."""
    from langevin_sim import Simulation

    out = {}
    for backend in ("numpy", "numba"):
        sim = Simulation(potential, dynamics, replicas, backend=backend, **kw)
        for n in steps:
            sim.advance(n)
        assert sim.state["x"].dtype == np.dtype(kw.get("dtype", "float64"))
        out[backend] = sim
    return out


def assert_within_se(estimate, exact, se, k=4.0, what="estimate"):
    """Stochastic check: |estimate - exact| <= k standard errors."""
    estimate, exact, se = map(np.asarray, (estimate, exact, se))
    z = (estimate - exact) / se
    assert np.all(np.abs(z) <= k), (
        f"stochastic test: {what} = {estimate} vs exact {exact}, z = {z} (tolerance {k} SE)")


# Compiling numba-cuda kernels to PTX needs libNVVM, not a GPU: the code run by
# `ptx_compilation` starts with this (skip where libNVVM is missing; a device of
# compute capability 9.0 pretended).
PTX_PREAMBLE = """
import types
try:
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda
    from numba.cuda.cudadrv import nvvm
    assert nvvm.is_available() and hasattr(dispatcher, "get_current_device")
except Exception as e:
    print("skip:", repr(e)[:200])
    raise SystemExit(0)
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
"""


def ptx_compilation(code: str):
    """`starts_early` spec: PTX_PREAMBLE + code (which prints "ok") in a fresh Python without
    the CUDA simulator."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_ENABLE_CUDASIM", "LANGEVIN_SIM_CUDA_SIM")}
    return lambda: ([sys.executable, "-c", PTX_PREAMBLE + code], env)


def check_ptx_compilation(fn) -> None:
    """The result of the `ptx_compilation` test function fn: "ok", or the test skipped where
    libNVVM is missing."""
    r = early_result(fn, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    if r.stdout.startswith("skip:"):
        pytest.skip(r.stdout.strip())
    assert r.stdout.strip() == "ok", r.stdout[-2000:]


def assert_split_matches(parts: list, whole, potential, rtol: float = 0.0, what: str = "") -> None:
    """The states of a replica split (`parts`, Simulations in replica order) against the
    whole run's: bit for bit (or to `rtol`), and to rounding (rtol 1e-12) where the potential
    multiplies the whole batch in one product (`Potential.batched_products`: the library's
    blocking, and so its rounding, may depend on the number of replicas).  Rounding is
    measured against each array's largest entry (a velocity that has decayed to ~1e-7 carries
    the rounding of its earlier O(1) values)."""
    rtol = max(rtol, 1e-12 if potential.batched_products else 0.0)
    for k, w in whole.state.items():
        scale = float(np.nanmax(np.abs(w), initial=0.0)) if rtol else 0.0
        np.testing.assert_allclose(np.concatenate([p.state[k] for p in parts]), w, rtol=rtol,
                                   atol=rtol * scale, err_msg=f"{what}: replica split, {k}")

