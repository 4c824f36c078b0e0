"""LinearRegression: its CPU kernel for minibatch SGD.

One prange iteration per replica: the minibatch of each step (`common.minibatch_rows`, the
reference's indices, every `SGD.sampling`), the label shifts of `SGD.label_noise`
(`common.label_shifts`), the mean minibatch gradient (`linreg_batch_grad`), and the SGD update
of the shared rules with `SGD.grad_noise` (`common.sgd_step`).  The family has no step function of its own: `STEPS` is
empty.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ..backends.jit import jit, pjit
from ..backends.registry import register
from ..dynamics import SGD
from ..potentials.linear_regression import LinearRegression
from ..dynamics.sgd import SAMPLING_CODES
from .common import (label_shifts, minibatch_rows, sched, schedule_code, sgd_scratch,
                     sgd_step)

STEPS = ()


# ---------------------------------------------------------------- CPU kernels (backend "numba")

@jit
def linreg_batch_grad(A, y, idx, x, g, shift):
    """Mean minibatch gradient g (d,) of (a.x - y - shift_b)^2 / 2 over the rows idx of A
    (n, d), y (n,) at parameters x (d,), shift (B,) the label shifts of the batch slots
    (`SGD.label_noise`; zeros without) (a function of its own so that its loops vectorize)."""
    g[:] = 0.0
    for b in range(idx.shape[0]):
        a = A[idx[b]]
        r = -y[idx[b]]
        for i in range(x.shape[0]):
            r += a[i] * x[i]
        r -= shift[b]
        for i in range(x.shape[0]):
            g[i] += r * a[i]
    for i in range(x.shape[0]):
        g[i] /= idx.shape[0]


@pjit
def sgd_linear_regression(x, v, dstep, t0, K, k0, k1, rep0, ls, ts, momentum, wd, A, y,
                          batch, sampling, bound, lsig, gsig):
    """Minibatch SGD on LinearRegression (A (n, d), y (n,)); batch = B, 0 for full batch;
    sampling: `sgd.SAMPLING_CODES`; lsig, gsig: label_noise, grad_noise."""
    M = x.shape[0]
    n = A.shape[0]
    B = batch if batch > 0 else n
    for m in prange(M):
        if dstep[m] >= 0:
            continue
        rep = np.uint64(rep0 + m)
        idx, keys, perm, epoch, g, nx, nv, buf, shift, lbuf = sgd_scratch(x, n, B)
        for t in range(t0, t0 + K):
            perm, epoch = minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B, batch == 0,
                                         sampling)
            label_shifts(shift, t, k0, k1, rep, lsig, lbuf)
            linreg_batch_grad(A, y, idx, x[m], g, shift)
            if not sgd_step(x[m], v[m], g, t, k0, k1, rep, sched(ls, t), sched(ts, t), momentum,
                            wd, bound, buf, nx, nv, gsig):
                dstep[m] = t + 1
                break


@register(LinearRegression, SGD, "numba")
def _sgd_linear_regression(sim, t0, K, k0, k1):
    dyn, pot, s = sim.dynamics, sim.potential, sim.state
    dt = s["x"].dtype
    sgd_linear_regression(s["x"], s["v"], sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                          schedule_code(dyn.lr), schedule_code(dyn.temperature), float(dyn.momentum),
                          float(dyn.weight_decay), pot.A.astype(dt), pot.y.astype(dt),
                          int(dyn.batch_size or 0), SAMPLING_CODES[dyn.sampling],
                          sim.divergence_bound, float(dyn.label_noise), float(dyn.grad_noise))
