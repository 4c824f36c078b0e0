"""Sharpness observables against dense eigendecompositions."""
import math

import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import DoubleWell, Quadratic, SphericalPSpin
from langevin_sim.potentials.sharpness import (SharpnessObserver, exact_hessian_trace,
                                               hessian_trace, sharpness, top_eigenvalue)

from .conftest import assert_within_se


def sphere_points(N, M, seed):
    z = np.random.default_rng(seed).standard_normal((M, N))
    return z * math.sqrt(N) / np.linalg.norm(z, axis=1, keepdims=True)


def tangent_spectra(pot, x):
    """Eigenvalues (M, N-1) of the Riemannian Hessian on the tangent space (dense)."""
    R = pot.riemannian_hessian(x)
    out = []
    for m in range(x.shape[0]):
        u = x[m] / np.linalg.norm(x[m])
        B = np.linalg.svd(np.eye(x.shape[1]) - np.outer(u, u))[0][:, :-1]   # tangent basis
        out.append(np.linalg.eigvalsh(B.T @ R[m] @ B))
    return np.array(out)


def test_top_eigenvalue_quadratic_exact_and_gapped():
    d = 30
    spec = np.random.default_rng(0).uniform(0.1, 5.0, d)
    q = Quadratic(spectrum=spec, seed=1)
    x = np.zeros((3, d))
    np.testing.assert_allclose(top_eigenvalue(q, x, iters=d), spec.max(), rtol=1e-11)
    gapped = Quadratic(spectrum=np.r_[np.linspace(0.1, 1.0, d - 1), 10.0], seed=2)
    # Krylov error ~ (Chebyshev)^-2 at gap ratio 9/0.9: below 1e-10 after 12 products
    np.testing.assert_allclose(top_eigenvalue(gapped, x, iters=12), 10.0, rtol=1e-10)


