"""Critical points of a landscape: minimize |grad U|^2 from many starts, then Hessian indices.

A critical point (minimum, saddle or maximum) is a zero of the gradient; it is a minimum of
f(x) = |grad U(x)|^2 / 2, whose gradient is H(x) grad U(x) (one Hessian-vector product).  On
a constrained potential (a sphere: `project`, `retract`, `riemannian_hvp`) grad U is the
Riemannian gradient g = P grad U and the Riemannian gradient of f is Hess_R g
(`riemannian_hvp(x, g)`): D f[v] = <g, D g[v]> = <g, Hess_R v> because g is tangent.
`critical_points` runs the batched L-BFGS of `basins.quench` on f from every start at once,
keeps the end points with |grad U| <= `tol` (minima of f with f > 0 are not critical points
of U and are dropped), sets aside those far out (|x| above `far` times the largest start's:
asymptotes, where |grad U| decays along an escape to infinity -- a toy net's tanh units
turning into step functions -- not critical points; counted as `escaped`), merges duplicates
(`cluster_minima`) and counts the negative eigenvalues of each one's Hessian
(`basins.hessian_spectrum`: dense, tangent space on the sphere).  Minimizing |grad U|^2 finds critical points of every index, but with a bias set by
the sizes of their basins under this flow: the fractions it reports are those of the points
found, not of all critical points.

On the pure spherical p-spin the expected numbers are known exactly at every N (Kac-Rice,
`kac_rice`), and minima are few enough to be counted outright: `count_minima` quenches U
itself from many starts (every minimum that a start reaches is found; Chao1 estimates the
ones no start reached) and `pspin_minima_census` does so over coupling instances, against
`kac_rice`.  On landscapes with degenerate minima (networks) `descent_census` asks the
question of the essays directly: where does descent from the usual initialization end -- at
the bottom, stuck at a bad minimum or a saddle, or escaped to infinity.  Imports neither
numba nor cupy.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from .basins import cluster_minima, find_basins, hessian_spectrum, quench
from .result import Result

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..dynamics.base import Dynamics
    from ..potentials.base import Potential


class GradNormSquared:
    """f(x) = |grad U(x)|^2 / 2 of a potential U (Riemannian on constrained ones), with
    gradient H grad U; the interface `basins.quench` needs (d, constrained, energy, grad,
    project, retract)."""

    def __init__(self, potential: Potential) -> None:
        self.potential = potential
        self.d = potential.d
        self.constrained = bool(potential.constrained)
        if self.constrained and not hasattr(potential, "riemannian_hvp"):
            raise ConfigError(f"{type(potential).__name__} is constrained but has no "
                              "riemannian_hvp")

    def project(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.potential.project(x, v)

    def retract(self, x: np.ndarray) -> np.ndarray:
        return self.potential.retract(x)

    def gradient_u(self, x: np.ndarray) -> np.ndarray:
        """grad U (M, d), projected onto the tangent space on constrained potentials."""
        g = np.asarray(self.potential.grad(x), np.float64)
        return self.potential.project(x, g) if self.constrained else g

    def energy(self, x: np.ndarray) -> np.ndarray:
        g = self.gradient_u(x)
        return 0.5 * np.einsum("md,md->m", g, g)

    def grad(self, x: np.ndarray, batch: np.ndarray | None = None) -> np.ndarray:
        g = self.gradient_u(x)
        if self.constrained:
            return self.potential.project(x, self.potential.riemannian_hvp(x, g))
        return np.asarray(self.potential.hvp(x, g), np.float64)


@dataclass(frozen=True)
class CriticalPoints(Result):
    """Distinct critical points found: x (K, d), energy (K,) of U, grad_norm (K,) = |grad U|,
    index (K,) = number of Hessian eigenvalues below -rtol max|lambda| over the `dim`
    directions (d, or d - 1 on the sphere), lowest (K,) eigenvalue, hits (K,) = how many
    starts ended there; starts = number of starts, found = how many of them converged to
    these points, escaped = how many converged far out (`critical_points`' `far`: asymptotes
    at infinity, not among the points)."""

    x: np.ndarray
    energy: np.ndarray
    grad_norm: np.ndarray
    index: np.ndarray
    lowest: np.ndarray
    hits: np.ndarray
    dim: int
    starts: int
    found: int
    escaped: int = 0

    @classmethod
    def pooled(cls, parts: Iterable[CriticalPoints]) -> CriticalPoints:
        """The points of several searches (e.g. several coupling instances) as one set."""
        parts = list(parts)
        cat = {f: np.concatenate([getattr(c, f) for c in parts])
               for f in ("x", "energy", "grad_norm", "index", "lowest", "hits")}
        if len({c.dim for c in parts}) != 1:
            raise ConfigError("pooled critical points must share their dimension")
        return cls(**cat, dim=parts[0].dim, starts=sum(c.starts for c in parts),
                   found=sum(c.found for c in parts), escaped=sum(c.escaped for c in parts))

    @property
    def fraction_minima(self) -> float:
        """Fraction of the distinct critical points with index 0."""
        return float(np.mean(self.index == 0)) if self.index.size else float("nan")

    @property
    def fraction_minima_se(self) -> float:
        k = self.index.size
        f = self.fraction_minima
        return float(np.sqrt(f * (1 - f) / k)) if k else float("nan")

    def fraction_minima_text(self) -> str:
        """The index-0 fraction as text: "f +- se", or at 0 (or all) of K, where the binomial
        se is 0, the one-sided 95 % bound (Clopper-Pearson: 1 - 0.05^(1/K), about 3/K)."""
        k, n0 = self.index.size, int(np.sum(self.index == 0))
        if k == 0:
            return "nan"
        bound = 1 - 0.05 ** (1 / k)
        if n0 == 0:
            return f"0 of {k} (< {bound:.2g} at 95 %)"
        if n0 == k:
            return f"{k} of {k} (> {1 - bound:.3g} at 95 %)"
        return f"{self.fraction_minima:.3f} +- {self.fraction_minima_se:.3f}"

    def by_energy(self, edges: ArrayLike) -> list[tuple[float, float, int, float, float, float]]:
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
                 f"points (dim {self.dim}; {self.escaped} more escaped to infinity): "
                 f"index 0: {np.sum(idx == 0)} "
                 f"(fraction {self.fraction_minima_text()}), "
                 f"index dim: {np.sum(idx == self.dim)}, mean index/dim "
                 f"{np.mean(idx) / self.dim if idx.size else np.nan:.3f}"]
        if idx.size:
            lines.append(f"energy of minima: {np.sort(self.energy[idx == 0])[:5]} ...; "
                         f"max |grad| {self.grad_norm.max():.1e}")
        return "\n".join(lines)


REFINE = 1e-3   # `critical_points` searches on from each end point with REFINE x its gtol


def critical_points(potential: Potential, starts: ArrayLike, tol: float = 1e-6,
                    max_iter: int = 3000, memory: int = 10, cluster_tol: float | None = None,
                    rtol: float = 1e-7, far: float = 10.0) -> CriticalPoints:
    """Critical points of `potential` reached by minimizing |grad U|^2 / 2 (module docstring)
    from every row of `starts` (M, d) at once.

    tol: |grad U| (energy / length) below which an end point is a critical point (after a
    further search from it, REFINE times tighter: the point that search reaches);
    cluster_tol: distance under which two end points are the same point (default
    1e-4 sqrt(d)); rtol: an eigenvalue is negative when below -rtol max|lambda|; far: an end
    point with |x| > far * max |start| escaped (an asymptote, counted, not kept; inf keeps
    all).  The Hessians are dense (d up to a few hundred)."""
    starts = np.asarray(starts, np.float64)
    if starts.ndim != 2 or starts.shape[1] != potential.d:
        raise ConfigError(f"starts must have shape (M, {potential.d}), got {starts.shape}")
    if not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol}")
    if not far > 1:
        raise ConfigError(f"far must be > 1 (a multiple of the starts' largest norm), got {far}")
    f = GradNormSquared(potential)
    q = quench(f, starts, gtol=1e-3 * tol, max_iter=max_iter, memory=memory)
    ok = np.isfinite(q.energy) & (np.sqrt(2 * np.maximum(q.energy, 0)) <= tol)
    # polish: an end point at |grad U| <= tol can sit on a nearly flat slope short of any
    # critical point (|H grad U| tiny where H is nearly singular): a toy net's point at loss
    # 2.167005e-5, |grad| 4e-7, index 2, whose search continued reached the critical point
    # 2.167259e-5, |grad| 7e-14, index 1.  Each is searched on, REFINE times tighter, and the
    # point it reaches is kept where |grad U| <= tol there
    xq = q.x.copy()
    if ok.any():
        r = quench(f, q.x[ok], gtol=1e-3 * REFINE * tol, max_iter=max_iter, memory=memory)
        done = np.isfinite(r.energy) & (np.sqrt(2 * np.maximum(r.energy, 0)) <= tol)
        xq[ok] = r.x
        ok[np.flatnonzero(ok)[~done]] = False
    out = np.linalg.norm(xq, axis=1) > far * np.linalg.norm(starts, axis=1).max()
    escaped = int(np.sum(ok & out))
    ok &= ~out
    x = xq[ok]
    d = potential.d
    dim = d - 1 if f.constrained else d
    if x.shape[0] == 0:
        e = np.zeros(0)
        return CriticalPoints(x, e, e, np.zeros(0, np.int64), e, np.zeros(0, np.int64), dim,
                              starts.shape[0], 0, escaped)
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
                          starts.shape[0], int(ok.sum()), escaped)


def semicircle_index_fraction(e: ArrayLike, e_th: float) -> np.ndarray:
    """Expected index / (N - 1) of a typical critical point of the pure spherical p-spin at
    energy per spin e (N -> infinity; Auffinger, Ben Arous & Cerny 2013): its Riemannian
    Hessian is a GOE matrix of semicircle radius R = 2 sqrt(xi''(1)) shifted by -p e, and
    R / p = |e_th|, so the fraction of negative eigenvalues is the semicircle CDF at
    s = e / |e_th| (0 for e <= e_th = -|e_th|, 1/2 at e = 0, 1 for e >= |e_th|)."""
    s = np.clip(np.asarray(e, np.float64) / abs(e_th), -1.0, 1.0)
    return 0.5 + (s * np.sqrt(1 - s * s) + np.arcsin(s)) / np.pi


# ----------------------------------------------------------------------------- counting

@dataclass(frozen=True)
class KacRice:
    """Expected numbers of critical points of the pure spherical p-spin, xi(q) = V q^p, at N
    spins, by index k = 0 .. N - 1 and energy per spin (the Kac-Rice formula in the form of
    Auffinger, Ben Arous & Cerny 2013, exact at every N):

        E Crt_{N,k}(B) = 2 sqrt(2/p) (p-1)^(N/2) E_GOE[exp(-N (p-2)/(2p) l_k^2) 1{e_k in B}],
        e_k = sqrt(2 V (p-1)/p) l_k,

    l_k the (k+1)-th smallest eigenvalue of an N x N GOE matrix (off-diagonal variance
    1/(2N), diagonal 1/N).  The GOE average is a Monte Carlo mean over `samples` matrices:
    energy (S, N) holds e_k per sample, weight (S, N) the bracket's weight times the prefactor.
    p = 2 gives exactly 2 points of each index (the +- eigenvectors)."""

    N: int
    p: int
    variance: float
    energy: np.ndarray
    weight: np.ndarray

    @property
    def samples(self) -> int:
        return self.weight.shape[0]

    def expected(self, index: int | None = 0, e_min: float = -np.inf,
                 e_max: float = np.inf) -> tuple[float, float]:
        """(mean, Monte Carlo se) of the number of critical points of `index` (None: all) with
        energy per spin in [e_min, e_max)."""
        cols = slice(None) if index is None else slice(int(index), int(index) + 1)
        w = np.where((self.energy[:, cols] >= e_min) & (self.energy[:, cols] < e_max),
                     self.weight[:, cols], 0.0).sum(axis=1)
        return float(w.mean()), float(w.std(ddof=1) / math.sqrt(w.size))

    def mean_energy(self, index: int = 0) -> float:
        """Mean energy per spin of the critical points of `index` (all energies)."""
        w = self.weight[:, index]
        return float(np.sum(w * self.energy[:, index]) / np.sum(w))

    def fraction_minima(self) -> float:
        """E[number of minima] / E[number of critical points]."""
        return self.expected(0)[0] / self.expected(None)[0]


def kac_rice(N: int, p: int, variance: float, samples: int = 20000, seed: int = 0,
             chunk: int = 1000) -> KacRice:
    """`KacRice` for N spins: `samples` GOE(N) matrices from numpy's generator at `seed`,
    diagonalized `chunk` at a time (memory chunk N^2 floats)."""
    N, p = int(N), int(p)
    if N < 2 or p < 2 or samples < 2 or not variance > 0:
        raise ConfigError(f"kac_rice needs N >= 2, p >= 2, samples >= 2, variance > 0; got "
                          f"N={N}, p={p}, samples={samples}, variance={variance}")
    rng = np.random.default_rng(seed)
    lam = np.empty((int(samples), N))
    for i in range(0, int(samples), int(chunk)):
        a = rng.standard_normal((min(int(chunk), int(samples) - i), N, N))
        lam[i:i + a.shape[0]] = np.linalg.eigvalsh((a + a.transpose(0, 2, 1)) / (2 * math.sqrt(N)))
    log_c = math.log(2 * math.sqrt(2 / p)) + 0.5 * N * math.log(p - 1)
    weight = np.exp(log_c - N * (p - 2) / (2 * p) * lam ** 2)
    return KacRice(N, p, float(variance), math.sqrt(2 * variance * (p - 1) / p) * lam, weight)


def abc_complexity(p: int) -> tuple[float, float]:
    """(total, minima): N -> infinity limits of (1/N) ln E[number of critical points] and of
    minima for the pure spherical p-spin (ABC 2013): 1/2 ln(p - 1) and
    1/2 ln(p - 1) - (p - 2)/p (the latter at the threshold energy; no minima above it)."""
    if int(p) < 2:
        raise ConfigError(f"the spherical p-spin needs p >= 2, got p={p}")
    return 0.5 * math.log(p - 1), 0.5 * math.log(p - 1) - (p - 2) / p


@dataclass(frozen=True)
class MinimaCount:
    """Distinct minima reached by quenching U from `starts` starts on one landscape: energy (K,)
    (of U), hits (K,) starts that reached each; converged starts; saddles = distinct
    non-minimum end points (quench stopped at a saddle)."""

    energy: np.ndarray
    hits: np.ndarray
    starts: int
    converged: int
    saddles: int

    @property
    def count(self) -> int:
        return int(self.energy.size)

    @property
    def unseen(self) -> float:
        """Chao1 (bias-corrected) estimate of the minima no start reached:
        f1 (f1 - 1) / (2 (f2 + 1)), f1 / f2 = minima reached by exactly one / two starts."""
        f1, f2 = int(np.sum(self.hits == 1)), int(np.sum(self.hits == 2))
        return f1 * (f1 - 1) / (2 * (f2 + 1))


def count_minima(potential: Potential, starts: ArrayLike, tol: float | None = None,
                 gtol: float = 1e-9, max_iter: int = 2000) -> MinimaCount:
    """Quench U (`basins.find_basins`) from every row of `starts` (M, d), merge end points within
    `tol` (default 1e-4 sqrt(d)), keep those whose Hessian (tangent space on the sphere) has
    no negative eigenvalue."""
    starts = np.asarray(starts, np.float64)
    b = find_basins(potential, starts, tol=1e-4 * math.sqrt(potential.d) if tol is None
                    else float(tol), gtol=gtol, max_iter=max_iter)
    m = b.index == 0
    return MinimaCount(b.energy[m], b.counts[m], b.n_starts, b.n_starts - b.n_unconverged,
                       int(np.sum(~m)))


@dataclass(frozen=True)
class MinimaCensus:
    """Minima of the pure spherical p-spin counted on `seeds` coupling instances at N spins,
    against Kac-Rice: counts (I,) per instance, unseen (I,) Chao1 estimates, energies (all
    minima found, per spin) and hits (how many starts reached each), kac (`KacRice`)."""

    N: int
    p: int
    seeds: tuple
    starts: int
    counts: np.ndarray
    unseen: np.ndarray
    energies: np.ndarray
    hits: np.ndarray
    kac: KacRice

    def row(self) -> dict:
        """Mean count +- se over instances, Kac-Rice expectation +- se and their z, the mean
        energy of the minima found against Kac-Rice's, the mean energy descent reaches from a
        uniform start (minima weighted by their hits), the Kac-Rice number of all critical
        points and fraction of minima."""
        n = self.counts.size
        mean = float(self.counts.mean())
        se = float(self.counts.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        ek, ek_se = self.kac.expected(0)
        return {"N": self.N, "instances": n, "starts": self.starts, "mean": mean, "se": se,
                "unseen": float(self.unseen.mean()), "kac": ek, "kac_se": ek_se,
                "z": (mean - ek) / math.hypot(se, ek_se),
                "energy": float(self.energies.mean()) if self.energies.size else float("nan"),
                "energy_reached": float(np.average(self.energies, weights=self.hits))
                if self.energies.size else float("nan"),
                "kac_energy": self.kac.mean_energy(0),
                "total": self.kac.expected(None)[0], "fraction": self.kac.fraction_minima()}


@dataclass(frozen=True)
class DescentCensus(Result):
    """Where descent on U ends from each of M starts (`descent_census`): loss (M,) and
    start_loss (M,) U at the end and at the start, grad_norm (M,) |grad U| at the end
    (Riemannian on the sphere), radius (M,) |x_end| / max |start|, converged (M,)
    grad_norm <= gtol, index (M,) Hessian eigenvalues below -rtol max|lambda| and lowest (M,)
    the lowest one (-1 and nan where not computed: at the bottom, but for the lowest end point
    itself, `bottom_point`, or escaped).  bottom: the
    lowest end loss found, the estimate of the global minimum; an end point is at the bottom
    when loss - bottom <= bottom_rtol * scale, scale = median(start_loss) - bottom.
    diverged: how many replicas of a `dynamics` run before the quench diverged (frozen at
    their last finite state, then quenched from there).  x (M, d): the end points.
    weight_decay: wd of the objective U + wd |x|^2 / 2 that `loss` (and the classes) are of
    (0: U itself)."""

    loss: np.ndarray
    start_loss: np.ndarray
    grad_norm: np.ndarray
    radius: np.ndarray
    converged: np.ndarray
    index: np.ndarray
    lowest: np.ndarray
    bottom: float
    bottom_rtol: float
    far: float
    gtol: float
    diverged: int = 0
    x: np.ndarray | None = None
    weight_decay: float = 0.0

    @property
    def starts(self) -> int:
        return int(self.loss.size)

    @property
    def scale(self) -> float:
        """median(start_loss) - bottom (energy): the descent's drop from a typical start."""
        return float(np.median(self.start_loss) - self.bottom)

    @property
    def at_bottom(self) -> np.ndarray:
        """(M,) ended within bottom_rtol * scale of the lowest loss found."""
        return np.isfinite(self.loss) & (self.loss - self.bottom <= self.bottom_rtol * self.scale)

    @property
    def escaped(self) -> np.ndarray:
        """(M,) ended above the bottom beyond far x the starts' largest norm (an asymptote)."""
        return np.isfinite(self.loss) & ~self.at_bottom & (self.radius > self.far)

    @property
    def stuck(self) -> np.ndarray:
        """(M,) ended above the bottom at a finite place."""
        return np.isfinite(self.loss) & ~self.at_bottom & ~self.escaped

    @property
    def minima(self) -> np.ndarray:
        """(M,) stuck at a converged point with no negative Hessian eigenvalue: a bad minimum
        (to second order; degenerate directions are not resolved)."""
        return self.stuck & self.converged & (self.index == 0)

    @property
    def saddles(self) -> np.ndarray:
        """(M,) stuck at a converged point with a negative Hessian eigenvalue."""
        return self.stuck & self.converged & (self.index > 0)

    @property
    def undecided(self) -> np.ndarray:
        """(M,) stuck but not converged within the iteration budget (a slow valley or plateau)."""
        return self.stuck & ~self.converged

    @property
    def bottom_point(self) -> int:
        """The start whose end point has the lowest loss (its Hessian is computed: is the
        bottom a minimum?)."""
        return int(np.argmin(np.where(np.isfinite(self.loss), self.loss, np.inf)))

    def excess(self) -> np.ndarray:
        """Loss above the bottom (energy) of the end points above it, stuck or escaped."""
        return self.loss[self.stuck | self.escaped] - self.bottom

    def levels(self, rtol: float = 1e-3) -> list[tuple[float, int]]:
        """Distinct losses of the bad minima (`minima`), merged within relative `rtol`: rows
        (loss, starts that ended there), lowest first."""
        e = np.sort(self.loss[self.minima])
        out: list[tuple[float, int]] = []
        for v in e:
            if out and v - out[-1][0] <= rtol * abs(out[-1][0]):
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((float(v), 1))
        return out

    def table(self) -> str:
        n = self.starts
        ex = self.excess() / self.scale
        return (f"descent from {n} starts"
                + (f" on U + {self.weight_decay:g} |x|^2 / 2" if self.weight_decay else "")
                + f": {self.at_bottom.sum()} at the bottom (loss "
                f"{self.bottom:.4g} + {self.bottom_rtol:g} x {self.scale:.4g}), "
                f"{self.stuck.sum()} stuck above it ({self.minima.sum()} at minima, "
                f"{self.saddles.sum()} at saddles, {self.undecided.sum()} not converged), "
                f"{self.escaped.sum()} escaped, {n - np.isfinite(self.loss).sum()} non-finite; "
                f"excess loss / scale above the bottom: "
                + (f"{np.median(ex):.2e} median, {ex.max():.2e} max" if ex.size else "none")
                + f"; {len(self.levels())} distinct bad minimum losses"
                + (f"; the lowest end point has Hessian index {self.index[b]} (lowest "
                   f"eigenvalue {self.lowest[b]:.2g})" if self.index[b := self.bottom_point] >= 0
                   else "")
                + (f"; {self.diverged} diverged in the dynamics" if self.diverged else ""))


