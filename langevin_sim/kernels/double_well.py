"""DoubleWell: its step functions (every target) and its CPU kernels (overdamped Langevin and
BAOAB, with first-passage observers).

DoubleWell is separable, so a step is the same scalar function on every coordinate of every
replica: `overdamped_step` and `baoab_step` below, from the potential's `dw_grad` and the shared
rules of `common.STEPS`.  The CPU kernel runs them on tiles of R = max(1, TILE // d)
replicas: each step updates the tile's R*d lanes in one loop that vectorizes across replicas
(frozen lanes masked, divergence found by one and-reduction); noise comes in chunks of
S = max(1, CHUNK // d) steps per replica (a tile's noise, S x R*d, stays in L2), for d = 1
generated across replicas.  One parallel driver serves both dynamics: one parfor
compilation per dtype.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import prange

from ..backends.jit import jit, pjit
from ..backends.registry import register
from ..dynamics import OverdampedLangevin, UnderdampedLangevin
from ..first_passage import STATE_KEYS as FP_KEYS
from ..potentials.double_well import DoubleWell, dw_grad
from .common import (BAOAB, CHUNK, OVERDAMPED, TILE, TILE_CALL_STEPS, baoab_first, baoab_last,
                     compile_steps, fill_noise_tile, fill_noise_tile_d1, freeze_tile,
                     langevin_step_table, like, no_regions, noise_buffer, overdamped_lane,
                     region_changes, region_flags, region_scratch, schedule_code)


# ---------------------------------------------------------------- step functions, every target

def overdamped_step(x, z, eta, sigma, zero, c, a2, k, tilt):
    """One overdamped Langevin step of one coordinate x with normal z (`zero`: 0 in x's type;
    c, a2, k, tilt: `DoubleWell.grad_coeffs`)."""
    return overdamped_lane(x, dw_grad(x, c, a2, k, tilt), z, eta, sigma, zero)


def baoab_step(x, p, g, z, h, inv_m, c1, c2, c, a2, k, tilt):
    """One BAOAB step (h = eta / 2, c1 and c2 of `baoab_coeffs`) of one coordinate: position,
    momentum and gradient (x, p, g) -> the new ones."""
    x, p = baoab_first(x, p, g, h, inv_m, c1, c2, z)
    g = dw_grad(x, c, a2, k, tilt)
    return x, baoab_last(p, g, h), g


STEPS = ("dw_grad", "overdamped_step", "baoab_step")


# ---------------------------------------------------------------- CPU kernels (backend "numba")

cpu = compile_steps(sys.modules[__name__])


@jit
def overdamped_lanes(a, b, live, z, eta, sigma, coef, bound):
    """One overdamped step of a DoubleWell tile from positions a (L,) into b with noise z (L,);
    frozen lanes (not live) copied.  Returns whether every new lane is finite and within bound."""
    c, a2, k, tilt = coef[0], coef[1], coef[2], coef[3]
    zero = like(0.0, a)
    good = True
    for j in range(a.shape[0]):
        xv = a[j]
        v = cpu.overdamped_step(xv, z[j], eta, sigma, zero, c, a2, k, tilt)
        b[j] = v if live[j] else xv
        good = good & cpu.within_bound(b[j], bound)
    return good


@jit
def baoab_lanes(a, b, live, z, h, c1, c2, inv_m, coef, bound):
    """One BAOAB step (h = eta / 2) of a DoubleWell tile from a (3 L,) position, momentum,
    gradient of each lane into b, as `overdamped_lanes` (flat with a constant stride of 3 so
    that the vectorizer sees the access pattern)."""
    c, a2, k, tilt = coef[0], coef[1], coef[2], coef[3]
    good = True
    for j in range(live.shape[0]):
        x0, p0, g0 = a[3 * j], a[3 * j + 1], a[3 * j + 2]
        xv, pv, gv = cpu.baoab_step(x0, p0, g0, z[j], h, inv_m, c1, c2, c, a2, k, tilt)
        keep = not live[j]
        b[3 * j] = x0 if keep else xv
        b[3 * j + 1] = p0 if keep else pv
        b[3 * j + 2] = g0 if keep else gv
        good = (good & cpu.within_bound(b[3 * j], bound) & cpu.within_bound(b[3 * j + 1], bound)
                & cpu.within_bound(b[3 * j + 2], bound))
    return good


@jit
def double_well_tile_steps(kind, st, new, live, Z, row, c, inv_m, coef, bound, dstep, lo, d, t,
                           nlive, regions, fp, now, ins):
    """Steps t, t+1, .. (one per column of the step table c) of one DoubleWell tile: state st
    (L,) positions (OVERDAMPED) or (3 L,) position, momentum, gradient per lane (BAOAB); noise of
    step t + s in Z[row + s]; new is scratch like st.  Ends with the state in st; returns the
    number of live replicas.  Each step's lane loop is a function of its own, with the old
    and new state as distinct arguments: inlined into the parallel kernel these loops
    compiled ~5x slower, and with the swapped buffers in one function the BAOAB loop did not
    vectorize at all.  With first-passage regions (regions = `FirstPassage.arrays`, not
    empty) `region_flags` runs after every step on the new state and `region_changes` records
    the changes (rare) in fp; now, ins: `region_scratch`."""
    a, b = st, new
    odd = False
    nq = 1 if kind == OVERDAMPED else 3
    kinds, vecs, thr = regions
    for s in range(c.shape[1]):
        if kind == OVERDAMPED:
            good = overdamped_lanes(a, b, live, Z[row + s], c[0, s], c[1, s], coef, bound)
        else:
            good = baoab_lanes(a, b, live, Z[row + s], c[0, s], c[1, s], c[2, s], inv_m, coef,
                               bound)
        if not good:
            nlive = freeze_tile(a, b, live, dstep, lo, d, t + s + 1, bound)
        for k in range(kinds.shape[0]):
            if region_flags(b, nq, d, kinds[k], vecs[k], thr[k], now[k], ins[k]):
                region_changes(now[k], ins[k], lo, k, t + s + 1, fp)
        a, b = b, a
        odd = not odd
        if nlive == 0:
            break
    if odd:
        st[:] = a
    return nlive


@pjit
def double_well_tiles(kind, state, dstep, t0, K, k0, k1, rep0, es, ts, friction, mass, coef, bound,
                      regions, fp):
    """Overdamped Langevin (kind OVERDAMPED, state (1, M, d) positions) or BAOAB (kind BAOAB,
    state (3, M, d) positions, momenta, gradients at the positions) on DoubleWell, in place;
    with a first-passage observer, regions and fp (5, M, R) as in `region_changes` (else
    `no_regions(d)`), updated after every step.
    coef = `DoubleWell.grad_coeffs` in the state's dtype; step coefficients are cast to it as
    well, as NumPy does.  Tiles, noise chunks: see the module docstring."""
    nq, M, d = state.shape
    R = max(1, TILE // d)
    S = max(1, CHUNK // d)
    table = langevin_step_table(kind, es, ts, t0, K, friction, mass, state)
    inv_m = like(1.0 / mass, state)
    for b in prange((M + R - 1) // R):
        lo = b * R
        n = min(M, lo + R) - lo
        L = n * d
        live = np.empty(L, dtype=np.bool_)
        for j in range(L):
            live[j] = dstep[lo + j // d] < 0
        nlive = (dstep[lo:lo + n] < 0).sum()
        rep = np.arange(n).astype(np.uint64) + np.uint64(rep0 + lo)
        st = np.empty(L * nq, dtype=state.dtype)
        for j in range(L):
            for q in range(nq):
                st[j * nq + q] = state[q, lo + j // d, j % d]
        new = np.empty(L * nq, dtype=state.dtype)
        Z = np.empty((S + 4, L), dtype=state.dtype)
        W = np.empty((4, L), dtype=state.dtype)
        buf = noise_buffer(S * d, state)
        now, ins = region_scratch(fp, lo, n, regions[0].shape[0])
        t = t0
        while t < t0 + K and nlive > 0:
            sn = min(S, t0 + K - t)
            if d == 1:
                fill_noise_tile_d1(Z, W, k0, k1, rep, t, sn)
                row = t % 4
            else:
                fill_noise_tile(Z, buf, k0, k1, rep, d, t, sn, live)
                row = 0
            nlive = double_well_tile_steps(kind, st, new, live, Z, row, table[:, t - t0:t - t0 + sn],
                                           inv_m, coef, bound, dstep, lo, d, t, nlive, regions, fp,
                                           now, ins)
            t += sn
        for j in range(L):
            for q in range(nq):
                state[q, lo + j // d, j % d] = st[j * nq + q]


def _double_well(sim, t0, K, k0, k1, kind, names, friction=0.0, mass=1.0):
    """Run `double_well_tiles` on the state arrays `names`, stacked (len(names), M, d), and
    the first-passage arrays (FP_KEYS, stacked (5, M, R)) when an observer is attached."""
    dyn, x = sim.dynamics, sim.state["x"]
    state = np.stack([sim.state[k] for k in names])
    coef = np.array(sim.potential.grad_coeffs, dtype=x.dtype)
    fpo = getattr(sim, "first_passage", None)
    if fpo is None:
        regions, fp = no_regions(x.shape[1])
    else:
        regions, fp = fpo.arrays(x.shape[1]), np.stack([sim.state[k] for k in FP_KEYS])
    for t in range(t0, t0 + K, TILE_CALL_STEPS):
        double_well_tiles(kind, state, sim.diverged_step, t, min(TILE_CALL_STEPS, t0 + K - t),
                          k0, k1, sim.first_replica, schedule_code(dyn.step),
                          schedule_code(dyn.temperature), friction, mass, coef,
                          sim.divergence_bound, regions, fp)
    for k, v in zip(names, state):
        sim.state[k][...] = v
    if fpo is not None:
        for k, v in zip(FP_KEYS, fp):
            sim.state[k][...] = v


@register(DoubleWell, OverdampedLangevin, "numba", first_passage=True)
def _overdamped_double_well(sim, t0, K, k0, k1):
    _double_well(sim, t0, K, k0, k1, OVERDAMPED, ("x",))


@register(DoubleWell, UnderdampedLangevin, "numba", first_passage=True)
def _baoab_double_well(sim, t0, K, k0, k1):
    dyn = sim.dynamics
    _double_well(sim, t0, K, k0, k1, BAOAB, ("x", "p", "g"), float(dyn.friction), float(dyn.mass))
