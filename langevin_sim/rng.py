"""Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11).

Every random number is a pure function of (seed, purpose, replica, n), where n is
the position in that replica's stream of the purpose.  For dynamics noise with d
coordinates, n = step * d + lane.  Philox is called with

    key     = (seed mod 2**32, seed // 2**32)
    counter = (block mod 2**32, block // 2**32, replica, purpose),  block = n // 4

and word n % 4 of its output is used.  The same Python functions below run on
NumPy uint64 arrays (the reference) and compile unchanged with ``numba.njit``
(CPU) and ``numba.cuda.jit(device=True)`` (GPU): one algorithm, several targets.
All 32-bit words live in uint64 containers and are masked after every multiply.

Normals come from Box-Muller on word pairs: (w0, w1) -> (z0, z1), (w2, w3) -> (z2, z3),
with uniforms u = (w + 0.5) / 2**32 in (0, 1), so |z| <= 6.66.  Its logarithm, sine and
cosine are written here as branch-free polynomials (relative error ~1e-16) so that the
compiled kernels vectorize (Numba has no vector math library) and all targets compute the
same bits.  Float32 runs draw float32 normals from the same words (`block_normals_f32`:
uniforms (q + 0.5) / 2**23 of the top 23 bits q, float32 polynomials, |z| <= 5.77), twice
as fast on SIMD hardware; they agree with the float64 normals of the same words to ~1e-6 in
99% of draws (less closely in the tails, where the 23-bit uniforms are coarser).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError, check_int

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)
TWO_NEG32 = 2.0 ** -32
TWO_PI = 2.0 * np.pi

# Stream purposes (the fourth counter word).
NOISE = 1
MINIBATCH = 2
INIT = 3
DATA = 4
ACCEPT = 5
PERMUTE = 6
PROBE = 7  # sharpness probe vectors (potentials/sharpness.py)
SUBSET = 8       # SGD sampling="subset": Floyd's words, n = step * B + k (dynamics/sgd.py)
LABEL_NOISE = 9  # SGD label_noise: one normal per batch slot, n = step * B + b
GRAD_NOISE = 10  # SGD grad_noise: one normal per coordinate, n = step * d + i
EXCHANGE = 11    # replica exchange: one word per rung pair, replica = ladder, n = exchange * (K-1) + k


def philox_round(c0, c1, c2, c3, k0, k1):
    """One Philox4x32 round: two 32x32 -> 64-bit products, swaps and key xors."""
    p0 = PHILOX_M0 * c0
    p1 = PHILOX_M1 * c2
    return (p1 >> SHIFT32) ^ c1 ^ k0, p1 & MASK32, (p0 >> SHIFT32) ^ c3 ^ k1, p0 & MASK32


def philox_bump(k0, k1):
    """The Weyl key schedule between rounds."""
    return (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox4x32 rounds on a counter (c0..c3) with key (k0, k1); uint64 holding 32 bits.

    The rounds are written out (not looped) so that compilers unroll and vectorize them.
    """
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    c0, c1, c2, c3 = philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = philox_bump(k0, k1)
    return philox_round(c0, c1, c2, c3, k0, k1)


def block_words(k0, k1, purpose, replica, block):
    """The four 32-bit words of one stream block (uint64 containers)."""
    return philox4x32_10(block & MASK32, block >> SHIFT32, replica, purpose, k0, k1)


F64 = np.float64
LN2 = 0.6931471805599453
SQRT2 = 1.4142135623730951
# 2 atanh(t) = 2 t sum_k t^(2k) / (2k + 1), |t| <= 0.1716: 11 terms reach 1e-17
A1, A2, A3, A4, A5, A6, A7, A8, A9, A10 = (1.0 / (2 * k + 1) for k in range(1, 11))


def select(cond, a, b):
    """`a` where `cond` else `b`.  Compiled targets substitute a scalar conditional
    expression (backends/jit.py PRIMITIVES), which vectorizes to a blend."""
    return np.where(cond, a, b)