class WeightDecayed:
    """The objective U(x) + weight_decay |x|^2 / 2 (energy) of an unconstrained potential U:
    the loss that SGD with (coupled) weight decay descends; energy, grad, hvp and dense
    hessian in float64, for `basins.quench` and `hessian_spectrum`."""

    constrained = False

    def __init__(self, potential: Potential, weight_decay: float) -> None:
        if potential.constrained:
            raise ConfigError(f"weight decay on the constrained {type(potential).__name__} "
                              "changes nothing (|x| is fixed); pass weight_decay=0")
        if not weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        self.potential, self.weight_decay, self.d = potential, float(weight_decay), potential.d

    def energy(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return (np.asarray(self.potential.energy(x), np.float64)
                + 0.5 * self.weight_decay * np.einsum("md,md->m", x, x))

    def grad(self, x: ArrayLike, batch: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return np.asarray(self.potential.grad(x, batch), np.float64) + self.weight_decay * x

    def hvp(self, x: ArrayLike, v: ArrayLike) -> np.ndarray:
        v = np.broadcast_to(np.asarray(v, np.float64), np.shape(x))
        return np.asarray(self.potential.hvp(np.asarray(x, np.float64), v), np.float64) \
            + self.weight_decay * v

    def hessian(self, x: ArrayLike) -> np.ndarray:
        H = np.array(self.potential.hessian(np.asarray(x, np.float64)), np.float64)
        H[:, np.arange(self.d), np.arange(self.d)] += self.weight_decay
        return H


def descent_census(potential: Potential, starts: ArrayLike, gtol: float = 1e-9,
                   max_iter: int = 4000, memory: int = 10, bottom_rtol: float = 1e-6,
                   far: float = 10.0, rtol: float = 1e-6, dynamics: Dynamics | None = None,
                   steps: int = 0, backend: str = "numba", weight_decay: float = 0.0,
                   **quench_kw: Any) -> DescentCensus:
    """Quench U (`basins.quench`, L-BFGS) from every row of `starts` (M, d) and classify each
    end point (`DescentCensus`): at the bottom (within bottom_rtol of the drop from a typical
    start above the lowest loss found), escaped (beyond `far` x the starts' largest norm),
    or stuck above the bottom -- at a minimum or a saddle (Hessian index, eigenvalues below
    -rtol max|lambda|; dense Hessians, computed for the stuck points only) or not converged
    (|grad U| > gtol, energy / length, after max_iter iterations).  Where minima are
    degenerate (a network's symmetries, manifolds of minima) losses, not points, are what can
    be counted: `levels`.

    L-BFGS's long steps decide which basin a start ends in.  To ask where a dynamics ends
    instead, pass `dynamics` (e.g. `SGD(lr, batch_size=None)`: gradient descent) and `steps`:
    the engine (`Simulation`, one replica per start, seed 0, `backend`) runs it first, and the
    quench, with quench_kw's `max_step` (length) below the basins' size, only finishes the
    descent from where it stopped.  A replica that diverges is frozen at its last finite state
    (the Simulation's rule) and finished from there.

    weight_decay wd > 0: the census is of U + wd |x|^2 / 2 (`WeightDecayed`), whose minima are
    finite where U's run off to infinity (a classifier's cross-entropy on separable data);
    a `dynamics` then must carry the same weight decay (SGD(..., weight_decay=wd): its
    coupled decay descends that objective)."""
    starts = np.asarray(starts, np.float64)
    if starts.ndim != 2 or starts.shape[1] != potential.d or starts.shape[0] < 1:
        raise ConfigError(f"starts must have shape (M >= 1, {potential.d}), got {starts.shape}")
    if not far > 1 or not bottom_rtol > 0:
        raise ConfigError(f"need far > 1 (a multiple of the starts' largest norm) and "
                          f"bottom_rtol > 0, got {far}, {bottom_rtol}")
    objective = WeightDecayed(potential, weight_decay) if weight_decay else potential
    if dynamics is not None and getattr(dynamics, "weight_decay", 0.0) != weight_decay:
        raise ConfigError(f"the dynamics' weight_decay {getattr(dynamics, 'weight_decay', 0.0)} "
                          f"is not the census's {weight_decay}: pass the same to both (the "
                          "dynamics would descend another objective)")
    if dynamics is not None and weight_decay and type(dynamics).__name__ != "SGD":
        raise ConfigError(f"{type(dynamics).__name__}'s weight decay is decoupled from the "
                          "gradient: only SGD's descends U + wd |x|^2 / 2; use SGD")
    x, diverged = starts, 0
    if dynamics is not None and int(steps) > 0:
        from ..simulation import Simulation

        sim = Simulation(potential, dynamics, starts.shape[0], backend=backend, init=starts)
        sim.run(int(steps), record_every=int(steps), record_positions=False, progress=False)
        x = np.asarray(sim.state["x"], np.float64)
        diverged = int(np.sum(sim.diverged_step >= 0))
    q = quench(objective, x, gtol=gtol, max_iter=max_iter, memory=memory, **quench_kw)
    start_loss = np.asarray(objective.energy(starts), np.float64)
    finite = np.isfinite(q.energy)
    if not finite.any():
        raise ConfigError("no descent ended at a finite loss")
    radius = np.linalg.norm(q.x, axis=1) / np.linalg.norm(starts, axis=1).max()
    index = np.full(q.energy.size, -1, np.int64)
    lowest = np.full(q.energy.size, np.nan)
    c = DescentCensus(q.energy, start_loss, q.grad_norm, radius, q.converged, index, lowest,
                      float(q.energy[finite].min()), float(bottom_rtol), float(far), float(gtol),
                      diverged, q.x, float(weight_decay))
    k = np.union1d(np.flatnonzero(c.stuck), [c.bottom_point])
    if k.size:
        lam = hessian_spectrum(objective, q.x[k])
        index[k] = np.sum(lam < -rtol * np.abs(lam).max(axis=1)[:, None], axis=1)
        lowest[k] = lam[:, 0]
    return c


def descent_summary(censuses: Iterable[DescentCensus]) -> dict:
    """One row for several landscapes' `DescentCensus`es (e.g. data instances of one net):
    the fractions of starts at the bottom, stuck (at minima, at saddles, not converged) and
    escaped, each the mean over landscapes +- its se (nan for one landscape); pooled counts;
    the excess loss over the bottom of the end points above it (stuck or escaped) in units of
    `scale` (median and max, pooled) and the distinct bad-minimum losses per landscape
    (mean)."""
    cs = list(censuses)
    if not cs:
        raise ConfigError("descent_summary needs at least one census")
    row: dict = {"landscapes": len(cs), "starts": sum(c.starts for c in cs)}
    for name in ("at_bottom", "stuck", "minima", "saddles", "undecided", "escaped"):
        f = np.array([getattr(c, name).mean() for c in cs])
        row[name] = float(f.mean())
        row[name + "_se"] = float(f.std(ddof=1) / math.sqrt(f.size)) if f.size > 1 else math.nan
        row[name + "_n"] = int(sum(getattr(c, name).sum() for c in cs))
    ex = np.concatenate([c.excess() / c.scale for c in cs])
    row["excess_median"] = float(np.median(ex)) if ex.size else math.nan
    row["excess_max"] = float(ex.max()) if ex.size else math.nan
    row["levels"] = float(np.mean([len(c.levels()) for c in cs]))
    row["bottom"] = float(np.median([c.bottom for c in cs]))
    row["scale"] = float(np.median([c.scale for c in cs]))
    row["converged"] = float(np.mean([c.converged.mean() for c in cs]))
    row["diverged"] = int(sum(c.diverged for c in cs))
    return row


def pspin_minima_census(N: int, p: int = 3, seeds: Iterable[int] = range(8), starts: int = 1000,
                        convention: str = "crisanti-sommers", start_seed: int = 1,
                        samples: int = 20000, max_iter: int = 2000) -> MinimaCensus:
    """`count_minima` on `SphericalPSpin(N, p, convention, seed=s)` for every s in `seeds`,
    from `starts` uniform starts on the sphere (numpy generator at start_seed + s), and
    `kac_rice` at the same N, p, variance."""
    from ..potentials import SphericalPSpin

    counts, unseen, energies, hits = [], [], [], []
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ConfigError("pspin_minima_census needs at least one coupling seed")
    for s in seeds:
        pot = SphericalPSpin(int(N), int(p), convention=convention, seed=s)
        z = np.random.default_rng(start_seed + s).standard_normal((int(starts), int(N)))
        c = count_minima(pot, pot.default_init(z), max_iter=max_iter)
        counts.append(c.count)
        unseen.append(c.unseen)
        energies.append(c.energy / N)
        hits.append(c.hits)
    kac = kac_rice(N, p, pot.variance, samples=samples)
    return MinimaCensus(int(N), int(p), seeds, int(starts), np.asarray(counts, np.float64),
                        np.asarray(unseen), np.concatenate(energies), np.concatenate(hits), kac)
