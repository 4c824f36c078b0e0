"""SphericalPSpin: its CPU kernel for overdamped Langevin on the sphere.

One call runs K steps.  Replicas are split into blocks, run in parallel by a thread pool
calling the serial, GIL-free `pspin_block_steps` (a prange wrapper would add ~5-15 s of
compilation per dtype for nothing: each block is one BLAS call per step).  Per step
and block the gradient is one BLAS GEMM x^{(x)(p-1)} (B, N**(p-1)) @ (-p J) (N**(p-1), N),
then the same functions as the reference (`pspin.sphere_project`, `pspin.sphere_retract`,
row functions compiled by `compile_functions`, and the shared rules of `common.STEPS`) give
x <- retract(x + P(-eta grad H + sqrt(2 eta T) xi)).  Noise xi comes from the in-kernel
Philox at the reference's stream positions n = step * N + lane, purpose NOISE.  BLAS runs
single-threaded inside the parallel region.  The family has no scalar step function of its
own: `STEPS` is empty (the sphere's projection and retraction are row functions of
`potentials.pspin`, with a sum over the row).
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS np.dot calls in kernels: loaded now,
# so that threadpool_limits below sees and limits it on the first call too)
from threadpoolctl import threadpool_limits

from .. import rng
from ..backends.jit import compile_functions, jit
from ..backends.registry import register
from ..dynamics import OverdampedLangevin
from ..potentials import pspin
from ..potentials.pspin import SphericalPSpin
from .common import chunk_buffer, compile_steps, noise_chunk, sched, schedule_code

STEPS = ()

# ---------------------------------------------------------------- CPU kernels (backend "numba")

cpu = compile_steps(sys.modules[__name__])
rows = compile_functions(pspin, ["tensor_rows", "pspin_grad", "sphere_project", "sphere_retract"])

PSPIN_BLOCK = 64                # most replicas per GEMM block
PSPIN_BLOCK_ENTRIES = 1 << 21   # cap on B * N**(p-1), the outer-product rows of one block
_POOLS: dict[int, ThreadPoolExecutor] = {}   # worker count -> pool


def block_size(M: int, N: int, p: int) -> int:
    """Replicas per block: all threads busy, <= PSPIN_BLOCK, outer products <= 16 MiB (f64)."""
    per_thread = -(-M // numba.get_num_threads())
    return max(1, min(PSPIN_BLOCK, per_thread, PSPIN_BLOCK_ENTRIES // N ** (p - 1)))


@jit
def pspin_block_steps(x, dstep, lo, hi, t0, K, k0, k1, rep0, es, ts, gmat, p, bound):
    """K overdamped Langevin steps of replicas lo..hi-1 (one GEMM per step for the block)."""
    N = x.shape[1]
    xi = np.zeros((hi - lo, N), dtype=x.dtype)
    c = np.zeros(3, dtype=x.dtype)  # (0, eta, sigma) in the state dtype
    buf, _ = chunk_buffer(N, x)
    for t in range(t0, t0 + K):
        eta = sched(es, t)
        c[1] = eta
        c[2] = cpu.noise_scale(eta, sched(ts, t))
        for r in range(hi - lo):
            if dstep[lo + r] >= 0:
                continue
            z, off = noise_chunk(k0, k1, rng.NOISE, np.uint64(rep0 + lo + r), t * N, N, buf)
            for i in range(N):
                xi[r, i] = z[off + i]
        xb = x[lo:hi]
        dx = cpu.overdamped_update(c[0], rows.pspin_grad(xb, gmat, p), c[1], c[2], xi)
        new = rows.sphere_retract(xb + rows.sphere_project(xb, dx))
        for r in range(hi - lo):
            m = lo + r
            if dstep[m] >= 0:
                continue
            good = True
            for i in range(N):
                good = good & cpu.within_bound(new[r, i], bound)
            if good:
                x[m, :] = new[r, :]
            else:
                dstep[m] = t + 1


def _pool() -> ThreadPoolExecutor:
    n = numba.get_num_threads()
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="pspin")
    return _POOLS[n]


@register(SphericalPSpin, OverdampedLangevin, "numba")
def _overdamped_pspin(sim, t0, K, k0, k1):
    """Blocks of replicas run `pspin_block_steps` (nogil) on a thread pool of
    numba.get_num_threads() workers, each block's rows owned by one thread."""
    dyn, pot = sim.dynamics, sim.potential
    x = sim.state["x"]
    M, N = x.shape
    B = block_size(M, N, pot.p)
    args = (t0, K, k0, k1, sim.first_replica, schedule_code(dyn.step),
            schedule_code(dyn.temperature), pot.gradient_matrix(x.dtype), pot.p,
            sim.divergence_bound)

    def block(lo):
        pspin_block_steps(x, sim.diverged_step, lo, min(M, lo + B), *args)

    with threadpool_limits(1, user_api="blas"):
        list(_pool().map(block, range(0, M, B)))
