"""langevin_sim.analysis.spinglass: the 1RSB solver against known values, the dynamical
estimators on synthetic data with known answers, then short p-spin simulations.

Conventions: SphericalPSpin has E[H H'] = N V q^p, V = 1/2 (Crisanti-Sommers) or 1 (ABC);
energies and temperatures scale as sqrt(V), so ABC values are sqrt(2) x CS values.
Statistical checks: fixed seeds, k = 4 standard errors from independent replicas (or
instances); where one z-score cannot catch a standard error that is too large, the spread
of many z-scores is checked.
"""
import math
import os
import runpy
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.optimize import brentq
from threadpoolctl import threadpool_limits

from langevin_sim import Simulation, open_run
from langevin_sim.analysis.spinglass import (Aging, dynamical_transition, fit_power_law,
                                             hessian_index, landmarks, one_rsb, overlaps,
                                             relaxation, run_hessian_index, run_relaxation,
                                             static_transition, two_time_correlation)
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import SphericalPSpin
from langevin_sim.scenario import run_scenario

from .conftest import assert_within_se

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- 1RSB landmarks

def abc_ground_state(p):
    """Independent value: for xi = q^p the ground state is the zero of the annealed
    complexity of minima (Auffinger-Ben Arous-Cerny 2013), u < -E_inf = -2 sqrt((p-1)/p):
    1/2 ln(p-1) - (p-2)/(4(p-1)) u^2 - I(u) = 0,
    I(u) = -u/E_inf^2 sqrt(u^2 - E_inf^2) - ln(-u + sqrt(u^2 - E_inf^2)) + ln E_inf."""
    E = 2 * math.sqrt((p - 1) / p)

    def theta(u):
        r = math.sqrt(u * u - E * E)
        return 0.5 * math.log(p - 1) - (p - 2) / (4 * (p - 1)) * u * u + u / E ** 2 * r \
            + math.log(-u + r) - math.log(E)
    return brentq(theta, -3.0, -E - 1e-12, xtol=1e-14)


def test_landmarks_against_known_p3_values():
    """Crisanti-Sommers p = 3 (V = 1/2): T_d = sqrt(3/8), T_s = 0.58605 (Crisanti-Sommers
    1992), e_th = -sqrt(4/3), E_gs = -1.17167; ABC (V = 1): e_th = -sqrt(8/3) = -1.63299,
    E_gs = -1.65700 (the complexity zero, computed independently), all x sqrt(2)."""
    cs, abc = landmarks(3, 0.5), landmarks(3, 1.0)
    assert cs.T_d == pytest.approx(math.sqrt(3 / 8), abs=1e-9)
    assert cs.T_s == pytest.approx(0.58605, abs=1e-5)
    assert cs.e_th == pytest.approx(-math.sqrt(4 / 3), abs=1e-9)
    assert abc.e_th == pytest.approx(-math.sqrt(8 / 3), abs=1e-9)
    assert abc.e_gs == pytest.approx(abc_ground_state(3), abs=1e-8)
    assert abc.e_gs == pytest.approx(-1.65700, abs=1e-5)
    assert cs.e_gs == pytest.approx(-1.65700 / math.sqrt(2), abs=1e-5)
    for a, b in [(abc.T_d, cs.T_d), (abc.T_s, cs.T_s), (abc.e_th, cs.e_th), (abc.e_gs, cs.e_gs)]:
        assert a == pytest.approx(math.sqrt(2) * b, rel=1e-8)
    assert cs.e_gs < cs.e_th < cs.paramagnetic_energy(cs.T_d) and cs.T_s < cs.T_d


@pytest.mark.parametrize("p", [2, 3, 4])
@pytest.mark.parametrize("convention", ["crisanti-sommers", "abc"])
def test_marginal_stability_limits_are_the_code_landmarks(p, convention):
    """The solver's marginal solution at m = 1 is T_d and its T -> 0 limit is e_th: equal
    to SphericalPSpin.dynamical_temperature() and threshold_energy() (closed forms); the
    ground state lies below the threshold for p >= 3 and equals it for p = 2; ABC's ground
    state is the complexity zero."""
    pot = SphericalPSpin(4, p, convention)
    lm = landmarks(p, pot.variance)
    assert lm.T_d == pytest.approx(pot.dynamical_temperature(), rel=1e-9)
    assert lm.e_th == pytest.approx(pot.threshold_energy(), rel=1e-9)
    if p == 2:
        assert lm.T_s == lm.T_d and lm.e_gs == pytest.approx(lm.e_th, rel=1e-12)
    else:
        assert lm.e_gs < lm.e_th - 0.01 and lm.T_s < lm.T_d
        assert dynamical_transition(p, pot.variance)[1] == pytest.approx((p - 2) / (p - 1), rel=1e-8)
        if convention == "abc":
            assert lm.e_gs == pytest.approx(abc_ground_state(p), abs=1e-8)


