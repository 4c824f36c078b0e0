"""A NaN or an infinite state freezes its replica in every backend.  The overflow tests in
test_backends cross a finite bound long before a NaN can appear, so they pass whether or not
NaN is flagged; here a replica starts at x = 1e200 in a double well under a bound of 1e300:
its gradient overflows to inf, so overdamped Langevin and Leimkuhler-Matthews step it to -inf
(beyond any finite bound) and Heun's corrector to NaN (x - eta/2 (inf + (-inf))), which only
the NaN test of the divergence check (|v| <= bound, False for NaN) catches."""
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.dynamics import Heun, LeimkuhlerMatthews, OverdampedLangevin
from langevin_sim.potentials import DoubleWell

from .conftest import both_backends


@pytest.mark.parametrize("dyn", [OverdampedLangevin(0.01, 0.5), Heun(0.01, 0.5),
                                 LeimkuhlerMatthews(0.01, 0.5)],
                         ids=["overdamped", "heun", "lm"])
def test_a_nan_state_freezes_its_replica_in_every_backend(dyn):
    M = 6
    init = np.zeros((M, 1))
    init[2, 0] = 1e200
    out = both_backends(DoubleWell(d=1), dyn, M, 8, seed=1, init=init, divergence_bound=1e300)
    for b, sim in out.items():
        flagged = np.flatnonzero(sim.diverged_step >= 0)
        assert flagged.tolist() == [2], f"{b}: replicas flagged {flagged}, want [2]"
        assert sim.diverged_step[2] == 1, f"{b}: flagged at {sim.diverged_step[2]}, not step 1"
        assert np.isfinite(sim.state["x"]).all(), f"{b}: a non-finite state was committed"
    np.testing.assert_array_equal(out["numba"].diverged_step, out["numpy"].diverged_step)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_infinite_bound_still_refuses_infinite_states(dtype):
    """divergence_bound=inf is the dtype's largest float (|inf| <= inf would let -inf in)."""
    init = np.zeros((3, 1))
    init[1, 0] = 1e30 if dtype == "float32" else 1e200
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 0.5), 3, backend="numpy",
                     seed=1, init=init, dtype=dtype, divergence_bound=np.inf)
    assert sim.divergence_bound == np.finfo(dtype).max
    with np.errstate(all="ignore"):
        sim.advance(3)
    assert sim.diverged_step.tolist() == [-1, 1, -1] and np.isfinite(sim.state["x"]).all()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_mala_is_not_frozen_by_its_count_of_accepted_moves(backend):
    """The divergence bound held MALA's `accepted` count too: at divergence_bound=1e3 every
    replica froze after 1000 accepted moves (|x| <= 2.4), and at the default 1e8 after 1e8."""
    import warnings

    from langevin_sim.dynamics import MALA
    from langevin_sim.potentials import Quadratic

    with warnings.catch_warnings():
        warnings.simplefilter("error")     # no DivergenceWarning
        sim = Simulation(Quadratic(spectrum=[1.0]), MALA(step=0.1, temperature=1.0), 4,
                         backend=backend, seed=0, divergence_bound=1e3)
        sim.advance(1500)
        assert (sim.diverged_step < 0).all() and (sim.state["accepted"] > 1000).all()
        sim = Simulation(Quadratic(spectrum=[1.0]), MALA(step=0.1, temperature=1.0), 4,
                         backend=backend, seed=0)
        sim.state["accepted"][:] = 1e8 - 5
        sim.advance(100)
        assert (sim.diverged_step < 0).all()
