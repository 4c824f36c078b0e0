"""LinearRegression: its hooks for the generic CPU drivers (`kernels.drivers`), its fused
full-batch Langevin step on "cuda", and its row for the cuda row kernels.

The full-batch gradient and energy of a block of replicas are the reference's products
(`linreg_grad_block`, `linreg_energy_block`); minibatch SGD and AdamW (every `SGD.sampling`,
label and gradient noise) run the generic per-replica drivers on `linreg_batch_grad`, the
mean minibatch gradient with label shifts.  Its one step function, `linreg_row`, is the
gradient of one replica for `kernels.rows`.

On "cuda", OverdampedLangevin and UnderdampedLangevin (BAOAB) run the dense Quadratic's fused
path (`quadratic.quadratic_form_steps`): the full-batch gradient is x H - b with H = A^T A / n
and b = A^T y / n, formed once in float64, so a step is ONE (d, d) GEMM for all replicas and
ONE fused kernel launch instead of the reference's two (n, d) products (equal to the
reference to rounding: the same sums in another order).  Every other dynamics (SGD and AdamW
full batch or i.i.d. / epoch minibatches, SGD's label noise, Heun, Leimkuhler-Matthews, MALA)
runs the row kernels of `kernels.rows` on `linreg_row` (one thread per replica, d <= 64);
beyond d = 64 Leimkuhler-Matthews, Heun, MALA and full-batch SGD (without label noise) and
AdamW take the same GEMM path (`quadratic.form_or_rows`).
"""
from __future__ import annotations

import numpy as np

from ..backends.jit import jit
from ..backends.registry import register
from ..dynamics import OverdampedLangevin, UnderdampedLangevin
from ..potentials.linear_regression import LinearRegression
from .drivers import Hooks, family, row_sums
from .quadratic import FORM_OR_ROWS, form_accepts, form_or_rows, quadratic_form_steps
from .rows import row_family

STEPS = ("linreg_row",)


def linreg_row(x, g, w, args, idx, nb, lab, energy):
    """L (float64, when `energy`) of one replica x (d,) over the samples idx[:nb] (nb = 0: all
    n), each label shifted by lab[b], and its gradient mean_b (a_s.x - y_s - lab[b]) a_s
    (s = idx[b]) into g (d,) float64 (`kernels.rows`; w unused); the residuals in float64;
    args: (A (n, d), y (n,)) in float64."""
    A, y = args
    d = x.shape[0]
    n = A.shape[0] if nb == 0 else nb
    for i in range(d):
        g[i] = 0.0
    u = 0.0
    for b in range(n):
        s = b if nb == 0 else idx[b]
        r = -y[s]
        for i in range(d):
            r += A[s, i] * np.float64(x[i])
        if nb > 0:
            r -= lab[b]
        for i in range(d):
            g[i] += r * A[s, i]
        if energy:
            u += r * r
    for i in range(d):
        g[i] = g[i] / n
    return 0.5 * (u / n)


# ---------------------------------------------------------------- hooks (CPU)

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


@jit
def linreg_grad_block(xb, args):
    """Full-batch gradient (x A^T - y) A / n (B, d) in xb's dtype; args: (A, y, n) in it."""
    return ((xb @ args[0].T - args[1]) @ args[0]) / args[2]


@jit
def linreg_energy_block(xb, args):
    """L = mean_i (a_i.x - y_i)^2 / 2 (B,), the squares summed in float64."""
    r = (xb @ args[0].T - args[1]).astype(np.float64)
    return 0.5 * row_sums(r * r) / args[2]


@jit
def linreg_batch_grad_hook(x, idx, shift, args, g):
    """`linreg_batch_grad` with the generic drivers' argument order."""
    linreg_batch_grad(args[0], args[1], idx, x, g, shift)


family(LinearRegression, Hooks(linreg_grad_block, linreg_energy_block,
                               lambda pot, dtype: (pot.A.astype(dtype), pot.y.astype(dtype),
                                                   np.dtype(dtype).type(pot.n_samples)),
                               batch_grad=linreg_batch_grad_hook, blas=True))


# ---------------------------------------------------------------- CUDA kernels (backend "cuda")

def _linreg_form(pot):
    """(H, b, c0) = (A^T A / n, A^T y / n, mean(y^2) / 2): the full-batch gradient x H - b
    and loss x.(x H / 2 - b) + c0."""
    return lambda: (pot.hessian_matrix, pot.A.T @ pot.y / pot.n_samples,
                    0.5 * np.mean(pot.y ** 2))


@register(LinearRegression, OverdampedLangevin, "cuda", first_passage=True)
@register(LinearRegression, UnderdampedLangevin, "cuda", first_passage=True)
def _linreg_cuda(run, sim, t0, K):
    """`quadratic_form_steps` with H and b."""
    quadratic_form_steps(run, sim, t0, K, "linreg", _linreg_form(sim.potential))


def _linreg_dense_cuda(run, sim, t0, K):
    """`form_or_rows` with H and b (minibatches and label noise: the row kernels up to
    rows.MAX_D coordinates, the generic path beyond)."""
    form_or_rows(run, sim, t0, K, "linreg", _linreg_form(sim.potential))


for _dyn in FORM_OR_ROWS:
    register(LinearRegression, _dyn, "cuda", first_passage=True, accepts=form_accepts)(
        _linreg_dense_cuda)


row_family(LinearRegression, "linreg_row",
           lambda pot, xp, dtype: (xp.asarray(pot.A, dtype=np.float64),
                                   xp.asarray(pot.y, dtype=np.float64)), labels=True)
