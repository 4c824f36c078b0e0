import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tests check what the kernels compute, not how fast: Numba compiles them at LLVM -O1
# (NUMBA_OPT; a cold cache compiles in about a third less time, and without fastmath the
# arithmetic is the same IEEE operations as at -O3), into a cache of its own (subprocesses
# inherit both), so that the tests never leave -O1 kernels where a user's runs load theirs.
# NUMBA_OPT=3 in the environment runs the suite on the kernels users run.
os.environ.setdefault("NUMBA_OPT", "1")
os.environ["NUMBA_CACHE_DIR"] = os.path.join(ROOT, ".numba-cache", f"tests-O{os.environ['NUMBA_OPT']}")

# The Ctrl-C tests deliver SIGINT to this process and to the runs and scans it starts; a
# session started as a background job of a script (`pytest &`) has SIGINT ignored, which its
# children inherit (a run then keeps ignoring it, by design, and those tests failed, leaving
# their 10^7-step runs behind). A Python handler is not inherited: the children start with
# the default, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------- subprocesses started early
# A test whose work is one long subprocess (the CUDA simulator's pytest, PTX compilations,
# the notebooks) names it with `@starts_early(spec)`, spec(**params) -> (argv, env), params
# those of the test's parametrization. When collection ends, these subprocesses are queued in
# collection order and run BACKGROUND_SLOTS at a time at low priority (`nice`): they fill the
# core the tests' process leaves idle (Numba compiles on one) without slowing it. The tests
# that take their results (`early_result`) run last, when the subprocesses are done. Under
# pytest-xdist (`-n N`) the workers run them as they come instead.

BACKGROUND_SLOTS = 2
_pool = None
_jobs: dict = {}
_running: set = set()
_NICE = ["nice", "-n", "10"] if shutil.which("nice") else []


def starts_early(spec, timeout=900):
    """Decorator: spec(**params) -> (argv, env) of the test's subprocess (cwd: the
    repository), killed after `timeout` seconds of its own run (a number, or
    timeout(**params) -> seconds)."""
    def mark(fn):
        fn.early_spec, fn.early_timeout = spec, timeout
        return fn
    return mark


def _early_spec(item):
    return getattr(getattr(item, "function", None), "early_spec", None)


def _run(fn, params: dict) -> subprocess.CompletedProcess:
    argv, env = fn.early_spec(**params)
    timeout = fn.early_timeout(**params) if callable(fn.early_timeout) else fn.early_timeout
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(_NICE + argv, env=env, cwd=ROOT, stdout=out, stderr=err,
                                text=True)
        _running.add(proc)
        try:
            proc.wait(timeout)
            note = ""
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            note = f"\n(killed after {timeout:.0f} s)"
        finally:
            _running.discard(proc)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read() + note)


def _key(fn, params: dict):
    return fn, tuple(sorted(params.items()))


def _submit(fn, params: dict):
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(BACKGROUND_SLOTS)
    return _pool.submit(_run, fn, params)


# ---------------------------------------------------------------- files run beside the session
# The tests of the files in BESIDE (Numba compilations, one process, nothing timed) run in a
# second pytest, queued first among the subprocesses above: once those are done the tests'
# process would otherwise leave the second core idle for the last third of the suite. Each of
# their tests keeps its node id here and reports the outcome the second pytest gave it (its
# failure text, skip reason). Only when the session also runs tests of other files, not under
# xdist, and not with LANGEVIN_SIM_TESTS_BESIDE=0.

BESIDE = ("tests/test_backends.py", "tests/test_toynet_kernels.py")
_ONLY, _OUTCOMES = "LANGEVIN_SIM_TESTS_ONLY", "LANGEVIN_SIM_TESTS_OUTCOMES"
_beside: dict = {}


class _BesideFailure(Exception):
    """A test that failed in the second pytest; its text is that pytest's report."""


class _Beside(pytest.Item):
    """A test run by the second pytest: its outcome there."""

    def runtest(self):
        reports = _beside_reports().get(self.nodeid)
        if not reports:
            r = _beside["job"].result()
            raise _BesideFailure(f"not run by the tests' second pytest (exit {r.returncode}):\n"
                                 + (r.stdout + r.stderr)[-3000:])
        failed = [rep for rep in reports if rep["outcome"] == "failed"]
        if failed:
            raise _BesideFailure("\n\n".join(
                f"{rep['crash']}\n({rep['when']}, in the tests' second pytest)\n{rep['text']}"
                for rep in failed))
        for rep in reports:
            if rep["outcome"] == "skipped":
                pytest.skip(f"{rep['text']} ({rep['crash']}, in the tests' second pytest)")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, _BesideFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.nodeid


