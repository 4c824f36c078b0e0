"""numba-cuda kernels of the cuda backend's generic path (elementwise: a thread per replica
and Philox block of its row), and the fused step kernel of the dense families (`gemm_step`:
one thread, or a slice of threads, per replica).

Nothing here is a new step rule.  The scalar rules are the ones every target compiles
(`kernels.common.STEPS`, compiled for numba-cuda by `kernels.common.compile_steps`, the same
call the fused kernels use), plus AdamW's:

    overdamped_update, overdamped_lane, baoab_first, baoab_last   dynamics/langevin.py, kernels/common.py
    lm_update                          dynamics/langevin.py
    heun_update                        dynamics/heun.py
    sgd_update                         dynamics/sgd.py
    adamw_update                       dynamics/adamw.py
    within_bound                       backends/numpy_backend.py (the divergence test)
    block_normals(_f32), block_words, bounded_index     rng.py (Philox4x32-10, Box-Muller)

and the generic kernel (`elementwise`, one skeleton over the rules' entry functions) applies
one of them to the lanes of its chunk of a replica's row after drawing the lanes' normals
at the reference's stream positions (n = step * d + lane, purpose NOISE; word n % 4 of
Philox block n // 4, one block a thread; float32 states draw `block_normals_f32`), tests
each new entry for divergence (finite and |.| <= bound) and flags its replica in `bad` if
one fails; `freeze` then freezes a flagged replica (old state kept, `dstep` = step + 1), as
`numpy_backend.reference_advance` does.  The kernels write the new state into separate
output arrays (the backend swaps them with the state), so a replica's old state is intact
until `freeze` has run.

Constrained potentials: with ``candidate=True`` a kernel writes the tangent-step candidate
(the rule applied from the origin, as the reference does) and leaves the divergence test to
the EW_COMMIT rule and `freeze`, after the potential's own `project` / `retract` ran on the
device arrays.

Kernels are built per state dtype (float32 states draw float32 normals and run float32
arithmetic: scalars are passed in the state's dtype) and cached.

`gemm_step` is the one fused "gradient given, now step" kernel of the dense pairs'
registered "cuda" kernels (SphericalPSpin, Quadratic x OverdampedLangevin): after the step's
GEMM, noise, the family's row rule (a hook), divergence and freeze in one launch, on the
transposed state (`cuda_backend.gemm_steps`).  BAOAB on the dense quadratic forms straddles
its GEMM (B A O A before, the closing B after) and has a kernel of its own on the same
layout, `kernels.quadratic.baoab_kernel`.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import first_passage as fpass
from .. import rng
from ..dynamics import adamw as adamw_mod
from . import cuda_runtime as rt

# A module global: the CUDA simulator runs a kernel by swapping the `numba.cuda` module in its
# function's globals for a fake one (thread and block indices), so kernels must see `cuda`
# as a global of this module, not as a closure variable.
cuda = rt.cuda()
NOISE, GRAD_NOISE, ACCEPT = (np.uint64(rng.NOISE), np.uint64(rng.GRAD_NOISE),
                             np.uint64(rng.ACCEPT))


@functools.lru_cache(maxsize=None)
def device_rng():
    """rng.py's functions compiled as numba-cuda device functions."""
    return rt.device_compile(rng, rng.DEVICE_FUNCTIONS)


@functools.lru_cache(maxsize=None)
def steps():
    """The step rules as numba-cuda device functions: `kernels.common.STEPS` (the shared
    rules of every target) and `adamw_update`, by `kernels.common.compile_steps`."""
    from types import SimpleNamespace

    from ..kernels.common import compile_steps

    own = SimpleNamespace(__name__=__name__, STEPS=("adamw_update",),
                          adamw_update=adamw_mod.adamw_update)
    return compile_steps(own, cuda.jit(device=True), rt.primitives())


@functools.lru_cache(maxsize=None)
def helpers():

    @cuda.jit(device=True)
    def pick(w, z0, z1, z2, z3):
        """Word w of a Philox block's four values."""
        if w == 0:
            return z0
        if w == 1:
            return z1
        if w == 2:
            return z2
        return z3

    @cuda.jit(device=True)
    def copy_row(src, dst, r):
        for j in range(src.shape[1]):
            dst[r, j] = src[r, j]

    return pick, copy_row


@functools.lru_cache(maxsize=None)
def stream_window():
    """(span, slot, one): device functions over the Philox blocks that hold stream positions
    n0 .. n0 + n - 1 (four a block), for a kernel that draws them in order, each block once::

        b, end, lo, hi = span(n0, n)
        while b < end:
            z0, z1, z2, z3 = block(..., b)
            for w in range(4):
                pos = slot(b, w)
                if pos >= lo and pos < hi:
                    j = pos - lo   ... position n0 + j is word w of block b
            b += one

    span(n0, n) -> (first block, end block, n0, n0 + n), slot(b, w) -> the stream position of
    word w of block b, all uint64: numba's `range` over a run-time start and signed position
    tests cost ~27 SASS instructions a block (design_changes 81, 83)."""
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)

    @cuda.jit(device=True)
    def span(n0, n):
        lo = np.uint64(n0)
        hi = lo + np.uint64(n)
        return lo >> two, (hi + three) >> two, lo, hi

    @cuda.jit(device=True)
    def slot(b, w):
        return (b << two) + np.uint64(w)

    return span, slot, one


F32_INF, F32_MAX = np.float32(np.inf), np.finfo(np.float32).max
ONE_DOWN = np.float32(1.0 - 2.0 ** -24)  # b * ONE_DOWN: the float32 below a positive normal b


@functools.lru_cache(maxsize=None)
def state_bound(f32: bool):
    """Device function: the divergence bound (float64, > 0) for values of the state's dtype.
    Float32 states test against the largest float32 <= bound, which passes exactly the
    float32 v with |v| <= bound (`within_bound` in float32: no conversion to float64 and
    float64 compare per test); float64 states against the bound itself."""
    ftype = np.float32 if f32 else np.float64

    @cuda.jit(device=True)
    def bound_of(bound):
        b = ftype(bound)
        if not f32:
            return b
        if b == F32_INF and bound < math.inf:      # beyond float32's largest finite value
            return F32_MAX
        if np.float64(b) > bound:                  # rounded up: the float32 below it
            return b * ONE_DOWN
        return b
    return bound_of


