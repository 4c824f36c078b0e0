"""Dynamics base class and the NumPy reference context for random numbers."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar

import numpy as np

from .. import rng
from ..errors import ConfigError
from .schedules import Schedule

REGISTRY: dict[str, type["Dynamics"]] = {}


class NoiseSource:
    """Random numbers for replicas `replicas` (global ids) under `seed` (NumPy reference).

    A step's draws (`normals`, and `words` at start = step * count) are read ahead: the
    following steps' draws, up to step `horizon` - 1 and `READ_AHEAD` numbers, come from the
    same call (the same numbers: each is a function of its stream position). Drawn one step
    at a time for a few replicas, the reference spent most of its time in NumPy's per-call
    overhead. Without a horizon, each step's draws are made alone."""

    READ_AHEAD = 1 << 16        # numbers per read-ahead draw, at most

    def __init__(self, seed: int, replicas: np.ndarray, horizon: int | None = None):
        self.seed, self.replicas = int(seed), np.asarray(replicas, dtype=np.uint64)
        self.horizon = horizon
        self._ahead: dict = {}   # (kind, purpose, count, dtype) -> (first step, (M, steps*count))
        self._perms: tuple | None = None

    def _step(self, key: tuple, step: int, count: int, draw) -> np.ndarray:
        """(M, count) draws of `step`: from the read-ahead window of `key`, drawn anew
        (draw(first position, numbers)) when the step lies outside it."""
        first, block = self._ahead.get(key, (step, None))
        if block is None or not first <= step < first + block.shape[1] // count:
            steps = 1
            if self.horizon is not None:
                cap = self.READ_AHEAD // (count * max(len(self.replicas), 1))
                last = (2**63 - 1) // count       # stream positions stay within int64
                steps = max(1, min(self.horizon - step, cap, last - step))
            first, block = step, draw(step * count, steps * count)
            self._ahead[key] = (first, block)
        j = (step - first) * count
        return block[:, j:j + count].copy()

    def normals(self, step: int, lanes: int, purpose: int = rng.NOISE,
                dtype=np.float64) -> np.ndarray:
        """(M, lanes) normals of one step: float64, or float32 ones for float32 states."""
        if lanes <= 0:
            return rng.step_normals(self.seed, self.replicas, step, lanes, purpose, dtype)
        return self._step(("normals", purpose, lanes, np.dtype(dtype)), step, lanes,
                          lambda start, n: rng.stream_normals(self.seed, purpose, self.replicas,
                                                              start, n, dtype))

    def words(self, purpose: int, start: int, count: int) -> np.ndarray:
        """(M, count) uint64 words at stream positions start..start+count-1."""
        def draw(first: int, n: int) -> np.ndarray:
            return rng.stream_words(self.seed, purpose, self.replicas, first, n)
        if count <= 0 or start % count:
            return draw(start, count)
        return self._step(("words", purpose, count, None), start // count, count, draw)

    def permutations(self, epoch: int, n: int) -> np.ndarray:
        """(M, n) int64: every replica's `rng.epoch_permutation` of `epoch` (a stable sort of
        its PERMUTE words), kept for the latest epoch: its steps' minibatches are slices of
        it (made again at every step, one replica at a time, epoch sampling ran ~50x slower
        than "iid" on this backend)."""
        if self._perms is None or self._perms[0] != (epoch, n):
            w = rng.stream_words(self.seed, rng.PERMUTE, self.replicas, epoch * n, n)
            self._perms = ((epoch, n), np.argsort(w, axis=1, kind="stable").astype(np.int64))
        return self._perms[1]


@dataclasses.dataclass(frozen=True)
class Dynamics:
    """An update rule x_t -> x_{t+1} for all replicas; parameters validated at construction.

    `state_names` lists the per-replica state arrays (all (M, d) unless `init_state` says
    otherwise); `x` is always the position.  `reference_step` is the NumPy reference for one step t.
    """

    state_names: ClassVar[tuple[str, ...]] = ("x",)
    # whether the chain samples exp(-U/T) at its temperature (to its discretization's order):
    # replica exchange swaps configurations between rungs of such dynamics only
    samples_boltzmann: ClassVar[bool] = False
    # NOISE stream positions a step draws per coordinate (OBABO: 2, its two O half-steps),
    # and the steps past t whose normals step t reads (Leimkuhler-Matthews: 1): the run's
    # end is held to stream positions below 2**63 by them (`Simulation._check_end`)
    normals_per_coordinate: ClassVar[int] = 1
    steps_ahead: ClassVar[int] = 0
    # state arrays that count (MALA's `accepted`): not held to the divergence bound, which
    # froze a MALA replica after `bound` accepted moves (1000 at divergence_bound=1e3)
    counters: ClassVar[tuple[str, ...]] = ()

    def bounded(self, state: dict) -> list:
        """The arrays of `state` the divergence test holds to the bound (all but `counters`)."""
        return [v for k, v in state.items() if k not in self.counters]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        REGISTRY[cls.__name__] = cls
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Dynamics.__repr__   # set before @dataclass, which then keeps it

    def __repr__(self) -> str:
        """The dataclass repr with a constant Schedule as its plain value (step=0.01), so
        that eval(repr(d)) == d still holds."""
        args = []
        for f in dataclasses.fields(self):
            if f.repr:
                v = getattr(self, f.name)
                args.append(f"{f.name}={v.start if isinstance(v, Schedule) and v.kind == 'constant' else v!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def init_state(self, potential, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": x}

    def reference_step(self, potential, state: dict, t: int, noise: NoiseSource) -> dict:
        raise NotImplementedError

    def observables(self, state: dict) -> dict[str, np.ndarray]:
        """Per-replica quantities of the dynamics recorded with the energy: name -> (M, ...)."""
        return {}

    def check_potential(self, potential) -> None:
        """Raise ConfigError when this dynamics cannot run on `potential`."""

    def to_dict(self) -> dict[str, Any]:
        out = {"class": type(self).__name__}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Schedule) else v
        return out

    @staticmethod
    def from_dict(d: dict) -> "Dynamics":
        d = dict(d)
        name = d.pop("class")
        if name not in REGISTRY:
            raise ConfigError(f"unknown dynamics {name!r}; choose one of {sorted(REGISTRY)}")
        with warnings.catch_warnings():     # a stored config's legacy keys are not the caller's
            warnings.simplefilter("ignore", DeprecationWarning)
            return REGISTRY[name](**d)


def project(potential, x, v):
    """Tangent projection of v at x for constrained potentials (identity otherwise)."""
    return potential.project(x, v) if potential.constrained else v


def retract(potential, x):
    return potential.retract(x) if potential.constrained else x
