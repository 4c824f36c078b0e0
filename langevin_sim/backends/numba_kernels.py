"""Fused CPU kernels: K steps per call, replicas in parallel, Philox in-kernel.

Each kernel composes the compiled forms of the same Python functions the NumPy reference
uses (rng, potentials, dynamics updates).  Kernels assume validated input.  A replica whose
new state is non-finite or beyond `bound` keeps its last state and gets
``dstep[m] = t + 1``.  Arguments: x (M, d) state, dstep (M,) int64, t0 first step,
K steps, k0/k1 Philox key, rep0 global id of row 0, es/ts schedule codes (kind, start,
end, steps) of step size and temperature.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange, types
from numba.extending import overload

from .. import first_passage as fpass
from .. import rng
from ..dynamics import langevin, schedules, sgd
from ..potentials import double_well
from .jit import compile_functions, ijit, jit, pjit

_rng = compile_functions(rng, rng.DEVICE_FUNCTIONS, compiler=ijit)
block_words, bounded_index = _rng.block_words, _rng.bounded_index
word_u23 = _rng.word_u23
schedule_value = jit(schedules.schedule_value)
dw_grad = ijit(double_well.dw_grad)
overdamped_update = ijit(langevin.overdamped_update)
baoab_first = ijit(langevin.baoab_first)
sgd_update = ijit(sgd.sgd_update)


CHUNK = 256  # normals generated per call of `noise_chunk` (a few steps when d is small)


@ijit
def ok(v, bound):
    return abs(v) <= bound


@jit
def sched(code, t):
    return schedule_value(int(code[0]), code[1], code[2], code[3], t)


# ---- normals of the state's dtype: the reference draws float32 normals for float32 runs
# (`rng.block_normals_f32`).  Between the Philox pass and the Box-Muller pass a word is kept
# in the state's dtype (`stored_word`), so the Box-Muller loop reads and writes only that
# type and vectorizes 8 lanes wide for float32.

def stored_word(w, like):
    """Word w as kept for normals of like's dtype: float64 value, or float32 `rng.word_u23`."""
    return rng.word_u23(w) if like.dtype == np.float32 else np.float64(w)


def normal_pair(wa, wb):
    """Two normals from two `stored_word` values (their dtype picks the Box-Muller)."""
    return rng.box_muller_f32(wa, wb) if wa.dtype == np.float32 else rng.box_muller(wa, wb)


def like(v, arr):
    """Scalar v in arr's dtype (as NumPy rounds a Python scalar used with arr)."""
    return arr.dtype.type(v)


@overload(stored_word, inline="always")
def _stored_word(w, like):
    if like.dtype == types.float32:
        return lambda w, like: word_u23(w)
    return lambda w, like: np.float64(w)


@overload(normal_pair, inline="always")
def _normal_pair(wa, wb):
    # the compiled copies' Python functions: their globals are the compiled siblings
    if wa == types.float32:
        return _rng.box_muller_f32.py_func
    return _rng.box_muller.py_func


@overload(like, inline="always")
def _like(v, arr):
    if arr.dtype == types.float32:
        return lambda v, arr: np.float32(v)
    return lambda v, arr: np.float64(v)


