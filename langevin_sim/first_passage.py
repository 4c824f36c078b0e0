"""First passage into labelled regions, updated after every step (not only at records).

From records an escape is found only at the first record inside, which can be many record
spacings late (a replica can enter and leave again between two records); `FirstPassage` is
updated by the backend after every step, per replica and region, from the positions alone
(it draws no random numbers and changes no trajectory).  Regions, each with a label:

    HalfSpace(normal, offset, label)   {x : normal . x > offset}  (the double well's barrier
                                        crossing: HalfSpace([1], 0, "right"), or along x_1)
    Ball(center, radius, label)        {x : |x - center|^2 < radius^2}

Per replica m and region r, with I_n = [x_n in region] at step count n (n counted as the
Simulation's `step`, from the step at which the Simulation was built):

    first_entry_step   min{n : I_n}       (0 when it starts inside; -1: not yet)
    first_exit_step    min{n : not I_n}   (0 when it starts outside; -1: not yet)
    last_crossing_step max{n >= 1 : I_n != I_(n-1)}  (-1: none yet)
    crossings          #{n >= 1 : I_n != I_(n-1)}    (boundary crossings, either direction)
    inside             I_n now (0 / 1)

All int64 (M, R).  They live in `Simulation.state` under the keys `STATE_KEYS`, so that they
are checkpointed with the state and a resumed run continues them bit for bit.  A replica that
diverged is frozen, so its entries stop changing at its `diverged_step` (censor it there).
A value -1 is right-censored at the step the arrays describe (`FirstPassageData.step`).

Membership is evaluated in float64 with one fixed summation order (coordinate 0, 1, ..), by
the NumPy reference (`membership`) and the compiled kernels alike, so they agree bit for bit
on the same positions.  Time is step * step size (constant steps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

HALF_SPACE, BALL = 0, 1
STATE_KEYS = ("fp_first_entry", "fp_first_exit", "fp_last_crossing", "fp_crossings", "fp_inside")
NAMES = ("first_entry_step", "first_exit_step", "last_crossing_step", "crossings", "inside")
FIRST_ENTRY, FIRST_EXIT, LAST_CROSSING, CROSSINGS, INSIDE = range(5)


def _vector(v, what: str) -> tuple[float, ...]:
    a = np.asarray(v, dtype=np.float64).ravel()
    if a.size < 1 or not np.all(np.isfinite(a)):
        raise ConfigError(f"{what} must be a non-empty list of finite numbers, got {v!r}")
    return tuple(float(t) for t in a)


@dataclass(frozen=True)
class HalfSpace:
    """{x : normal . x > offset} (normal (d,), any length; offset in units of normal . x)."""

    normal: tuple
    offset: float = 0.0
    label: str = "region"

    def __post_init__(self):
        object.__setattr__(self, "normal", _vector(self.normal, "HalfSpace normal"))
        if not any(self.normal):
            raise ConfigError("HalfSpace normal must not be zero")
        if not np.isfinite(self.offset):
            raise ConfigError(f"HalfSpace offset must be finite, got {self.offset}")
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "label", str(self.label))

    kind = HALF_SPACE

    @property
    def vector(self) -> tuple:
        return self.normal

    @property
    def threshold(self) -> float:
        return self.offset

    def to_dict(self) -> dict:
        return {"class": "HalfSpace", "normal": list(self.normal), "offset": self.offset,
                "label": self.label}


@dataclass(frozen=True)
class Ball:
    """{x : |x - center|^2 < radius^2} (open ball; center (d,), radius > 0)."""

    center: tuple
    radius: float = 1.0
    label: str = "region"

    def __post_init__(self):
        object.__setattr__(self, "center", _vector(self.center, "Ball center"))
        if not (np.isfinite(self.radius) and self.radius > 0):
            raise ConfigError(f"Ball radius must be finite and > 0, got {self.radius}")
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "label", str(self.label))

    kind = BALL

    @property
    def vector(self) -> tuple:
        return self.center

    @property
    def threshold(self) -> float:
        return self.radius * self.radius

    def to_dict(self) -> dict:
        return {"class": "Ball", "center": list(self.center), "radius": self.radius,
                "label": self.label}


REGIONS: dict[str, type[HalfSpace] | type[Ball]] = {"HalfSpace": HalfSpace, "Ball": Ball}


class FirstPassage:
    """Per-step first-passage observer for one or more labelled regions.

    `FirstPassage(HalfSpace([1.0], 0.0, "right"))`, or several regions (labels unique):
    `FirstPassage(HalfSpace([1, 0], 0, "right"), Ball([-1, 0], 0.3, "left_well"))`.  Pass it
    as `Simulation(..., first_passage=...)`; the run file then holds `/first_passage` and
    `open_run(path).first_passage` returns a `FirstPassageData`.  See the module docstring
    for the definitions.
    """

    def __init__(self, *regions: HalfSpace | Ball | list[HalfSpace | Ball]
                 | tuple[HalfSpace | Ball, ...]) -> None:
        if len(regions) == 1 and isinstance(regions[0], (list, tuple)):
            regions = tuple(regions[0])
        if not regions:
            raise ConfigError("FirstPassage needs at least one region, e.g. "
                              "FirstPassage(HalfSpace([1.0], 0.0, 'right'))")
        for r in regions:
            if not isinstance(r, (HalfSpace, Ball)):
                raise ConfigError(f"FirstPassage regions must be HalfSpace or Ball, got "
                                  f"{type(r).__name__}")
        checked = cast("tuple[HalfSpace | Ball, ...]", tuple(regions))   # (checked above)
        labels = [r.label for r in checked]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"FirstPassage region labels must be unique, got {labels}")
        self.regions = checked

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(r.label for r in self.regions)

    def __len__(self) -> int:
        return len(self.regions)

    def __repr__(self) -> str:
        return f"FirstPassage({', '.join(map(repr, self.regions))})"

    def index(self, label: str) -> int:
        if label not in self.labels:
            raise ConfigError(f"no first-passage region {label!r}; have {list(self.labels)}")
        return self.labels.index(label)

    # -- config ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON form stored in /config, so that `resume` rebuilds the observer."""
        return {"class": "FirstPassage", "regions": [r.to_dict() for r in self.regions]}

    @staticmethod
    def from_dict(d: dict) -> "FirstPassage":
        regions = []
        for r in d["regions"]:
            r = dict(r)
            name = r.pop("class")
            if name not in REGIONS:
                raise ConfigError(f"unknown first-passage region {name!r}; known: {sorted(REGIONS)}")
            regions.append(REGIONS[name](**r))
        return FirstPassage(*regions)

    def check(self, d: int) -> None:
        """ConfigError unless every region lives in d dimensions."""
        for r in self.regions:
            if len(r.vector) != d:
                what = "normal" if r.kind == HALF_SPACE else "center"
                raise ConfigError(f"first-passage region {r.label!r} has a {what} of length "
                                  f"{len(r.vector)} but the potential has d={d}; give {d} numbers")

    def arrays(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kinds (R,) int64, vectors (R, d) float64, thresholds (R,) float64) for kernels:
        half-space: normal and offset; ball: center and radius^2."""
        self.check(d)
        kinds = np.array([r.kind for r in self.regions], dtype=np.int64)
        vecs = np.array([r.vector for r in self.regions], dtype=np.float64).reshape(len(self), d)
        thr = np.array([r.threshold for r in self.regions], dtype=np.float64)
        return kinds, np.ascontiguousarray(vecs), thr

    # -- the reference -----------------------------------------------------------
    def membership(self, x: ArrayLike) -> np.ndarray:
        """(M, R) bool: x (M, d) in each region, in float64 summed over coordinates 0, 1, ..
        in that order (the compiled kernels do the same, so they agree bit for bit)."""
        x = np.asarray(x, dtype=np.float64)
        M, d = x.shape
        kinds, vecs, thr = self.arrays(d)
        out = np.empty((M, len(self)), dtype=bool)
        for k in range(len(self)):
            s = np.zeros(M)
            for i in range(d):
                if kinds[k] == HALF_SPACE:
                    s = s + vecs[k, i] * x[:, i]
                else:
                    y = x[:, i] - vecs[k, i]
                    s = s + y * y
            out[:, k] = s > thr[k] if kinds[k] == HALF_SPACE else s < thr[k]
        return out

    def init_state(self, x: ArrayLike) -> dict[str, np.ndarray]:
        """The state arrays (STATE_KEYS -> (M, R) int64) at the starting positions x."""
        now = self.membership(x)
        M, R = now.shape
        return {"fp_first_entry": np.where(now, 0, -1).astype(np.int64),
                "fp_first_exit": np.where(now, -1, 0).astype(np.int64),
                "fp_last_crossing": np.full((M, R), -1, np.int64),
                "fp_crossings": np.zeros((M, R), np.int64),
                "fp_inside": now.astype(np.int64)}

    def update(self, fp: dict[str, np.ndarray], x: ArrayLike, step: int) -> None:
        """Update the state arrays `fp` (STATE_KEYS -> (m, R), in place) with positions x (m, d)
        at step count `step` (the count after the step just taken)."""
        now = self.membership(x)
        was = fp["fp_inside"] != 0
        change = now != was
        fp["fp_crossings"] += change
        fp["fp_last_crossing"][change] = step
        fp["fp_first_entry"][now & (fp["fp_first_entry"] < 0)] = step
        fp["fp_first_exit"][~now & (fp["fp_first_exit"] < 0)] = step
        fp["fp_inside"][...] = now


@dataclass(frozen=True, eq=False)
class FirstPassageData:
    """A run's first-passage arrays as committed (`open_run(path).first_passage`).

    labels (R,), regions (their `to_dict()` forms), replica (M,) global ids, step: the step
    count they describe (right-censoring: -1 means "not by `step`"), dt: time per step (nan
    for scheduled steps), and (M, R) int64 arrays first_entry_step,
    first_exit_step, last_crossing_step, crossings, inside; diverged_step (M,) (-1: never).
    """

    labels: tuple
    regions: tuple
    replica: np.ndarray
    step: int
    dt: float
    first_entry_step: np.ndarray
    first_exit_step: np.ndarray
    last_crossing_step: np.ndarray
    crossings: np.ndarray
    inside: np.ndarray
    diverged_step: np.ndarray

    def index(self, label: str | None) -> int:
        if label is None:
            return 0
        if label not in self.labels:
            raise ConfigError(f"no first-passage region {label!r} in this run; have "
                              f"{list(self.labels)}")
        return list(self.labels).index(label)

    def table(self) -> str:
        rows = [f"first passage at step {self.step} ({len(self.replica)} replicas)",
                f"{'region':>12} {'start in':>9} {'entered':>8} {'crossings':>10}"]
        for k, lab in enumerate(self.labels):
            e = self.first_entry_step[:, k]
            rows.append(f"{lab:>12} {int(np.sum(e == 0)):>9} "
                        f"{int(np.sum(e > 0)):>8} "
                        f"{int(self.crossings[:, k].sum()):>10}")
        return "\n".join(rows)