def test_one_rsb_finite_temperature_limits():
    """Static branch: m -> 1 and e -> -V/T_s at T_s^-, paramagnet above; at low T the
    energy is E_gs + T/2 + O(T^2) (one harmonic mode per spin).  Marginal branch: m = 1 and
    q = 1/2 at T_d, and e -> e_th + T/2; below T_d the equilibrium energy lies below it."""
    V, lm = 0.5, landmarks(3, 0.5)
    below = one_rsb(lm.T_s * (1 - 1e-6), 3, V)
    assert below.m == pytest.approx(1.0, abs=1e-4)
    assert below.q == pytest.approx(static_transition(3, V)[1], abs=1e-4)
    assert below.energy == pytest.approx(-V / lm.T_s, abs=1e-5)
    assert one_rsb(lm.T_s * (1 + 1e-6), 3, V).q == 0.0
    for T in (0.002, 0.01):
        assert (one_rsb(T, 3, V).energy - lm.e_gs) / T == pytest.approx(0.5, abs=0.002 + T)
        assert (one_rsb(T, 3, V, marginal=True).energy - lm.e_th) / T == pytest.approx(0.5, abs=0.002 + T)
    at_td = one_rsb(lm.T_d * (1 - 1e-9), 3, V, marginal=True)
    assert at_td.m == pytest.approx(1.0, abs=1e-6) and at_td.q == pytest.approx(0.5, abs=1e-4)
    mid, thr = one_rsb(0.3, 3, V), one_rsb(0.3, 3, V, marginal=True)
    assert 0 < mid.m < 1 and lm.e_gs < mid.energy < thr.energy   # equilibrium below threshold


# --------------------------------------------------------------------------- synthetic dynamics

def test_power_law_fit_recovers_exponent_with_calibrated_error():
    """e_r(t) = e_th + 0.4 t^-0.6 + 0.05 noise (64 replicas, 30 log-spaced records on [1, 100]):
    over 30 data sets every |z| <= 4 and the z-scores have unit spread (std in [0.6, 1.5]);
    SE(a) ~ 0.02, so a factor-2 error in a fails by > 10 SE."""
    rng = np.random.default_rng(11)
    t = np.geomspace(1, 100, 30)
    e_th, a = -1.1547, 0.6
    z = []
    for _ in range(30):
        e = e_th + 0.4 * t[:, None] ** -a + 0.05 * rng.standard_normal((30, 64))
        fit = fit_power_law(t, e, e_th)
        z.append((fit.a - a) / fit.a_se)
    z = np.array(z)
    assert np.all(np.abs(z) <= 4), f"stochastic test: z = {z}"
    assert 0.6 <= z.std(ddof=1) <= 1.5, f"stochastic test: spread of z {z.std(ddof=1)}"
    assert fit.c == pytest.approx(0.4, rel=0.2) and fit.a_se < 0.05


def test_two_time_correlation_of_ornstein_uhlenbeck_vectors():
    """Stationary OU vectors (unit rate and variance, exact AR(1) updates), 200 replicas of
    N = 20: C(t_w + tau, t_w) = e^-tau for every t_w (no aging), within 4 SE at each lag;
    the decay time to C = 1/2 is ln 2 for every t_w (SE ~ 0.0137 / 0.5 = 4%; allowed 15%)."""
    rng = np.random.default_rng(12)
    t = np.linspace(0, 6, 121)
    M, N = 200, 20
    x = np.empty((t.size, M, N))
    x[0] = rng.standard_normal((M, N))
    a = math.exp(-(t[1] - t[0]))
    for j in range(1, t.size):
        x[j] = a * x[j - 1] + math.sqrt(1 - a * a) * rng.standard_normal((M, N))
    ag = two_time_correlation(t, x, waiting_times=[0.0, 1.0, 3.0])
    for lag, c, se in zip(ag.lags, ag.C, ag.se):
        ok = np.isfinite(c) & (lag > 0)
        assert_within_se(c[ok], np.exp(-lag[ok]), se[ok], what="C(tau)")
    np.testing.assert_allclose(ag.decay_time, math.log(2), rtol=0.15)


