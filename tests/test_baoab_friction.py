"""BAOAB's friction enters its dynamics, not its stationary law: on a quadratic the
configurational law T/lam (and the stored momenta's T (m - eta^2 lam / 4)) holds at ANY
c1 = exp(-gamma eta), so the variance tests in test_physics / test_analysis_covariance pass
with a wrong friction.  The lag-one covariances of (x, p) do depend on it: per eigenmode the
step is linear, z' = F z + G xi, with stationary covariance S (discrete Lyapunov) and
E[z_{t+1} z_t^T] = F S, built here from the scheme's definition (B, A, O, A, B with
h = eta/2, c1 = exp(-gamma eta), c2 = sqrt((1 - c1^2) m T)), not from the engine's pieces.
2000 replicas x 25 record pairs 20 steps apart (the slowest mode relaxes by e^-5 between
pairs): SE <= 0.004 on the momenta's lag covariances; gamma -> gamma / 2 moves each by > 10 SE."""
import math

import numpy as np
import pytest
from scipy import linalg

from langevin_sim import Simulation
from langevin_sim.dynamics import UnderdampedLangevin
from langevin_sim.potentials import Quadratic

from .conftest import assert_within_se


def baoab_lag_one(lam, eta, gamma, T, m):
    """Exact E[x' x], E[p' p] of the stationary BAOAB chain on one mode of curvature lam."""
    h, c1 = eta / 2, math.exp(-gamma * eta)
    c2 = math.sqrt((1 - c1 * c1) * m * T)

    def step(x, p, xi):
        p = p - h * lam * x
        x = x + h * p / m
        p = c1 * p + c2 * xi
        x = x + h * p / m
        return x, p - h * lam * x

    F = np.array([step(1.0, 0.0, 0.0), step(0.0, 1.0, 0.0)]).T
    G = np.array([step(0.0, 0.0, 1.0)]).T
    lag = F @ linalg.solve_discrete_lyapunov(F, G @ G.T)
    return lag[0, 0], lag[1, 1]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_baoab_lag_one_covariances_carry_the_friction(backend):
    eta, gamma, T, m = 0.5, 1.0, 0.8, 1.0
    spectrum = np.array([0.5, 1.0, 2.0, 4.0])
    pot = Quadratic(spectrum=spectrum, seed=4)
    lam, Q = pot.eigh
    sim = Simulation(pot, UnderdampedLangevin(eta, gamma, T, m), 2000, backend=backend, seed=8)
    sim.advance(200)
    xx, pp = [], []
    for _ in range(25):
        sim.advance(19)
        x0, p0 = sim.state["x"] @ Q, sim.state["p"] @ Q
        sim.advance(1)
        x1, p1 = sim.state["x"] @ Q, sim.state["p"] @ Q
        xx.append(x1 * x0)
        pp.append(p1 * p0)
    exact = np.array([baoab_lag_one(l, eta, gamma, T, m) for l in lam])
    wrong = np.array([baoab_lag_one(l, eta, gamma / 2, T, m) for l in lam])
    for k, (name, prod) in enumerate((("x", xx), ("p", pp))):
        y = np.concatenate(prod)
        est, se = y.mean(axis=0), y.std(axis=0, ddof=1) / math.sqrt(y.shape[0])
        assert_within_se(est, exact[:, k], se, what=f"BAOAB lag-one covariance of {name}")
    # E[x' x] hardly depends on gamma (through h^2 terms); E[p' p] ~ c1 Var p does
    assert np.all(np.abs(wrong[:, 1] - exact[:, 1]) > 10 * se), "the oracle cannot tell gamma/2"
