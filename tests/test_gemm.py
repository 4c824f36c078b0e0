"""The CPU kernels' own product (`kernels.gemm`) against float64 NumPy on random inputs."""
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

from langevin_sim.kernels import gemm

from .conftest import early_result, starts_early

SHAPES = [  # (N rows of A, K, B rows of Y, i0, i1): tiles, leftover rows of A and Y, chunks
    (9, 45, 8, 0, 9), (10, 1300, 7, 3, 10), (64, 2080, 12, 0, 64), (5, 3, 4, 1, 2),
    (6, 2 * gemm.KC_BYTES // 4 + 5, 9, 2, 6)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("product", ["row_dots", "blas_rows", "dot_rows"])
def test_product_matches_numpy_and_leaves_other_columns(product, dtype):
    """Every entry of G[:, i0:i1] to the dtype's rounding of K terms; the others untouched."""
    rng = np.random.default_rng(3)
    eps = np.finfo(dtype).eps
    for N, K, B, i0, i1 in SHAPES:
        A = rng.standard_normal((N, K)).astype(dtype)
        Y = rng.standard_normal((B, K)).astype(dtype)
        G = np.full((B, N), np.nan, dtype)
        getattr(gemm, product)(A, Y, G, i0, i1)
        ref = Y.astype(np.float64) @ A[i0:i1].astype(np.float64).T
        scale = np.abs(Y).astype(np.float64) @ np.abs(A[i0:i1]).astype(np.float64).T
        assert (np.abs(G[:, i0:i1] - ref) <= 4 * eps * scale).all(), (product, N, K, B)
        assert np.isnan(G[:, :i0]).all() and np.isnan(G[:, i1:]).all()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_own_product_bits_do_not_depend_on_the_row_position(dtype):
    """A row of Y gives the same bits in any tile slot (rows moved by TILE, or the block cut
    at another multiple of TILE): a replica's gradient does not depend on its block."""
    rng = np.random.default_rng(4)
    A = rng.standard_normal((11, 3000)).astype(dtype)
    Y = rng.standard_normal((4 * gemm.TILE, 3000)).astype(dtype)
    G = np.empty((len(Y), 11), dtype)
    gemm.row_dots(A, Y, G, 0, 11)
    moved = np.concatenate([Y[gemm.TILE:], Y[:gemm.TILE]])
    H = np.empty_like(G)
    gemm.row_dots(A, moved, H, 0, 11)
    np.testing.assert_array_equal(np.concatenate([H[-gemm.TILE:], H[:-gemm.TILE]]), G)
    part = np.empty((gemm.TILE, 11), dtype)
    gemm.row_dots(A, Y[2 * gemm.TILE:3 * gemm.TILE], part, 0, 11)
    np.testing.assert_array_equal(part, G[2 * gemm.TILE:3 * gemm.TILE])


AXPY_SHAPES = [  # (m, K, n): tiles of 4 rows and 4 terms, leftover rows and terms, W4 / W5 shapes
    (32, 16, 32), (32, 32, 16), (23, 317, 64), (7, 5, 3), (1, 32, 32), (6, 1, 9)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("product", ["row_axpys", "own_axpys", "blas_axpys", "axpy_rows"])
@pytest.mark.parametrize("transposed", [False, True])
def test_axpy_product_matches_numpy(product, dtype, transposed):
    """C = A @ Bm to the dtype's rounding of K terms, A contiguous or a transposed view, C
    overwritten (it starts as NaN)."""
    rng = np.random.default_rng(5)
    eps = np.finfo(dtype).eps
    for m, K, n in AXPY_SHAPES:
        A = rng.standard_normal((K, m) if transposed else (m, K)).astype(dtype)
        A = A.T if transposed else A
        Bm = rng.standard_normal((K, n)).astype(dtype)
        C = np.full((m, n), np.nan, dtype)
        getattr(gemm, product)(A, Bm, C)
        ref = A.astype(np.float64) @ Bm.astype(np.float64)
        scale = np.abs(A).astype(np.float64) @ np.abs(Bm).astype(np.float64)
        assert (np.abs(C - ref) <= 4 * eps * scale).all(), (product, m, K, n)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_axpy_product_bits_do_not_depend_on_the_row_position(dtype):
    """A row of A gives the same bits of C in a tile of four rows and among the leftover rows
    (each entry the in-order FMA chain over K), and whatever A's layout."""
    rng = np.random.default_rng(6)
    A = rng.standard_normal((7, 37)).astype(dtype)
    Bm = rng.standard_normal((37, 45)).astype(dtype)
    C = np.empty((7, 45), dtype)
    gemm.row_axpys(A, Bm, C)
    moved = np.roll(A, -4, axis=0)      # rows 4..6 go to the tile, rows 0..3 to the leftovers
    D = np.empty_like(C)
    gemm.row_axpys(moved, Bm, D)
    np.testing.assert_array_equal(np.roll(D, 4, axis=0), C)
    E = np.empty_like(C)
    gemm.row_axpys(np.asfortranarray(A), Bm, E)
    np.testing.assert_array_equal(E, C)



BITS = """
import hashlib
import numpy as np
from langevin_sim.kernels import gemm


def digest(shapes, axpy_shapes):
    out = []
    for dtype in ("float64", "float32"):
        rng = np.random.default_rng(6)
        for N, K, B, i0, i1 in shapes:
            A = rng.standard_normal((N, K)).astype(dtype)
            Y = rng.standard_normal((B, K)).astype(dtype)
            G = np.zeros((B, N), dtype)
            gemm.row_dots(A, Y, G, i0, i1)
            out.append(G.tobytes())
        for m, K, n in axpy_shapes:
            A = rng.standard_normal((m, K)).astype(dtype)
            Bm = rng.standard_normal((K, n)).astype(dtype)
            C = np.empty((m, n), dtype)
            gemm.row_axpys(A, Bm, C)
            out.append(C.tobytes())
    return hashlib.sha1(b"".join(out)).hexdigest()
"""


_CACHE: list = []   # the other process's Numba cache folder


def compiled_for_x86_64_v4():
    """`starts_early` spec: `BITS`' digest printed by a process compiling for x86-64-v4 into
    a Numba cache of its own (nothing to run without AVX-512: the test is skipped there)."""
    if not gemm.OWN_PRODUCT:
        return [sys.executable, "-c", "pass"], dict(os.environ)
    _CACHE.append(tempfile.mkdtemp(prefix="numba-x86-64-v4-"))
    main = BITS + f"\nprint(digest({SHAPES!r}, {AXPY_SHAPES!r}))\n"
    return [sys.executable, "-c", main], dict(os.environ, NUMBA_CPU_NAME="x86-64-v4",
                                               NUMBA_CACHE_DIR=_CACHE[-1])


@pytest.mark.skipif(not gemm.OWN_PRODUCT, reason="the own products run on AVX-512 CPUs only")
@starts_early(compiled_for_x86_64_v4, timeout=300)
def test_own_products_bits_do_not_depend_on_the_cpu_compiled_for():
    """`row_dots` and `row_axpys` compiled for another AVX-512 CPU (x86-64-v4, whose tuning
    prefers 256-bit vectors, as Intel's; this machine class's Zen 4: 512) give the same bits:
    a run resumed, or a scan point rerun, on another kind of node follows the same trajectory.
    A sum reassociated by LLVM (the old `row_dots`) split into as many partial sums as the
    target's vector width: other bits.  (The other process starts with the session.)"""
    here: dict = {}
    exec(BITS, here)
    r = early_result(test_own_products_bits_do_not_depend_on_the_cpu_compiled_for)
    for folder in _CACHE:
        shutil.rmtree(folder, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == here["digest"](SHAPES, AXPY_SHAPES)