@jit
def noise_buffer(lanes, x):
    """Scratch (x's dtype) for `noise_chunk` calls of up to `lanes` normals."""
    return np.empty((2, 4, (lanes + 3) // 4 + 1), dtype=x.dtype)


@jit
def chunk_buffer(d, x):
    """(scratch, steps): scratch for the normals of max(1, CHUNK // d) steps of d lanes."""
    steps = max(1, CHUNK // d)
    return noise_buffer(steps * d, x), steps


@jit
def noise_chunk(k0, k1, purpose, rep, n0, count, buf):
    """Normals (buf's dtype) at stream positions n0 .. n0+count-1 of one replica: (z, off)
    with normal n at z[off + n - n0].  Two straight-line passes that each vectorize: Philox
    words (stored in buf's dtype), then Box-Muller on both word pairs of a block with
    interleaved stores."""
    first = n0 // 4
    nb = (n0 + count - 1) // 4 - first + 1
    W, z = buf[0], buf[1].reshape(buf.shape[1] * buf.shape[2])
    for b in range(nb):
        w0, w1, w2, w3 = block_words(k0, k1, np.uint64(purpose), rep, np.uint64(first + b))
        W[0, b] = stored_word(w0, W)
        W[1, b] = stored_word(w1, W)
        W[2, b] = stored_word(w2, W)
        W[3, b] = stored_word(w3, W)
    for b in range(nb):
        z0, z1 = normal_pair(W[0, b], W[1, b])
        z2, z3 = normal_pair(W[2, b], W[3, b])
        z[4 * b] = z0
        z[4 * b + 1] = z1
        z[4 * b + 2] = z2
        z[4 * b + 3] = z3
    return z, n0 - 4 * first


TILE = 256  # replicas x coordinates that the tiled kernels update together in one loop


@jit
def fill_noise_tile(Z, buf, k0, k1, rep, d, t, S, live):
    """Z[s, r*d + i] = NOISE normal of replica rep[r] at n = (t + s) * d + i for s < S and
    the live replicas (live: (n*d,) lane mask; rows of the others are left as they are)."""
    for r in range(rep.shape[0]):
        if live[r * d]:
            z, off = noise_chunk(k0, k1, rng.NOISE, rep[r], t * d, S * d, buf)
            for s in range(S):
                for i in range(d):
                    Z[s, r * d + i] = z[off + s * d + i]


@jit
def fill_noise_tile_d1(Z, W, k0, k1, rep, t, S):
    """d = 1 form of `fill_noise_tile`, generated across the tile's replicas (the Philox
    counter's replica word) so that it vectorizes with no transposition: row 4*(q - t//4) + k
    of Z takes word k of stream block q, so step t + s is row s + t % 4.  Z: (S + 4, n);
    W: (4, n) scratch of Z's dtype."""
    first = t // 4
    n = rep.shape[0]
    for q in range(first, (t + S - 1) // 4 + 1):
        b = 4 * (q - first)
        for r in range(n):
            w0, w1, w2, w3 = block_words(k0, k1, np.uint64(rng.NOISE), rep[r], np.uint64(q))
            W[0, r] = stored_word(w0, W)
            W[1, r] = stored_word(w1, W)
            W[2, r] = stored_word(w2, W)
            W[3, r] = stored_word(w3, W)
        for r in range(n):
            Z[b, r], Z[b + 1, r] = normal_pair(W[0, r], W[1, r])
        for r in range(n):
            Z[b + 2, r], Z[b + 3, r] = normal_pair(W[2, r], W[3, r])


@jit
def freeze_tile(old, new, live, dstep, lo, d, step, bound):
    """After a step with a bad lane: each live replica r of the tile with a non-finite or
    out-of-bound value in `new` (L * k values, k per lane, lane-major) is frozen (its lanes of
    `new` reset to `old`, its lanes of the mask `live` (L,) cleared, dstep[lo + r] = step).
    Returns the number of replicas still live."""
    k = new.shape[0] // live.shape[0]
    count = 0
    for r in range(live.shape[0] // d):
        if not live[r * d]:
            continue
        good = True
        for i in range(k * r * d, k * (r + 1) * d):
            good = good and ok(new[i], bound)
        if good:
            count += 1
        else:
            dstep[lo + r] = step
            for i in range(d):
                live[r * d + i] = False
            for i in range(k * r * d, k * (r + 1) * d):
                new[i] = old[i]
    return count


OVERDAMPED, BAOAB = 0, 1   # the dynamics of `double_well_tiles`


@jit
def langevin_step_table(kind, es, ts, t0, K, friction, mass, x):
    """Per-step coefficients (3, K) of steps t0 .. t0+K-1 in x's dtype, computed once per call:
    OVERDAMPED (eta, sqrt(2 eta T), 0), BAOAB (eta / 2, c1, c2) of `langevin.baoab_coeffs`."""
    c = np.zeros((3, K), dtype=x.dtype)
    for k in range(K):
        eta, T = sched(es, t0 + k), sched(ts, t0 + k)
        if kind == OVERDAMPED:
            c[0, k] = eta
            c[1, k] = math.sqrt(2.0 * eta * T)
        else:
            c1 = math.exp(-friction * eta)
            c[0, k] = 0.5 * eta
            c[1, k] = c1
            c[2, k] = math.sqrt((1.0 - c1 * c1) * mass * T)
    return c


@jit
def overdamped_lanes(a, b, live, z, eta, sigma, coef, bound):
    """One overdamped step of a DoubleWell tile from positions a (L,) into b with noise z (L,);
    frozen lanes (not live) copied.  Returns whether every new lane is finite and within bound."""
    c, a2, k, tilt = coef[0], coef[1], coef[2], coef[3]
    zero = like(0.0, a)
    good = True
    for j in range(a.shape[0]):
        xv = a[j]
        v = xv + overdamped_update(zero, dw_grad(xv, c, a2, k, tilt), eta, sigma, z[j])
        b[j] = v if live[j] else xv
        good = good & ok(b[j], bound)
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
        xv, pv = baoab_first(x0, p0, g0, h, inv_m, c1, c2, z[j])
        gv = dw_grad(xv, c, a2, k, tilt)
        pv = pv - h * gv
        keep = not live[j]
        b[3 * j] = x0 if keep else xv
        b[3 * j + 1] = p0 if keep else pv
        b[3 * j + 2] = g0 if keep else gv
        good = good & ok(b[3 * j], bound) & ok(b[3 * j + 1], bound) & ok(b[3 * j + 2], bound)
    return good


@jit
def region_flags(pos, nq, d, kind, vec, thr, now, ins):
    """Membership of one region for the n replicas of a tile after a step: now[r] = replica
    r in {x : vec . x > thr} (kind HALF_SPACE) or {x : |x - vec|^2 < thr} (BALL), with
    replica r's coordinate i at pos[nq * (r d + i)] (nq = 1 positions, 3 BAOAB triples), in
    float64 summed over i = 0, 1, .. in order as `FirstPassage.membership`.  Returns the
    number of replicas whose membership differs from ins (the previous one).  A lane loop
    of its own, so that it vectorizes (d = 1 has a loop without the inner sum)."""
    n = now.shape[0]
    if d == 1:
        if kind == fpass.HALF_SPACE:
            for r in range(n):
                now[r] = vec[0] * np.float64(pos[nq * r]) > thr
        else:
            for r in range(n):
                y = np.float64(pos[nq * r]) - vec[0]
                now[r] = y * y < thr
    else:
        for r in range(n):
            acc = 0.0
            if kind == fpass.HALF_SPACE:
                for i in range(d):
                    acc += vec[i] * np.float64(pos[nq * (r * d + i)])
                now[r] = acc > thr
            else:
                for i in range(d):
                    y = np.float64(pos[nq * (r * d + i)]) - vec[i]
                    acc += y * y
                now[r] = acc < thr
    diff = 0
    for r in range(n):
        diff += now[r] != ins[r]
    return diff


@jit
def region_changes(now, ins, lo, k, step, fp):
    """Record the membership changes now != ins of region k at step count `step` in fp (5, M,
    R) int64 (first entry, first exit, last crossing, crossings, inside; rows lo + r); then
    ins = now."""
    for r in range(now.shape[0]):
        if now[r] != ins[r]:
            m = lo + r
            fp[fpass.CROSSINGS, m, k] += 1
            fp[fpass.LAST_CROSSING, m, k] = step
            fp[fpass.INSIDE, m, k] = 1 if now[r] else 0
            if now[r]:
                if fp[fpass.FIRST_ENTRY, m, k] < 0:
                    fp[fpass.FIRST_ENTRY, m, k] = step
            elif fp[fpass.FIRST_EXIT, m, k] < 0:
                fp[fpass.FIRST_EXIT, m, k] = step
            ins[r] = now[r]


@jit
def region_scratch(fp, lo, n, R):
    """(now, ins): (R, n) bool scratch and the current membership of a tile's rows lo .. lo+n-1."""
    now = np.zeros((R, n), dtype=np.bool_)
    ins = np.zeros((R, n), dtype=np.bool_)
    for k in range(R):
        for r in range(n):
            ins[k, r] = fp[fpass.INSIDE, lo + r, k] != 0
    return now, ins


def no_regions(d: int):
    """The (regions, fp) arguments of the DoubleWell kernels without a first-passage observer."""
    return ((np.zeros(0, np.int64), np.zeros((0, d)), np.zeros(0)),
            np.zeros((5, 1, 0), np.int64))


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
    well, as NumPy does.  DoubleWell is separable, so each step updates a tile of
    R = max(1, TILE // d) replicas in one loop over its R*d lanes that vectorizes across
    replicas (frozen lanes masked, divergence found by one and-reduction); noise comes in
    chunks of S = max(1, CHUNK // d) steps per replica (a tile's noise, S x R*d, stays in L2),
    for d = 1 generated across replicas.  One parallel driver for both dynamics: one parfor
    compilation per dtype."""
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


@jit
def overdamped_rows(x, G, off, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf):
    """x[m] <- x[m] - eta (G[m - lo] - off) + sigma xi for the live rows lo .. lo + len(G) - 1
    at step t, or freeze row m with dstep[m] = t + 1 when the new state is non-finite or
    beyond bound.  off (d,) is a constant gradient offset; eta and sigma come in x's dtype
    (`like`), so float32 rows update in float32 as the reference does."""
    B, d = G.shape
    zero = like(0.0, x)
    for r in range(B):
        m = lo + r
        if dstep[m] >= 0:
            continue
        z, o = noise_chunk(k0, k1, rng.NOISE, np.uint64(rep0 + m), t * d, d, buf)
        good = True
        for i in range(d):
            new[i] = x[m, i] + overdamped_update(zero, G[r, i] - off[i], eta, sigma, z[o + i])
            good = good & ok(new[i], bound)
        if good:
            for i in range(d):
                x[m, i] = new[i]
        else:
            dstep[m] = t + 1


@pjit
def overdamped_quadratic(x, dstep, t0, K, k0, k1, rep0, es, ts, H, cH, bound, block):
    """Overdamped Langevin on a dense Quadratic: gradient x H - c H by one GEMM per block of
    `block` replicas and step (BLAS single-threaded, one block per thread), then a fused
    noise + update pass; arithmetic in x's dtype."""
    M, d = x.shape
    nb = (M + block - 1) // block
    for b in prange(nb):
        lo = b * block
        hi = min(M, lo + block)
        new = np.empty(d, dtype=x.dtype)
        G = np.empty((hi - lo, d), dtype=x.dtype)
        buf = noise_buffer(d, x)
        for t in range(t0, t0 + K):
            e = sched(es, t)
            eta = like(e, x)
            sigma = like(math.sqrt(2.0 * e * sched(ts, t)), x)
            np.dot(x[lo:hi], H, G)
            overdamped_rows(x, G, cH, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf)


@jit
def baoab_first_lanes(x, p, g, z, h, inv_m, c1, c2, nx, npm):
    """B, A, O, A of one BAOAB step for one replica's d lanes (1-D rows) into nx, npm."""
    for i in range(x.shape[0]):
        nx[i], npm[i] = baoab_first(x[i], p[i], g[i], h, inv_m, c1, c2, z[i])


@jit
def baoab_last_lanes(G, off, h, bound, npm):
    """The closing B of a BAOAB step for one replica: gradient G - off (written into G) and
    momentum npm - h (G - off) (into npm).  Returns whether both are finite and within bound."""
    good = True
    for i in range(G.shape[0]):
        gv = G[i] - off[i]
        pv = npm[i] - h * gv
        G[i] = gv
        npm[i] = pv
        good = good & ok(gv, bound) & ok(pv, bound)
    return good


@pjit
def baoab_quadratic(x, p, g, dstep, t0, K, k0, k1, rep0, es, ts, friction, mass, H, cH, bound,
                    block):
    """BAOAB on a dense Quadratic (p, g momenta and gradient at x, (M, d)): per block of
    `block` replicas and step, B A O A row by row with in-kernel noise, one GEMM for the new
    gradients x H - c H, then the closing B; coefficients in x's dtype.  A replica whose new
    x, p or g is non-finite or beyond bound keeps its state and gets dstep = t + 1."""
    M, d = x.shape
    table = langevin_step_table(BAOAB, es, ts, t0, K, friction, mass, x)
    inv_m = like(1.0 / mass, x)
    for b in prange((M + block - 1) // block):
        lo = b * block
        hi = min(M, lo + block)
        nx = x[lo:hi].copy()
        npm = p[lo:hi].copy()
        G = np.empty((hi - lo, d), dtype=x.dtype)
        buf = noise_buffer(d, x)
        for t in range(t0, t0 + K):
            h, c1, c2 = table[0, t - t0], table[1, t - t0], table[2, t - t0]
            for r in range(hi - lo):
                m = lo + r
                if dstep[m] < 0:
                    z, o = noise_chunk(k0, k1, rng.NOISE, np.uint64(rep0 + m), t * d, d, buf)
                    baoab_first_lanes(x[m], p[m], g[m], z[o:o + d], h, inv_m, c1, c2, nx[r],
                                      npm[r])
            np.dot(nx, H, G)
            for r in range(hi - lo):
                m = lo + r
                if dstep[m] >= 0:
                    continue
                if baoab_last_lanes(G[r], cH, h, bound, npm[r]) and finite_row(nx[r], bound):
                    x[m] = nx[r]
                    p[m] = npm[r]
                    g[m] = G[r]
                else:
                    dstep[m] = t + 1
                    nx[r] = x[m]


@jit
def finite_row(v, bound):
    """Whether every entry of v is finite and within bound."""
    good = True
    for i in range(v.shape[0]):
        good = good & ok(v[i], bound)
    return good


@jit
def minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B, full, replacement):
    """Fill idx (B,) with the sample indices of step t for replica `rep`, as
    `dynamics.sgd.minibatch`: with replacement word n = t*B + b of the MINIBATCH stream
    mapped by `bounded_index`; without, slice t mod (n // B) of the epoch's permutation
    (stable argsort of PERMUTE words e*n .. e*n + n - 1).  keys (n,) is scratch; `perm` and
    `epoch` cache the current permutation; returns the (possibly new) (perm, epoch)."""
    if full:
        for b in range(B):
            idx[b] = b
    elif replacement:
        for b in range(B):
            nn = np.uint64(t * B + b)
            w = block_words(k0, k1, np.uint64(rng.MINIBATCH), rep, nn // np.uint64(4))
            idx[b] = np.int64(bounded_index(w[nn % np.uint64(4)], n))
    else:
        per_epoch = n // B
        e = t // per_epoch
        if e != epoch:
            epoch = e
            for i in range(n):
                nn = np.uint64(e * n + i)
                w = block_words(k0, k1, np.uint64(rng.PERMUTE), rep, nn // np.uint64(4))
                keys[i] = w[nn % np.uint64(4)]
            perm = np.argsort(keys, kind="mergesort")
        j = t - e * per_epoch
        for b in range(B):
            idx[b] = perm[j * B + b]
    return perm, epoch


@jit
def sgd_step(x, v, g, t, k0, k1, rep, lr, T, momentum, wd, bound, buf, nx, nv):
    """One SGD update of one replica: x, v, g (d,) position, velocity and mean minibatch
    gradient; noise sqrt(2 lr T) xi, xi from the NOISE stream at n = t*d + i, when T > 0.
    nx, nv (d,) and buf (`noise_buffer(d, x)`) are scratch.  Writes x, v and returns True, or
    returns False with x, v untouched if a new value is non-finite or beyond `bound`."""
    d = x.shape[0]
    sigma = math.sqrt(2.0 * lr * T)
    z, off = noise_chunk(k0, k1, rng.NOISE, rep, t * d, d, buf) if T > 0 else (buf[1, 0], 0)
    good = True
    for i in range(d):
        xi = z[off + i] if T > 0 else 0.0
        xv, vv = sgd_update(x[i], v[i], g[i], lr, momentum, wd, sigma, xi)
        nx[i] = xv
        nv[i] = vv
        good = good & ok(xv, bound) & ok(vv, bound)
    if good:
        x[:] = nx
        v[:] = nv
    return good


@jit
def sgd_scratch(x, n, B):
    """Per-replica scratch of the SGD kernels for n samples, batches of B and d = x.shape[1]
    parameters: (idx, keys, perm, epoch) for `minibatch_rows`, (g, nx, nv, buf) for `sgd_step`."""
    d = x.shape[1]
    return (np.empty(B, dtype=np.int64), np.empty(n, dtype=np.uint64), np.arange(n), np.int64(-1),
            np.empty(d, dtype=x.dtype), np.empty(d, dtype=x.dtype), np.empty(d, dtype=x.dtype),
            noise_buffer(d, x))


@jit
def linreg_batch_grad(A, y, idx, x, g):
    """Mean minibatch gradient g (d,) of (a.x - y)^2 / 2 over the rows idx of A (n, d), y (n,)
    at parameters x (d,) (a function of its own so that its loops vectorize)."""
    g[:] = 0.0
    for b in range(idx.shape[0]):
        a = A[idx[b]]
        r = -y[idx[b]]
        for i in range(x.shape[0]):
            r += a[i] * x[i]
        for i in range(x.shape[0]):
            g[i] += r * a[i]
    for i in range(x.shape[0]):
        g[i] /= idx.shape[0]


@pjit
def sgd_linear_regression(x, v, dstep, t0, K, k0, k1, rep0, ls, ts, momentum, wd, A, y,
                          batch, replacement, bound):
    """Minibatch SGD on LinearRegression (A (n, d), y (n,)); batch = B, 0 for full batch."""
    M = x.shape[0]
    n = A.shape[0]
    B = batch if batch > 0 else n
    for m in prange(M):
        if dstep[m] >= 0:
            continue
        rep = np.uint64(rep0 + m)
        idx, keys, perm, epoch, g, nx, nv, buf = sgd_scratch(x, n, B)
        for t in range(t0, t0 + K):
            perm, epoch = minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B, batch == 0,
                                         replacement)
            linreg_batch_grad(A, y, idx, x[m], g)
            if not sgd_step(x[m], v[m], g, t, k0, k1, rep, sched(ls, t), sched(ts, t), momentum,
                            wd, bound, buf, nx, nv):
                dstep[m] = t + 1
                break
