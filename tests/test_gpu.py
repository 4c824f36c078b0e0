"""The cuda backend on a real GPU with CuPy (marked gpu: ``python -m pytest -m gpu
tests/test_gpu.py``, or benchmarks/gpu_check.sh).  Deselected by default; skipped where CuPy
or a GPU is missing, or under the simulator (tests/test_cuda_backend.py covers that).

- Philox integers bit-identical to the CPU reference, normals to rounding;
- every (potential, dynamics) pair of the registries (tests/test_cuda_backend.pair_cases)
  equal to the NumPy reference to rounding, float64 and float32, with partition invariance;
  every dynamics by the generic path's elementwise kernels too;
- the fused dense kernels (SphericalPSpin, Quadratic x OverdampedLangevin: cuBLAS GEMM + one
  fused kernel per step) at sizes where cuBLAS tiles, and the device record energies;
- a run killed with SIGKILL resumes to the same final state as an uninterrupted run; records
  copied while the next block computes equal the CPU's;
- the physics oracles (Euler-Maruyama variance, BAOAB, OBABO, double-well Boltzmann, p-spin
  paramagnet) with backend="cuda": the test bodies of tests/test_physics.py,
  tests/test_integrators.py and tests/test_pspin.py, run with the cuda backend; replica exchange's rung-0 Boltzmann
  occupancy (tests/test_exchange.py) with every rung on the device.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from langevin_sim import Simulation, open_run, rng

from .test_cuda_backend import (F32_PAIRS, GENERIC_PAIRS, PAIRS, WIDE_GENERIC, backends_agree,
                                use_cuda_backend, wide_regression)

ROOT = Path(__file__).resolve().parents[1]


def _gpu_ready() -> str:
    """'' when CuPy sees a GPU here (and not the simulator), else why the tests skip."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0") or \
            os.environ.get("LANGEVIN_SIM_CUDA_SIM", "") not in ("", "0"):
        return "simulator mode: tests/test_cuda_backend.py covers it"
    try:
        from langevin_sim.backends import cuda_runtime as rt
        rt.require()
    except Exception as e:
        return f"no usable GPU: {e}"
    return ""


WHY = _gpu_ready()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(WHY), reason=WHY or "a GPU is here")]
if not WHY:
    use_cuda_backend()