def _normals_fn(f32: bool):
    dev = device_rng()
    return dev.block_normals_f32 if f32 else dev.block_normals


@functools.lru_cache(maxsize=None)
def cached_draws(f32: bool):
    """(draw, word): device functions ``f(k0, k1, purpose, rep, n, blk, c0, c1, c2, c3) ->
    (value, blk, c0, c1, c2, c3)`` giving the normal (float32 if f32) or the 32-bit word at
    stream position n of `purpose`, with the caller's cached Philox block (its index blk, -1
    for none, and its four values): a block is computed once for the four positions it holds.
    A kernel keeps one cache per stream it draws from."""
    return _block_cached(_normals_fn(f32)), _block_cached(device_rng().block_words)


def _block_cached(block):
    pick = helpers()[0]

    @cuda.jit(device=True)
    def value(k0, k1, purpose, rep, n, blk, c0, c1, c2, c3):
        b = np.int64(np.uint64(n) >> np.uint64(2))   # n >= 0: a shift, not a signed floor
        if b != blk:                                 # division (12 SASS instructions)
            c0, c1, c2, c3 = block(k0, k1, purpose, rep, np.uint64(b))
            blk = b
        return pick(np.int32(n & 3), c0, c1, c2, c3), b, c0, c1, c2, c3
    return value


# ---------------------------------------------------------------- the generic path's kernels
# Elementwise over (replica, chunk): thread i of a launch of M `chunks_of(n)` threads
# (`DeviceRun.launch_chunks`) takes replica r = i // Q and the r-th row's chunk q = i mod Q,
# Q = chunks_of(n): the entries whose stream positions n0 + j (the step's normals, or j
# itself where no stream is drawn) fall in Philox block n0 / 4 + q, each block computed once;
# a warp covers ~128 consecutive entries of a row (coalesced).  One thread per replica looping
# over the row would have M threads in all, each waiting on its loads in turn: a large net on
# this path (tens of thousands of parameters, hundreds of replicas) ran a few warps on the
# whole device.  The divergence test is per entry; a failure flags the replica in the run's
# `bad` array (benign: every writer writes 1), and `freeze`, one thread per replica, then
# gives a flagged replica its old rows and freezes it (design_changes 84).

def chunks_of(n: int) -> int:
    """Threads per replica of the generic path's elementwise kernels for rows of n entries:
    the Philox blocks n stream positions can touch, wherever they start."""
    return (int(n) + 6) // 4


@functools.lru_cache(maxsize=None)
def chunk_of():
    """(at, slot): device functions of the generic path's elementwise kernels.
    at(i, a, n0) -> (live, r, b, lo, hi): thread i's replica r (a row of the (M, n) array a)
    and Philox block b of that row's stream positions lo = n0 .. hi = n0 + n (`stream_window`'s
    span); live: whether the thread has a block to take.  slot: `stream_window`'s (a word's
    position pos, entry pos - lo where lo <= pos < hi).  All uint64."""
    span, slot, _ = stream_window()
    six, two = np.uint64(6), np.uint64(2)

    @cuda.jit(device=True)
    def at(i, a, n0):
        M, n = np.uint64(a.shape[0]), np.uint64(a.shape[1])
        Q = (n + six) >> two
        ui = np.uint64(i)
        r = ui // Q
        b0, end, lo, hi = span(n0, n)
        b = b0 + (ui - r * Q)
        return r < M and b < end, r, b, lo, hi

    return at, slot


@functools.lru_cache(maxsize=None)
def normals(f32: bool):
    """out[r, j] = the normal at stream position start + j of replica rep0 + r (launched on
    M chunks_of(out.shape[1]) threads)."""
    bn = _normals_fn(f32)
    pick = helpers()[0]
    at, slot = chunk_of()

    @cuda.jit
    def kernel(out, k0, k1, purpose, rep0, start):
        live, r, b, lo, hi = at(cuda.grid(1), out, start)
        if not live:
            return
        z0, z1, z2, z3 = bn(k0, k1, purpose, rep0 + r, b)
        for w in range(4):
            pos = slot(b, w)
            if pos >= lo and pos < hi:
                j = pos - lo
                out[r, j] = pick(w, z0, z1, z2, z3)
    return kernel


@functools.lru_cache(maxsize=None)
def words():
    """out[r, j] = the 32-bit word at stream position start + j of replica rep0 + r (uint64);
    with n > 0, the index `bounded_index(word, n)` instead (out int64): minibatch draws
    (launched on M chunks_of(out.shape[1]) threads)."""
    dev = device_rng()
    bw, bi = dev.block_words, dev.bounded_index
    pick = helpers()[0]
    at, slot = chunk_of()

    @cuda.jit
    def kernel(out, k0, k1, purpose, rep0, start, n):
        live, r, b, lo, hi = at(cuda.grid(1), out, start)
        if not live:
            return
        w0, w1, w2, w3 = bw(k0, k1, purpose, rep0 + r, b)
        for w in range(4):
            pos = slot(b, w)
            if pos >= lo and pos < hi:
                j = pos - lo
                word = pick(w, w0, w1, w2, w3)
                if n > 0:
                    out[r, j] = bi(word, n)
                else:
                    out[r, j] = word
    return kernel


# the generic path's step rules (`elementwise`'s `rule`): Euler-Maruyama, the heavy ball (SGD),
# AdamW, BAOAB's B A O A and its closing B, the divergence test alone (`DeviceRun.commit`),
# Heun's predictor and corrector, Leimkuhler-Matthews, OBABO's O B A and its closing B O
(EW_OVERDAMPED, EW_SGD, EW_ADAMW, EW_BAOAB_FIRST, EW_BAOAB_LAST, EW_COMMIT, EW_HEUN_PREDICT,
 EW_HEUN_CORRECT, EW_LM, EW_OBABO_FIRST, EW_OBABO_LAST) = range(11)
EW_DRAWS = (EW_OVERDAMPED, EW_SGD, EW_BAOAB_FIRST, EW_HEUN_PREDICT, EW_HEUN_CORRECT, EW_LM,
            EW_OBABO_FIRST, EW_OBABO_LAST)
