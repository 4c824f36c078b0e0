"""TeacherStudentMLP, ModularArithmeticMLP and ClassifierMLP: one CPU kernel for minibatch SGD and
AdamW, and one fused numba-cuda kernel for the nets (ClassifierMLP: dense inputs and a softmax
head; modular arithmetic: one-hot inputs or a learned embedding) x SGD, AdamW
and the full-batch OverdampedLangevin, LeimkuhlerMatthews, UnderdampedLangevin (BAOAB), Heun
and MALA (its section at the end).

The kernel follows the reference step by step (`SGD.reference_step`, `AdamW.reference_step`,
the nets' `_evaluate`): the minibatch of each step (`common.minibatch_rows`, every sampling
mode), SGD's label shifts (`common.label_shifts`), the mean minibatch gradient by hand-written
backprop (`mlp_grad`), then the update: `common.sgd_step` (momentum, weight decay, grad_noise,
temperature) or `adamw_step` (the shared rule `dynamics.adamw.adamw_update`).
Each thread (`numba.get_num_threads()` of them, started by the adapter, the kernel runs
without the GIL) owns every T-th replica and reuses one scratch for all its K steps.

The SGD / AdamW kernel's products are the CPU kernels' own (`kernels.gemm`, on AVX-512; BLAS
with one thread elsewhere): `axpy_rows` for Z = A W1^T (W1^T transposed into scratch first),
dW1 = dZ^T A, the logits outT = W2 H^T and, for the classes, dH = dout^T W2 and dW2 = dout H
(`row_axpys`: sums along K in order, the same bits on every AVX-512 CPU; dW2 as `dot_rows`'
dot products of K = B terms was slower at these shapes once their order was fixed, and
cost ~1.4 s of compilation: design_changes 135).  One Zen 5
thread, us per replica-step: W4 float64 5.9 -> 5.6, the grokking net float32 62 -> 55; on two
threads W4 float64 gained ~20% (OpenBLAS's small GEMMs scaled ~1.5x there).  The generic
drivers' blocks (`net_grad_block`, `net_energy_block`) and the records' metrics keep BLAS
(`own` None): Numba links a callee's code into every caller's module and optimizes it again
there, ~0.4 s per level for each own product, and their call trees are deep (driver, block,
`mlp_grad`, `mlp_forward_pass`).  Activations are sample-major, (B, h) as the reference's,
and transposed once into HT (h, B); the logits are class-major (k, B), so that softmax and the
loss head run along samples.  The regression head (one output) is plain loops.  One-hot
inputs (ModularArithmeticMLP without embedding) gather rows of W1^T instead of multiplying,
their W1 gradient scatters rows of dZ (and db1 is the sum of the first operand's rows); a
learned embedding gathers rows of E into dense inputs and scatters dA = dZ W1 back.  tanh and
softmax's exp are branch-free polynomials that vectorize, in the run's precision: float64
`tanh64` / `exp64_neg` (1e-15 and 2 ulp), float32 `tanh32` / `exp32_neg` (6 and 1 ulp).
Summation orders differ from NumPy's, so trajectories agree with the reference to rounding.
The net, the dynamics, the sampling and which of SGD's noises (temperature, label, gradient)
are on are chosen at compile time by None arguments (`train_mlp`, `_net_args`,
`common.sampling_args`): a user's run compiles only its own code (W4's TeacherStudentMLP x SGD
at T = 0 no Philox normals at all); the activation and schedules are run-time arguments.
"""
from __future__ import annotations

import functools
import math
import queue
import sys
import weakref

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ..backends.jit import CPU_PRIMITIVES, ijit, jit, one_blas_thread, select_cpu
from ..backends.registry import register
from ..dynamics import (MALA, SGD, AdamW, Heun, LeimkuhlerMatthews, OverdampedLangevin,
                        UnderdampedLangevin)
from ..dynamics.sgd import SAMPLING_CODES
from ..potentials.toynets import (ACTIVATIONS, ClassifierMLP, ModularArithmeticMLP,
                                  TeacherStudentMLP)
from .common import (compile_steps, label_shifts, like, minibatch_rows, noise_level,
                     sampling_args, sched, schedule_code, sgd_scratch, sgd_step, temperature_code)
from .gemm import axpy_rows

STEPS = ()   # the shared rules suffice: `sgd_update`, `adamw_update` (with `sqrt`)

cpu = compile_steps(sys.modules[__name__])

# ---------------------------------------------------------------- vectorizable exp and tanh

_bits_float = CPU_PRIMITIVES["bits_float"]
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split of ln 2
ROUND = 6755399441055744.0   # 1.5 * 2^52: (v + ROUND) - ROUND rounds v to an integer
E2, E3, E4, E5, E6, E7, E8, E9, E10, E11, E12, E13 = (1.0 / math.factorial(k) for k in range(2, 14))


@ijit
def expm1_neg(u):
    """e^u - 1 for float64 u <= 0 (u < -708 is taken as -708; NaN stays NaN), branch-free.

    u = k ln 2 + r, |r| <= ln 2 / 2 (Cody-Waite), expm1(r) by its Taylor series to r^13
    (truncation < 2e-17 relative), e^u - 1 = 2^k expm1(r) + (2^k - 1).  Measured relative
    error against np.expm1 below 4e-16 (tests/test_toynet_kernels.py)."""
    uc = select_cpu(u < -708.0, -708.0, u)
    k = (select_cpu(uc == uc, uc, 0.0) * LOG2E + ROUND) - ROUND
    r = (uc - k * LN2_HI) - k * LN2_LO
    p = r * (1.0 + r * (E2 + r * (E3 + r * (E4 + r * (E5 + r * (E6 + r * (E7 + r * (
        E8 + r * (E9 + r * (E10 + r * (E11 + r * (E12 + r * E13))))))))))))
    scale = _bits_float((np.int64(k) + 1023) << 52)
    return scale * p + (scale - 1.0)


@ijit
def tanh64(z):
    """tanh of float64 z as -em / (2 + em), em = expm1(-2|z|), with the sign of z:
    relative error against np.tanh below 1e-15 (measured), NaN stays NaN."""
    em = expm1_neg(-2.0 * abs(z))
    t = -em / (2.0 + em)
    return select_cpu(z < 0.0, -t, t)


# Cephes' exp: e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)) on |r| <= ln 2 / 2
XP_0, XP_1, XP_2 = 1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1
XQ_0, XQ_1, XQ_2 = 3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1


@ijit
def exp64_neg(u):
    """e^u for float64 u <= 0 (u < -708 is taken as -708; NaN stays NaN), branch-free:
    Cody-Waite reduction as `expm1_neg`, then Cephes' rational form (one division, half
    the operations of the Taylor series): within 2 ulp of np.exp (measured, tests)."""
    uc = select_cpu(u < -708.0, -708.0, u)
    k = (select_cpu(uc == uc, uc, 0.0) * LOG2E + ROUND) - ROUND
    r = (uc - k * LN2_HI) - k * LN2_LO
    rr = r * r
    px = r * ((XP_0 * rr + XP_1) * rr + XP_2)
    q = ((XQ_0 * rr + XQ_1) * rr + XQ_2) * rr + 2.0
    return (1.0 + 2.0 * (px / (q - px))) * _bits_float((np.int64(k) + 1023) << 52)


