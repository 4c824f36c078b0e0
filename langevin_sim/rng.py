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
with uniforms u = (w + 0.5) / 2**32 in (0, 1), so |z| <= 6.66.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

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


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox4x32 rounds on a counter (c0..c3) with key (k0, k1); uint64 holding 32 bits."""
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> SHIFT32) ^ c1 ^ k0,
            p1 & MASK32,
            (p0 >> SHIFT32) ^ c3 ^ k1,
            p0 & MASK32,
        )
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def block_words(k0, k1, purpose, replica, block):
    """The four 32-bit words of one stream block (uint64 containers)."""
    return philox4x32_10(block & MASK32, block >> SHIFT32, replica, purpose, k0, k1)


def box_muller(wa, wb):
    """Two standard normals from two 32-bit words."""
    r = np.sqrt(-2.0 * np.log((wa + 0.5) * TWO_NEG32))
    theta = TWO_PI * ((wb + 0.5) * TWO_NEG32)
    return r * np.cos(theta), r * np.sin(theta)


def block_normals(k0, k1, purpose, replica, block):
    """The four normals of one stream block."""
    w0, w1, w2, w3 = block_words(k0, k1, purpose, replica, block)
    z0, z1 = box_muller(w0, w1)
    z2, z3 = box_muller(w2, w3)
    return z0, z1, z2, z3


def bounded_index(word, n):
    """Map a 32-bit word to an index in [0, n) by multiply-shift (bias <= n / 2**32)."""
    return (word * np.uint64(n)) >> SHIFT32


def key_of(seed: int) -> tuple[np.uint64, np.uint64]:
    """Philox key (k0, k1) of a 64-bit seed."""
    seed = int(seed)
    if not 0 <= seed < 2 ** 64:
        raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed}; pick a non-negative seed")
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


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


def stream_normals(seed: int, purpose: int, replicas, start: int, count: int) -> np.ndarray:
    """float64 array (M, count) of standard normals at stream positions start.."""
    return _stream_blocks(seed, purpose, replicas, start, count, block_normals)


def step_normals(seed: int, replicas, step: int, lanes: int, purpose: int = NOISE) -> np.ndarray:
    """Dynamics noise for one step: (M, lanes) normals at n = step * lanes + lane."""
    return stream_normals(seed, purpose, replicas, step * lanes, lanes)


def standard_normal(seed: int, purpose: int, shape) -> np.ndarray:
    """A float64 array of normals for instance data (datasets, rotations), replica 0."""
    shape = tuple(np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    count = int(np.prod(shape))
    return stream_normals(seed, purpose, [0], 0, count).reshape(shape)


def epoch_permutation(seed: int, replica: int, epoch: int, n: int) -> np.ndarray:
    """Permutation of range(n) for one replica and epoch: stable argsort of stream words."""
    words = stream_words(seed, PERMUTE, [replica], epoch * n, n)[0]
    return np.argsort(words, kind="mergesort")
