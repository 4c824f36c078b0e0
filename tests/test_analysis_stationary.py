"""Stationary marginals: the checks of `fit_marginal`, `run_marginal_fit` and
`constant_temperature` (the fit itself is tested in test_analysis_scripts.py)."""
import math
import warnings

import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.analysis.escape import mfpt_1d
from langevin_sim.analysis.stationary import (boltzmann_masses, constant_temperature,
                                              fit_marginal, run_marginal_fit)
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import DoubleWell


def test_constant_temperature_of_dynamics_without_one():
    assert constant_temperature({"dynamics": {"class": "OverdampedLangevin", "temperature": {
        "kind": "constant", "start": 0.5}}}) == 0.5
    with pytest.raises(ConfigError, match="the run's AdamW dynamics has no temperature; this "
                                          "analysis needs a run at a constant temperature"):
        constant_temperature({"dynamics": {"class": "AdamW", "lr": {"kind": "constant"}}})


def test_fit_marginal_refuses_too_few_samples_and_bins():
    """No samples, 3 samples, 39 samples (< two bins of 20 expected) and bins = 0 are
    ConfigErrors; 200 samples fit without warnings."""
    U = DoubleWell(d=1).marginal_energy
    for n in (0, 3, 39):
        with pytest.raises(ConfigError, match=f"{n} finite samples are too few"):
            fit_marginal(np.full(n, 0.5), U, 0.5)
    g = np.random.default_rng(1)
    x = g.choice([-1.0, 1.0], 200) + 0.3 * g.normal(size=200)
    with pytest.raises(ConfigError, match="bins must be >= 1, got 0"):
        fit_marginal(x, U, 0.5, bins=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_marginal(x, U, 0.5)
    assert fit.n == 200 and fit.dof >= 1


@pytest.mark.parametrize("T", [0.0, -0.5, float("nan")])
def test_a_temperature_not_above_zero_is_one_error(T):
    """T <= 0 scanned the energy for mass with ~9000 divide-by-zero warnings, then blamed "a
    lower well farther out"; mfpt_1d returned NaN with warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match="temperature must be > 0, got"):
            fit_marginal(np.linspace(-1, 1, 100), DoubleWell(d=1).marginal_energy, T)
        with pytest.raises(ConfigError, match="temperature must be > 0, got"):
            mfpt_1d(lambda y: y * y, T, -1.0, 0.0)


def test_run_marginal_fit_checks_records_and_divergence(tmp_path):
    """records outside 1..n_records and an all-diverged run are ConfigErrors naming the fix."""
    run = Simulation(DoubleWell(d=1), OverdampedLangevin(2e-3, 0.5), 64, backend="numpy",
                     seed=1).run(40, 20, out=tmp_path / "dw.h5", progress=False)
    for bad in (0, -3, 4):
        with pytest.raises(ConfigError, match=r"records must be in 1\.\.3 \(the run has 3 "):
            run_marginal_fit(run, records=bad)
    run.close()
    with pytest.warns(Warning, match="diverged"):
        run = Simulation(DoubleWell(d=1), OverdampedLangevin(0.5, 0.5), 16, backend="numpy",
                         seed=1).run(200, 100, out=tmp_path / "div.h5", progress=False)
    with pytest.raises(ConfigError, match="all 16 replicas diverged: nothing to fit; rerun with "
                                          "a smaller step"):
        run_marginal_fit(run)
    run.close()


def test_boltzmann_masses_resolve_the_spikes_of_low_temperatures():
    """At low T the density is a spike of width ~sqrt(T / U''): the left tail bin of
    `fit_marginal` (one quad over [lo - 50 (hi - lo), lo]) read 3e-10 for 1e-3 at T = 0.01,
    its mass went to the right tail, and exact samples failed the fit; at T = 1e-6 the bins
    over both wells summed to 1e22.  Against a fine-grid CDF: the tail masses within 2 %,
    the inner bins within 1e-5, and exact samples pass."""
    from langevin_sim.analysis.stationary import boltzmann_bin_probabilities, boltzmann_masses

    U = DoubleWell(d=1).marginal_energy
    y = np.linspace(-3, 3, 6_000_001)
    for T in (0.01, 1e-3):
        cdf = np.cumsum(np.exp(-(U(y) - U(y).min()) / T))
        cdf /= cdf[-1]
        lo, hi = np.interp([0.001, 0.999], cdf, y)
        cuts = np.linspace(lo, hi, 21)
        m = boltzmann_masses(U, T, cuts)
        ref = np.diff(np.concatenate([[0.0], np.interp(cuts, y, cdf), [1.0]]))
        assert m.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(m[[0, -1]], ref[[0, -1]], rtol=0.02)
        np.testing.assert_allclose(m[1:-1], ref[1:-1], atol=1e-5)
        samples = np.interp(np.random.default_rng(3).random(20000), cdf, y)
        assert fit_marginal(samples, U, T).p_value > 1e-3
    p = boltzmann_bin_probabilities(U, 1e-6, np.linspace(-1.5, 1.5, 31))
    assert p.sum() == pytest.approx(1.0, abs=1e-9) and p[15:].sum() == pytest.approx(0.5)


def test_boltzmann_masses_find_a_well_beyond_the_cuts():
    """Bins over one well of a symmetric double well at T = 0.01: the other well's half of
    the mass was found 8e-5 (the tail's quadrature stepped over a spike of width 0.035), and
    samples from one well only passed the fit (p = 0.97); a deeper well beyond the cuts gave
    NaN.  A law that is not normalizable is refused."""
    from scipy import integrate

    from langevin_sim.analysis.stationary import boltzmann_masses
    from langevin_sim.errors import ConfigError

    U, T = DoubleWell(d=1, barrier=2.0).marginal_energy, 0.01
    f = lambda y: math.exp(-U(np.array([y]))[0] / T)  # noqa: E731
    left = integrate.quad(f, -3, 0.9, points=[-1.0], limit=500)[0]
    exact = left / (left + integrate.quad(f, 0.9, 3, points=[1.0], limit=500)[0])
    m = boltzmann_masses(U, T, np.linspace(0.9, 1.1, 21))
    assert m[0] == pytest.approx(exact, rel=1e-9) and exact == pytest.approx(0.5, abs=1e-3)
    y = np.linspace(0.0, 3.0, 300_001)
    p = np.exp(-U(y) / T)
    one_well = np.random.default_rng(0).choice(y, size=4000, p=p / p.sum())
    assert not fit_marginal(one_well, U, T, bins=20, lo=0.9, hi=1.1).consistent
    tilted = boltzmann_masses(DoubleWell(tilt=0.5).marginal_energy, 1e-3, [0.95, 1.0, 1.05])
    np.testing.assert_allclose(tilted, [1.0, 0.0, 0.0, 0.0], atol=1e-300)
    with pytest.raises(ConfigError, match="not normalizable|no normalizable"):
        boltzmann_masses(lambda y: -np.asarray(y), 1.0, [0.0, 1.0])


def test_a_lower_well_far_beyond_the_cuts_is_found():
    """A deeper well far beyond the cuts (samples stuck in a metastable well at 0, the
    global minimum at 50): NaN masses at T = 1e-4, and 0.44 at T = 1 in a tail whose exact
    mass is 0.996 (the scan stopped at 13 and the tail's quadrature stepped over the well).
    The scan looks 12 doublings past where U has risen."""
    from scipy import integrate

    from langevin_sim.analysis.stationary import boltzmann_masses

    U = lambda y: np.minimum((np.asarray(y) - 50) ** 2, np.asarray(y) ** 2 + 5)  # noqa: E731
    for T in (1e-4, 1e-2, 1.0):
        f = lambda y: math.exp(-float(U(y)) / T)  # noqa: E731
        parts = [integrate.quad(f, a, b, points=p, limit=500)[0]
                 for a, b, p in ((-60, -0.1, [0.0]), (-0.1, 0.1, [0.0]), (0.1, 120, [50.0]))]
        np.testing.assert_allclose(boltzmann_masses(U, T, [-0.1, 0.1]),
                                   np.array(parts) / sum(parts), rtol=1e-6, atol=1e-12)


def test_a_single_cut_at_a_barrier_top_finds_both_wells():
    """A single cut at 0 between a double well's minima (the mass of the left well): the
    scan started 1e-12 wide, and where the barrier's top is flat to rounding (T = 1e-5) or
    rises over 1e-7 (tilt 1e-6 at T = 1e-6) it stopped there, missing the right well:
    [1, 4e-12] for [0.5, 0.5] and [1, 7e-125] for 1 / (1 + e^-2) = 0.881."""
    from langevin_sim.potentials import DoubleWell
    np.testing.assert_allclose(boltzmann_masses(DoubleWell().marginal_energy, 1e-5, [0.0]),
                               [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(boltzmann_masses(DoubleWell(tilt=1e-6).marginal_energy, 1e-6,
                                                [0.0])[0], 1 / (1 + math.exp(-2)), rtol=1e-6)


def test_samples_where_the_law_has_no_mass_count_against_it():
    """U = 0 on [0, 1], inf elsewhere; 200 of 4000 samples on (1, 1.2]: the trailing bins of
    zero expected count were dropped with their samples (3817 counted, p = 0.05,
    "consistent"); they now join the last bin, as leading ones join the first."""
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.uniform(0, 1, 3800), rng.uniform(1, 1.2, 200)])
    fit = fit_marginal(s, lambda y: np.where((y >= 0) & (y <= 1), 0.0, np.inf), 1.0)
    assert fit.counts.sum() == s.size and fit.p_value < 1e-10
