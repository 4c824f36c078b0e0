"""Fused CPU kernels for overdamped Langevin on ScaleSymmetric, Valley and MultiWell.

One call runs K steps.  Replicas are split into blocks (one per prange iteration); per step
and block the gradient comes from the same block functions the NumPy reference uses
(`manifolds.scale_symmetric_grad`, `manifolds.valley_fields`, `multiwell.multiwell_fields`,
compiled by `compile_functions`), evaluated in float64 on the block, and `overdamped_rows`
applies x <- x - eta grad U + sqrt(2 eta T) xi with the in-kernel Philox noise at the
reference's stream positions (n = step * d + lane, purpose NOISE) and the divergence
check.  float32 states therefore agree with the reference to float32 rounding of the
gradient.  BLAS (MultiWell's block products) runs single-threaded inside the parallel region.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange
from threadpoolctl import threadpool_limits

from .. import rng
from ..dynamics import OverdampedLangevin
from ..potentials import manifolds, multiwell
from ..potentials.manifolds import ScaleSymmetric, Valley
from ..potentials.multiwell import MultiWell
from .jit import compile_functions, jit, pjit
from .numba_backend import register, schedule_code
from .numba_kernels import noise_buffer, noise_chunk, ok, overdamped_update, sched

_m = compile_functions(manifolds, ["layer_products", "scale_symmetric_grad", "profile_value",
                                   "valley_coords", "valley_fields"])
_w = compile_functions(multiwell, ["well_quadratic", "multiwell_fields"])
scale_symmetric_grad, valley_fields = _m.scale_symmetric_grad, _m.valley_fields
multiwell_fields = _w.multiwell_fields

BLOCK = 256  # replicas per block (one prange iteration)


@jit
def overdamped_rows(x, G, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf):
    """x[m] <- x[m] - eta G[m - lo] + sigma xi for the live rows lo .. lo + len(G) - 1 at step t,
    or freeze row m with dstep[m] = t + 1 when the new state is non-finite or beyond bound."""
    B, d = G.shape
    for r in range(B):
        m = lo + r
        if dstep[m] >= 0:
            continue
        z, off = noise_chunk(k0, k1, rng.NOISE, np.uint64(rep0 + m), t * d, d, buf)
        good = True
        for i in range(d):
            new[i] = x[m, i] + overdamped_update(0.0, G[r, i], eta, sigma, z[off + i])
            good = good and ok(new[i], bound)
        if good:
            x[m, :] = new
        else:
            dstep[m] = t + 1


@jit
def block64(x, lo, hi):
    """Rows lo..hi-1 of x as a new float64 array."""
    return x[lo:hi].astype(np.float64)


@jit
def scratch(x):
    """Per-block scratch: one new row (d,) and a noise buffer for d lanes."""
    d = x.shape[1]
    return np.empty(d, dtype=x.dtype), noise_buffer(d)


@pjit
def overdamped_scale_symmetric(x, dstep, t0, K, k0, k1, rep0, es, ts, sxx, sxy, l2, bound, block):
    """Overdamped Langevin on ScaleSymmetric (full-batch gradient from sxx, sxy, l2)."""
    M = x.shape[0]
    for b in prange((M + block - 1) // block):
        lo = b * block
        hi = min(M, lo + block)
        new, buf = scratch(x)
        for t in range(t0, t0 + K):
            eta = sched(es, t)
            sigma = math.sqrt(2.0 * eta * sched(ts, t))
            G = scale_symmetric_grad(block64(x, lo, hi), sxx, sxy, l2)
            overdamped_rows(x, G, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf)


@pjit
def overdamped_valley(x, dstep, t0, K, k0, k1, rep0, es, ts, curve, radius, kind, kk0, alpha,
                      omega, nodes_s, nodes_k, s_lo, s_hi, wall, w, bound, block):
    """Overdamped Langevin on Valley (arguments curve..w as `Valley.coefficients`)."""
    M = x.shape[0]
    for b in prange((M + block - 1) // block):
        lo = b * block
        hi = min(M, lo + block)
        new, buf = scratch(x)
        for t in range(t0, t0 + K):
            eta = sched(es, t)
            sigma = math.sqrt(2.0 * eta * sched(ts, t))
            G = valley_fields(block64(x, lo, hi), curve, radius, kind, kk0, alpha, omega,
                              nodes_s, nodes_k, s_lo, s_hi, wall, w)[1]
            overdamped_rows(x, G, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf)


@pjit
def overdamped_multiwell(x, dstep, t0, K, k0, k1, rep0, es, ts, centers, hessians, depths, tau,
                         bound, block):
    """Overdamped Langevin on MultiWell (centers (K, d), hessians (K, d, d), depths (K,))."""
    M = x.shape[0]
    for b in prange((M + block - 1) // block):
        lo = b * block
        hi = min(M, lo + block)
        new, buf = scratch(x)
        for t in range(t0, t0 + K):
            eta = sched(es, t)
            sigma = math.sqrt(2.0 * eta * sched(ts, t))
            G = multiwell_fields(block64(x, lo, hi), centers, hessians, depths, tau)[1]
            overdamped_rows(x, G, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf)


@register(ScaleSymmetric, OverdampedLangevin)
def _overdamped_scale_symmetric(sim, t0, K, k0, k1):
    dyn, pot = sim.dynamics, sim.potential
    overdamped_scale_symmetric(sim.state["x"], sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                               schedule_code(dyn.step), schedule_code(dyn.temperature), pot.sxx,
                               pot.sxy, pot.l2, sim.divergence_bound, BLOCK)


@register(Valley, OverdampedLangevin)
def _overdamped_valley(sim, t0, K, k0, k1):
    dyn = sim.dynamics
    overdamped_valley(sim.state["x"], sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                      schedule_code(dyn.step), schedule_code(dyn.temperature),
                      *sim.potential.coefficients(), sim.divergence_bound, BLOCK)


@register(MultiWell, OverdampedLangevin)
def _overdamped_multiwell(sim, t0, K, k0, k1):
    dyn = sim.dynamics
    with threadpool_limits(1, user_api="blas"):
        overdamped_multiwell(sim.state["x"], sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                             schedule_code(dyn.step), schedule_code(dyn.temperature),
                             *sim.potential.coefficients(), sim.divergence_bound, BLOCK)
