"""SphericalPSpin: its CPU kernel for overdamped Langevin on the sphere.

One call runs K steps. Replicas are split into blocks, run in parallel by a thread pool calling
the serial, GIL-free `pspin_block_steps` (a prange wrapper would add ~5-15 s of compilation per
dtype for nothing: each block is one product call per step); few replicas of many spins (W3b)
instead split each step's product by rows of CT across the threads (`rows_split`). The gradient
uses the symmetry of J: the (p-1)! / prod(count!) orderings of a multiset i1 <= .. <= i_{p-1}
give equal terms of g_m = sum (-p J)_{i1..i_{p-1} m} x_i1 .. x_i{p-1}, so per step and block it
is one product Y (B, P) @ CT.T with P = C(N+p-2, p-1) packed products per replica (one per
multiset, `packed_rows`) and CT (N, P) the multiplicity-weighted rows of -p J_eff
(`packed_gradient`): N(N+1)/2 instead of N**2 for p = 3 (half the flops and coupling traffic),
~N**3/6 instead of N**3 for p = 4, the same for p = 2. The product is the kernels' own tiled
GEMM (`gemm.dot_rows`: 1.4-1.7x OpenBLAS's AVX2 kernels on an AVX-512 core; BLAS where the CPU
lacks AVX-512). Replicas are its rows, padded to a multiple of `REPLICA_PAD` so that the bits
do not depend on the split. Then per replica `sphere_row_step`, the reference's step x <-
retract(x + P(0 - eta grad H + sqrt(2 eta T) xi)) row by row in x's dtype (the shared rules of
`common.STEPS` inside; `pspin.sphere_project`, `pspin.sphere_retract` in the reference), with
noise xi from the in-kernel Philox at the reference's stream positions n = step * N + lane,
purpose NOISE. BLAS (if used) runs single-threaded in the blocks. `sphere_row_step` is the
family's step function (`STEPS`): the CPU kernel and the fused numba-cuda kernel (the section
"CUDA kernels" at the end) compile it from this one source. On "cuda" the same GEMM + step
kernel runs Leimkuhler-Matthews (`cuda_kernels.gemm_step`'s GEMM_LM: the noise the sum of the
normals of steps t and t + 1, with sigma / 2), Heun (two GEMMs and two launches per step:
the predictor, then the corrector with eta / 2 and the two gradients summed) and full-batch
SGD and AdamW (GEMM_SGD, GEMM_ADAMW with the step functions `sphere_sgd_step`,
`sphere_adamw_step`, the velocity or the moments beside x).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math
import queue
import sys
import weakref

import numba
import numpy as np

from .. import rng
from ..backends.jit import ijit, jit, one_blas_thread
from ..backends.numpy_backend import within_bound
from ..backends.registry import register
from ..dynamics import SGD, AdamW, Heun, LeimkuhlerMatthews, OverdampedLangevin
from ..dynamics.adamw import adamw_update
from ..dynamics.langevin import overdamped_update
from ..potentials.pspin import SphericalPSpin
from ..rng import sqrt
from . import gemm
from .common import chunk_buffer, compile_steps, like, noise_chunk, sched, schedule_code
from .gemm import dot_rows


# ---------------------------------------------------------------- step functions, every target

# The row loops are `while` loops over unsigned indices: as `range` loops with signed
# indices (numba's negative-index fix-ups) over the strided columns XT[:, r] they cost
# ~23-28 SASS instructions a coordinate on "cuda", ~6 this way (design_changes 78); the CPU
# compilation runs as fast either way.

def lane_sum(v):
    """v summed over the threads that share one replica's row, each holding a slice of it:
    the identity where one thread holds the whole row (the CPU, one thread per replica on
    "cuda"); `cuda_kernels.lane_ops`' shared-memory sum in slice order where the fused
    dense kernel gives a replica several threads (`cuda_backend.gemm_block`)."""
    return v


def tangent_dot(a, x, zero):
    """a.x of two rows (or strided columns) (N,), summed in order from `zero` (each thread's
    slice in order, then over the threads: `lane_sum`)."""
    dot = zero
    i, end, one = np.uint64(0), np.uint64(x.shape[0]), np.uint64(1)
    while i < end:
        dot += a[i] * x[i]
        i += one
    return lane_sum(dot)


def sphere_project_into(a, x, zero, n, bound):
    """a (N,) <- a - (a.x / n) x in place (`pspin.sphere_project` at x, the sum in order);
    returns whether every new value is finite and within bound."""
    c = tangent_dot(a, x, zero) / n
    good = True
    i, end, one = np.uint64(0), np.uint64(x.shape[0]), np.uint64(1)
    while i < end:
        w = a[i] - c * x[i]
        a[i] = w
        good = good & within_bound(w, bound)
        i += one
    return good


def sphere_move(x, new, zero, n, bound):
    """The sphere's tangent step of one replica: new (N,) holds a step d on entry and the
    reference's retract(x + project(x, d)) on exit (`pspin.sphere_project`,
    `pspin.sphere_retract`; the row sums in order); x (N,) a row or strided column (or this
    thread's slice of one, the sums completed by `lane_sum`), zero = 0 and n = N in x's
    dtype.  Returns whether every new value is finite and within bound."""
    end, one = np.uint64(x.shape[0]), np.uint64(1)
    c = tangent_dot(new, x, zero) / n
    norm = zero
    i = np.uint64(0)
    while i < end:
        y = x[i] + (new[i] - c * x[i])
        new[i] = y
        norm += y * y
        i += one
    scale = sqrt(lane_sum(norm) / n)
    good = True
    i = np.uint64(0)
    while i < end:
        v = new[i] / scale
        new[i] = v
        good = good & within_bound(v, bound)
        i += one
    return good


def sphere_row_step(x, g, z, eta, sigma, zero, n, bound, new):
    """One projected overdamped step of one replica: x, g, z, new (N,) rows (or strided
    columns) of x's dtype; eta, sigma, zero = 0 and n = N in x's dtype.  Writes the
    reference's retract(x + project(x, 0 - eta g + sigma z)) into new (`sphere_move`) and
    returns whether every new value is finite and within bound."""
    i, end, one = np.uint64(0), np.uint64(x.shape[0]), np.uint64(1)
    while i < end:
        new[i] = overdamped_update(zero, g[i], eta, sigma, z[i])
        i += one
    return sphere_move(x, new, zero, n, bound)


def sphere_sgd_step(x, g, v, z, lr, momentum, sigma, zero, n, bound, new, vnew):
    """One SGD step on the sphere (`SGD.reference_step` on a constrained potential, no weight
    decay) of one replica: x, g, v, z, new, vnew (N,) rows or strided columns of x's dtype;
    lr, momentum, sigma, zero and n = N in x's dtype.  The velocity takes the tangent
    gradient, v' = momentum v + (g - (g.x / n) x); the position the tangent step from 0,
    0 - lr v' + sigma z, by `sphere_row_step` (projected, retracted); the velocity is then
    projected onto the tangent space at the new position.  Writes the new x and v into new
    and vnew; returns whether every new value is finite and within bound."""
    c = tangent_dot(g, x, zero) / n
    i, end, one = np.uint64(0), np.uint64(x.shape[0]), np.uint64(1)
    while i < end:
        vnew[i] = momentum * v[i] + (g[i] - c * x[i])
        i += one
    good = sphere_row_step(x, vnew, z, lr, sigma, zero, n, bound, new)
    return sphere_project_into(vnew, new, zero, n, bound) & good


def sphere_adamw_step(x, g, m, s, lr, beta1, beta2, a1, a2, eps, c1, c2, zero, n, bound, new,
                      mnew, snew):
    """One AdamW step on the sphere (`AdamW.reference_step` on a constrained potential, no
    weight decay) of one replica: x, g, m, s, new, mnew, snew (N,) of x's dtype, the scalars
    in x's dtype (a1, a2 = 1 - beta1, 1 - beta2; c1, c2 the step's bias corrections).  The
    moments take the tangent gradient g - (g.x / n) x (`adamw_update` from 0, no weight
    decay), the position its step by `sphere_move`, and m is then projected onto the tangent
    space at the new position (s is not).  Writes the new x, m, s into new, mnew, snew;
    returns whether every new value is finite and within bound."""
    c = tangent_dot(g, x, zero) / n
    good = True
    i, end, one = np.uint64(0), np.uint64(x.shape[0]), np.uint64(1)
    while i < end:
        d, mi, si = adamw_update(zero, m[i], s[i], g[i] - c * x[i], lr, beta1, beta2, a1, a2,
                                 eps, zero, c1, c2)
        new[i] = d
        mnew[i] = mi
        snew[i] = si
        good = good & within_bound(si, bound)
        i += one
    good = sphere_move(x, new, zero, n, bound) & good
    return sphere_project_into(mnew, new, zero, n, bound) & good


STEPS = ("lane_sum", "tangent_dot", "sphere_project_into", "sphere_move", "sphere_row_step",
         "sphere_sgd_step", "sphere_adamw_step")

# ---------------------------------------------------------------- CPU kernels (backend "numba")

cpu = compile_steps(sys.modules[__name__])

PSPIN_BLOCK = 64                # most replicas per GEMM block
PSPIN_BLOCK_ENTRIES = 1 << 21   # cap on B * C(N+p-2, p-1), the packed products of one block
ROW_CHUNK = 128                 # rows of CT per product call when a step's product is split
REPLICA_PAD = gemm.TILE if gemm.OWN_PRODUCT else 16  # replicas (rows of Y) padded to a multiple
# of this: the product then computes every replica with the same instructions wherever it
# sits, so its bits do not depend on the block split (first_replica, thread count); with BLAS
# (no AVX-512) 16 is OpenBLAS's widest unroll, other widths differ (~1e-16)
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # potential -> {dtype: tables}
_BUFFERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # sim -> (key, free buffers)


def multisets(N: int, k: int) -> np.ndarray:
    """The multisets of k indices < N as sorted rows (C(N+k-1, k), k) int64, in lexicographic
    order: for k >= 1 the last index runs fastest, from the one before it to N - 1."""
    return np.array(list(itertools.combinations_with_replacement(range(N), k)),
                    dtype=np.int64).reshape(-1, k)


@ijit
def padded(B: int) -> int:
    """B replicas padded to a multiple of REPLICA_PAD (Python and compiled callers)."""
    return -(-B // REPLICA_PAD) * REPLICA_PAD


def block_size(M: int, N: int, p: int) -> int:
    """Replicas per block: all threads busy, <= PSPIN_BLOCK, packed products <= 16 MiB (f64),
    a multiple of REPLICA_PAD (the padding is computed anyway)."""
    per_thread = -(-M // numba.get_num_threads())
    return padded(min(PSPIN_BLOCK, per_thread, PSPIN_BLOCK_ENTRIES // math.comb(N + p - 2, p - 1)))


def packed_gradient(pot: SphericalPSpin, dtype) -> tuple:
    """(CT, runs, starts, offsets) of `pspin_block_steps` for pot in `dtype` (cached).

    CT (N, P), P = C(N+p-2, p-1): column q = (number of orderings of multiset q) * the row of
    -p J_eff (reshaped (N**(p-1), N)) at that tuple, so that the gradient rows are
    Y @ CT.T with Y (B, P) the packed products (`packed_rows`).  The entries of a row of Y
    come in runs: run s has the prefix runs[s] (p-2 indices) and covers entries offsets[s] ..
    offsets[s+1]-1, its prefix's product times x_k for k = starts[s] .. N-1 (p = 2: one
    run, no prefix)."""
    dtype = np.dtype(dtype)
    cache = _PACKED.setdefault(pot, {})
    if dtype not in cache:
        N, p = pot.N, pot.p
        idx = multisets(N, p - 1)
        run = np.ones(idx.shape, dtype=np.int64)      # prod over positions = prod of count!
        for u in range(1, p - 1):
            run[:, u] = np.where(idx[:, u] == idx[:, u - 1], run[:, u - 1] + 1, 1)
        mult = math.factorial(p - 1) / np.prod(run, axis=1)
        flat = np.ravel_multi_index(tuple(idx.T), (N,) * (p - 1))
        CT = np.ascontiguousarray((pot.gradient_matrix(np.float64)[flat] * mult[:, None]).T,
                                  dtype=dtype)
        if p == 2:
            runs, starts, offsets = np.zeros((1, 0), np.int64), np.zeros(1, np.int64), \
                np.array([0, N], np.int64)
        else:
            heads = np.flatnonzero(idx[:, p - 2] == idx[:, p - 3])  # k == last prefix index
            runs, starts = idx[heads, :p - 2], idx[heads, p - 3]
            offsets = np.append(heads, len(idx)).astype(np.int64)
        cache[dtype] = (CT, np.ascontiguousarray(runs), starts, offsets)
    return cache[dtype]


@jit
def packed_rows(x, lo, hi, runs, starts, offsets, Y):
    """Rows 0 .. hi-lo-1 of Y (BP, P) <- the packed products of rows lo .. hi-1 of x: entry
    offsets[s] + k - starts[s] is (1 * x[runs[s, 0]] * .. * x[runs[s, -1]]) * x[k], the
    factors multiplied in the order of `pspin.tensor_rows`; the padding rows <- 0.  A run is
    a loop over views from 0 (`yr[o + k]`, `xr[k0 + k]` with run-time offsets: Numba's
    negative-index wraparound on each kept LLVM from vectorizing it, 5x slower)."""
    N = x.shape[1]
    for r in range(hi - lo):
        xr, yr = x[lo + r], Y[r]
        for s in range(starts.shape[0]):
            a = like(1.0, x)
            for u in range(runs.shape[1]):
                a = a * xr[runs[s, u]]
            k0, o = starts[s], offsets[s]
            src, dst = xr[k0:], yr[o:o + N - k0]
            for k in range(src.shape[0]):
                dst[k] = a * src[k]
    for r in range(hi - lo, Y.shape[0]):
        for q in range(Y.shape[1]):
            Y[r, q] = 0


@jit
def pspin_update(x, dstep, lo, hi, t, k0, k1, rep0, eta, sigma, bound, G, buf, new):
    """Step t of the live replicas lo .. hi-1 from their gradient rows G (>= hi-lo, N):
    `sphere_row_step` with this step's NOISE normals; a replica that fails it is frozen and
    flagged (dstep = t + 1).  buf (`chunk_buffer`) and new (N,) are scratch."""
    N = x.shape[1]
    zero, n = like(0.0, x), like(N, x)
    for r in range(hi - lo):
        m = lo + r
        if dstep[m] >= 0:
            continue
        z, off = noise_chunk(k0, k1, rng.NOISE, np.uint64(rep0 + m), t * N, N, buf)
        if cpu.sphere_row_step(x[m], G[r], z[off:off + N], eta, sigma, zero, n, bound, new):
            for i in range(N):      # loops, not slice assignments: each of those kinds
                x[m, i] = new[i]    # adds seconds of compilation
        else:
            dstep[m] = t + 1


@jit
def pspin_step_scalars(es, ts, t, x):
    """(eta, sigma) of step t in x's dtype, as `pspin_block_steps` computes them."""
    e = sched(es, t)
    return like(e, x), like(cpu.noise_scale(e, sched(ts, t)), x)