def test_two_time_correlation_shows_aging():
    """x(t) = B(t) / sqrt(t) componentwise (Brownian B): C(t_w + tau, t_w) =
    sqrt(t_w / (t_w + tau)) exactly, a pure function of tau / t_w: the decay time to 1/2
    is 3 t_w, so curves for larger t_w decay more slowly.  200 replicas x N = 40: SE of C
    at 1/2 ~ sqrt(3/4 / 8000) = 0.01, slope dC/dtau = -1/(16 t_w): 5% on the decay time;
    allowed 20%."""
    rng = np.random.default_rng(13)
    t = np.linspace(0.05, 40, 800)
    M, N = 200, 40
    dB = np.sqrt(np.diff(t, prepend=0.0))[:, None, None] * rng.standard_normal((t.size, M, N))
    B = np.cumsum(dB, axis=0)
    ag = two_time_correlation(t, B / np.sqrt(t)[:, None, None], waiting_times=[1.0, 3.0, 9.0], level=0.5)
    np.testing.assert_allclose(ag.decay_time, 3 * ag.waiting, rtol=0.2)
    for lag, c, se, tw in zip(ag.lags, ag.C, ag.se, ag.waiting):
        ok = np.isfinite(c) & (lag > 0)
        assert_within_se(c[ok], np.sqrt(tw / (tw + lag[ok])), se[ok], what="aging C")


def test_overlaps_of_independent_points_on_the_sphere():
    """200 uniform points on |x|^2 = N = 50: q_ab has mean 0 and variance 1/N; pairs are
    pairwise uncorrelated (E[q_ab q_ac] = 0, E[q_ab^2 q_ac^2] = 1/N^2), so the SE of a mean
    over the 19900 pairs is the pair std / sqrt(19900)."""
    rng = np.random.default_rng(14)
    N = 50
    z = rng.standard_normal((200, N))
    ov = overlaps(z * math.sqrt(N) / np.linalg.norm(z, axis=1, keepdims=True))
    q = ov.q
    assert q.size == 19900 and ov.N == N
    assert_within_se(q.mean(), 0.0, q.std() / math.sqrt(q.size), what="mean overlap")
    assert_within_se((q ** 2).mean(), 1 / N, (q ** 2).std() / math.sqrt(q.size), what="E q^2")


def test_hessian_index_of_p2_eigenvector_states():
    """p = 2: H = -x^T J x; at x = sqrt(N) v_k (eigenvector of J with eigenvalue lambda_k)
    the tangent Hessian is 2 (lambda_k - J) with eigenvalues 2 (lambda_k - lambda_j), so the
    index is the number of larger eigenvalues of J: N-1, ..., 1, 0 in ascending order."""
    N = 12
    pot = SphericalPSpin(N, 2, seed=3)
    lam, vec = np.linalg.eigh(pot.J)
    hi = hessian_index(pot, math.sqrt(N) * vec.T)
    np.testing.assert_array_equal(hi.index, np.arange(N - 1, -1, -1))
    np.testing.assert_allclose(hi.energy, -lam, rtol=1e-12)
    np.testing.assert_allclose(hi.lowest, np.append(2 * (lam[:-1] - lam[-1]), 2 * (lam[-1] - lam[-2])),
                               atol=1e-10)


def test_hessian_index_matches_an_explicit_tangent_basis():
    """p = 3 at random points: the index equals the count of negative eigenvalues of
    B^T H_R B with B an orthonormal basis of the tangent space (the N - 1 directions)."""
    N = 10
    pot = SphericalPSpin(N, 3, seed=4)
    x = pot.default_init(np.random.default_rng(15).standard_normal((6, N)))
    hi = hessian_index(pot, x)
    H = pot.riemannian_hessian(x)
    for m in range(6):
        B = np.linalg.qr(np.column_stack([x[m], np.eye(N)[:, :N - 1]]))[0][:, 1:]
        ev = np.linalg.eigvalsh(B.T @ H[m] @ B)
        assert hi.index[m] == np.sum(ev < 0) and hi.lowest[m] == pytest.approx(ev[0], abs=1e-10)
    assert 0 < hi.index.mean() < N - 1