# (the rules that draw the step's normals: Heun's two stages the same ones)
EW_NEXT = (EW_LM,)   # the rules that draw the next step's normals of their entries too
# (ins, outs, scalars): the arrays and scalars each rule is launched with (`DeviceRun.
# elementwise`; EW_COMMIT with one to three (old, new) pairs: its largest)
EW_ARITY = {EW_OVERDAMPED: (2, 1, 2), EW_SGD: (3, 2, 4), EW_ADAMW: (4, 3, 9),
            EW_BAOAB_FIRST: (3, 2, 4), EW_BAOAB_LAST: (3, 3, 1), EW_COMMIT: (3, 3, 0),
            EW_HEUN_PREDICT: (2, 1, 2), EW_HEUN_CORRECT: (3, 1, 2), EW_LM: (2, 1, 2),
            EW_OBABO_FIRST: (3, 2, 5), EW_OBABO_LAST: (3, 3, 3)}


@functools.lru_cache(maxsize=None)
def _entry(rule: int):
    """Device function entry(ins, outs, r, j, z, zn, p, zero, bound, candidate) -> ok: `rule`
    at entry (r, j) of a live replica (ins, outs: tuples of (M, d) arrays; z: the entry's
    normal, zero where the rule draws none; zn: its normal of the next step, for EW_NEXT; p:
    the rule's scalars), writing the new entries into outs;
    ok: they pass the divergence test (always True where the rule leaves it to a later
    kernel).  With `candidate` the step runs from the origin (constrained potentials)."""
    st = steps()
    ok_ = st.within_bound
    if rule in (EW_OVERDAMPED, EW_HEUN_PREDICT):   # ins (x, g), outs (x',), p (eta, sigma):
        upd, lane = st.overdamped_update, st.overdamped_lane   # overdamped_lane; Heun's
        tested = rule == EW_OVERDAMPED     # predictor is not tested (the reference tests x')

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            if candidate:
                v = upd(zero, ins[1][r, j], p[0], p[1], z)
            else:
                v = lane(ins[0][r, j], ins[1][r, j], z, p[0], p[1], zero)
            outs[0][r, j] = v
            return not tested or ok_(v, bound)
    elif rule == EW_HEUN_CORRECT:  # ins (x, g, g~ = grad U(predictor)), outs (x',), p (eta / 2,
        heun = st.heun_update      # sigma): x + heun_update(0, g, g~, eta / 2, sigma, z)

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            v = heun(zero, ins[1][r, j], ins[2][r, j], p[0], p[1], z)
            if not candidate:
                v = ins[0][r, j] + v
            outs[0][r, j] = v
            return ok_(v, bound)
    elif rule == EW_LM:            # ins (x, g), outs (x',), p (eta, sigma / 2):
        lm = st.lm_update          # x + lm_update(0, g, eta, sigma / 2, z, zn)

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            v = lm(zero, ins[1][r, j], p[0], p[1], z, zn)
            if not candidate:
                v = ins[0][r, j] + v
            outs[0][r, j] = v
            return ok_(v, bound)
    elif rule == EW_SGD:        # ins (x, v, g), outs (x', v'), p (lr, momentum, decay, sigma)
        sgd = st.sgd_update

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            x = zero if candidate else ins[0][r, j]    # (the decay of x = 0 is 0)
            xn, vn = sgd(x, ins[1][r, j], ins[2][r, j], p[0], p[1], p[2], p[3], z)
            outs[0][r, j] = xn
            outs[1][r, j] = vn
            return ok_(xn, bound) and ok_(vn, bound)
    elif rule == EW_ADAMW:      # ins (x, m, s, g), outs (x', m', s'),
        adamw = st.adamw_update  # p (lr, beta1, beta2, 1 - beta1, 1 - beta2, eps, decay, c1, c2)

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            x = zero if candidate else ins[0][r, j]    # (the decay of x = 0 is 0)
            xn, mn, sn = adamw(x, ins[1][r, j], ins[2][r, j], ins[3][r, j], p[0], p[1], p[2],
                               p[3], p[4], p[5], p[6], p[7], p[8])
            outs[0][r, j] = xn
            outs[1][r, j] = mn
            outs[2][r, j] = sn
            return ok_(xn, bound) and ok_(mn, bound) and ok_(sn, bound)
    elif rule == EW_BAOAB_FIRST:   # ins (x, p, g), outs (x', p'), p (h, 1 / mass, c1, c2);
        first = st.baoab_first     # no test (the gradient at x' comes between)

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            xn, pn = first(ins[0][r, j], ins[1][r, j], ins[2][r, j], p[0], p[1], p[2], p[3], z)
            outs[0][r, j] = xn
            outs[1][r, j] = pn
            return True
    elif rule == EW_BAOAB_LAST:    # ins (x, p, g), outs (x', p', g' = grad U(x')), p (h,):
        last = st.baoab_last       # p' - h g' into p', the test of x', p', g'

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            pv = last(outs[1][r, j], outs[2][r, j], p[0])
            outs[1][r, j] = pv
            return ok_(pv, bound) and ok_(outs[0][r, j], bound) and ok_(outs[2][r, j], bound)
    elif rule == EW_OBABO_FIRST:   # ins (x, p, g), outs (x', p'), p (h, eta, 1 / mass, c1, c2);
        ofirst = st.obabo_first    # no test (the gradient at x' comes between)

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            xn, pn = ofirst(ins[0][r, j], ins[1][r, j], ins[2][r, j], p[0], p[1], p[2], p[3],
                            p[4], z)
            outs[0][r, j] = xn
            outs[1][r, j] = pn
            return True
    elif rule == EW_OBABO_LAST:    # ins (x, p, g), outs (x', p', g' = grad U(x')), p (h, c1,
        olast = st.obabo_last      # c2): obabo_last(p', g') into p', the test of x', p', g'

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            pv = olast(outs[1][r, j], outs[2][r, j], p[0], p[1], p[2], z)
            outs[1][r, j] = pv
            return ok_(pv, bound) and ok_(outs[0][r, j], bound) and ok_(outs[2][r, j], bound)
    elif rule == EW_COMMIT:        # ins: the old arrays, outs: the new ones, tested

        @cuda.jit(device=True)
        def entry(ins, outs, r, j, z, zn, p, zero, bound, candidate):
            ok = True
            for k in range(len(outs)):
                ok = ok and ok_(outs[k][r, j], bound)
            return ok
    else:
        raise ValueError(f"no generic rule {rule}")
    return entry


