"""Step-size and temperature schedules: a value as a pure function of the integer step."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, check_int

KINDS = {"constant": 0, "linear": 1, "exponential": 2, "cosine": 3}


def schedule_value(kind, start, end, steps, step):
    """Schedule value at `step` (scalar math; also compiled by Numba, for the CPU and CUDA).

    kind 0 constant: start; 1 linear; 2 exponential (geometric); 3 cosine from start to
    end over `steps` steps, constant at `end` afterwards.
    """
    if kind == 0:
        return start
    f = step / steps
    f = 1.0 if f > 1.0 else f   # min(f, 1.0), which Numba's CUDA target fails to compile
    if kind == 1:
        return start + (end - start) * f
    if kind == 2:
        return start * (end / start) ** f
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * f))


@dataclass(frozen=True)
class Schedule:
    """A schedule from `start` to `end` over `steps` steps (units of the scheduled quantity)."""

    kind: str = "constant"
    start: float = 0.0
    end: float | None = None
    steps: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown schedule kind {self.kind!r}; use one of {sorted(KINDS)}")
        if self.end is None:
            object.__setattr__(self, "end", self.start)
        for field in ("start", "end"):
            object.__setattr__(self, field, as_number(getattr(self, field),
                                                      f"the schedule's {field}"))
        object.__setattr__(self, "steps", check_int("schedule steps", self.steps))
        if self.kind == "exponential" and (self.start <= 0 or self.end <= 0):
            raise ConfigError("an exponential schedule needs start > 0 and end > 0")
        if self.kind == "exponential" and not 0 < self.end / self.start < math.inf:
            raise ConfigError(f"an exponential schedule from {self.start:g} to {self.end:g}: "
                              "end / start is beyond float64 (its values would be inf or 0 "
                              "mid-ramp)")

    @property
    def code(self) -> tuple[int, float, float, float]:
        """(kind id, start, end, steps) as passed to compiled kernels."""
        return KINDS[self.kind], float(self.start), float(self.end), float(self.steps)

    def __call__(self, step: int) -> float:
        return schedule_value(*self.code, step)

    def exact_sum(self, t0: int, t1: int) -> int:
        """The sum of the values at steps t0 .. t1-1 (>= 0) exactly, in units of 2**-1074
        (every float64 is a whole number of them).  Long ranges are summed by compiled code
        (`kernels.common.schedule_digits`: ~20 ns a step, where this loop takes ~1 us); both
        are exact, so they agree."""
        if t1 - t0 <= EXACT_SUM_PYTHON:
            return sum(exact_units(self(k)) for k in range(t0, t1))
        from ..kernels.common import schedule_digits
        digits = schedule_digits(np.array(self.code, dtype=np.float64), t0, t1)
        return sum(int(digits[i]) << int(i) for i in np.flatnonzero(digits))

    def bounds(self) -> tuple[float, float]:
        return min(self.start, self.end), max(self.start, self.end)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "start": self.start, "end": self.end, "steps": self.steps}


EXACT_SUM_PYTHON = 4096   # `Schedule.exact_sum` over at most this many steps: a Python loop
_UNIT = 1074              # float64 values are whole multiples of 2**-1074


def exact_units(x: float) -> int:
    """Finite float64 x in units of 2**-1074, exactly (sums of these ints are exact)."""
    num, den = float(x).as_integer_ratio()
    return num << (_UNIT + 1 - den.bit_length())


def as_number(value, name: str) -> float:
    """`value` as a finite float: a number, or a string float() reads (as `as_schedule`
    takes a constant); ConfigError naming `name` otherwise (a bool, inf and NaN included: an
    infinite weight decay or mass froze or diverged every replica at step 1)."""
    if isinstance(value, (Schedule, dict)):
        raise ConfigError(f"{name} must be a number (it cannot follow a schedule), got {value!r}")
    if isinstance(value, (bool, np.bool_)):     # (float(True) is 1.0: a notebook's slip)
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return out


def as_schedule(value, name: str, positive: bool) -> Schedule:
    """Coerce a float, dict or Schedule to a Schedule and check its sign."""
    if isinstance(value, Schedule):
        s = value
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(Schedule.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"{name}: unknown schedule key(s) {unknown}; a schedule is "
                              f"{{kind, start, end, steps}}, e.g. {{'kind': 'linear', "
                              f"'start': 0.1, 'end': 0.01, 'steps': 1000}}")
        s = Schedule(**value)
    elif isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a number or a Schedule, got {value!r}")
    else:
        try:
            s = Schedule("constant", float(value))
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number or a Schedule, got {value!r}") from None
    lo, hi = s.bounds()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if positive and lo <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}; choose a positive {name}")
    if not positive and lo < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}; use temperature=0 for no noise")
    return s