def sqrt(x):
    """Square root (correctly rounded on every target; compiled targets use math.sqrt)."""
    return np.sqrt(x)


def sqrt32(x):
    """float32 square root of float32 x (correctly rounded on every target)."""
    return np.sqrt(x)


def floor(x):
    """Floor of float64 x as float64 (numba-cuda has no np.floor: the CUDA primitive is
    libdevice's)."""
    return np.floor(x)


def floor32(x):
    """Floor of float32 x as float32 (numba-cuda: libdevice's floorf)."""
    return np.floor(x)


def row_sum(a):
    """Sums (B,) of the rows of a (B, k), in a's dtype.  Compiled targets substitute a loop
    in the order of Numba's axis sum (backends/jit.py CPU_PRIMITIVES): Numba's own
    `sum(axis=1)` compiles its error formatting, seconds per kernel."""
    return a.sum(axis=1)


def set_column(a, j, v):
    """a[:, j] = v in place (compiled targets: a loop, as for `row_sum`)."""
    a[:, j] = v


def float_bits(x):
    """Bit pattern of float64 x as int64.  Compiled targets substitute a bit cast."""
    return np.asarray(x, dtype=np.float64).view(np.int64)


def bits_float(b):
    """float64 with bit pattern b (int64): the inverse of `float_bits`."""
    return np.asarray(b, dtype=np.int64).view(np.float64)


def float32_bits(x):
    """Bit pattern of float32 x as int32.  Compiled targets substitute a bit cast."""
    return np.asarray(x, dtype=np.float32).view(np.int32)


def bits_float32(b):
    """float32 with bit pattern b (an integer below 2**31): the inverse of `float32_bits`."""
    return np.asarray(b).astype(np.int32).view(np.float32)


MANT64, ONE64, SHIFT52 = np.int64((1 << 52) - 1), np.int64(0x3FF << 52), np.int64(52)
BIAS_U32 = np.int64(1023 + 32)


def log_u32(w):
    """ln((w + 0.5) / 2**32) of 32-bit words, branch-free so that compiled loops vectorize.

    x = w + 0.5 = m 2^e with m in (sqrt(1/2), sqrt(2)] read off its bit pattern (exact), then
    ln x = e ln 2 + 2 atanh((m - 1)/(m + 1)) by its series; relative error ~1e-16.
    """
    bits = float_bits(w + 0.5)
    m = bits_float((bits & MANT64) | ONE64)
    e = F64((bits >> SHIFT52) - BIAS_U32)
    s = m > SQRT2
    m = m * select(s, 0.5, 1.0)
    e = e + select(s, 1.0, 0.0)
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    p = 1.0 + t2 * (A1 + t2 * (A2 + t2 * (A3 + t2 * (A4 + t2 * (A5 + t2 * (A6 + t2 * (
        A7 + t2 * (A8 + t2 * (A9 + t2 * A10)))))))))
    return e * LN2 + 2.0 * t * p


# Taylor coefficients of sin and cos on |phi| <= pi/4 (truncation < 1e-17)
S1, S2, S3, S4, S5, S6, S7, S8 = ((-1) ** k / math.factorial(2 * k + 1) for k in range(1, 9))
C1, C2, C3, C4, C5, C6, C7, C8, C9 = ((-1) ** k / math.factorial(2 * k) for k in range(1, 10))


def sincos_2pi(v):
    """(cos 2 pi v, sin 2 pi v) for v in [0, 1], branch-free: quarter-turn reduction + Taylor."""
    k = floor(4.0 * v + 0.5)
    phi = TWO_PI * (v - 0.25 * k)
    p2 = phi * phi
    sp = phi * (1.0 + p2 * (S1 + p2 * (S2 + p2 * (S3 + p2 * (S4 + p2 * (S5 + p2 * (S6 + p2 * (
        S7 + p2 * S8))))))))
    cp = 1.0 + p2 * (C1 + p2 * (C2 + p2 * (C3 + p2 * (C4 + p2 * (C5 + p2 * (C6 + p2 * (
        C7 + p2 * (C8 + p2 * C9))))))))
    c = select(k == 1.0, -sp, select(k == 2.0, -cp, select(k == 3.0, sp, cp)))
    s = select(k == 1.0, cp, select(k == 2.0, -sp, select(k == 3.0, -cp, sp)))
    return c, s


