"""Critical points of a landscape: minimize |grad U|^2 from many starts, then Hessian indices.

A critical point (minimum, saddle or maximum) is a zero of the gradient; it is a minimum of
f(x) = |grad U(x)|^2 / 2, whose gradient is H(x) grad U(x) (one Hessian-vector product).  On
a constrained potential (a sphere: `project`, `retract`, `riemannian_hvp`) grad U is the
Riemannian gradient g = P grad U and the Riemannian gradient of f is Hess_R g
(`riemannian_hvp(x, g)`): D f[v] = <g, D g[v]> = <g, Hess_R v> because g is tangent.
`critical_points` runs the batched L-BFGS of `basins.quench` on f from every start at once,
keeps the end points with |grad U| <= `tol` (minima of f with f > 0 are not critical points
of U and are dropped), merges duplicates (`cluster_minima`) and counts the negative
eigenvalues of each one's Hessian (`basins.hessian_spectrum`: dense, tangent space on the
sphere).  Minimizing |grad U|^2 finds critical points of every index, but with a bias set by
the sizes of their basins under this flow: the fractions it reports are those of the points
found, not of all critical points.  Imports neither numba nor cupy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .basins import cluster_minima, hessian_spectrum, quench


class GradNormSquared:
    """f(x) = |grad U(x)|^2 / 2 of a potential U (Riemannian on constrained ones), with
    gradient H grad U; the interface `basins.quench` needs (d, constrained, energy, grad,
    project, retract)."""

    def __init__(self, potential):
        self.potential = potential
        self.d = potential.d
        self.constrained = bool(potential.constrained)
        if self.constrained and not hasattr(potential, "riemannian_hvp"):
            raise ConfigError(f"{type(potential).__name__} is constrained but has no "
                              "riemannian_hvp")

    def project(self, x, v):
        return self.potential.project(x, v)

    def retract(self, x):
        return self.potential.retract(x)

    def gradient_u(self, x):
        """grad U (M, d), projected onto the tangent space on constrained potentials."""
        g = np.asarray(self.potential.grad(x), np.float64)
        return self.potential.project(x, g) if self.constrained else g

    def energy(self, x):
        g = self.gradient_u(x)
        return 0.5 * np.einsum("md,md->m", g, g)

    def grad(self, x, batch=None):
        g = self.gradient_u(x)
        if self.constrained:
            return self.potential.project(x, self.potential.riemannian_hvp(x, g))
        return np.asarray(self.potential.hvp(x, g), np.float64)


@dataclass(frozen=True)
class CriticalPoints:
    """Distinct critical points found: x (K, d), energy (K,) of U, grad_norm (K,) = |grad U|,
    index (K,) = number of Hessian eigenvalues below -rtol max|lambda| over the `dim`
    directions (d, or d - 1 on the sphere), lowest (K,) eigenvalue, hits (K,) = how many
    starts ended there; starts = number of starts, found = how many of them converged."""

    x: np.ndarray
    energy: np.ndarray
    grad_norm: np.ndarray
    index: np.ndarray
    lowest: np.ndarray
    hits: np.ndarray
    dim: int
    starts: int
    found: int

    @property
    def fraction_minima(self) -> float:
        """Fraction of the distinct critical points with index 0."""
        return float(np.mean(self.index == 0)) if self.index.size else float("nan")

    @property
    def fraction_minima_se(self) -> float:
        k = self.index.size
        f = self.fraction_minima
        return float(np.sqrt(f * (1 - f) / k)) if k else float("nan")

    def by_energy(self, edges) -> list[tuple[float, float, int, float, float, float]]:
        """Rows (lo, hi, count, fraction with index 0, mean index / dim, its se) per energy
        bin [lo, hi) (energies in the units of `energy`)."""
        rows = []
        edges = np.asarray(edges, np.float64)
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (self.energy >= lo) & (self.energy < hi)
            n = int(sel.sum())
            if n == 0:
                rows.append((lo, hi, 0, np.nan, np.nan, np.nan))
                continue
            fr = self.index[sel] / self.dim
            rows.append((lo, hi, n, float(np.mean(self.index[sel] == 0)), float(fr.mean()),
                         float(fr.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan))
        return rows

    def table(self) -> str:
        idx = self.index
        lines = [f"{self.found}/{self.starts} starts converged to {idx.size} distinct critical "
                 f"points (dim {self.dim}): index 0: {np.sum(idx == 0)} "
                 f"(fraction {self.fraction_minima:.3f} +- {self.fraction_minima_se:.3f}), "
                 f"index dim: {np.sum(idx == self.dim)}, mean index/dim "
                 f"{np.mean(idx) / self.dim if idx.size else np.nan:.3f}"]
        if idx.size:
            lines.append(f"energy of minima: {np.sort(self.energy[idx == 0])[:5]} ...; "
                         f"max |grad| {self.grad_norm.max():.1e}")
        return "\n".join(lines)


def critical_points(potential, starts, tol: float = 1e-6, max_iter: int = 3000,
                    memory: int = 10, cluster_tol: float | None = None,
                    rtol: float = 1e-7) -> CriticalPoints:
    """Critical points of `potential` reached by minimizing |grad U|^2 / 2 (module docstring)
    from every row of `starts` (M, d) at once.

    tol: |grad U| (energy / length) below which an end point is a critical point;
    cluster_tol: distance under which two end points are the same point (default
    1e-4 sqrt(d)); rtol: an eigenvalue is negative when below -rtol max|lambda|.  The
    Hessians are dense (d up to a few hundred)."""
    starts = np.asarray(starts, np.float64)
    if starts.ndim != 2 or starts.shape[1] != potential.d:
        raise ConfigError(f"starts must have shape (M, {potential.d}), got {starts.shape}")
    if not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol}")
    f = GradNormSquared(potential)
    q = quench(f, starts, gtol=1e-3 * tol, max_iter=max_iter, memory=memory)
    ok = np.isfinite(q.energy) & (np.sqrt(2 * np.maximum(q.energy, 0)) <= tol)
    x = q.x[ok]
    d = potential.d
    dim = d - 1 if f.constrained else d
    if x.shape[0] == 0:
        e = np.zeros(0)
        return CriticalPoints(x, e, e, np.zeros(0, np.int64), e, np.zeros(0, np.int64), dim,
                              starts.shape[0], 0)
    energy = np.asarray(potential.energy(x), np.float64)
    reps, labels = cluster_minima(x, energy, 1e-4 * np.sqrt(d) if cluster_tol is None
                                  else float(cluster_tol))
    hits = np.bincount(labels[labels >= 0], minlength=reps.size)
    xr = x[reps]
    lam = hessian_spectrum(potential, xr)
    scale = np.abs(lam).max(axis=1)
    index = np.sum(lam < -rtol * scale[:, None], axis=1)
    gn = np.sqrt(2 * f.energy(xr))
    return CriticalPoints(xr, energy[reps], gn, index, lam[:, 0], hits, dim,
                          starts.shape[0], int(ok.sum()))


def semicircle_index_fraction(e, e_th: float) -> np.ndarray:
    """Expected index / (N - 1) of a typical critical point of the pure spherical p-spin at
    energy per spin e (N -> infinity; Auffinger, Ben Arous & Cerny 2013): its Riemannian
    Hessian is a GOE matrix of semicircle radius R = 2 sqrt(xi''(1)) shifted by -p e, and
    R / p = |e_th|, so the fraction of negative eigenvalues is the semicircle CDF at
    s = e / |e_th| (0 for e <= e_th = -|e_th|, 1/2 at e = 0, 1 for e >= |e_th|)."""
    s = np.clip(np.asarray(e, np.float64) / abs(e_th), -1.0, 1.0)
    return 0.5 + (s * np.sqrt(1 - s * s) + np.arcsin(s)) / np.pi
