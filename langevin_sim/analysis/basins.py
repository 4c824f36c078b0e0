"""Basins of a loss surface: minima, their Hessians, Laplace volumes and occupancies.

Pipeline: `quench` points (batched L-BFGS on `potential.grad`, all replicas at once) to
minima, `cluster_minima` the end points into distinct minima, `hessian_spectrum` at each
(dense `hessian` for small d, `hvp` + Lanczos for a few eigenvalues at large d; the
Riemannian Hessian on the tangent space of constrained potentials), and the Laplace
approximation of each basin's Boltzmann weight at temperature T,

    Z_b = int_basin exp(-U/T) dx  ~=  exp(-U_b/T) (2 pi T)^(m/2) / sqrt(det H_b),
    log Z_b = -U_b/T + (m/2) log(2 pi T) - 1/2 sum_i log lam_i,

m the dimension of the search space (d, or d - 1 on a sphere), lam_i the Hessian
eigenvalues at the minimum (energy / length^2), U_b the minimum's energy.  The predicted
equilibrium occupancy of basin b is Z_b / sum_c Z_c.  `find_basins` does all of this and
counts which minimum each start reaches (basin-of-attraction fractions with binomial
errors); `exact_basin_log_z` integrates exp(-U/T) over each gradient-flow basin by
quadrature (d <= 2, or separable potentials with a 1-D `marginal_energy`),
`isotropic_pair_log_z` in closed form for two isotropic wells at any d;
`run_occupancy` follows the fraction of replicas in each basin over a run's records.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.special import logsumexp

from ..errors import ConfigError, check_positive
from ..io.reader import check_run
from ..potentials.sharpness import hessian_operator
from .stationary import constant_temperature
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..io.reader import Run
    from ..potentials.base import Potential
    from .critical import GradNormSquared, WeightDecayed


def _rowdot(a, b):
    return np.einsum("md,md->m", a, b)


# -- quench ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Quench(Result):
    """End points of a batched quench: x (M, d), energy (M,), gradient norm (M,) (Riemannian
    on constrained potentials), iterations (M,) and converged (M,) = grad_norm <= gtol."""

    x: np.ndarray
    energy: np.ndarray
    grad_norm: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    gtol: float

    def table(self) -> str:
        ok = self.converged
        return (f"quench of {ok.size} points: {ok.sum()} converged (|grad| <= {self.gtol:g}), "
                f"iterations median {np.median(self.iterations):.0f} max {self.iterations.max()}, "
                f"max |grad| {np.nanmax(self.grad_norm):.2e}, energies "
                f"[{np.nanmin(self.energy):.6g}, {np.nanmax(self.energy):.6g}]")

    def plot(self, ax: Axes) -> Axes:
        """Histogram of the end points' energies."""
        ax.hist(self.energy[np.isfinite(self.energy)], bins=50)
        ax.set(xlabel="energy at end point", ylabel="count",
               title=f"quench: {self.converged.sum()}/{self.converged.size} converged")
        return ax