# Eigen's float32 tanh: x P(x^2) / Q(x^2) on |x| <= 7.905 (tanh rounds to +-1 in float32
# beyond), x itself below 4e-4.
F32 = np.float32
T_CLAMP, T_SMALL = F32(7.90531110763549805), F32(4e-4)
TA1, TA3, TA5, TA7, TA9, TA11, TA13 = (F32(c) for c in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
TB0, TB2, TB4, TB6 = (F32(c) for c in (4.89352518554385e-03, 2.26843463243900e-03,
                                       1.18534705686654e-04, 1.19825839466702e-06))


@ijit
def tanh32(z):
    """tanh of float32 z in float32 arithmetic, branch-free: within 6 float32 ulp of np.tanh
    (measured), NaN stays NaN."""
    x = select_cpu(z > T_CLAMP, T_CLAMP, select_cpu(z < -T_CLAMP, -T_CLAMP, z))
    x2 = x * x
    p = x * (TA1 + x2 * (TA3 + x2 * (TA5 + x2 * (TA7 + x2 * (TA9 + x2 * (TA11 + x2 * TA13))))))
    q = TB0 + x2 * (TB2 + x2 * (TB4 + x2 * TB6))
    return select_cpu(abs(z) < T_SMALL, z, p / q)


_bits_float32 = CPU_PRIMITIVES["bits_float32"]
# Cephes' expf: e^u = 2^k e^r, r = u - k ln 2 (ln 2 = C1 + C2, C1 exact in 9 bits), e^r by
# a degree-7 polynomial
X_LO, LOG2E32, ROUND32 = F32(-87.0), F32(1.4426950408889634), F32(12582912.0)  # 1.5 * 2^23
X_C1, X_C2 = F32(0.693359375), F32(-2.12194440e-4)
XP0, XP1, XP2 = F32(1.9875691500e-4), F32(1.3981999507e-3), F32(8.3334519073e-3)
XP3, XP4, XP5, X_ONE = F32(4.1665795894e-2), F32(1.6666665459e-1), F32(5.0000001201e-1), F32(1.0)


@ijit
def exp32_neg(u):
    """e^u for float32 u <= 0 in float32 arithmetic (u < -87 is taken as -87; NaN stays NaN),
    branch-free: within 1 float32 ulp of the exact value (measured: 0.97)."""
    uc = select_cpu(u < X_LO, X_LO, u)
    k = (select_cpu(uc == uc, uc, F32(0.0)) * LOG2E32 + ROUND32) - ROUND32
    r = (uc - k * X_C1) - k * X_C2
    y = ((((((XP0 * r + XP1) * r + XP2) * r + XP3) * r + XP4) * r + XP5) * (r * r) + r) + X_ONE
    return y * _bits_float32((np.int32(k) + np.int32(127)) << np.int32(23))   # 16 int32 lanes


def exp_of(u):
    """e^u for u <= 0 in u's precision (compiled code only): `exp32_neg` or `exp64_neg`."""
    return np.exp(u)


@overload(exp_of, inline="always")
def _exp_of(u):
    if u == types.float32:
        return lambda u: exp32_neg(u)
    return lambda u: exp64_neg(u)


def tanh_of(z):
    """tanh in z's precision (compiled code only): `tanh32` or `tanh64`."""
    return np.tanh(z)


@overload(tanh_of, inline="always")
def _tanh_of(z):
    if z == types.float32:
        return lambda z: tanh32(z)
    return lambda z: tanh64(z)


# ---------------------------------------------------------------- the passes (CPU)

@jit
def transpose(dst, src):
    """dst (c, r) = src (r, c)^T, in strips of 8 source rows (contiguous runs of 8 written
    per destination row): 3x faster than 16 x 16 tiles at 317 x 64, 10x than a plain loop."""
    R, C = src.shape
    for r0 in range(0, R - 7, 8):
        for c in range(C):
            row = dst[c]
            for q in range(8):
                row[r0 + q] = src[r0 + q, c]
    for r in range(R - R % 8, R):
        for c in range(C):
            dst[c, r] = src[r, c]


@ijit
def phi(z, kind, one, zero):
    """The activation of z (`toynets.act`; kind 0 tanh, 1 relu, 2 quadratic) in z's
    precision, as the reference computes it (relu: z (z > 0), so NaN stays NaN); one, zero:
    1 and 0 in that dtype."""
    if kind == 0:
        return tanh_of(z)
    if kind == 1:
        return z * select_cpu(z > zero, one, zero)
    return z * z


@ijit
def phi_d1(z, h, kind, one, zero):
    """phi'(z) given h = phi(z) (`toynets.act_d1`): 1 - h^2, 1 or 0, 2 z (exactly, without
    widening float32 to float64)."""
    if kind == 0:
        return one - h * h
    if kind == 1:
        return select_cpu(z > zero, one, zero)
    return z + z


@jit
def activate(Z, H, kind):
    """H = phi(Z) elementwise (any C-contiguous shape)."""
    z, h = Z.reshape(Z.size), H.reshape(H.size)
    one, zero = like(1.0, h), like(0.0, h)
    for i in range(z.shape[0]):
        h[i] = phi(z[i], kind, one, zero)


@jit
def backprop_activation(G, Z, H, kind):
    """G <- G * phi'(Z) (dL/dH to dL/dZ; H = phi(Z)), elementwise."""
    g, z, h = G.reshape(G.size), Z.reshape(Z.size), H.reshape(H.size)
    one, zero = like(1.0, h), like(0.0, h)
    for i in range(g.shape[0]):
        g[i] = g[i] * phi_d1(z[i], h[i], kind, one, zero)


@jit
def regression_dout(outT, y, idx, shift):
    """outT (1, B) <- dL/dout = (out - (y[idx] + shift)) / B of the squared error."""
    B = idx.shape[0]
    o = outT[0]
    inv = like(B, o)
    for b in range(B):
        o[b] = (o[b] - (y[idx[b]] + shift[b])) / inv


@jit
def column_max(outT, mx):
    """mx (B,) <- the largest entry of each column of outT (k, B) (a NaN in row 0 stays)."""
    first = outT[0]
    for b in range(outT.shape[1]):
        mx[b] = first[b]
    for q in range(1, outT.shape[0]):
        row = outT[q]
        for b in range(outT.shape[1]):
            mx[b] = select_cpu(row[b] > mx[b], row[b], mx[b])


@jit
def softmax_dout(outT, cls, idx, mx, nrm):
    """outT (k, B) logits <- dL/dout = (softmax(out) - onehot(cls[idx])) / B of the mean
    cross-entropy, column b a sample (as `ModularArithmeticMLP._head`, with multiplications
    by reciprocals for its divisions); mx, nrm (B,) scratch."""
    k, B = outT.shape
    column_max(outT, mx)
    one = like(1.0, nrm)
    for b in range(B):
        nrm[b] = 0.0
    for q in range(k):
        row = outT[q]
        for b in range(B):
            e = exp_of(row[b] - mx[b])
            row[b] = e
            nrm[b] = nrm[b] + e
    for b in range(B):
        nrm[b] = one / nrm[b]
    inv = one / like(B, nrm)
    for b in range(B):      # the class entries first: mx keeps (q_c - 1) / B
        c = cls[idx[b]]
        mx[b] = (outT[c, b] * nrm[b] - one) * inv
    for q in range(k):
        row = outT[q]
        for b in range(B):
            row[b] = (row[b] * nrm[b]) * inv
    for b in range(B):
        outT[cls[idx[b]], b] = mx[b]


@ijit
def mlp_scratch(x, B, din, h, k):
    """Per-replica scratch of `mlp_grad` in x's dtype: 2-D (Ab (B, din), Z, H, G (B, h),
    outT (k, B), W1T, gW1T (din, h), dA (B, din), HT (h, B)), 1-D (mx, nrm (B,)), and the
    int64 operand rows (2, B) of one-hot inputs.  Inlined into its
    callers, as `first_layer`, `first_layer_grad` and `common.sgd_scratch`: compiled on
    their own, the four added ~1-2 s to W4's cold start (measured, noisy)."""
    dt = x.dtype
    return ((np.empty((B, din), dt), np.empty((B, h), dt), np.empty((B, h), dt),
             np.empty((B, h), dt), np.empty((k, B), dt), np.empty((din, h), dt),
             np.empty((din, h), dt), np.empty((B, din), dt), np.empty((h, B), dt)),
            (np.empty(B, dt), np.empty(B, dt)), np.empty((2, B), np.int64))


@ijit
def product(A, Bm, C, own):
    """C <- A @ Bm: by `gemm.axpy_rows` (the kernels' own product on AVX-512) where own is
    True (a literal: Numba then compiles only that branch), by BLAS where own is None."""
    if own is not None:
        axpy_rows(A, Bm, C)
    else:
        np.dot(A, Bm, C)


@ijit
def first_layer(Ab, W1T, b1, Z, own):
    """Z (B, h) = Ab W1T + b1 of dense inputs Ab (B, din), W1T = W1^T (din, h), b1 (h,)."""
    product(Ab, W1T, Z, own)
    for b in range(Z.shape[0]):
        zr = Z[b]
        for j in range(Z.shape[1]):
            zr[j] = zr[j] + b1[j]


@ijit
def first_layer_grad(G, Z, H, kind, Ab, gb1, gW1, own):
    """Backward through `first_layer` and the activation H = phi(Z): G (B, h) <- dZ = dL/dH
    phi'(Z), gb1 (h,) += the column sums of dZ, gW1 (h, din) = dZ^T Ab."""
    backprop_activation(G, Z, H, kind)
    for b in range(G.shape[0]):
        gr = G[b]
        for j in range(G.shape[1]):
            gb1[j] = gb1[j] + gr[j]
    product(G.T, Ab, gW1, own)


@jit
def mlp_forward_pass(x, idx, kind, dims, A, pairs, hot, emb, S2, ops, own):
    """The forward pass of `mlp_grad` (same arguments) at parameters x (d,) on the samples
    idx (B,), into S2: dense inputs Ab (B, din) (rows of A, or embedded operands), Z = A W1^T
    + b1 and H = phi(Z) (B, h) (one-hot operands: both in one pass), HT = H^T (h, B), logits
    outT = W2 HT + b2 (k, B); one-hot operand rows into ops."""
    din, h, k, p, e = dims[0], dims[1], dims[2], dims[3], dims[4]
    Ab, Z, H, _, outT, W1T, _, _, HT = S2
    B = idx.shape[0]
    oW1 = p * e     # the embedding E (p, e) comes first; e = 0 without one
    ob1 = oW1 + h * din
    oW2 = ob1 + h
    ob2 = oW2 + k * h
    W1 = x[oW1:ob1].reshape(h, din)
    W2 = x[oW2:ob2].reshape(k, h)
    b1 = x[ob1:oW2]
    # forward: Z = A W1^T + b1 (B, h), H = phi(Z), logits outT = W2 H^T + b2
    transpose(W1T, W1)
    if hot is not None:     # one-hot operands: Z[b] = (W1T[a_b] + W1T[p + b_b]) + b1, H[b]
        one, zero = like(1.0, x), like(0.0, x)
        for b in range(B):
            a0 = pairs[idx[b], 0]
            a1 = p + pairs[idx[b], 1]
            ops[0, b] = a0
            ops[1, b] = a1
            za, zb, zr, hr = W1T[a0], W1T[a1], Z[b], H[b]
            for j in range(h):
                z = (za[j] + zb[j]) + b1[j]
                zr[j] = z
                hr[j] = phi(z, kind, one, zero)
    if A is not None:       # (explicit loops: a slice copy per row costs 10x more here)
        for b in range(B):
            src, dst = A[idx[b]], Ab[b]
            for i in range(din):
                dst[i] = src[i]
        first_layer(Ab, W1T, b1, Z, own)
        activate(Z, H, kind)
    if emb is not None:
        E = x[:oW1].reshape(p, e)
        for b in range(B):
            ea, eb, dst = E[pairs[idx[b], 0]], E[pairs[idx[b], 1]], Ab[b]
            for i in range(e):
                dst[i] = ea[i]
                dst[e + i] = eb[i]
        first_layer(Ab, W1T, b1, Z, own)
        activate(Z, H, kind)
    transpose(HT, H)
    product(W2, HT, outT, own)
    b2 = x[ob2:]
    for q in range(k):
        row, bq = outT[q], b2[q]
        for b in range(B):
            row[b] = row[b] + bq


@jit
def mlp_grad(x, g, idx, shift, kind, dims, A, y, pairs, cls, hot, emb, S2, S1, ops, own):
    """Mean minibatch gradient g (d,) at parameters x (d,) over the samples idx (B,), as the
    reference's `_evaluate` (`_net_args`: TeacherStudentMLP inputs A (n, d_in), labels
    y (n,) + shift (B,); ModularArithmeticMLP operands pairs (n, 2), classes cls (n,),
    one-hot inputs (hot) or a learned embedding (emb); the absent ones None, and Numba
    compiles only the present ones' branches).  dims = (d_in, h, k, p, e); kind the
    activation code; S2, S1, ops: `mlp_scratch`; own: literal True for the products of
    `kernels.gemm`, None for BLAS (`product`).  Layout of x and g as in
    `potentials.toynets` ([E], W1, b1, W2, b2).  Activations are sample-major (B, h), as the
    reference's, the logits class-major (k, B) (softmax and the loss head run along
    samples)."""
    din, h, k, p, e = dims[0], dims[1], dims[2], dims[3], dims[4]
    Ab, Z, H, G, outT, W1T, gW1T, dA, HT = S2
    mx, nrm = S1
    B = idx.shape[0]
    oW1 = p * e
    ob1 = oW1 + h * din
    oW2 = ob1 + h
    ob2 = oW2 + k * h
    W1 = x[oW1:ob1].reshape(h, din)
    W2 = x[oW2:ob2].reshape(k, h)
    mlp_forward_pass(x, idx, kind, dims, A, pairs, hot, emb, S2, ops, own)
    if y is not None:
        regression_dout(outT, y, idx, shift)
    if cls is not None:
        softmax_dout(outT, cls, idx, mx, nrm)
    # backward: outT is dL/dout now; G = dL/dH = dout W2 (B, h), dZ = G * phi'(Z)
    gb2 = g[ob2:]
    gb2[:] = 0.0
    for b in range(B):
        for q in range(k):
            gb2[q] = gb2[q] + outT[q, b]
    if y is not None:   # one output: gW2 = dout H, and G the outer product of dout and W2
        o, w, gw = outT[0], W2[0], g[oW2:ob2]
        gw[:] = 0.0
        for b in range(B):
            hr, gr, ob = H[b], G[b], o[b]
            for j in range(h):
                gw[j] = gw[j] + ob * hr[j]
                gr[j] = ob * w[j]
    if cls is not None:     # gW2 = dout H (k, h), and G = dout^T W2
        product(outT, H, g[oW2:ob2].reshape(k, h), own)
        product(outT.T, W2, G, own)
    gb1 = g[ob1:oW2]
    gb1[:] = 0.0
    if hot is not None:     # rows a_b and p + b_b of dW1^T collect dZ[b]; db1 = the sum of rows < p
        gW1T[:] = 0.0
        one, zero = like(1.0, x), like(0.0, x)
        for b in range(B):
            ra, rb, gr, zr, hr = gW1T[ops[0, b]], gW1T[ops[1, b]], G[b], Z[b], H[b]
            for j in range(h):
                v = gr[j] * phi_d1(zr[j], hr[j], kind, one, zero)
                ra[j] = ra[j] + v
                rb[j] = rb[j] + v
        for a in range(p):
            ra = gW1T[a]
            for j in range(h):
                gb1[j] = gb1[j] + ra[j]
        transpose(g[oW1:ob1].reshape(h, din), gW1T)
    if A is not None:
        first_layer_grad(G, Z, H, kind, Ab, gb1, g[oW1:ob1].reshape(h, din), own)
    if emb is not None:     # dE rows of the operands collect dA = dZ W1
        first_layer_grad(G, Z, H, kind, Ab, gb1, g[oW1:ob1].reshape(h, din), own)
        product(G, W1, dA, own)
        gE = g[:oW1].reshape(p, e)
        gE[:] = 0.0
        for b in range(B):
            ra, rb, ab = gE[pairs[idx[b], 0]], gE[pairs[idx[b], 1]], dA[b]
            for i in range(e):
                ra[i] = ra[i] + ab[i]
            for i in range(e):
                rb[i] = rb[i] + ab[e + i]


# ---------------------------------------------------------------- updates and the kernel (CPU)

@jit
def adamw_step(x, m, s, g, t, lr, coef, bound, nx, nm, ns):
    """One AdamW update of one replica (x, m, s, g (d,); coef as in `train_mlp`), the
    reference's: `adamw_update` with the bias corrections of step t, scalars in x's dtype
    (a1, a2 = 1 - beta1, 1 - beta2 cast from float64 as NumPy casts a Python float), one
    vectorized loop.  Writes x, m, s and returns True, or returns False with them untouched
    if a new value is non-finite or beyond `bound` (`bound_like`, in x's dtype).  nx, nm, ns
    (d,) are scratch."""
    b1, b2 = coef[2], coef[3]
    c1 = like(1.0 - math.pow(b1, t + 1), x)
    c2 = like(1.0 - math.pow(b2, t + 1), x)
    lr_, b1_, b2_ = like(lr, x), like(b1, x), like(b2, x)
    a1, a2 = like(1.0 - b1, x), like(1.0 - b2, x)
    eps, wd = like(coef[4], x), like(coef[1], x)
    good = True
    for i in range(x.shape[0]):
        xv, mv, sv = cpu.adamw_update(x[i], m[i], s[i], g[i], lr_, b1_, b2_, a1, a2, eps, wd, c1,
                                      c2)
        nx[i] = xv
        nm[i] = mv
        ns[i] = sv
        good = (good & cpu.within_bound(xv, bound) & cpu.within_bound(mv, bound)
                & cpu.within_bound(sv, bound))
    if good:
        for i in range(x.shape[0]):
            x[i] = nx[i]
            m[i] = nm[i]
            s[i] = ns[i]
    return good


@jit
def train_mlp(first, stride, x, v, m, s, dstep, t0, K, k0, k1, rep0, ls, ts, lsig, gsig, coef,
              batch, iid, subset, shuffled, bound, kind, dims, A, y, pairs, cls, hot, emb):
    """Steps t0 .. t0+K-1 of SGD (v the velocity; m, s None) or AdamW (m, s the moments; v
    None) on a toy net (kind, dims, A, y, pairs, cls, hot, emb: `mlp_grad`) for the live
    replica rows first, first + stride, ...  coef = (momentum, weight_decay, beta1, beta2,
    eps) float64; ls: schedule code of lr; SGD's noises: ts the temperature's code
    (`temperature_code`), lsig label noise and gsig gradient noise (`noise_level`), None
    when absent (always for AdamW); batch = B, or None for the full batch (samples 0 .. n-1
    every step: no sampling compiled); iid, subset, shuffled: `sampling_args`; bound: the divergence
    bound in x's dtype (`bound_like`).  Numba drops a branch `if a is not None` at compile
    time when a is an argument typed None (only then), so each net, dynamics, batch mode and
    set of noises compiles only its own code.  Runs without the GIL: the adapter starts one
    call per thread (a prange kernel around it took ~10 s more to compile)."""
    d = x.shape[1]
    n = 0
    if y is not None:
        n = y.shape[0]
    if cls is not None:
        n = cls.shape[0]
    B = n
    if batch is not None:
        B = batch
    idx, keys, perm, epoch, g, nx, nv, buf, shift, lbuf = sgd_scratch(x, n, B)
    if batch is None:
        for b in range(n):
            idx[b] = b
    S2, S1, ops = mlp_scratch(x, B, dims[0], dims[1], dims[2])
    ns = np.empty(d, x.dtype)
    for r in range(first, x.shape[0], stride):
        if dstep[r] >= 0:
            continue
        rep = np.uint64(rep0 + r)
        epoch = np.int64(-1)   # not the literal -1: that types a second minibatch_rows
        xr = x[r]
        for t in range(t0, t0 + K):
            if batch is not None:
                # full: `batch is None`, not a literal False (that types a second copy)
                perm, epoch = minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B,
                                             batch is None, iid, subset, shuffled)
            if lsig is not None:
                label_shifts(shift, t, k0, k1, rep, lsig, lbuf)
            mlp_grad(xr, g, idx, shift, kind, dims, A, y, pairs, cls, hot, emb, S2, S1, ops, True)
            ok = True
            if v is not None:
                ok = sgd_step(xr, v[r], g, t, k0, k1, rep, sched(ls, t), ts, coef[0], coef[1],
                              bound, buf, nx, nv, gsig)
            if m is not None:
                ok = adamw_step(xr, m[r], s[r], g, t, sched(ls, t), coef, bound, nx, nv, ns)
            if not ok:
                dstep[r] = t + 1
                break