@functools.lru_cache(maxsize=None)
def elementwise(rule: int, f32: bool):
    """The generic path's step kernel of `rule` (EW_*), launched on M chunks_of(d) threads::

        kernel(ins, outs, dstep, bad, t, k0, k1, rep0, p, zero, noisy, bound, candidate)

    ins, outs: tuples of (M, d) arrays of the state's dtype (the old state, the gradient;
    the new state: see `_entry`); p: the rule's scalars in the state's dtype, zero = 0 in it;
    a live replica's entries get the rule (the normals of step t at stream positions t d + j
    drawn first where the rule draws and `noisy`; for EW_NEXT those of step t + 1 too, the
    one or two Philox blocks d positions on), a failing entry flags the replica in
    `bad`; a frozen replica's entries are carried, outs[k] = ins[k] (not with `candidate`:
    `commit` follows, which carries); `freeze` follows."""
    draws, nxt = rule in EW_DRAWS, rule in EW_NEXT
    bn = _normals_fn(f32)
    entry = _entry(rule)
    pick = helpers()[0]
    at, slot = chunk_of()
    two, three = np.uint64(2), np.uint64(3)

    @cuda.jit
    def kernel(ins, outs, dstep, bad, t, k0, k1, rep0, p, zero, noisy, bound, candidate):
        d = ins[0].shape[1]
        live, r, b, lo, hi = at(cuda.grid(1), ins[0], t * d if draws else 0)
        if not live:
            return
        alive = dstep[r] < 0
        z0 = z1 = z2 = z3 = zero
        y0 = y1 = y2 = y3 = y4 = y5 = y6 = y7 = zero
        ud = np.uint64(d)
        e = (slot(b, 0) + ud) >> two     # the block of word 0's position d on (the next step)
        if draws and alive and noisy:
            z0, z1, z2, z3 = bn(k0, k1, NOISE, rep0 + r, b)
            if nxt:
                y0, y1, y2, y3 = bn(k0, k1, NOISE, rep0 + r, e)
                if ud & three:             # the four positions d on straddle two blocks
                    y4, y5, y6, y7 = bn(k0, k1, NOISE, rep0 + r, e + np.uint64(1))
        ok = True
        for w in range(4):
            pos = slot(b, w)
            if pos >= lo and pos < hi:
                j = pos - lo
                if alive:
                    zn = zero
                    if nxt:
                        q = np.int32(pos + ud - (e << two))   # word q of blocks e, e + 1
                        zn = pick(q, y0, y1, y2, y3) if q < 4 else pick(q - 4, y4, y5, y6, y7)
                    ok = entry(ins, outs, r, j, pick(w, z0, z1, z2, z3), zn, p, zero, bound,
                               candidate) and ok
                elif not candidate:
                    for k in range(len(outs)):
                        outs[k][r, j] = ins[k][r, j]
        if not (ok or candidate):
            bad[r] = 1
    return kernel


def elementwise_signature(rule: int, f32: bool) -> tuple:
    """The numba types `DeviceRun.elementwise` launches `elementwise(rule, f32)` with (EW_ARITY's
    arrays and scalars) -- for compiling it ahead of a launch (`numba.cuda.compile_ptx`)."""
    from numba import boolean, float32, float64, int32, int64, types, uint64
    ft = float32 if f32 else float64
    n_in, n_out, n_p = EW_ARITY[rule]
    return (types.UniTuple(ft[:, ::1], n_in), types.UniTuple(ft[:, ::1], n_out), int64[::1],
            int32[::1], int64, uint64, uint64, uint64,
            types.UniTuple(ft, n_p) if n_p else types.Tuple(()), ft, boolean, float64, boolean)


@functools.lru_cache(maxsize=None)
def freeze():
    """After an elementwise step (one thread per replica): a replica flagged in `bad` freezes
    at step t (dstep = t + 1) with its old rows olds[k] put back into the new arrays news[k]
    (tuples of (M, d) arrays); the flag is cleared."""
    copy_row = helpers()[1]

    @cuda.jit
    def kernel(dstep, bad, t, olds, news):
        r = cuda.grid(1)
        if r >= dstep.shape[0] or bad[r] == 0:
            return
        bad[r] = 0
        dstep[r] = t + 1
        for k in range(len(news)):
            copy_row(olds[k], news[k], r)
    return kernel


# ---------------------------------------------------------------- fused steps after a GEMM

GEMM_COLUMNS = 16   # replica columns of the transposed state padded to a multiple of this (as
# the CPU p-spin kernel pads its GEMM): a column's GEMM bits then do not depend on where it
# sits or on the replica count's remainder, so runs split by first_replica agree bit for bit


# the step kernels after a GEMM (`gemm_step`'s `rule`): overdamped Langevin, Leimkuhler-Matthews,
# Heun's predictor and Heun's corrector, SGD, AdamW, MALA's Metropolis test
GEMM_OVERDAMPED, GEMM_LM, GEMM_PREDICT, GEMM_CORRECT, GEMM_SGD, GEMM_ADAMW, GEMM_MALA = range(7)


GEMM_LANES = 16     # threads per replica in `gemm_step`'s GEMM_LANE_RULES launches
# (`cuda_backend.gemm_block`): 1, one thread per replica; more split a replica's N coordinates
# into contiguous slices, one per thread (design_changes 65). 16 since run 2 on the H200
# (gpu_throughput's A/B: 1.35x over 1 in the geometric mean of W2 and W3, 16 best on every row)
GEMM_LANE_RULES = (GEMM_OVERDAMPED, GEMM_LM)
GEMM_STREAM = True  # `gemm_steps` gives the sliced kernel the family's stages: each
# coordinate streamed from its Philox block into the gradient's column, no per-thread arrays
# (ptxas gave W2 float64 a 304-byte stack at L = 16, local memory the SM's L1 cannot hold
# at 1024 threads: 40 bytes streamed); False: the slice's normals and new values in
# per-thread arrays, the row rule whole (design_changes 103; gpu_throughput measures both)
GEMM_MAX_REGISTERS = 64   # registers per thread of the sliced kernel (0: the compiler's
# choice): 32 warps per SM whatever L; ptxas gave W3's 71 / 80 (float32 / float64, L = 8),
# 3 blocks per SM, so 2^14 replicas took two waves; capped, p-spin N = 32..256 and
# L = 4..16 and W2 spill at most 4 bytes (design_changes 77). Read when a kernel compiles.


