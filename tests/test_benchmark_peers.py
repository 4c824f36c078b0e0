"""The benchmark's peers (benchmarks/peers.py) take the engine's reference step."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.dynamics import SGD, AdamW, OverdampedLangevin
from langevin_sim.dynamics.base import NoiseSource
from langevin_sim.dynamics.sgd import minibatch
from langevin_sim.potentials import (ClassifierMLP, DoubleWell, ModularArithmeticMLP, Quadratic,
                                     SphericalPSpin, TeacherStudentMLP)
from langevin_sim.scenario import load_scenario

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("benchmark_peers", BENCH / "peers.py")
peers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peers)
_spec = importlib.util.spec_from_file_location("benchmark_gpu_throughput",
                                               BENCH / "gpu_throughput.py")
gt = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)   # for dataclasses
_spec.loader.exec_module(gt)

M, T = 7, 3   # replicas, the step compared
RTOL = {"float64": 1e-12, "float32": 2e-6}


def langevin_cases():
    return {"double-well": DoubleWell(d=3, barrier=1.5, a=0.8, center=0.2, tilt=0.1),
            "quadratic": Quadratic(spectrum=np.linspace(0.5, 3.0, 5), seed=2, center=np.arange(5) * 0.1),
            "pspin": SphericalPSpin(8, 3, seed=1)}


def jax_step(problem):
    jax = peers.jax_module()
    if jax is None:
        pytest.skip("jax is not installed")
    return jax.jit(lambda s, r, data: problem.step(jax.numpy, s, r, data)), jax


def check(got, want, dtype, what):
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, want {dtype}"
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=what)


def check_langevin(problem, pot, dyn, dtype, what):
    """problem.step (NumPy and jitted JAX) from a state of M replicas is dyn's reference step."""
    x = np.random.default_rng(5).standard_normal((M, pot.d)) + 0.3
    x = (pot.retract(x) if pot.constrained else x).astype(dtype)
    noise = NoiseSource(11, np.arange(M))
    z = noise.normals(T, pot.d, dtype=np.dtype(dtype))
    want = dyn.reference_step(pot, {"x": x}, T, noise)["x"]
    assert np.abs(want - x).max() > 0.02    # the step moves: the comparison can fail
    check(problem.step(np, x, z, problem.data), want, dtype, f"numpy {what}")
    step, jax = jax_step(problem)
    check(step(x, z, tuple(jax.numpy.asarray(a) for a in problem.data)), want, dtype, f"jax {what}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(langevin_cases()))
def test_langevin_peer_step_is_the_reference_step(name, dtype):
    pot = langevin_cases()[name]
    dyn = OverdampedLangevin(0.05, 0.7)
    check_langevin(peers.Langevin(pot, dyn, dtype), pot, dyn, dtype, name)


def sgd_cases():
    """Squared-error and cross-entropy nets (40 training samples: 5 batches of 8)."""
    inputs = np.random.default_rng(3).standard_normal((60, 5))
    labels = np.arange(60) % 3
    return {"teacher-student": TeacherStudentMLP(n=40, d_in=3, hidden=4, teacher_hidden=2, seed=1),
            "classifier": ClassifierMLP("toy", hidden=4, inputs=inputs[:40], labels=labels[:40],
                                        test_inputs=inputs[40:], test_labels=labels[40:])}


def check_sgd(problem, pot, dyn, dtype, what):
    """problem.step (NumPy and jitted JAX) from a state (x, v) of M replicas on the reference's
    batches of step T is dyn's reference step."""
    r = np.random.default_rng(6)
    x, v = (r.standard_normal((M, pot.d)).astype(dtype) for _ in range(2))
    noise = NoiseSource(11, np.arange(M))
    want = dyn.reference_step(pot, {"x": x, "v": v}, T, noise)
    lr, mu = dyn.lr.start, dyn.momentum
    assert np.abs(want["x"] - (x - lr * mu * v)).max() > 1e-3   # the gradient counts
    idx = minibatch(noise, T, dyn.batch_size, pot.n_samples, "epoch")
    state = problem.init(x)[0], problem.init(v)[0]
    out = problem.step(np, state, idx, problem.data)
    check(problem.positions(out), want["x"], dtype, f"numpy x {what}")
    check(problem.positions((out[1], None)), want["v"], dtype, f"numpy v {what}")
    step, jax = jax_step(problem)
    out = step(state, idx, tuple(jax.numpy.asarray(a) for a in problem.data))
    check(problem.positions(out), want["x"], dtype, f"jax x {what}")
    check(problem.positions((out[1], None)), want["v"], dtype, f"jax v {what}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(sgd_cases()))
def test_sgd_peer_step_is_the_reference_step(name, dtype):
    pot = sgd_cases()[name]
    dyn = SGD(0.05, 8, momentum=0.9)
    check_sgd(peers.MLPSGD(pot, dyn, dtype), pot, dyn, dtype, name)


def check_adamw(problem, pot, dyn, dtype, what):
    """problem.step (NumPy and jitted JAX, the step count traced) at step T from a state
    (x, m, s) of M replicas is dyn's reference step: x, m and s."""
    r = np.random.default_rng(7)
    x = r.standard_normal((M, pot.d)).astype(dtype)
    m = (0.1 * r.standard_normal((M, pot.d))).astype(dtype)
    s = (0.01 + 0.1 * r.random((M, pot.d))).astype(dtype)    # sqrt(s) >> eps: u ~ m / sqrt(s)
    want = dyn.reference_step(pot, {"x": x, "m": m, "s": s}, T, NoiseSource(11, np.arange(M)))
    assert np.abs(want["m"] - dyn.beta1 * m).max() > 1e-3     # the gradient counts
    assert np.abs(want["x"] - x).max() > 0.01                 # the step moves
    state = tuple(problem.init(a)[0] for a in (x, m, s))

    def compare(out, name):
        for part, key in zip(out, "xms"):
            check(problem.positions((part,)), want[key], dtype, f"{name} {key} {what}")
    compare(problem.step(np, state, T, problem.data), "numpy")
    step, jax = jax_step(problem)
    compare(step(state, T, tuple(jax.numpy.asarray(a) for a in problem.data)), "jax")


def adamw_cases():
    """W5's net (one-hot quadratic, cross-entropy) and a tanh one, tiny (p = 5: 15 of 25
    training pairs, hidden 4)."""
    return {act: ModularArithmeticMLP(p=5, hidden=4, train_fraction=0.6, activation=act, seed=1)
            for act in ("quadratic", "tanh")}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(adamw_cases()))
def test_adamw_peer_step_is_the_reference_step(name, dtype):
    pot = adamw_cases()[name]
    dyn = AdamW(lr=0.05, beta1=0.9, beta2=0.98, weight_decay=1.0)
    check_adamw(peers.MLPAdamW(pot, dyn, dtype), pot, dyn, dtype, name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_w5_peer_is_the_grokking_scenarios_step(dtype):
    """throughput.py's W5 (scenarios/grokking.py's net and AdamW, its defaults) gets the AdamW
    peer through `problem_of`, and its step is the reference step at that size (3 replicas)."""
    from threadpoolctl import threadpool_limits
    mod = load_scenario(BENCH.parent / "scenarios" / "grokking.py")
    with threadpool_limits(limits=None):     # build() limits BLAS for good
        sim = mod.build(mod.Params(replicas=3, backend="numpy", dtype=dtype))
    problem = peers.problem_of(sim)
    assert isinstance(problem, peers.MLPAdamW) and problem.activation == "quadratic"
    check_adamw(problem, sim.potential, sim.dynamics, dtype, "W5")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["W1", "W2", "W3", "W4"])
def test_gpu_benchmark_peers_step_is_the_reference_step(name, dtype):
    """The JAX peers of gpu_throughput.py's workloads (W1-W4, their potentials, dynamics and
    step sizes; tiny sizes) are `JaxScan`s of `problem_of` their Simulation: that problem's
    step is the engine's reference step (the Simulation's cuda backend is not used)."""
    sim = gt.workloads(tiny=True)[name].build(dtype, lambda: None)
    pot, dyn = sim.potential, sim.dynamics
    check_ = check_sgd if isinstance(dyn, SGD) else check_langevin
    check_(peers.problem_of(sim), pot, dyn, dtype, name)


@pytest.mark.parametrize("runner", ["NumpyLoop", "JaxScan"])
def test_runners_keep_dtype_and_move(runner):
    if runner == "JaxScan" and peers.jax_module() is None:
        pytest.skip("jax is not installed")
    sims = [Simulation(SphericalPSpin(8, 3, seed=1), OverdampedLangevin(0.05, 0.7), 5,
                       backend="numpy", dtype="float32"),
            Simulation(TeacherStudentMLP(n=40, d_in=3, hidden=4, teacher_hidden=2, seed=1),
                       SGD(0.05, 8, momentum=0.9), 5, backend="numpy", dtype="float32"),
            Simulation(adamw_cases()["quadratic"], AdamW(lr=0.05), 5, backend="numpy",
                       dtype="float32")]
    for sim in sims[1:] if runner == "JaxScan" else sims:   # JAX compiles cost ~1 s each
        peer = getattr(peers, runner)(sim, seed=3)
        peer.advance(10)     # two epochs of 5 batches for SGD
        x = peer.positions
        assert x.dtype == np.float32 and x.shape == sim.state["x"].shape and np.isfinite(x).all()
        assert np.abs(x - sim.state["x"]).max() > 1e-3
        if sim.potential.constrained:
            np.testing.assert_allclose((x.astype(np.float64) ** 2).sum(axis=1), 8, rtol=1e-5)


@pytest.mark.parametrize("case", ["langevin", "sgd", "adamw"])
def test_jax_scan_advances_by_the_problems_steps(case):
    """JaxScan.advance is the problem's step repeated, on its own normals (Langevin), on
    per-epoch permutations of the samples cut into batches (SGD, as the engine's): each
    replica's epoch takes every sample once, or at the step count (AdamW's bias corrections:
    counted on across advance calls)."""
    if peers.jax_module() is None:
        pytest.skip("jax is not installed")
    if case == "langevin":
        sim = Simulation(SphericalPSpin(8, 3, seed=1), OverdampedLangevin(0.05, 0.7), 5,
                         backend="numpy", dtype="float64")
    elif case == "sgd":
        sim = Simulation(TeacherStudentMLP(n=40, d_in=3, hidden=4, teacher_hidden=2, seed=1),
                         SGD(0.05, 8, momentum=0.9), 5, backend="numpy", dtype="float64")
    else:
        sim = Simulation(adamw_cases()["quadratic"], AdamW(lr=0.05), 5, backend="numpy",
                         dtype="float64")
    peer = peers.JaxScan(sim, seed=3, precision="highest")
    pr, steps = peer.problem, 2 * peer.multiple if case == "sgd" else 3
    for n in (steps,) if case == "sgd" else (1, steps - 1):
        peer.advance(n)
    state = pr.init(sim.state["x"])
    for t in range(steps):
        if case == "langevin":
            state = pr.step(np, state, np.asarray(peer.normals(peer.key, t, state)), pr.data)
            continue
        if case == "adamw":
            state = pr.step(np, state, t, pr.data)
            continue
        epoch, j = divmod(t, pr.per_epoch)
        idx = np.asarray(peer.batches(peer.key, epoch, 5))          # (batches, M, B)
        np.testing.assert_array_equal(np.sort(np.swapaxes(idx, 0, 1).reshape(5, -1), axis=1),
                                      np.tile(np.arange(pr.n), (5, 1)))
        state = pr.step(np, state, idx[j], pr.data)
    assert np.abs(pr.positions(state) - sim.state["x"]).max() > 1e-3
    np.testing.assert_allclose(peer.positions, pr.positions(state), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["W1", "W4"])
def test_gpu_benchmark_times_the_jax_peer_by_its_units(name):
    """gpu_throughput's JAX runs advance the peer by whole units (SGD: epochs; run(1) of a
    lone step would be refused) and count the chain-steps of each."""
    if peers.jax_module() is None:
        pytest.skip("jax is not installed")
    sim = gt.workloads(tiny=True)[name].build("float32", lambda: None)
    run, chain_steps = gt.jax_run(sim, gt.JAX_PRECISION)
    run(1)
    per_epoch = sim.potential.n_samples // sim.dynamics.batch_size if name == "W4" else 1
    assert per_epoch > 1 or name == "W1"
    assert chain_steps == sim.n_replicas * per_epoch


def test_numpy_loop_draws_its_normals_into_one_buffer():
    """The NumPy peer's Langevin noise: default_rng normals of the state's dtype written into
    one reused buffer (``out=``, as a user keeps a hot loop free of allocations), the same
    normals a fresh array per step would hold."""
    sim = Simulation(DoubleWell(d=3), OverdampedLangevin(0.05, 0.7), 4, backend="numpy",
                     dtype="float32")
    peer = peers.NumpyLoop(sim, seed=3)
    rng, calls = peer.rng, []

    class Recording:
        def standard_normal(self, *args, **kw):
            calls.append(kw.get("out"))
            return rng.standard_normal(*args, **kw)
    peer.rng = Recording()
    peer.advance(3)
    assert len(calls) == 3 and calls[0] is not None and all(c is calls[0] for c in calls)
    fresh = np.random.default_rng(3)
    x = np.array(sim.state["x"])
    for _ in range(3):
        x = peer.problem.step(np, x, fresh.standard_normal(x.shape, np.float32), peer.problem.data)
    np.testing.assert_array_equal(peer.positions, x)
