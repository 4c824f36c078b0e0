"""ScaleSymmetric, Valley and MultiWell: their CPU kernel for overdamped Langevin.

The three families share one parallel driver, `overdamped_blocks` (one parfor compilation,
~5 s per state dtype, instead of three), so they share this module.  Replicas are split into
blocks (one per prange iteration); per step and block the gradient comes from the same block
functions the NumPy reference uses (`manifolds.scale_symmetric_grad`,
`manifolds.valley_fields`, `multiwell.multiwell_fields`, compiled by `compile_functions`),
evaluated in float64 on the block, and `common.overdamped_rows` applies
x <- x - eta grad U + sqrt(2 eta T) xi with the in-kernel Philox noise at the reference's
stream positions (n = step * d + lane, purpose NOISE) and the divergence check.  float32
states therefore agree with the reference to float32 rounding of the gradient.  BLAS
(MultiWell's block products) runs single-threaded inside the parallel region.  The families
have no scalar step function of their own (their gradients are block functions): `STEPS` is
empty.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import prange
from threadpoolctl import threadpool_limits

from ..backends.jit import compile_functions, jit, pjit
from ..backends.registry import register
from ..dynamics import OverdampedLangevin
from ..potentials import manifolds, multiwell
from ..potentials.manifolds import ScaleSymmetric, Valley
from ..potentials.multiwell import MultiWell
from .common import compile_steps, like, noise_buffer, overdamped_rows, sched, schedule_code

STEPS = ()

# ---------------------------------------------------------------- CPU kernels (backend "numba")

cpu = compile_steps(sys.modules[__name__])
blocks = compile_functions(manifolds, ["layer_products", "scale_symmetric_grad", "profile_value",
                                       "valley_coords", "valley_fields"])
wells = compile_functions(multiwell, ["well_quadratic", "multiwell_fields"])

BLOCK = 256  # replicas per block (one prange iteration)
SCALE_SYMMETRIC, VALLEY, MULTIWELL = 0, 1, 2


@jit
def block64(x, lo, hi):
    """Rows lo..hi-1 of x as a new float64 array."""
    return x[lo:hi].astype(np.float64)


@jit
def scratch(x):
    """Per-block scratch: one new row (d,), a noise buffer for d lanes, a zero offset (d,)."""
    d = x.shape[1]
    return np.empty(d, dtype=x.dtype), noise_buffer(d, x), np.zeros(d)


@jit
def block_gradient(which, xb, fp, a1, a2, a3):
    """Gradient (B, d) of potential family `which` on the float64 block xb, from packed
    coefficients (see `pack`): fp float64 scalars, a1..a3 float64 arrays."""
    if which == SCALE_SYMMETRIC:
        return blocks.scale_symmetric_grad(xb, fp[0], fp[1], fp[2])
    if which == VALLEY:
        return blocks.valley_fields(xb, int(fp[0]), fp[1], int(fp[2]), fp[3], fp[4], fp[5], a1, a2,
                                    fp[6], fp[7], fp[8], a3)[1]
    nw, d = a3.shape[0], xb.shape[1]
    return wells.multiwell_fields(xb, a1.reshape(nw, d), a2.reshape(nw, d, d), a3, fp[0])[1]


@pjit
def overdamped_blocks(x, dstep, t0, K, k0, k1, rep0, es, ts, which, fp, a1, a2, a3, bound, block):
    """Overdamped Langevin on ScaleSymmetric, Valley or MultiWell (`which`), one prange
    iteration per block of `block` replicas."""
    M = x.shape[0]
    for b in prange((M + block - 1) // block):
        lo = b * block
        hi = min(M, lo + block)
        new, buf, zero = scratch(x)
        for t in range(t0, t0 + K):
            eta = sched(es, t)
            sigma = cpu.noise_scale(eta, sched(ts, t))
            G = block_gradient(which, block64(x, lo, hi), fp, a1, a2, a3)
            overdamped_rows(x, G, zero, lo, dstep, t, k0, k1, rep0, like(eta, x), like(sigma, x),
                            bound, new, buf)


def pack(potential) -> tuple:
    """(which, fp, a1, a2, a3) of `block_gradient` for a potential (float64, contiguous)."""
    none = np.zeros(1)
    if isinstance(potential, ScaleSymmetric):
        return SCALE_SYMMETRIC, np.array([potential.sxx, potential.sxy, potential.l2]), none, none, none
    if isinstance(potential, Valley):
        curve, radius, kind, k0, alpha, omega, ns, nk, lo, hi, wall, w = potential.coefficients()
        fp = np.array([curve, radius, kind, k0, alpha, omega, lo, hi, wall], dtype=np.float64)
        return VALLEY, fp, ns, nk, w
    c, H, E, tau = potential.coefficients()
    return MULTIWELL, np.array([tau]), c.ravel(), H.ravel(), E


@register(ScaleSymmetric, OverdampedLangevin, "numba")
@register(Valley, OverdampedLangevin, "numba")
@register(MultiWell, OverdampedLangevin, "numba")
def _overdamped(sim, t0, K, k0, k1):
    dyn = sim.dynamics
    with threadpool_limits(1, user_api="blas"):       # MultiWell's block products
        overdamped_blocks(sim.state["x"], sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                          schedule_code(dyn.step), schedule_code(dyn.temperature),
                          *pack(sim.potential), sim.divergence_bound, BLOCK)
