"""Record-time observers: the base class that registers them, so that `resume` rebuilds them."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .errors import ConfigError, RunFileError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

REGISTRY: dict[str, type["Observer"]] = {}


class Observer:
    """What `Simulation(observers=...)` takes: `obs(sim) -> {name: (M, ...)}` at every record,
    and `to_dict() -> {"class": <class name>, **params}` for the run's config.  Subclasses
    register under their class name (as potentials do), so that `resume` rebuilds one as
    ``cls(**params)``; a subclass defined outside the package is found once its module is
    imported (``langevin-sim resume --import MODULE``)."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        REGISTRY[cls.__name__] = cls

    def __call__(self, sim, /) -> Mapping[str, ArrayLike]:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError


def check_observer(obs) -> None:
    """ConfigError unless `obs` can be stored and rebuilt: callable, with a `to_dict()` naming
    a registered `Observer` subclass (a run file of anything else can never be resumed)."""
    spec = obs.to_dict() if callable(getattr(obs, "to_dict", None)) else None
    if (not callable(obs) or not isinstance(spec, dict)
            or REGISTRY.get(spec.get("class")) is not type(obs)):   # (its own class, by name)
        raise ConfigError(f"observer {obs!r}: an observer subclasses langevin_sim.observers."
                          "Observer, whose to_dict() returns {'class': its class name, "
                          "**the arguments that rebuild it} (so that resume can)")


def rebuild(spec: dict) -> Observer:
    """The observer of a run config's `to_dict()` form."""
    from .potentials import sharpness  # noqa: F401  (registers the package's own)

    spec = dict(spec)
    name = spec.pop("class")
    if name not in REGISTRY:
        raise RunFileError(f"unknown observer {name!r} in run config (known: {sorted(REGISTRY)}); "
                           "import the module defining it first (langevin-sim resume --import "
                           "MODULE), whose class must subclass langevin_sim.Observer (a class "
                           "with only __call__ and to_dict, as older versions took, is not found)")
    return REGISTRY[name](**spec)
