"""MultiWell: exact derivatives, soft-minimum bounds, basin labels, backend parity, run files,
and flat-versus-sharp basin populations against exact quadrature.

Stochastic tolerance: 4 standard errors with independent replicas (binomial SE of a basin
fraction), plus the stated O(eta) bias of the discrete dynamics.
"""
import math

import numpy as np
import pytest

from langevin_sim import Simulation, open_run
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import MultiWell

from .conftest import both_backends
from .test_manifolds import check_derivatives


def cases():
    return {
        "three-wells-3d": MultiWell(centers=[[0, 0, 0], [1, 1, 0], [-1, 0.5, 1]],
                                    spectra=[[1, 2, 3], [4, 5, 6], [0.5, 1, 9]],
                                    depths=[0.0, 0.2, -0.1], softness=0.3, seed=2),
        "two-wells-1d-sharp-min": MultiWell(centers=[[-1.0], [1.2]], hessians=[[[8.0]], [[1.0]]],
                                            softness=0.02),
        "one-well-4d": MultiWell(centers=[[0.5, -0.5, 1.0, 0.0]], spectra=[[1, 2, 3, 4]], seed=4),
        "four-wells-5d": MultiWell(centers=np.eye(4, 5) * 2.0, spectra=np.linspace(0.5, 6, 20).reshape(4, 5),
                                   depths=[0.0, 0.5, -0.3, 0.1], softness=1.0, seed=1),
    }


CASES = cases()


def explicit_q(pot, x):
    """(M, K) well quadratics by an explicit loop, independent of the module's code."""
    q = np.empty((x.shape[0], pot.n_wells))
    for j in range(pot.n_wells):
        for m in range(x.shape[0]):
            y = x[m] - pot.centers[j]
            q[m, j] = pot.depths[j] + 0.5 * y @ pot.hessians[j] @ y
    return q