@functools.lru_cache(maxsize=None)
def lane_ops(f32: bool, block: tuple):
    """(total, every): device functions across the L threads of one replica in `gemm_step`'s
    block (R, L) (thread (x, y): replica x of the block's R, slice y): total(v), v summed in
    the state's dtype over the replica's threads in slice order (`kernels.pspin.lane_sum` on
    this target); every(ok), whether ok holds on all of them.  Every thread of the block
    must call them (they wait for each other).  They exchange values through the launch's
    dynamic shared memory (`cuda_runtime.launch` gives L R float64 to a sliced block): a
    static shared array in a device function that several compiled functions call is defined
    once per caller and fails to link ("symbol multiply defined"), a dynamic one is only
    declared."""
    from numba import float32, float64

    R, L = block
    ftype = np.float32 if f32 else np.float64
    stype = float32 if f32 else float64     # (the simulator's dynamic array needs a numba type)

    @cuda.jit(device=True)
    def total(v):
        sh = cuda.shared.array(0, stype)
        x, y = cuda.threadIdx.x, cuda.threadIdx.y
        sh[y * R + x] = v
        cuda.syncthreads()
        acc = sh[x]
        for j in range(1, L):
            acc += sh[j * R + x]
        cuda.syncthreads()
        return acc

    @cuda.jit(device=True)
    def every(ok):
        return total(ftype(1.0 if ok else 0.0)) == L
    return total, every


