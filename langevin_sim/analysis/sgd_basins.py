"""Which basin does SGD occupy when its noise differs between basins?

Minibatch noise is state-dependent: near a minimum b of a finite-sum loss its covariance is
f C_b (f = 1/S for i.i.d. batches of S), so each basin has its own matched temperature
T_b = lr f tr(C_b) / (2 d) (`covariance.linearized_sgd`; on `ShiftedMultiWell`,
C_b = H_b Cov(xi) H_b: sharper basins are hotter).  Predictions for the occupancy of the
`basin` labels (the potential's `basin(x)`, what a run records):

- `label_occupancy`      Gibbs exp(-U/T) at one temperature, by grid quadrature (d <= 2):
                         what Langevin at that T samples (up to O(step));
- `blowtorch_occupancy`  d = 1: the small-lr limit of SGD, the diffusion
                         dx = -U'(x) dt + sqrt(2 D(x)) dW with D(x) = lr f Var_i l_i'(x) / 2
                         (time lr per step), whose stationary density is exact in 1-D:
                         p(x) ∝ exp(-int^x U'/D) / D(x) (Landauer's "blowtorch": the
                         relative weight of two basins depends on D along the path between
                         them, not only on U).
Units: x length, U and T energy, lr time per step.  Imports neither numba nor cupy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.integrate import cumulative_trapezoid

from ..errors import ConfigError, check_positive
from .basins import Basins
from .covariance import (LinearizedSGD, _independent_noise_factor, gradient_noise_covariance,
                         linearized_sgd)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..potentials.base import Potential
    from ..potentials.multiwell import MultiWell, ShiftedMultiWell


def basin_noise(potential: Potential, basins: Basins, lr: float, batch_size: int | None,
                sampling: str = "iid") -> list[LinearizedSGD]:
    """`linearized_sgd` at each minimum of `basins` (Hessian and per-sample gradient
    covariance of `potential` there): one per basin, with its matched temperature."""
    out = []
    for x in basins.points:
        H = np.asarray(potential.hessian(x[None].astype(np.float64)), np.float64)[0]
        C = gradient_noise_covariance(potential, x)
        out.append(linearized_sgd(H, C, lr, batch_size, potential.n_samples, sampling))
    return out


def _grid(potential, bounds, n_grid: int) -> tuple[np.ndarray, float]:
    """(N, d) midpoints of an n_grid^d grid over bounds (d, 2), and the cell volume."""
    d = potential.d
    if d > 2:
        raise ConfigError(f"grid quadrature needs d <= 2, got d = {d}")
    B = np.asarray(bounds, np.float64).reshape(d, 2)
    axes = [np.linspace(a, b, int(n_grid) + 1) for a, b in B]
    mids = [0.5 * (g[1:] + g[:-1]) for g in axes]
    X = np.stack(np.meshgrid(*mids, indexing="ij"), axis=-1).reshape(-1, d)
    return X, float(np.prod([g[1] - g[0] for g in axes]))


def label_occupancy(potential: MultiWell, temperature: float, bounds: ArrayLike, n_grid: int = 2001,
                    n_basins: int | None = None) -> np.ndarray:
    """Gibbs probability of each `basin` label, int 1[basin(x) = b] exp(-U/T) / Z (K,), by
    the midpoint rule on an n_grid^d grid over bounds (d, 2) (d <= 2); ConfigError if
    exp(-U/T) is not negligible (1e-12 of its maximum) on the grid's edge."""
    T = check_positive("temperature", temperature)
    X, _ = _grid(potential, bounds, n_grid)
    u = np.concatenate([potential.energy(c) for c in np.array_split(X, max(1, X.shape[0] // 4096))])
    w = np.exp(-(u - u.min()) / T)
    edge = np.any(np.isclose(X, X.min(axis=0)) | np.isclose(X, X.max(axis=0)), axis=1)
    if w[edge].max() > 1e-12:
        raise ConfigError(f"exp(-U/T) is not negligible on the grid's edge at T = {T:g}; widen bounds")
    lab = np.asarray(potential.basin(X), np.int64)
    K = int(lab.max()) + 1 if n_basins is None else int(n_basins)
    return np.bincount(lab, weights=w, minlength=K)[:K] / w.sum()


def blowtorch_occupancy(potential: ShiftedMultiWell, lr: float, batch_size: int | None,
                        bounds: ArrayLike, sampling: str = "iid", n_grid: int = 20001
                        ) -> np.ndarray:
    """Occupancy of each `basin` label (K,) under the small-lr diffusion limit of SGD in
    d = 1: p(x) ∝ exp(-Phi(x)) / D(x), Phi = int U'/D, D(x) = lr f Var_i(l_i'(x)) / 2, on a
    grid of n_grid points over bounds (1, 2).  Exact for that diffusion (zero flux in 1-D);
    SGD's finite steps add O(lr lam) corrections (in a quadratic basin its variance is
    larger by 1 / (1 - lr lam / 2))."""
    if potential.d != 1:
        raise ConfigError(f"the blowtorch density is exact in d = 1 only, got d = {potential.d}")
    n = potential.n_samples
    f = _independent_noise_factor(n, batch_size, sampling, "blowtorch_occupancy")
    if f == 0:
        raise ConfigError("full-batch SGD has no minibatch noise (batch_size none)")
    lo, hi = np.asarray(bounds, np.float64).ravel()
    x = np.linspace(lo, hi, int(n_grid))[:, None]
    g = np.stack([np.asarray(potential.grad(x, np.full((x.shape[0], 1), i)), np.float64)[:, 0]
                  for i in range(n)])                                  # (n, N)
    D = lr * f * g.var(axis=0) / 2
    if D.min() <= 0:
        raise ConfigError("the minibatch noise vanishes somewhere on the grid (D(x) = 0): "
                          "the blowtorch density needs D > 0")
    phi = cumulative_trapezoid(g.mean(axis=0) / D, x[:, 0], initial=0.0)
    logp = -phi - np.log(D)
    w = np.exp(logp - logp.max())
    if max(w[0], w[-1]) > 1e-12:
        raise ConfigError("the density is not negligible at the grid's ends; widen bounds")
    lab = np.asarray(potential.basin(x), np.int64)
    return np.bincount(lab, weights=w, minlength=potential.n_wells) / w.sum()