# --------------------------------------------------------------------------- simulations

def test_langevin_above_td_equilibrates_to_the_paramagnet():
    """CS p = 3, N = 32, T = 1.5 (T_d = 0.61): 16 coupling instances x 32 replicas,
    Langevin eta = 0.005, 300 steps burn-in (6.75 relaxation times 1/(pT)), late mean over
    the next 600 steps.  SE from the spread of the 16 instance means (so it covers the
    instance-to-instance spread (1/2T) sqrt(12/N^3) ~ 0.006).  Biases: finite N
    (1/2T) E<q^3> ~ 4e-4; step size +(1/2T) eta T / 2 ~ 1.3e-3, allowed in full.
    Measured -0.3303 +- 0.0036 (40 other instances: -0.3316 +- 0.0020); the ABC value
    -0.667 or a factor 2 fails by > 40 SE."""
    N, T, eta = 32, 1.5, 0.005
    means = []
    for k in range(16):
        pot = SphericalPSpin(N, 3, seed=100 + k)
        sim = Simulation(pot, OverdampedLangevin(eta, T), 32, backend="numba", seed=k)
        with threadpool_limits(1, user_api="blas"):    # record-time GEMMs beside numba threads
            run = sim.run(900, 60, record_positions=False, progress=False)
        rel = run_relaxation(run, late_from=1.5)
        assert rel.fit is None and rel.reference_label.startswith("paramagnet")
        means.append(rel.late_mean)
    exact = pot.paramagnetic_energy(T)
    se = np.std(means, ddof=1) / math.sqrt(16)
    bias = 4e-4 + abs(exact) * eta * T / 2
    assert abs(np.mean(means) - exact) <= 4 * se + bias, (
        f"stochastic test: e = {np.mean(means):.5f} +- {se:.5f} vs {exact:.5f} (bias allowed {bias:.4f})")
    assert se < 0.006


def test_gradient_descent_approaches_the_threshold_from_above():
    """T = 0 from random starts (CS p = 3, N = 32, 32 replicas, eta = 0.05 to t = 100): the
    mean energy decreases towards e_th = -1.1547 and stalls above it (finite N: measured
    ~-1.05, scenario pspin_threshold reports -1.042 +- 0.007), far below the paramagnet
    at T_d (-0.82) yet > 4 SE above e_th; the end states are local minima (Hessian index
    0), the excess decays as a power law with 0 < a < 1 over t in [1, 10]."""
    pot = SphericalPSpin(32, 3, seed=7)
    sim = Simulation(pot, OverdampedLangevin(0.05, 0.0), 32, backend="numba", seed=1)
    with threadpool_limits(1, user_api="blas"):
        run = sim.run(2000, 20, record_positions=True, progress=False)
    rel = run_relaxation(run)
    assert rel.reference == pytest.approx(pot.threshold_energy())
    assert np.all(np.diff(rel.mean) <= 1e-12), "gradient descent must not raise the mean energy"
    assert rel.late_mean - rel.landmarks.e_th > 4 * rel.late_se, rel.table()
    assert rel.late_mean < rel.landmarks.e_th + 0.15, rel.table()
    assert 0 < rel.fit.a < 1 and rel.fit.a_se < 0.2, rel.table()
    assert np.all(run_hessian_index(run).index == 0)


def test_spinglass_script(tmp_path, capsys, monkeypatch):
    """analysis/spinglass.py on a short pspin_threshold quench (N = 24, 16 replicas, t = 50,
    positions recorded): prints the landmarks, the relaxation with its fit, aging, overlaps
    and Hessian indices and a verdict, and writes a 4-panel figure."""
    out = tmp_path / "pspin.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "pspin_threshold.py"),
                 ["N=24", "replicas=16", "steps=1000", "record_every=10", "record_positions=true"],
                 out=out, progress=False).close()
    png = tmp_path / "sg.png"
    monkeypatch.setattr(sys, "argv", ["spinglass.py", str(out), "--png", str(png)])
    runpy.run_path(os.path.join(ROOT, "analysis", "spinglass.py"), run_name="__main__")
    text = capsys.readouterr().out
    for piece in ("T_s = 0.58605", "E_gs = -1.17167", "power law", "aging", "overlaps",
                  "Hessian index", "verdict:"):
        assert piece in text, piece
    img = plt.imread(png)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 400
    rgb = img[..., :3]
    assert (rgb.max(axis=-1) - rgb.min(axis=-1) > 0.1).mean() > 0.01, "no coloured curves"
    assert (rgb.max(axis=-1) < 0.3).mean() > 0.002, "no axes or text"