@functools.lru_cache(maxsize=None)
def gemm_step(row, refresh, f32: bool, N: int, rule: int = GEMM_OVERDAMPED,
              block: tuple = (0, 1), stages: tuple | None = None):
    """One fused overdamped step of the dense families on "cuda", after the step's GEMM
    produced every replica's gradient: one thread per replica r on the transposed state
    XT (N, MP) and gradient GT (N, MP) (replica r in column r: coalesced across a warp;
    columns >= M are padding and never stepped).  For a live replica at step t = tv[0] + k
    (tv: the device step counter of `DeviceRun.queue_steps`, so a CUDA graph of the launch
    replays at later steps): step size
    and temperature from the schedule codes es, ts (`schedule_value`, float64, cast to the
    state's dtype as the reference casts its Python scalars), the N normals of step t at
    n = t N + i (purpose NOISE) into a per-thread array, then the family's row rule
    ``row(x, g, z, eta, sigma, zero, bound, new, a0)`` on the columns x = XT[:, r],
    g = GT[:, r] (a device function returning whether every new value passes the
    divergence test).  A good step is committed to XT and ``refresh(XT, r, 0, 1, a0, a1, a2,
    a3)`` prepares the next GEMM's operand from it; a bad one freezes the replica
    (dstep = t + 1).  a0..a3 are the family's arrays; compiled per (row, refresh, dtype, N,
    rule, block).  The divergence test of state values takes `state_bound`(bound).

    block = (R, L) with L > 1 (`cuda_backend.gemm_block`; rules GEMM_LANE_RULES): L threads
    per replica in blocks of R replicas x L, thread (x, y) holding slice y, coordinates
    [y C, min((y + 1) C, N)) with C = ceil(N / L), of replica r = R blockIdx.x + x (a warp:
    one slice of consecutive replicas, coalesced).  Each thread draws its slice's normals
    (the same stream positions), runs the row on its slices of XT, GT and a0, the row's
    sums completed across the slices by `lane_ops`' total (`kernels.pspin.lane_sum`); the
    replica steps if every slice passed (`lane_ops`' every), and ``refresh(XT, r, y, L, ...)``
    then prepares the y-th share of the next GEMM's operand, after every slice is written.

    stages = (lane, finish), the row rule in two parts for the sliced kernel:
    ``lane(x, g, z, eta, sigma, zero, a0, i)``, the new value of coordinate i from its own
    x, g and normal z, and ``finish(x, new, zero, bound, a0) -> ok`` on the slices of x and
    of the lanes' values (the sphere's move; None: every lane value is tested as it is
    written).  The row rule is the lanes' loop followed by finish (`kernels.quadratic`,
    `kernels.pspin`), so both kernels compute the same numbers.  The streamed kernel draws
    each coordinate's normal (LM: the sum of two) from a cached Philox block, writes the
    lane's value over the gradient in GT (read just before) and runs finish on GT's slice:
    no per-thread arrays (a thread past the last replica, or of a frozen one, finishes a
    local spare instead).  The new state stays in GT, refreshed from there: XT and GT
    trade places every step (`cuda_backend.gemm_steps`), and a replica that did not step
    (frozen, or a slice failed now) has its slice of XT copied into GT.

    X2, G2 (N, MP): Heun's predictor and its gradient (unused by the other rules).
    Rules: GEMM_OVERDAMPED; GEMM_LM, Leimkuhler-Matthews: the noise is the sum of the normals
    of steps t and t + 1 (at t N + i and (t + 1) N + i) with sigma / 2, which is
    `lm_update(0, g, eta, sigma / 2, xi_t, xi_t+1)` in the row's `overdamped_update`;
    GEMM_PREDICT, Heun's predictor: the overdamped row step into X2 (not tested, not
    committed: the reference tests only the corrector's result), refreshing the next GEMM's
    operand from X2; GEMM_CORRECT, Heun's corrector: the row step from XT with eta / 2 and
    the gradient GT + G2 (`heun_update(0, g, g~, eta / 2, sigma, xi)`, the same normals),
    the row taking a1 where the other rules pass a0 (a family whose gradient is GEMM - off
    passes off as a0 and 2 off as a1: two gradients summed carry the offset twice);
    GEMM_SGD: the family's SGD row ``row(x, g, v, z, lr, momentum, wd, sigma, zero, bound,
    new, vnew, a0)`` with the velocity v = X2[:, r] (committed with x), the momentum q0, the
    gradient noise q1 (q1 times the GRAD_NOISE normals at t N + i added to the gradient) and
    the weight decay q3; GEMM_ADAMW: the family's AdamW row ``row(x, g, m, s, lr, beta1,
    beta2, 1 - beta1, 1 - beta2, eps, wd, c1, c2, zero, bound, new, mnew, snew, a0)`` with the
    moments m = X2[:, r], s = G2[:, r] (committed with x), beta1, beta2, eps, wd = q0, q1, q2,
    q3 and the bias corrections c1 = 1 - beta1^(t+1), c2 = 1 - beta2^(t+1) (float64, then the
    state's dtype); no noise.  (A constrained family's rows take wd and ignore it: the
    dynamics refuse weight decay there.)  GEMM_MALA, MALA's test of the proposal y = X2[:, r]
    (made by a GEMM_PREDICT launch from x and its gradient) after the GEMM at y, for a
    quadratic form (gradient GEMM - a0, energy U(y) = y.(G2 / 2 - a0) + q0 summed in
    float64): the forward and backward proposal residuals (`proposal_residual2`, summed in
    float64), U(x) = u[r], the ACCEPT word at n = t (`mala_log_alpha`, `accept_uniform`,
    `mala_accept`); the new state (y, its raw gradient G2, U(y), or the old one; not the count
    nacc) is tested, as the reference tests it, then committed (XT, GT, u, nacc) or the
    replica frozen.  u and nacc (M,) float64 are MALA's U and acceptance count (unused by
    the other rules); GT then holds the raw gradient GEMM(x) across steps."""
    bn = _normals_fn(f32)
    st = steps()
    sched, noise_scale = st.schedule_value, st.noise_scale
    residual2, log_alpha, uniform, accept, within = (st.proposal_residual2, st.mala_log_alpha,
                                                     st.accept_uniform, st.mala_accept,
                                                     st.within_bound)
    word = cached_draws(f32)[1]
    pick = helpers()[0]
    span, slot, one = stream_window()
    bound_of = state_bound(f32)
    ftype = np.float32 if f32 else np.float64

    @cuda.jit(device=True)
    def cast(v):
        return ftype(v)

    lm = rule == GEMM_LM

    @cuda.jit(device=True)
    def store(XT, r, i0, n, new):
        """XT[i0 + j, r] = new[j] for j < n: unsigned indices in a `while` loop (numba's
        `range` and signed indices cost ~27 SASS instructions a store; see `toynets`)."""
        ur, u0, un, j, one = np.uint64(r), np.uint64(i0), np.uint64(n), np.uint64(0), \
            np.uint64(1)
        while j < un:
            XT[u0 + j, ur] = new[j]
            j += one

    @cuda.jit(device=True)
    def normals_into(z, k0, k1, purpose, rep, n0, n, scale, add):
        """z[j] = scale xi_j, or z[j] + scale xi_j with `add`, for the normals xi_j of
        `purpose` at stream positions n0 + j, j < n (each Philox block once; unsigned
        positions in a `while` loop, see `store`)."""
        b, end, lo, hi = span(n0, n)
        while b < end:
            z0, z1, z2, z3 = bn(k0, k1, purpose, rep, b)
            for w in range(4):
                pos = slot(b, w)
                if pos >= lo and pos < hi:
                    j = pos - lo
                    v = scale * pick(w, z0, z1, z2, z3)
                    z[j] = z[j] + v if add else v
            b += one

    R, L = block
    if L > 1:
        if rule not in GEMM_LANE_RULES:
            raise ValueError(f"gemm_step: rule {rule} runs one thread per replica")
        C = -(-N // L)
        every = lane_ops(f32, block)[1]

        cap = GEMM_MAX_REGISTERS if not rt.simulated() else 0
        options = {"max_registers": cap} if cap else {}

        @cuda.jit(device=True)
        def place(dstep, tv, k, es, ts):
            """(y, rr, real, live, t, i0, i1, eta, T): this thread's slice y, coordinates
            i0 .. i1, of replica rr (a column that exists: every thread must reach the
            barriers, even past M or frozen; real: rr is its own replica, live: it steps), the
            step t, its step size and temperature."""
            M = dstep.shape[0]
            y = cuda.threadIdx.y
            r = cuda.blockIdx.x * R + cuda.threadIdx.x
            rr = r if r < M else M - 1
            t = tv[0] + k
            i0 = y * C if y * C < N else N
            return (y, rr, r < M, r < M and dstep[rr] < 0, t, i0,
                    i0 + C if i0 + C < N else N, sched(int(es[0]), es[1], es[2], es[3], t),
                    sched(int(ts[0]), ts[1], ts[2], ts[3], t))

        @cuda.jit(device=True)
        def settle(XT, dstep, new, write, y, rr, live, ok, t, i0, i1, a0, a1, a2, a3):
            """Write the slice `new` into XT's column rr where `write`, then (every slice
            written) the family's refresh of a replica that stepped (ok: every slice passed),
            or freeze it."""
            if write:
                store(XT, rr, i0, i1 - i0, new)
            cuda.syncthreads()
            if live:
                if ok:
                    refresh(XT, rr, y, L, a0, a1, a2, a3)
                elif y == 0:
                    dstep[rr] = t + 1

        if stages is not None:
            return streamed_kernel(stages, place, settle, every, cast, f32, N, C, lm, options)

        @cuda.jit(**options)
        def sliced(XT, GT, X2, G2, dstep, tv, k, k0, k1, rep0, es, ts, bound, q0, q1, q2, q3,
                   u, nacc, a0, a1, a2, a3):
            y, rr, real, live, t, i0, i1, e, T = place(dstep, tv, k, es, ts)
            z = cuda.local.array(C, ftype)
            new = cuda.local.array(C, ftype)
            rep = rep0 + np.uint64(rr)
            for s in range(2 if lm else 1):
                normals_into(z, k0, k1, NOISE, rep, (np.int64(t) + s) * N + i0, i1 - i0,
                             cast(1.0), s > 0)
            sigma = noise_scale(e, T)
            ok = every(row(XT[i0:i1, rr], GT[i0:i1, rr], z, cast(e),
                           cast(0.5 * sigma if lm else sigma), cast(0.0), bound_of(bound), new,
                           a0[i0:i1]))
            settle(XT, dstep, new, live and ok, y, rr, live, ok, t, i0, i1, a0, a1, a2, a3)
        return sliced

    @cuda.jit
    def kernel(XT, GT, X2, G2, dstep, tv, k, k0, k1, rep0, es, ts, bound, q0, q1, q2, q3, u,
               nacc, a0, a1, a2, a3):
        r = cuda.grid(1)
        if r >= dstep.shape[0]:
            return
        if dstep[r] >= 0:
            return
        t = tv[0] + k
        z = cuda.local.array(N, ftype)
        new = cuda.local.array(N, ftype)
        bs = bound_of(bound)       # for values of the state's dtype (MALA's U, counts: bound)
        e = sched(int(es[0]), es[1], es[2], es[3], t)
        T = sched(int(ts[0]), ts[1], ts[2], ts[3], t)
        rep = rep0 + np.uint64(r)
        for s in range(0 if rule in (GEMM_ADAMW, GEMM_MALA) else 2 if lm else 1):
            normals_into(z, k0, k1, NOISE, rep, (np.int64(t) + s) * N, N, cast(1.0), s > 0)
        sigma = noise_scale(e, T)
        if rule == GEMM_PREDICT:
            row(XT[:, r], GT[:, r], z, cast(e), cast(sigma), cast(0.0), bs, new, a0)
            store(X2, r, 0, N, new)
            refresh(X2, r, 0, 1, a0, a1, a2, a3)
            return
        if rule == GEMM_MALA:
            ew, fwd, bwd, uy = cast(e), 0.0, 0.0, q0
            for i in range(N):
                y = X2[i, r]
                fwd += residual2(y, XT[i, r], GT[i, r] - a0[i], ew)
                bwd += residual2(XT[i, r], y, G2[i, r] - a0[i], ew)
                uy += np.float64(y) * (0.5 * np.float64(G2[i, r]) - np.float64(a0[i]))
            wd = word(k0, k1, ACCEPT, rep, np.int64(t), np.int64(-1), np.uint64(0),
                      np.uint64(0), np.uint64(0), np.uint64(0))[0]
            take = accept(uniform(wd), log_alpha(uy, u[r], bwd, fwd, e, T))
            if not take:
                uy = u[r]
            good = within(uy, bound)       # (not the count nacc)
            for i in range(N):
                if take:
                    good = good and within(X2[i, r], bs) and within(G2[i, r] - a0[i], bs)
                else:
                    good = good and within(XT[i, r], bs) and within(GT[i, r] - a0[i], bs)
            if not good:
                dstep[r] = t + 1
            elif take:
                for i in range(N):
                    XT[i, r] = X2[i, r]
                    GT[i, r] = G2[i, r]
                u[r] = uy
                nacc[r] += 1.0
            return
        if rule == GEMM_SGD:
            vn = cuda.local.array(N, ftype)
            gq = cuda.local.array(N, ftype)     # the gradient, plus q1 GRAD_NOISE normals
            for i in range(N):
                gq[i] = GT[i, r]
            if q1 > 0:
                normals_into(gq, k0, k1, GRAD_NOISE, rep, np.int64(t) * N, N, cast(q1), True)
            ok = row(XT[:, r], gq, X2[:, r], z, cast(e), cast(q0), cast(q3), cast(sigma),
                     cast(0.0), bs, new, vn, a0)
            if ok:
                store(X2, r, 0, N, vn)
        elif rule == GEMM_ADAMW:
            mn = cuda.local.array(N, ftype)
            sn = cuda.local.array(N, ftype)
            ok = row(XT[:, r], GT[:, r], X2[:, r], G2[:, r], cast(e), cast(q0), cast(q1),
                     cast(1.0 - q0), cast(1.0 - q1), cast(q2), cast(q3),
                     cast(1.0 - math.pow(q0, t + 1)),
                     cast(1.0 - math.pow(q1, t + 1)), cast(0.0), bs, new, mn, sn, a0)
            if ok:
                store(X2, r, 0, N, mn)
                store(G2, r, 0, N, sn)
        elif rule == GEMM_CORRECT:
            g = cuda.local.array(N, ftype)
            for i in range(N):
                g[i] = GT[i, r] + G2[i, r]
            ok = row(XT[:, r], g, z, cast(0.5 * e), cast(sigma), cast(0.0), bs, new, a1)
        else:
            ok = row(XT[:, r], GT[:, r], z, cast(e), cast(0.5 * sigma if lm else sigma),
                     cast(0.0), bs, new, a0)
        if ok:
            store(XT, r, 0, N, new)
            refresh(XT, r, 0, 1, a0, a1, a2, a3)
        else:
            dstep[r] = t + 1
    return kernel


def streamed_kernel(stages: tuple, place, settle, every, cast, f32: bool, N: int, C: int,
                    lm: bool, options: dict):
    """`gemm_step`'s sliced kernel for a family's `stages` (GEMM_OVERDAMPED, or GEMM_LM with
    `lm`; slices of C coordinates): the launch arguments and numbers of the kernel with
    per-thread arrays, from `gemm_step`'s device functions place, settle, every, cast, but
    the new state left in GT (the state and gradient buffers alternate by step)."""
    lane, finish = stages
    test_lanes = finish is None
    if test_lanes:
        @cuda.jit(device=True)
        def finish(x, new, zero, bound, a0):
            return True
    st = steps()
    noise_scale, within = st.noise_scale, st.within_bound
    draw = cached_draws(f32)[0]
    bound_of = state_bound(f32)
    ftype = np.float32 if f32 else np.float64
    one = np.uint64(1)

    @cuda.jit(device=True)
    def lanes(XT, GT, c, i0, i1, n0, k0, k1, rep, eta, sigma, zero, bound, a0):
        """GT[i, c] <- lane(XT[i, c], GT[i, c], z_i, ...) for i0 <= i < i1, z_i the normal at
        stream position n0 + i - i0 (with lm, plus the one N later); returns whether every
        value is within bound (unsigned indices in a `while` loop: see `gemm_step`'s store)."""
        blk = blk2 = np.int64(-1)
        z0 = z1 = z2 = z3 = w0 = w1 = w2 = w3 = zero
        uc, i, end = np.uint64(c), np.uint64(i0), np.uint64(i1)
        n = np.int64(n0)
        good = True
        while i < end:
            z, blk, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, n, blk, z0, z1, z2, z3)
            if lm:
                w, blk2, w0, w1, w2, w3 = draw(k0, k1, NOISE, rep, n + N, blk2, w0, w1, w2, w3)
                z = z + w
            v = lane(XT[i, uc], GT[i, uc], z, eta, sigma, zero, a0, i)
            GT[i, uc] = v
            if test_lanes:
                good = good & within(v, bound)
            n += 1
            i += one
        return good

    @cuda.jit(**options)
    def streamed(XT, GT, X2, G2, dstep, tv, k, k0, k1, rep0, es, ts, bound, q0, q1, q2, q3, u,
                 nacc, a0, a1, a2, a3):
        y, rr, real, live, t, i0, i1, e, T = place(dstep, tv, k, es, ts)
        sigma = noise_scale(e, T)
        zero, bs = cast(0.0), bound_of(bound)
        spare = cuda.local.array((C, 1), ftype)
        good = True
        if live:
            good = lanes(XT, GT, rr, i0, i1, np.int64(t) * N + i0, k0, k1,
                         rep0 + np.uint64(rr), cast(e), cast(0.5 * sigma if lm else sigma),
                         zero, bs, a0)
            new = GT[i0:i1, rr]
        else:
            for j in range(i1 - i0):
                spare[j, 0] = zero
            new = spare[:i1 - i0, 0]
        ok = every(finish(XT[i0:i1, rr], new, zero, bs, a0[i0:i1]) & good)
        settle(GT, dstep, XT[i0:i1, rr], real and not (live and ok), y, rr, live, ok, t, i0,
               i1, a0, a1, a2, a3)
    return streamed