@pytest.mark.parametrize("p,N", [(3, 24), (4, 12)])
def test_top_eigenvalue_pspin_ambient_and_riemannian(p, N):
    pot = SphericalPSpin(N, p, seed=p)
    x = sphere_points(N, 5, p)
    ambient = np.linalg.eigvalsh(pot.hessian(x))
    np.testing.assert_allclose(top_eigenvalue(pot, x, iters=N, riemannian=False), ambient[:, -1],
                               rtol=1e-10, atol=1e-10)
    tangent = tangent_spectra(pot, x)
    # at these points the most negative eigenvalue is the larger in magnitude for some rows:
    # plain power iteration would return it; Lanczos must still give the algebraic maximum
    assert np.any(-tangent[:, 0] > tangent[:, -1])
    np.testing.assert_allclose(top_eigenvalue(pot, x, iters=N - 1), tangent[:, -1], rtol=1e-10,
                               atol=1e-10)
    # fewer iterations: Ritz values are lower bounds that approach the top eigenvalue
    few = top_eigenvalue(pot, x, iters=N // 2)
    assert np.all(few <= tangent[:, -1] + 1e-10)
    assert np.all(few >= tangent[:, -2] - 0.5 * (tangent[:, -1] - tangent[:, 0]))


def test_top_eigenvalue_generic_potential_with_finite_difference_hvp():
    pot = DoubleWell(d=7, barrier=1.3, a=0.9)
    x = np.random.default_rng(3).standard_normal((4, 7))
    exact = np.linalg.eigvalsh(pot.hessian(x))[:, -1]
    np.testing.assert_allclose(top_eigenvalue(pot, x, iters=7), exact, rtol=1e-6, atol=1e-6)


def test_hutchinson_trace_quadratic_unbiased_with_exact_variance():
    """Rademacher probes: E[z^T H z] = tr H, Var = 2 sum_{i != j} H_ij^2 per probe (exact).
    64 replicas x 32 probes are independent; mean within 4 SE of tr H, and the reported
    standard errors match the exact one (their mean square within 20%: sampling spread of
    64 x 31-dof variance estimates, ~3% for Gaussian terms, widened for Rademacher kurtosis)."""
    d, M, probes = 30, 64, 32
    q = Quadratic(spectrum=np.random.default_rng(4).uniform(0.5, 3.0, d), seed=5)
    H = q.H
    var1 = 2.0 * (np.sum(H ** 2) - np.sum(np.diag(H) ** 2))
    tr, se = hessian_trace(q, np.zeros((M, d)), probes=probes, seed=3)
    assert_within_se(tr.mean(), np.trace(H), math.sqrt(var1 / (probes * M)),
                     what="Hutchinson trace")
    assert abs(np.mean(se ** 2) / (var1 / probes) - 1.0) < 0.2


def test_hutchinson_riemannian_trace_pspin():
    N, M = 20, 6
    pot = SphericalPSpin(N, 3, seed=8)
    x = sphere_points(N, M, 9)
    exact = tangent_spectra(pot, x).sum(axis=1)
    tr, se = hessian_trace(pot, x, probes=200, seed=1)
    assert_within_se(tr, exact, se, k=4.5, what="Riemannian Hutchinson trace")   # M = 6 rows
    # the ambient trace differs (by the Lagrange term and the normal direction)
    amb, amb_se = hessian_trace(pot, x, probes=200, seed=1, riemannian=False)
    assert_within_se(amb, np.trace(pot.hessian(x), axis1=1, axis2=2), amb_se, k=4.5,
                     what="ambient Hutchinson trace")


def test_exact_trace_equals_the_dense_one_ambient_riemannian_and_on_a_net():
    """d unit-vector products: tr H of a Quadratic, the tangent-space trace of the p-spin's
    Riemannian Hessian (and the ambient one), and a toy net's, against their
    dense Hessian from d products done by hand."""
    q = Quadratic(spectrum=np.random.default_rng(4).uniform(0.5, 3.0, 12), seed=5)
    np.testing.assert_allclose(exact_hessian_trace(q, np.zeros((3, 12))), np.trace(q.H),
                               rtol=1e-12)
    pot = SphericalPSpin(10, 3, seed=8)
    x = sphere_points(10, 4, 9)
    np.testing.assert_allclose(exact_hessian_trace(pot, x), tangent_spectra(pot, x).sum(axis=1),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(exact_hessian_trace(pot, x, riemannian=False),
                               np.trace(pot.hessian(x), axis1=1, axis2=2), rtol=1e-9, atol=1e-9)
    from langevin_sim.potentials import TeacherStudentMLP

    net = TeacherStudentMLP(n=24, d_in=3, hidden=4, seed=2)
    y = np.random.default_rng(3).standard_normal((5, net.d)) * 0.5
    dense = np.stack([net.hvp(y, np.tile(e, (5, 1))) for e in np.eye(net.d)], axis=1)
    np.testing.assert_allclose(exact_hessian_trace(net, y),
                               np.trace(dense, axis1=1, axis2=2), rtol=1e-10)


def test_observer_records_the_exact_trace_when_asked_and_resumes_so(tmp_path):
    """SharpnessObserver(probes="exact"): the recorded trace is `exact_hessian_trace` at the
    recorded positions, its se 0; the run resumes with the same observer."""
    from langevin_sim import open_run, resume

    q = Quadratic(spectrum=np.linspace(0.5, 2.0, 6), seed=1)
    sim = Simulation(q, OverdampedLangevin(0.01, 0.5), 4, seed=2, backend="numpy",
                     observers=[SharpnessObserver(every=5, probes="exact")])
    path = tmp_path / "exact.h5"
    sim.run(10, 5, out=path, progress=False).close()
    with resume(path, steps=15, progress=False) as run:
        np.testing.assert_allclose(run["hessian_trace"][1:], np.trace(q.H), rtol=1e-12)
        assert not np.any(run["hessian_trace_se"][1:])
        assert run.config["observers"][0]["probes"] == "exact"
    with pytest.raises(ConfigError, match="probes"):
        SharpnessObserver(every=5, probes="many")


def test_results_depend_on_global_replica_ids_only():
    pot = SphericalPSpin(12, 3, seed=2)
    x = sphere_points(12, 5, 1)
    whole = sharpness(pot, x, iters=6, probes=4, seed=7, step=30, replicas=np.arange(10, 15))
    part = sharpness(pot, x[2:4], iters=6, probes=4, seed=7, step=30, replicas=[12, 13])
    for k in whole:
        np.testing.assert_array_equal(part[k], whole[k][2:4])
    other = sharpness(pot, x, iters=6, probes=4, seed=7, step=31, replicas=np.arange(10, 15))
    assert not np.array_equal(other["hessian_trace"], whole["hessian_trace"])


def test_observer_records_every_k_steps():
    pot = SphericalPSpin(10, 3, seed=4)
    sim = Simulation(pot, OverdampedLangevin(0.01, 0.5), 3, backend="numpy", seed=6,
                     first_replica=4)
    obs = SharpnessObserver(every=20, iters=9, probes=8)
    sim.advance(20)
    got = obs(sim)
    want = sharpness(pot, sim.state["x"], iters=9, probes=8, seed=6, step=20, replicas=[4, 5, 6])
    assert set(got) == {"sharpness", "hessian_trace", "hessian_trace_se"}
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
        assert got[k].shape == (3,)
    np.testing.assert_allclose(got["sharpness"], tangent_spectra(pot, sim.state["x"])[:, -1],
                               rtol=1e-10)
    sim.advance(5)
    assert all(np.isnan(v).all() and v.shape == (3,) for v in obs(sim).values())


def test_errors():
    q = Quadratic(spectrum=[1.0, 2.0])
    x = np.zeros((2, 2))
    with pytest.raises(ConfigError, match="iters"):
        top_eigenvalue(q, x, iters=0)
    with pytest.raises(ConfigError, match="probes"):
        hessian_trace(q, x, probes=1)
    with pytest.raises(ConfigError, match="riemannian_hvp"):
        top_eigenvalue(q, x, riemannian=True)
    with pytest.raises(ConfigError, match="replicas"):
        top_eigenvalue(q, x, replicas=[0, 1, 2])
    with pytest.raises(ConfigError, match="every"):
        SharpnessObserver(every=0)


def test_toy_net_sharpness_in_replica_chunks_equals_the_whole_and_shares_each_chunks_pass(
        monkeypatch):
    """With the nets' chunk cut to 2 replicas (of 5), `sharpness` measures the replicas two at
    a time: the numbers equal those of all five at once (one chunk), bit for bit, and every
    product reuses its chunk's forward pass (one pass per chunk and measure, not one per
    product)."""
    from langevin_sim.potentials import TeacherStudentMLP, toynets

    pot = TeacherStudentMLP(n=12, d_in=3, hidden=4, teacher_hidden=2, n_test=5, seed=3)
    x = 0.7 * np.random.default_rng(2).standard_normal((5, pot.d))
    whole = sharpness(pot, x, iters=6, probes=4, seed=3, step=2, replicas=[7, 1, 4, 0, 9])
    passes = []
    real = toynets._Pass.__init__
    monkeypatch.setattr(toynets._Pass, "__init__",
                        lambda self, *a: passes.append(a[1].shape[0]) or real(self, *a))
    monkeypatch.setattr(toynets, "CHUNK_ELEMENTS", 2 * 12 * 4)
    assert pot.hvp_rows() == 2
    got = sharpness(pot, x, iters=6, probes=4, seed=3, step=2, replicas=[7, 1, 4, 0, 9])
    assert passes == [2, 2, 1, 2, 2, 1]                  # trace, then Lanczos, per chunk
    for k, v in whole.items():
        assert v.shape == (5,) and np.array_equal(got[k], v), k