@jit
def pspin_block_steps(x, dstep, lo, hi, t0, K, k0, k1, rep0, es, ts, CT, runs, starts, offsets,
                      bound, ybuf):
    """K overdamped Langevin steps of replicas lo..hi-1 (one packed product for the block per
    step, then `pspin_update`; arithmetic in x's dtype).  ybuf: at least BP * P items of x's
    dtype for the packed products (the block's largest array, up to 16 MiB: kept by the
    caller across calls, `_packed_buffer`)."""
    N = x.shape[1]
    BP = padded(hi - lo)
    Y = ybuf[:BP * CT.shape[1]].reshape(BP, CT.shape[1])
    G = np.empty((BP, N), dtype=x.dtype)
    new = np.empty(N, dtype=x.dtype)
    buf, _ = chunk_buffer(N, x)
    for t in range(t0, t0 + K):
        eta, sigma = pspin_step_scalars(es, ts, t, x)
        packed_rows(x, lo, hi, runs, starts, offsets, Y)
        dot_rows(CT, Y, G, 0, N)
        pspin_update(x, dstep, lo, hi, t, k0, k1, rep0, eta, sigma, bound, G, buf, new)


def rows_split(M: int, N: int, p: int) -> bool:
    """Whether `_overdamped_pspin` splits each step's product by rows of CT across the threads
    (`_pspin_row_steps`) rather than replicas into blocks: with few replicas and large N
    (W3b: 32 replicas, N = 256) blocks of 16 replicas per thread each stream all of CT
    (67 MB in float64) per step; halves of CT by all replicas stream half each."""
    return (numba.get_num_threads() > 1 and N >= 2 * ROW_CHUNK and padded(M) <= PSPIN_BLOCK
            and padded(M) * math.comb(N + p - 2, p - 1) <= PSPIN_BLOCK_ENTRIES)


