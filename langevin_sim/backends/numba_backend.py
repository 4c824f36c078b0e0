"""Numba CPU backend: the fused kernels registered for "numba" (one module per potential
family in `langevin_sim.kernels`), the NumPy reference for the other pairs."""
from __future__ import annotations

import warnings

import numpy as np

from .. import kernels  # noqa: F401  (imports every family module: fills the registry)
from .. import rng
from ..kernels import drivers
from .. import warmup
from . import registry
from .numpy_backend import reference_advance

_warned: set = set()   # the fallbacks this process has warned about
COMPILED_ENERGY_SIZE = 1 << 13   # M * d from which records use the compiled energy


def has_kernel(potential, dynamics) -> bool:
    """Whether the pair of these instances has a fused Numba kernel."""
    return registry.kernel_for(potential, dynamics, NumbaBackend.name) is not None


class NumbaBackend:
    """Fused multi-step kernels, parallel over replicas; reference fallback otherwise."""

    name = "numba"

    def advance(self, sim, t0: int, K: int) -> None:
        """Steps t0 .. t0+K-1 by the pair's registered kernel, or by the NumPy reference where
        there is none or where a first-passage observer is attached that the kernel does not
        update (warning once per pair and reason)."""
        pot, dyn = type(sim.potential).__name__, type(sim.dynamics).__name__
        kernel = registry.kernel_for(sim.potential, sim.dynamics, self.name)
        if kernel is None:
            _warn_once((pot, dyn), f"numba backend has no fused kernel for {pot} x {dyn}; "
                                   "running the NumPy reference (correct, slower; a new "
                                   "potential gets the generic kernels from its family's hooks "
                                   "in langevin_sim/kernels/, a new dynamics its driver in "
                                   "kernels/drivers.py: docs/extending.md)")
        elif getattr(sim, "first_passage", None) is not None and not kernel.first_passage:
            _warn_once((pot, dyn, "first_passage"),
                       f"numba backend's fused kernel for {pot} x {dyn} does not update "
                       "first-passage observers; running the NumPy reference (correct, slower)")
        else:
            k0, k1 = rng.key_of(sim.seed)
            x = sim.state["x"]
            records = x.size >= COMPILED_ENERGY_SIZE and drivers.has_record_kernels(sim.potential)
            shared = drivers.shared_callees(sim, kernel.fn)
            aside = ((lambda: warmup.compile_aside(sim.potential, x, records, shared))
                     if records or shared else None)
            # the first run's wait; the kernel's shared callees and the records' kernels
            # compile meanwhile on another core
            with warmup.compile_notice(f"{pot} x {dyn} ({sim.dtype.name})", aside):
                kernel.fn(sim, t0, K, k0, k1)
            return
        reference_advance(sim, t0, K)

    def record_energy(self, sim, out: np.ndarray | None = None) -> np.ndarray:
        """U (M,) float64 of the positions x (M, d) of `sim` for a record (into `out` when
        given): the family's compiled energy (`kernels.drivers.energy_kernel`, float32 rows
        widened block by block), or the potential's on a float64 copy (see `_record_kernel`)."""
        fn = _record_kernel(sim, drivers.energy_kernel)
        x = sim.state["x"]
        if fn is not None:
            return fn(x, out)
        u = np.asarray(sim.potential.energy(np.asarray(x, np.float64)), np.float64)
        if out is None:
            return u
        out[...] = u
        return out

    def record_observables(self, sim, energy: np.ndarray) -> dict | None:
        """The potential's observables of `sim`'s positions for a record, by the family's
        compiled code (`kernels.drivers.observables_kernel`); None: the caller evaluates
        `potential.observables` (see `_record_kernel`)."""
        fn = _record_kernel(sim, drivers.observables_kernel)
        return None if fn is None else fn(sim.state["x"], energy)


def _record_kernel(sim, kernel_of):
    """`kernel_of(potential)` (a compiled record-time function, or None) for states of at least
    COMPILED_ENERGY_SIZE numbers, announced by the compile notice on its first call; None for
    smaller states, where NumPy costs about a millisecond and compiling would cost seconds on
    a run's first record."""
    x = sim.state["x"]
    fn = kernel_of(sim.potential) if x.size >= COMPILED_ENERGY_SIZE else None
    if fn is None:
        return None
    what = f"{type(sim.potential).__name__} records ({x.dtype.name})"

    def announced(*args):
        warmup.await_records_aside(sim.potential, x.dtype)
        with warmup.compile_notice(what):
            return fn(*args)
    return announced


def _warn_once(key: tuple, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=4)   # points at the caller of Simulation.advance