def bound_like(bound: float, dt) -> np.floating:
    """The divergence bound in dtype dt, as the reference's test compares with it (NumPy
    casts the Python float to a float32 array's dtype, to nearest); beyond dt's range its
    largest finite value, so inf still diverges.  The kernel's tests then need no widening."""
    return np.dtype(dt).type(min(bound, float(np.finfo(dt).max)))


def _net_args(pot, dt) -> tuple:
    """(kind, dims, A, y, pairs, cls, hot, emb) of `mlp_grad` for a toy net, data in dtype dt:
    TeacherStudentMLP A, y its inputs and labels (pairs, cls, hot, emb None);
    ClassifierMLP A, cls its inputs and the classes it fits (y, pairs, hot, emb None);
    ModularArithmeticMLP pairs, cls its operands and classes (A, y None) and hot = True
    (one-hot inputs, emb None) or emb = True (a learned embedding, hot None)."""
    if isinstance(pot, TeacherStudentMLP):
        dims = np.array([pot.d_in, pot.hidden, 1, 0, 0], np.int64)
        return (pot.kind, dims, pot._cast("inputs", dt), pot._cast("labels", dt), None, None,
                None, None)
    if isinstance(pot, ClassifierMLP):
        dims = np.array([pot.d_in, pot.hidden, pot.classes, 0, 0], np.int64)
        return (pot.kind, dims, pot._cast("inputs", dt), None, None, pot.train_labels, None,
                None)
    e = pot.embed or 0
    dims = np.array([2 * (e or pot.p), pot.hidden, pot.p, pot.p, e], np.int64)
    return (pot.kind, dims, None, None, pot.train_pairs, pot.train_labels.astype(np.int64),
            None if e else True, True if e else None)


NETS = (TeacherStudentMLP, ModularArithmeticMLP, ClassifierMLP)


def _train(sim, t0, K, k0, k1):
    dyn, pot, st = sim.dynamics, sim.potential, sim.state
    dt = st["x"].dtype
    if isinstance(dyn, AdamW):
        v, m, s = None, st["m"], st["s"]
        coef = (0.0, dyn.weight_decay, dyn.beta1, dyn.beta2, dyn.eps)
        ts = lsig = gsig = None
        sampling = dyn.sampling
    else:
        v, m, s = st["v"], None, None
        coef = (dyn.momentum, dyn.weight_decay, 0.0, 0.0, 0.0)
        ts, lsig, gsig = (temperature_code(dyn.temperature), noise_level(dyn.label_noise),
                          noise_level(dyn.grad_noise))
        sampling = dyn.sampling
    args = (st["x"], v, m, s, sim.diverged_step, t0, K, k0, k1, sim.first_replica,
            schedule_code(dyn.lr), ts, lsig, gsig, np.array(coef, np.float64),
            None if dyn.batch_size is None else int(dyn.batch_size), *sampling_args(sampling),
            bound_like(sim.divergence_bound, dt)) + _net_args(pot, dt)
    T = min(numba.get_num_threads(), st["x"].shape[0])
    with one_blas_thread():
        if T == 1:
            train_mlp(0, 1, *args)
            return
        for f in [thread_pool().submit(train_mlp, i, T, *args) for i in range(T)]:
            f.result()


for _pot in NETS:
    for _dyn in (SGD, AdamW):
        register(_pot, _dyn, "numba")(_train)


# ---------------------------------------------------------------- generic drivers' hooks (CPU)
# Section owned by the generic drivers (`kernels.drivers`): the Langevin dynamics and MALA run
# them on the full-batch gradient of `mlp_grad` and the loss of `mlp_loss` above, replica by
# replica; recording energies use `mlp_loss` too.
from .drivers import FAMILIES, Hooks, family, run_blocks, thread_pool  # noqa: E402


@jit
def net_grad_block(xb, args):
    """Full-batch gradient (B, d) in xb's dtype of the rows xb; args: `_net_args` + (idx, shift),
    all samples and zero label shifts."""
    kind, dims, A, y, pairs, cls, hot, emb, idx, shift = args
    G = np.empty_like(xb)
    S2, S1, ops = mlp_scratch(xb, idx.shape[0], dims[0], dims[1], dims[2])
    for r in range(xb.shape[0]):
        mlp_grad(np.ascontiguousarray(xb[r]), G[r], idx, shift, kind, dims, A, y, pairs, cls, hot,
                 emb, S2, S1, ops, None)
    return G


@jit
def mlp_loss(x, idx, kind, dims, A, y, pairs, cls, hot, emb, S2, S1, ops):
    """Mean loss (float64) at parameters x (d,) over the samples idx (B,) (arguments as
    `mlp_grad`; products by BLAS), in the reference's arithmetic (`_head`): logits and
    residuals (squared error, y) or log-sum-exp minus the class logit (cross-entropy, cls) in
    x's dtype, then float64."""
    mlp_forward_pass(x, idx, kind, dims, A, pairs, hot, emb, S2, ops, None)
    outT = S2[4]
    B = idx.shape[0]
    total = 0.0
    if y is not None:   # 1/(2B) sum_b (out_b - y_b)^2, the residual in x's dtype
        o = outT[0]
        for b in range(B):
            r = np.float64(o[b] - y[idx[b]])
            total += r * r
        return 0.5 * (total / B)
    if cls is not None:     # per sample: log sum_q e^(out_q - max) - (out_c - max)
        mx, nrm = S1
        column_max(outT, mx)
        nrm[:] = 0.0
        for q in range(outT.shape[0]):
            row = outT[q]
            for b in range(B):
                nrm[b] = nrm[b] + exp_of(row[b] - mx[b])
        for b in range(B):
            total += np.float64(np.log(nrm[b]) - (outT[cls[idx[b]], b] - mx[b]))
    return total / B


@jit
def net_energy_block(xb, args):
    """Full training loss (B,) float64 of the rows xb (B, d), in xb's dtype's arithmetic as the
    reference's `energy`; args as `net_grad_block`."""
    kind, dims, A, y, pairs, cls, hot, emb, idx, shift = args
    u = np.empty(xb.shape[0])
    S2, S1, ops = mlp_scratch(xb, idx.shape[0], dims[0], dims[1], dims[2])
    for r in range(xb.shape[0]):
        u[r] = mlp_loss(np.ascontiguousarray(xb[r]), idx, kind, dims, A, y, pairs, cls, hot, emb,
                        S2, S1, ops)
    return u


def _hook_args(pot, dtype) -> tuple:
    return _net_args(pot, dtype) + (np.arange(pot.n_samples, dtype=np.int64),
                                    np.zeros(pot.n_samples, dtype))


# ---------------------------------------------------------------- record-time observables
# `Hooks.observables`: the nets' observables (`TeacherStudentMLP.observables`,
# `ModularArithmeticMLP.observables`) by the compiled forward pass, on float64 rows (the
# reference evaluates observables on float64 rows) and in float64 accumulation, parallel over
# replicas: the NumPy forward passes (np.tanh, per-replica products) took most of a record.

@jit
def class_hits(outT, cls, idx):
    """The number of samples b (columns of the logits outT (k, B)) whose first arg-max logit
    is their class cls[idx[b]] (as `np.argmax`); 0 without classes (cls None)."""
    hits = 0
    if cls is not None:
        for b in range(outT.shape[1]):
            c = cls[idx[b]]
            top = outT[c, b]
            ok = True
            for q in range(outT.shape[0]):
                if outT[q, b] > top or (q < c and outT[q, b] == top):
                    ok = False
            hits += ok
    return hits


_SCRATCH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pot -> {(d, B): free}


@jit
def metrics_scratch(d, B, dims):
    """`net_metrics`' scratch: a float64 row (d,) and `mlp_scratch` for B samples."""
    xr = np.empty(d)
    S2, S1, ops = mlp_scratch(xr, B, dims[0], dims[1], dims[2])
    return xr, S2, S1, ops


@jit
def net_metrics(x, out, args, scratch, lo, hi):
    """out[r] <- (mean loss, accuracy) float64 of rows r = lo..hi-1 of x on the samples of args
    (`_metric_args`), each row converted to float64 first; accuracy: the fraction of samples
    whose first arg-max logit is the class (`class_hits`; 0 for the regression net); scratch:
    `metrics_scratch`."""
    kind, dims, A, y, pairs, cls, hot, emb, idx, shift = args
    xr, S2, S1, ops = scratch
    d, B = x.shape[1], idx.shape[0]
    for r in range(lo, hi):
        for i in range(d):
            xr[i] = x[r, i]
        out[r, 0] = mlp_loss(xr, idx, kind, dims, A, y, pairs, cls, hot, emb, S2, S1, ops)
        out[r, 1] = class_hits(S2[4], cls, idx) / B


