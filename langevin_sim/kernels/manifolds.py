"""ScaleSymmetric, Valley, MultiWell and ShiftedMultiWell: their hooks for the generic drivers.

Every dynamics runs `kernels.drivers` on these block functions, the same ones the NumPy
reference uses (`manifolds.scale_symmetric_grad`, `manifolds.valley_point`,
`multiwell.multiwell_fields`, compiled by `compile_functions`): ScaleSymmetric in the state's
dtype as the reference, Valley and the wells in float64, cast back (float32 states agree with
the reference to float32 rounding of the gradient).  The overdamped pair had a dedicated
prange kernel here, the same algorithm as `drivers.overdamped_driver` (bit-identical states,
~15 % faster) at 25-45 s of cold compilation per dtype on 2 cores: the generic driver
serves it now.
The wells' block products call BLAS (run single-threaded by the drivers).

On "cuda" the row kernels of `kernels.rows` run every dynamics on the row gradients below
(`STEPS`): ScaleSymmetric's, Valley's (the reference's `valley_point`, compiled with its
primitives `exp`, `sqrt`, `table_index`) and the wells' (MultiWell: one zero shift;
ShiftedMultiWell: the mean over its shifts), in float64, the reference's operations per row
(the wells' products H (x - c) in order instead of BLAS: equal to rounding).
"""
from __future__ import annotations

import math

import numpy as np

from ..backends.jit import compile_functions, ijit, jit
from ..potentials import manifolds, multiwell
from ..potentials.manifolds import (ScaleSymmetric, Valley, valley_point)
from ..potentials.manifolds import (  # noqa: F401  (step functions: `STEPS` names them)
    exp, profile_value, sqrt, table_index, valley_coords)
from ..potentials.multiwell import MultiWell, ShiftedMultiWell
from .drivers import Hooks, family
from .rows import row_family


# ---------------------------------------------------------------- row gradients, every target

def scale_symmetric_row(x, g, w, args, idx, nb, lab, energy):
    """U (float64, when `energy`) of one replica a = x (k,) and its gradient r q_j + l2 a_j
    into g (k,) float64, over the samples idx[:nb] (nb = 0: all, r = sxx p - sxy as
    `scale_symmetric_grad`; else r = mean_b (p x_s - y_s - lab[b]) x_s, s = idx[b], as
    `scale_symmetric_batch_grad` with label shifts lab (float64)),
    p and q_j by prefix and suffix products; w[0]: the prefix products; args: (sxx, sxy, l2,
    inputs (n,), targets (n,)) in float64."""
    sxx, sxy, l2, xin, y = args
    k = x.shape[0]
    left = 1.0
    for j in range(k):
        w[0, j] = left
        left = left * np.float64(x[j])
    if nb == 0:
        r = sxx * left - sxy
    else:
        r = 0.0
        for b in range(nb):
            s = idx[b]
            r += (left * xin[s] - y[s] - lab[b]) * xin[s]
        r = r / nb
    right = 1.0
    aa = 0.0
    for j in range(k - 1, -1, -1):
        a = np.float64(x[j])
        g[j] = r * (w[0, j] * right) + l2 * a
        right = right * a
        aa += a * a
    u = 0.0
    if energy:
        n = xin.shape[0] if nb == 0 else nb
        for b in range(n):
            s = b if nb == 0 else idx[b]
            res = left * xin[s] - y[s]
            u += res * res
        u = 0.5 * (u / n) + 0.5 * l2 * aa
    return u


def valley_row(x, g, w, args, idx, nb, lab, energy):
    """U (float64) of one replica x (d,) and its gradient into g (d,) float64, as
    `valley_rows` (w, idx, nb, lab unused); args: `Valley.coefficients()`."""
    curve, radius, kind, k0, alpha, omega, nodes_s, nodes_k, s_lo, s_hi, wall, wt = args
    d = x.shape[0]
    rest = 0.0
    for i in range(2, d):
        y = np.float64(x[i])
        rest += wt[i - 1] * y * y
    e, g1, g2, s, k = valley_point(np.float64(x[0]), np.float64(x[1]), rest, curve, radius, kind,
                                   k0, alpha, omega, nodes_s, nodes_k, s_lo, s_hi, wall, wt[0])
    g[0] = g1
    g[1] = g2
    for i in range(2, d):
        g[i] = k * wt[i - 1] * np.float64(x[i])
    return e


def wells_row(x, g, w, args, idx, nb, lab, energy):
    """The mean over the shifts xi_s (s in idx[:nb]; nb = 0: all) of MultiWell's energy
    (returned, float64) and gradient (into g (d,) float64) at x - xi_s, for one replica x (d,):
    `multiwell_fields`'s streaming log-sum-exp over the wells, in float64; w[0]: the weighted
    sum of the wells' gradients, w[1]: the current well's H_j y; args:
    `MultiWell.coefficients()` + (shifts (n, d),) (MultiWell: one zero row); lab unused (no
    labels)."""
    c, H, E, tau, xi = args
    d, K = x.shape[0], c.shape[0]
    n = xi.shape[0] if nb == 0 else nb
    u = 0.0
    for i in range(d):
        g[i] = 0.0
    for b in range(n):
        s = b if nb == 0 else idx[b]
        m = 0.0
        S = 1.0
        for j in range(K):
            q = 0.0
            for a in range(d):
                acc = 0.0
                for e in range(d):
                    acc += (np.float64(x[e]) - xi[s, e] - c[j, e]) * H[j, e, a]
                w[1, a] = acc
                q += (np.float64(x[a]) - xi[s, a] - c[j, a]) * acc
            q = E[j] + 0.5 * q
            if j == 0:
                m = q
                for a in range(d):
                    w[0, a] = w[1, a]
            else:
                m_new = m if m < q else q
                f_old = math.exp((m_new - m) / tau)
                f_new = math.exp((m_new - q) / tau)
                S = S * f_old + f_new
                for a in range(d):
                    w[0, a] = w[0, a] * f_old + w[1, a] * f_new
                m = m_new
        for a in range(d):
            g[a] += w[0, a] / S
        u += m - tau * math.log(S)
    for a in range(d):
        g[a] = g[a] / n
    return u / n


