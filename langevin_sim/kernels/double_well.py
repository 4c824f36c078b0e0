"""DoubleWell: its step functions (every target), its CPU kernels, and its row gradient for
the fused numba-cuda kernels of `kernels.rows` (every dynamics, first-passage observers).

DoubleWell is separable, so a step is the same scalar function on every coordinate of every
replica: `overdamped_step`, `baoab_step` and `obabo_step` below, from the potential's `dw_grad`
and the shared rules of `common.STEPS`.  The CPU kernel runs them on tiles of R = max(1, TILE // d)
replicas: each step updates the tile's R*d lanes in one loop that vectorizes across replicas
(frozen lanes masked, divergence found by one and-reduction); noise comes in chunks of
S = max(1, CHUNK // d) steps per replica (a tile's noise, S x R*d, stays in L2), for d = 1
generated across replicas (OBABO: its 2 d normals a step per replica, as a d-lane run of
2 d).  One serial driver serves the three dynamics (one compilation per dtype, OBABO's a
compilation of its own); a thread pool runs it on contiguous groups of tiles.
"""
from __future__ import annotations

import sys

import numba
import numpy as np

from ..backends.jit import compile_functions, jit
from ..backends.registry import register
from ..dynamics import OBABO, OverdampedLangevin, UnderdampedLangevin
from ..first_passage import STATE_KEYS as FP_KEYS
from ..potentials import double_well as potentials_double_well
from ..potentials.double_well import DoubleWell, dw_energy, dw_grad
from .common import OBABO as OBABO_KIND
from .common import (BAOAB, CHUNK, OVERDAMPED, TILE, TILE_CALL_STEPS, baoab_first, baoab_last,
                     compile_steps, fill_noise_tile, fill_noise_tile_d1, freeze_tile,
                     langevin_step_table, like, no_regions, noise_buffer, obabo_first, obabo_last,
                     overdamped_lane, region_changes, region_flags, region_scratch, schedule_code)
from .drivers import FAMILIES, Hooks, family, row_sums, run_blocks
from .rows import row_family


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


def obabo_step(x, p, g, z1, z2, h, eta, inv_m, c1, c2, c, a2, k, tilt):
    """One OBABO step (h = eta / 2, c1 and c2 of its half-step O) of one coordinate with the
    step's two normals z1, z2: (x, p, g) -> the new ones."""
    x, p = obabo_first(x, p, g, h, eta, inv_m, c1, c2, z1)
    g = dw_grad(x, c, a2, k, tilt)
    return x, obabo_last(p, g, h, c1, c2, z2), g


def dw_row(x, g, w, args, idx, nb, lab, energy):
    """U (float64) of one replica x (d,), and its gradient into g (d,) float64: `dw_grad` per
    coordinate in x's dtype (`kernels.rows`; w, idx, nb, lab unused: no samples); args: `dw_args`
    in x's dtype; U summed in float64 as `dw_energy_block`, only when `energy`."""
    c, a2, k, tilt, center, a, barrier = args
    u = 0.0
    for i in range(x.shape[0]):
        g[i] = dw_grad(x[i], c, a2, k, tilt)
        if energy:
            u += np.float64(dw_energy(x[i], center, a, barrier, tilt))
    return u


