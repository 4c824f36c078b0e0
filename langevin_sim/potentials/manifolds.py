"""Manifolds of minima: the scale-symmetric linear net and valleys with a curvature profile.

The module-level functions are the math, written once: they take (B, d) blocks of replicas
(NumPy or CuPy arrays, via ufuncs and operators only) and compile unchanged with Numba for
the fused kernels in `langevin_sim.kernels.manifolds`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import rng
from ..errors import ConfigError, check_int
from ..rng import row_sum, set_column, sqrt
from .base import Potential, array_module


# ----------------------------------------------------------------------------- scale symmetry

def layer_products(a):
    """p = prod_j a_j (B,) and q_j = prod_{l != j} a_l = dp/da_j (B, k), without division."""
    k = a.shape[1]
    q = np.ones_like(a)
    left = q[:, 0].copy()
    for j in range(k):
        set_column(q, j, left)
        left = left * a[:, j]
    right = np.ones_like(left)
    for j in range(k - 1, -1, -1):
        set_column(q, j, q[:, j] * right)
        right = right * a[:, j]
    return left, q


def scale_symmetric_grad(a, sxx, sxy, l2):
    """Full-batch gradient (B, k) of 1/(2n) sum_i (p x_i - y_i)^2 + l2/2 |a|^2:
    r q + l2 a with residual r = sxx p - sxy (sxx = mean x^2, sxy = mean x y)."""
    p, q = layer_products(a)
    r = sxx * p - sxy
    return r[:, None] * q + l2 * a


def scale_symmetric_energy(a, xin, y, l2):
    """U (B,) = 1/(2n) sum_i (p x_i - y_i)^2 + l2/2 |a|^2 on a block a (B, k); xin, y (n,)."""
    p, _ = layer_products(a)
    res = p[:, None] * xin - y
    return 0.5 * (row_sum(res * res) / xin.shape[0]) + 0.5 * l2 * row_sum(a * a)


def scale_symmetric_batch_grad(a, xb, yb, shift, l2):
    """Minibatch gradient (B, k) r q + l2 a, r = mean_s (p x_s - y_s - shift_s) x_s over each
    row's samples: xb, yb (B, S) inputs and targets, shift (B, S) label shifts (or 0)."""
    p, q = layer_products(a)
    r = row_sum((p[:, None] * xb - yb - shift) * xb) / xb.shape[1]
    return r[:, None] * q + l2 * a