def gemm_signature(f32: bool, aux: tuple) -> tuple:
    """The numba types of `gemm_step`'s arguments as `cuda_backend.gemm_steps` passes them:
    XT, GT, X2, G2 (N, MP) in the state's dtype, dstep and the step counter tv, k, the Philox
    keys, the schedules' codes, the bound, q0..q3, MALA's u and nacc (float64), then the
    family's arrays a0..a3 typed `aux` -- for compiling it ahead of a launch
    (`numba.cuda.compile_ptx`)."""
    from numba import float32, float64, int64, uint64
    W, I1, F1 = (float32 if f32 else float64)[:, ::1], int64[::1], float64[::1]
    return (W, W, W, W, I1, I1, int64, uint64, uint64, uint64, F1, F1) + (float64,) * 5 + \
        (F1, F1) + tuple(aux)


@functools.lru_cache(maxsize=None)
def step_counter():
    """tv[0] += n (one thread): the device step counter of `gemm_step`'s launches moves on by
    the n steps queued before it (`DeviceRun.queue_steps`)."""
    @cuda.jit
    def kernel(tv, n):
        if cuda.grid(1) == 0:
            tv[0] += n
    return kernel


# ---------------------------------------------------------------- observers

@functools.lru_cache(maxsize=None)
def rounded():
    """(mul, add) of two float64 values, each rounded to nearest and never contracted into an
    FMA: on a GPU libdevice's dmul_rn / dadd_rn (PTX mul.rn / add.rn; ptxas fuses a plain
    mul.f64 feeding an add.f64, which numba-cuda emits by default), in the simulator * and +.
    For results that must equal the reference's bit for bit."""
    if rt.simulated():
        @cuda.jit(device=True)
        def mul(a, b):
            return a * b

        @cuda.jit(device=True)
        def add(a, b):
            return a + b
        return mul, add
    from numba.cuda import libdevice
    return libdevice.dmul_rn, libdevice.dadd_rn