def _beside_reports() -> dict:
    """{node id: [report dicts]} written by the second pytest (once it has ended)."""
    if "reports" not in _beside:
        _beside["job"].result()
        reports: dict = {}
        with open(_beside["outcomes"]) as f:
            for line in f:
                rep = json.loads(line)
                reports.setdefault(rep["nodeid"], []).append(rep)
        _beside["reports"] = reports
    return _beside["reports"]


def _beside_spec(files: list, ids: list):
    tmp = tempfile.mkdtemp(prefix="langevin-sim-beside-")
    only, outcomes = os.path.join(tmp, "only"), os.path.join(tmp, "outcomes")
    with open(only, "w") as f:
        f.write("\n".join(ids))
    open(outcomes, "w").close()
    _beside["outcomes"] = outcomes
    env = dict(os.environ, **{_ONLY: only, _OUTCOMES: outcomes})
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
            *files]
    return lambda: (argv, env)


@pytest.hookimpl(trylast=True)          # after -m and -k have deselected
def pytest_collection_modifyitems(session, config, items):
    last = [item for item in items if _early_spec(item) is not None]
    items[:] = [item for item in items if _early_spec(item) is None] + last
    if os.environ.get(_ONLY):           # the second pytest: the tests it was given
        with open(os.environ[_ONLY]) as f:
            keep = set(f.read().splitlines())
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in keep])
        items[:] = [i for i in items if i.nodeid in keep]
        return
    if (config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER")
            or os.environ.get("LANGEVIN_SIM_TESTS_BESIDE") == "0"):
        return
    beside = [i for i in items if os.path.relpath(str(i.path), ROOT) in BESIDE]
    if not beside or len(beside) == len(items):
        return
    files = sorted({os.path.relpath(str(i.path), ROOT) for i in beside})
    fn = _beside_spec(files, [i.nodeid for i in beside])
    fn.early_spec, fn.early_timeout = fn, 1800
    _beside["job"] = _submit(fn, {})
    moved = set(map(id, beside))
    items[:] = ([i for i in items if id(i) not in moved]
                + [_Beside.from_parent(i.parent, name=i.name) for i in beside])


def pytest_runtest_logreport(report):
    """In the second pytest: each report, for the session that started it."""
    path = os.environ.get(_OUTCOMES)
    if path and (report.when == "call" or report.outcome != "passed"):
        if report.skipped and isinstance(report.longrepr, tuple):     # (path, line, reason)
            crash, text = f"{report.longrepr[0]}:{report.longrepr[1]}", report.longrepr[2]
            text = text.removeprefix("Skipped: ")
        else:
            crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", "")
            text = report.longreprtext
        with open(path, "a") as f:
            f.write(json.dumps({"nodeid": report.nodeid, "when": report.when, "crash": crash,
                                "outcome": report.outcome, "text": text}) + "\n")


def pytest_collection_finish(session):
    # an xdist worker collects every test but runs only its share: queuing all the
    # subprocesses in each worker would run each of them once per worker; there each one
    # starts when its test runs (`early_result`), beside the other workers' tests
    if session.config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in session.items:
        fn = getattr(item, "function", None)
        if _early_spec(item) is not None:
            params = dict(getattr(getattr(item, "callspec", None), "params", {}))
            if _key(fn, params) not in _jobs:
                _jobs[_key(fn, params)] = _submit(fn, params)


def early_result(fn, **params) -> subprocess.CompletedProcess:
    """The finished subprocess of the `starts_early` test function fn with these parameters
    (run now if it was not queued at collection)."""
    job = _jobs.pop(_key(fn, params), None) or _submit(fn, params)
    return job.result()


def pytest_sessionfinish(session):
    if _pool is not None:               # deselected at run time, or the session aborted
        _pool.shutdown(wait=False, cancel_futures=True)
    for proc in list(_running):
        proc.kill()
    if "outcomes" in _beside:
        shutil.rmtree(os.path.dirname(_beside["outcomes"]), ignore_errors=True)


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
from langevin_sim.backends import cuda_runtime
from langevin_sim.errors import BackendUnavailableError
try:
    cuda = cuda_runtime.offline_compiler((9, 0))
except BackendUnavailableError as e:
    print("skip:", str(e)[:200])
    raise SystemExit(0)
"""


def ptx_compilation(code: str):
    """`starts_early` spec: PTX_PREAMBLE + code (which prints "ok") in a fresh Python without
    the CUDA simulator."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_ENABLE_CUDASIM", "LANGEVIN_SIM_CUDA_SIM")}
    return lambda: ([sys.executable, "-c", PTX_PREAMBLE + code], env)


def check_ptx_compilation(fn, **params) -> None:
    """The result of the `ptx_compilation` test function fn (with these parameters): "ok",
    or the test skipped where libNVVM is missing."""
    r = early_result(fn, **params)
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