def quench(potential: Potential | GradNormSquared | WeightDecayed, x: ArrayLike,
           gtol: float = 1e-8, max_iter: int = 1000, memory: int = 8, max_step: float | None = None
           ) -> Quench:
    """Minimize U from every row of x (M, d) at once by L-BFGS with Armijo backtracking.

    Each replica keeps its own `memory` curvature pairs (s, y) and stops when
    |grad U| <= gtol (energy / length) or its line search stalls at rounding level.
    `max_step` caps |dx| per iteration (length units): set it below the basin size to
    keep the descent from jumping over barriers.  The path then follows the direction of
    L-BFGS, a quasi-Newton one: its end point is the minimum of the start's gradient-flow
    basin where the two directions agree in sign (1-D, separable wells), not in general (on a
    network's loss the basins it reaches change with max_step; for the gradient flow's run
    gradient descent, e.g. `critical.descent_census(dynamics=SGD(lr))`).  Constrained potentials: Riemannian L-BFGS, gradient and direction
    projected with `project`, steps `retract`ed, pairs transported by projection.  Rows
    with non-finite entries are returned unchanged and unconverged.  Float64.
    """
    x = np.array(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != potential.d:
        raise ConfigError(f"x must have shape (M, {potential.d}), got {x.shape}")
    if not gtol > 0 or int(max_iter) < 1 or int(memory) < 1:
        raise ConfigError(f"need gtol > 0, max_iter >= 1, memory >= 1; got {gtol}, {max_iter}, "
                          f"{memory}")
    con = bool(potential.constrained)
    tangent = (lambda z, v: potential.project(z, v)) if con else (lambda z, v: v)
    retract = potential.retract if con else (lambda z: z)

    def grad(z):
        return tangent(z, np.asarray(potential.grad(z), np.float64))

    M, d = x.shape
    m = int(memory)
    finite = np.all(np.isfinite(x), axis=1)
    if con:
        x[finite] = retract(x[finite])
    f = np.full(M, np.nan)
    g = np.full((M, d), np.nan)
    f[finite] = potential.energy(x[finite])
    g[finite] = grad(x[finite])
    gn = np.sqrt(_rowdot(g, g))
    S, Y, rho = np.zeros((m, M, d)), np.zeros((m, M, d)), np.zeros((m, M))
    iters = np.zeros(M, np.int64)
    active = finite & (gn > gtol)
    for it in range(int(max_iter)):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        xa, ga, fa = x[a], g[a], f[a]
        # two-loop recursion, newest pair first; rho = 0 marks an empty or rejected pair
        slots = [(it - 1 - j) % m for j in range(min(it, m))]
        q, coef = -ga, []
        for s in slots:
            c = rho[s, a] * _rowdot(S[s, a], q)
            q = q - c[:, None] * Y[s, a]
            coef.append(c)
        gamma = np.minimum(1.0, 1.0 / np.maximum(gn[a], 1e-300))
        have = np.zeros(a.size, bool)
        for s in slots:
            use = (rho[s, a] > 0) & ~have
            yy = _rowdot(Y[s, a], Y[s, a])
            gamma = np.where(use, 1.0 / np.where(use, rho[s, a] * yy, 1.0), gamma)
            have |= use
        r = gamma[:, None] * q
        for s, c in zip(reversed(slots), reversed(coef)):
            b = rho[s, a] * _rowdot(Y[s, a], r)
            r = r + (c - b)[:, None] * S[s, a]
        p = tangent(xa, r)
        gp = _rowdot(ga, p)
        bad = ~(gp < 0)  # not a descent direction: restart from steepest descent
        if bad.any():
            p[bad] = -ga[bad] * gamma[bad, None]
            rho[:, a[bad]] = 0.0
            gp = _rowdot(ga, p)
        if max_step is not None:
            pn = np.sqrt(_rowdot(p, p))
            p *= np.minimum(1.0, max_step / np.maximum(pn, 1e-300))[:, None]
            gp = _rowdot(ga, p)
        # Armijo backtracking, all replicas at once (slack: rounding of f)
        t = np.ones(a.size)
        xn, fn = xa.copy(), fa.copy()
        pend = np.ones(a.size, bool)
        slack = 4 * np.finfo(np.float64).eps * np.abs(fa)
        for _ in range(60):
            i = np.flatnonzero(pend)
            if i.size == 0:
                break
            xt = retract(xa[i] + t[i, None] * p[i])
            ft = potential.energy(xt)
            ok = ft <= fa[i] + 1e-4 * t[i] * gp[i] + slack[i]
            xn[i[ok]], fn[i[ok]] = xt[ok], ft[ok]
            pend[i[ok]] = False
            t[i[~ok]] *= 0.5
        gnew = grad(xn)
        sv = tangent(xn, xn - xa)
        yv = gnew - tangent(xn, ga)
        sy = _rowdot(sv, yv)
        k = it % m
        S[k, a], Y[k, a] = sv, yv
        rho[k, a] = np.where(sy > 1e-12 * np.sqrt(_rowdot(sv, sv) * _rowdot(yv, yv)),
                             1.0 / np.where(sy > 0, sy, 1.0), 0.0)
        x[a], f[a], g[a] = xn, fn, gnew
        gn[a] = np.sqrt(_rowdot(gnew, gnew))
        iters[a] += 1
        active[a] = (gn[a] > gtol) & ~pend   # a stalled line search ends the replica
    return Quench(x, f, gn, iters, finite & (gn <= gtol), float(gtol))


# -- minima -------------------------------------------------------------------------------
QUENCH_KW = ("gtol", "max_iter", "memory", "max_step")   # quench's keywords, forwarded


def check_forwarded(fn: Callable, kw: dict, forwarded: Collection[str] = QUENCH_KW) -> None:
    """ConfigError naming `fn` and its keywords when `kw` (the **kw that `fn` passes on to
    `quench`) holds a name outside `forwarded`: a typo is reported where it was made."""
    bad = [k for k in kw if k not in forwarded]
    if not bad:
        return
    own = [p.name for p in inspect.signature(fn).parameters.values()
           if p.kind is not p.VAR_KEYWORD]
    valid = own + [k for k in forwarded if k not in own]
    close = difflib.get_close_matches(bad[0], valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"{fn.__name__} got an unexpected keyword {bad[0]!r}{hint}; its keywords: "
                      f"{', '.join(valid)}")


def cluster_minima(x: ArrayLike, energy: ArrayLike, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Group points x (M, d) within distance `tol` (length) of a representative.

    Greedy leader clustering in order of increasing energy: the lowest unassigned point
    becomes a representative and takes every unassigned point within `tol`.  Returns
    (representatives (K,) row indices, ordered by energy, ties within 1e-9 max(1, |U|) broken
    by position (x_1, then x_2, ...); labels (M,) in 0..K-1, -1 for non-finite rows)."""
    x, energy = np.asarray(x, np.float64), np.asarray(energy, np.float64)
    labels = np.full(x.shape[0], -1, np.int64)
    free = np.all(np.isfinite(x), axis=1) & np.isfinite(energy)
    reps = []
    for i in np.argsort(np.where(free, energy, np.inf), kind="stable"):
        if not free[i]:
            continue
        near = free & (np.sqrt(((x - x[i]) ** 2).sum(axis=1)) <= tol)
        labels[near] = len(reps)
        free &= ~near
        reps.append(i)
    reps = np.asarray(reps, np.int64)
    if reps.size == 0:
        return reps, labels
    e = energy[reps]
    key = np.round(e / max(np.abs(e).max(), 1.0), 9)
    order = np.lexsort(tuple(x[reps].T[::-1]) + (key,))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return reps[order], np.where(labels >= 0, rank[np.maximum(labels, 0)], -1)


def _tangent_maps(potential, x, riemannian: bool):
    """(up, down, m): orthonormal coordinates of the search space at x (d,).  Ambient: the
    identity, m = d.  Riemannian (codimension-1 constraint, unit normal n from x -
    project(x, x)): the last d-1 columns B of the Householder reflection Q = I - 2 w w^T /
    |w|^2 mapping e_1 to -+n; up(u) = B u, down(v) = B^T v, applied implicitly (O(d)) to
    vectors (m,) or column stacks (m, k)."""
    if not riemannian:
        return (lambda u: u), (lambda v: v), x.size
    n = x - potential.project(x[None], x[None])[0]
    w = n / np.linalg.norm(n)
    w[0] += 1.0 if w[0] >= 0 else -1.0
    c = 2.0 / (w @ w)

    def reflect(v):
        return v - c * np.tensordot(w, w @ v, axes=0)

    def up(u):
        return reflect(np.concatenate([np.zeros((1,) + u.shape[1:]), u]))

    return up, (lambda v: reflect(v)[1:]), x.size - 1


def hessian_spectrum(potential: Potential | WeightDecayed, x: ArrayLike, k: int | None = None,
                     riemannian: bool | None = None) -> np.ndarray:
    """Hessian eigenvalues at points x (K, d) (energy / length^2), ascending.

    k=None: the full spectrum (K, m) from the dense Hessian (`potential.hessian`, or
    `riemannian_hessian` restricted to the tangent space, m = d - 1, on constrained
    potentials); for d up to a few thousand.  k: the k smallest eigenvalues (K, k) by Lanczos
    (scipy `eigsh` on `hvp` / `riemannian_hvp` as a LinearOperator in tangent coordinates,
    O(d) memory); the full spectrum, needed for Laplace volumes, only comes from k=None.
    """
    x = np.atleast_2d(np.asarray(x, np.float64))
    if riemannian is None:
        riemannian = bool(potential.constrained)
    if riemannian and not hasattr(potential, "riemannian_hvp"):
        raise ConfigError(f"{type(potential).__name__} has no Riemannian Hessian; pass "
                          "riemannian=False for the ambient one")
    out = []
    for xi in x:
        up, down, m = _tangent_maps(potential, xi, riemannian)
        if k is None:
            H = (potential.riemannian_hessian(xi[None]) if riemannian
                 else np.asarray(potential.hessian(xi[None]), np.float64))[0]
            B = up(np.eye(m))
            out.append(np.linalg.eigvalsh(B.T @ H @ B))
            continue
        if not 1 <= int(k) < m:
            raise ConfigError(f"k must be in 1..{m - 1} for Lanczos (use k=None for all {m})")
        op = hessian_operator(potential, xi[None], riemannian)[0]
        A = LinearOperator((m, m), matvec=lambda u: down(op(up(np.ravel(u))[None])[0]),
                           dtype=np.float64)
        out.append(np.sort(eigsh(A, k=int(k), which="SA", return_eigenvectors=False,
                                 v0=np.ones(m))))
    return np.asarray(out)


def laplace_log_z(energy: ArrayLike, eigenvalues: ArrayLike, temperature: float) -> np.ndarray:
    """log Z_b = -U_b/T + (m/2) log(2 pi T) - 1/2 sum_i log lam_i  (K,) for energies U_b (K,)
    and full Hessian spectra (K, m); NaN where some lam_i <= 0 (not a minimum).  Z_b has
    units length^m."""
    lam = np.atleast_2d(np.asarray(eigenvalues, np.float64))
    T = check_positive("temperature", temperature)
    with np.errstate(invalid="ignore", divide="ignore"):
        logdet = np.where(np.all(lam > 0, axis=1), np.log(np.abs(lam)).sum(axis=1), np.nan)
    return -np.asarray(energy, np.float64) / T + 0.5 * lam.shape[1] * np.log(2 * np.pi * T) \
        - 0.5 * logdet


def occupancy_from_log_z(log_z: ArrayLike) -> np.ndarray:
    """Occupancies Z_b / sum_c Z_c (K,) from log Z (K,), NaN entries (saddles) left out."""
    lz = np.asarray(log_z, np.float64)
    ok = np.isfinite(lz)
    out = np.zeros_like(lz)
    out[ok] = np.exp(lz[ok] - logsumexp(lz[ok]))
    return out


def isotropic_pair_log_z(d: int, temperature: float, separation: float,
                         curvatures: Sequence[float] | np.ndarray,
                         depths: Sequence[float] | np.ndarray = (0.0, 0.0)) -> np.ndarray:
    """log Z_b (2,) of the two label basins {x : q_b(x) < q_c(x)} of two isotropic wells
    q_j(x) = E_j + (k_j / 2)|x - c_j|^2 in d dimensions, centres `separation` apart
    (`curvatures` (k_0, k_1) energy / length^2, `depths` (E_0, E_1) energy), at temperature
    T: exact at any d and T, in the units of `laplace_log_z` (length^d).  The basins are the
    hard minimum min_j q_j's (`MultiWell`'s recorded `basin` label; its smooth minimum of
    softness tau differs by at most tau ln 2 in energy).  For k_0 > k_1 the sharp well's
    basin is a ball (an Apollonius sphere, shifted by the depth gap), so each Z_b is
    exp(-E_b/T) (2 pi T/k_b)^(d/2) times a noncentral chi-square probability of the
    Gaussian N(c_b, T/k_b I); for k_0 = k_1 a half-space (a normal probability)."""
    T, D = float(temperature), float(separation)
    k = np.asarray(curvatures, np.float64).reshape(2)
    E = np.asarray(depths, np.float64).reshape(2)
    if not (int(d) == d and d >= 1):
        raise ConfigError(f"d must be a positive integer, got {d}")
    if not (T > 0 and D > 0 and np.all(k > 0)):
        raise ConfigError(f"temperature, separation and curvatures must be > 0, got "
                          f"{temperature}, {separation}, {curvatures}")
    if k[0] < k[1]:                      # the sharper well first
        return isotropic_pair_log_z(d, T, D, k[::-1], E[::-1])[::-1]
    from scipy.stats import ncx2, norm
    gauss = 0.5 * d * np.log(2 * np.pi * T / k) - E / T
    if k[0] == k[1]:                     # q_0 < q_1 where x_1 < s (c_0 = 0, c_1 = D e_1)
        s = D / 2 + (E[1] - E[0]) / (k[0] * D)
        sd = np.sqrt(T / k[0])
        return gauss + np.array([norm.logcdf(s / sd), norm.logsf((s - D) / sd)])
    gap = k[0] - k[1]                    # the ball |x - m| < R, m = -(k_1 D / gap) e_1
    r2 = (k[1] * D / gap) ** 2 + (k[1] * D * D - 2 * (E[0] - E[1])) / gap
    if r2 <= 0:                          # the sharp well is nowhere the lower one
        return np.array([-np.inf, gauss[1]])
    to_m = np.array([k[1] * D / gap, k[0] * D / gap])   # |c_b - m|
    inside = ncx2.logcdf(r2 * k[0] / T, d, to_m[0] ** 2 * k[0] / T)
    outside = ncx2.logsf(r2 * k[1] / T, d, to_m[1] ** 2 * k[1] / T)
    return gauss + np.array([inside, outside])


@dataclass(frozen=True)
class Basins(Result):
    """Distinct minima found by quenching `n_starts` starts, with their basin statistics.

    points (K, d) representatives ordered by energy (K,); eigenvalues (K, m) full Hessian
    spectra; counts (K,) starts that reached each; n_unconverged starts that reached none
    within the quench budget; log_z (K,) Laplace log-weights at `temperature` (None if no
    temperature was given); tol the clustering distance.
    """

    points: np.ndarray
    energy: np.ndarray
    eigenvalues: np.ndarray
    counts: np.ndarray
    n_starts: int
    n_unconverged: int
    temperature: float | None
    log_z: np.ndarray | None
    tol: float

    @property
    def index(self) -> np.ndarray:
        """(K,) number of negative Hessian eigenvalues (0 for minima, >= 1 for saddles)."""
        return (self.eigenvalues < 0).sum(axis=1)

    @property
    def fraction(self) -> np.ndarray:
        """(K,) basin-of-attraction fractions counts / n_starts."""
        return self.counts / self.n_starts

    @property
    def fraction_se(self) -> np.ndarray:
        """(K,) binomial standard errors sqrt(p (1 - p) / n_starts)."""
        p = self.fraction
        return np.sqrt(p * (1 - p) / self.n_starts)

    @property
    def predicted(self) -> np.ndarray | None:
        """(K,) Laplace occupancies Z_b / sum Z (None without a temperature)."""
        return None if self.log_z is None else occupancy_from_log_z(self.log_z)

    def table(self) -> str:
        T = "" if self.temperature is None else f", T = {self.temperature:g}"
        rows = [f"{self.points.shape[0]} minima from {self.n_starts} starts "
                f"({self.n_unconverged} unconverged){T}",
                f"{'basin':>5} {'energy':>10} {'position':>26} {'index':>5} {'lam_min':>9} "
                f"{'lam_max':>9} {'sum log lam':>11} {'log Z':>9} {'Laplace P':>9} "
                f"{'attraction':>16}"]
        pred = self.predicted
        for b in range(self.points.shape[0]):
            pos = ", ".join(f"{v:.3f}" for v in self.points[b, :3]) + (
                ", ..." if self.points.shape[1] > 3 else "")
            lam = self.eigenvalues[b]
            lz = "" if self.log_z is None else f"{self.log_z[b]:9.4f}"
            pr = "" if pred is None else f"{pred[b]:9.4f}"
            rows.append(f"{b:5d} {self.energy[b]:10.5f} {'(' + pos + ')':>26} {self.index[b]:5d} "
                        f"{lam.min():9.4g} {lam.max():9.4g} {np.log(np.abs(lam)).sum():11.4f} "
                        f"{lz:>9} {pr:>9} {self.fraction[b]:8.4f} +- {self.fraction_se[b]:.4f}")
        return "\n".join(rows)

    def plot(self, ax: Axes) -> Axes:
        """Hessian spectrum of each minimum (eigenvalue against rank, log scale where all are
        positive), labelled with its energy and, with a temperature, Laplace occupancy."""
        from matplotlib.ticker import MaxNLocator, NullFormatter

        pred = self.predicted
        for b, lam in enumerate(self.eigenvalues):
            lab = f"basin {b}: U = {self.energy[b]:.3g}" + (
                "" if pred is None else f", Laplace P = {pred[b]:.3f}")
            ax.plot(np.arange(1, lam.size + 1), lam, "o-", ms=3, label=lab)
        if np.all(self.eigenvalues > 0):
            ax.set_yscale("log")
            lo, hi = float(np.min(self.eigenvalues)), float(np.max(self.eigenvalues))
            if hi / lo >= 10:     # (within a decade the minor labels are the only ones)
                ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="eigenvalue rank", ylabel="Hessian eigenvalue",
               title="Hessian spectra at the minima")
        ax.legend(fontsize="small")
        return ax


def find_basins(potential: Potential, starts: ArrayLike, temperature: float | None = None,
                tol: float = 1e-4, **quench_kw: Any) -> Basins:
    """Quench `starts` (M, d), cluster the converged end points within `tol` (length) into
    minima, and compute each minimum's full Hessian spectrum and (with a temperature)
    Laplace log Z.  counts / n_starts are the basin-of-attraction fractions of the start
    distribution (use `max_step` in `quench_kw` to keep each start in its basin; see
    `quench` for when that basin is the gradient flow's)."""
    check_forwarded(find_basins, quench_kw)
    q = quench(potential, starts, **quench_kw)
    reps, labels = cluster_minima(q.x[q.converged], q.energy[q.converged], tol)
    if reps.size == 0:
        raise ConfigError(f"no start converged (|grad| <= {q.gtol:g}) within the quench budget; "
                          "raise max_iter or gtol")
    pts = q.x[q.converged][reps]
    lam = hessian_spectrum(potential, pts)
    E = q.energy[q.converged][reps]
    log_z = None if temperature is None else laplace_log_z(E, lam, temperature)
    return Basins(pts, E, lam, np.bincount(labels, minlength=reps.size), q.x.shape[0],
                  int((~q.converged).sum()), None if temperature is None else float(temperature),
                  log_z, float(tol))


def assign_basins(potential: Potential, x: ArrayLike, basins: Basins, method: str = "quench",
                  tol: float | None = None, **quench_kw: Any) -> np.ndarray:
    """(M,) basin labels of points x (M, d): "quench" quenches them and takes the minimum
    within `tol` (default basins.tol) of the end point, -1 if none (a minimum not in
    `basins`, or unconverged); "nearest" takes the nearest minimum (a Voronoi region rule,
    exact only when the basin boundaries are the bisectors).  Non-finite rows get -1."""
    check_forwarded(assign_basins, quench_kw)
    x = np.asarray(x, np.float64)
    finite = np.all(np.isfinite(x), axis=1)
    labels = np.full(x.shape[0], -1, np.int64)
    if method == "quench":
        q = quench(potential, x, **quench_kw)
        z, ok = q.x, q.converged
    elif method == "nearest":
        z, ok = x, finite
    else:
        raise ConfigError(f"method must be 'quench' or 'nearest', got {method!r}")
    dist = np.sqrt(((z[ok, None, :] - basins.points[None]) ** 2).sum(axis=2))
    near = dist.argmin(axis=1)
    if method == "quench":
        lim = basins.tol if tol is None else tol
        near = np.where(dist[np.arange(near.size), near] <= lim, near, -1)
    labels[ok] = near
    return labels


# -- exact basin weights by quadrature -------------------------------------------------------
def _intervals_1d(u, T):
    """Split a 1-D grid energy u (n,) at its interior local maxima; log of the trapezoid
    integral of exp(-u/T) (in grid-spacing units) over each piece, and the piece's
    boundaries as grid indices (edges (P+1,))."""
    top = np.flatnonzero((u[1:-1] > u[:-2]) & (u[1:-1] >= u[2:])) + 1
    edges = np.concatenate([[0], top, [u.size - 1]])
    w = -(u - u.min()) / T
    logs = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        seg = w[lo:hi + 1]
        c = seg.max()
        ex = np.exp(seg - c)
        logs.append(c + np.log(ex.sum() - 0.5 * (ex[0] + ex[-1])))
    return np.asarray(logs) - u.min() / T, edges


def _default_bounds(basins: Basins, T: float) -> np.ndarray:
    r = 10.0 * np.sqrt(T / max(basins.eigenvalues.min(), 1e-12))
    return np.stack([basins.points.min(axis=0) - r, basins.points.max(axis=0) + r], axis=1)


def _check_edge(u_edge, u_min, T):
    if np.exp(-(np.min(u_edge) - u_min) / T) > 1e-12:
        raise ConfigError("exp(-U/T) is not negligible at the quadrature bounds "
                          f"(U - U_min = {np.min(u_edge) - u_min:.3g} at T = {T:g}); widen bounds")


def exact_basin_log_z(potential: Potential, basins: Basins, temperature: float,
                      bounds: ArrayLike | None = None, n_grid: int | None = None,
                      **quench_kw: Any) -> np.ndarray:
    """log int_{basin b} exp(-U/T) dx (K,) by quadrature over each minimum's gradient-flow
    basin, for `basins.points`.

    Separable potentials (a 1-D `marginal_energy`, U = sum_i u(x_i), e.g. DoubleWell, any d)
    and d = 1: the 1-D line is split at the local maxima of u on a grid of n_grid (default
    20001) points and exp(-u/T) integrated by the trapezoid rule on each piece; a basin is
    the product of the pieces holding its coordinates.  d = 2: midpoint rule on an
    n_grid x n_grid (default 401) grid whose cells are labelled by `assign_basins`
    (quench, with `quench_kw`, e.g. max_step).  bounds (d, 2) default to the minima
    +- 10 sqrt(T / lam_min); ConfigError if exp(-U/T) is not negligible (1e-12) at them, or
    for other potentials.  Same units as `laplace_log_z` (length^d), so the two compare.
    """
    check_forwarded(exact_basin_log_z, quench_kw, ("method", "tol") + QUENCH_KW)
    T = float(temperature)
    pts = basins.points
    d = pts.shape[1]
    B = _default_bounds(basins, T) if bounds is None else \
        np.asarray(bounds, np.float64).reshape(d, 2)
    separable = hasattr(potential, "marginal_energy")
    if separable or d == 1:
        lo, hi = B[:, 0].min(), B[:, 1].max()
        y = np.linspace(lo, hi, n_grid or 20001)
        u = potential.marginal_energy(y) if separable else potential.energy(y[:, None])
        _check_edge(u[[0, -1]], u.min(), T)
        logs, edges = _intervals_1d(u, T)
        piece = np.clip(np.searchsorted(y[edges], pts, side="right") - 1, 0, logs.size - 1)
        return logs[piece].sum(axis=1) + d * np.log(y[1] - y[0])
    if d != 2:
        raise ConfigError(f"exact basin quadrature needs d <= 2 or a separable potential "
                          f"(marginal_energy); {type(potential).__name__} has d = {d}")
    n = n_grid or 401
    axes = [np.linspace(a, b, n + 1) for a, b in B]
    mids = [0.5 * (g[1:] + g[:-1]) for g in axes]
    X = np.stack(np.meshgrid(*mids, indexing="ij"), axis=-1).reshape(-1, 2)
    u = potential.energy(X)
    grid_u = u.reshape(n, n)
    _check_edge(np.concatenate([grid_u[0], grid_u[-1], grid_u[:, 0], grid_u[:, -1]]), u.min(), T)
    labels = assign_basins(potential, X, basins, **quench_kw)
    cell = np.log(np.diff(axes[0])[0] * np.diff(axes[1])[0])
    return np.array([logsumexp(-u[labels == b] / T) + cell if np.any(labels == b) else -np.inf
                     for b in range(pts.shape[0])])


# -- occupancy over time ----------------------------------------------------------------------
@dataclass(frozen=True)
class Occupancy(Result):
    """Fraction of replicas in each basin at each record, against predictions.

    time (n,); counts (n, K) replicas per basin; alive (n,) finite replicas; final (K,) and
    final_se (K,) the occupancy pooled over the last `tail` records: the mean over replicas
    of each replica's time-averaged indicator, se = their standard deviation / sqrt(M)
    (replicas are independent; correlation between records is accounted for); replicas: that
    M, the replicas alive in all `tail` records.  laplace (K,) and exact (K,) predicted
    occupancies (None when unavailable); exact_by names how the exact one was computed.
    """

    time: np.ndarray
    counts: np.ndarray
    alive: np.ndarray
    final: np.ndarray
    final_se: np.ndarray
    tail: int
    replicas: int
    laplace: np.ndarray | None = None
    exact: np.ndarray | None = None
    exact_by: str = "exact quadrature"

    @property
    def fractions(self) -> np.ndarray:
        """(n, K) counts / alive."""
        return self.counts / np.maximum(self.alive, 1)[:, None]

    @property
    def se(self) -> np.ndarray:
        """(n, K) binomial standard errors of `fractions` at each record."""
        p = self.fractions
        return np.sqrt(p * (1 - p) / np.maximum(self.alive, 1)[:, None])

    def z(self, which: str = "exact") -> np.ndarray:
        """(K,) (final - p) / se against prediction p, which = "exact" or "laplace".

        se is the larger of the measured final_se (Wald) and the se that p implies (score):
        sqrt(p (1 - p) c / M) over the M replicas, c = final_se^2 M / (final (1 - final)) the
        measured ratio of the variance of a replica's time average to one draw's (1 at
        tail = 1, < 1 where records decorrelate), c = 1 (the largest) where final is 0 or 1
        and cannot measure it.  final_se alone is 0 there: none of 2048 replicas at p = 2e-4
        was |z| ~ 1e296, and is now -sqrt(M p / (1 - p)) = -0.64.  se = 0 (p and final both
        0 or 1) gives z = 0 when they agree, +-inf when not."""
        ref = self.exact if which == "exact" else self.laplace
        if ref is None:
            raise ConfigError(f"no {which} prediction in this Occupancy")
        f, p = self.final, np.clip(ref, 0.0, 1.0)
        spread = f * (1 - f)
        c = np.where(spread > 0, self.final_se ** 2 * self.replicas / np.where(spread > 0,
                                                                                 spread, 1), 1.0)
        se = np.maximum(self.final_se, np.sqrt(p * (1 - p) * c / self.replicas))
        diff = f - ref
        return np.where(se > 0, diff / np.where(se > 0, se, 1.0),
                        np.where(diff == 0, 0.0, np.copysign(np.inf, diff)))

    def table(self) -> str:
        rows = [f"occupancy over the last {self.tail} record(s) (mean over {self.alive[-1]} "
                f"replicas, se across replicas)",
                f"{'basin':>5} {'sampled':>18} {'Laplace':>9} {'z':>6} {'exact':>9} {'z':>6}"]
        zl = self.z("laplace") if self.laplace is not None else None
        ze = self.z("exact") if self.exact is not None else None
        for b in range(self.final.size):
            lap = "" if zl is None else f"{self.laplace[b]:9.4f} {zl[b]:6.2f}"
            ex = "" if ze is None else f"{self.exact[b]:9.4f} {ze[b]:6.2f}"
            rows.append(f"{b:5d} {self.final[b]:9.4f} +- {self.final_se[b]:.4f} {lap:>16} {ex:>16}")
        rest = 1.0 - self.final.sum()
        if rest > 1e-12:
            rows.append(f"{'none':>5} {rest:9.4f}   (in no listed basin)")
        if ze is None:
            rows.append("(no exact column: quadrature of the basins' weights is for d <= 2 or a "
                        "separable potential; in any d, a MultiWell of two isotropic wells has "
                        "its closed form by method='observable' (--method observable))")
        return "\n".join(rows + [self.verdict()])

    def verdict(self, k: float = 4.0) -> str:
        """One line: is the sampled occupancy within k se of the exact prediction (else of
        the Laplace one, itself an approximation)?"""
        which = "exact" if self.exact is not None else "laplace"
        if which == "laplace" and self.laplace is None:
            return "no prediction to compare with"
        zmax = float(np.max(np.abs(self.z(which))))
        ok = "CONSISTENT with" if zmax <= k else "DIFFERS from"
        name = self.exact_by if which == "exact" else "the Laplace approximation"
        return f"sampled occupancy {ok} {name} (max |z| = {zmax:.2f}, tolerance {k:g} se)"

    def plot(self, ax: Axes) -> Axes:
        """Fraction in each basin over time (+- 2 se band), Laplace (dashed) and exact
        (dotted) predictions."""
        p, se = self.fractions, self.se
        for b in range(p.shape[1]):
            line, = ax.plot(self.time, p[:, b], label=f"basin {b}")
            ax.fill_between(self.time, p[:, b] - 2 * se[:, b], p[:, b] + 2 * se[:, b],
                            color=line.get_color(), alpha=0.2)
            if self.laplace is not None:
                ax.axhline(self.laplace[b], color=line.get_color(), ls="--", lw=1)
            if self.exact is not None:
                ax.axhline(self.exact[b], color=line.get_color(), ls=":", lw=1.5)
        keys = ([] if self.laplace is None else ["dashed: Laplace"]) + \
            ([] if self.exact is None else ["dotted: exact"])
        ax.set(xlabel="time", ylabel="fraction of replicas",
               title="occupancy" + (f" ({', '.join(keys)})" if keys else ""))
        ax.legend(fontsize="small")
        return ax


def occupancy(labels: ArrayLike, n_basins: int, time: ArrayLike | None = None, tail: int = 1,
              alive: ArrayLike | None = None, laplace: ArrayLike | None = None,
              exact: ArrayLike | None = None, exact_by: str = "exact quadrature") -> Occupancy:
    """Occupancy from basin labels (n, M) in 0..n_basins-1 (-1: in none of them) of records
    at `time` (n,) (default 0..n-1); `alive` (n, M) bool leaves out diverged replicas
    (default all alive).  The pooled estimate uses the replicas alive in all `tail` last
    records; exact_by: how `exact` was computed, for the verdict."""
    L = np.asarray(labels, np.int64)
    if L.ndim != 2:
        raise ConfigError(f"labels must have shape (n_records, M), got {L.shape}")
    n = L.shape[0]
    if not 1 <= int(tail) <= n:
        raise ConfigError(f"tail must be in 1..{n} records, got {tail}")
    alive = np.ones(L.shape, bool) if alive is None else np.asarray(alive, bool)
    counts = np.stack([((L == b) & alive).sum(axis=1) for b in range(n_basins)], axis=1)
    keep = alive[-int(tail):].all(axis=0)
    ind = np.stack([(L[-int(tail):, keep] == b).mean(axis=0) for b in range(n_basins)])
    Mk = int(keep.sum())
    if Mk < 2:
        raise ConfigError(f"need >= 2 replicas alive in the last {tail} records, got {Mk}")
    time = np.arange(n, dtype=np.float64) if time is None else np.asarray(time, np.float64)
    return Occupancy(time, counts, alive.sum(axis=1), ind.mean(axis=1),
                     ind.std(axis=1, ddof=1) / np.sqrt(Mk), int(tail), Mk,
                     None if laplace is None else np.asarray(laplace),
                     None if exact is None else np.asarray(exact), exact_by)


def default_basins(potential: Potential, temperature: float | None = None, starts: int = 1000,
                   seed: int = 0, **kw: Any) -> Basins:
    """`find_basins` from `starts` draws of the potential's own initial distribution
    (`default_init` of standard normals from numpy's Generator(seed)): the wells a
    potential is built around, e.g. every MultiWell centre, every DoubleWell corner."""
    check_forwarded(default_basins, kw, ("tol",) + QUENCH_KW)
    z = np.random.default_rng(seed).standard_normal((int(starts), potential.d))
    return find_basins(potential, potential.default_init(z), temperature=temperature, **kw)


def _label_gibbs(potential: Potential, to_basin: np.ndarray, basins: Basins,
                 T: float) -> np.ndarray:
    """Gibbs probability (K,) of the region whose `basin` label maps (`to_basin`) to each
    of `basins`, by the midpoint rule on a grid over `_default_bounds` (d <= 2: 20001
    points in d = 1, 401 x 401 in d = 2).  On a ShiftedMultiWell the labels (unshifted
    wells) do not split space at the saddles, so the gradient-flow basins' weights
    (`exact_basin_log_z`) are not what a recorded label samples."""
    d = potential.d
    B = _default_bounds(basins, T)
    n = 20001 if d == 1 else 401
    axes = [np.linspace(a, b, n + 1) for a, b in B]
    mids = [0.5 * (g[1:] + g[:-1]) for g in axes]
    X = np.stack(np.meshgrid(*mids, indexing="ij"), axis=-1).reshape(-1, d)
    u = np.concatenate([np.asarray(potential.energy(c), np.float64)
                        for c in np.array_split(X, max(1, X.shape[0] // 4096))])
    edge = np.any(np.isclose(X, X.min(axis=0)) | np.isclose(X, X.max(axis=0)), axis=1)
    _check_edge(u[edge], u.min(), T)
    w = np.exp(-(u - u.min()) / T)
    raw = np.asarray(potential.basin(X), np.int64)
    lab = np.where(raw < to_basin.size, to_basin[np.minimum(raw, to_basin.size - 1)], -1)
    K = basins.points.shape[0]
    return np.bincount(lab[lab >= 0], weights=w[lab >= 0], minlength=K)[:K] / w.sum()


def occupancy_temperature(run: Run, temperature: float | None = None) -> float:
    """The temperature `run_occupancy` weighs the basins at: `temperature`, else the run's
    constant one; ConfigError (naming `sgd_basins` for SGD runs) unless it is > 0."""
    T = constant_temperature(run.config) if temperature is None else float(temperature)
    if not T > 0:
        got = (f"this run's is {T:g} ({run.config['dynamics']['class']} without Langevin "
               "noise)" if temperature is None else f"got {temperature}")
        raise ConfigError(
            f"Boltzmann basin weights need a temperature > 0; {got}.  For SGD runs use "
            "langevin_sim.analysis.sgd_basins: basin_noise (each basin's matched temperature, "
            "to pass as run_occupancy(run, temperature=...)), label_occupancy, "
            "blowtorch_occupancy (analysis/notebooks/claim2b_flat_minima_sgd.ipynb)")
    return T


def run_occupancy(run: Run, basins: Basins | None = None, method: str = "quench", tail: int = 1,
                  temperature: float | None = None,
                  records: slice | Sequence[int] | np.ndarray | None = None, exact: bool = True,
                  starts: int = 1000, **quench_kw: Any) -> tuple[Basins, Occupancy]:
    """Basins of a run's potential and the occupancy of each over the run's records.

    basins default to `default_basins` (from `starts` draws) at the run's constant
    temperature.  records: indices
    of the records to use (default all).  method: "quench" or "nearest" label the recorded
    positions (`assign_basins`); "observable" uses the recorded `basin` observable (e.g.
    MultiWell's lowest-quadratic label), mapped to the minima by the potential's `basin` of
    each minimum; no positions needed.  The Laplace prediction is the basins' occupancy, the
    exact one `exact_basin_log_z` where that applies (d <= 2 or a separable potential; None
    otherwise or with exact=False); with method "observable" the exact one is the Gibbs
    probability of each label's region, which is what the labels sample: by quadrature for
    d <= 2, and in any d for a MultiWell of two isotropic wells (H_j = k_j I) by
    `isotropic_pair_log_z` (of the wells' hard minimum: the smooth minimum of softness tau
    differs by at most tau ln 2 in energy, near the wells' boundary).
    """
    run = check_run(run, "run_occupancy")
    check_forwarded(run_occupancy, quench_kw, ("tol",) + QUENCH_KW)
    if method not in ("quench", "nearest", "observable"):
        raise ConfigError(f"method must be 'quench', 'nearest' or 'observable', got {method!r}")
    pot = run.potential
    T = occupancy_temperature(run, temperature)
    idx = np.arange(run.n_records) if records is None else np.arange(run.n_records)[records]
    if basins is None:
        basins = default_basins(pot, T, starts=starts, **quench_kw)
    elif basins.temperature != T:
        basins = replace(basins, temperature=T,
                         log_z=laplace_log_z(basins.energy, basins.eigenvalues, T))
    M = run.diverged_step.size
    step = run.step
    div = run.diverged_step
    alive = np.stack([(div < 0) | (div > step[i]) for i in idx])
    if method == "observable":
        if "basin" not in run.names or not hasattr(pot, "basin"):
            raise ConfigError("method='observable' needs a recorded `basin` observable and a "
                              f"potential with `basin` (MultiWell); this run has {run.names}")
        well = pot.basin(basins.points)
        raw = np.stack([np.asarray(run["basin"][int(i)], np.int64) for i in idx])
        to_basin = np.full(int(max(well.max(), raw.max())) + 1, -1)
        to_basin[well[::-1]] = np.arange(well.size)[::-1]   # the lowest minimum of each well
        L = to_basin[raw]
    elif "positions" not in run.names:
        raise ConfigError("the run recorded no positions: rerun it with record_positions true "
                          "(--set record_positions=true), or use method='observable' "
                          "(analysis/basins.py: --method observable)")
    else:
        L = np.empty((idx.size, M), np.int64)
        for r, i in enumerate(idx):
            L[r] = assign_basins(pot, np.asarray(run.positions[int(i)], np.float64), basins,
                                 method, **quench_kw)
    ex, by = None, "exact quadrature"
    if exact and method == "observable":
        if pot.d <= 2:      # the labels' regions, not the gradient-flow basins
            ex = _label_gibbs(pot, to_basin, basins, T)
        else:
            ex = _isotropic_pair_gibbs(pot, to_basin, basins.points.shape[0], T)
            by = "the exact isotropic pair (isotropic_pair_log_z)"
    elif exact and (pot.d <= 2 or hasattr(pot, "marginal_energy")):
        ex = occupancy_from_log_z(exact_basin_log_z(pot, basins, T))
    return basins, occupancy(L, basins.points.shape[0], run.time[idx], tail, alive,
                             basins.predicted, ex, by)


def _isotropic_pair_gibbs(potential: Potential, to_basin: np.ndarray, K: int,
                          T: float) -> np.ndarray | None:
    """Gibbs probability (K,) of the regions whose `basin` label maps (`to_basin`) to each
    basin, for a `MultiWell` (the class itself: a subclass may shift the energy) of two wells
    with isotropic Hessians k_j I, by `isotropic_pair_log_z`; None for any other potential."""
    from ..potentials.multiwell import MultiWell

    if type(potential) is not MultiWell or potential.n_wells != 2:
        return None
    H, d = potential.hessians, potential.d
    k = np.array([H[j].trace() / d for j in range(2)])
    if not all(np.allclose(H[j], k[j] * np.eye(d), rtol=0, atol=1e-10 * k[j]) for j in range(2)):
        return None
    c = potential.centers
    lz = isotropic_pair_log_z(d, T, float(np.linalg.norm(c[1] - c[0])), k, potential.depths)
    p = occupancy_from_log_z(lz)
    out = np.zeros(K)
    for j in range(2):
        if j < to_basin.size and to_basin[j] >= 0:
            out[to_basin[j]] += p[j]
    return out
