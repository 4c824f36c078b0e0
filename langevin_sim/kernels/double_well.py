"""DoubleWell: its step functions (every target), its CPU kernels and its fused numba-cuda
kernels (overdamped Langevin and BAOAB, with first-passage observers; the CUDA design is
described at its section below).

DoubleWell is separable, so a step is the same scalar function on every coordinate of every
replica: `overdamped_step` and `baoab_step` below, from the potential's `dw_grad` and the shared
rules of `common.STEPS`.  The CPU kernel runs them on tiles of R = max(1, TILE // d)
replicas: each step updates the tile's R*d lanes in one loop that vectorizes across replicas
(frozen lanes masked, divergence found by one and-reduction); noise comes in chunks of
S = max(1, CHUNK // d) steps per replica (a tile's noise, S x R*d, stays in L2), for d = 1
generated across replicas.  One serial driver serves both dynamics (one compilation per
dtype); a thread pool runs it on contiguous groups of tiles.
"""
from __future__ import annotations

import functools
import sys

import numba
import numpy as np

from ..backends.jit import compile_functions, jit
from ..backends.registry import register
from ..dynamics import OverdampedLangevin, UnderdampedLangevin
from ..first_passage import STATE_KEYS as FP_KEYS
from ..potentials import double_well as potentials_double_well
from ..potentials.double_well import DoubleWell, dw_grad
from .common import (BAOAB, CHUNK, OVERDAMPED, TILE, TILE_CALL_STEPS, baoab_first, baoab_last,
                     compile_steps, fill_noise_tile, fill_noise_tile_d1, freeze_tile,
                     langevin_step_table, like, no_regions, noise_buffer, overdamped_lane,
                     region_changes, region_flags, region_scratch, schedule_code)
from .drivers import FAMILIES, Hooks, family, row_sums, run_blocks


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
    if odd:   # a loop: an array assignment compiles Numba's shape-error formatting (~2 s)
        for j in range(a.shape[0]):
            st[j] = a[j]
    return nlive


