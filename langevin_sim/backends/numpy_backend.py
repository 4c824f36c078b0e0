"""NumPy reference backend: one dynamics step at a time, float64-exact specification."""
from __future__ import annotations

import weakref

import numpy as np

from ..dynamics.base import NoiseSource
from ..first_passage import STATE_KEYS as FP_KEYS


def within_bound(v, bound):
    """The divergence test of one value (arrays or scalars; the fused kernels compile it):
    |v| <= bound, False for NaN and inf."""
    return abs(v) <= bound


def finite_and_bounded(arrays, bound: float) -> np.ndarray:
    """(M,) bool: every float entry of every (M, ...) array is finite and |.| <= bound."""
    ok = None
    for a in arrays:
        if a.dtype.kind != "f":
            continue
        a2 = a.reshape(a.shape[0], -1)
        good = np.all(within_bound(a2, bound), axis=1)
        ok = good if ok is None else ok & good
    return ok


class NumpyBackend:
    """Reference stepping with divergence freezing; state arrays are updated in place."""

    name = "numpy"

    def advance(self, sim, t0: int, K: int) -> None:
        """Run steps t0 .. t0+K-1 on `sim.state`; freeze and flag diverging replicas."""
        reference_advance(sim, t0, K)


# each Simulation's NoiseSource, kept from one advance to the next while its replicas stay
# (a run advances by a record interval, a replica-exchange ladder by a swap interval: the
# windows read ahead outlive them)
_NOISE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
READ_PAST = 1024     # steps read ahead past the advance's end, at most (`NoiseSource.READ_AHEAD`)


def _noise_source(sim, replicas: np.ndarray, end: int) -> NoiseSource:
    """The reference's NoiseSource of `sim` for `replicas` (global ids), reading ahead to
    step end + READ_PAST."""
    src = _NOISE.get(sim)
    if src is None or src.seed != sim.seed or not np.array_equal(src.replicas, replicas):
        src = _NOISE[sim] = NoiseSource(sim.seed, replicas)
    src.horizon = end + READ_PAST
    return src


def reference_advance(sim, t0: int, K: int, replicas=None) -> None:
    """Reference steps for all replicas (or the index array `replicas`) of `sim`.  A
    first-passage observer (`sim.first_passage`) is updated after every step from the new
    positions (a frozen replica keeps its position, so its entries do not change)."""
    idx = np.arange(sim.n_replicas) if replicas is None else replicas
    alive = idx[sim.diverged_step[idx] < 0]
    if alive.size == 0:
        return
    fp = getattr(sim, "first_passage", None)
    fp_state = None if fp is None else {k: sim.state[k][alive] for k in FP_KEYS}
    state = {k: v[alive] for k, v in sim.state.items() if k not in FP_KEYS}
    noise = _noise_source(sim, sim.first_replica + alive, t0 + K + sim.dynamics.steps_ahead)
    live = np.ones(alive.size, bool)
    with np.errstate(all="ignore"):
        for t in range(t0, t0 + K):
            new = sim.dynamics.reference_step(sim.potential, state, t, noise)
            ok = finite_and_bounded(sim.dynamics.bounded(new), sim.divergence_bound)
            bad = live & ~ok
            if bad.any():
                sim.diverged_step[alive[bad]] = t + 1
                live &= ok
            if not live.all():
                for k in new:
                    sel = live.reshape((-1,) + (1,) * (new[k].ndim - 1))
                    new[k] = np.where(sel, new[k], state[k]).astype(state[k].dtype)
            state = {k: np.asarray(new[k], dtype=state[k].dtype) for k in new}
            if fp_state is not None:
                fp.update(fp_state, state["x"], t + 1)
    for k, v in state.items():
        sim.state[k][alive] = v
    for k, v in (fp_state or {}).items():
        sim.state[k][alive] = v