class ScaleSymmetric(Potential):
    """Deep scalar linear net: U(a) = 1/(2n) sum_i (p(a) x_i - y_i)^2 + (l2/2) |a|^2.

    a = (a_1, ..., a_k) in R^k (d = k = `depth`), p(a) = prod_j a_j.  The data loss depends
    on a only through p: with S_xx = mean x_i^2, S_xy = mean x_i y_i it equals
    S_xx/2 (p - p*)^2 + const, p* = S_xy / S_xx, so (for l2 = 0) its minima form the curved
    manifold prod_j a_j = p*.  There the Hessian of the data loss is S_xx q q^T (q_j = dp/da_j),
    of rank one: the transverse curvature S_xx |q|^2 (= S_xx (a_1^2 + a_2^2) for k = 2) grows
    away from the balanced point |a_1| = ... = |a_k|.

    Data: `inputs` x_i default to 1 (n copies); `targets` default to y_i = teacher x_i +
    noise eps_i with eps from the DATA stream of `seed` (label noise).  Finite sum: the
    minibatch loss of batch B is 1/(2|B|) sum_{i in B} (p x_i - y_i)^2 + l2/2 |a|^2.

    Exact imbalance identities (`imbalance` observable D_jl = a_j^2 - a_l^2): any update
    a' = (1 - eta lam) a - eta r q with a scalar residual r (full batch: r = S_xx p - S_xy;
    minibatch: r_B = mean_{i in B} (p x_i - y_i) x_i; lam = l2 + SGD weight decay) gives

        D'_jl = [(1 - eta lam)^2 - eta^2 r^2 prod_{m != j,l} a_m^2] D_jl,

    (the product is 1 for k = 2): gradient flow conserves D, discrete GD shrinks |D| at
    O(eta^2) per step, weight decay multiplies it by (1 - eta lam)^2.  Under isotropic
    Langevin da = -grad U dt + sqrt(2T) dW the Ito terms cancel, dD_12 = -2 l2 D_12 dt +
    2 sqrt(2T) (a_1 dW_1 - a_2 dW_2): D diffuses without drift (l2 = 0), and since
    da_1 da_2 = dp du (u = ln|a_1/a_2| / 2) the Gibbs density exp(-U/T) is uniform in
    ln|a_1/a_2| along the manifold.

    Units: a dimensionless, U in energy units, l2 energy per a^2.  x: (M, k).
    """

    def __init__(self, depth: int = 2, n: int = 1, teacher: float = 1.0, noise: float = 0.0,
                 seed: int = 0, l2: float = 0.0, inputs=None, targets=None):
        depth = check_int("depth", depth, minimum=None)
        if depth < 2:
            raise ConfigError(f"ScaleSymmetric needs depth >= 2 layers, got depth={depth}")
        if not noise >= 0:
            raise ConfigError(f"label noise must be >= 0, got noise={noise}")
        if not l2 >= 0:
            raise ConfigError(f"l2 must be >= 0, got l2={l2}; use l2=0 for no regularizer")
        self.d, self.depth = int(depth), int(depth)
        self.teacher, self.noise, self.seed, self.l2 = float(teacher), float(noise), int(seed), float(l2)
        if inputs is None:
            n = check_int("n", n, minimum=None)
            if n < 1:
                raise ConfigError(f"ScaleSymmetric needs n >= 1 samples, got n={n}")
            inputs = np.ones(n)
        inputs = np.asarray(inputs, dtype=np.float64).ravel()
        if targets is None:
            targets = self.teacher * inputs + self.noise * rng.standard_normal(seed, rng.DATA, inputs.size)
        targets = np.asarray(targets, dtype=np.float64).ravel()
        if inputs.shape != targets.shape or inputs.size < 1:
            raise ConfigError(f"inputs and targets must be non-empty and of equal length, got "
                              f"{inputs.size} inputs and {targets.size} targets")
        if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(targets))):
            raise ConfigError("inputs and targets must be finite")
        self.inputs, self.targets = inputs, targets
        self.n_samples = inputs.size
        self.sxx = float(np.mean(inputs ** 2))
        self.sxy = float(np.mean(inputs * targets))
        if not self.sxx > 0:
            raise ConfigError("all inputs are zero: the loss has no manifold of minima; "
                              "give inputs with mean x^2 > 0")

    def params(self):
        return {"depth": self.depth, "n": self.n_samples, "teacher": self.teacher,
                "noise": self.noise, "seed": self.seed, "l2": self.l2}

    def arrays(self):
        return {"inputs": self.inputs, "targets": self.targets}

    @property
    def p_star(self) -> float:
        """The product p* = S_xy / S_xx on the manifold of data-loss minima."""
        return self.sxy / self.sxx

    def _data(self, x):
        xp = array_module(x)
        return xp.asarray(self.inputs, dtype=x.dtype), xp.asarray(self.targets, dtype=x.dtype)

    def energy(self, x):
        return scale_symmetric_energy(x, *self._data(x), self.l2)

    def residual(self, x, batch=None):
        """(M,) residual r = mean_{i in batch} (p x_i - y_i) x_i (full data if batch is None)."""
        p, _ = layer_products(x)
        if batch is None:
            return self.sxx * p - self.sxy
        xin, y = self._data(x)
        xb, yb = xin[batch], y[batch]
        return ((p[:, None] * xb - yb) * xb).mean(axis=1)

    def grad_noisy_labels(self, x, batch, shift):
        """Gradient (M, d) of the batch loss with labels y_i + shift (batch, shift (M, B))
        (SGD label_noise)."""
        xin, y = self._data(x)
        return scale_symmetric_batch_grad(x, xin[batch], y[batch], shift, self.l2)

    def grad(self, x, batch=None):
        if batch is None:
            return scale_symmetric_grad(x, self.sxx, self.sxy, self.l2)
        xin, y = self._data(x)
        return scale_symmetric_batch_grad(x, xin[batch], y[batch], 0.0, self.l2)

    def batch_residual_second_moment(self, x, batch_size: int):
        """(M,) E[r_B^2] over batches of `batch_size` samples drawn i.i.d. with replacement:
        r^2 + (mean_i rho_i^2 - r^2) / B with rho_i = (p x_i - y_i) x_i and r = mean_i rho_i."""
        xp = array_module(x)
        p, _ = layer_products(x)
        xin, y = self._data(x)
        rho = (p[:, None] * xin - y) * xin
        r = xp.mean(rho, axis=1)
        return r * r + (xp.mean(rho * rho, axis=1) - r * r) / batch_size

    def _pair_products(self, x):
        """c[:, j, l] = prod_{m != j, l} a_m for j != l (M, k, k); zero diagonal."""
        xp = array_module(x)
        M, k = x.shape
        c = xp.zeros((M, k, k), dtype=x.dtype)
        for j in range(k):
            for l in range(j + 1, k):
                keep = [m for m in range(k) if m not in (j, l)]
                v = xp.prod(x[:, keep], axis=1) if keep else xp.ones(M, dtype=x.dtype)
                c[:, j, l] = c[:, l, j] = v
        return c

    def hessian(self, x):
        """Exact Hessian: S_xx q_j q_l + r prod_{m != j,l} a_m (j != l); S_xx q_j^2 + l2 (j = l)."""
        xp = array_module(x)
        _, q = layer_products(x)
        r = self.residual(x)
        H = self.sxx * q[:, :, None] * q[:, None, :] + r[:, None, None] * self._pair_products(x)
        return H + self.l2 * xp.eye(self.d, dtype=x.dtype)

    def hvp(self, x, v):
        xp = array_module(x)
        return xp.einsum("mjl,ml->mj", self.hessian(x), v)

    def observables(self, x, energy=None):
        """product p (M,); imbalance a_j^2 - a_{j+1}^2 and log_ratio ln|a_j / a_{j+1}|
        (M, k-1); curvature S_xx |q|^2 (M,), the transverse curvature of the data loss
        (its only nonzero Hessian eigenvalue on the manifold)."""
        xp = array_module(x)
        p, q = layer_products(x)
        with np.errstate(divide="ignore"):
            la = xp.log(xp.abs(x))
        return {"product": p, "imbalance": x[:, :-1] ** 2 - x[:, 1:] ** 2,
                "log_ratio": la[:, :-1] - la[:, 1:], "curvature": self.sxx * xp.sum(q * q, axis=1)}

    def default_init(self, z):
        """Near the balanced point a_j = |p*|^(1/k) (sign of p* on a_1), plus 0.1 z."""
        base = np.full(self.d, abs(self.p_star) ** (1.0 / self.d))
        base[0] *= -1.0 if self.p_star < 0 else 1.0
        return base + 0.1 * z


