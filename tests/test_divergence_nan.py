"""A NaN freezes its replica: the divergence test is |v| <= bound, False for NaN, in every
backend.  The overflow tests in test_backends cross a finite bound long before a NaN can
appear, so they pass whether or not NaN is flagged; here the bound is infinite, so the
replica is frozen only because its state becomes NaN (x0 = 1e30 in a double well:
-4e88, +2.6e264, -inf, then -inf - eta * grad(-inf) = -inf + inf = NaN)."""
import numpy as np
import pytest

from langevin_sim.dynamics import Heun, LeimkuhlerMatthews, OverdampedLangevin
from langevin_sim.potentials import DoubleWell

from .conftest import both_backends


@pytest.mark.parametrize("dyn", [OverdampedLangevin(0.01, 0.5), Heun(0.01, 0.5),
                                 LeimkuhlerMatthews(0.01, 0.5)],
                         ids=["overdamped", "heun", "lm"])
def test_a_nan_state_freezes_its_replica_in_every_backend(dyn):
    M = 6
    init = np.zeros((M, 1))
    init[2, 0] = 1e30
    out = both_backends(DoubleWell(d=1), dyn, M, 8, seed=1, init=init,
                        divergence_bound=np.inf)
    for b, sim in out.items():
        flagged = np.flatnonzero(sim.diverged_step >= 0)
        assert flagged.tolist() == [2], f"{b}: replicas flagged {flagged}, want [2] (the NaN one)"
        assert not np.isnan(sim.state["x"]).any(), f"{b}: a NaN state was committed"
    np.testing.assert_array_equal(out["numba"].diverged_step, out["numpy"].diverged_step)