@pytest.mark.parametrize("name", sorted(CASES))
def test_multiwell_derivatives(name):
    pot = CASES[name]
    x = np.random.default_rng(len(name)).standard_normal((7, pot.d)) * 1.5
    check_derivatives(pot, x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_softmin_bounds_and_basins(name):
    """min_j q_j - tau ln K <= U <= min_j q_j; basin = argmin_j q_j; centres are their own
    basins (these wells are deep enough) and U -> min q as tau -> 0."""
    pot = CASES[name]
    x = np.random.default_rng(1).standard_normal((50, pot.d)) * 2.0
    q = explicit_q(pot, x)
    U = pot.energy(x)
    tau, K = pot.softness, pot.n_wells
    assert np.all(U <= q.min(axis=1) + 1e-12)
    assert np.all(U >= q.min(axis=1) - tau * math.log(K) - 1e-12)
    np.testing.assert_array_equal(pot.basin(x), q.argmin(axis=1))
    np.testing.assert_array_equal(pot.observables(pot.centers)["basin"], np.arange(K))
    hard = MultiWell(pot.centers, hessians=pot.hessians, depths=pot.depths, softness=1e-9)
    np.testing.assert_allclose(hard.energy(x), q.min(axis=1), rtol=1e-12, atol=1e-12)


def test_single_well_is_exact_quadratic():
    pot = CASES["one-well-4d"]
    x = np.random.default_rng(2).standard_normal((5, 4))
    y = x - pot.centers[0]
    np.testing.assert_allclose(pot.energy(x), 0.5 * np.einsum("mi,ij,mj->m", y, pot.hessians[0], y),
                               rtol=1e-13)
    np.testing.assert_allclose(pot.hessian(x), np.broadcast_to(pot.hessians[0], (5, 4, 4)), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(pot.hessians[0]), [1, 2, 3, 4], rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("name", ["three-wells-3d", "four-wells-5d"])
def test_numba_matches_numpy(name, dtype, tol):
    """Fused kernel vs reference: 301 replicas (two blocks, one partial), 23 steps; float32
    states agree to float32 rounding (the kernel evaluates gradients in float64)."""
    pot = CASES[name]
    dyn = OverdampedLangevin(0.01, 0.5)
    out = both_backends(pot, dyn, 301, 23, dtype=dtype, seed=5)
    np.testing.assert_allclose(out["numba"].state["x"], out["numpy"].state["x"], rtol=tol, atol=tol)


def test_numba_divergence_and_partition():
    pot = CASES["three-wells-3d"]
    dyn = OverdampedLangevin(0.05, 1.0)
    res = both_backends(pot, dyn, 40, 60, seed=3, divergence_bound=2.5)
    assert 0 < np.sum(res["numba"].diverged_step >= 0) < 40
    np.testing.assert_array_equal(res["numba"].diverged_step, res["numpy"].diverged_step)
    np.testing.assert_allclose(res["numba"].state["x"], res["numpy"].state["x"], rtol=1e-12, atol=1e-12)
    parts = [Simulation(pot, dyn, 20, backend="numba", seed=3, first_replica=r0, divergence_bound=2.5)
             for r0 in (0, 20)]
    for p in parts:
        p.advance(60)
    np.testing.assert_array_equal(np.concatenate([p.state["x"] for p in parts]), res["numba"].state["x"])


def test_run_file_round_trip(tmp_run):
    pot = CASES["three-wells-3d"]
    run = Simulation(pot, OverdampedLangevin(0.01, 0.3), 6, seed=1).run(30, 10, out=tmp_run)
    back = run.potential
    assert isinstance(back, MultiWell) and back.params() == pot.params()
    for k, v in pot.arrays().items():
        np.testing.assert_array_equal(getattr(back, k), v)
    assert run["basin"].dtype == np.int64
    np.testing.assert_array_equal(run["basin"][-1], pot.basin(run.positions[-1]))
    run.close()
    with open_run(tmp_run) as r:
        assert r["basin"].shape == (4, 6)


@pytest.mark.parametrize("kwargs", [
    dict(centers=[0.0, 1.0], spectra=[[1.0, 1.0]]),
    dict(centers=[[0.0, 1.0]]),
    dict(centers=[[0.0, 1.0]], spectra=[[1.0, -1.0]]),
    dict(centers=[[0.0, 1.0]], spectra=[[1.0, 1.0, 1.0]]),
    dict(centers=[[0.0, 1.0]], hessians=[[[1.0, 0.5], [0.0, 1.0]]]),
    dict(centers=[[0.0, 1.0]], hessians=[[[1.0, 2.0], [2.0, 1.0]]]),
    dict(centers=[[0.0, 1.0]], spectra=[[1.0, 1.0]], depths=[0.0, 1.0]),
    dict(centers=[[0.0, 1.0]], spectra=[[1.0, 1.0]], softness=0.0),
    dict(centers=[[0.0, np.nan]], spectra=[[1.0, 1.0]]),
])
def test_config_errors(kwargs):
    with pytest.raises(ConfigError):
        MultiWell(**kwargs)


def test_flat_well_wins_populations_match_quadrature():
    """Two wells of equal depth in d = 2, curvatures 8 (sharp) and 1 (flat), T = 1: the
    equilibrium basin populations are P_j = int_{basin j} exp(-U/T) / Z, computed by a
    1001^2-point grid sum on [-7, 7]^2 (spacing 0.014; error < 1e-3).  Laplace predicts
    P_sharp = 1/9: the flat well holds ~89% at equal depth.  4000 independent replicas, all started at the sharp
    centre, run 20 time units (escape time from the sharp well ~3).  Tolerance 4 binomial
    SE (0.02) plus the EM bias: the sharp well's weight carries (1 - eta k/2)^(-1) with
    eta k = 0.04, i.e. P_sharp up by <= 2% relative (0.002)."""
    T, eta, M = 1.0, 5e-3, 4000
    pot = MultiWell(centers=[[-1.5, 0.0], [1.5, 0.0]], hessians=[np.diag([8.0, 8.0]), np.eye(2)],
                    softness=0.1)
    g = np.linspace(-7, 7, 1001)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    u, lab = pot.energy(pts), pot.basin(pts)
    w = np.exp(-(u - u.min()) / T)
    p_sharp = w[lab == 0].sum() / w.sum()
    laplace = np.exp(pot.log_laplace_weights(T))
    assert abs(p_sharp - laplace[0] / laplace.sum()) < 0.01      # Laplace is close at this T
    sim = Simulation(pot, OverdampedLangevin(eta, T), M, backend="numba", seed=7,
                     init=np.array([-1.5, 0.0]))
    sim.advance(4000)
    frac = np.mean(pot.basin(sim.state["x"]) == 0)
    se = math.sqrt(p_sharp * (1 - p_sharp) / M)
    assert abs(frac - p_sharp) <= 4 * se + 0.02 * p_sharp, (
        f"stochastic test: sharp-well fraction {frac:.4f} vs exact {p_sharp:.4f} (SE {se:.4f})")
    assert frac < 0.25        # far below the 1/2 that equal depths give by energy alone
