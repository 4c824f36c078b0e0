"""Fused CPU kernel for overdamped Langevin on the spherical p-spin glass.

One call runs K steps.  Replicas are split into blocks (one per prange iteration); per step
and block the gradient is one BLAS GEMM x^{(x)(p-1)} (B, N**(p-1)) @ (-p J) (N**(p-1), N),
then the same NumPy-level functions as the reference (`pspin.sphere_project`,
`pspin.sphere_retract`, `langevin.overdamped_update`, compiled by `compile_functions`)
give x <- retract(x + P(-eta grad H + sqrt(2 eta T) xi)).  Noise xi comes from the in-kernel
Philox at the reference's stream positions n = step * N + lane, purpose NOISE.  Step size
and noise scale are cast to the state dtype, as NumPy does with Python scalars, so float32
runs round like the reference.  BLAS runs single-threaded inside the parallel region.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS np.dot calls in kernels: loaded now,
# so that threadpool_limits below sees and limits it on the first call too)
from numba import prange
from threadpoolctl import threadpool_limits

from .. import rng
from ..dynamics import OverdampedLangevin
from ..potentials import pspin
from ..potentials.pspin import SphericalPSpin
from .jit import compile_functions, pjit
from .numba_backend import register, schedule_code
from .numba_kernels import block_normals, ok, overdamped_update, pick, sched

_ps = compile_functions(pspin, ["tensor_rows", "pspin_grad", "sphere_project", "sphere_retract"])
pspin_grad, sphere_project, sphere_retract = _ps.pspin_grad, _ps.sphere_project, _ps.sphere_retract

PSPIN_BLOCK = 64                # most replicas per GEMM block
PSPIN_BLOCK_ENTRIES = 1 << 21   # cap on B * N**(p-1), the outer-product rows of one block


def block_size(M: int, N: int, p: int) -> int:
    """Replicas per block: all threads busy, <= PSPIN_BLOCK, outer products <= 16 MiB (f64)."""
    per_thread = -(-M // numba.get_num_threads())
    return max(1, min(PSPIN_BLOCK, per_thread, PSPIN_BLOCK_ENTRIES // N ** (p - 1)))


@pjit
def overdamped_pspin(x, dstep, t0, K, k0, k1, rep0, es, ts, gmat, p, bound, block):
    """K overdamped Langevin steps on SphericalPSpin; gmat = -p J_eff as (N**(p-1), N) in x's dtype."""
    M, N = x.shape
    nb = (M + block - 1) // block
    for b in prange(nb):
        lo = b * block
        hi = min(M, lo + block)
        xi = np.zeros((hi - lo, N), dtype=x.dtype)
        c = np.zeros(3, dtype=x.dtype)  # (0, eta, sigma) in the state dtype
        for t in range(t0, t0 + K):
            eta = sched(es, t)
            c[1] = eta
            c[2] = math.sqrt(2.0 * eta * sched(ts, t))
            for r in range(hi - lo):
                if dstep[lo + r] >= 0:
                    continue
                rep = np.uint64(rep0 + lo + r)
                cur = np.int64(-1)
                z0 = z1 = z2 = z3 = 0.0
                for i in range(N):
                    n = t * N + i
                    if n // 4 != cur:
                        cur = n // 4
                        z0, z1, z2, z3 = block_normals(k0, k1, np.uint64(rng.NOISE), rep, np.uint64(cur))
                    xi[r, i] = pick(z0, z1, z2, z3, n % 4)
            xb = x[lo:hi]
            dx = overdamped_update(c[0], pspin_grad(xb, gmat, p), c[1], c[2], xi)
            new = sphere_retract(xb + sphere_project(xb, dx))
            for r in range(hi - lo):
                m = lo + r
                if dstep[m] >= 0:
                    continue
                good = True
                for i in range(N):
                    good = good and ok(new[r, i], bound)
                if good:
                    x[m, :] = new[r, :]
                else:
                    dstep[m] = t + 1


@register(SphericalPSpin, OverdampedLangevin)
def _overdamped_pspin(sim, t0, K, k0, k1):
    dyn, pot = sim.dynamics, sim.potential
    x = sim.state["x"]
    M, N = x.shape
    with threadpool_limits(1, user_api="blas"):
        overdamped_pspin(x, sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                         schedule_code(dyn.step), schedule_code(dyn.temperature),
                         pot.gradient_matrix(x.dtype), pot.p, sim.divergence_bound,
                         block_size(M, N, pot.p))