def _pspin_row_steps(sim, t0, K, k0, k1, tables, ybuf):
    """K steps of all replicas as one product block whose rows (chunks of ROW_CHUNK rows of
    CT, a fixed split: bits independent of the thread count) are computed by the thread pool,
    after it gathered the packed products in two halves of the replicas; the per-replica
    updates run on this thread, without the GIL."""
    dyn, x = sim.dynamics, sim.state["x"]
    M, N = x.shape
    CT, runs, starts, offsets = tables
    BP = padded(M)
    Y = ybuf[:BP * CT.shape[1]].reshape(BP, CT.shape[1])
    G, new = np.empty((BP, N), x.dtype), np.empty(N, x.dtype)
    buf, _ = chunk_buffer(N, x)
    es, ts = schedule_code(dyn.step), schedule_code(dyn.temperature)
    chunks = [(r, min(N, r + ROW_CHUNK)) for r in range(0, N, ROW_CHUNK)]
    half = min(M, padded(-(-M // 2)))
    halves = ((0, half, half), (half, M, BP))   # replicas lo..hi-1 into rows lo..end-1 of Y
    pool = thread_pool()

    def gather(h):
        packed_rows(x, h[0], h[1], runs, starts, offsets, Y[h[0]:h[2]])

    def rows(c):
        dot_rows(CT, Y, G, c[0], c[1])

    for t in range(t0, t0 + K):
        eta, sigma = pspin_step_scalars(es, ts, t, x)
        list(pool.map(gather, halves))
        list(pool.map(rows, chunks))
        pspin_update(x, sim.diverged_step, 0, M, t, k0, k1, sim.first_replica, eta, sigma,
                     sim.divergence_bound, G, buf, new)


@register(SphericalPSpin, OverdampedLangevin, "numba")
def _overdamped_pspin(sim, t0, K, k0, k1):
    """Blocks of replicas run `pspin_block_steps` (nogil) on a thread pool of
    numba.get_num_threads() workers, each block's rows owned by one thread; or, for few
    replicas of many spins (`rows_split`), each step's GEMM split by rows (`_pspin_row_steps`)."""
    dyn, pot = sim.dynamics, sim.potential
    x = sim.state["x"]
    M, N = x.shape
    tables = packed_gradient(pot, x.dtype)
    if rows_split(M, N, pot.p):
        with one_blas_thread(), _packed_buffer(sim, tables, M, x.dtype) as ybuf:
            _pspin_row_steps(sim, t0, K, k0, k1, tables, ybuf)
        return
    B = block_size(M, N, pot.p)
    args = (t0, K, k0, k1, sim.first_replica, schedule_code(dyn.step),
            schedule_code(dyn.temperature), *tables, sim.divergence_bound)

    def block(lo):
        with _packed_buffer(sim, tables, B, x.dtype) as ybuf:
            pspin_block_steps(x, sim.diverged_step, lo, min(M, lo + B), *args, ybuf)

    with one_blas_thread():
        list(thread_pool().map(block, range(0, M, B)))


@contextlib.contextmanager
def _packed_buffer(sim, tables: tuple, B: int, dtype):
    """A packed-product buffer for a block of B replicas of `sim` (P * BP items), taken from
    and given back to the ones kept for it between calls (one per thread running a block at
    once): a new 8-16 MiB array per call cost ~2000 first touches of fresh pages (15-35 us
    each on this VM: ~50 ms, a W3b record's worth, per `advance`)."""
    size = tables[0].shape[1] * padded(B)
    key = (size, np.dtype(dtype).str)
    held = _BUFFERS.get(sim)
    if held is None or held[0] != key:
        held = _BUFFERS[sim] = (key, queue.SimpleQueue())
    try:
        buf = held[1].get_nowait()
    except queue.Empty:
        buf = np.empty(size, dtype)
    try:
        yield buf
    finally:
        held[1].put(buf)


# ---------------------------------------------------------------- CUDA kernels (backend "cuda")
# SphericalPSpin x OverdampedLangevin on the device, by the dense families' fused path
# (`cuda_backend.gemm_steps`): the state transposed (replica r in column r, columns padded to
# cuda_kernels.GEMM_COLUMNS), then per step ONE cuBLAS GEMM for all replicas, GT (N, MP) = CT
# (N, P) @ YT (P, MP), with the CPU kernel's packed tables (`packed_gradient`: P = C(N+p-2,
# p-1) multisets instead of the N**(p-1) ordered tuples of the plain (M, N**(p-1)) x (N**(p-1),
# N) contraction: for p = 3, N = 64 half the flops and half the operand bytes of YT, the GEMM's
# only large input), and ONE launch of the shared fused kernel `cuda_kernels.gemm_step`: per
# replica the NOISE normals of the step, this family's `sphere_row_step` (the source the CPU
# kernel compiles), divergence and freeze, then `refresh` writes the packed products of the new
# state into YT column r (the next GEMM's operand), so building YT costs no launch of its own.
# The steps are queued without a host synchronization.

cuda = None          # numba.cuda, set by `_cuda_rules` (the simulator swaps this global)


@functools.lru_cache(maxsize=None)
def _cuda_target(f32: bool, block: tuple = (0, 1)) -> tuple:
    """(this module's step functions compiled for numba-cuda, the state's dtype); sets the
    module's `cuda` (numba.cuda) for the device functions defined after it.  With `gemm_step`'s
    block (R, L), L > 1, `lane_sum` sums over a replica's L threads (`cuda_kernels.lane_ops`)."""
    global cuda
    from ..backends import cuda_kernels as ck
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    prims = rt.primitives()
    if block[1] > 1:
        prims = dict(prims, lane_sum=ck.lane_ops(f32, block)[0])
    steps = compile_steps(sys.modules[__name__], cuda.jit(device=True), prims)
    return steps, (np.float32 if f32 else np.float64)


@functools.lru_cache(maxsize=None)
def _cuda_rules(f32: bool, N: int, block: tuple = (0, 1)):
    """(row, refresh, products) device functions / kernel of `gemm_step` for N spins, its
    thread block `block` (`cuda_backend.gemm_block`)."""
    step, ftype = _cuda_target(f32, block)
    step = step.sphere_row_step
    NU = np.uint64(N)

    @cuda.jit(device=True)
    def cast(v):
        return ftype(v)

    @cuda.jit(device=True)
    def row(x, g, z, eta, sigma, zero, bound, new, a0):
        return step(x, g, z, eta, sigma, zero, cast(N), bound, new)

    @cuda.jit(device=True)
    def refresh(XT, r, lane, lanes, YT, runs, starts, offsets):
        """Column r of YT <- the packed products of column r of XT (`packed_rows`' order);
        this thread the runs s = lane, lane + lanes, ... of it."""
        for s in range(lane, starts.shape[0], lanes):
            a = cast(1.0)
            for u in range(runs.shape[1]):
                a = a * XT[runs[s, u], r]
            k0, o, ur = np.uint64(starts[s]), np.uint64(offsets[s]), np.uint64(r)
            k, one = np.uint64(0), np.uint64(1)   # unsigned indices, a `while` loop: see
            while k < NU - k0:                    # `toynets`' kernel on numba's `range`
                YT[o + k, ur] = a * XT[k0 + k, ur]
                k += one

    @cuda.jit
    def products(XT, YT, runs, starts, offsets):
        r = cuda.grid(1)
        if r < XT.shape[1]:
            refresh(XT, r, 0, 1, YT, runs, starts, offsets)
    return row, refresh, products


@functools.lru_cache(maxsize=None)
def _cuda_stages(f32: bool, N: int, block: tuple):
    """`gemm_step`'s stages of `sphere_row_step` for its streamed kernel (N spins, the sliced
    block `block`): the lane is its first loop's coordinate (the step from the origin,
    `overdamped_update`), finish its `sphere_move`."""
    steps, ftype = _cuda_target(f32, block)
    update, move, n = steps.overdamped_update, steps.sphere_move, ftype(N)

    @cuda.jit(device=True)
    def lane(x, g, z, eta, sigma, zero, a0, i):
        return update(zero, g, eta, sigma, z)

    @cuda.jit(device=True)
    def finish(x, new, zero, bound, a0):
        return move(x, new, zero, n, bound)
    return lane, finish


@functools.lru_cache(maxsize=None)
def _cuda_optimizer_row(f32: bool, N: int, adam: bool):
    """The row rule of `gemm_step` for N spins of SGD (GEMM_SGD: `sphere_sgd_step`) or, with
    `adam`, AdamW (GEMM_ADAMW: `sphere_adamw_step`); the weight decay wd is 0 on the sphere
    (`check_constrained_weight_decay`)."""
    steps, ftype = _cuda_target(f32)
    if adam:
        adamw = steps.sphere_adamw_step

        @cuda.jit(device=True)
        def row(x, g, m, s, lr, beta1, beta2, a1, a2, eps, wd, c1, c2, zero, bound, new, mnew,
                snew, a0):
            return adamw(x, g, m, s, lr, beta1, beta2, a1, a2, eps, c1, c2, zero, ftype(N),
                         bound, new, mnew, snew)
        return row
    sgd = steps.sphere_sgd_step

    @cuda.jit(device=True)
    def row(x, g, v, z, lr, momentum, wd, sigma, zero, bound, new, vnew, a0):
        return sgd(x, g, v, z, lr, momentum, sigma, zero, ftype(N), bound, new, vnew)
    return row


def _cuda_workspace(sim) -> int:
    """Bytes per replica of `_overdamped_pspin_cuda`'s buffers: the packed products YT (P =
    C(N+p-2, p-1) rows, `packed_gradient`) and `gemm_steps`' transposed XT, GT (and X2, G2:
    Heun's predictor and its gradient, AdamW's moments, SGD's velocity), in the state's dtype."""
    pot, dyn = sim.potential, sim.dynamics
    rows = 2 + (2 if isinstance(dyn, (Heun, AdamW)) else 1 if isinstance(dyn, SGD) else 0)
    return (math.comb(pot.N + pot.p - 2, pot.p - 1) + rows * pot.N) * sim.dtype.itemsize


@register(SphericalPSpin, OverdampedLangevin, "cuda", first_passage=True, workspace=_cuda_workspace)
@register(SphericalPSpin, LeimkuhlerMatthews, "cuda", first_passage=True,
          workspace=_cuda_workspace)
@register(SphericalPSpin, Heun, "cuda", first_passage=True, workspace=_cuda_workspace)
@register(SphericalPSpin, SGD, "cuda", first_passage=True, workspace=_cuda_workspace)
@register(SphericalPSpin, AdamW, "cuda", first_passage=True, workspace=_cuda_workspace)
def _overdamped_pspin_cuda(run, sim, t0, K):
    """`cuda_backend.gemm_steps` with the packed GEMM (tables on the device, cached per dtype
    on the run's device potential); SGD (full batch, momentum, temperature, gradient noise)
    and AdamW (full batch) with their row rules `sphere_sgd_step`, `sphere_adamw_step`;
    first-passage observers after every step (`cuda_kernels.first_passage_columns`)."""
    from ..backends import cuda_runtime as rt
    from ..backends.cuda_backend import gemm_block, gemm_steps, padded_columns

    xp, x = run.xp, run.state["x"]
    M, N = x.shape
    key = ("pspin packed", x.dtype)
    if key not in run.pot.cache:
        run.pot.cache[key] = tuple(xp.asarray(a) for a in packed_gradient(sim.potential, x.dtype))
    CT, runs, starts, offsets = run.pot.cache[key]
    block = gemm_block(sim.dynamics, N)
    row, refresh, products = _cuda_rules(run.f32, N, block)
    if isinstance(sim.dynamics, (SGD, AdamW)):
        row = _cuda_optimizer_row(run.f32, N, isinstance(sim.dynamics, AdamW))
    YT = run.workspace(("pspin products", x.dtype),     # persists: graphs hold its address
                       lambda: {"YT": xp.empty((CT.shape[1], padded_columns(M)),
                                               dtype=x.dtype)}).arrays["YT"]

    def prime(XT):
        rt.launch(products, XT.shape[1], *rt.kernel_arrays(XT, YT, runs, starts, offsets))

    def gemm(XT, GT):
        rt.gemm(CT, YT, GT)

    gemm_steps(run, sim, t0, K, gemm, row, refresh, (YT, runs, starts, offsets), prime,
               block=block, stages=_cuda_stages(run.f32, N, block))


# ---------------------------------------------------------------- generic drivers' hooks (CPU)
# Section owned by the generic drivers (`kernels.drivers`): Heun, Leimkuhler-Matthews and
# full-batch SGD / AdamW run them on the packed GEMM of the kernel above and the sphere's
# projection and retraction of `potentials.pspin`.
from .drivers import Hooks, family, thread_pool  # noqa: E402

@jit
def packed_block_gradient(xb, CT, runs, starts, offsets):
    """Ambient gradient rows G (BP, N) of the rows xb (B, N) as the kernel computes them,
    the packed products (`packed_rows`, the `packed_gradient` tables; half the products of the
    full contraction) @ CT.T, the rows padded to REPLICA_PAD so that a row's value does not
    depend on the block it came in."""
    B, N = xb.shape
    BP = padded(B)
    Y = np.empty((BP, CT.shape[1]), dtype=xb.dtype)
    packed_rows(xb, 0, B, runs, starts, offsets, Y)
    G = np.empty((BP, N), dtype=xb.dtype)
    dot_rows(CT, Y, G, 0, N)
    return G


@jit
def pspin_grad_block(xb, args):
    """Ambient gradient (B, N) in xb's dtype (`packed_block_gradient`); args: (p, CT, runs,
    starts, offsets)."""
    return packed_block_gradient(xb, args[1], args[2], args[3], args[4])[:xb.shape[0]]


@jit
def pspin_energy_block(xb, args):
    """H (B,) = x . grad H / p, summed in float64 (Euler's identity, as `energy`), grad H as
    `pspin_grad_block` computes it."""
    B, N = xb.shape
    G = packed_block_gradient(xb, args[1], args[2], args[3], args[4])
    u = np.zeros(B)
    for r in range(B):
        for i in range(N):
            u[r] += np.float64(xb[r, i]) * np.float64(G[r, i])
    return u / args[0]


@ijit
def row_dot(a, b, r):
    """sum_i a[r, i] b[r, i] in a's dtype, in order (`rng.row_sum` of the reference's
    product)."""
    acc = like(0.0, a)
    for i in range(a.shape[1]):
        acc += a[r, i] * b[r, i]
    return acc


@jit
def pspin_project_block(xb, vb):
    """Tangent projection of the rows vb at xb (B, N), `pspin.sphere_project` in xb's dtype
    (the row sum in order); loops: the reference's broadcasting expression compiled for
    ~1.8 s in every generic pair."""
    B, N = xb.shape
    n = like(N, xb)
    out = np.empty((B, N), dtype=xb.dtype)
    for r in range(B):
        c = row_dot(vb, xb, r) / n
        for i in range(N):
            out[r, i] = vb[r, i] - c * xb[r, i]
    return out


@jit
def pspin_retract_block(xb):
    """Rows rescaled onto |x|^2 = N, `pspin.sphere_retract` in xb's dtype (loops)."""
    B, N = xb.shape
    n = like(N, xb)
    out = np.empty((B, N), dtype=xb.dtype)
    for r in range(B):
        scale = np.sqrt(row_dot(xb, xb, r) / n)
        for i in range(N):
            out[r, i] = xb[r, i] / scale
    return out


family(SphericalPSpin, Hooks(pspin_grad_block, pspin_energy_block,
                             lambda pot, dtype: (pot.p,) + packed_gradient(pot, dtype),
                             pspin_project_block, pspin_retract_block, blas=True))
