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
from ..potentials.multiwell import MultiWell, ShiftedMultiWell
from .common import compile_steps, like, noise_buffer, overdamped_rows, sched, schedule_code
from .drivers import Hooks, family

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


# ---------------------------------------------------------------- generic drivers' hooks (CPU)
# The other dynamics run `kernels.drivers` on these; ScaleSymmetric in the state's dtype as
# the reference, Valley and MultiWell in float64 (as `overdamped_blocks`), cast back.

scale = compile_functions(manifolds, ["layer_products", "scale_symmetric_energy",
                                      "scale_symmetric_batch_grad"])


@jit
def scale_symmetric_grad_block(xb, args):
    """Full-batch gradient (B, k) in xb's dtype; args: (sxx, sxy, l2, inputs, targets)."""
    return blocks.scale_symmetric_grad(xb, args[0], args[1], args[2])


@jit
def scale_symmetric_energy_block(xb, args):
    """U (B,) float64."""
    return scale.scale_symmetric_energy(xb, args[3], args[4], args[2]).astype(np.float64)


@jit
def scale_symmetric_batch_grad_hook(x, idx, shift, args, g):
    """g (k,) <- the minibatch gradient of replica x (k,) over samples idx (S,) with label
    shifts shift (S,)."""
    S = idx.shape[0]
    g[:] = scale.scale_symmetric_batch_grad(x.reshape(1, -1), args[3][idx].reshape(1, S),
                                            args[4][idx].reshape(1, S), shift.reshape(1, S),
                                            args[2])[0]


def scale_symmetric_args(pot: ScaleSymmetric, dtype) -> tuple:
    t = np.dtype(dtype).type
    return (t(pot.sxx), t(pot.sxy), t(pot.l2), pot.inputs.astype(dtype), pot.targets.astype(dtype))


@jit
def valley_grad_block(xb, args):
    """grad U (B, d) computed in float64, in xb's dtype; args: `Valley.coefficients()`."""
    return blocks.valley_fields(xb.astype(np.float64), *args)[1].astype(xb.dtype)


@jit
def valley_energy_block(xb, args):
    """U (B,) float64."""
    return blocks.valley_fields(xb.astype(np.float64), *args)[0]


@jit
def multiwell_grad_block(xb, args):
    """grad U (B, d) computed in float64, in xb's dtype; args: `MultiWell.coefficients()`."""
    return wells.multiwell_fields(xb.astype(np.float64), *args)[1].astype(xb.dtype)


@jit
def multiwell_energy_block(xb, args):
    """U (B,) float64."""
    return wells.multiwell_fields(xb.astype(np.float64), *args)[0]


@jit
def shifted_energy_block(xb, args):
    """ShiftedMultiWell's U (B,) float64: the mean over samples i of MultiWell's energy at
    xb - xi_i; args: `MultiWell.coefficients()` + (shifts (n, d),)."""
    c, H, E, tau, xi = args
    x64 = xb.astype(np.float64)
    acc = np.zeros(xb.shape[0])
    for i in range(xi.shape[0]):
        acc += wells.multiwell_fields(x64 - xi[i], c, H, E, tau)[0]
    return acc / xi.shape[0]


@jit
def shifted_grad_block(xb, args):
    """ShiftedMultiWell's full gradient (B, d) computed in float64, in xb's dtype."""
    c, H, E, tau, xi = args
    x64 = xb.astype(np.float64)
    acc = np.zeros(x64.shape)
    for i in range(xi.shape[0]):
        acc += wells.multiwell_fields(x64 - xi[i], c, H, E, tau)[1]
    return (acc / xi.shape[0]).astype(xb.dtype)


@jit
def shifted_batch_grad(x, idx, shift, args, g):
    """g (d,) <- the minibatch gradient of replica x (d,): the mean over samples idx (S,) of
    MultiWell's gradient at x - xi_i (no labels: `shift` is unused)."""
    c, H, E, tau, xi = args
    S, d = idx.shape[0], x.shape[0]
    y = np.empty((S, d))
    for b in range(S):
        for j in range(d):
            y[b, j] = x[j] - xi[idx[b], j]
    G = wells.multiwell_fields(y, c, H, E, tau)[1]
    for j in range(d):
        acc = 0.0
        for b in range(S):
            acc += G[b, j]
        g[j] = acc / S


family(ScaleSymmetric, Hooks(scale_symmetric_grad_block, scale_symmetric_energy_block,
                             scale_symmetric_args, batch_grad=scale_symmetric_batch_grad_hook))
family(Valley, Hooks(valley_grad_block, valley_energy_block, lambda pot, dtype: pot.coefficients()))
family(MultiWell, Hooks(multiwell_grad_block, multiwell_energy_block,
                        lambda pot, dtype: pot.coefficients(), blas=True))
family(ShiftedMultiWell, Hooks(shifted_grad_block, shifted_energy_block,
                               lambda pot, dtype: (*pot.coefficients(), pot.shifts),
                               batch_grad=shifted_batch_grad, blas=True))
