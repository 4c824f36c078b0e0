"""The CPU kernels' own product for a few hundred replicas: G (B, N) = Y (B, K) @ A (N, K).T,
every entry a dot product of a row of A with a row of Y (both contiguous, K long).

`row_dots` computes 4 x 4 tiles of G at once, sixteen dot products in one loop over a chunk
of KC_BYTES of K (the chunks in order, each tile's partial sums added to G), so the sixteen
accumulators stay in vector registers and each loaded vector feeds four FMAs.  It needs 32
vector registers: on an AVX-512 core (Zen 5, one thread) the SphericalPSpin N = 64 product ran
at 70-90 GFLOP/s in float64 and 140-170 in float32, against 47 and 105 for OpenBLAS pinned to
its Haswell kernels (`OPENBLAS_CORETYPE=Haswell`, as that machine's environment sets); compiled
for AVX2 only (16 registers) it ran at 29 (float64), so there `dot_rows` calls BLAS instead
(`OWN_PRODUCT`).  Every entry is computed by the same instructions wherever its row of Y sits
when B is a multiple of TILE (the callers pad): a replica's gradient does not depend on the
block it came in.  Reassociation (`fastmath` reassoc + contract only, no finite-math
assumptions) lets LLVM vectorize the sums; the order is fixed per compiled kernel.
"""
from __future__ import annotations

import llvmlite.binding as ll
import numba
import numpy as np

from ..backends.jit import jit

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


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def row_dots(A, Y, G, i0, i1):
    """G[m, i] <- A[i] . Y[m] for every row m of Y and i0 <= i < i1 (4 x 4 tiles; the rows of
    Y beyond the last multiple of TILE, and of A beyond the last full tile, one at a time)."""
    K = A.shape[1]
    B = Y.shape[0]
    KC = max(1, KC_BYTES // Y.itemsize)
    BT = B - B % TILE
    for m in range(B):
        for i in range(i0, i1):
            G[m, i] = 0
    for q0 in range(0, K, KC):
        q1 = min(K, q0 + KC)
        n = q1 - q0
        i = i0
        while i + TILE <= i1:
            a0, a1, a2, a3 = A[i, q0:q1], A[i + 1, q0:q1], A[i + 2, q0:q1], A[i + 3, q0:q1]
            for m in range(0, BT, TILE):
                y0, y1, y2, y3 = Y[m, q0:q1], Y[m + 1, q0:q1], Y[m + 2, q0:q1], Y[m + 3, q0:q1]
                c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = G[m, i] - G[m, i]
                c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = c00
                for q in range(n):
                    u0, u1, u2, u3 = a0[q], a1[q], a2[q], a3[q]
                    v0, v1, v2, v3 = y0[q], y1[q], y2[q], y3[q]
                    c00 += u0 * v0
                    c01 += u0 * v1
                    c02 += u0 * v2
                    c03 += u0 * v3
                    c10 += u1 * v0
                    c11 += u1 * v1
                    c12 += u1 * v2
                    c13 += u1 * v3
                    c20 += u2 * v0
                    c21 += u2 * v1
                    c22 += u2 * v2
                    c23 += u2 * v3
                    c30 += u3 * v0
                    c31 += u3 * v1
                    c32 += u3 * v2
                    c33 += u3 * v3
                G[m, i] += c00
                G[m + 1, i] += c01
                G[m + 2, i] += c02
                G[m + 3, i] += c03
                G[m, i + 1] += c10
                G[m + 1, i + 1] += c11
                G[m + 2, i + 1] += c12
                G[m + 3, i + 1] += c13
                G[m, i + 2] += c20
                G[m + 1, i + 2] += c21
                G[m + 2, i + 2] += c22
                G[m + 3, i + 2] += c23
                G[m, i + 3] += c30
                G[m + 1, i + 3] += c31
                G[m + 2, i + 3] += c32
                G[m + 3, i + 3] += c33
            i += TILE
        for m in range(B):
            for r in range(i, i1):
                G[m, r] += single_dot(A[r, q0:q1], Y[m, q0:q1])
        for m in range(BT, B):
            for r in range(i0, i):
                G[m, r] += single_dot(A[r, q0:q1], Y[m, q0:q1])


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"},
            inline="always")
def single_dot(a, y):
    """a . y (one accumulator, vectorized by the same reassociation)."""
    s = a[0] - a[0]
    for q in range(a.shape[0]):
        s += a[q] * y[q]
    return s


@jit
def blas_rows(A, Y, G, i0, i1):
    """G[:, i0:i1] <- Y @ A[i0:i1].T by one BLAS GEMM into a scratch array."""
    H = np.dot(Y, np.ascontiguousarray(A[i0:i1]).T)
    for m in range(Y.shape[0]):
        for i in range(i0, i1):
            G[m, i] = H[m, i - i0]


# G[:, i0:i1] <- Y @ A[i0:i1].T: `row_dots` on AVX-512, else `blas_rows` (a name bound at
# import, so a kernel compiles only the one it calls)
dot_rows = row_dots if OWN_PRODUCT else blas_rows