# ----------------------------------------------------------------------------- valleys

CURVES = {"line": 0, "circle": 1}
PROFILES = {"exp": 0, "cos": 1, "table": 2}


def exp(x):
    """e^x (compiled targets: `math.exp` on scalars, backends/jit.py PRIMITIVES; numba-cuda
    compiles no np.exp)."""
    return np.exp(x)


def table_index(nodes, s):
    """Index i (0 .. n - 2) of the table interval [nodes[i], nodes[i + 1]] holding s, for s
    within [nodes[0], nodes[n - 1]] (compiled targets: a scan, backends/jit.py PRIMITIVES;
    numba-cuda compiles no np.searchsorted)."""
    return np.minimum(np.searchsorted(nodes, s, side="right") - 1, nodes.shape[0] - 2)


def profile_value(s, kind, k0, alpha, omega, nodes_s, nodes_k):
    """Curvature profile k(s) and its derivatives k'(s), k''(s) at arclength s.

    kind 0 "exp": k0 exp(alpha s); 1 "cos": k0 exp(alpha cos(omega s)); 2 "table": piecewise
    linear through (nodes_s, nodes_k), constant beyond the end nodes (k'' = 0 there and
    between nodes; k' jumps at the nodes).
    """
    if kind == 0:
        k = k0 * exp(alpha * s)
        return k, alpha * k, alpha * alpha * k
    if kind == 1:
        c = np.cos(omega * s)
        w = alpha * omega * np.sin(omega * s)
        k = k0 * exp(alpha * c)
        return k, -w * k, (w * w - alpha * omega * omega * c) * k
    n = nodes_s.shape[0]
    sc = np.minimum(np.maximum(s, nodes_s[0]), nodes_s[n - 1])
    i = table_index(nodes_s, sc)
    slope = (nodes_k[i + 1] - nodes_k[i]) / (nodes_s[i + 1] - nodes_s[i])
    dk = slope * (s == sc)
    return nodes_k[i] + slope * (sc - nodes_s[i]), dk, 0.0 * dk