@pytest.mark.slow
def test_spinglass_script_on_the_default_quench(tmp_path, capsys, monkeypatch):
    """scenarios/pspin_threshold.py at its defaults (N = 64, 64 replicas, T = 0) to t = 300
    with positions: the late energy stays above e_th (scenario docstring: -1.064 +- 0.004),
    the final states are minima, and older states decorrelate more slowly (aging)."""
    out = tmp_path / "pspin.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "pspin_threshold.py"),
                 ["steps=6000", "record_every=20", "record_positions=true"], out=out,
                 progress=False).close()
    monkeypatch.setattr(sys, "argv", ["spinglass.py", str(out), "--png", str(tmp_path / "f.png")])
    runpy.run_path(os.path.join(ROOT, "analysis", "spinglass.py"), run_name="__main__")
    text = capsys.readouterr().out
    assert "stays above the N -> infinity e_th" in text, text
    assert "ground state -1.17167 not reached (lowest replica" in text, text
    assert "older systems decorrelate more slowly (aging;" in text, text
    with open_run(out) as run:
        assert np.mean(run_hessian_index(run).index == 0) >= 0.9
        rel = run_relaxation(run)
    assert rel.landmarks.e_th < rel.late_mean < -1.03, rel.table()


def test_aging_verdict_needs_more_than_noise():
    """C that grows with t_w only within its error bars is not called aging."""
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 41.0)
    lags = t[None, :] - np.array([1.0, 4.0, 10.0])[:, None]
    C = np.where(lags >= 0, np.exp(-np.maximum(lags, 0) / 5.0), np.nan)
    for shift, expect in ((0.0, "no aging resolved"), (0.3, "aging; C grows")):
        Cw = C + shift * np.array([0.0, 0.5, 1.0])[:, None] * (lags >= 0)
        a = Aging(waiting=np.array([1.0, 4.0, 10.0]), lags=np.where(lags >= 0, lags, np.nan),
                  C=Cw + 0.001 * rng.standard_normal(C.shape), se=np.full(C.shape, 0.05),
                  level=0.5, decay_time=np.full(3, np.nan))
        assert expect in a.verdict(), (shift, a.verdict())


def test_late_from_past_the_last_record_is_refused():
    """late_from beyond the run (spinglass.py --late-from 1000 on a t = 500 run) averaged
    an empty slice: a RuntimeWarning, then 'late e = nan +- nan ... z = +nan' and a verdict
    on it.  Now one ConfigError naming the last record's time and the flag."""
    t = np.linspace(0.5, 10, 20)
    e = -1.0 + 0.1 / np.sqrt(t)[:, None] + 0.001 * np.arange(4)[None, :]
    assert relaxation(t, e, 3, 0.5, 1.0, late_from=10).late_mean < -0.9
    with pytest.raises(ConfigError, match=r"late_from = 11 is past the last record \(t = 10\)"
                                          r".*--late-from"):
        relaxation(t, e, 3, 0.5, 1.0, late_from=11)


def test_a_decay_level_outside_minus_one_one_is_refused():
    """C(t_w + tau, t_w) is 1 at tau = 0 and never below -1: --level 1.5 printed
    'tau(C=1.5) = not reached' for every t_w without saying why."""
    t = np.linspace(0, 2, 5)
    x = np.random.default_rng(1).standard_normal((5, 4, 3))
    two_time_correlation(t, x, [0.5], level=0.9)
    for bad in (1.0, 1.5, -1.0):
        with pytest.raises(ConfigError, match=r"level must be in \(-1, 1\).*--level"):
            two_time_correlation(t, x, [0.5], level=bad)


def test_waiting_times_past_the_run_are_refused():
    """--waiting 1 10 1000 on a t = 500 run dropped 1000 without a word (and showed curves
    for the other two as if all had been taken)."""
    t = np.linspace(0, 2, 5)
    x = np.random.default_rng(1).standard_normal((5, 4, 3))
    assert two_time_correlation(t, x, [0.5, 2.0]).waiting.size == 2
    with pytest.raises(ConfigError, match=r"waiting time\(s\) \[3.0\] lie past the last record "
                                          r"\(t = 2\).*--waiting"):
        two_time_correlation(t, x, [0.5, 3.0])