STEPS = ("dw_grad", "dw_energy", "overdamped_step", "baoab_step", "obabo_step", "dw_row")


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
def obabo_lanes(a, b, live, z, d, h, c1, c2, inv_m, coef, bound):
    """One OBABO step of a DoubleWell tile, as `baoab_lanes`; z (2 L,): each replica's 2 d
    normals of the step (`fill_noise_tile` of 2 d lanes), the first d for the opening O, the
    last d for the closing one."""
    c, a2, k, tilt = coef[0], coef[1], coef[2], coef[3]
    eta = h + h           # eta / 2 doubled: exact, eta in the state's dtype
    good = True
    for r in range(live.shape[0] // d):
        for i in range(d):
            j = r * d + i
            x0, p0, g0 = a[3 * j], a[3 * j + 1], a[3 * j + 2]
            xv, pv, gv = cpu.obabo_step(x0, p0, g0, z[2 * r * d + i], z[2 * r * d + d + i], h,
                                        eta, inv_m, c1, c2, c, a2, k, tilt)
            keep = not live[j]
            b[3 * j] = x0 if keep else xv
            b[3 * j + 1] = p0 if keep else pv
            b[3 * j + 2] = g0 if keep else gv
            good = (good & cpu.within_bound(b[3 * j], bound)
                    & cpu.within_bound(b[3 * j + 1], bound) & cpu.within_bound(b[3 * j + 2], bound))
    return good


@jit
def double_well_tile_steps(kind, st, new, live, Z, row, c, inv_m, coef, bound, dstep, lo, d, t,
                           nlive, regions, fp, now, ins, obabo):
    """Steps t, t+1, .. (one per column of the step table c) of one DoubleWell tile: state st
    (L,) positions (OVERDAMPED) or (3 L,) position, momentum, gradient per lane (BAOAB); noise of
    step t + s in Z[row + s]; new is scratch like st.  Ends with the state in st; returns the
    number of live replicas.  Each step's lane loop is a function of its own, with the old
    and new state as distinct arguments: inlined into the parallel kernel these loops
    compiled ~5x slower, and with the swapped buffers in one function the BAOAB loop did not
    vectorize at all.  With first-passage regions (regions = `FirstPassage.arrays`, not
    empty) `region_flags` runs after every step on the new state and `region_changes` records
    the changes (rare) in fp; now, ins: `region_scratch`.  obabo: True for OBABO (kind
    OBABO, Z rows of 2 L normals), None otherwise (that branch then not compiled)."""
    a, b = st, new
    odd = False
    nq = 1 if kind == OVERDAMPED else 3
    kinds, vecs, thr = regions
    for s in range(c.shape[1]):
        if obabo is not None:
            good = obabo_lanes(a, b, live, Z[row + s], d, c[0, s], c[1, s], c[2, s], inv_m, coef,
                               bound)
        elif kind == OVERDAMPED:
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
    if odd:   # a loop: an array assignment compiles Numba's shape-error formatting (~2 s)
        for j in range(a.shape[0]):
            st[j] = a[j]
    return nlive


@jit
def double_well_tiles(kind, state, dstep, t0, table, k0, k1, rep0, inv_m, coef, bound, regions,
                      fp, one, many, obabo, b0, b1):
    """Overdamped Langevin (kind OVERDAMPED, state (1, M, d) positions) or BAOAB (kind BAOAB,
    state (3, M, d) positions, momenta, gradients at the positions) on DoubleWell, in place,
    for tiles b0..b1-1 (of R = max(1, TILE // d) replicas) and steps t0 .. t0 + K - 1 (table:
    `langevin_step_table`, (3, K)); with a first-passage observer, regions and fp (5, M, R) as
    in `region_changes` (else `no_regions(d)`), updated after every step.  one, many: (True,
    None) for d = 1 (noise generated across replicas), (None, True) for d > 1: Numba drops a
    branch under `x is not None` at compile time when x is None (and only then), so each
    kernel compiles one noise path (each alone ~2-3.5 s shorter to compile than both).
    obabo: True for OBABO (kind OBABO, state as BAOAB's; with `many`: its 2 d normals a step
    per replica at 2 t d + i), else None.
    coef = `DoubleWell.grad_coeffs`, inv_m = 1 / mass in the state's dtype (cast as NumPy
    does).  Serial and GIL-free: `_double_well` spreads the tiles over a thread pool (a prange
    kernel compiled ~5 s longer).  Tiles, noise chunks: see the module docstring."""
    nq, M, d = state.shape
    R = max(1, TILE // d)
    S = max(1, CHUNK // d)
    K = table.shape[1]
    for b in range(b0, b1):
        lo = b * R
        n = min(M, lo + R) - lo
        L = n * d
        live = np.empty(L, dtype=np.bool_)
        nlive = np.int64(0)   # (a literal 0 would compile double_well_tile_steps twice)
        rep = np.empty(n, dtype=np.uint64)
        for r in range(n):   # loops, not array expressions: less to compile
            nlive += dstep[lo + r] < 0
            rep[r] = np.uint64(rep0 + lo + r)
        st = np.empty(L * nq, dtype=state.dtype)
        for q in range(nq):     # lane j = r d + i of row r: (r, i) loops, no j // d, j % d
            src = state[q]      # (the divisions were a third of a tile's setup)
            for r in range(n):
                alive = dstep[lo + r] < 0
                for i in range(d):
                    live[r * d + i] = alive
                    st[(r * d + i) * nq + q] = src[lo + r, i]
        new = np.empty(L * nq, dtype=state.dtype)
        nz = 1 if obabo is None else 2       # normals a step per lane
        Z = np.empty((S + 4, nz * L), dtype=state.dtype)
        W = np.empty((4, L), dtype=state.dtype)
        buf = noise_buffer(S * nz * d, state)
        zlive = live
        if obabo is not None:            # the lane mask of 2 d normals per replica
            zlive = np.empty(nz * L, dtype=np.bool_)
        now, ins = region_scratch(fp, lo, n, regions[0].shape[0])
        t = t0
        while t < t0 + K and nlive > 0:
            sn = min(S, t0 + K - t)
            row = 0
            if obabo is not None:
                for j in range(L):
                    zlive[2 * j] = live[j]
                    zlive[2 * j + 1] = live[j]
                fill_noise_tile(Z, buf, k0, k1, rep, 2 * d, t, sn, zlive)
            elif many is not None:
                fill_noise_tile(Z, buf, k0, k1, rep, d, t, sn, live)
            if one is not None:
                fill_noise_tile_d1(Z, W, k0, k1, rep, t, sn)
                row = t % 4
            nlive = double_well_tile_steps(kind, st, new, live, Z, row, table[:, t - t0:t - t0 + sn],
                                           inv_m, coef, bound, dstep, lo, d, t, nlive, regions, fp,
                                           now, ins, obabo)
            t += sn
        for q in range(nq):
            dst = state[q]
            for r in range(n):
                for i in range(d):
                    dst[lo + r, i] = st[(r * d + i) * nq + q]


def _double_well(sim, t0, K, k0, k1, kind, names, friction=0.0, mass=1.0):
    """Run `double_well_tiles` on the state arrays `names`, stacked (len(names), M, d), and
    the first-passage arrays (FP_KEYS, stacked (5, M, R)) when an observer is attached."""
    dyn, x = sim.dynamics, sim.state["x"]
    # one C-ordered array: a view, stepped in place (a stacked copy cost W1 two 4 MB copies
    # a call)
    view = len(names) == 1 and x.flags.c_contiguous
    state = x[None] if view else np.stack([sim.state[k] for k in names])
    coef = np.array(sim.potential.grad_coeffs, dtype=x.dtype)
    fpo = getattr(sim, "first_passage", None)
    if fpo is None:
        regions, fp = no_regions(x.shape[1])
    else:
        regions, fp = fpo.arrays(x.shape[1]), np.stack([sim.state[k] for k in FP_KEYS])
    es, ts, inv_m = schedule_code(dyn.step), schedule_code(dyn.temperature), x.dtype.type(1.0 / mass)
    tiles = -(-x.shape[0] // max(1, TILE // x.shape[1]))
    # 16 tasks a thread: with 4, the wait for a call's last task cost W1 ~20 ms a call
    per_task = max(1, tiles // (16 * numba.get_num_threads()))
    for t in range(t0, t0 + K, TILE_CALL_STEPS):
        table = langevin_step_table(kind, es, ts, t, min(TILE_CALL_STEPS, t0 + K - t), friction,
                                    mass, state)
        one_many = (True, None) if x.shape[1] == 1 and kind != OBABO_KIND else (None, True)
        run_blocks(double_well_tiles, tiles, FAMILIES[DoubleWell], kind, state, sim.diverged_step,
                   t, table, k0, k1, sim.first_replica, inv_m, coef, sim.divergence_bound,
                   regions, fp, *one_many, True if kind == OBABO_KIND else None,
                   rows=per_task)
    if not view:
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


@register(DoubleWell, OBABO, "numba", first_passage=True)
def _obabo_double_well(sim, t0, K, k0, k1):
    dyn = sim.dynamics
    _double_well(sim, t0, K, k0, k1, OBABO_KIND, ("x", "p", "g"), float(dyn.friction),
                 float(dyn.mass))


# ---------------------------------------------------------------- generic drivers' hooks (CPU)
# Heun, Leimkuhler-Matthews, MALA and full-batch SGD / AdamW run `kernels.drivers` on these.

dw_fields = compile_functions(potentials_double_well, ["dw_energy", "dw_grad"])


@jit
def dw_grad_block(xb, args):
    """grad U (B, d) in xb's dtype; args: `dw_args`."""
    return dw_fields.dw_grad(xb, args[0], args[1], args[2], args[3])


@jit
def dw_energy_block(xb, args):
    """U (B,) float64 (summed in float64)."""
    u = dw_fields.dw_energy(xb, args[4], args[5], args[6], args[3])
    return row_sums(u)


def dw_args(pot: DoubleWell, dtype) -> tuple:
    """(center, a^2, 4 barrier / a^4, tilt, center, a, barrier) in `dtype`."""
    c, a2, k, tilt = pot.grad_coeffs
    return tuple(np.dtype(dtype).type(v) for v in (c, a2, k, tilt, pot.center, pot.a, pot.barrier))


family(DoubleWell, Hooks(dw_grad_block, dw_energy_block, dw_args))


# ---------------------------------------------------------------- CUDA (backend "cuda")
# Every dynamics (first-passage observers included) runs `kernels.rows` on `dw_row`.

row_family(DoubleWell, "dw_row", lambda pot, xp, dtype: dw_args(pot, dtype))