def valley_coords(x1, x2, curve, radius):
    """Arclength s and signed in-plane distance r to the curve, from the (x_1, x_2) plane.

    curve 0 (line along x_1): s = x_1, r = x_2.  curve 1 (circle of `radius` about the
    origin): s = radius * atan2(x_2, x_1) in (-pi R, pi R], r = sqrt(x_1^2 + x_2^2) - radius.
    """
    if curve == 0:
        return x1 * 1.0, x2 * 1.0
    return radius * np.arctan2(x2, x1), sqrt(x1 * x1 + x2 * x2) - radius


def valley_point(x1, x2, rest, curve, radius, kind, k0, alpha, omega, nodes_s, nodes_k, s_lo,
                 s_hi, wall, w0):
    """Energy, dU/dx_1, dU/dx_2, arclength s and k(s) of `Valley` from the (x_1, x_2) plane and
    rest = sum_{i>=2} w_{i-1} x_i^2, elementwise (arrays (B,) in the reference, one point's
    scalars in the compiled blocks); w0 the in-plane transverse weight."""
    s, r = valley_coords(x1, x2, curve, radius)
    k, dk, _ = profile_value(s, kind, k0, alpha, omega, nodes_s, nodes_k)
    dist2 = w0 * r * r + rest
    over = np.maximum(s - s_hi, 0.0) - np.maximum(s_lo - s, 0.0)
    energy = 0.5 * k * dist2 + 0.5 * wall * over * over
    fs = 0.5 * dk * dist2 + wall * over        # dU/ds
    fr = k * w0 * r                              # dU/dr
    if curve == 0:
        return energy, fs * 1.0, fr * 1.0, s, k
    rho = r + radius                             # grad s = R (-x2, x1)/rho^2, grad r = (x1, x2)/rho
    return (energy, (fr * x1 - fs * radius * x2 / rho) / rho,
            (fr * x2 + fs * radius * x1 / rho) / rho, s, k)


def valley_fields(x, curve, radius, kind, k0, alpha, omega, nodes_s, nodes_k, s_lo, s_hi,
                  wall, w):
    """Energy (B,), gradient (B, d), arclength s (B,) and k(s) (B,) of `Valley` on a block x.

    U = k(s)/2 (w_0 r^2 + sum_{i>=2} w_{i-1} x_i^2) + wall/2 * (excursion of s outside
    [s_lo, s_hi])^2, with (s, r) from `valley_coords`; w (d-1,) transverse weights
    (`valley_point` per point).
    """
    y = x[:, 2:]
    rest = row_sum(w[1:] * y * y)
    energy, g1, g2, s, k = valley_point(x[:, 0], x[:, 1], rest, curve, radius, kind, k0, alpha,
                                        omega, nodes_s, nodes_k, s_lo, s_hi, wall, w[0])
    # whole arrays, no column assignments: compiled, those cost seconds of error formatting
    G = np.concatenate((np.stack((g1, g2), axis=1), k[:, None] * w[1:] * y), axis=1)
    return energy, G, s, k