def metrics(pot, x: np.ndarray, out: np.ndarray, args: tuple) -> None:
    """`net_metrics` of the rows of x into out (M, 2), a block of rows per thread, each block
    with scratch kept per potential between records (a new ~1 MB each record was a fresh
    mapping, first touches at 15-35 us a page here: ~10% of W4's run)."""
    free = _SCRATCH.setdefault(pot, {}).setdefault((x.shape[1], args[8].shape[0]),
                                                   queue.SimpleQueue())

    def block(x, out, args, lo, hi):
        try:
            scratch = free.get_nowait()
        except queue.Empty:
            scratch = metrics_scratch(x.shape[1], args[8].shape[0], args[1])
        try:
            net_metrics(x, out, args, scratch, lo, hi)
        finally:
            free.put(scratch)
    run_blocks(block, x.shape[0], FAMILIES[type(pot)], x, out, args,
               rows=max(1, -(-x.shape[0] // numba.get_num_threads())))


def _metric_args(pot, name: str) -> tuple:
    """`net_metrics` args: a net's samples of set `name` ("train", "test"; "val": the
    regression net's or the classifier's validation set), in float64."""
    kind, dims, A, y, pairs, cls, hot, emb = _net_args(pot, np.float64)
    if name != "train" and isinstance(pot, TeacherStudentMLP):
        A, y = getattr(pot, f"{name}_inputs"), getattr(pot, f"{name}_labels")
    elif name != "train" and isinstance(pot, ClassifierMLP):
        A, cls = getattr(pot, f"{name}_inputs"), getattr(pot, f"{name}_labels")
    elif name == "test":
        pairs, cls = pot.test_pairs, pot.test_labels.astype(np.int64)
    n = y.shape[0] if isinstance(pot, TeacherStudentMLP) else cls.shape[0]
    return (kind, dims, A, y, pairs, cls, hot, emb, np.arange(n, dtype=np.int64), np.zeros(n))


# pot -> (weakref to x, weakref to the energy array, its copy, the training accuracy (M,)):
# the training set's pass of a record's energy, which a classifier's observables reuse
_TRAIN_PASS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def net_energy(pot):
    """(x (M, d), out (M,) float64 or None) -> the training loss of each row, by `net_metrics`
    (the records' observables compile it anyway; `net_energy_block` then compiles only for
    MALA): the values of `net_energy_block`, the same float64 rows through `mlp_loss`. The
    pass's accuracies are kept for `net_observables` of the same x and energy array."""
    args = _metric_args(pot, "train")

    def energy(x, out=None):
        x, M = np.ascontiguousarray(x), x.shape[0]
        res = np.empty((M, 2))
        metrics(pot, x, res, args)
        out = np.empty(M) if out is None else out
        out[:] = res[:, 0]
        _TRAIN_PASS[pot] = (weakref.ref(x), weakref.ref(out), res[:, 0].copy(), res[:, 1].copy())
        return out
    return energy


def _train_accuracy(pot, x: np.ndarray, energy: np.ndarray) -> np.ndarray | None:
    """The training accuracy (M,) from `net_energy`'s pass over x that returned `energy`, if
    that was the last pass for `pot` and `energy` still holds its values; else None (the
    observables' contract: `energy` is the energy of x)."""
    kept = _TRAIN_PASS.get(pot)
    if kept is None or kept[0]() is not x or kept[1]() is not energy \
            or not np.array_equal(kept[2], energy):
        return None
    return kept[3].copy()


def net_observables(pot):
    """x (M, d), energy (M,) -> the observables of `pot.observables(x, energy)`."""
    regression = isinstance(pot, TeacherStudentMLP)
    sets = {"test": _metric_args(pot, "test")}
    if getattr(pot, "n_val", 0):
        sets["val"] = _metric_args(pot, "val")
    if not regression:      # the regression net's training loss is the energy
        sets["train"] = _metric_args(pot, "train")

    def observables(x, energy):
        x, M = np.ascontiguousarray(x), x.shape[0]
        res = {"train_loss": np.array(energy, np.float64)} if regression else {}
        for name, args in sets.items():
            accuracy = _train_accuracy(pot, x, energy) if name == "train" else None
            if accuracy is not None:        # the record's energy pass computed this one
                res.update(train_loss=np.array(energy, np.float64), train_accuracy=accuracy)
                continue
            out = np.empty((M, 2))
            metrics(pot, x, out, args)
            res[f"{name}_loss"] = out[:, 0].copy()
            if not regression:
                res[f"{name}_accuracy"] = out[:, 1].copy()
        res["weight_norm"] = pot.weight_norm(x)
        return res
    return observables


for _pot in NETS:
    family(_pot, Hooks(net_grad_block, net_energy_block, _hook_args, blas=True,
                       observables=net_observables, energy=net_energy))


# ---------------------------------------------------------------- CUDA kernels (backend "cuda")
# TeacherStudentMLP and ModularArithmeticMLP (one-hot inputs or a learned embedding) x SGD,
# AdamW and the full-batch Langevin dynamics and MALA: one fused numba-cuda kernel, the net's
# head and the update rule compiled in.
# One block of NT = 32 W threads (W = `warps_of(hidden)` warps: one per 32 hidden units, up to
# `MAX_WARPS`) per replica runs many steps per launch; the replica's parameters stay on chip
# for the whole launch.  Lane l owns hidden units j = l, l + NT, ...:
# their W1 row, b1_j and W2[:, j] (K outputs: 1 for the teacher-student regression, p logits
# for modular arithmetic), and the optimizer's state of these (SGD: the velocity v; AdamW: the
# moments m, s), in per-thread arrays (registers); every lane keeps b2 (K,) and its state (the
# same values, computed redundantly).  A learned embedding E (p, e) (flat at the front of x):
# lane l owns its entries f = l, l + NT, .. in per-thread arrays as well, and E and W1 are
# mirrored in shared memory (E for the inputs, W1 for E's gradient).  Per step, with a block
# barrier between phases (`syncthreads`: the block's warps, and what the simulator has; no
# warp intrinsics), steps 2-5 once per tile of TB samples (`layout`: the largest tile whose
# block fits in shared memory; the gradient's sums carried across the tiles, so that the
# result does not depend on TB):
#
# 0. at an epoch's first step (and a launch's), with epoch sampling: the epoch's permutation,
#    sorted in shared memory: keys (PERMUTE word e n + i, i), unique, compared as pairs, so
#    their ascending order is the reference's stable argsort (a uint32 word and a uint16 index
#    in two arrays: 6 bytes a key), by a bitonic network over the power of two >= n
#    (lanes over compare-exchange pairs, a barrier per stage; n log^2 n / 64 per lane per
#    epoch); where the keys do not fit in shared memory beside the rest
#    (`permutes_in_kernel`), the generic path's row sort computes it between launches instead
#    (`DeviceRun.permutations`), a launch then running to the epoch's end;
# 1. the B sample indices of step t into shared memory, lanes over batch slots: i.i.d. draws
#    `bounded_index` of MINIBATCH word t B + b ("iid"; AdamW's replacement=True), slot
#    (t mod n/B) B + b of the epoch's permutation ("epoch"), Floyd's draws ("subset":
#    `bounded_index` of SUBSET word t B + k below n - B + k + 1 by lanes, then lane 0
#    replaces a draw already taken by n - B + k, as `dynamics.sgd.floyd_subset`), or b (full
#    batch);
# 2. the tile's input rows gathered into shared A (TB, d_in) (consecutive lanes read
#    consecutive entries of a row: coalesced; the dataset is shared by every replica and stays
#    in L1/L2; modular arithmetic: the one-hot rows [e_a; e_b], as the reference multiplies,
#    or with a learned embedding the rows [E_a; E_b] of the mirrored E, gathered again at
#    Heun's predictor);
# 3. forward, lanes over hidden units: z_bj = (sum_i A_bi W1_ji) + b1_j, kept in shared S
#    (TB, h + 1) (tanh: h = tanh z, since phi' = 1 - h^2 needs only h; relu, quadratic: z);
# 4. read-out and loss head, lanes over batch slots: out_bc = (sum_j phi_bj W2_cj) + b2_c (W2
#    and b2 mirrored in shared memory), then into shared dout_bc = (out_b - y_b) / B
#    (regression; SGD's label noise: y_b + s_l eps_b, eps_b the LABEL_NOISE normal at t B + b)
#    or (softmax(out_b)_c - [c = y_b]) / B (classes: the reference's max-shifted exp);
# 5. backward, lanes over hidden units, samples summed in order b = 0 .. B - 1 in scalar
#    accumulators: dz_bj = (sum_c dout_bc W2_cj) phi'_bj (written over column j of S), db1_j,
#    dW2_cj = sum_b dout_bc h_bj, then dW1_ji = sum_b dz_bj A_bi (samples outer where the
#    lane's parameters are in registers, `samples_outer`: per sample one dz_bj times the row
#    A[b], read in vector loads, d_in independent sums; else an entry at a time, its sum in
#    one register); db2 = sum_b dout_b on every lane (the embedding's sums over first and
#    second operands carried apart, added at the end, as Xa^T dA_a + Xb^T dA_b);
# 6. the update of every owned parameter by the rule compiled in (`update`): SGD's
#    `sgd_update` (dynamics/sgd.py) with its normal at the reference's stream position t d + p
#    (purpose NOISE, only when the temperature of step t is > 0; each Philox block once; SGD's
#    gradient noise: grad_noise times the GRAD_NOISE normal at t d + p added to the gradient),
#    AdamW's `adamw_update` (dynamics/adamw.py) with the bias corrections of step t (float64,
#    then the state's dtype; no noise), or the Langevin rules on the full batch (all n
#    samples in order, as SGD's full batch): `overdamped_lane` (x + (0 - eta g + sigma xi)) and
#    Leimkuhler-Matthews' `lm_update` (xi the sum of the NOISE normals at t d + p and
#    (t + 1) d + p, with sigma / 2), or BAOAB's closing B `baoab_last` (its B A O A,
#    `baoab_first` with the stored g and the NOISE normals at t d + p, ran before step 1, so
#    that steps 1-5 take the gradient at the new x; x before the step kept for a freeze), or
#    Heun's corrector (`overdamped_lane` with eta / 2 on the sum of the gradients at x and at
#    the predictor x~ = x + (0 - eta g + sigma xi): steps 3-5 run twice, the second time at
#    x~), all compiled for numba-cuda by `compile_steps`; the
#    divergence test `within_bound` of the new x and state, and a block vote
#    (`syncthreads_and`): a good step is committed, a bad one freezes the replica (dstep =
#    t + 1, its state untouched) and ends its launch.
#    MALA (state g, U(x), acceptance count): its proposal y = `overdamped_update`(x, g, eta,
#    sigma, xi) with the NOISE normals at t d + p is made before step 1 (x kept), steps 3-5
#    run at y, step 4 also writing each sample's loss in float64 (squared residual;
#    log-sum-exp minus the class logit, in the state's dtype, as `mlp_loss`), summed in sample
#    order; each lane sums `proposal_residual2` of the forward and backward moves over its
#    parameters (lane 0 also over b2) into shared memory, every lane adds the NT sums in lane
#    order (one decision for the block), the ACCEPT word of step t decides (`mala_log_alpha`,
#    `accept_uniform`, `mala_accept`), the new state (y, g(y), U(y), count + 1, or x, g, U,
#    count) is tested whole, as the reference tests it, and a block vote commits or freezes.
#
# The per-thread arrays are indexed only in loops of compile-time length, so that NVVM unrolls
# them and keeps parameters, optimizer states and gradients in registers (W4 and modular
# arithmetic at p = 7, hidden 16: SGD only its normals in local memory, AdamW nothing; a default
# test compiles the kernels to PTX and checks this; with SGD's gradient noise the gradients
# too). Up to `MAX_OWNED` = 128 parameters per lane run fused, in local memory where they do not
# fit in registers (the grokking scenario's default net, p = 23 and hidden 64: 70 per lane of
# two warps): L1-cached, and still one launch for thousands of steps where the generic path
# makes several array-code launches and allocations per step; there one-hot inputs are gathered
# (`gathers`: 2 terms per sample and unit in steps 3 and 5 instead of 2p). The new values are
# not buffered: the rule is evaluated once for the test and once more for the commit (the same
# operands, the same bits), so that four values per owned parameter are live (x, its two states,
# g), not seven.  A batch in one tile (NTB = 1) has its sample count nb made opaque to the
# compiler (bounded by n at run time, never binding): with nb a constant (W4: 32) LLVM
# unrolled steps 3 and 5 whole and ptxas spilled (W4 SGD float32: 255 registers, 1.7 KB of
# spill stores per thread; opaque: 164 registers, none; benchmarks/kernel_resources.py).  With
# several tiles it is left alone: there the unrolled tile loop spills less than the opaque one.
# Loops over samples, units and sort pairs with a run-time bound are `while` loops: numba
# lowers `range` through a general iterator (a 64-bit trip count and selects on every trip)
# that NVVM unrolls but cannot simplify, and keeps the index's negative-index fix-up; W4's
# dW1 loop took 77 instructions for 4 FMAs (from its SASS, `cuobjdump -sass`).  A `while`
# loop's index is a plain induction variable.  W4 SGD float32 from the SASS's loop bodies
# times their trip counts: about 16 600 instructions per step before, about 4 400 after
# (dW1 samples outer, `while` loops, the sort over pairs, the gather below), the same bits;
# the regression read-out (K = 1) is unrolled whole, 8 units a trip.  `range` stays where
# the `while` form spilled: the K sums of a softmax head (unrolled whole, in
# float64) and the input gather of step 2 (the grokking net's MALA kernel in float32), which
# indexes with unsigned integers instead (no fix-ups; numba adds them to signed indices
# only): 51 -> 25 instructions an entry, and W4 SGD float32 151 -> 128 registers; the sort's
# keys too (24 -> 18 a compare-exchange).
#
# Learning rate and temperature come from the schedules' codes per step (`schedule_value`,
# float64, cast to the state's dtype as the reference casts its Python scalars).  Shared memory
# per replica: (TB d_in + TB (h + 1) + K (h + 1) + TB K) items + 8 B bytes, at most 48 KiB (W4
# in float64: 13 KiB, untiled; a learned embedding adds the mirrors of E and W1).  Options the
# kernel does not run take the generic path (`accepts`): dtypes other than float32 and
# float64, blocks whose fixed part (indices, W2, b2, mirrors) leaves no room for a tile of one
# sample, more than `MAX_OWNED` parameters per lane, first-passage observers.  With a learned
# embedding, step 5 ends with E's gradient: dA = dZ W1 (lanes over (b, i), the units in order,
# over A), then entry (c, k) sums dA[b, k] over the samples whose first operand is c and
# dA[b, e + k] over those whose second is, as Xa^T dA_a + Xb^T dA_b.
# Results equal the reference to rounding (the sums are the reference's, in another
# order): float64 to ~1e-12 relative, float32 to its rounding; the same divergence flags; a
# replica's bits do not depend on the others.

cuda = None          # numba.cuda, set by `cuda_kernel` (the simulator swaps this global)
WARP = 32            # threads per warp; a block has `warps_of(hidden)` warps
MAX_WARPS = 8        # warps per block: lane l of the block owns units l, l + 32 W, ...
CALL_STEPS = 4096    # steps per launch with i.i.d. or full batches (results do not depend on it)
SHARED_BYTES = 48 * 1024   # static shared memory of a block
SHARED_SLACK = 256   # of it kept for unused arrays' 1-item placeholders and alignment padding
MAX_OWNED = 128      # parameters per lane (hidden units per lane x (d_in + 1 + K)) run fused
OPAQUE_BATCH = True  # a one-tile batch's sample count hidden from the compiler (see above;
                     # benchmarks/gpu_throughput.py measures W4 both ways)
REG_OWNED = 64       # beyond this many per lane (local memory), one-hot inputs are gathered
KEY_BYTES = 6        # shared memory per sort key: its PERMUTE word (uint32) and sample index
                     # (uint16: the keys that fit in shared memory number far below 2^16)
EPOCH, IID, SUBSET, FULL = (SAMPLING_CODES["epoch"], SAMPLING_CODES["iid"],
                            SAMPLING_CODES["subset"], -1)
TANH, RELU = ACTIVATIONS["tanh"], ACTIVATIONS["relu"]
OPTIMIZER_STATE = {SGD: ("v",), AdamW: ("m", "s"), OverdampedLangevin: (),
                   LeimkuhlerMatthews: (), UnderdampedLangevin: ("p", "g"), Heun: (),
                   MALA: ("g",)}
RULE_CODES = {SGD: 0, AdamW: 1, OverdampedLangevin: 2, LeimkuhlerMatthews: 3,
              UnderdampedLangevin: 4, Heun: 5, MALA: 6}   # (state arrays besides x; codes)


def net_sizes(pot) -> tuple[int, int, int]:
    """(d_in, hidden, classes) of a toy net: classes 0 for TeacherStudentMLP's one regression
    output, p for ModularArithmeticMLP's logits (d_in = 2p with one-hot inputs, 2e with a
    learned embedding of width e), K for ClassifierMLP's."""
    if isinstance(pot, ModularArithmeticMLP):
        return 2 * (pot.p if pot.embed is None else pot.embed), pot.hidden, pot.p
    if isinstance(pot, ClassifierMLP):
        return pot.d_in, pot.hidden, pot.classes
    return pot.d_in, pot.hidden, 0


def embed_of(pot) -> int:
    """The width e of a learned embedding E (p, e); 0 for one-hot or real inputs."""
    return int(getattr(pot, "embed", None) or 0)


def warps_of(hidden: int) -> int:
    """Warps per block (one block per replica): one per 32 hidden units, up to `MAX_WARPS`."""
    return max(1, min(MAX_WARPS, -(-int(hidden) // WARP)))


def shared_bytes(d_in: int, hidden: int, B: int, itemsize: int, classes: int = 0,
                 mala: bool = False, embed: int = 0, tile: int | None = None,
                 warps: int = 1, gather: bool = False) -> int:
    """Shared memory of one replica's block (bytes) for B samples per step taken `tile` at a
    time (None: all B): a tile's inputs A (tile, d_in), activations (tile, hidden + 1) and
    dout (tile, K), W2 (K, hidden), b2 (K,) in the state's dtype (K = max(classes, 1)
    outputs), the indices (B,) int64; MALA: the samples' losses (B,) and the lanes' sums of
    the proposal's residuals (2, 32 warps) in float64; a learned embedding of width `embed`:
    E (classes, embed) and W1 (hidden, d_in) mirrored; `gather`: one row of inputs A
    (`gathers`), not a tile's."""
    K = max(classes, 1)
    tile = B if tile is None else tile
    mirrors = classes * embed + hidden * d_in if embed else 0
    return itemsize * (tile * ((0 if gather else d_in) + hidden + 1 + K) + K * (hidden + 1) +
                       mirrors + (d_in if gather else 0)) + 8 * B + \
        (8 * (B + 2 * WARP * warps) if mala else 0)


def tile_of(d_in: int, hidden: int, B: int, itemsize: int, classes: int = 0,
            mala: bool = False, embed: int = 0, keys: int = 0, gather: bool = False) -> int:
    """Samples per tile: the most, up to B, whose block fits in `SHARED_BYTES` less
    `SHARED_SLACK` beside `keys` sort keys (`KEY_BYTES` each); 0 where not even one fits."""
    def block(tile):
        return shared_bytes(d_in, hidden, B, itemsize, classes, mala, embed, tile,
                            warps_of(hidden), gather)
    fixed = block(0) + KEY_BYTES * keys
    return max(0, min(int(B), (SHARED_BYTES - SHARED_SLACK - fixed) // (block(1) - block(0))))


def owned(pot) -> int:
    """Parameters a lane owns: its hidden units' (W1 row, b1_j, W2[:, j]) and its share of a
    learned embedding's entries."""
    d_in, hidden, classes = net_sizes(pot)
    lanes = WARP * warps_of(hidden)
    return -(-hidden // lanes) * (d_in + 1 + max(classes, 1)) + \
        -(-classes * embed_of(pot) // lanes)


def gathers(pot) -> bool:
    """Whether the kernel gathers a one-hot net's inputs (z = (W1[j, a] + W1[j, p + b]) + b1,
    dz added into dW1[j, a] and dW1[j, p + b], as the CPU kernel does) instead of multiplying
    the one-hot rows: where a lane's parameters are in local memory anyway (more than
    `REG_OWNED`); the sums are the dense ones without their zero terms, so the bits agree."""
    return isinstance(pot, ModularArithmeticMLP) and pot.embed is None and \
        owned(pot) > REG_OWNED


def samples_outer(pot) -> bool:
    """Whether the kernel sums dW1 samples-outer (per sample, one dz_bj times the row A[b]:
    `d_in` independent sums, A read in vector loads) rather than one entry at a time: where a
    lane's parameters are in registers (at most `REG_OWNED`); in local memory, each term would
    load and store its sum.  The same sums in the same order either way."""
    return owned(pot) <= REG_OWNED


def batch_of(sim) -> int:
    """Samples per step: the batch size, or n for full batches (the Langevin dynamics)."""
    B = getattr(sim.dynamics, "batch_size", None)
    return sim.potential.n_samples if B is None else int(B)


def mode_of(dyn) -> int:
    """The kernel's sampling code of the dynamics: FULL (full batch: SGD's or AdamW's without
    a batch size, the Langevin dynamics), IID, EPOCH or SUBSET (SGD's and AdamW's
    `sampling`)."""
    if getattr(dyn, "batch_size", None) is None:
        return FULL
    return {"iid": IID, "epoch": EPOCH, "subset": SUBSET}[dyn.sampling]


def noises(dyn) -> tuple[bool, bool]:
    """(gradient noise, label noise) of the dynamics: SGD's grad_noise > 0, label_noise > 0."""
    if not isinstance(dyn, SGD):
        return False, False
    return dyn.grad_noise > 0, dyn.label_noise > 0


def sort_slots(n: int) -> int:
    """Keys sorted in shared memory for an epoch's permutation of n samples: the power of two
    >= n (the bitonic network's width)."""
    return 1 << max(0, int(n) - 1).bit_length()


def layout(sim) -> tuple[int, int, bool]:
    """(warps per block, samples per tile, whether the kernel sorts the epochs' permutations
    itself) of `sim`'s fused kernel: the sort keys go in shared memory (epoch sampling) only
    where they leave the tile as large as without them; else the device's row sort computes
    each epoch's permutations between launches.  A tile of 0: the kernel does not run it."""
    d_in, hidden, classes = net_sizes(sim.potential)
    shape = (d_in, hidden, batch_of(sim), sim.dtype.itemsize, classes,
             isinstance(sim.dynamics, MALA), embed_of(sim.potential))
    gather = gathers(sim.potential)
    tile = tile_of(*shape, gather=gather)
    inside = mode_of(sim.dynamics) == EPOCH and \
        tile_of(*shape, keys=sort_slots(sim.potential.n_samples), gather=gather) == tile > 0
    return warps_of(hidden), tile, inside


def accepts(sim) -> bool:
    """Whether the fused kernel runs `sim` (else the generic path does): float32 / float64,
    at most `MAX_OWNED` parameters per lane (`owned`), and room in shared memory for the
    block's fixed part and a tile of at least one sample (`layout`)."""
    pot = sim.potential
    if pot.constrained or sim.dtype not in (np.float32, np.float64):
        return False
    return owned(pot) <= MAX_OWNED and layout(sim)[1] > 0


def permutes_in_kernel(sim) -> bool:
    """Whether the kernel computes the epochs' permutations itself (epoch sampling, and the
    sort keys fit in shared memory beside the rest); else the device's row sort does, once
    per epoch, between launches."""
    return layout(sim)[2]


def cuda_kernel(f32: bool, d_in: int, hidden: int, B: int, rule=SGD, classes: int = 0,
                grad_noise: bool = False, label_noise: bool = False, subset: bool = False,
                permute: int = 0, embed: int = 0, warps: int = 1, tile: int = 0,
                gather: bool = False, opaque: bool = True, outer: bool = True):
    """The fused kernel of the update rule of `rule` (a class of RULE_CODES: SGD, AdamW, or
    the full-batch OverdampedLangevin, LeimkuhlerMatthews, UnderdampedLangevin, Heun or
    MALA) for float32
    (f32) or float64 states of a net (d_in, hidden) with a regression output (classes 0) or
    a softmax over `classes` logits, B samples per step (drawn by Floyd's algorithm when
    `subset`; with `permute` = n > 0, epoch sampling with each epoch's permutation of the n
    samples computed in the kernel), SGD's gradient and label noise compiled in when asked,
    with `embed` = e > 0 a learned embedding E (classes, e) (d_in = 2e; the inputs are then
    the samples' operand pairs), for blocks of `warps` warps, the batch's samples taken `tile`
    at a time (0: all B at once), with `gather` one-hot inputs given as the operand pairs
    (n, 2) and gathered (`gathers`), with `opaque` the sample count of a batch in one tile
    hidden from the compiler (`OPAQUE_BATCH`), with `outer` dW1's sums samples-outer
    (`samples_outer`), compiled on first use (cached)."""
    return _cuda_kernel(bool(f32), int(d_in), int(hidden), int(B), int(classes),
                        RULE_CODES[rule], bool(grad_noise), bool(label_noise), bool(subset),
                        int(permute), int(embed), WARP * int(warps), int(tile) or int(B),
                        bool(gather), bool(opaque), bool(outer))


def kernel_of(sim):
    """The fused kernel `_train_toynet_cuda` launches for `sim` (which `accepts` takes), one
    block of `WARP * layout(sim)[0]` threads per replica; its arguments' types are
    `cuda_signature(sim)`."""
    pot, dyn = sim.potential, sim.dynamics
    d_in, hidden, classes = net_sizes(pot)
    warps, tile, inside = layout(sim)
    return cuda_kernel(sim.dtype == np.float32, d_in, hidden, batch_of(sim), type(dyn),
                       classes, *noises(dyn), mode_of(dyn) == SUBSET,
                       pot.n_samples if inside else 0, embed_of(pot), warps, tile,
                       gathers(pot), OPAQUE_BATCH, samples_outer(pot))


def cuda_signature(sim) -> tuple:
    """The numba types of the arguments `_train_toynet_cuda` launches `kernel_of(sim)` with
    (`launch_types`) -- for compiling it ahead of a launch (`numba.cuda.compile_ptx`)."""
    _, _, classes = net_sizes(sim.potential)
    return launch_types(sim.dtype == np.float32, classes,
                        embed_of(sim.potential) > 0 or gathers(sim.potential))


def launch_types(f32: bool, classes: int = 0, pairs: bool = False) -> tuple:
    """The numba types of a `cuda_kernel`'s arguments: the state's and optimizer's arrays
    (M, P), dstep, the step range and Philox keys, the schedules' codes, q0..q3 and the
    bound, the inputs (n, d_in) in the state's dtype or, with `pairs` (a learned embedding,
    gathered one-hot inputs), the operand pairs (n, 2) int64, the labels (the state's dtype;
    with classes: int64), the epoch permutations, the sampling codes, MALA's U and
    acceptance counts (float64)."""
    from numba import float32, float64, int64, uint64
    ft = float32 if f32 else float64
    W, I1, I2, F1 = ft[:, ::1], int64[::1], int64[:, ::1], float64[::1]
    return (W, W, W, I1, int64, int64, uint64, uint64, uint64, F1, F1) + (float64,) * 5 + \
        (I2 if pairs else W, I1 if classes else ft[::1], I2, int64, int64, int64, F1, F1)


@functools.lru_cache(maxsize=None)
def _cuda_kernel(f32, DIN, H, B, CLASSES, RULE, GN, LN, SUB, NS, EMB, NT, TB, GATHER, OPQ,
                 SO):
    global cuda
    from .. import rng
    from ..backends import cuda_kernels as ck
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    dev = compile_steps(sys.modules[__name__], cuda.jit(device=True), rt.primitives())
    bits = ck.device_rng()
    bn, bw, bi = ck._normals_fn(f32), bits.block_words, bits.bounded_index
    pick = ck.helpers()[0]
    draw = ck.cached_draws(f32)[0]       # normals with a cached Philox block
    bound_of = ck.state_bound(f32)
    sched, noise_scale, ok_ = dev.schedule_value, dev.noise_scale, dev.within_bound
    sgd_update, adamw_update = dev.sgd_update, dev.adamw_update
    od_lane, lm_update = dev.overdamped_lane, dev.lm_update
    coeffs, first, last = dev.baoab_coeffs, dev.baoab_first, dev.baoab_last
    ADAM, OD, LM = RULE == RULE_CODES[AdamW], RULE == RULE_CODES[OverdampedLangevin], \
        RULE == RULE_CODES[LeimkuhlerMatthews]
    MH = RULE == RULE_CODES[MALA]        # a: the gradient at x; x kept while y is tried
    od_update, residual2, log_alpha, uniform, accept = (
        dev.overdamped_update, dev.proposal_residual2, dev.mala_log_alpha, dev.accept_uniform,
        dev.mala_accept)
    BA = RULE == RULE_CODES[UnderdampedLangevin]   # BAOAB: a = p, b = g
    HEUN = RULE == RULE_CODES[Heun]      # a: the gradient at x (g at the predictor in G)
    LANGEVIN = OD or LM                  # no operand a
    NOSTATE = LANGEVIN or HEUN           # no state arrays besides x
    NOISE, MINIBATCH, GNOISE = np.uint64(rng.NOISE), np.uint64(rng.MINIBATCH), np.uint64(
        rng.GRAD_NOISE)
    LABEL, SUBSET_, ACCEPT = (np.uint64(rng.LABEL_NOISE), np.uint64(rng.SUBSET),
                              np.uint64(rng.ACCEPT))
    PERMUTE, LAST_WORD, LAST_INDEX = np.uint64(rng.PERMUTE), np.uint32(0xFFFFFFFF), \
        np.uint16(0xFFFF)
    NP = sort_slots(NS) if NS else 1        # the epoch's sort keys (NS = 0: perm from the host)
    ftype = np.float32 if f32 else np.float64
    zero, one, two, fB = ftype(0), ftype(1), ftype(2), ftype(B)
    KO = max(CLASSES, 1)                 # outputs
    E = DIN + 1 + KO                     # parameters per hidden unit: W1 row, b1_j, W2[:, j]
    NTB = -(-B // TB)                    # NT threads per block (one per replica), NTB tiles
    HPL = -(-H // NT)                    # hidden units per lane
    SPL = -(-B // NT)                    # batch slots per lane
    TPL = -(-TB // NT)                   # a tile's slots per lane
    NPL = HPL * E
    NA, NA2 = (1, 1) if LANGEVIN else (NPL, KO)  # SGD's v, AdamW's m (Langevin: none)
    NB, NB2 = (NPL, KO) if ADAM or BA else (1, 1)   # AdamW's s, BAOAB's g (SGD: none)
    N0, N02 = (NPL, KO) if BA or HEUN or MH else (1, 1)   # x before the step (BAOAB: a
    LB, RW = (B, NT) if MH else (1, 1)    # freeze's); MALA's sample losses, lanes' residuals
    NX, NX2 = (1, 1) if ADAM else (NPL, KO)      # the normals (AdamW: none)
    HP = H + 1                           # activation rows padded: step 4 reads them row-wise
    DU = np.uint64(DIN)
    PE = KO * EMB                        # a learned embedding's entries E (p, e), flat at 0
    EPL = -(-PE // NT)                   # entries per lane (lane l owns f = l, l + NT, ..)
    NQ, NEM, NW1 = max(EPL, 1), max(PE, 1), H * DIN if EMB else 1
    D = PE + H * DIN + H + KO * H + KO
    O2 = D - KO                          # flat index of b2[0]

    @cuda.jit(device=True)
    def cast(v):
        return ftype(v)

    @cuda.jit(device=True)
    def slot(j, k):
        """Flat parameter index of entry k of hidden unit j ([W1 row, b1_j, W2[:, j]])."""
        if k < DIN:
            return PE + j * DIN + k
        if k == DIN:
            return PE + H * DIN + j
        return PE + H * DIN + H + (k - DIN - 1) * H + j

    @cuda.jit(device=True)
    def mirror(P, q, j, W2, W1M):
        """Unit j's (the lane's q-th) W2 column into shared W2, and with a learned embedding
        its W1 row into shared W1M (the embedding's gradient needs every unit's row)."""
        for c in range(KO):
            W2[c, j] = P[q * E + DIN + 1 + c]
        if EMB:
            for i in range(DIN):
                W1M[j * DIN + i] = P[q * E + i]

    @cuda.jit(device=True)
    def stored(z, kind):
        """What S keeps of a pre-activation z: tanh z (tanh), z (relu, quadratic)."""
        if kind == TANH:
            return cast(math.tanh(z))
        return z

    @cuda.jit(device=True)
    def unit(s, kind):
        """(phi(z), phi'(z)) from the stored value s, as `potentials.toynets.act`, `act_d1`."""
        if kind == TANH:
            return s, one - s * s
        if kind == RELU:
            if s > zero:
                return s * one, one
            return s * zero, zero
        return s * s, two * s

    @cuda.jit(device=True)
    def step_normals(XI, XI2, QXI, lane, t, k0, k1, rep):
        """XI, XI2, QXI: the NOISE normals of step t at t d + p of the lane's parameters, of
        b2 and of the lane's embedding entries (each Philox block once), in a loop of their
        own (the draws keep NVVM from unrolling the loop they are in: what that loop writes
        would go to local memory)."""
        cz = np.int64(-1)
        z0 = z1 = z2 = z3 = zero
        for q in range(EPL):
            f = lane + NT * q
            if f < PE:
                QXI[q], cz, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, np.int64(t) * D + f, cz,
                                                  z0, z1, z2, z3)
        for q in range(HPL):
            j = lane + NT * q
            if j < H:
                for k in range(E):
                    XI[q * E + k], cz, z0, z1, z2, z3 = draw(
                        k0, k1, NOISE, rep, np.int64(t) * D + slot(j, k), cz, z0, z1, z2, z3)
        for c in range(KO):
            XI2[c], cz, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, np.int64(t) * D + O2 + c, cz,
                                              z0, z1, z2, z3)

    @cuda.jit(device=True)
    def copy_owned(dst, dst2, dstq, src, src2, srcq):
        """A lane's values of its units, of b2 and of its embedding entries (src, src2, srcq)
        copied into dst, dst2, dstq: Heun's gradient at x kept for the corrector, x put back
        from X0 (Heun's corrector, BAOAB's frozen step); MALA's g(y) kept on acceptance."""
        for i in range(NPL):
            dst[i] = src[i]
        for c in range(KO):
            dst2[c] = src2[c]
        for i in range(NQ):
            dstq[i] = srcq[i]

    @cuda.jit(device=True)
    def propose(P, P2, X0, X02, Gs, Gs2, XI, XI2, W2, B2, W1M, Q, Q0, QGs, QXI, EM, lane, se,
                sp, heun):
        """x kept in X0, X02 (Q0); P, P2 and the embedding entries Q (and their mirrors W2,
        B2, W1M, EM) moved to the overdamped step from x with gradient Gs, Gs2 (QGs) and the
        normals XI, XI2 (QXI): Heun's predictor `overdamped_lane` (x + (0 - eta g + sigma
        xi)), MALA's proposal `overdamped_update` (as each reference computes it)."""
        for q in range(EPL):
            f = lane + NT * q
            if f < PE:
                EM[f] = move_at(Q, Q0, QGs, QXI, q, se, sp, heun)
        for q in range(HPL):
            j = lane + NT * q
            if j < H:
                for k in range(E):
                    move_at(P, X0, Gs, XI, q * E + k, se, sp, heun)
                mirror(P, q, j, W2, W1M)
        for c in range(KO):
            B2[c] = move_at(P2, X02, Gs2, XI2, c, se, sp, heun)

    @cuda.jit(device=True)
    def move_at(Pv, X0v, Gv, XIv, i, se, sp, heun):
        """Entry i of one group of owned values: x kept in X0v[i], Pv[i] moved by `propose`'s
        step (Heun's `overdamped_lane`, MALA's `overdamped_update`); returns the new value."""
        X0v[i] = Pv[i]
        if heun:
            Pv[i] = od_lane(Pv[i], Gv[i], XIv[i], se, sp, zero)
        else:
            Pv[i] = od_update(Pv[i], Gv[i], se, sp, XIv[i])
        return Pv[i]

    @cuda.jit(device=True)
    def update(x, a, b, g, z, h, co):
        """The rule compiled in, on one parameter x with gradient g and state a, b (SGD: v and
        an unused 0; AdamW: m, s; Langevin: two unused 0s): the new (x, a, b).  h: the
        dynamics' coefficients in the state's dtype (SGD: momentum, weight decay; AdamW: beta1,
        beta2, eps, weight decay, 1 - beta1, 1 - beta2); co: step t's (lr, sigma, c1, c2) (SGD,
        overdamped Langevin: noise scale sigma with the normal z; Leimkuhler-Matthews: sigma / 2
        with z the sum of steps t's and t + 1's normals; AdamW: bias corrections c1, c2; BAOAB:
        c1 = eta / 2, with x = x' and a = p' after B A O A and g the gradient at x': the
        closing B, (x', p' - (eta / 2) g, g); Heun: c1 = eta / 2, a the gradient at x and g
        the gradient at the predictor: the corrector)."""
        if BA:
            return x, last(a, g, co[2]), g
        if HEUN:                         # x + (0 - (eta / 2)(g + g~) + sigma xi)
            return od_lane(x, a + g, z, co[2], co[1], zero), zero, b
        if OD:
            return od_lane(x, g, z, co[0], co[1], zero), a, b
        if LM:                           # (xi_t + xi_t+1) summed as the reference sums them
            return x + lm_update(zero, g, co[0], co[1], z, zero), a, b
        if ADAM:
            return adamw_update(x, a, b, g, co[0], h[0], h[1], h[4], h[5], h[2], h[3], co[2],
                                co[3])
        xn, vn = sgd_update(x, a, g, co[0], h[0], h[1], co[1], z)
        return xn, vn, b

    @cuda.jit(device=True)
    def rule_at(Pv, Sav, Sbv, Gv, XIv, i, h, co, noisy):
        """`update` of parameter i of one group of owned values (the units', b2's or the
        embedding's: x Pv, states Sav, Sbv, gradient Gv, normals XIv), its operands as the
        rule takes them (a: BAOAB's p' in XIv, none for the other Langevin rules; b: AdamW's s,
        BAOAB's g)."""
        ai = XIv[i] if BA else (zero if LANGEVIN else Sav[i])
        return update(Pv[i], ai, Sbv[i] if ADAM or BA else zero, Gv[i],
                      XIv[i] if noisy else zero, h, co)

    @cuda.jit(device=True)
    def rule_ok(Pv, Sav, Sbv, Gv, XIv, i, h, co, noisy, bound):
        """Whether `rule_at`'s new values pass the divergence test (not kept)."""
        xn, an, bn_ = rule_at(Pv, Sav, Sbv, Gv, XIv, i, h, co, noisy)
        return ok_(xn, bound) and ok_(an, bound) and ok_(bn_, bound)

    @cuda.jit(device=True)
    def rule_commit(Pv, Sav, Sbv, Gv, XIv, i, h, co, noisy):
        """`rule_at` again, its values committed into Pv, Sav, Sbv; returns the new x."""
        xn, an, bn_ = rule_at(Pv, Sav, Sbv, Gv, XIv, i, h, co, noisy)
        Pv[i] = xn
        if not NOSTATE:
            Sav[i] = an
        if ADAM or BA:
            Sbv[i] = bn_
        return xn

    @cuda.jit
    def kernel(x, a, b, dstep, t0, K, k0, k1, rep0, es, ts, q0, q1, q2, q3, bound, inputs,
               labels, perm, per_epoch, mode, kind, ux, nacc):
        """Steps t0 .. t0+K-1 of replica blockIdx.x: x (M, D) parameters, a, b (M, D) the
        rule's state (SGD: v and an unused (0, D); AdamW: m, s); es, ts schedule codes of lr
        and temperature (AdamW: ts unused); q0..q3 float64 (SGD: momentum, weight decay,
        grad_noise, label_noise; AdamW: beta1, beta2, eps, weight decay); inputs (n, d_in),
        labels (n,) (the targets, or the classes as int64); perm (M, n) the epoch's
        permutations (EPOCH), per_epoch = n // B; mode the sampling code; kind the
        activation; ux, nacc (M,) float64: MALA's U(x) and accepted proposals (else unused)."""
        r = cuda.blockIdx.x
        lane = cuda.threadIdx.x
        if dstep[r] >= 0:                 # frozen before this launch (uniform in the block)
            return
        A = cuda.shared.array((1 if GATHER else TB, DIN), ftype)   # a tile's inputs,
        S = cuda.shared.array((TB, HP), ftype)            # activations, dout
        W2 = cuda.shared.array((KO, H), ftype)
        B2 = cuda.shared.array(KO, ftype)
        dout = cuda.shared.array((TB, KO), ftype)
        idx = cuda.shared.array(B, np.int64)
        kw = cuda.shared.array(NP, np.uint32)    # the sort keys' words
        ki = cuda.shared.array(NP, np.uint16)    # and sample indices (`KEY_BYTES`)
        EM = cuda.shared.array(NEM, ftype)       # a learned embedding E (p, e), flat
        W1M = cuda.shared.array(NW1, ftype)      # and W1 (h, d_in), flat, mirrored
        Lb = cuda.shared.array(LB, np.float64)   # MALA: the samples' losses at y
        R = cuda.shared.array((2, RW), np.float64)   # MALA: the lanes' residual sums
        P = cuda.local.array(NPL, ftype)    # owned parameters, their states a and b, gradient,
        Sa = cuda.local.array(NA, ftype)    # normals
        Sb = cuda.local.array(NB, ftype)
        G = cuda.local.array(NPL, ftype)
        XI = cuda.local.array(NX, ftype)
        P2 = cuda.local.array(KO, ftype)    # the same for b2
        Sa2 = cuda.local.array(NA2, ftype)
        Sb2 = cuda.local.array(NB2, ftype)
        G2 = cuda.local.array(KO, ftype)
        XI2 = cuda.local.array(NX2, ftype)
        X0 = cuda.local.array(N0, ftype)
        X02 = cuda.local.array(N02, ftype)
        Q = cuda.local.array(NQ, ftype)     # the same for the lane's embedding entries
        Qa = cuda.local.array(NQ, ftype)
        Qb = cuda.local.array(NQ, ftype)
        QG = cuda.local.array(NQ, ftype)
        QXI = cuda.local.array(NQ, ftype)
        Q0 = cuda.local.array(NQ, ftype)
        QGb = cuda.local.array(NQ, ftype)   # E's gradient from the second operands
        for q in range(HPL):
            j = lane + NT * q
            if j < H:
                for k in range(E):
                    P[q * E + k] = x[r, slot(j, k)]
                    if not NOSTATE:
                        Sa[q * E + k] = a[r, slot(j, k)]
                    if ADAM or BA:
                        Sb[q * E + k] = b[r, slot(j, k)]
                mirror(P, q, j, W2, W1M)
        for c in range(KO):
            P2[c] = x[r, O2 + c]
            if not NOSTATE:
                Sa2[c] = a[r, O2 + c]
            if ADAM or BA:
                Sb2[c] = b[r, O2 + c]
            B2[c] = P2[c]
        for q in range(EPL):
            f = lane + NT * q
            if f < PE:
                Q[q] = x[r, f]
                if not NOSTATE:
                    Qa[q] = a[r, f]
                if ADAM or BA:
                    Qb[q] = b[r, f]
                EM[f] = Q[q]
        h = (cast(q0), cast(q1), cast(q2), cast(q3), cast(1.0 - q0), cast(1.0 - q1))
        rep = rep0 + np.uint64(r)
        ur = ux[r] if MH else 0.0         # MALA's U(x) and acceptance count (every lane)
        ar = nacc[r] if MH else 0.0
        cuda.syncthreads()
        ep = t0 % per_epoch - 1 if NS else 0   # t's slot in its epoch, t mod n/B, counted where
        for t in range(t0, t0 + K):       # the kernel sorts (a run-time 64-bit modulo is a call)
            if NS:
                ep = ep + 1 if ep + 1 < per_epoch else 0
            half = zero                   # BAOAB's and Heun's eta / 2
            if MH:                        # 0. MALA's proposal y = x - eta g + sigma xi into P
                eta = sched(int(es[0]), es[1], es[2], es[3], t)   # (x kept in X0), with the
                T = sched(int(ts[0]), ts[1], ts[2], ts[3], t)     # NOISE normals at t d + p
                se, sp = cast(eta), cast(noise_scale(eta, T))
                step_normals(XI, XI2, QXI, lane, t, k0, k1, rep)
                propose(P, P2, X0, X02, Sa, Sa2, XI, XI2, W2, B2, W1M, Q, Q0, Qa, QXI, EM, lane, se,
                        sp, False)
                cuda.syncthreads()
            if BA:                        # 0. BAOAB's B A O A with the stored g: x' into P
                eta = sched(int(es[0]), es[1], es[2], es[3], t)   # (the old x kept), p' into
                T = sched(int(ts[0]), ts[1], ts[2], ts[3], t)     # XI, for the gradient at x'
                c1, c2 = coeffs(eta, q0, T, q1)
                half, im, s1, s2 = cast(0.5 * eta), cast(1.0 / q1), cast(c1), cast(c2)
                step_normals(XI, XI2, QXI, lane, t, k0, k1, rep)   # first, in a loop of their own
                for q in range(HPL):
                    j = lane + NT * q
                    if j < H:
                        for k in range(E):
                            i = q * E + k
                            xv, pv = first(P[i], Sa[i], Sb[i], half, im, s1, s2, XI[i])
                            X0[i] = P[i]
                            P[i] = xv
                            XI[i] = pv
                        mirror(P, q, j, W2, W1M)
                for c in range(KO):
                    xv, pv = first(P2[c], Sa2[c], Sb2[c], half, im, s1, s2, XI2[c])
                    X02[c] = P2[c]
                    P2[c] = xv
                    XI2[c] = pv
                    B2[c] = xv
                for q in range(EPL):
                    f = lane + NT * q
                    if f < PE:
                        xv, pv = first(Q[q], Qa[q], Qb[q], half, im, s1, s2, QXI[q])
                        Q0[q] = Q[q]
                        Q[q] = xv
                        QXI[q] = pv
                        EM[f] = xv
                cuda.syncthreads()
            if NS and (t == t0 or ep == 0):   # 0. the epoch's permutation
                epoch = np.int64(t // per_epoch)
                for i in range(lane, NP, NT):     # keys (word, i): unique, so their
                    wd, ix = LAST_WORD, LAST_INDEX   # order is the stable argsort's (the
                    if i < NS:                       # padding's (2^32 - 1, 2^16 - 1) last)
                        n = epoch * NS + i
                        blk = n // 4
                        w0, w1, w2, w3 = bw(k0, k1, PERMUTE, rep, np.uint64(blk))
                        wd, ix = np.uint32(pick(n - 4 * blk, w0, w1, w2, w3)), np.uint16(i)
                    kw[i] = wd
                    ki[i] = ix
                cuda.syncthreads()
                k = 2
                while k <= NP:                # bitonic sort, ascending
                    j = k // 2
                    while j > 0:              # lanes over the NP / 2 pairs (i, i + j):
                        e = lane              # i is e with a 0 bit inserted at j's place
                        while e < NP // 2:
                            i = e + (e & ~(j - 1))
                            ui, um = np.uint64(i), np.uint64(i + j)   # (no index fix-ups)
                            uw, vw, ux, vx = kw[ui], kw[um], ki[ui], ki[um]
                            if (uw > vw or (uw == vw and ux > vx)) == ((i & k) == 0):
                                kw[ui] = vw
                                kw[um] = uw
                                ki[ui] = vx
                                ki[um] = ux
                            e += NT
                        cuda.syncthreads()
                        j //= 2
                    k *= 2
            for s in range(SPL):          # 1. sample indices
                b_ = lane + NT * s
                if b_ < B:
                    if mode == IID or mode == SUBSET:
                        n = np.int64(t) * B + b_
                        blk = n // 4
                        w0, w1, w2, w3 = bw(k0, k1, SUBSET_ if mode == SUBSET else MINIBATCH,
                                            rep, np.uint64(blk))
                        top = inputs.shape[0] - (B - b_ - 1 if mode == SUBSET else 0)
                        idx[b_] = bi(pick(n - 4 * blk, w0, w1, w2, w3), top)
                    elif mode == EPOCH and NS:
                        idx[b_] = np.int64(ki[ep * B + b_])
                    elif mode == EPOCH:
                        idx[b_] = perm[r, (t % per_epoch) * B + b_]
                    else:
                        idx[b_] = b_
            if SUB:                       # Floyd's algorithm: a taken draw k becomes n - B + k
                cuda.syncthreads()
                if lane == 0:
                    for k in range(1, B):
                        for i in range(k):
                            if idx[i] == idx[k]:
                                idx[k] = inputs.shape[0] - B + k
                                break
            cuda.syncthreads()
            for stage in range(2 if HEUN else 1):   # Heun: a second gradient, at x~
                for c in range(KO):       # the gradient's sums, carried across the tiles
                    G2[c] = zero
                for i in range(NPL):
                    G[i] = zero
                for q in range(NQ):
                    QG[q] = zero
                    QGb[q] = zero
                for it in range(NTB):     # tile it: the batch's samples b0 .. b0 + nb - 1
                    b0 = it * TB
                    nb = TB if it < NTB - 1 else B - (NTB - 1) * TB
                    if OPQ and NTB == 1 and inputs.shape[0] < nb:   # never (n >= B): a
                        nb = inputs.shape[0]      # batch in one tile, not unrolled whole
                    for e in range(lane, 0 if GATHER else nb * DIN, NT):   # 2. the tile's
                        if EMB:                           # inputs (an embedding's rows
                            b_ = e // DIN                 # [E_a; E_b]: at Heun's predictor
                            i = e - b_ * DIN              # too)
                            w = int(inputs[idx[b0 + b_], 0 if i < EMB else 1])
                            A[b_, i] = EM[w * EMB + (i if i < EMB else i - EMB)]
                        else:                             # unsigned: no index fix-ups
                            ub, ui = np.uint64(e) // DU, np.uint64(e) % DU
                            A[ub, ui] = inputs[np.uint64(idx[np.uint64(b0) + ub]), ui]
                    cuda.syncthreads()
                    for q in range(HPL):      # 3. forward, lanes over hidden units
                        j = lane + NT * q
                        b_ = 0
                        while j < H and b_ < nb:
                            if GATHER:        # the one-hot row's two ones
                                z = P[q * E + inputs[idx[b0 + b_], 0]] + \
                                    P[q * E + CLASSES + inputs[idx[b0 + b_], 1]]
                            else:
                                z = zero
                                for i in range(DIN):
                                    z += A[b_, i] * P[q * E + i]
                            S[b_, j] = stored(z + P[q * E + DIN], kind)
                            b_ += 1
                    cuda.syncthreads()
                    for s in range(TPL):      # 4. read-out and loss head, lanes over samples
                        b_ = lane + NT * s
                        if b_ < nb:
                            y_ = labels[idx[b0 + b_]]
                            for c in range(KO):
                                o = zero
                                if KO == 1:       # units in order, 8 per trip (unrolled)
                                    j0 = 0
                                    while j0 < H:
                                        for jj in range(8):
                                            if j0 + jj < H:
                                                o += unit(S[b_, j0 + jj], kind)[0] * \
                                                    W2[c, j0 + jj]
                                        j0 += 8
                                else:             # K sums: `range` (a `while` unrolled
                                                  # them whole: spills in float64)
                                    for j in range(H):
                                        o += unit(S[b_, j], kind)[0] * W2[c, j]
                                dout[b_, c] = o + B2[c]
                            if CLASSES:       # softmax: exp(out - max) / sum, minus the one-hot
                                mx = dout[b_, 0]
                                for c in range(1, KO):
                                    if dout[b_, c] > mx:
                                        mx = dout[b_, c]
                                oc = dout[b_, y_] - mx
                                nrm = zero
                                for c in range(KO):
                                    e = cast(math.exp(dout[b_, c] - mx))
                                    dout[b_, c] = e
                                    nrm += e
                                if MH:        # the loss log sum e^(out - max) - (out_c - max)
                                    Lb[b0 + b_] = np.float64(cast(math.log(nrm)) - oc)
                                for c in range(KO):
                                    y = one if c == y_ else zero
                                    dout[b_, c] = (dout[b_, c] / nrm - y) / fB
                            elif LN:          # label noise: y + s_l eps at LABEL_NOISE t B + b
                                n = np.int64(t) * B + b0 + b_
                                blk = n // 4
                                z0, z1, z2, z3 = bn(k0, k1, LABEL, rep, np.uint64(blk))
                                y = y_ + h[3] * pick(n - 4 * blk, z0, z1, z2, z3)
                                dout[b_, 0] = (dout[b_, 0] - y) / fB
                            else:
                                res = dout[b_, 0] - y_
                                if MH:        # the squared residual, in float64
                                    Lb[b0 + b_] = np.float64(res) * np.float64(res)
                                dout[b_, 0] = res / fB
                    cuda.syncthreads()
                    b_ = 0                    # 5. backward, lanes over hidden units (classes
                    while b_ < nb:            # inner: unrolled, G2 stays in registers)
                        for c in range(KO):
                            G2[c] += dout[b_, c]
                        b_ += 1
                    for q in range(HPL):
                        j = lane + NT * q
                        if j < H:
                            gb1 = G[q * E + DIN]
                            b_ = 0
                            while b_ < nb:
                                hb, d1 = unit(S[b_, j], kind)
                                dh = zero
                                for c in range(KO):
                                    g = dout[b_, c]
                                    dh += g * P[q * E + DIN + 1 + c]
                                    G[q * E + DIN + 1 + c] += g * hb
                                dz = dh * d1
                                gb1 += dz
                                S[b_, j] = dz     # column j is this lane's: dZ replaces phi
                                b_ += 1
                            if GATHER:        # dz into the entries of the two ones
                                for b_ in range(nb):
                                    G[q * E + inputs[idx[b0 + b_], 0]] += S[b_, j]
                                    G[q * E + CLASSES + inputs[idx[b0 + b_], 1]] += S[b_, j]
                            elif SO:          # samples outer: DIN independent sums
                                b_ = 0
                                while b_ < nb:
                                    dz = S[b_, j]
                                    for i in range(DIN):
                                        G[q * E + i] += dz * A[b_, i]
                                    b_ += 1
                            else:             # a sum at a time (G in local memory)
                                for i in range(DIN):
                                    acc = G[q * E + i]
                                    b_ = 0
                                    while b_ < nb:
                                        acc += S[b_, j] * A[b_, i]
                                        b_ += 1
                                    G[q * E + i] = acc
                            G[q * E + DIN] = gb1
                    if EMB:               # the embedding's gradient: dA = dZ W1 (lanes over
                        cuda.syncthreads()    # (b, i), units in order) over A, then each entry
                        for e in range(lane, nb * DIN, NT):   # (c, k) sums the rows of the
                            b_ = e // DIN                     # samples whose operands are c
                            i = e - b_ * DIN                  # (first operands, then second,
                            acc = zero                        # as Xa^T dA_a + Xb^T dA_b)
                            for j in range(H):
                                acc += S[b_, j] * W1M[j * DIN + i]
                            A[b_, i] = acc
                        cuda.syncthreads()
                        for q in range(EPL):
                            f = lane + NT * q
                            if f < PE:
                                c = f // EMB
                                k = f - c * EMB
                                ga = QG[q]
                                gb = QGb[q]
                                for b_ in range(nb):
                                    if int(inputs[idx[b0 + b_], 0]) == c:
                                        ga += A[b_, k]
                                    if int(inputs[idx[b0 + b_], 1]) == c:
                                        gb += A[b_, EMB + k]
                                QG[q] = ga
                                QGb[q] = gb
                    cuda.syncthreads()    # the tile's A, S, dout read by all before the next
                if EMB:
                    for q in range(EPL):
                        QG[q] = QG[q] + QGb[q]
                if HEUN and stage == 0:   # Heun's predictor x~ = x + (0 - eta g + sigma xi)
                    eta = sched(int(es[0]), es[1], es[2], es[3], t)   # into P (x kept in X0,
                    T = sched(int(ts[0]), ts[1], ts[2], ts[3], t)     # g in Sa), its normals
                    se, sp = cast(eta), cast(noise_scale(eta, T))     # in XI (none at T = 0)
                    if T > 0:
                        step_normals(XI, XI2, QXI, lane, t, k0, k1, rep)
                    else:
                        for i in range(NPL):
                            XI[i] = zero
                        for c in range(KO):
                            XI2[c] = zero
                    copy_owned(Sa, Sa2, Qa, G, G2, QG)
                    propose(P, P2, X0, X02, G, G2, XI, XI2, W2, B2, W1M, Q, Q0, QG, QXI, EM,
                            lane, se, sp, True)
                    cuda.syncthreads()
            if MH:                        # 6. MALA: U(y), the residuals, the Metropolis
                uy = 0.0                  # test, the divergence test of the new state, vote
                for b_ in range(B):
                    uy += Lb[b_]
                uy = uy / B if CLASSES else 0.5 * (uy / B)
                fw = 0.0                  # the lane's sums; b2's terms on lane 0 only
                bw_ = 0.0
                for q in range(HPL):
                    j = lane + NT * q
                    if j < H:
                        for k in range(E):
                            i = q * E + k
                            fw += residual2(P[i], X0[i], Sa[i], se)
                            bw_ += residual2(X0[i], P[i], G[i], se)
                for q in range(EPL):
                    if lane + NT * q < PE:
                        fw += residual2(Q[q], Q0[q], Qa[q], se)
                        bw_ += residual2(Q0[q], Q[q], QG[q], se)
                if lane == 0:
                    for c in range(KO):
                        fw += residual2(P2[c], X02[c], Sa2[c], se)
                        bw_ += residual2(X02[c], P2[c], G2[c], se)
                R[0, lane] = fw
                R[1, lane] = bw_
                cuda.syncthreads()
                fwd = 0.0                 # every lane sums the lanes' in order: one decision
                bwd = 0.0
                for i in range(NT):
                    fwd += R[0, i]
                    bwd += R[1, i]
                w0, w1, w2, w3 = bw(k0, k1, ACCEPT, rep, np.uint64(t // 4))
                take = accept(uniform(pick(t - 4 * (t // 4), w0, w1, w2, w3)),
                              log_alpha(uy, ur, bwd, fwd, eta, T))
                ok = True        # (against the float64 bound: `state_bound` here spills)
                for q in range(HPL):
                    j = lane + NT * q
                    if j < H:
                        for k in range(E):
                            i = q * E + k
                            if take:
                                ok = ok and ok_(P[i], bound) and ok_(G[i], bound)
                            else:
                                ok = ok and ok_(X0[i], bound) and ok_(Sa[i], bound)
                for c in range(KO):
                    if take:
                        ok = ok and ok_(P2[c], bound) and ok_(G2[c], bound)
                    else:
                        ok = ok and ok_(X02[c], bound) and ok_(Sa2[c], bound)
                for q in range(EPL):
                    if lane + NT * q < PE:
                        if take:
                            ok = ok and ok_(Q[q], bound) and ok_(QG[q], bound)
                        else:
                            ok = ok and ok_(Q0[q], bound) and ok_(Qa[q], bound)
                ok = ok and ok_(uy if take else ur, bound)    # (not the count ar)
                good = cuda.syncthreads_and(1 if ok else 0) != 0
                if take and good:         # y, g(y), U(y) become the state
                    copy_owned(Sa, Sa2, Qa, G, G2, QG)
                    ur = uy
                    ar += 1.0
                    continue
                for q in range(HPL):      # rejected, or frozen: x back from X0
                    j = lane + NT * q
                    if j < H:
                        for k in range(E):
                            P[q * E + k] = X0[q * E + k]
                        mirror(P, q, j, W2, W1M)
                for c in range(KO):
                    P2[c] = X02[c]
                    B2[c] = P2[c]
                for q in range(EPL):
                    f = lane + NT * q
                    if f < PE:
                        Q[q] = Q0[q]
                        EM[f] = Q[q]
                if not good:
                    if lane == 0:
                        dstep[r] = t + 1
                    break
                continue
            eta = sched(int(es[0]), es[1], es[2], es[3], t)   # 6. update, test, vote
            if ADAM:
                T = 0.0
                co = (cast(eta), zero, cast(1.0 - math.pow(q0, t + 1)),
                      cast(1.0 - math.pow(q1, t + 1)))
            else:
                T = sched(int(ts[0]), ts[1], ts[2], ts[3], t)
                sig = noise_scale(eta, T)
                co = (cast(eta), cast(0.5 * sig if LM else sig), half, zero)
            noisy = T > 0
            if HEUN:                      # x back from the predictor
                half = cast(0.5 * eta)
                copy_owned(P, P2, Q, X0, X02, Q0)
                co = (co[0], co[1], half, zero)
            if not (BA or HEUN) and (noisy or GN):   # normals at t d + p, each Philox
                cz = cy = cw = np.int64(-1)   # block once: NOISE (T > 0; Leimkuhler-Matthews
                z0 = z1 = z2 = z3 = y0 = y1 = y2 = y3 = zero    # also at (t + 1) d + p),
                w0 = w1 = w2 = w3 = zero      # GRAD_NOISE (added to the gradient)
                for q in range(EPL):      # the owned embedding entries
                    f = lane + NT * q
                    if f < PE:
                        n = np.int64(t) * D + f
                        if noisy:
                            QXI[q], cz, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, n, cz, z0, z1,
                                                              z2, z3)
                            if LM:
                                zn, cw, w0, w1, w2, w3 = draw(k0, k1, NOISE, rep, n + D, cw, w0,
                                                              w1, w2, w3)
                                QXI[q] = QXI[q] + zn
                        if GN:
                            zg, cy, y0, y1, y2, y3 = draw(k0, k1, GNOISE, rep, n, cy, y0, y1, y2,
                                                          y3)
                            QG[q] = QG[q] + h[2] * zg
                for q in range(HPL):      # the owned units
                    j = lane + NT * q
                    if j < H:
                        for k in range(E):
                            n = np.int64(t) * D + slot(j, k)
                            if noisy:
                                XI[q * E + k], cz, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, n,
                                                                         cz, z0, z1, z2, z3)
                                if LM:
                                    zn, cw, w0, w1, w2, w3 = draw(k0, k1, NOISE, rep, n + D, cw,
                                                                  w0, w1, w2, w3)
                                    XI[q * E + k] = XI[q * E + k] + zn
                            if GN:
                                zg, cy, y0, y1, y2, y3 = draw(k0, k1, GNOISE, rep, n, cy, y0, y1,
                                                              y2, y3)
                                G[q * E + k] = G[q * E + k] + h[2] * zg
                for k in range(KO):       # b2
                    n = np.int64(t) * D + O2 + k
                    if noisy:
                        XI2[k], cz, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, n, cz, z0, z1, z2,
                                                          z3)
                        if LM:
                            zn, cw, w0, w1, w2, w3 = draw(k0, k1, NOISE, rep, n + D, cw, w0, w1,
                                                          w2, w3)
                            XI2[k] = XI2[k] + zn
                    if GN:
                        zg, cy, y0, y1, y2, y3 = draw(k0, k1, GNOISE, rep, n, cy, y0, y1, y2, y3)
                        G2[k] = G2[k] + h[2] * zg
            ok = True                     # the test: the rule's new values, not kept
            bs = bound_of(bound)          # (in the state's dtype)
            for q in range(HPL):
                if lane + NT * q < H:
                    for k in range(E):
                        ok = ok and rule_ok(P, Sa, Sb, G, XI, q * E + k, h, co, noisy, bs)
            for c in range(KO):
                ok = ok and rule_ok(P2, Sa2, Sb2, G2, XI2, c, h, co, noisy, bs)
            for q in range(EPL):
                if lane + NT * q < PE:
                    ok = ok and rule_ok(Q, Qa, Qb, QG, QXI, q, h, co, noisy, bs)
            if cuda.syncthreads_and(1 if ok else 0) == 0:
                if BA:                    # the state before the step: x back from X0
                    copy_owned(P, P2, Q, X0, X02, Q0)
                if lane == 0:
                    dstep[r] = t + 1
                break
            for q in range(HPL):          # the commit: the same rule on the same operands
                j = lane + NT * q
                if j < H:
                    for k in range(E):
                        rule_commit(P, Sa, Sb, G, XI, q * E + k, h, co, noisy)
                    mirror(P, q, j, W2, W1M)
            for c in range(KO):
                B2[c] = rule_commit(P2, Sa2, Sb2, G2, XI2, c, h, co, noisy)
            for q in range(EPL):
                f = lane + NT * q
                if f < PE:
                    EM[f] = rule_commit(Q, Qa, Qb, QG, QXI, q, h, co, noisy)
        for q in range(EPL):
            f = lane + NT * q
            if f < PE:
                x[r, f] = Q[q]
                if not NOSTATE:
                    a[r, f] = Qa[q]
                if ADAM or BA:
                    b[r, f] = Qb[q]
        for q in range(HPL):
            j = lane + NT * q
            if j < H:
                for k in range(E):
                    x[r, slot(j, k)] = P[q * E + k]
                    if not NOSTATE:
                        a[r, slot(j, k)] = Sa[q * E + k]
                    if ADAM or BA:
                        b[r, slot(j, k)] = Sb[q * E + k]
        if lane == 0:
            for c in range(KO):
                x[r, O2 + c] = P2[c]
                if not NOSTATE:
                    a[r, O2 + c] = Sa2[c]
                if ADAM or BA:
                    b[r, O2 + c] = Sb2[c]
            if MH:
                ux[r] = ur
                nacc[r] = ar
    return kernel


def _data(run, pot, gather: bool = False):
    """The training inputs (n, d_in) in the state's dtype (as the reference casts them,
    `_cast`; ModularArithmeticMLP: the one-hot rows, or with a learned embedding or `gather`
    the operand pairs (n, 2) int64) and the labels (n,) (the targets in the
    state's dtype; ModularArithmeticMLP, ClassifierMLP: the classes, int64), on the device,
    kept on the run's device potential."""
    key = ("mlp_data", run.dtype.str, gather)
    if key not in run.pot.cache:
        if isinstance(pot, ModularArithmeticMLP) and (pot.embed is not None or gather):
            data = (pot.train_pairs.astype(np.int64), pot.train_labels.astype(np.int64))
        elif isinstance(pot, ModularArithmeticMLP):
            data = (pot._cast("train_onehot", run.dtype), pot.train_labels.astype(np.int64))
        elif isinstance(pot, ClassifierMLP):
            data = (pot._cast("inputs", run.dtype), pot.train_labels)
        else:
            data = (pot._cast("inputs", run.dtype), pot._cast("labels", run.dtype))
        run.pot.cache[key] = tuple(run.xp.asarray(v) for v in data)
    return run.pot.cache[key]


def _coefficients(dyn) -> tuple:
    """The kernel's q0..q3 (float64) for an SGD (momentum, weight decay, grad_noise,
    label_noise), an AdamW (beta1, beta2, eps, weight decay) or an UnderdampedLangevin
    (friction, mass); zeros for the overdamped Langevin dynamics."""
    if isinstance(dyn, UnderdampedLangevin):
        return (float(dyn.friction), float(dyn.mass), 0.0, 0.0)
    if not isinstance(dyn, (SGD, AdamW)):
        return (0.0, 0.0, 0.0, 0.0)
    if isinstance(dyn, AdamW):
        return (float(dyn.beta1), float(dyn.beta2), float(dyn.eps), float(dyn.weight_decay))
    return (float(dyn.momentum), float(dyn.weight_decay), float(dyn.grad_noise),
            float(dyn.label_noise))


def _train_toynet_cuda(run, sim, t0: int, K: int) -> None:
    """Steps t0 .. t0+K-1 of a RULE_CODES dynamics on a toy net on the device state of `run`
    (MALA: its U and acceptance counts too): one block of `warps_of(hidden)` warps per
    replica, the batch in tiles (`layout`), launches of up to `CALL_STEPS` steps (epoch
    sampling with permutations too large for the kernel's shared memory: up to the epoch's
    end, after its permutations were computed on the device)."""
    from ..backends import cuda_runtime as rt

    pot, dyn, xp = sim.potential, sim.dynamics, run.xp
    x = run.state["x"]
    M, B = x.shape[0], batch_of(sim)
    states = [run.state[k] for k in OPTIMIZER_STATE[type(dyn)]]
    while len(states) < 2:               # SGD: an unused b, Langevin: a and b (distinct: the
        states.append(xp.empty((0, x.shape[1]), x.dtype))   # simulator copies them)
    mode = mode_of(dyn)
    per_epoch = pot.n_samples // B
    warps, _, inside = layout(sim)
    kernel = kernel_of(sim)
    inputs, labels = _data(run, pot, gathers(pot))
    optimizer = isinstance(dyn, (SGD, AdamW))
    es = xp.asarray(schedule_code(dyn.lr if optimizer else dyn.step))
    ts = xp.asarray(es if isinstance(dyn, AdamW) else schedule_code(dyn.temperature))
    head = rt.kernel_arrays(x, *states, run.dstep)
    tail = rt.kernel_arrays(es, ts, inputs, labels, xp.zeros((0, 0), np.int64))
    mh = rt.kernel_arrays(*((run.state["u"], run.state["accepted"]) if isinstance(dyn, MALA)
                            else (xp.zeros(0), xp.zeros(1))))
    scalars = _coefficients(dyn) + (run.bound,)
    t = t0
    while t < t0 + K:
        if mode == EPOCH and not inside:
            epoch = t // per_epoch
            perm = rt.kernel_arrays(run.permutations(epoch))[0]
            end = min(t0 + K, (epoch + 1) * per_epoch)
        else:
            perm, end = tail[4], min(t0 + K, t + CALL_STEPS)
        kernel[M, WARP * warps](*head, int(t), int(end - t), run.k0, run.k1, run.rep0, tail[0],
                                tail[1], *scalars, tail[2], tail[3], perm, int(per_epoch),
                                int(mode), int(pot.kind), *mh)
        t = end


for _pot in NETS:
    for _dyn in RULE_CODES:
        register(_pot, _dyn, "cuda", accepts=accepts)(_train_toynet_cuda)
