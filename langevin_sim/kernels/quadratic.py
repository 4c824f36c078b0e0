"""Quadratic (dense H): its CPU kernels for overdamped Langevin and BAOAB.

The gradient x H - c H of a block of replicas is one GEMM per step (BLAS single-threaded, one
block of `common.gemm_block` replicas per thread); the rest of a step is the step rules
applied lane by lane with in-kernel noise (`common.overdamped_rows`, and the BAOAB lane loops
below).  The other dynamics run the generic drivers (`kernels.drivers`) on the hooks at the
end (Heun and Leimkuhler-Matthews had dedicated kernels here, the same algorithm as the
drivers'; they went to save their compilation).  Its step function `offset_row_step` (one
replica's overdamped step from a GEMM gradient with a constant offset) is the row rule of
the fused numba-cuda kernel (the section "CUDA kernels" at the end).
"""
from __future__ import annotations

import functools
import sys

import numpy as np

from .. import rng
from ..backends.jit import jit
from ..backends.numpy_backend import within_bound
from ..backends.registry import register
from ..dynamics import OverdampedLangevin, UnderdampedLangevin
from ..potentials.quadratic import Quadratic
from .common import (BAOAB, TILE_CALL_STEPS, compile_steps, finite_row, gemm_block,
                     langevin_step_table, like, noise_buffer, noise_chunk, overdamped_lane,
                     overdamped_rows, sched, schedule_code)
from .drivers import FAMILIES, Hooks, family, row_sums, run_blocks


# ---------------------------------------------------------------- step functions, every target

def offset_row_step(x, g, off, z, eta, sigma, zero, bound, new):
    """One overdamped step of one replica whose gradient is g - off (x, g, z, new: (d,) rows
    or strided columns of x's dtype; off (d,) a constant offset, c H for the dense kernels'
    x H - c H): new = `overdamped_lane` of each coordinate.  Returns whether every new value
    is finite and within bound."""
    good = True
    for i in range(x.shape[0]):
        v = overdamped_lane(x[i], g[i] - off[i], z[i], eta, sigma, zero)
        new[i] = v
        good = good & within_bound(v, bound)
    return good


STEPS = ("offset_row_step",)

# ---------------------------------------------------------------- CPU kernels (backend "numba")

cpu = compile_steps(sys.modules[__name__])


@jit
def overdamped_quadratic(x, dstep, t0, K, k0, k1, rep0, es, ts, H, cH, bound, block, b0, b1):
    """Overdamped Langevin on a dense Quadratic for blocks b0..b1-1 of `block` replicas:
    gradient x H - c H by one GEMM per block and step, then a fused noise + update pass;
    arithmetic in x's dtype.  Serial and GIL-free: the adapter spreads the blocks over the
    thread pool with BLAS single-threaded (`drivers.run_blocks`; a prange kernel compiled
    ~5 s longer)."""
    M, d = x.shape
    for b in range(b0, b1):
        lo = b * block
        hi = min(M, lo + block)
        new = np.empty(d, dtype=x.dtype)
        G = np.empty((hi - lo, d), dtype=x.dtype)
        buf = noise_buffer(d, x)
        for t in range(t0, t0 + K):
            e = sched(es, t)
            eta = like(e, x)
            sigma = like(cpu.noise_scale(e, sched(ts, t)), x)
            np.dot(x[lo:hi], H, G)
            overdamped_rows(x, G, cH, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf)


@jit
def baoab_first_lanes(x, p, g, z, h, inv_m, c1, c2, nx, npm):
    """B, A, O, A of one BAOAB step for one replica's d lanes (1-D rows) into nx, npm."""
    for i in range(x.shape[0]):
        nx[i], npm[i] = cpu.baoab_first(x[i], p[i], g[i], h, inv_m, c1, c2, z[i])


@jit
def baoab_last_lanes(G, off, h, bound, npm):
    """The closing B of a BAOAB step for one replica: gradient G - off (written into G) and
    momentum npm - h (G - off) (into npm).  Returns whether both are finite and within bound."""
    good = True
    for i in range(G.shape[0]):
        gv = G[i] - off[i]
        pv = cpu.baoab_last(npm[i], gv, h)
        G[i] = gv
        npm[i] = pv
        good = good & cpu.within_bound(gv, bound) & cpu.within_bound(pv, bound)
    return good


@jit
def baoab_quadratic(x, p, g, dstep, t0, k0, k1, rep0, table, inv_m, H, cH, bound, block, b0, b1):
    """BAOAB on a dense Quadratic (p, g momenta and gradient at x, (M, d)) for blocks b0..b1-1
    of `block` replicas and steps t0 .. t0 + K - 1 (table: `langevin_step_table`, (3, K);
    inv_m = 1 / mass in x's dtype): per block and step, B A O A row by row with in-kernel
    noise, one GEMM for the new gradients x H - c H, then the closing B; coefficients in x's
    dtype.  A replica whose new x, p or g is non-finite or beyond bound keeps its state and
    gets dstep = t + 1.  Serial and GIL-free, as `overdamped_quadratic`."""
    M, d = x.shape
    K = table.shape[1]
    for b in range(b0, b1):
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
                    for i in range(d):   # loops: an array assignment compiles error formatting
                        x[m, i] = nx[r, i]
                        p[m, i] = npm[r, i]
                        g[m, i] = G[r, i]
                else:
                    dstep[m] = t + 1
                    for i in range(d):
                        nx[r, i] = x[m, i]