def box_muller(wa, wb):
    """Two standard normals from two 32-bit words: sqrt(-2 ln u) (cos, sin)(2 pi v)."""
    r = sqrt(-2.0 * log_u32(wa))
    c, s = sincos_2pi((wb + 0.5) * TWO_NEG32)
    return r * c, r * s


def block_normals(k0, k1, purpose, replica, block):
    """The four normals of one stream block."""
    w0, w1, w2, w3 = block_words(k0, k1, purpose, replica, block)
    z0, z1 = box_muller(w0, w1)
    z2, z3 = box_muller(w2, w3)
    return z0, z1, z2, z3


# ---- float32 normals (float32 runs): 23-bit uniforms, float32 arithmetic throughout, so
# compiled loops run 8 lanes per 256-bit vector.  Polynomials are truncated for float32
# (truncation < 3e-9 relative); every operation is a correctly rounded float32 one.
F32 = np.float32
SHIFT9 = np.uint64(9)
HALF_F, ONE_F, TWO_F, ZERO_F = F32(0.5), F32(1.0), F32(2.0), F32(0.0)
LN2_F, SQRT2_F = F32(LN2), F32(SQRT2)
TWO_NEG23_F, TWO_PI_F, FOUR_F, QUARTER_F = F32(2.0 ** -23), F32(TWO_PI), F32(4.0), F32(0.25)
B1, B2, B3, B4 = (F32(1.0 / (2 * k + 1)) for k in range(1, 5))
T1, T2, T3, T4 = (F32((-1) ** k / math.factorial(2 * k + 1)) for k in range(1, 5))
D1, D2, D3, D4, D5 = (F32((-1) ** k / math.factorial(2 * k)) for k in range(1, 6))
MANT32, ONE32, SHIFT23 = np.int32((1 << 23) - 1), np.int32(0x7F << 23), np.int32(23)
BIAS_U23 = np.int32(127 + 23)
Q1_F, Q2_F, Q3_F = F32(1.0), F32(2.0), F32(3.0)   # quarter turns


def word_u23(w):
    """float32 q + 1/2 of the word's top 23 bits q = w >> 9: in [1/2, 2**23), exact."""
    return F32(np.int32(w >> SHIFT9)) + HALF_F


def log_u23(x):
    """float32 ln(x / 2**23) for x = `word_u23(w)`, as `log_u32` (abs error < 2e-6)."""
    bits = float32_bits(x)
    m = bits_float32((bits & MANT32) | ONE32)
    e = F32((bits >> SHIFT23) - BIAS_U23)
    s = m > SQRT2_F
    m = m * select(s, HALF_F, ONE_F)
    e = e + select(s, ONE_F, ZERO_F)
    t = (m - ONE_F) / (m + ONE_F)
    t2 = t * t
    p = ONE_F + t2 * (B1 + t2 * (B2 + t2 * (B3 + t2 * B4)))
    return e * LN2_F + TWO_F * t * p


def sincos_2pi_u23(x):
    """float32 (cos 2 pi v, sin 2 pi v) of v = x / 2**23 for x = `word_u23(w)`."""
    v = x * TWO_NEG23_F
    k = floor32(FOUR_F * v + HALF_F)
    phi = TWO_PI_F * (v - QUARTER_F * k)
    p2 = phi * phi
    sp = phi * (ONE_F + p2 * (T1 + p2 * (T2 + p2 * (T3 + p2 * T4))))
    cp = ONE_F + p2 * (D1 + p2 * (D2 + p2 * (D3 + p2 * (D4 + p2 * D5))))
    c = select(k == Q1_F, -sp, select(k == Q2_F, -cp, select(k == Q3_F, sp, cp)))
    s = select(k == Q1_F, cp, select(k == Q2_F, -sp, select(k == Q3_F, -cp, sp)))
    return c, s


