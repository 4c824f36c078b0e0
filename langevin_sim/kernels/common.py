"""What the families' kernels share: the step rules every step is made of, compiled per target,
and the CPU pieces around them.

Step rules.  `STEPS` names the scalar rules of the dynamics, written once as plain Python next
to the reference steps that use them (`dynamics.langevin`, `dynamics.sgd`,
`dynamics.schedules`; the divergence test `backends.numpy_backend.within_bound`), plus the
lane compositions defined here.  A family module names its own rules in its `STEPS`, and
`compile_steps(family, compiler, primitives)` compiles both for one target:
``compile_steps(module)`` for the CPU (Numba copies inlined into the callers' loops), and
``compile_steps(module, numba.cuda.jit(device=True), PRIMITIVES)`` for numba-cuda (the RNG is
compiled the same way: ``compile_functions(rng, rng.DEVICE_FUNCTIONS, ...)``).  Compiled code
calls the copies as attributes of the returned module object: ``cpu.within_bound(v, bound)``.

CPU pieces (the sections below): the in-kernel Philox normals of the state's dtype, divergence
freezing, schedule values and per-step coefficients, the row updates that several families
run after a BLAS gradient, and the first-passage region updates.

Kernel conventions (every family): kernels assume validated input.  A replica whose new state
is non-finite or beyond `bound` keeps its last state and gets ``dstep[m] = t + 1``.
Arguments: x (M, d) state, dstep (M,) int64, t0 first step, K steps, k0/k1 Philox key, rep0
global id of row 0, es/ts schedule codes (kind, start, end, steps) of step size and
temperature.  Step size and noise scale are cast to the state's dtype (`like`), as NumPy does
with Python scalars, so float32 runs round like the reference.
"""
from __future__ import annotations

import math
import sys
import types as pytypes

import numba
import numpy as np
from numba import types
from numba.extending import overload

from .. import first_passage as fpass
from .. import rng
from ..backends.jit import CPU_PRIMITIVES, compile_functions, ijit, jit, pjit
from ..backends.numpy_backend import within_bound
from ..dynamics.adamw import adamw_update
from ..dynamics.heun import heun_update
from ..dynamics.langevin import (baoab_coeffs, baoab_first, baoab_last, lm_update, noise_scale,
                                 obabo_first, obabo_last, overdamped_update)
from ..dynamics.mala import accept_uniform, mala_accept, mala_log_alpha, proposal_residual2
from ..dynamics.schedules import KINDS, schedule_value
from ..dynamics.sgd import sgd_update
from ..rng import sqrt


# ---------------------------------------------------------------- step rules, every target

def overdamped_lane(x, g, z, eta, sigma, zero):
    """One unconstrained overdamped Langevin step of one coordinate with gradient g and normal
    z, as the reference takes it: x + (0 - eta g + sigma z), with `zero` a 0 of x's type."""
    return x + overdamped_update(zero, g, eta, sigma, z)


_SHARED = dict(within_bound=within_bound, schedule_value=schedule_value, noise_scale=noise_scale,
               overdamped_update=overdamped_update, overdamped_lane=overdamped_lane,
               baoab_coeffs=baoab_coeffs, baoab_first=baoab_first, baoab_last=baoab_last,
               obabo_first=obabo_first, obabo_last=obabo_last,
               sgd_update=sgd_update, heun_update=heun_update, lm_update=lm_update,
               sqrt=sqrt, adamw_update=adamw_update, proposal_residual2=proposal_residual2,
               mala_log_alpha=mala_log_alpha, accept_uniform=accept_uniform,
               mala_accept=mala_accept)
STEPS = tuple(_SHARED)   # the step rules every family shares


def compile_steps(module, compiler=ijit, primitives=CPU_PRIMITIVES) -> pytypes.ModuleType:
    """The shared `STEPS` and `module.STEPS` (a family's own step functions, which may call the
    shared ones by name) compiled for one target by `compile_functions`: a module object of
    the compiled copies."""
    own = {name: getattr(module, name) for name in module.STEPS}
    steps = pytypes.SimpleNamespace(__name__=module.__name__, **{**_SHARED, **own})
    return compile_functions(steps, tuple(dict.fromkeys(STEPS + tuple(module.STEPS))), compiler,
                             primitives)