@register(Quadratic, OverdampedLangevin, "numba")
def _overdamped_quadratic(sim, t0, K, k0, k1):
    dyn, pot = sim.dynamics, sim.potential
    x = sim.state["x"]
    block = gemm_block(*x.shape, x.itemsize)
    run_blocks(overdamped_quadratic, -(-x.shape[0] // block), FAMILIES[Quadratic], x,
               sim.diverged_step, t0, K, k0, k1, sim.first_replica, schedule_code(dyn.step),
               schedule_code(dyn.temperature), pot.H.astype(x.dtype),
               (pot.center @ pot.H).astype(x.dtype), sim.divergence_bound, block, rows=1)


@register(Quadratic, UnderdampedLangevin, "numba")
def _baoab_quadratic(sim, t0, K, k0, k1):
    dyn, pot, s = sim.dynamics, sim.potential, sim.state
    x = s["x"]
    es, ts = schedule_code(dyn.step), schedule_code(dyn.temperature)
    H, cH = pot.H.astype(x.dtype), (pot.center @ pot.H).astype(x.dtype)
    block = gemm_block(*x.shape, x.itemsize)
    for t in range(t0, t0 + K, TILE_CALL_STEPS):
        table = langevin_step_table(BAOAB, es, ts, t, min(TILE_CALL_STEPS, t0 + K - t),
                                    float(dyn.friction), float(dyn.mass), x)
        run_blocks(baoab_quadratic, -(-x.shape[0] // block), FAMILIES[Quadratic], x, s["p"],
                   s["g"], sim.diverged_step, t, k0, k1, sim.first_replica, table,
                   x.dtype.type(1.0 / float(dyn.mass)), H, cH, sim.divergence_bound, block,
                   rows=1)


# ---------------------------------------------------------------- CUDA kernels (backend "cuda")
# Quadratic x OverdampedLangevin on the device, by the dense families' fused path
# (`cuda_backend.gemm_steps`, as SphericalPSpin's): per step ONE GEMM for all replicas on the
# transposed state, GT (d, MP) = H^T @ XT (cuBLAS behind xp.matmul; x H - c H as on the CPU,
# with c H computed once), then ONE launch of the shared fused kernel `cuda_kernels.gemm_step`
# with `offset_row_step` as its row rule (NOISE normals, the overdamped update, divergence,
# freeze).  No operand to refresh: the GEMM reads the state itself.

cuda = None          # numba.cuda, set by `_cuda_rules` (the simulator swaps this global)


@functools.lru_cache(maxsize=None)
def _cuda_rules():
    """(row, refresh) device functions of `gemm_step` for the dense Quadratic."""
    global cuda
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    step = compile_steps(sys.modules[__name__], cuda.jit(device=True),
                         rt.primitives()).offset_row_step

    @cuda.jit(device=True)
    def row(x, g, z, eta, sigma, zero, bound, new, off):
        return step(x, g, off, z, eta, sigma, zero, bound, new)

    @cuda.jit(device=True)
    def refresh(XT, r, a0, a1, a2, a3):
        return
    return row, refresh


def quadratic_form_steps(run, sim, t0: int, K: int, name: str, form) -> None:
    """`cuda_backend.gemm_steps` for a gradient x H - o (the dense Quadratic's; LinearRegression's
    full batch too): GT = H^T XT, then `offset_row_step` with o.  form() -> (H (d, d), o (d,))
    in float64, cast to the state's dtype once and cached per dtype on the run's device
    potential under `name`."""
    from ..backends.cuda_backend import gemm_steps

    xp, x = run.xp, run.state["x"]
    key = (name, x.dtype)
    if key not in run.pot.cache:
        H, o = form()
        run.pot.cache[key] = (xp.asarray(np.ascontiguousarray(H.T, dtype=x.dtype)),
                              xp.asarray(o.astype(x.dtype)))
    HT, o = run.pot.cache[key]
    row, refresh = _cuda_rules()

    def gemm(XT, GT):
        xp.matmul(HT, XT, out=GT)

    gemm_steps(run, sim, t0, K, gemm, row, refresh, (o,))


@register(Quadratic, OverdampedLangevin, "cuda")
def _overdamped_quadratic_cuda(run, sim, t0, K):
    """`quadratic_form_steps` with H and c H."""
    pot = sim.potential
    quadratic_form_steps(run, sim, t0, K, "quadratic", lambda: (pot.H, pot.center @ pot.H))


# ---------------------------------------------------------------- generic drivers' hooks (CPU)
# Heun, Leimkuhler-Matthews, MALA and full-batch SGD / AdamW run `kernels.drivers` on these
# (the reference's formulas).

@jit
def quadratic_grad_block(xb, args):
    """grad U = (x - c) H (B, d) in xb's dtype; args: (H, c) in xb's dtype."""
    return (xb - args[1]) @ args[0]


@jit
def quadratic_energy_block(xb, args):
    """U = (x - c) H (x - c) / 2 (B,), the products summed in float64."""
    y = xb - args[1]
    return 0.5 * row_sums(y.astype(np.float64) * (y @ args[0]).astype(np.float64))


family(Quadratic, Hooks(quadratic_grad_block, quadratic_energy_block,
                        lambda pot, dtype: (pot.H.astype(dtype), pot.center.astype(dtype)),
                        blas=True))