STEPS = ("exp", "sqrt", "table_index", "profile_value", "valley_coords", "valley_point",
         "scale_symmetric_row", "valley_row", "wells_row")

# row_sum, set_column: the CPU's loops (backends/jit.py CPU_PRIMITIVES), not Numba's axis sum
# and column assignment, whose error formatting compiled for seconds in every pair
blocks = compile_functions(manifolds, ["layer_products", "scale_symmetric_grad", "row_sum",
                                       "set_column"])
# Valley point by point: its reference's elementwise functions compiled on scalars, inlined
# into the row loop of `valley_rows` (compiled on arrays, `valley_fields` took ~5 s cold)
point = compile_functions(manifolds, ["exp", "sqrt", "table_index", "profile_value",
                                      "valley_coords", "valley_point"], ijit)
wells = compile_functions(multiwell, ["well_quadratic", "multiwell_fields", "row_sum"])

# ---------------------------------------------------------------- generic drivers' hooks (CPU)

scale = compile_functions(manifolds, ["layer_products", "scale_symmetric_energy",
                                      "scale_symmetric_batch_grad", "row_sum", "set_column"])


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
    G = scale.scale_symmetric_batch_grad(x.reshape(1, -1), args[3][idx].reshape(1, S),
                                         args[4][idx].reshape(1, S), shift.reshape(1, S), args[2])
    for i in range(g.shape[0]):     # a loop: `g[:] = G[0]` compiled ~2 s of shape-error code
        g[i] = G[0, i]


def scale_symmetric_args(pot: ScaleSymmetric, dtype) -> tuple:
    t = np.dtype(dtype).type
    return (t(pot.sxx), t(pot.sxy), t(pot.l2), pot.inputs.astype(dtype), pot.targets.astype(dtype))


@jit
def valley_rows(xb, args, G):
    """U (B,) float64 of the rows xb (B, d), and their gradient into G (B, d) (None: not
    computed) in G's dtype, both computed in float64 as `valley_fields` (the same operations
    in the same order per point; the transverse sum in order, as the CPU's `row_sum`);
    args: `Valley.coefficients()`."""
    curve, radius, kind, k0, alpha, omega, nodes_s, nodes_k, s_lo, s_hi, wall, w = args
    B, d = xb.shape
    u = np.empty(B)
    for r in range(B):
        rest = 0.0
        for i in range(2, d):
            y = np.float64(xb[r, i])
            rest += w[i - 1] * y * y
        e, g1, g2, s, k = point.valley_point(np.float64(xb[r, 0]), np.float64(xb[r, 1]), rest,
                                             curve, radius, kind, k0, alpha, omega, nodes_s,
                                             nodes_k, s_lo, s_hi, wall, w[0])
        u[r] = e
        if G is not None:
            G[r, 0] = g1
            G[r, 1] = g2
            for i in range(2, d):
                G[r, i] = k * w[i - 1] * np.float64(xb[r, i])
    return u


@jit
def valley_grad_block(xb, args):
    """grad U (B, d) computed in float64, in xb's dtype; args: `Valley.coefficients()`."""
    G = np.empty(xb.shape, xb.dtype)
    valley_rows(xb, args, G)
    return G


@jit
def valley_energy_block(xb, args):
    """U (B,) float64."""
    return valley_rows(xb, args, None)


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


# ---------------------------------------------------------------- row gradients' registration (cuda)

def wells_args(pot: MultiWell, xp, dtype) -> tuple:
    """`wells_row`'s args in float64: MultiWell's coefficients and its shifts (one zero
    row for MultiWell itself)."""
    c, H, E, tau = pot.coefficients(xp)
    xi = pot.shifts if isinstance(pot, ShiftedMultiWell) else np.zeros((1, pot.d))
    return c, H, E, float(tau), xp.asarray(xi, dtype=np.float64)


row_family(ScaleSymmetric, "scale_symmetric_row",
           lambda pot, xp, dtype: (float(pot.sxx), float(pot.sxy), float(pot.l2),
                                   xp.asarray(pot.inputs, dtype=np.float64),
                                   xp.asarray(pot.targets, dtype=np.float64)), labels=True)
row_family(Valley, "valley_row", lambda pot, xp, dtype: pot.coefficients(xp))
row_family(MultiWell, "wells_row", wells_args, scratch=2)
row_family(ShiftedMultiWell, "wells_row", wells_args, scratch=2)