cpu = compile_steps(sys.modules[__name__])
rng_cpu = compile_functions(rng, rng.DEVICE_FUNCTIONS, compiler=ijit)


# ---------------------------------------------------------------- normals (CPU)
# Normals of the state's dtype: the reference draws float32 normals for float32 runs
# (`rng.block_normals_f32`).  Between the Philox pass and the Box-Muller pass a word is kept
# in the state's dtype (`stored_word`), so the Box-Muller loop reads and writes only that
# type and vectorizes 8 lanes wide for float32.

CHUNK = 256  # normals generated per call of `noise_chunk` (a few steps when d is small)
TILE = 256   # replicas x coordinates that the tiled kernels update together in one loop


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
        return lambda w, like: rng_cpu.word_u23(w)
    return lambda w, like: np.float64(w)


@overload(normal_pair, inline="always")
def _normal_pair(wa, wb):
    # the compiled copies' Python functions: their globals are the compiled siblings
    if wa == types.float32:
        return rng_cpu.box_muller_f32.py_func
    return rng_cpu.box_muller.py_func


@overload(like, inline="always")
def _like(v, arr):
    if arr.dtype == types.float32:
        return lambda v, arr: np.float32(v)
    return lambda v, arr: np.float64(v)


@jit
def noise_buffer(lanes, x):
    """Scratch (x's dtype) for `noise_chunk` calls of up to `lanes` normals: flat, words
    (4, q) then normals (4 q,)."""
    return np.empty(8 * ((lanes + 3) // 4 + 1), dtype=x.dtype)


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
    q = buf.shape[0] // 8
    # W 2-D: with flat indices W[k q + b] both loops ran ~6x slower (not vectorized)
    W, z = buf[:4 * q].reshape(4, q), buf[4 * q:]
    for b in range(nb):
        w0, w1, w2, w3 = rng_cpu.block_words(k0, k1, np.uint64(purpose), rep, np.uint64(first + b))
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


PIECE = 1 << 16  # normals per parallel piece of `stream_normals_into`


@pjit
def stream_normals_into(k0, k1, purpose, rep, start, out):
    """out (n,) float64 = the normals of stream `purpose`, replica `rep` at positions start ..
    start + n - 1 (`rng.stream_normals`, bit for bit), in parallel pieces of PIECE: instance
    data too large for the NumPy generator's pace (a p-spin's couplings)."""
    n = out.shape[0]
    for c in numba.prange((n + PIECE - 1) // PIECE):
        lo = c * PIECE
        count = min(PIECE, n - lo)
        z, off = noise_chunk(k0, k1, purpose, rep, start + lo, count, noise_buffer(count, out))
        out[lo:lo + count] = z[off:off + count]


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
            w0, w1, w2, w3 = rng_cpu.block_words(k0, k1, np.uint64(rng.NOISE), rep[r], np.uint64(q))
            W[0, r] = stored_word(w0, W)
            W[1, r] = stored_word(w1, W)
            W[2, r] = stored_word(w2, W)
            W[3, r] = stored_word(w3, W)
        for h in range(0, 4, 2):   # one Box-Muller in the code: inlined once, compiles faster
            for r in range(n):
                Z[b + h, r], Z[b + h + 1, r] = normal_pair(W[h, r], W[h + 1, r])


# ---------------------------------------------------------------- divergence (CPU)

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
            good = good and cpu.within_bound(new[i], bound)
        if good:
            count += 1
        else:
            dstep[lo + r] = step
            for i in range(d):
                live[r * d + i] = False
            for i in range(k * r * d, k * (r + 1) * d):
                new[i] = old[i]
    return count


@jit
def finite_row(v, bound):
    """Whether every entry of v is finite and within bound."""
    good = True
    for i in range(v.shape[0]):
        good = good & cpu.within_bound(v[i], bound)
    return good


# ---------------------------------------------------------------- schedules and coefficients (CPU)

TILE_CALL_STEPS = 1 << 16  # steps per kernel call where a kernel tabulates its step coefficients
GEMM_BLOCK_BYTES = 1 << 20  # cap on a GEMM block's state + gradient rows (stays in L2)
OVERDAMPED, BAOAB, OBABO = 0, 1, 2    # the Langevin dynamics of `langevin_step_table`


def schedule_code(schedule) -> np.ndarray:
    """A Schedule as the kernels take it: float64 (kind, start, end, steps)."""
    return np.array(schedule.code, dtype=np.float64)


def temperature_code(schedule) -> np.ndarray | None:
    """A temperature schedule as `sgd_step` takes it: `schedule_code`, or None when its value
    is +0.0 at every step (a constant +0.0, or start = end = +0.0: linear and cosine
    schedules then give +0.0 too, exponential ones are positive), so that the kernel compiles
    without the noise.  -0.0 keeps its code: sqrt(2 lr (-0.0)) = -0.0 can sign a zero."""
    kind, start, end, _ = schedule.code
    ends = (start,) if kind == KINDS["constant"] else (start, end)
    zero = all(v == 0.0 and math.copysign(1.0, v) > 0 for v in ends)
    return None if zero else schedule_code(schedule)


def noise_level(sigma: float) -> float | None:
    """A noise amplitude (`SGD.label_noise`, `grad_noise`) as the SGD kernels take it: the
    float, or None when it is not > 0 (that noise absent: its branch is compiled away)."""
    return float(sigma) if sigma > 0 else None


def gemm_block(M: int, d: int, itemsize: int) -> int:
    """Replicas per GEMM block: one block per thread (large single-threaded GEMMs run
    closest to the BLAS rate), capped so that a block's x and gradient rows fit in
    GEMM_BLOCK_BYTES.  Results do not depend on it."""
    per_thread = -(-M // numba.get_num_threads())
    return max(1, min(per_thread, GEMM_BLOCK_BYTES // (2 * d * itemsize)))


@jit
def sched(code, t):
    """Value at step t of the schedule with code `code` (`schedule_code`)."""
    return cpu.schedule_value(int(code[0]), code[1], code[2], code[3], t)


SUM_DIGITS = 2200   # binary digits of `schedule_digits`: 2**(2199 - 1074) > 2**63 * max float


@jit
def schedule_digits(code, t0, t1):
    """The exact sum of the schedule's values (finite, >= 0) at steps t0 .. t1-1 as digits
    acc (SUM_DIGITS,) int64: sum = sum_i acc[i] 2**(i - 1074).  Each value's 53-bit mantissa
    is added at its exponent's digit (a subnormal's, whose low bits are zero, shifted to digit
    0), and every 512 values each digit's excess over 1 carries to the next, so no digit
    overflows int64.  `Schedule.exact_sum` adds the digits up."""
    acc = np.zeros(SUM_DIGITS, np.int64)
    n = 0
    for t in range(t0, t1):
        m, e = math.frexp(sched(code, t))        # value = m 2**e, 0.5 <= m < 1
        mant = np.int64(m * 9007199254740992.0)  # m 2**53, exact
        i = e + 1021                             # value = mant 2**(i - 1074)
        if i < 0:
            mant = mant >> -i
            i = 0
        acc[i] += mant
        n += 1
        if n == 512:
            n = 0
            for j in range(SUM_DIGITS - 1):
                acc[j + 1] += acc[j] >> 1
                acc[j] &= 1
    return acc


@jit
def langevin_step_table(kind, es, ts, t0, K, friction, mass, x):
    """Per-step coefficients (3, K) of steps t0 .. t0+K-1 in x's dtype, computed once per call:
    OVERDAMPED (eta, sqrt(2 eta T), 0), BAOAB (eta / 2, c1, c2) of `langevin.baoab_coeffs`,
    OBABO (eta / 2, c1, c2 of its half-step O: `baoab_coeffs` at eta / 2)."""
    c = np.zeros((3, K), dtype=x.dtype)
    for k in range(K):
        eta, T = sched(es, t0 + k), sched(ts, t0 + k)
        if kind == OVERDAMPED:
            c[0, k] = eta
            c[1, k] = cpu.noise_scale(eta, T)
        else:
            c1, c2 = cpu.baoab_coeffs(eta if kind == BAOAB else 0.5 * eta, friction, T, mass)
            c[0, k] = 0.5 * eta
            c[1, k] = c1
            c[2, k] = c2
    return c


# ---------------------------------------------------------------- row updates (CPU)

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
        zs = z[o:o + d]     # from 0: `z[o + i]` (wraparound tested) kept LLVM from vectorizing
        good = True
        for i in range(d):
            new[i] = cpu.overdamped_lane(x[m, i], G[r, i] - off[i], zs[i], eta, sigma, zero)
            good = good & cpu.within_bound(new[i], bound)
        if good:
            for i in range(d):
                x[m, i] = new[i]
        else:
            dstep[m] = t + 1


@jit
def stream_block(k0, k1, purpose, rep, q):
    """Philox block q (4 words) of stream `purpose` of replica rep: a call, not inlined, so
    that the minibatch samplings share one compiled copy of Philox."""
    return rng_cpu.block_words(k0, k1, np.uint64(purpose), rep, np.uint64(q))


@jit
def stream_word(k0, k1, purpose, rep, nn):
    """Word nn (uint64) of stream `purpose` of replica rep: word nn % 4 of block nn // 4."""
    return stream_block(k0, k1, purpose, rep, nn // np.uint64(4))[nn % np.uint64(4)]


@jit
def epoch_words(keys, k0, k1, rep, n0):
    """keys[i] = PERMUTE word n0 + i of replica rep (i < len(keys)), one Philox call per block
    of four words."""
    n = keys.shape[0]
    for q in range(n0 // 4, (n0 + n - 1) // 4 + 1):
        w = stream_block(k0, k1, rng.PERMUTE, rep, np.uint64(q))   # (uint64, as stream_word)
        for k in range(4):
            i = 4 * q + k - n0
            if 0 <= i < n:
                keys[i] = w[k]


@jit
def stable_argsort32(keys, perm):
    """np.argsort(keys, kind="mergesort") for keys < 2^32 (n,) into perm (n,) int64 (returned):
    an LSD radix sort, four passes of 8 bits (stable, so ties keep index order)."""
    n = keys.shape[0]
    tmp = np.empty(n, np.int64)
    count = np.empty(257, np.int64)
    for i in range(n):
        perm[i] = i
    src, dst = perm, tmp
    for shift in range(0, 32, 8):
        count[:] = 0
        for i in range(n):
            count[((keys[i] >> np.uint64(shift)) & np.uint64(255)) + 1] += 1
        for c in range(1, 257):
            count[c] += count[c - 1]
        for i in range(n):
            j = src[i]
            c = (keys[j] >> np.uint64(shift)) & np.uint64(255)
            dst[count[c]] = j
            count[c] += 1
        src, dst = dst, src
    return src


def sampling_args(sampling: str) -> tuple:
    """(iid, subset, shuffled) of `minibatch_rows` for a sampling name (`sgd.sampling_of`):
    True for that sampling, None for the others (their code is compiled away)."""
    return tuple(True if sampling == name else None for name in ("iid", "subset", "epoch"))


@jit
def minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B, full, iid, subset, shuffled):
    """Fill idx (B,) with the sample indices of step t for replica `rep`, as
    `dynamics.sgd.minibatch`, the sampling given by which of iid, subset, shuffled is not
    None (`sampling_args`; Numba compiles only its branch): iid, word n = t*B + b of the
    MINIBATCH stream mapped by `bounded_index`; subset, Floyd's algorithm on SUBSET words
    t*B .. t*B + B - 1 (`sgd.floyd_subset`); shuffled ("epoch"), slice t mod (n // B) of the
    epoch's permutation (stable argsort of PERMUTE words e*n .. e*n + n - 1,
    `stable_argsort32`).  full: samples 0 .. B-1.  keys (n,) is scratch; `perm` (n,) int64
    and `epoch` cache the current permutation (rewritten in place); returns (perm, epoch)."""
    if full:
        for b in range(B):
            idx[b] = b
        return perm, epoch
    if iid is not None:
        for b in range(B):
            w = stream_word(k0, k1, rng.MINIBATCH, rep, np.uint64(t * B + b))
            idx[b] = np.int64(rng_cpu.bounded_index(w, n))
    if subset is not None:
        for b in range(B):
            w = stream_word(k0, k1, rng.SUBSET, rep, np.uint64(t * B + b))
            j = n - B + b
            c = np.int64(rng_cpu.bounded_index(w, j + 1))
            for q in range(b):
                if idx[q] == c:
                    c = j
                    break
            idx[b] = c
    if shuffled is not None:
        per_epoch = n // B
        e = t // per_epoch
        if e != epoch:
            epoch = e
            epoch_words(keys, k0, k1, rep, e * n)
            perm = stable_argsort32(keys, perm)
        j = t - e * per_epoch
        for b in range(B):
            idx[b] = perm[j * B + b]
    return perm, epoch


@jit
def label_shifts(shift, t, k0, k1, rep, sigma, buf):
    """shift (B,) <- sigma eps_b, eps_b the LABEL_NOISE normals of step t at n = t*B + b
    (`SGD.label_noise`; buf: `noise_buffer(B, x)`); zeros when sigma is 0.  Kernels without
    label noise (`noise_level` None) skip the call: shift stays `sgd_scratch`'s zeros."""
    B = shift.shape[0]
    if sigma > 0:
        z, off = noise_chunk(k0, k1, rng.LABEL_NOISE, rep, t * B, B, buf)
        zs = z[off:off + B]
        for b in range(B):
            shift[b] = like(sigma, shift) * zs[b]
    else:
        shift[:] = 0.0


@jit
def sgd_step(x, v, g, t, k0, k1, rep, lr, ts, momentum, wd, bound, buf, nx, nv, gsig):
    """One SGD update of one replica at step t: x, v, g (d,) position, velocity and mean
    minibatch gradient; g += gsig xi_g (GRAD_NOISE stream at n = t*d + i, `SGD.grad_noise`)
    when gsig > 0 (g is overwritten); noise sqrt(2 lr T) xi, T = sched(ts, t) the
    temperature, xi from the NOISE stream at n = t*d + i, when T > 0; scalars in x's dtype
    (as NumPy's with Python floats).  gsig None: no gradient noise (`noise_level`); ts None:
    a temperature +0 at every step (`temperature_code`): Numba drops those branches, and
    their Philox, at compile time.  nx, nv (d,) and buf (`noise_buffer(d, x)`) are scratch.
    Writes x, v and returns True, or returns False with x, v untouched if a new value is
    non-finite or beyond `bound`."""
    d = x.shape[0]
    if gsig is not None:
        if gsig > 0:
            zg, og = noise_chunk(k0, k1, rng.GRAD_NOISE, rep, t * d, d, buf)
            s, zgs = like(gsig, g), zg[og:og + d]
            for i in range(d):
                g[i] = g[i] + s * zgs[i]
    zero = like(0.0, x)
    sigma, z, off, noisy = zero, buf[buf.shape[0] // 2:], 0, False
    if ts is not None:
        T = sched(ts, t)
        sigma = like(cpu.noise_scale(lr, T), x)
        if T > 0:
            z, off = noise_chunk(k0, k1, rng.NOISE, rep, t * d, d, buf)
            noisy = True
    lr_, mu, wd_ = like(lr, x), like(momentum, x), like(wd, x)
    zs = z[off:off + d]     # indices from 0 (see `overdamped_rows`)
    good = True
    for i in range(d):
        xi = zs[i] if noisy else zero
        xv, vv = cpu.sgd_update(x[i], v[i], g[i], lr_, mu, wd_, sigma, xi)
        nx[i] = xv
        nv[i] = vv
        good = good & cpu.within_bound(xv, bound) & cpu.within_bound(vv, bound)
    if good:    # (loops: an array slice assignment compiles Numba's shape-error message, ~3 s)
        for i in range(d):
            x[i] = nx[i]
            v[i] = nv[i]
    return good


@ijit
def sgd_scratch(x, n, B):
    """Per-replica scratch of the SGD kernels for n samples, batches of B and d = x.shape[1]
    parameters: (idx, keys, perm, epoch) for `minibatch_rows`, (g, nx, nv, buf) for `sgd_step`,
    (shift, lbuf) for `label_shifts`.  Inlined into the kernels: compiled on its own it took
    0.7-1.2 s of a toy-net kernel's cold compile (measured)."""
    d = x.shape[1]
    return (np.empty(B, dtype=np.int64), np.empty(n, dtype=np.uint64), np.arange(n), np.int64(-1),
            np.empty(d, dtype=x.dtype), np.empty(d, dtype=x.dtype), np.empty(d, dtype=x.dtype),
            noise_buffer(d, x), np.zeros(B, dtype=x.dtype), noise_buffer(B, x))


# ---------------------------------------------------------------- first-passage observers (CPU)

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
    """The (regions, fp) arguments of a kernel with first-passage regions, without an observer."""
    return ((np.zeros(0, np.int64), np.zeros((0, d)), np.zeros(0)),
            np.zeros((5, 1, 0), np.int64))