def test_aging_verdict_of_frozen_replicas_and_of_one_replica():
    """Replicas frozen at a minimum (T = 0) have C = 1 at every lag with se 0: the verdict
    read 'not aging: C at the common lag falls with t_w (+nan se)' (0 / 0).  One replica
    has no se at all (and warned 'Degrees of freedom <= 0'); no replica left is one line."""
    t = np.linspace(0, 4, 9)
    x = np.broadcast_to(np.array([1.0, -1.0, 1.0]), (9, 5, 3))       # |x|^2 = N: C = 1
    ag = two_time_correlation(t, x, [1.0, 2.0])
    np.testing.assert_array_equal(ag.se[np.isfinite(ag.se)], 0.0)
    assert ag.verdict() == "no aging resolved: C at the common lag changes by +0.0 se with t_w"
    one = two_time_correlation(t, x[:, :1], [1.0, 2.0])
    assert np.isnan(one.se).all() and "at least 2 replicas" in one.verdict()
    assert "no verdict" in one.table()
    dead = np.array(x)
    dead[5:] = np.nan
    with pytest.raises(ConfigError, match="every replica's positions are non-finite"):
        two_time_correlation(t, dead, [1.0, 3.0])


def test_small_n_quench_below_e_th_is_analysed_without_the_fit(tmp_path, capsys, monkeypatch):
    """At N = 6 (coupling seed 2) gradient descent ends near -1.22, below e_th and E_gs (finite
    N): analysis/spinglass.py stopped with 'the mean energy is not above e_inf ... shorten the
    window' and no window could fit (the mean is below e_th from t = 1.5).  Now the default
    window's fit is left out with a note, and the rest is printed."""
    t = np.linspace(0.5, 40, 80)
    e = -1.22 + 0.5 * np.exp(-2 * t)[:, None] + 0.001 * np.arange(4)[None, :]
    rel = relaxation(t, e, 3, 0.5)
    assert rel.fit is None and "no power-law fit" in rel.table() and "--t-min" in rel.fit_note
    with pytest.raises(ConfigError, match="not above e_inf"):      # an explicit window still refuses
        relaxation(t, e, 3, 0.5, t_min=1.0, t_max=4.0)
    out = tmp_path / "n6.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "pspin_threshold.py"),
                 ["N=6", "coupling_seed=2", "replicas=8", "steps=400", "record_every=10",
                  "backend=numpy"], out=out, progress=False).close()
    monkeypatch.setattr(sys, "argv", ["spinglass.py", str(out), "--png", str(tmp_path / "f.png")])
    runpy.run_path(os.path.join(ROOT, "analysis", "spinglass.py"), run_name="__main__")
    text = capsys.readouterr().out
    assert "no power-law fit" in text and "verdict:" in text, text
    assert "ground state -1.17167 reached or passed by the lowest replica (-1.29" in text, text


def test_aging_verdict_flags_replicas_that_stopped():
    """Descent into a minimum makes C grow with t_w in any landscape (a strongly planted p = 3
    quench, N = 32: 'aging; C grows by 4.6 se' with C = 1.0000 at t_w = 100).  Replicas
    x(t) -> x* exponentially on the sphere: the verdict still says C grows, and that they
    stopped; genuine aging (B(t)/sqrt(t), C = sqrt(t_w/(t_w + tau))) is not flagged."""
    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 40.0, 161)
    M, N = 40, 30
    xs, z = rng.standard_normal((2, M, N))
    x = xs[None] + np.exp(-t)[:, None, None] * 3 * z[None]
    x *= np.sqrt(N) / np.linalg.norm(x, axis=2, keepdims=True)
    v = two_time_correlation(t, x, [0.25, 1.0, 4.0]).verdict()
    assert "aging; C grows" in v and "the replicas have stopped" in v, v
    dB = np.sqrt(np.diff(t[1:], prepend=0.0))[:, None, None] * rng.standard_normal((160, 200, N))
    v = two_time_correlation(t[1:], np.cumsum(dB, axis=0) / np.sqrt(t[1:])[:, None, None],
                             [1.0, 3.0, 9.0]).verdict()
    assert "aging; C grows" in v and "stopped" not in v, v
