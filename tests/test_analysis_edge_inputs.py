"""Legal but unusual inputs to the analysis library (found by a user audit): each gives the
right number or one ConfigError naming the fix, never a traceback or another record's data."""
import numpy as np
import pytest

from langevin_sim import ConfigError, Simulation
from langevin_sim.analysis import diagnostics, drift, spinglass, stationary
from langevin_sim.analysis.escape import arrhenius_fit
from langevin_sim.dynamics import SGD, OverdampedLangevin, Schedule
from langevin_sim.potentials import DoubleWell, SphericalPSpin, Valley


def test_density_records_outside_the_run_are_refused_not_wrapped():
    """records=[7] of 5 records showed record 2's histogram (indices were taken mod n)."""
    t = np.arange(5.0)
    s = np.random.default_rng(0).exponential(1.0, (5, 200)) + 10 * np.arange(5)[:, None]
    with pytest.raises(ConfigError, match=r"records \[7, -6\] reach outside the 5 records"):
        drift.density_evolution(t, s, lambda x: -x, records=[7, -6], lo=0, hi=60)
    ok = drift.density_evolution(t, s, lambda x: -x, records=[-1], lo=0, hi=60)
    assert ok.times.tolist() == [4.0]


def test_a_trace_without_finite_values_is_one_line():
    with pytest.raises(ConfigError, match="sharpness: no record has a finite value"):
        drift.trace(np.arange(3.0), np.full((3, 4), np.nan), "sharpness")


def test_burn_and_batch_are_counts():
    """burn=-12 kept the last 12 records; batch=0 divided by zero."""
    x = np.random.default_rng(0).standard_normal((40, 8, 2))
    with pytest.raises(ConfigError, match=r"burn \(records to drop\) must be an integer >= 0"):
        diagnostics.diagnose(x, burn=-12)
    with pytest.raises(ConfigError, match=r"batch \(records per batch\) must be an integer >= 1"):
        diagnostics.burn_in(x, batch=0)


@pytest.mark.parametrize("args, says", [
    (([0.3, 0.3], [10.0, 11.0], [1.0, 1.0]), "2 distinct temperatures"),
    (([0.3, 0.4], [np.inf, 11.0], [1.0, 1.0]), "finite times"),
    (([0.3, 0.4], [10.0, 11.0], [0.0, 1.0]), "tau_se must be finite and > 0"),
])
def test_arrhenius_fit_refuses_what_it_cannot_fit(args, says):
    with pytest.raises(ConfigError, match=says):
        arrhenius_fit(*args)


def test_stationary_marginal_of_a_run_without_noise_or_outside_its_records():
    """SGD's default temperature 0 divided by zero; record = n read nothing and said '0 finite
    samples'."""
    run = Simulation(DoubleWell(d=1), SGD(lr=0.01), 64, backend="numpy", seed=0).run(20, 10)
    with pytest.raises(ConfigError, match="needs a temperature > 0; this run's SGD has T = 0"):
        stationary.run_marginal_fit(run)
    hot = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 0.5), 64, backend="numpy",
                     seed=0).run(20, 10)
    with pytest.raises(ConfigError, match="record 3 is outside the run's 3 records"):
        stationary.run_marginal_fit(hot, record=3)
    assert stationary.run_marginal_fit(hot, record=-3).n == 64


def test_scheduled_temperatures_in_drift_and_spin_glass_analyses():
    """An annealed Valley run: the default region takes the schedule's largest temperature
    (it said "pass the temperature explicitly", with nothing to pass it to); a p-spin
    anneal's relaxation compares with the temperature it is given."""
    anneal = OverdampedLangevin(1e-2, Schedule("linear", 0.5, 0.25, 200))
    run = Simulation(Valley(), anneal, 32, backend="numpy", seed=0).run(200, 20)
    assert drift.run_drift(run).v is not None
    pspin = Simulation(SphericalPSpin(16, 3, seed=1), anneal, 8, backend="numpy",
                       seed=0).run(200, 20)
    with pytest.raises(ConfigError, match="scheduled .* pass temperature="):
        spinglass.run_relaxation(pspin)
    assert spinglass.run_relaxation(pspin, 0.1, 2.0, temperature=0.25).temperature == 0.25
