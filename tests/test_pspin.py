"""Spherical p-spin glass: exact algebra, normalization, constraint, fused kernel, physics."""
import itertools
import math
import os
import sys

import h5py
import numba
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin, Schedule
from langevin_sim.errors import ConfigError, RunFileError
from langevin_sim.potentials import Potential, SphericalPSpin

from .conftest import (assert_split_matches, assert_within_se, both_backends,
                       early_result, starts_early)

CONVENTIONS = ["crisanti-sommers", "abc"]


def sphere_points(N, M, seed):
    z = np.random.default_rng(seed).standard_normal((M, N))
    return z * math.sqrt(N) / np.linalg.norm(z, axis=1, keepdims=True)


def brute_energy(J, s):
    """-sum over all ordered index tuples of J_{i1..ip} s_i1 ... s_ip (Python loop)."""
    N, p = J.shape[0], J.ndim
    return -sum(J[idx] * math.prod(s[i] for i in idx)
                for idx in itertools.product(range(N), repeat=p))


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("p,N", [(2, 12), (3, 12), (4, 7)])
def test_energy_equals_brute_force_sum(p, N, convention):
    pot = SphericalPSpin(N, p, convention=convention, seed=3)
    x = sphere_points(N, 3, 1)
    brute = [brute_energy(pot.J, s) for s in x]
    np.testing.assert_allclose(pot.energy(x), brute, rtol=1e-12, atol=1e-12)
    # the tensor is symmetric and the glass part has no planted contribution
    assert np.allclose(pot.J, pot.J.transpose(np.roll(np.arange(p), 1)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_planted_term_is_minus_N_planted_m_to_the_p(p):
    N, lam = 9, 1.7
    glass = SphericalPSpin(N, p, seed=4)
    planted = SphericalPSpin(N, p, seed=4, planted=lam)
    x = sphere_points(N, 5, 2)
    m = x @ planted.spike / math.sqrt(N)
    np.testing.assert_allclose(planted.energy(x) - glass.energy(x), -N * lam * m ** p, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(planted.observables(x)["overlap"], m, rtol=1e-14)
    assert abs(np.linalg.norm(planted.spike) - 1.0) < 1e-14
    x_u = planted.spike[None, :] * math.sqrt(N)          # on the spike: m = 1
    np.testing.assert_allclose(planted.energy(x_u) - glass.energy(x_u), -N * lam, rtol=1e-12)


def test_abc_couplings_are_sqrt2_times_crisanti_sommers():
    # same G, scale c^2 = 1/N^(p-1) vs 1/(2 N^(p-1)): an exact check of the convention factor
    for p in (2, 3, 4):
        cs = SphericalPSpin(6, p, "crisanti-sommers", seed=8)
        abc = SphericalPSpin(6, p, "abc", seed=8)
        np.testing.assert_allclose(abc.J, math.sqrt(2.0) * cs.J, rtol=1e-14)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_covariance_over_coupling_seeds(p):
    """E[H(s)^2] = N/2 and E[H(s)H(s')] = N q^p / 2 (Crisanti-Sommers), exact at N = 5.

    n = 1500 independent instances; the sample variance has SE sigma^2 sqrt(2/(n-1)) and the
    sample covariance SE sqrt((sigma^4 + c^2)/(n-1)) (Gaussian H); tolerance 4 SE (14.6% of
    N/2 for the variance), so a factor 2 in the normalization fails."""
    N, n, q = 5, 1500, 0.6
    s = np.zeros(N)
    s[0] = math.sqrt(N)
    t = np.zeros(N)
    t[0], t[1] = q * math.sqrt(N), math.sqrt(1 - q * q) * math.sqrt(N)   # s.t/N = q
    H = np.array([SphericalPSpin(N, p, seed=k).energy(np.stack([s, t])) for k in range(n)])
    var, cov = np.mean(H[:, 0] ** 2), np.mean(H[:, 0] * H[:, 1])       # E[H] = 0 exactly
    v0, c0 = N / 2, N * q ** p / 2
    assert_within_se(var, v0, v0 * math.sqrt(2 / (n - 1)), what=f"Var H(s), p={p}")
    assert_within_se(cov, c0, math.sqrt((v0 ** 2 + c0 ** 2) / (n - 1)),
                     what=f"Cov H(s)H(s'), p={p}")


@pytest.mark.parametrize("p", [2, 3, 4])
def test_gradient_matches_central_differences(p):
    N, h = 8, 1e-5
    pot = SphericalPSpin(N, p, seed=5, planted=0.8)
    x = np.random.default_rng(p).standard_normal((3, N)) * 1.3     # ambient: off the sphere too
    fd = np.empty_like(x)
    for i in range(N):
        e = np.zeros(N)
        e[i] = h
        fd[:, i] = (pot.energy(x + e) - pot.energy(x - e)) / (2 * h)
    g = pot.grad(x)
    # central-difference error h^2/6 |H'''| ~ 1e-10 against gradients of order 1-10
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_hessian_matches_gradient_differences_and_hvp(p):
    N, h = 8, 1e-5
    pot = SphericalPSpin(N, p, seed=6, planted=0.5)
    rng = np.random.default_rng(10 + p)
    x = rng.standard_normal((3, N))
    Hs = pot.hessian(x)
    for i in range(N):
        e = np.zeros(N)
        e[i] = h
        col = (pot.grad(x + e) - pot.grad(x - e)) / (2 * h)
        np.testing.assert_allclose(Hs[:, :, i], col, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(Hs, Hs.transpose(0, 2, 1), atol=1e-12)
    v = rng.standard_normal((3, N))
    np.testing.assert_allclose(pot.hvp(x, v), np.einsum("mij,mj->mi", Hs, v),
                               rtol=1e-12, atol=1e-12)
    # Euler's identity for a degree-p form: H(x) x = (p-1) grad H(x)
    np.testing.assert_allclose(np.einsum("mij,mj->mi", Hs, x), (p - 1) * pot.grad(x), atol=1e-11)


def test_riemannian_hessian_second_derivative_along_geodesics():
    """d^2/dt^2 H(gamma(t)) at t = 0 equals u^T Hess_R u for the great circle gamma through x
    with unit tangent velocity u (radius sqrt(N)): the definition of the Riemannian Hessian."""
    N, p, h = 10, 3, 1e-4
    pot = SphericalPSpin(N, p, seed=7)
    x = sphere_points(N, 4, 3)
    u = pot.project(x, np.random.default_rng(4).standard_normal((4, N)))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = math.sqrt(N)

    def gamma(t):
        return x * math.cos(t / r) + u * r * math.sin(t / r)

    fd = (pot.energy(gamma(h)) - 2 * pot.energy(x) + pot.energy(gamma(-h))) / h ** 2
    R = pot.riemannian_hessian(x)
    np.testing.assert_allclose(np.einsum("mi,mij,mj->m", u, R, u), fd, rtol=1e-5, atol=1e-5)
    v = np.random.default_rng(5).standard_normal((4, N))
    np.testing.assert_allclose(pot.riemannian_hvp(x, v), np.einsum("mij,mj->mi", R, v), atol=1e-12)


def test_default_init_is_on_the_sphere_and_project_retract():
    N = 11
    pot = SphericalPSpin(N, 3, seed=1)
    sim = Simulation(pot, OverdampedLangevin(0.01, 1.0), 50, backend="numpy", seed=3)
    x = sim.state["x"]
    np.testing.assert_allclose(np.sum(x * x, axis=1), N, rtol=1e-13)
    v = np.random.default_rng(0).standard_normal(x.shape)
    np.testing.assert_allclose(np.sum(pot.project(x, v) * x, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(pot.retract(3.0 * x) ** 2, axis=1), N, rtol=1e-13)
    assert pot.constrained
    obs = pot.observables(x)
    np.testing.assert_allclose(obs["energy_per_spin"], pot.energy(x) / N)
    assert "overlap" not in obs


def test_instance_round_trips_through_the_run_file():
    pot = SphericalPSpin(6, 4, convention="abc", seed=9, planted=0.3)
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as f:
        pot.to_hdf5(f.create_group("potential"))
        back = Potential.from_hdf5(f["potential"])
    assert isinstance(back, SphericalPSpin) and back.params() == pot.params()
    x = sphere_points(6, 4, 8)
    np.testing.assert_array_equal(back.energy(x), pot.energy(x))
    np.testing.assert_array_equal(back.J, pot.J)


def test_large_coupling_tensors_come_from_the_compiled_generator_bit_for_bit(monkeypatch):
    """Beyond ROW_CHUNK_ENTRIES normals the couplings come from `stream_normals_into` (numba,
    parallel pieces): the same bits as the NumPy reference, at any start (not a multiple of
    4) and across pieces; forcing the compiled path on a small tensor changes nothing."""
    from langevin_sim import rng
    from langevin_sim.kernels.common import PIECE, stream_normals_into
    from langevin_sim.potentials import pspin

    k0, k1 = rng.key_of(11)
    for start, n in ((0, 2 * PIECE + 5), (3, PIECE - 1), (PIECE + 2, 7)):
        out = np.full(n, np.nan)
        stream_normals_into(k0, k1, np.uint64(rng.DATA), np.uint64(0), start, out)
        np.testing.assert_array_equal(out, rng.stream_normals(11, rng.DATA, [0], start, n)[0])
    reference = pspin.coupling_tensor(20, 3, 4, 0.1)
    monkeypatch.setattr(pspin, "ROW_CHUNK_ENTRIES", 100)
    np.testing.assert_array_equal(pspin.coupling_tensor(20, 3, 4, 0.1), reference)


THREADS_DRAWING = """
import threading, numpy as np
from langevin_sim.potentials import pspin
pspin.ROW_CHUNK_ENTRIES = 100          # the compiled, parallel generator
got = {}
def draw(seed):
    got[seed] = pspin.coupling_tensor(24, 3, seed % 2, 0.1)
threads = [threading.Thread(target=draw, args=(s,)) for s in range(6)]
for t in threads: t.start()
for t in threads: t.join()
import numba
assert numba.threading_layer() == "workqueue", numba.threading_layer()
assert all(np.array_equal(got[s], got[s % 2]) for s in got), "differ"
print("ok")
"""


def workqueue_threads():
    """`starts_early` spec: six threads drawing p-spin couplings at once by the parallel
    generator, under Numba's workqueue threading layer."""
    return ([sys.executable, "-c", THREADS_DRAWING],
            dict(os.environ, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="2"))


@starts_early(workqueue_threads, timeout=300)
def test_threads_drawing_couplings_at_once_under_the_workqueue_layer():
    """Instances built in several threads at once (a scan's points on a Dask worker with
    several threads) draw their couplings one thread at a time: Numba's workqueue layer, left
    where neither TBB nor OpenMP loads, aborts the process at a concurrent parallel launch.
    (The other process starts with the session.)"""
    r = early_result(test_threads_drawing_couplings_at_once_under_the_workqueue_layer)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_run_file_keeps_digests_of_seed_drawn_couplings_and_custom_ones_whole(tmp_path):
    """Couplings and spike drawn from the seed are not stored, their SHA-256 digests are and
    are checked at the rebuild; couplings passed in are stored whole; a file whose digest the
    rebuilt tensor does not match (another generator) is refused naming the version."""
    pot = SphericalPSpin(24, 3, seed=5, planted=0.2)
    custom = SphericalPSpin(24, 3, seed=5, J=-pot.J)
    x = sphere_points(24, 3, 4)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs["package_version"] = "0.0-test"
        pot.to_hdf5(f.create_group("drawn"))
        custom.to_hdf5(f.create_group("custom"))
    with h5py.File(tmp_path / "a.h5", "r+") as f:
        assert set(f["drawn"]) == set() and set(f["custom"]) == {"J"}
        assert {k for k in f["drawn"].attrs if k.startswith("sha256:")} == {"sha256:J",
                                                                           "sha256:spike"}
        for name, orig in (("drawn", pot), ("custom", custom)):
            back = Potential.from_hdf5(f[name])
            np.testing.assert_array_equal(back.J, orig.J)
            np.testing.assert_array_equal(back.spike, orig.spike)
            np.testing.assert_array_equal(back.energy(x), orig.energy(x))
        assert back.regenerated() == ("spike",) and custom.regenerated() == ("spike",)
        f["drawn"].attrs["sha256:J"] = "0" * 64
        with pytest.raises(RunFileError, match=r"'J' is not stored .* differs .*0\.0-test"):
            Potential.from_hdf5(f["drawn"])


def test_a_pspin_run_file_holds_no_couplings_and_resumes(tmp_path):
    """A run of a seed-drawn instance (N = 64: 2 MiB of couplings) writes no couplings (the
    same run of the same couplings passed in writes them); its potential rebuilds bit for bit
    and the run resumes to the uninterrupted run's state."""
    from langevin_sim import open_run, resume

    def sim(J=None):
        return Simulation(SphericalPSpin(64, 3, seed=2, J=J), OverdampedLangevin(1e-2, 0.5), 4,
                          seed=1, backend="numpy")

    J = sim().potential.J
    for name, s, steps in (("whole", sim(), 40), ("part", sim(), 20), ("given", sim(J), 40)):
        s.run(steps, 10, out=tmp_path / f"{name}.h5", progress=False).close()
    size = {name: (tmp_path / f"{name}.h5").stat().st_size for name in ("whole", "given")}
    assert size["given"] - size["whole"] >= J.nbytes, size
    resume(tmp_path / "part.h5", 40, progress=False).close()
    with open_run(tmp_path / "whole.h5") as a, open_run(tmp_path / "part.h5") as b:
        np.testing.assert_array_equal(b.potential.J, sim().potential.J)
        np.testing.assert_array_equal(b.positions[:], a.positions[:])


@pytest.mark.parametrize("kwargs,match", [
    (dict(N=5, p=5), "p = 2, 3, 4"),
    (dict(N=1, p=3), "N >= 2"),
    (dict(N=5, p=3, convention="sk"), "unknown convention"),
    (dict(N=5, p=2, J=np.zeros((4, 4))), "shape"),
    (dict(N=3, p=2, J=np.arange(9.0).reshape(3, 3)), "not symmetric"),
    (dict(N=5, p=3, spike=np.ones(4)), "spike"),
    (dict(N=600, p=3), "entries"),
    (dict(N=5, p=3, planted=float("nan")), "planted"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SphericalPSpin(**kwargs)


def test_analytic_landmarks():
    cs3, abc3, cs2 = SphericalPSpin(4, 3), SphericalPSpin(4, 3, "abc"), SphericalPSpin(4, 2)
    assert cs3.threshold_energy() == pytest.approx(-math.sqrt(4 / 3))
    assert abc3.threshold_energy() == pytest.approx(-2 * math.sqrt(2 / 3))
    assert cs3.dynamical_temperature() == pytest.approx(math.sqrt(3 / 8))
    assert cs2.dynamical_temperature() == pytest.approx(1.0)
    assert cs3.paramagnetic_energy(2.0) == -0.25 and abc3.paramagnetic_energy(2.0) == -0.5


# ------------------------------------------------------------------ fused kernel vs reference

PARITY = {
    "p2": (SphericalPSpin(13, 2, seed=1), OverdampedLangevin(0.02, 0.4)),
    "p3": (SphericalPSpin(13, 3, seed=2),
           OverdampedLangevin(0.01, Schedule("linear", 0.8, 0.3, 900))),
    "p3-planted": (SphericalPSpin(11, 3, seed=3, planted=1.2), OverdampedLangevin(0.01, 0.5)),
    "p4": (SphericalPSpin(9, 4, "abc", seed=4),
           OverdampedLangevin(Schedule("cosine", 0.01, 0.002, 800), 0.5)),
}


@pytest.mark.parametrize("name", sorted(PARITY))
def test_numba_matches_numpy_float64(name):
    pot, dyn = PARITY[name]
    out = {b: sim.state["x"] for b, sim in
           both_backends(pot, dyn, 71, 400, 600, seed=12, first_replica=3).items()}
    # 1000 steps; the shared noise keeps trajectories together: observed differences ~1e-14
    np.testing.assert_allclose(out["numba"], out["numpy"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["p3", "p4"])
def test_numba_matches_numpy_float32(name):
    pot, dyn = PARITY[name]
    out = {b: sim.state["x"] for b, sim in both_backends(pot, dyn, 37, 1000, seed=5, dtype="float32").items()}
    # float32 rounding (6e-8 per operation) accumulated over 1000 steps: observed ~5e-6
    np.testing.assert_allclose(out["numba"], out["numpy"], rtol=0, atol=2e-4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("p,N", [(2, 7), (3, 9), (4, 6)])
def test_packed_gradient_equals_the_full_tensor_contraction(p, N, dtype):
    """The kernel's gradient: one GEMM over the C(N+p-2, p-1) multisets of p-1 indices, each
    weighted by its number of orderings, equals x^{(x)(p-1)} @ (-p J_eff) (planted included)
    to the dtype's rounding."""
    from langevin_sim.kernels import pspin as kp

    pot = SphericalPSpin(N, p, seed=p, planted=0.7)
    x = sphere_points(N, 5, p).astype(dtype)
    CT, runs, starts, offsets = kp.packed_gradient(pot, dtype)
    assert CT.shape == (N, math.comb(N + p - 2, p - 1)) and CT.dtype == np.dtype(dtype)
    Y = np.full((8, CT.shape[1]), np.nan, dtype)
    kp.packed_rows(x, 0, 5, runs, starts, offsets, Y)
    assert (Y[5:] == 0).all()
    G = np.full((8, N), np.nan, dtype)
    kp.dot_rows(CT, Y, G, 0, N)
    g = G[:5]
    ref = pot.grad(x.astype(np.float64))
    tol = 1e-13 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(g, ref, rtol=0, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("name", ["p2", "p3-planted", "p4"])
def test_numba_partition_and_chunking_invariance(name):
    """Several GEMM blocks (M = 150 on the thread pool), split over first_replica and advanced
    in uneven calls: the bits of one call over all replicas."""
    pot, dyn = PARITY[name]
    whole = Simulation(pot, dyn, 150, backend="numba", seed=7)
    whole.advance(60)
    parts = [Simulation(pot, dyn, n, backend="numba", seed=7, first_replica=r0)
             for r0, n in ((0, 41), (41, 109))]
    for part in parts:
        for k in (1, 37, 22):
            part.advance(k)
    np.testing.assert_array_equal(np.concatenate([s.state["x"] for s in parts]), whole.state["x"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numba_freezes_like_numpy(dtype):
    """With a bound below the largest coordinate on the sphere, replicas cross it at different
    steps: the kernel flags the same steps as the reference and keeps the frozen states."""
    pot, dyn = SphericalPSpin(6, 3, seed=2), OverdampedLangevin(0.05, 1.0)
    out = both_backends(pot, dyn, 40, 200, seed=4, divergence_bound=1.9, dtype=dtype)
    (dn, xn), (db, xb) = ((out[b].diverged_step, out[b].state["x"]) for b in ("numpy", "numba"))
    assert (dn >= 0).sum() > 10 and len(set(dn[dn >= 0])) > 5
    np.testing.assert_array_equal(db, dn)
    np.testing.assert_allclose(xb, xn, rtol=0, atol=1e-12 if dtype == "float64" else 1e-5)


def test_constraint_holds_after_1e5_steps_numba():
    N = 16
    pot = SphericalPSpin(N, 3, seed=13)
    sim = Simulation(pot, OverdampedLangevin(0.02, 0.7), 4, backend="numba", seed=2)
    sim.advance(100_000)
    x = sim.state["x"]
    assert np.all(sim.diverged_step < 0)
    np.testing.assert_allclose(np.sum(x * x, axis=1) / N, 1.0, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_p2_gradient_descent_reaches_the_ground_state(backend):
    """T = 0 on p = 2: H = -s^T J s, min on |s|^2 = N is -N lambda_max(J), reached from a
    random start along the top eigenvector at rate ~2 eta (lambda_1 - lambda_2) per step."""
    N = 40
    pot = SphericalPSpin(N, 2, seed=21)
    evals, evecs = np.linalg.eigh(pot.J)
    gap = evals[-1] - evals[-2]
    eta = 0.1
    steps = int(40 / (2 * eta * gap)) + 1    # off-top components shrink by >= e^-33 (ratio per
    # step (1 + 2 eta lambda_2) / (1 + 2 eta lambda_1), lambda_1 ~ 1); energy excess by e^-66
    sim = Simulation(pot, OverdampedLangevin(eta, 0.0), 4, backend=backend, seed=1)
    sim.advance(steps)
    x = sim.state["x"]
    np.testing.assert_allclose(pot.energy(x) / N, -evals[-1], rtol=1e-10)
    np.testing.assert_allclose(np.abs(x @ evecs[:, -1]) / math.sqrt(N), 1.0, atol=1e-8)


@pytest.mark.slow
def test_equilibrium_energy_at_T2_is_paramagnetic():
    """<H>/N = -1/(2T) = -0.25 for Crisanti-Sommers p = 3 at T = 2 (paramagnet), N = 200.

    Tolerance = 4 SE + allowances for three biases, each derived here:
    - finite N: Gaussian integration by parts gives exactly, at every N,
      E_J <H>/N = -(1/2T) (1 - E_J <q_12^p>), q_12 the overlap of two replicas; at high T
      E<q^3> ~ 3/(T^2 N^2) = 2e-5, a bias of 5e-6 (negligible);
    - one coupling sample: std_J(<H>_J / N) ~ (1/2T) sqrt(12 / N^3) = 3e-4; allow 3 of them;
    - step size: to first order in H (high T), Euler-Maruyama + projection + retraction
      gives <H>/N = -(3 eta / 2) / ((1 + 2 eta T)^{3/2} - 1) ~ -(1/2T)(1 - eta T / 2): at
      eta = 0.01 a bias of +2.5e-3; allowed in full.
    SE from the spread of the 16 independent replica means (burn-in 300 steps = 6 relaxation
    times of the energy, whose rate is ~ p T = 6 per unit time; 1000 measured steps each).
    Total ~ 0.01 = 4% of 0.25: a factor 2 (or a wrong convention: -0.5) fails by far.
    """
    N, T, eta, M = 200, 2.0, 0.01, 16
    pot = SphericalPSpin(N, 3, seed=11)
    sim = Simulation(pot, OverdampedLangevin(eta, T), M, backend="numba", seed=1)
    sim.advance(300)
    e = []
    for _ in range(50):
        sim.advance(20)
        e.append(pot.energy(sim.state["x"]) / N)
    means = np.mean(e, axis=0)
    se = means.std(ddof=1) / math.sqrt(M)
    exact = pot.paramagnetic_energy(T)
    bias = 5e-6 + 3 * 3e-4 + abs(-(1.5 * eta) / ((1 + 2 * eta * T) ** 1.5 - 1) - exact)
    assert abs(means.mean() - exact) <= 4 * se + bias, (
        f"stochastic test: <H>/N = {means.mean():.5f} +- {se:.5f} vs {exact} "
        f"(allowed bias {bias:.4f})")


@pytest.fixture
def split_rows(monkeypatch):
    """`_overdamped_pspin` on small instances as on W3b (few replicas, many spins): each
    step's GEMM split by rows of CT across the threads, in chunks of 3 rows."""
    from langevin_sim.kernels import pspin as kp

    if numba.get_num_threads() < 2:
        pytest.skip("the row split needs two threads")
    monkeypatch.setattr(kp, "ROW_CHUNK", 3)
    return kp


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["p3", "p4"])
def test_rows_split_matches_numpy_and_is_chunk_and_partition_invariant(split_rows, name, dtype):
    """The row-split path against the reference (to the dtype's rounding), the bits of one
    call under uneven calls, a replica split to rounding (p-spin's products span the batch)."""
    pot, dyn = PARITY[name]
    assert split_rows.rows_split(37, pot.N, pot.p) and not split_rows.rows_split(150, pot.N, pot.p)
    out = both_backends(pot, dyn, 37, 400, 600, seed=12, first_replica=3, dtype=dtype)
    np.testing.assert_allclose(out["numba"].state["x"], out["numpy"].state["x"], rtol=0,
                               atol=1e-10 if dtype == "float64" else 2e-4)
    whole = Simulation(pot, dyn, 37, backend="numba", seed=12, first_replica=3, dtype=dtype)
    whole.advance(1000)
    np.testing.assert_array_equal(whole.state["x"], out["numba"].state["x"])
    parts = [Simulation(pot, dyn, n, backend="numba", seed=12, first_replica=r0, dtype=dtype)
             for r0, n in ((3, 20), (23, 17))]
    for part in parts:
        part.advance(1000)
    assert_split_matches(parts, whole, pot, 1e-12 if dtype == "float64" else 1e-5, name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rows_split_freezes_like_numpy(split_rows, dtype):
    """test_numba_freezes_like_numpy through the row-split path."""
    assert split_rows.rows_split(40, 6, 3)
    test_numba_freezes_like_numpy(dtype)
