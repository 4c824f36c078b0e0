"""Base class of the analysis results: how a notebook displays them."""
from __future__ import annotations


class Result:
    """Mixin of the analysis results (frozen dataclasses with `table()`): IPython / Jupyter
    display a result as its table (`_repr_pretty_`); `repr` and `==` stay the dataclass's."""

    __slots__ = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # IPython takes the first class in the MRO defining _repr_pretty_ or __repr__: each
        # result's own dataclass __repr__ would win over an inherited _repr_pretty_
        cls._repr_pretty_ = Result._repr_pretty_

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(f"{type(self).__name__}(...)" if cycle else self.table())
