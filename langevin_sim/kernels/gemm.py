"""The CPU kernels' own products, in two forms.  `row_dots`, for a few hundred replicas:
G (B, N) = Y (B, K) @ A (N, K).T, every entry a dot product of a row of A with a row of Y (both
contiguous, K long).  `row_axpys`, for the toy nets' small products: C (m, n) = A (m, K) @
Bm (K, n), rows of C built as sums of rows of Bm.

`row_dots` computes 4 x 4 tiles of G at once, sixteen dot products in one loop over a chunk
of KC_BYTES of K (the chunks in order, each tile's partial sums added to G), so the sixteen
accumulators stay in vector registers and each loaded vector feeds four FMAs.  It needs 32
vector registers: on an AVX-512 core (Zen 5, one thread) the SphericalPSpin N = 64 product ran
at 70-90 GFLOP/s in float64 and 140-170 in float32, against 47 and 105 for OpenBLAS pinned to
its Haswell kernels (`OPENBLAS_CORETYPE=Haswell`, as that machine's environment sets); compiled
for AVX2 only (16 registers) it ran at 29 (float64), so there `dot_rows` calls BLAS instead
(`OWN_PRODUCT`).  Every entry is computed by the same instructions wherever its row of Y sits
when B is a multiple of TILE (the callers pad): a replica's gradient does not depend on the
block it came in.  The sums' order is written out (`kernels.lanes`): within a chunk, lane l of
64 bytes of lanes collects the terms q = l (mod lanes) in order by fused multiply-adds (the
last, partial lanes zero-filled), then the lanes are added in a halving tree, so the bits do
not depend on the CPU compiled for (a sum LLVM reassociated, as before, split by the target's
vector width: compiled for an Intel AVX-512 core and for a Zen 4 it gave other trajectories).
`row_axpys` needs no reduction order: its sums run along K in order, one FMA per term
(`fastmath` contract only).
"""
from __future__ import annotations

import llvmlite.binding as ll
import numba
import numpy as np

from ..backends.jit import ijit, jit
from .lanes import lane_count, lane_fma, lane_load, lane_sum, lane_zeros

TILE = 4            # rows of Y (replicas) and of A per tile: callers pad B to a multiple of it
KC_BYTES = 4096     # bytes of each row of A and Y per chunk along K (4 + 4 rows: 32 KiB, L1)


def _avx512() -> bool:
    """Whether Numba compiles for a CPU with AVX-512 (its 32 vector registers hold a tile):
    the features of NUMBA_CPU_FEATURES, else the host's (as Numba's code generator)."""
    features = numba.config.CPU_FEATURES
    if features is None:
        features = ll.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


OWN_PRODUCT = _avx512()