@jit
def double_well_tiles(kind, state, dstep, t0, table, k0, k1, rep0, inv_m, coef, bound, regions,
                      fp, one, many, b0, b1):
    """Overdamped Langevin (kind OVERDAMPED, state (1, M, d) positions) or BAOAB (kind BAOAB,
    state (3, M, d) positions, momenta, gradients at the positions) on DoubleWell, in place,
    for tiles b0..b1-1 (of R = max(1, TILE // d) replicas) and steps t0 .. t0 + K - 1 (table:
    `langevin_step_table`, (3, K)); with a first-passage observer, regions and fp (5, M, R) as
    in `region_changes` (else `no_regions(d)`), updated after every step.  one, many: (True,
    None) for d = 1 (noise generated across replicas), (None, True) for d > 1: Numba drops a
    branch under `x is not None` at compile time when x is None (and only then), so each
    kernel compiles one noise path (each alone ~2-3.5 s shorter to compile than both).
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
        Z = np.empty((S + 4, L), dtype=state.dtype)
        W = np.empty((4, L), dtype=state.dtype)
        buf = noise_buffer(S * d, state)
        now, ins = region_scratch(fp, lo, n, regions[0].shape[0])
        t = t0
        while t < t0 + K and nlive > 0:
            sn = min(S, t0 + K - t)
            row = 0
            if many is not None:
                fill_noise_tile(Z, buf, k0, k1, rep, d, t, sn, live)
            if one is not None:
                fill_noise_tile_d1(Z, W, k0, k1, rep, t, sn)
                row = t % 4
            nlive = double_well_tile_steps(kind, st, new, live, Z, row, table[:, t - t0:t - t0 + sn],
                                           inv_m, coef, bound, dstep, lo, d, t, nlive, regions, fp,
                                           now, ins)
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
        run_blocks(double_well_tiles, tiles, FAMILIES[DoubleWell], kind, state, sim.diverged_step,
                   t, table, k0, k1, sim.first_replica, inv_m, coef, sim.divergence_bound,
                   regions, fp, *((True, None) if x.shape[1] == 1 else (None, True)),
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


# ---------------------------------------------------------------- CUDA kernels (backend "cuda")
# One thread per replica runs K steps of all its d coordinates (steps outer, lanes inner):
# the replica's state sits in per-thread arrays of compile-time size d (`cuda.local.array`;
# the kernel is compiled per (dynamics, dtype, d), so for small d the lane loops unroll and the
# arrays live in registers), loaded once and stored once per call.  Normals are drawn in
# stream order, n = t d + i (step t, lane i), four per Philox block (the block's normals are
# kept across lanes and steps, so each block is computed once, as `noise_chunk` does on the
# CPU).  A step's new lanes go to a second set of arrays and are committed only when all of
# them (x; x, p, g for BAOAB) pass `within_bound`; otherwise the replica keeps its state, gets
# dstep = t + 1 and stops.  One thread per (replica, lane) was not chosen: four lanes share a
# Philox block (each thread would compute a whole block for one normal, or exchange them by
# shuffles), the freeze of a replica's lanes would need a cross-thread vote per step, and d = 1
# (W1) has one lane per replica anyway.  Schedules (step size, temperature) are evaluated per
# step in the kernel from their codes (`schedule_value`, float64) and cast to the state's dtype
# as the reference casts its Python scalars.  First-passage observers are updated after every
# step (float64 membership in the reference's summation order), and once more after a freeze
# (idempotent: what the reference's later updates on the frozen state amount to).

cuda = None          # numba.cuda, set by `cuda_kernel` (the simulator swaps this global)
CUDA_CALL_STEPS = 4096   # steps per kernel launch (results do not depend on it)


def cuda_kernel(kind: int, f32: bool, d: int):
    """The fused numba-cuda kernel of `kind` (OVERDAMPED or BAOAB) for float32 (f32) or
    float64 states of d coordinates, compiled on first use (cached)."""
    return _cuda_kernel(kind, bool(f32), int(d))


@functools.lru_cache(maxsize=None)
def _cuda_kernel(kind, f32, D):
    global cuda
    from .. import first_passage as fpass
    from .. import rng
    from ..backends import cuda_kernels as ck
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    dev = compile_steps(sys.modules[__name__], cuda.jit(device=True), rt.primitives())
    bn = ck._normals_fn(f32)
    pick = ck.helpers()[0]
    NOISE, HALF = np.uint64(rng.NOISE), fpass.HALF_SPACE
    ftype = np.float32 if f32 else np.float64
    sched, noise_scale, coeffs = dev.schedule_value, dev.noise_scale, dev.baoab_coeffs
    od_step, ba_step, ok_ = dev.overdamped_step, dev.baoab_step, dev.within_bound
    NQ = 1 if kind == OVERDAMPED else 3
    NP = 2 * D if kind == BAOAB else 1     # momenta, then gradients (BAOAB)

    @cuda.jit(device=True)
    def cast(v):
        return ftype(v)

    @cuda.jit(device=True)
    def observe(xs, r, kinds, vecs, thr, fe, fx, lc, cr, ins, step):
        """`FirstPassage.update` of replica r at step count `step` (positions xs)."""
        for k in range(kinds.shape[0]):
            s = 0.0
            for i in range(D):
                xi = np.float64(xs[i])
                if kinds[k] == HALF:
                    s = s + vecs[k, i] * xi
                else:
                    y = xi - vecs[k, i]
                    s = s + y * y
            now = s > thr[k] if kinds[k] == HALF else s < thr[k]
            if now != (ins[r, k] != 0):
                cr[r, k] += 1
                lc[r, k] = step
            if now and fe[r, k] < 0:
                fe[r, k] = step
            if (not now) and fx[r, k] < 0:
                fx[r, k] = step
            ins[r, k] = 1 if now else 0

    @cuda.jit
    def kernel(x, p, g, dstep, t0, K, k0, k1, rep0, es, ts, friction, mass, c, a2, kk, tilt,
               inv_m, bound, kinds, vecs, thr, fe, fx, lc, cr, ins):
        r = cuda.grid(1)
        if r >= x.shape[0]:
            return
        xs = cuda.local.array(D, ftype)
        ps = cuda.local.array(NP, ftype)
        xn = cuda.local.array(D, ftype)
        pn = cuda.local.array(NP, ftype)
        for i in range(D):
            xs[i] = x[r, i]
            if NQ == 3:
                ps[i] = p[r, i]
                ps[D + i] = g[r, i]
        zero = cast(0.0)
        if dstep[r] >= 0:          # frozen before this call
            observe(xs, r, kinds, vecs, thr, fe, fx, lc, cr, ins, t0 + 1)
            return
        rep = rep0 + np.uint64(r)
        blk = np.int64(-1)
        z0 = z1 = z2 = z3 = zero
        for t in range(t0, t0 + K):
            eta = sched(int(es[0]), es[1], es[2], es[3], t)
            T = sched(int(ts[0]), ts[1], ts[2], ts[3], t)
            if NQ == 1:
                a, s1, s2 = cast(eta), cast(noise_scale(eta, T)), zero
            else:
                c1, c2 = coeffs(eta, friction, T, mass)
                a, s1, s2 = cast(0.5 * eta), cast(c1), cast(c2)
            good = True
            for i in range(D):
                n = np.int64(t) * D + i
                b = n // 4
                if b != blk:
                    z0, z1, z2, z3 = bn(k0, k1, NOISE, rep, np.uint64(b))
                    blk = b
                z = pick(n - 4 * b, z0, z1, z2, z3)
                if NQ == 1:
                    v = od_step(xs[i], z, a, s1, zero, c, a2, kk, tilt)
                    xn[i] = v
                    good = good and ok_(v, bound)
                else:
                    xv, pv, gv = ba_step(xs[i], ps[i], ps[D + i], z, a, inv_m, s1, s2, c, a2, kk,
                                         tilt)
                    xn[i] = xv
                    pn[i] = pv
                    pn[D + i] = gv
                    good = good and ok_(xv, bound) and ok_(pv, bound) and ok_(gv, bound)
            if not good:
                dstep[r] = t + 1
                observe(xs, r, kinds, vecs, thr, fe, fx, lc, cr, ins, t + 1)
                break
            for i in range(D):
                xs[i] = xn[i]
            if NQ == 3:
                for i in range(2 * D):
                    ps[i] = pn[i]
            observe(xs, r, kinds, vecs, thr, fe, fx, lc, cr, ins, t + 1)
        for i in range(D):
            x[r, i] = xs[i]
            if NQ == 3:
                p[r, i] = ps[i]
                g[r, i] = ps[D + i]
    return kernel


def _double_well_cuda(run, sim, t0, K, kind):
    """Launch `cuda_kernel` on the device state of `run` (one thread per replica), in calls of
    at most CUDA_CALL_STEPS steps."""
    from ..backends import cuda_runtime as rt

    xp, x, dyn = run.xp, run.state["x"], sim.dynamics
    M, d = x.shape
    kernel = cuda_kernel(kind, run.f32, d)
    if kind == BAOAB:
        p, g = run.state["p"], run.state["g"]
        friction, mass = float(dyn.friction), float(dyn.mass)
    else:      # distinct unused arrays (the simulator copies each argument back)
        p, g = xp.empty((0, d), x.dtype), xp.empty((0, d), x.dtype)
        friction, mass = 0.0, 1.0
    if run.regions is not None:
        regions, fp = run.regions, [run.state[k] for k in FP_KEYS]
    else:
        regions = (xp.zeros(0, np.int64), xp.zeros((0, d)), xp.zeros(0))
        fp = [xp.zeros((0, 0), np.int64) for _ in FP_KEYS]
    es = xp.asarray(schedule_code(dyn.step))
    ts = xp.asarray(schedule_code(dyn.temperature))
    coef = [run.cast(v) for v in sim.potential.grad_coeffs]
    for t in range(t0, t0 + K, CUDA_CALL_STEPS):
        rt.launch(kernel, M, x, p, g, run.dstep, int(t), int(min(CUDA_CALL_STEPS, t0 + K - t)),
                  run.k0, run.k1, run.rep0, es, ts, friction, mass, *coef,
                  run.cast(1.0 / mass), run.bound, *regions, *fp)


@register(DoubleWell, OverdampedLangevin, "cuda", first_passage=True)
def _overdamped_double_well_cuda(run, sim, t0, K):
    _double_well_cuda(run, sim, t0, K, OVERDAMPED)


@register(DoubleWell, UnderdampedLangevin, "cuda", first_passage=True)
def _baoab_double_well_cuda(run, sim, t0, K):
    _double_well_cuda(run, sim, t0, K, BAOAB)


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
