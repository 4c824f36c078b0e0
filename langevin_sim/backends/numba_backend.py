"""Numba CPU backend: fused kernels for the hot pairs, the reference for the rest."""
from __future__ import annotations

import warnings

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from .. import rng
from ..first_passage import STATE_KEYS as FP_KEYS
from ..dynamics import SGD, OverdampedLangevin, UnderdampedLangevin
from ..potentials import DoubleWell, LinearRegression, Quadratic
from . import numba_kernels as nk
from .numpy_backend import reference_advance

_warned: set = set()
GEMM_BLOCK_BYTES = 1 << 20  # cap on a GEMM block's state + gradient rows (stays in L2)
KERNELS: dict = {}


def register(potential_cls, dynamics_cls):
    """Decorator: `fn(sim, t0, K, k0, k1)` runs K fused steps of this pair in place."""
    def deco(fn):
        KERNELS[(potential_cls, dynamics_cls)] = fn
        return fn
    return deco



TILE_CALL_STEPS = 1 << 16  # steps per kernel call where a kernel tabulates its step coefficients


def _double_well(sim, t0, K, k0, k1, kind, names, friction=0.0, mass=1.0):
    """Run `nk.double_well_tiles` on the state arrays `names`, stacked (len(names), M, d),
    and the first-passage arrays (FP_KEYS, stacked (5, M, R)) when an observer is attached."""
    dyn, x = sim.dynamics, sim.state["x"]
    state = np.stack([sim.state[k] for k in names])
    coef = np.array(sim.potential.grad_coeffs, dtype=x.dtype)
    fpo = getattr(sim, "first_passage", None)
    if fpo is None:
        regions, fp = nk.no_regions(x.shape[1])
    else:
        regions, fp = fpo.arrays(x.shape[1]), np.stack([sim.state[k] for k in FP_KEYS])
    for t in range(t0, t0 + K, TILE_CALL_STEPS):
        nk.double_well_tiles(kind, state, sim.diverged_step, t, min(TILE_CALL_STEPS, t0 + K - t),
                             k0, k1, sim.first_replica, schedule_code(dyn.step),
                             schedule_code(dyn.temperature), friction, mass, coef,
                             sim.divergence_bound, regions, fp)
    for k, v in zip(names, state):
        sim.state[k][...] = v
    if fpo is not None:
        for k, v in zip(FP_KEYS, fp):
            sim.state[k][...] = v


# Pairs whose fused kernel updates a first-passage observer after every step; with an
# observer attached, the other pairs run the reference (with a warning), never ignore it.
FIRST_PASSAGE_PAIRS = {(DoubleWell, OverdampedLangevin), (DoubleWell, UnderdampedLangevin)}


@register(DoubleWell, OverdampedLangevin)
def _overdamped_double_well(sim, t0, K, k0, k1):
    _double_well(sim, t0, K, k0, k1, nk.OVERDAMPED, ("x",))


@register(DoubleWell, UnderdampedLangevin)
def _baoab_double_well(sim, t0, K, k0, k1):
    dyn = sim.dynamics
    _double_well(sim, t0, K, k0, k1, nk.BAOAB, ("x", "p", "g"), float(dyn.friction), float(dyn.mass))


@register(Quadratic, OverdampedLangevin)
def _overdamped_quadratic(sim, t0, K, k0, k1):
    dyn, pot = sim.dynamics, sim.potential
    x = sim.state["x"]
    H = pot.H.astype(x.dtype)
    with threadpool_limits(1, user_api="blas"):
        nk.overdamped_quadratic(x, sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                                schedule_code(dyn.step), schedule_code(dyn.temperature), H,
                                (pot.center @ pot.H).astype(x.dtype), sim.divergence_bound,
                                gemm_block(*x.shape, x.itemsize))


@register(Quadratic, UnderdampedLangevin)
def _baoab_quadratic(sim, t0, K, k0, k1):
    dyn, pot, s = sim.dynamics, sim.potential, sim.state
    x = s["x"]
    with threadpool_limits(1, user_api="blas"):
        for t in range(t0, t0 + K, TILE_CALL_STEPS):
            nk.baoab_quadratic(x, s["p"], s["g"], sim.diverged_step, t,
                               min(TILE_CALL_STEPS, t0 + K - t), k0, k1, sim.first_replica,
                               schedule_code(dyn.step), schedule_code(dyn.temperature),
                               float(dyn.friction), float(dyn.mass), pot.H.astype(x.dtype),
                               (pot.center @ pot.H).astype(x.dtype), sim.divergence_bound,
                               gemm_block(*x.shape, x.itemsize))


@register(LinearRegression, SGD)
def _sgd_linear_regression(sim, t0, K, k0, k1):
    dyn, pot, s = sim.dynamics, sim.potential, sim.state
    dt = s["x"].dtype
    nk.sgd_linear_regression(s["x"], s["v"], sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                             schedule_code(dyn.lr), schedule_code(dyn.temperature), float(dyn.momentum),
                             float(dyn.weight_decay), pot.A.astype(dt), pot.y.astype(dt),
                             int(dyn.batch_size or 0), bool(dyn.replacement),
                             sim.divergence_bound)




def gemm_block(M: int, d: int, itemsize: int) -> int:
    """Replicas per GEMM block: one block per thread (large single-threaded GEMMs run
    closest to the BLAS rate), capped so that a block's x and gradient rows fit in
    GEMM_BLOCK_BYTES.  Results do not depend on it."""
    per_thread = -(-M // numba.get_num_threads())
    return max(1, min(per_thread, GEMM_BLOCK_BYTES // (2 * d * itemsize)))


def schedule_code(schedule) -> np.ndarray:
    return np.array(schedule.code, dtype=np.float64)


def has_kernel(potential, dynamics) -> bool:
    return (type(potential), type(dynamics)) in KERNELS


class NumbaBackend:
    """Fused multi-step kernels, parallel over replicas; reference fallback otherwise."""

    name = "numba"

    def advance(self, sim, t0: int, K: int) -> None:
        key = (type(sim.potential), type(sim.dynamics))
        kernel = KERNELS.get(key)
        if kernel is not None and getattr(sim, "first_passage", None) is not None \
                and key not in FIRST_PASSAGE_PAIRS:
            pair = (key[0].__name__, key[1].__name__)
            if pair + ("first_passage",) not in _warned:
                _warned.add(pair + ("first_passage",))
                warnings.warn(f"numba backend's fused kernel for {pair[0]} x {pair[1]} does not "
                              "update first-passage observers; running the NumPy reference "
                              "(correct, slower)", stacklevel=3)
            reference_advance(sim, t0, K)
            return
        if kernel is None:
            pair = (type(sim.potential).__name__, type(sim.dynamics).__name__)
            if pair not in _warned:
                _warned.add(pair)
                warnings.warn(f"numba backend has no fused kernel for {pair[0]} x {pair[1]}; "
                              "running the NumPy reference (correct, slower)", stacklevel=3)
            reference_advance(sim, t0, K)
            return
        k0, k1 = rng.key_of(sim.seed)
        kernel(sim, t0, K, k0, k1)
from . import numba_pspin  # noqa: E402,F401
from . import numba_toynets  # noqa: E402,F401
from . import numba_manifolds  # noqa: E402,F401