@jit
def row_dots(A, Y, G, i0, i1):
    """G[m, i] <- A[i] . Y[m] for every row m of Y and i0 <= i < i1 (4 x 4 tiles; the rows of
    Y beyond the last multiple of TILE, and of A beyond the last full tile, one at a time by
    `single_dot`, in the same order: every entry has the same bits wherever it is computed)."""
    K = A.shape[1]
    B = Y.shape[0]
    KC = max(1, KC_BYTES // Y.itemsize)
    L = lane_count(Y)
    BT = B - B % TILE
    for m in range(B):
        for i in range(i0, i1):
            G[m, i] = 0
    for q0 in range(0, K, KC):
        q1 = min(K, q0 + KC)
        qv = q1 - (q1 - q0) % L
        i = i0
        while i + TILE <= i1:
            for m in range(0, BT, TILE):
                z = lane_zeros(Y)
                c = (z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z)
                for q in range(q0, qv, L):
                    c = tile_lanes(A, Y, i, m, q, L, c)
                if qv < q1:
                    c = tile_lanes(A, Y, i, m, qv, q1 - qv, c)
                for j in range(TILE):   # c[4 k + j]: A[i + k] . Y[m + j]
                    g = G[m + j]
                    g[i] += lane_sum(c[j])
                    g[i + 1] += lane_sum(c[4 + j])
                    g[i + 2] += lane_sum(c[8 + j])
                    g[i + 3] += lane_sum(c[12 + j])
            i += TILE
        for m in range(B):
            for r in range(i, i1):
                G[m, r] += single_dot(A, r, Y, m, q0, q1)
        for m in range(BT, B):
            for r in range(i0, i):
                G[m, r] += single_dot(A, r, Y, m, q0, q1)


@ijit
def tile_lanes(A, Y, i, m, q, r, c):
    """The lanes c (16) of a 4 x 4 tile plus the products of the lanes at q (`lane_load`, r
    entries left: L in the loop, a constant, or the last few) of the rows i..i+3 of A and
    m..m+3 of Y: c[4 k + j] collects A[i + k] . Y[m + j], each lane by one fused multiply-add
    (indices, not row views: each view kept reference-count calls; the loop and its
    remainder as two calls, one branch-free loop: one loop with the test inside ran ~7 %
    slower)."""
    u0, u1, u2, u3 = lane_load(A, i, q, r), lane_load(A, i + 1, q, r), \
        lane_load(A, i + 2, q, r), lane_load(A, i + 3, q, r)
    v0, v1, v2, v3 = lane_load(Y, m, q, r), lane_load(Y, m + 1, q, r), \
        lane_load(Y, m + 2, q, r), lane_load(Y, m + 3, q, r)
    return (lane_fma(u0, v0, c[0]), lane_fma(u0, v1, c[1]), lane_fma(u0, v2, c[2]),
            lane_fma(u0, v3, c[3]), lane_fma(u1, v0, c[4]), lane_fma(u1, v1, c[5]),
            lane_fma(u1, v2, c[6]), lane_fma(u1, v3, c[7]), lane_fma(u2, v0, c[8]),
            lane_fma(u2, v1, c[9]), lane_fma(u2, v2, c[10]), lane_fma(u2, v3, c[11]),
            lane_fma(u3, v0, c[12]), lane_fma(u3, v1, c[13]), lane_fma(u3, v2, c[14]),
            lane_fma(u3, v3, c[15]))


@ijit
def single_dot(A, r, Y, m, q0, q1):
    """A[r, q0:q1] . Y[m, q0:q1] in `row_dots`' order: one entry of its tiles."""
    L = lane_count(Y)
    qv = q1 - (q1 - q0) % L
    c = lane_zeros(Y)
    for q in range(q0, qv, L):
        c = lane_fma(lane_load(A, r, q, L), lane_load(Y, m, q, L), c)
    if qv < q1:
        c = lane_fma(lane_load(A, r, qv, q1 - qv), lane_load(Y, m, qv, q1 - qv), c)
    return lane_sum(c)


@jit
def blas_rows(A, Y, G, i0, i1):
    """G[:, i0:i1] <- Y @ A[i0:i1].T by one BLAS GEMM into a scratch array."""
    H = np.dot(Y, np.ascontiguousarray(A[i0:i1]).T)
    for m in range(Y.shape[0]):
        for i in range(i0, i1):
            G[m, i] = H[m, i - i0]


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def row_axpys(A, Bm, C):
    """C (m, n) <- A (m, K) @ Bm (K, n), C and the rows of Bm contiguous (A any layout: a
    transposed view serves).  Four rows of C at a time take four rows of Bm at a time: per
    vector of a row of C, four loads of Bm feed sixteen FMAs (LLVM vectorizes along n; no
    reassociation, so each entry is the in-order FMA chain over K, the same bits in any row
    slot).  On an AVX-512 core, float64, OpenBLAS (Haswell kernels) against this: W4's
    32 x 16 x 32 product 0.95 vs 0.71 us, its 32 x 32 x 16 gradient 1.21 vs 0.96, the grokking
    net's 23 x 64 x 317 logits 24 vs 15 us (float32: 15 vs 8.7)."""
    m, K = A.shape
    n = Bm.shape[1]
    K4 = K - K % 4
    mT = m - m % 4
    for i in range(0, mT, 4):
        c0, c1, c2, c3 = C[i], C[i + 1], C[i + 2], C[i + 3]
        for j in range(n):
            c0[j] = 0
            c1[j] = 0
            c2[j] = 0
            c3[j] = 0
        for q in range(0, K4, 4):
            b0, b1, b2, b3 = Bm[q], Bm[q + 1], Bm[q + 2], Bm[q + 3]
            a00, a01, a02, a03 = A[i, q], A[i, q + 1], A[i, q + 2], A[i, q + 3]
            a10, a11, a12, a13 = A[i + 1, q], A[i + 1, q + 1], A[i + 1, q + 2], A[i + 1, q + 3]
            a20, a21, a22, a23 = A[i + 2, q], A[i + 2, q + 1], A[i + 2, q + 2], A[i + 2, q + 3]
            a30, a31, a32, a33 = A[i + 3, q], A[i + 3, q + 1], A[i + 3, q + 2], A[i + 3, q + 3]
            for j in range(n):
                u0, u1, u2, u3 = b0[j], b1[j], b2[j], b3[j]
                c0[j] = c0[j] + a00 * u0 + a01 * u1 + a02 * u2 + a03 * u3
                c1[j] = c1[j] + a10 * u0 + a11 * u1 + a12 * u2 + a13 * u3
                c2[j] = c2[j] + a20 * u0 + a21 * u1 + a22 * u2 + a23 * u3
                c3[j] = c3[j] + a30 * u0 + a31 * u1 + a32 * u2 + a33 * u3
        for q in range(K4, K):
            bq = Bm[q]
            a0, a1, a2, a3 = A[i, q], A[i + 1, q], A[i + 2, q], A[i + 3, q]
            for j in range(n):
                u = bq[j]
                c0[j] = c0[j] + a0 * u
                c1[j] = c1[j] + a1 * u
                c2[j] = c2[j] + a2 * u
                c3[j] = c3[j] + a3 * u
    for i in range(mT, m):
        c = C[i]
        for j in range(n):
            c[j] = 0
        for q in range(K):
            bq = Bm[q]
            a = A[i, q]
            for j in range(n):
                c[j] = c[j] + a * bq[j]


@ijit
def own_axpys(A, Bm, C):
    """C <- A @ Bm by `row_axpys`, A passed as a view typed with any layout: one
    specialization per dtype serves A contiguous and transposed (each costs ~0.5 s cold)."""
    row_axpys(A[:, :], Bm, C)


@jit
def blas_axpys(A, Bm, C):
    """C <- A @ Bm by BLAS (np.dot)."""
    np.dot(A, Bm, C)


# names bound at import, so a kernel compiles only the one it calls: on AVX-512 our own
# products, else BLAS
dot_rows = row_dots if OWN_PRODUCT else blas_rows       # G[:, i0:i1] <- Y @ A[i0:i1].T
axpy_rows = own_axpys if OWN_PRODUCT else blas_axpys     # C <- A @ Bm