class Valley(Potential):
    """A curve of exact minima whose transverse curvature varies along it by a profile k(s).

        U(x) = k(s)/2 * (w_0 r^2 + sum_{i>=3} w_{i-2} x_i^2)  [+ walls]

    in d >= 2 dimensions.  The curve lies in the (x_1, x_2) plane: `curve="line"` is the
    x_1 axis (s = x_1, r = x_2); `curve="circle"` the circle of `radius` R about the origin
    (s = R atan2(x_2, x_1) in (-pi R, pi R], r = |(x_1, x_2)| - R; U is singular at the
    centre, which is never visited when k R^2 / T >> 1).  Transverse curvatures are
    k(s) w_i, with `weights` w (d-1,) (default ones).  Profiles (`profile`):
    "exp" k0 exp(alpha s); "cos" k0 exp(alpha cos(omega s)); "table" piecewise linear through
    (`nodes_s`, `nodes_k`), constant beyond the ends.  On the circle the profile must be
    periodic: "cos" with omega R an integer, or a table from -pi R to pi R with equal end values.
    On the line, `bounds` (s_lo, s_hi) add walls wall/2 (s - s_hi)^2 for s > s_hi (and
    likewise below s_lo), so the Gibbs measure is normalizable.

    Exact Gibbs marginal along the curve: the transverse integral of exp(-U/T) is Gaussian,
    so the density per unit arclength is prod_i (k(s) w_i)^(-1/2) prop. to k(s)^(-(d-1)/2) (times
    exp(-walls/T); on the circle up to terms of order exp(-k R^2 / 2T)): the Laplace
    prediction is exact here.  The drift this entropy causes: dU/ds = k'(s)/k(s) * U_transverse,
    whose equilibrium mean is (d-1) T k'/(2k): for "exp", a constant speed -(d-1) T alpha / 2.

    Units: lengths x, s, R; k energy / length^2; wall energy / length^2.  x: (M, d).
    """

    def __init__(self, d: int = 2, curve: str = "line", radius: float = 1.0, profile: str = "exp",
                 k0: float = 1.0, alpha: float = 0.0, omega: float = 1.0, nodes_s=None,
                 nodes_k=None, bounds=None, wall: float = 100.0, weights=None):
        d = check_int("d", d, minimum=None)
        if d < 2:
            raise ConfigError(f"Valley needs d >= 2 (a curve and a transverse direction), got d={d}")
        if curve not in CURVES:
            raise ConfigError(f"unknown curve {curve!r}; use one of {sorted(CURVES)}")
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; use one of {sorted(PROFILES)}")
        self.d, self.curve, self.profile = int(d), curve, profile
        self.radius, self.k0, self.alpha = float(radius), float(k0), float(alpha)
        self.omega, self.wall = float(omega), float(wall)
        if not self.radius > 0:
            raise ConfigError(f"radius must be > 0, got {radius}")
        if profile != "table" and not self.k0 > 0:
            raise ConfigError(f"k0 must be > 0 (curvature scale), got {k0}")
        if not self.wall >= 0:
            raise ConfigError(f"wall stiffness must be >= 0, got {wall}")
        self.weights = np.ones(self.d - 1) if weights is None else np.asarray(weights, np.float64).ravel()
        if self.weights.shape != (self.d - 1,) or not np.all(self.weights > 0):
            raise ConfigError(f"weights must be {self.d - 1} positive numbers, got {weights!r}")
        self.nodes_s = self.nodes_k = None
        if profile == "table":
            if nodes_s is None or nodes_k is None:
                raise ConfigError("profile='table' needs nodes_s and nodes_k (arclengths and curvatures)")
            self.nodes_s = np.asarray(nodes_s, np.float64).ravel()
            self.nodes_k = np.asarray(nodes_k, np.float64).ravel()
            if self.nodes_s.size < 2 or self.nodes_s.shape != self.nodes_k.shape:
                raise ConfigError(f"nodes_s and nodes_k need equal lengths >= 2, got "
                                  f"{self.nodes_s.size} and {self.nodes_k.size}")
            if not np.all(np.diff(self.nodes_s) > 0):
                raise ConfigError(f"nodes_s must increase strictly, got {self.nodes_s}")
            if not np.all(self.nodes_k > 0):
                raise ConfigError(f"nodes_k must be > 0, got {self.nodes_k}")
        if curve == "circle":
            if bounds is not None:
                raise ConfigError("bounds (walls) apply to curve='line' only; the circle is closed")
            period = 2 * math.pi * self.radius
            if profile == "exp":
                raise ConfigError("profile='exp' is not periodic: on the circle use 'cos' or 'table'")
            if profile == "cos" and abs(self.omega * self.radius - round(self.omega * self.radius)) > 1e-9 \
                    or profile == "cos" and round(self.omega * self.radius) == 0:
                raise ConfigError(f"on the circle, omega * radius must be a nonzero integer for a "
                                  f"periodic profile, got {self.omega * self.radius}")
            if profile == "table" and not (
                    np.isclose(self.nodes_s[0], -period / 2, atol=1e-9 * period)
                    and np.isclose(self.nodes_s[-1], period / 2, atol=1e-9 * period)
                    and self.nodes_k[0] == self.nodes_k[-1]):
                raise ConfigError(f"on the circle the table must run from -pi R to pi R "
                                  f"(+-{period / 2:.6g}) with equal end curvatures")
        self.bounds = None
        if bounds is not None:
            if np.ndim(bounds) != 1 or len(bounds) != 2:
                raise ConfigError(f"bounds must be (s_lo, s_hi), got {bounds!r}")
            lo, hi = (float(b) for b in bounds)
            if not lo < hi:
                raise ConfigError(f"bounds must be (s_lo, s_hi) with s_lo < s_hi, got {bounds}")
            self.bounds = (lo, hi)

    def params(self):
        return {"d": self.d, "curve": self.curve, "radius": self.radius, "profile": self.profile,
                "k0": self.k0, "alpha": self.alpha, "omega": self.omega,
                "bounds": None if self.bounds is None else list(self.bounds), "wall": self.wall}

    def arrays(self):
        out = {"weights": self.weights}
        if self.profile == "table":
            out.update(nodes_s=self.nodes_s, nodes_k=self.nodes_k)
        return out

    def coefficients(self, xp=np, dtype=np.float64) -> tuple:
        """Arguments after x of `valley_fields` (arrays in module xp with dtype)."""
        ns = np.array([0.0, 1.0]) if self.nodes_s is None else self.nodes_s
        nk = np.array([1.0, 1.0]) if self.nodes_k is None else self.nodes_k
        lo, hi = self.bounds if self.bounds is not None else (-math.inf, math.inf)
        return (CURVES[self.curve], self.radius, PROFILES[self.profile], self.k0, self.alpha,
                self.omega, xp.asarray(ns, dtype=dtype), xp.asarray(nk, dtype=dtype), lo, hi,
                self.wall, xp.asarray(self.weights, dtype=dtype))

    def _fields(self, x):
        return valley_fields(x, *self.coefficients(array_module(x), x.dtype))

    def energy(self, x):
        return self._fields(x)[0]

    def grad(self, x, batch=None):
        return self._fields(x)[1]

    def curvature(self, s):
        """Profile k(s) at arclengths s (array)."""
        c = self.coefficients()
        return profile_value(np.asarray(s, np.float64), c[2], c[3], c[4], c[5], c[6], c[7])[0]

    def log_density(self, s, temperature: float):
        """Unnormalized log Gibbs density per unit arclength: -(d-1)/2 ln k(s) - walls / T."""
        s = np.asarray(s, np.float64)
        lo, hi = self.bounds if self.bounds is not None else (-math.inf, math.inf)
        over = np.maximum(s - hi, 0.0) - np.maximum(lo - s, 0.0)
        return -0.5 * (self.d - 1) * np.log(self.curvature(s)) - 0.5 * self.wall * over ** 2 / temperature

    def _second_order(self, x):
        """Pieces of the Hessian in (s, r, y) coordinates and the plane geometry."""
        xp = array_module(x)
        c = self.coefficients(xp, x.dtype)
        w = c[-1]
        x1, x2, y = x[:, 0], x[:, 1], x[:, 2:]
        s, r = valley_coords(x1, x2, c[0], self.radius)
        k, dk, d2k = profile_value(s, *c[2:8])
        dist2 = w[0] * r * r + (w[1:] * y * y).sum(axis=1)
        lo, hi = c[8], c[9]
        over = xp.maximum(s - hi, 0.0) - xp.maximum(lo - s, 0.0)
        out = ((s > hi) | (s < lo)).astype(x.dtype)
        M = x.shape[0]
        if self.curve == "line":
            gs = xp.zeros((M, 2), dtype=x.dtype)
            gs[:, 0] = 1.0
            gr = xp.zeros((M, 2), dtype=x.dtype)
            gr[:, 1] = 1.0
            hs = hr = xp.zeros((M, 2, 2), dtype=x.dtype)
        else:
            R = self.radius
            rho = xp.sqrt(x1 * x1 + x2 * x2)
            gs = R * xp.stack([-x2, x1], axis=1) / rho[:, None] ** 2
            gr = xp.stack([x1, x2], axis=1) / rho[:, None]
            a, b = 2 * x1 * x2, x2 * x2 - x1 * x1
            hs = R * xp.stack([xp.stack([a, b], 1), xp.stack([b, -a], 1)], 1) / rho[:, None, None] ** 4
            hr = xp.stack([xp.stack([x2 * x2, -x1 * x2], 1), xp.stack([-x1 * x2, x1 * x1], 1)], 1) \
                / rho[:, None, None] ** 3
        fs = 0.5 * dk * dist2 + self.wall * over
        fr = k * w[0] * r
        uss = 0.5 * d2k * dist2 + self.wall * out
        usr = dk * w[0] * r
        urr = k * w[0]
        H_pp = (uss[:, None, None] * gs[:, :, None] * gs[:, None, :]
                + usr[:, None, None] * (gs[:, :, None] * gr[:, None, :] + gr[:, :, None] * gs[:, None, :])
                + urr[:, None, None] * gr[:, :, None] * gr[:, None, :]
                + fs[:, None, None] * hs + fr[:, None, None] * hr)
        usy = dk[:, None] * w[1:] * y           # d^2U / ds dy_i (M, d-2)
        kyy = k[:, None] * w[1:]                # d^2U / dy_i^2  (M, d-2)
        return H_pp, gs, usy, kyy

    def hessian(self, x):
        """Exact Hessian (M, d, d) by the chain rule through (s, r, x_3..x_d)."""
        xp = array_module(x)
        H_pp, gs, usy, kyy = self._second_order(x)
        M, d = x.shape
        H = xp.zeros((M, d, d), dtype=x.dtype)
        H[:, :2, :2] = H_pp
        H[:, :2, 2:] = gs[:, :, None] * usy[:, None, :]
        H[:, 2:, :2] = H[:, :2, 2:].transpose(0, 2, 1)
        idx = xp.arange(2, d)
        H[:, idx, idx] = kyy
        return H

    def hvp(self, x, v):
        xp = array_module(x)
        H_pp, gs, usy, kyy = self._second_order(x)
        out = xp.empty_like(v)
        out[:, :2] = xp.einsum("mij,mj->mi", H_pp, v[:, :2]) + gs * (usy * v[:, 2:]).sum(axis=1)[:, None]
        out[:, 2:] = usy * (gs * v[:, :2]).sum(axis=1)[:, None] + kyy * v[:, 2:]
        return out

    def observables(self, x, energy=None):
        """s: arclength coordinate (M,); curvature: k(s) (M,); distance: Euclidean distance
        to the curve (M,)."""
        xp = array_module(x)
        s, r = valley_coords(x[:, 0], x[:, 1], CURVES[self.curve], self.radius)
        dist = xp.sqrt(r * r + (x[:, 2:] ** 2).sum(axis=1))
        c = self.coefficients(xp, x.dtype)
        return {"s": s, "curvature": profile_value(s, *c[2:8])[0], "distance": dist}

    def point(self, s, transverse=None) -> np.ndarray:
        """Positions (len(s), d) at arclengths s, displaced by `transverse` (len(s), d-1):
        column 0 along r (in-plane normal), the rest along x_3..x_d."""
        s = np.atleast_1d(np.asarray(s, np.float64))
        t = np.zeros((s.size, self.d - 1)) if transverse is None else np.asarray(transverse, np.float64)
        x = np.empty((s.size, self.d))
        if self.curve == "line":
            x[:, 0], x[:, 1] = s, t[:, 0]
        else:
            th = s / self.radius
            x[:, 0], x[:, 1] = (self.radius + t[:, 0]) * np.cos(th), (self.radius + t[:, 0]) * np.sin(th)
        x[:, 2:] = t[:, 1:]
        return x

    def default_init(self, z):
        """On the curve at the middle of `bounds` (or s = 0), plus 0.1 z."""
        s0 = 0.0 if self.bounds is None else 0.5 * (self.bounds[0] + self.bounds[1])
        return self.point(np.full(z.shape[0], s0)) + 0.1 * z