@functools.lru_cache(maxsize=None)
def observer(regions: int = 0):
    """`FirstPassage.update` of one replica as a device function ``observe(xs, r, kinds, vecs,
    thr, first_entry, first_exit, last_crossing, crossings, inside, step)`` for `regions`
    regions compiled in (0: kinds.shape[0] of them; the row kernels compile the count in,
    which unrolls the loop: W1 with one region 80 -> 60 registers in float32): membership of
    the positions xs (d,) in float64 summed over coordinates 0, 1, .. (the reference's
    order, so the flags agree bit for bit), then row r of the five (M, R) int64 arrays at
    step count `step` (the generic path's kernel below, and the row kernels).  Products and
    sums are `rounded`'s: never fused into an FMA, which would round once where the reference
    rounds twice and could flip a flag at a region's boundary."""
    HALF = fpass.HALF_SPACE
    mul, add = rounded()
    R = int(regions)

    @cuda.jit(device=True)
    def observe(xs, r, kinds, vecs, thr, first_entry, first_exit, last_crossing, crossings,
                inside, step):
        for k in range(R if R else kinds.shape[0]):
            s = 0.0
            for i in range(xs.shape[0]):
                xi = np.float64(xs[i])
                if kinds[k] == HALF:
                    s = add(s, mul(vecs[k, i], xi))
                else:
                    y = xi - vecs[k, i]
                    s = add(s, mul(y, y))
            now = s > thr[k] if kinds[k] == HALF else s < thr[k]
            if now != (inside[r, k] != 0):      # a crossing: the only step at which the
                crossings[r, k] += 1            # arrays change (first_entry < 0 means never
                last_crossing[r, k] = step      # inside, so inside = 0 then; first_exit < 0
                inside[r, k] = 1 if now else 0  # never outside: `FirstPassage.init_state`),
                if now and first_entry[r, k] < 0:   # so a step without one reads inside
                    first_entry[r, k] = step        # alone and writes nothing
                if (not now) and first_exit[r, k] < 0:
                    first_exit[r, k] = step
    return observe


@functools.lru_cache(maxsize=None)
def first_passage_columns():
    """`observer` for the replicas r < M of a transposed state XT (N, MP) (the dense paths'
    layout, replica r in column r) at step count tv[0] + k + 1 (the device step counter of
    `DeviceRun.queue_steps`: a CUDA graph of the launch replays at later steps).  Every
    replica, frozen ones too, as the reference updates them (unchanged membership changes
    nothing)."""
    observe = observer()

    @cuda.jit
    def kernel(XT, M, first_entry, first_exit, last_crossing, crossings, inside, kinds, vecs,
               thr, tv, k):
        r = cuda.grid(1)
        if r >= M:
            return
        observe(XT[:, r], r, kinds, vecs, thr, first_entry, first_exit, last_crossing,
                crossings, inside, tv[0] + k + 1)
    return kernel


@functools.lru_cache(maxsize=None)
def first_passage():
    """`observer` for every replica, one per thread, on the state x (M, d)."""
    observe = observer()

    @cuda.jit
    def kernel(x, first_entry, first_exit, last_crossing, crossings, inside, kinds, vecs, thr,
               step):
        r = cuda.grid(1)
        if r >= x.shape[0]:
            return
        observe(x[r], r, kinds, vecs, thr, first_entry, first_exit, last_crossing, crossings,
                inside, step)
    return kernel
