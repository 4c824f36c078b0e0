"""TeacherStudentMLP: its CPU kernel for minibatch SGD.

The forward/backward passes are the potential's own functions (`mlp_forward`,
`mlp_backward`, `squared_error_dout`, activations of `potentials.toynets`), compiled here for
one replica's 2-D arrays; only the two transposed matrix products are given 2-D Numba forms
(`a @ b.T`, `a.T @ b`, which Numba hands to BLAS).  Each replica has its own weights, so there
is no product shared across replicas: a prange thread owns replicas, keeps each one's
parameters in a private buffer for all K steps, and calls BLAS (one thread, see PERF_NOTES) on
its (B, .) minibatch matrices; the update is the shared `common.sgd_step`.  The family has no
scalar step function of its own: `STEPS` is empty.
"""
from __future__ import annotations

import types

import numpy as np
from numba import prange
from threadpoolctl import threadpool_limits

from ..backends.jit import compile_functions, pjit
from ..backends.registry import register
from ..dynamics import SGD
from ..potentials import toynets
from ..potentials.toynets import TeacherStudentMLP
from ..dynamics.sgd import SAMPLING_CODES
from .common import (label_shifts, minibatch_rows, sched, schedule_code, sgd_scratch,
                     sgd_step)

STEPS = ()


# ---------------------------------------------------------------- CPU kernels (backend "numba")

def _mm_nt(a, b):
    """a @ b^T for 2-D arrays (b.T is F-contiguous, so BLAS is used)."""
    return a @ b.T


def _mm_tn(a, b):
    """a^T @ b for 2-D arrays."""
    return a.T @ b


nn = compile_functions(types.SimpleNamespace(**{**vars(toynets), "mm_nt": _mm_nt, "mm_tn": _mm_tn}),
                       ["mm_nt", "mm_tn", "act", "act_d1", "act_d2", "mlp_forward", "mlp_backward",
                        "squared_error_dout"])


@pjit
def sgd_teacher_student(x, v, dstep, t0, K, k0, k1, rep0, ls, ts, momentum, wd, A, y2, batch,
                        sampling, bound, hidden, kind, lsig, gsig):
    """Minibatch SGD on TeacherStudentMLP: A (n, d_in) inputs, y2 (n, 1) labels, `hidden`
    units, activation code `kind`; batch = B, 0 for full batch; sampling: `sgd.SAMPLING_CODES`;
    lsig, gsig: `SGD.label_noise` (labels y + lsig eps_b), `SGD.grad_noise`.  Parameter layout as in
    `toynets` (W1, b1, W2 (1, h), b2)."""
    M, d = x.shape
    n, din = A.shape
    h = hidden
    o1 = h * din
    o2 = o1 + h
    o3 = o2 + h
    B = batch if batch > 0 else n
    for m in prange(M):
        if dstep[m] >= 0:
            continue
        rep = np.uint64(rep0 + m)
        xm = x[m].copy()
        vm = v[m].copy()
        W1 = xm[:o1].reshape(h, din)
        b1 = xm[o1:o2]
        W2 = xm[o2:o3].reshape(1, h)
        b2 = xm[o3:]
        idx, keys, perm, epoch, g, nx, nv, buf, shift, lbuf = sgd_scratch(x, n, B)
        for t in range(t0, t0 + K):
            perm, epoch = minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B, batch == 0,
                                         sampling)
            Ab = A[idx]
            yb = y2[idx]
            if lsig > 0:
                label_shifts(shift, t, k0, k1, rep, lsig, lbuf)
                yb = yb + shift.reshape(B, 1)
            Z, H, out = nn.mlp_forward(Ab, W1, b1, W2, b2, kind)
            dW1, db1, dW2, db2, _ = nn.mlp_backward(Ab, Z, H, W2,
                                                    nn.squared_error_dout(out, yb, B), kind)
            g[:o1] = dW1.ravel()
            g[o1:o2] = db1
            g[o2:o3] = dW2.ravel()
            g[o3:] = db2
            if not sgd_step(xm, vm, g, t, k0, k1, rep, sched(ls, t), sched(ts, t), momentum, wd,
                            bound, buf, nx, nv, gsig):
                dstep[m] = t + 1
                break
        x[m, :] = xm
        v[m, :] = vm


@register(TeacherStudentMLP, SGD, "numba")
def _sgd_teacher_student(sim, t0, K, k0, k1):
    dyn, pot, s = sim.dynamics, sim.potential, sim.state
    dt = s["x"].dtype
    with threadpool_limits(1, user_api="blas"):
        sgd_teacher_student(s["x"], s["v"], sim.diverged_step, t0, K, k0, k1, sim.first_replica,
                            schedule_code(dyn.lr), schedule_code(dyn.temperature),
                            float(dyn.momentum), float(dyn.weight_decay), pot.inputs.astype(dt),
                            pot.labels.astype(dt).reshape(-1, 1), int(dyn.batch_size or 0),
                            SAMPLING_CODES[dyn.sampling], sim.divergence_bound, pot.hidden,
                            pot.kind, float(dyn.label_noise), float(dyn.grad_noise))
