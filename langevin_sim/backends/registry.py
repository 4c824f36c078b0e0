"""The one registry of fused kernels: (potential class, dynamics class, backend name) -> kernel.

The kernels live in `langevin_sim.kernels`, one module per potential family, and register
themselves there with ``@register(Potential, Dynamics, "numba")``.  This module imports
them only when asked (`kernel_for`, `pairs`: importing `langevin_sim.kernels` imports every
family module, filling the registry); a backend looks a simulation's pair up with `kernel_for`; where it
finds none it runs its fallback (the numba backend: the NumPy reference, saying so once).

How a kernel is called is its backend's convention.  "numba": ``fn(sim, t0, K, k0, k1)`` runs
steps t0 .. t0+K-1 of `sim` in place on `sim.state` and `sim.diverged_step` (k0, k1: the
Philox key of `sim.seed`), as the NumPy reference does (`numpy_backend.reference_advance`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import NAMES


@dataclass(frozen=True)
class Kernel:
    """A registered kernel: `fn`, called by its backend's convention; `first_passage` says
    whether it updates a first-passage observer (`sim.first_passage`) after every step, as the
    reference does; `accepts(sim)`, when given, says whether it runs this simulation's options
    and sizes (False: the backend's fallback runs it); `workspace(sim)`, when given, the bytes
    per replica of the kernel's own device buffers (the "cuda" backend's memory estimate,
    `cuda_runtime.bytes_per_replica`)."""

    fn: Callable
    first_passage: bool = False
    accepts: Callable | None = None
    workspace: Callable | None = None


KERNELS: dict[tuple[type, type, str], Kernel] = {}


def register(potential_cls: type, dynamics_cls: type, backend: str, *, first_passage: bool = False,
             accepts: Callable | None = None, workspace: Callable | None = None):
    """Decorator: `fn` is `backend`'s fused kernel for the pair (potential_cls, dynamics_cls);
    `first_passage=True` when it updates first-passage observers (without it, a run with an
    observer attached takes the backend's fallback); `accepts(sim) -> bool` declines the
    options or sizes it does not run (they take the fallback); `workspace(sim) -> int`: its
    own device buffers' bytes per replica, where they outgrow the generic estimate (`Kernel`).
    One kernel per pair and backend."""
    if backend not in NAMES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(NAMES)}")

    def deco(fn):
        key = (potential_cls, dynamics_cls, backend)
        old = KERNELS.get(key)
        if old is not None and _name(old.fn) != _name(fn):   # the same name again: a reload
            raise ValueError(f"two {backend} kernels for {potential_cls.__name__} x "
                             f"{dynamics_cls.__name__}: {_name(old.fn)} and {_name(fn)}")
        KERNELS[key] = Kernel(fn, first_passage, accepts, workspace)
        return fn
    return deco


def _name(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _registered() -> dict[tuple[type, type, str], Kernel]:
    """KERNELS, filled: importing `langevin_sim.kernels` registers every family's kernels (in
    a fresh process, before any numba simulation, the registry was empty and `kernel_for`
    answered None, "the reference", for every pair)."""
    from .. import kernels  # noqa: F401
    return KERNELS


def kernel_for(potential, dynamics, backend: str) -> Kernel | None:
    """`backend`'s kernel for the pair of these instances, None where it has none."""
    return _registered().get((type(potential), type(dynamics), backend))


def pairs(backend: str) -> list[tuple[type, type]]:
    """The (potential class, dynamics class) pairs with a `backend` kernel."""
    return [(p, d) for p, d, b in _registered() if b == backend]