def box_muller_f32(wa, wb):
    """Two float32 normals from the `word_u23` values of two words; |z| <= sqrt(48 ln 2) = 5.77."""
    r = sqrt32(-TWO_F * log_u23(wa))
    c, s = sincos_2pi_u23(wb)
    return r * c, r * s


def block_normals_f32(k0, k1, purpose, replica, block):
    """The four float32 normals of one stream block (float32 runs)."""
    w0, w1, w2, w3 = block_words(k0, k1, purpose, replica, block)
    z0, z1 = box_muller_f32(word_u23(w0), word_u23(w1))
    z2, z3 = box_muller_f32(word_u23(w2), word_u23(w3))
    return z0, z1, z2, z3


def bounded_index(word, n):
    """Map a 32-bit word to an index in [0, n) by multiply-shift (bias <= n / 2**32)."""
    return (word * np.uint64(n)) >> SHIFT32


def key_of(seed: int) -> tuple[np.uint64, np.uint64]:
    """Philox key (k0, k1) of a 64-bit seed."""
    seed = check_int("seed", seed, minimum=None)
    if not 0 <= seed < 2 ** 64:
        raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed}; pick a non-negative seed")
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


# Functions above that compiled targets build (in dependency order).
DEVICE_FUNCTIONS = ("select", "sqrt", "sqrt32", "floor", "floor32", "float_bits", "bits_float", "float32_bits", "bits_float32", "philox_round", "philox_bump", "philox4x32_10", "block_words",
                    "log_u32", "sincos_2pi", "box_muller", "block_normals", "word_u23", "log_u23",
                    "sincos_2pi_u23", "box_muller_f32", "block_normals_f32", "bounded_index")


# ---------------------------------------------------------------- NumPy reference

def _stream_blocks(seed, purpose, replicas, start, count, transform):
    replicas = np.asarray(replicas, dtype=np.uint64).reshape(-1, 1)
    first, last = start // 4, (start + count - 1) // 4
    blocks = np.arange(first, last + 1, dtype=np.uint64).reshape(1, -1)
    k0, k1 = key_of(seed)
    rep, blk = np.broadcast_arrays(replicas, blocks)
    words = transform(k0, k1, np.uint64(purpose), rep, blk)
    out = np.stack(words, axis=-1).reshape(replicas.shape[0], -1)
    off = start - 4 * first
    return out[:, off:off + count]


def stream_words(seed: int, purpose: int, replicas, start: int, count: int) -> np.ndarray:
    """uint64 array (M, count) of 32-bit words at stream positions start..start+count-1."""
    return _stream_blocks(seed, purpose, replicas, start, count, block_words)


def stream_normals(seed: int, purpose: int, replicas, start: int, count: int,
                   dtype=np.float64) -> np.ndarray:
    """(M, count) standard normals at stream positions start..; dtype float64 (`block_normals`)
    or float32 (`block_normals_f32`, computed in float32 from the same words)."""
    f32 = np.dtype(dtype) == np.float32
    return _stream_blocks(seed, purpose, replicas, start, count,
                          block_normals_f32 if f32 else block_normals)


def step_normals(seed: int, replicas, step: int, lanes: int, purpose: int = NOISE,
                 dtype=np.float64) -> np.ndarray:
    """Dynamics noise for one step: (M, lanes) normals at n = step * lanes + lane."""
    return stream_normals(seed, purpose, replicas, step * lanes, lanes, dtype)


def standard_normal(seed: int, purpose: int, shape) -> np.ndarray:
    """A float64 array of normals for instance data (datasets, rotations), replica 0."""
    shape = tuple(np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    count = int(np.prod(shape))
    return stream_normals(seed, purpose, [0], 0, count).reshape(shape)


def epoch_permutation(seed: int, replica: int, epoch: int, n: int) -> np.ndarray:
    """Permutation of range(n) for one replica and epoch: stable argsort of stream words."""
    words = stream_words(seed, PERMUTE, [replica], epoch * n, n)[0]
    return np.argsort(words, kind="mergesort")
