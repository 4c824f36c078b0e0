"""Physics oracles: exact stationary laws of the discrete dynamics.

Tolerances are k standard errors of the estimate, with samples spaced beyond the correlation
time so that replicas x records are independent; sizes make a factor 2 (or sqrt 2) fail.
"""
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.analysis import fit_marginal
from langevin_sim.dynamics import MALA, SGD, OverdampedLangevin, UnderdampedLangevin
from langevin_sim.potentials import DoubleWell, LinearRegression, Quadratic

from .conftest import assert_within_se

SPECTRUM = np.array([0.5, 1.0, 2.0, 4.0, 8.0])


def eigen_variances(sim, burn, records, spacing):
    """Per-eigendirection variance from replicas x records, and its standard error."""
    sim.advance(burn)
    _, Q = sim.potential.eigh
    ys = []
    for _ in range(records):
        sim.advance(spacing)
        ys.append(sim.state["x"] @ Q)
    y = np.concatenate(ys)
    var = np.mean(y ** 2, axis=0)          # the mean is known to be 0
    return var, var * np.sqrt(2.0 / y.shape[0])


@pytest.mark.parametrize("backend,dtype", [("numpy", "float64"), ("numba", "float64"),
                                           ("numba", "float32")])
def test_euler_maruyama_discrete_stationary_variance(backend, dtype):
    eta, T = 0.2, 0.7        # eta * lam_max = 1.6: discrete variance 5x the continuous one
    pot = Quadratic(spectrum=SPECTRUM, seed=1)
    sim = Simulation(pot, OverdampedLangevin(eta, T), 2000, backend=backend, seed=2, dtype=dtype)
    # slowest mode decays as (1 - 0.1)^k: 60 steps -> 2e-3 correlation between samples
    var, se = eigen_variances(sim, 200, 12, 60)
    exact = T / (SPECTRUM * (1 - eta * SPECTRUM / 2))
    assert_within_se(var, exact, se, what="EM stationary variance")
    assert np.all(np.abs(var - T / SPECTRUM) > 10 * se[-1:])  # continuous-time answer is wrong


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_baoab_configurational_variance_is_exact(backend):
    eta, T, gamma = 0.4, 0.7, 1.0    # eta^2 lam_max = 1.28: large step, still exact for x
    pot = Quadratic(spectrum=SPECTRUM, seed=3)
    sim = Simulation(pot, UnderdampedLangevin(eta, gamma, T), 2000, backend=backend, seed=4)
    var, se = eigen_variances(sim, 300, 12, 60)   # damping time 2/gamma = 5 steps of 0.4
    assert_within_se(var, T / SPECTRUM, se, what="BAOAB configurational variance")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_double_well_marginal_matches_boltzmann(dtype):
    T = 0.5
    pot = DoubleWell(d=4, barrier=1.0, a=1.0)
    sim = Simulation(pot, OverdampedLangevin(2e-3, T), 8192, backend="numba", seed=5, dtype=dtype)
    sim.advance(6000)         # 12 time units; Kramers time ~ 4, start balanced by symmetry
    x = sim.state["x"]
    good = fit_marginal(x, pot.marginal_energy, T)
    assert good.p_value > 1e-3, f"stochastic test: chi2 {good.chi2:.1f}/{good.dof}\n{good.table()}"
    for wrong in (0.9 * T, 1.1 * T):
        bad = fit_marginal(x, pot.marginal_energy, wrong)
        assert bad.p_value < 1e-6, f"a 10% temperature error went undetected: {bad.chi2:.1f}/{bad.dof}"


def test_mala_exact_where_ula_is_biased():
    T, eta = 0.5, 0.06       # eta * curvature at the wells (8) = 0.48: ULA visibly biased
    pot = DoubleWell(d=1)
    samples = {}
    for dyn in (MALA(eta, T), OverdampedLangevin(eta, T)):
        sim = Simulation(pot, dyn, 6000, backend="numpy", seed=6)
        sim.advance(1500)
        samples[type(dyn).__name__] = sim.state["x"].copy()
        if isinstance(dyn, MALA):
            assert 0.5 < sim.state["accepted"].mean() / 1500 < 0.99
    mala = fit_marginal(samples["MALA"], pot.marginal_energy, T)
    ula = fit_marginal(samples["OverdampedLangevin"], pot.marginal_energy, T)
    assert mala.p_value > 1e-3, f"stochastic test: MALA chi2 {mala.chi2:.1f}/{mala.dof}"
    assert ula.p_value < 1e-6, f"ULA bias not visible: chi2 {ula.chi2:.1f}/{ula.dof}"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_weight_decay_moves_the_fixed_point_to_the_ridge_solution(backend):
    """Full-batch heavy ball with weight decay wd on least squares converges to the ridge
    solution (H + wd I)^-1 A^T y / n exactly (a flipped sign would give (H - wd I)^-1 ...,
    another point, or diverge; no other default test has an exact oracle with wd)."""
    pot = LinearRegression(n=64, d=6, noise=0.1, seed=7)
    H, wd = pot.hessian_matrix, 0.3
    ridge = np.linalg.solve(H + wd * np.eye(6), pot.A.T @ pot.y / pot.n_samples)
    lr = 1.0 / (np.linalg.eigvalsh(H).max() + wd)
    sim = Simulation(pot, SGD(lr, None, momentum=0.5, weight_decay=wd), 5, backend=backend,
                     seed=1)
    sim.advance(2000)
    np.testing.assert_allclose(sim.state["x"], np.broadcast_to(ridge, (5, 6)), atol=1e-9)
    assert np.abs(ridge - pot.minimizer()).max() > 1e-2    # wd moves it visibly


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_sgd_momentum_stability_limit(backend):
    pot = LinearRegression(n=64, d=6, noise=0.1, seed=7)
    lam = np.linalg.eigvalsh(pot.hessian_matrix).max()
    mu = 0.6
    limit = 2 * (1 + mu) / lam             # full-batch heavy ball: stable iff lr lam < 2(1+mu)
    w_min = pot.minimizer()
    stable = Simulation(pot, SGD(0.9 * limit, None, momentum=mu), 5, backend=backend, seed=1)
    stable.advance(3000)
    assert np.all(stable.diverged_step < 0)
    np.testing.assert_allclose(stable.state["x"], np.broadcast_to(w_min, (5, 6)), atol=1e-6)
    unstable = Simulation(pot, SGD(1.1 * limit, None, momentum=mu), 5, backend=backend, seed=1)
    unstable.advance(3000)
    assert np.all(unstable.diverged_step > 0), unstable.diverged_step
    assert np.all(np.isfinite(unstable.state["x"]))   # frozen at the last good state
    # minibatch SGD well below the limit stays finite and fits the data
    mb = Simulation(pot, SGD(0.3 * limit, 16, momentum=mu), 5, backend=backend, seed=1)
    mb.advance(2000)
    assert np.all(mb.diverged_step < 0)
    assert np.all(pot.energy(mb.state["x"]) < 2 * pot.energy(w_min[None])[0] + 1e-3)
