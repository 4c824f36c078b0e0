"""Base class of the analysis results: how a notebook displays and compares them."""
from __future__ import annotations

import dataclasses

import numpy as np


def _same(a: object, b: object) -> bool:
    """Whether two field values hold the same numbers: arrays element by element (NaN equal
    to NaN, shapes must match), tuples / lists / dicts item by item, nested results by their
    own `==`."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        nan = a.dtype.kind in "fc" and b.dtype.kind in "fc"
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=nan))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


class Result:
    """Mixin of the analysis results (frozen dataclasses with `table()`): IPython / Jupyter
    display a result as its table (`_repr_pretty_`); `==` compares the fields' numbers
    (arrays element-wise, NaN equal to NaN) and answers one bool, where the dataclass's own
    `==` would raise NumPy's "truth value of an array is ambiguous"; `repr` stays the
    dataclass's."""

    __slots__ = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # IPython takes the first class in the MRO defining _repr_pretty_ or __repr__: each
        # result's own dataclass __repr__ would win over an inherited _repr_pretty_. An
        # __eq__ already in the class's namespace is one @dataclass leaves in place.
        cls._repr_pretty_ = Result._repr_pretty_
        if "__eq__" not in cls.__dict__:
            cls.__eq__ = Result.__eq__

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(f"{type(self).__name__}(...)" if cycle else self.table())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name))
                   for f in dataclasses.fields(self))