def test_philox_integers_bit_identical_and_normals_to_rounding():
    from langevin_sim.backends import cuda_kernels as ck
    from langevin_sim.backends import cuda_runtime as rt

    xp = rt.xp()
    M, start, count, seed = 1000, 12345, 37, 2 ** 40 + 7
    k0, k1 = rng.key_of(seed)
    w = xp.empty((M, count), dtype=np.uint64)
    threads = M * ck.chunks_of(count)     # a thread per replica and Philox block
    rt.launch(ck.words(), threads, w, k0, k1, np.uint64(rng.MINIBATCH), np.uint64(5), start, 0)
    ref = rng.stream_words(seed, rng.MINIBATCH, np.arange(5, 5 + M), start, count)
    np.testing.assert_array_equal(rt.asnumpy(w), ref)
    for dt in (np.float64, np.float32):
        z = xp.empty((M, count), dtype=dt)
        rt.launch(ck.normals(dt == np.float32), threads, z, k0, k1, np.uint64(rng.NOISE),
                  np.uint64(5), start)
        ref = rng.stream_normals(seed, rng.NOISE, np.arange(5, 5 + M), start, count, dt)
        tol = 1e-13 if dt == np.float64 else 2e-6      # FMA contraction on the device
        np.testing.assert_allclose(rt.asnumpy(z), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_pair_matches_reference_on_the_device(name):
    make, dyn = PAIRS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, whole = backends_agree("cuda", make, dyn, 37, (5, 6), rtol=1e-8, atol=1e-10, what=name,
                                  seed=11)
        parts = []
        for r0, n in ((0, 12), (12, 25)):
            p = Simulation(make(), dyn, n, backend="cuda", seed=11, first_replica=r0)
            p.advance(11)
            parts.append(p)
        if name in F32_PAIRS:
            backends_agree("cuda", make, dyn, 37, (11,), rtol=2e-4, atol=2e-4, what=name, seed=1,
                           dtype="float32")
    for k in whole.state:     # cuBLAS may block differently for other row counts: to rounding
        np.testing.assert_allclose(np.concatenate([p.state[k] for p in parts]), whole.state[k],
                                   rtol=1e-10, atol=1e-12, err_msg=f"{name}: partition, {k}")


@pytest.mark.parametrize("name", GENERIC_PAIRS + [f"wide-{r}" for r in sorted(WIDE_GENERIC)])
def test_generic_path_matches_reference_on_the_device(name, monkeypatch):
    """Every dynamics of a finite-sum potential and of the sphere, and rows of 37 entries
    (LinearRegression d = 37: overdamped, SGD, BAOAB, AdamW), by the generic path's
    elementwise kernels (the fused kernels declined): the reference's states to rounding,
    with its divergence flags."""
    from langevin_sim.backends import cuda_backend

    monkeypatch.setattr(cuda_backend, "fused_kernel", lambda sim: None)
    make, dyn = (wide_regression, WIDE_GENERIC[name[5:]]) if name.startswith("wide-") \
        else PAIRS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        backends_agree("cuda", make, dyn, 37, (5, 6), rtol=1e-8, atol=1e-10, what=name, seed=11)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("pair", ["pspin", "pspin-heun", "pspin-sgd", "pspin-adamw",
                                  "quadratic", "quadratic-wide-heun", "quadratic-wide-sgd",
                                  "quadratic-wide-mala"])
def test_fused_dense_kernels_match_reference_on_the_device(pair, dtype):
    """SphericalPSpin (p = 3) x OverdampedLangevin, full-batch SGD and AdamW, and Heun (two
    GEMMs per step), and the dense Quadratic x OverdampedLangevin (and beyond the row
    kernels' d = 64, Heun, SGD with weight decay, and MALA in float64) by one cuBLAS GEMM +
    one fused kernel
    per step, at
    sizes where cuBLAS tiles: the reference to rounding, the same divergence flags, an uneven
    first_replica split to rounding; records' energies (on the device) equal the NumPy
    backend's."""
    from langevin_sim.backends.cuda_backend import fused_kernel
    from langevin_sim.dynamics import MALA, SGD, AdamW, Heun, OverdampedLangevin, Schedule
    from langevin_sim.potentials import Quadratic, SphericalPSpin

    if pair.startswith("pspin"):
        make = lambda: SphericalPSpin(N=24, p=3, seed=1, planted=0.3)   # noqa: E731
        dyn = (Heun if pair == "pspin-heun" else OverdampedLangevin)(
            Schedule("linear", 0.02, 0.01, 30), 0.7)
        if pair == "pspin-sgd":
            dyn = SGD(Schedule("linear", 0.02, 0.01, 30), None, momentum=0.5, temperature=0.7)
        elif pair == "pspin-adamw":
            dyn = AdamW(Schedule("linear", 0.02, 0.01, 30), None, weight_decay=0.0)
    elif pair == "quadratic":
        make = lambda: Quadratic(spectrum=np.linspace(0.2, 3.0, 48), seed=1)   # noqa: E731
        dyn = OverdampedLangevin(0.05, Schedule("cosine", 0.8, 0.3, 30))
    else:
        if pair.endswith("mala") and dtype == "float32":
            pytest.skip("MALA's decisions in float32 may flip on the rounding of U (~1e-6)")
        make = lambda: Quadratic(spectrum=np.linspace(0.2, 3.0, 96), seed=1)   # noqa: E731
        dyn = Heun(0.05, Schedule("cosine", 0.8, 0.3, 30)) if pair.endswith("heun") else \
            MALA(0.05, 0.8) if pair.endswith("mala") else \
            SGD(0.05, None, momentum=0.5, weight_decay=0.01, grad_noise=0.2, temperature=0.8)
    tol = 1e-9 if dtype == "float64" else 5e-4
    kw = dict(seed=5, dtype=dtype)
    ref, whole = backends_agree("cuda", make, dyn, 300, (7, 13), rtol=tol, atol=tol, what=pair,
                                **kw)
    assert fused_kernel(whole) is not None
    if "wide" in pair:                       # the GEMM path, not the row kernels
        from langevin_sim.kernels import quadratic, rows
        assert fused_kernel(whole) is quadratic._quadratic_dense_cuda
        assert not rows.accepts(whole)
    parts = []
    for r0, n in ((0, 117), (117, 183)):
        p = Simulation(make(), dyn, n, backend="cuda", first_replica=r0, **kw)
        p.advance(20)
        parts.append(p)
    np.testing.assert_allclose(np.concatenate([p.state["x"] for p in parts]), whole.state["x"],
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(whole.backend.record_energy(whole),
                               make().energy(ref.state["x"].astype(np.float64)), rtol=tol,
                               atol=tol * 300)


@pytest.mark.parametrize("pair,dtype,lanes,stream", [
    ("pspin", "float64", 8, True), ("pspin", "float32", 8, True), ("pspin", "float64", 4, True),
    ("pspin-lm", "float32", 8, True), ("quadratic", "float64", 8, True),
    ("quadratic", "float32", 4, True), ("pspin", "float64", 16, True),
    ("quadratic", "float32", 16, True), ("pspin-lm", "float64", 16, True),
    ("pspin-lm", "float64", 16, False), ("quadratic", "float64", 16, False)])
def test_sliced_dense_step_kernel_matches_reference_on_the_device(pair, dtype, lanes, stream,
                                                                   monkeypatch):
    """`gemm_step` with 4, 8 and 16 threads per replica (`cuda_kernels.GEMM_LANES`; blocks of 32
    replicas x L, the sphere's sums through dynamic shared memory; streamed, and with
    per-thread arrays: `cuda_kernels.GEMM_STREAM`): SphericalPSpin (N = 30,
    p = 3: slices of 8 or 4 coordinates, the last shorter) x OverdampedLangevin and
    Leimkuhler-Matthews, the dense Quadratic (d = 48) x OverdampedLangevin, 300 replicas (the
    last block partly empty), to the reference's and one thread per replica's rounding; an
    uneven first_replica split to rounding (cuBLAS may block a product of 117 replicas
    otherwise than one of 300: design_changes 31; run 2 on the H200 saw 1-ulp differences for
    the p-spin, whose product has 465 terms)."""
    from langevin_sim.backends import cuda_kernels as ck
    from langevin_sim.dynamics import LeimkuhlerMatthews, OverdampedLangevin, Schedule
    from langevin_sim.potentials import Quadratic, SphericalPSpin

    if pair.startswith("pspin"):
        make = lambda: SphericalPSpin(N=30, p=3, seed=1, planted=0.3)   # noqa: E731
        dyn = (LeimkuhlerMatthews if pair == "pspin-lm" else OverdampedLangevin)(
            Schedule("linear", 0.02, 0.01, 30), 0.7)
    else:
        make = lambda: Quadratic(spectrum=np.linspace(0.2, 3.0, 48), seed=1)   # noqa: E731
        dyn = OverdampedLangevin(0.05, Schedule("cosine", 0.8, 0.3, 30))
    tol = 1e-9 if dtype == "float64" else 5e-4
    kw = dict(seed=5, dtype=dtype)
    monkeypatch.setattr(ck, "GEMM_LANES", 1)
    one = Simulation(make(), dyn, 300, backend="cuda", **kw)
    one.advance(20)
    monkeypatch.setattr(ck, "GEMM_LANES", lanes)
    monkeypatch.setattr(ck, "GEMM_STREAM", stream)
    ref, whole = backends_agree("cuda", make, dyn, 300, (7, 13), rtol=tol, atol=tol, what=pair,
                                **kw)
    parts = []
    for r0, n in ((0, 117), (117, 183)):
        p = Simulation(make(), dyn, n, backend="cuda", first_replica=r0, **kw)
        p.advance(20)
        parts.append(p)
    np.testing.assert_allclose(np.concatenate([p.state["x"] for p in parts]), whole.state["x"],
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(whole.state["x"], one.state["x"], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_grokking_net_runs_fused_in_tiles_on_the_device(dtype):
    """The grokking scenario's default net (p = 23, hidden 64, one-hot, 317 training pairs)
    x full-batch AdamW with weight decay by the fused toy-net kernel: two warps per replica,
    the batch in tiles, the one-hot inputs gathered, 70 parameters per lane in local memory:
    the reference to rounding over 20 steps, 40 replicas, and an uneven first_replica split
    to rounding."""
    from langevin_sim.backends.cuda_backend import fused_kernel
    from langevin_sim.dynamics import AdamW
    from langevin_sim.kernels import toynets
    from langevin_sim.potentials import ModularArithmeticMLP

    def make():
        return ModularArithmeticMLP(p=23, hidden=64, train_fraction=0.6, seed=1)
    dyn = AdamW(1e-3, None, weight_decay=1.0)
    tol = 1e-9 if dtype == "float64" else 5e-4
    kw = dict(seed=3, dtype=dtype)
    _, whole = backends_agree("cuda", make, dyn, 40, (12, 8), rtol=tol, atol=tol, what="grok",
                              **kw)
    assert fused_kernel(whole) is not None and fused_kernel(whole).__module__ == toynets.__name__
    warps, tile, _ = toynets.layout(whole)
    assert warps == 2 and 0 < tile < 317 and toynets.gathers(whole.potential)
    parts = []
    for r0, n in ((0, 13), (13, 27)):
        p = Simulation(make(), dyn, n, backend="cuda", first_replica=r0, **kw)
        p.advance(20)
        parts.append(p)
    for k in whole.state:
        np.testing.assert_allclose(np.concatenate([p.state[k] for p in parts]), whole.state[k],
                                   rtol=tol, atol=tol, err_msg=k)


def test_dense_first_passage_arrays_equal_the_reference_on_the_device():
    """SphericalPSpin (p = 3, N = 24) x OverdampedLangevin with a first-passage observer, by
    the GEMM path (its observer launch replayed in the CUDA graphs): the reference's arrays
    exactly (membership in float64 in the reference's order; positions equal to ~1e-12, so
    a flip would need a replica that close to a boundary), over several calls."""
    from langevin_sim.backends.cuda_backend import fused_kernel
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.first_passage import Ball, FirstPassage, HalfSpace
    from langevin_sim.potentials import SphericalPSpin

    e = np.eye(24)                       # on the sphere |x|^2 = 24: x_i ~ 1
    fp = FirstPassage(HalfSpace(e[0], 0.0, "right"), HalfSpace(e[1], 1.0, "high"),
                      Ball(4.0 * e[2], 4.5, "cap"))
    ref, got = backends_agree("cuda", lambda: SphericalPSpin(N=24, p=3, seed=1, planted=0.3),
                              OverdampedLangevin(0.02, 0.7), 300, (7, 40, 13), rtol=1e-9,
                              atol=1e-11, what="pspin first passage", seed=5, first_passage=fp)
    assert fused_kernel(got) is not None
    for k in ref.state:
        if k.startswith("fp_"):
            np.testing.assert_array_equal(got.state[k], ref.state[k], err_msg=k)
    assert ref.state["fp_crossings"].sum() > 100


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_own_cublas_gemm_equals_cupy_matmul_and_captures_in_a_graph(dtype):
    """`cuda_runtime.gemm` (cuBLAS through the module's own handle and workspace, since CuPy
    refuses cuBLAS during stream capture) equals CuPy's matmul to rounding for C- and
    Fortran-contiguous operands, and a graph captured around it replays the product of the
    operands as they are at the replay."""
    from langevin_sim.backends import cuda_runtime as rt

    cp = rt.xp()
    r = np.random.default_rng(1)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    for fa in (False, True):
        for fb in (False, True):
            a = cp.asarray(r.normal(size=(70, 33)).astype(dtype))
            b = cp.asarray(r.normal(size=(33, 129)).astype(dtype))
            a, b = (cp.asfortranarray(a) if fa else a), (cp.asfortranarray(b) if fb else b)
            out = cp.empty((70, 129), dtype=dtype)
            rt.gemm(a, b, out)
            np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(cp.matmul(a, b)), **tol)
    assert rt._cublas(cp) is not None, "the own cuBLAS handle could not be made"
    graph = rt.capture(lambda: rt.gemm(a, b, out))
    assert graph is not None, rt._GRAPHS_FAILED
    b[...] = cp.asarray(r.normal(size=b.shape).astype(dtype))
    graph.launch()
    cp.cuda.get_current_stream().synchronize()
    np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(a) @ cp.asnumpy(b), **tol)


@pytest.mark.parametrize("pair", ["pspin-heun", "quadratic-baoab", "pspin-streamed"])
def test_dense_steps_as_cuda_graphs_equal_one_launch_at_a_time(pair, monkeypatch):
    """The dense paths' steps queued as replays of captured CUDA graphs (cuBLAS GEMMs and
    numba-cuda launches on a capturing stream; the kernels read the step from the device
    counter) give bit for bit the state of the same run launched one step at a time
    (LANGEVIN_SIM_CUDA_GRAPH_STEPS=0), first-passage arrays included (BAOAB's and the
    streamed kernel's observer launches are in the graphs), and the capture did not fail (it
    would warn and fall back to launching one by one).  The streamed sliced kernel's XT and
    GT trade places every step (design_changes 106): calls of 40, 1, 7 and 33 steps capture
    graphs starting at both phases (five, four kept) and end on either buffer."""
    from langevin_sim.backends import cuda_runtime as rt
    from langevin_sim.dynamics import Heun, OverdampedLangevin, Schedule, UnderdampedLangevin
    from langevin_sim.first_passage import FirstPassage, HalfSpace
    from langevin_sim.potentials import Quadratic, SphericalPSpin

    if pair.startswith("pspin"):
        make = lambda: SphericalPSpin(N=24, p=3, seed=1, planted=0.3)   # noqa: E731
        dyn = (Heun if pair == "pspin-heun" else OverdampedLangevin)(
            Schedule("linear", 0.02, 0.01, 60), 0.7)
    else:
        make = lambda: Quadratic(spectrum=np.linspace(0.2, 3.0, 48), seed=1)   # noqa: E731
        dyn = UnderdampedLangevin(0.05, 1.0, Schedule("cosine", 0.8, 0.3, 60))
    kw = {} if pair == "pspin-heun" else dict(
        first_passage=FirstPassage(HalfSpace(np.eye(make().d)[0], 0.0, "right")))
    out = {}
    for steps in ("", "0"):
        monkeypatch.setenv(rt.GRAPH_ENV, steps)
        sim = Simulation(make(), dyn, 1 << 12, backend="cuda", seed=5, dtype="float32", **kw)
        for K in (40, 1, 7, 33):
            sim.advance(K)
        out[steps] = sim
    assert not rt._GRAPHS_FAILED, rt._GRAPHS_FAILED
    run = out[""].backend.device_run(out[""])
    assert any(ws.graphs for ws in run.workspaces.values()), "no graph was captured"
    if pair == "pspin-streamed":      # (the workspace key ends with whether it streams)
        assert [k[-1] for k in run.workspaces if k[0] == "gemm"] == [True]
    for k in out[""].state:
        np.testing.assert_array_equal(out[""].state[k], out["0"].state[k], err_msg=k)
    np.testing.assert_array_equal(out[""].diverged_step, out["0"].diverged_step)
    if kw:
        assert out[""].state["fp_crossings"].sum() > 100


RUN = """
import faulthandler, sys
faulthandler.dump_traceback_later({dump}, exit=True)   # a hung child shows where, and ends
sys.path.insert(0, {root!r})
from tests.test_cuda_backend import use_cuda_backend
use_cuda_backend()
from langevin_sim.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


class _Cli:
    """``langevin-sim ARGS`` in a child process on the cuda backend, its output in files (a
    pipe nobody reads fills up and stops the child); after `dump` seconds a child still
    running prints every thread's stack to its stderr and exits."""

    def __init__(self, tmp_path, *args, dump: int = 50):
        self.err = tmp_path / f"cli{len(list(tmp_path.glob('cli*.err')))}.err"
        with open(self.err, "w") as err:
            self.p = subprocess.Popen(
                [sys.executable, "-c", RUN.format(root=str(ROOT), dump=dump), *args], cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, text=True)
        self.pid = self.p.pid

    def ok(self, timeout: float = 60) -> None:
        """Wait for the child; fail with the end of its output unless it exits with 0."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = f"still running after {timeout} s"
        if rc != 0:
            pytest.fail(f"langevin-sim {' '.join(self.p.args[3:])}: {rc}\n"
                        + self.err.read_text()[-4000:])


def test_sigkill_then_resume_gives_the_uninterrupted_final_state(tmp_path):
    """A cuda run killed with SIGKILL mid-run resumes (on cuda) to the bits of a run that was
    never interrupted.  The run is long enough (seconds: 4096 threads, each 1e7 steps in
    turn) for the kill to land after its first flush and before its end."""
    steps = 10_000_000
    sets = ["--set", "backend=cuda", "--set", "replicas=4096", "--set", f"steps={steps}",
            "--set", "record_every=50000"]
    full, killed = tmp_path / "full.h5", tmp_path / "killed.h5"
    _Cli(tmp_path, "run", "scenarios/double_well.py", *sets, "--out", str(full)).ok()
    p = _Cli(tmp_path, "run", "scenarios/double_well.py", *sets, "--out", str(killed), "--swmr")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 40:
        time.sleep(0.5)
        try:
            with open_run(killed, swmr=True) as run:
                if run.steps_done > 0:
                    break
        except Exception:
            continue
    os.kill(p.pid, signal.SIGKILL)
    p.p.wait(timeout=60)
    with open_run(killed, swmr=True) as run:
        assert 0 < run.steps_done < steps, run.steps_done
    _Cli(tmp_path, "resume", str(killed)).ok()
    with open_run(killed) as a, open_run(full) as b:
        assert a.complete and a.steps_done == b.steps_done == steps
        np.testing.assert_array_equal(a.checkpoint()[1]["x"], b.checkpoint()[1]["x"])
        np.testing.assert_array_equal(np.asarray(a.positions[-1]), np.asarray(b.positions[-1]))


def test_run_started_on_cuda_resumes_on_numba(tmp_path):
    make, dyn = PAIRS["DoubleWell-UnderdampedLangevin"]
    ref = Simulation(make(), dyn, 64, backend="numba", seed=3).run(400, 100, out=tmp_path / "r.h5")
    Simulation(make(), dyn, 64, backend="cuda", seed=3).run(200, 100, out=tmp_path / "c.h5").close()
    from langevin_sim.simulation import resume

    resume(tmp_path / "c.h5", steps=400, backend="numba", progress=False).close()
    with open_run(tmp_path / "c.h5") as a:
        np.testing.assert_allclose(np.asarray(a.positions[:]), np.asarray(ref.positions[:]),
                                   rtol=1e-8, atol=1e-10)
    ref.close()


def test_records_copied_beside_the_next_block_equal_the_cpu_records():
    """Records every 5 steps of 2^16 replicas: each record's copy runs on the copy stream
    while the next block computes (`CudaBackend.begin_record`), and every record (positions,
    energies) equals numba's to rounding, the divergence flags exactly: no record reads a
    state the next block has begun to overwrite."""
    make, dyn = PAIRS["DoubleWell-UnderdampedLangevin"]
    runs = {b: Simulation(make(), dyn, 1 << 16, backend=b, seed=5).run(200, 5, progress=False)
            for b in ("numba", "cuda")}
    a, b = runs["cuda"], runs["numba"]
    assert len(a["energy"]) == len(b["energy"]) == 41
    np.testing.assert_allclose(np.asarray(a.positions[:]), np.asarray(b.positions[:]),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a["energy"][:], b["energy"][:], rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(a.diverged_step, b.diverged_step)
    a.close()
    b.close()


# ---------------------------------------------------------------- physics oracles

def _on_cuda(monkeypatch, module, name: str = "Simulation"):
    """Make `module`'s test bodies build their Simulations (or the class `name`, which
    takes a `backend` keyword) on the cuda backend."""
    cls = getattr(module, name)

    def on_cuda(*a, **k):
        k["backend"] = "cuda"
        return cls(*a, **k)
    monkeypatch.setattr(module, name, on_cuda)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_euler_maruyama_variance_on_cuda(dtype):
    from tests import test_physics

    test_physics.test_euler_maruyama_discrete_stationary_variance("cuda", dtype)


def test_baoab_variance_on_cuda():
    from tests import test_physics

    test_physics.test_baoab_configurational_variance_is_exact("cuda")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_obabo_variances_on_cuda(dtype):
    """OBABO's var p = m T and var x (the discrete Lyapunov equation) by the row kernel."""
    from tests import test_integrators

    test_integrators.test_obabo_kinetic_temperature_is_exact_and_position_variance_is_not(
        "cuda", dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_double_well_boltzmann_on_cuda(monkeypatch, dtype):
    from tests import test_physics

    _on_cuda(monkeypatch, test_physics)
    test_physics.test_double_well_marginal_matches_boltzmann(dtype)


def test_pspin_paramagnet_on_cuda(monkeypatch):
    from tests import test_pspin

    _on_cuda(monkeypatch, test_pspin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        test_pspin.test_equilibrium_energy_at_T2_is_paramagnetic()


def test_replica_exchange_boltzmann_on_cuda(monkeypatch):
    """The ladder's rungs on the device, swaps on the device arrays: rung 0 reaches the exact
    tilted well's P(x < 0) where a single chain is stuck (the plain chains stay on numba)."""
    from tests import test_exchange

    _on_cuda(monkeypatch, test_exchange, "ReplicaExchange")
    test_exchange.test_lowest_rung_occupancy_is_boltzmann_where_a_single_chain_is_stuck(8_000, 50)


def test_scenario_runs_unchanged_with_backend_cuda(tmp_path):
    _Cli(tmp_path, "run", "scenarios/double_well.py", "--set", "backend=cuda", "--set",
         "steps=2000", "--out", str(tmp_path / "dw.h5")).ok()
    with open_run(tmp_path / "dw.h5") as run:
        assert run.complete and run.config["backend"] == "cuda"
        print(json.dumps({"records": run.n_records}))


def test_scan_runs_unchanged_with_backend_cuda(tmp_path):
    """`langevin-sim scan ... --set backend=cuda` on the default local cluster: one worker per
    visible GPU (each declaring GPU=1), every point done on the cuda backend."""
    from langevin_sim.scan import open_scan

    out = tmp_path / "scan"
    _Cli(tmp_path, "scan", "scenarios/double_well.py", "--grid", "temperature=0.5,1",
         "--set", "backend=cuda", "--set", "steps=2000", "--out", str(out), dump=150).ok(timeout=180)
    scan = open_scan(out)
    assert list(scan.manifest["status"]) == ["done", "done"]
    for pid in scan.manifest["id"]:
        with scan.open(pid) as run:
            assert run.complete and run.config["backend"] == "cuda"
