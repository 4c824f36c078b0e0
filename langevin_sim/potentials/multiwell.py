"""Multi-well landscapes: quadratic wells with chosen spectra, depths and centres, joined by
a smooth minimum, for flat-versus-sharp studies.

`well_quadratic` and `multiwell_fields` are the math, written once on (B, d) blocks (NumPy or
CuPy via ufuncs and operators) and compiled unchanged by Numba for the fused kernels in
`langevin_sim.kernels.manifolds`.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .. import rng
from ..errors import ConfigError
from ..rng import row_sum
from .base import Potential, array_module
from .quadratic import random_rotation


def well_quadratic(x, center, H, depth):
    """q = depth + 1/2 (x - c)^T H (x - c) (B,) and its gradient H (x - c) (B, d)."""
    y = x - center
    g = y @ H
    return depth + 0.5 * row_sum(y * g), g


def multiwell_fields(x, centers, hessians, depths, tau):
    """Energy (B,) and gradient (B, d) of U = -tau ln sum_j exp(-q_j / tau).

    Streaming log-sum-exp over the wells: with m = min_j q_j (so far) and weights
    exp(-(q_j - m)/tau) <= 1 nothing overflows; grad U = sum_j w_j H_j (x - c_j) with
    w = softmax(-q / tau).
    """
    m, acc = well_quadratic(x, centers[0], hessians[0], depths[0])
    S = np.ones_like(m)
    for j in range(1, centers.shape[0]):
        q, g = well_quadratic(x, centers[j], hessians[j], depths[j])
        m_new = np.minimum(m, q)
        f_old = np.exp((m_new - m) / tau)
        f_new = np.exp((m_new - q) / tau)
        S = S * f_old + f_new
        acc = acc * f_old[:, None] + g * f_new[:, None]
        m = m_new
    return m - tau * np.log(S), acc / S[:, None]


class MultiWell(Potential):
    """K quadratic wells joined by a smooth minimum (log-sum-exp with softness tau):

        U(x) = -tau ln sum_j exp(-q_j(x) / tau),   q_j(x) = E_j + 1/2 (x - c_j)^T H_j (x - c_j).

    min_j q_j - tau ln K <= U <= min_j q_j, and U -> min_j q_j as tau -> 0; near the bottom
    of a well far from the others U = q_j up to terms exp(-(q_i - q_j)/tau).  `centers`
    c (K, d), `depths` E (K,) (default 0), Hessians H_j (K, d, d) symmetric positive-definite,
    given as `hessians` or as `spectra` (K, d) of eigenvalues with Haar-random rotations
    (well j rotated by `random_rotation(d, seed + j)`).

    Flat versus sharp: at temperature T with the wells well separated (barriers >> T), the
    Laplace weight of basin j is exp(-E_j/T) (2 pi T)^(d/2) det(H_j)^(-1/2), so the flattest
    well wins at equal depth by prod_i (lam_i(sharp)/lam_i(flat))^(1/2), exponentially in d.
    `basin(x)` labels a point by argmin_j q_j (recorded as the observable "basin").

    Hessian: sum_j w_j H_j - (1/tau) (sum_j w_j g_j g_j^T - gbar gbar^T), g_j = H_j (x - c_j),
    gbar = grad U.  Units: x length, E and tau energy, H energy / length^2.  x: (M, d).
    """

    def __init__(self, centers, hessians=None, spectra=None, depths=None, softness: float = 0.05,
                 seed: int = 0):
        c = np.asarray(centers, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ConfigError(f"centers must be a (K, d) array of K >= 1 well centres, got shape {c.shape}")
        K, d = c.shape
        self.spectra = None
        if not np.all(np.isfinite(c)):
            raise ConfigError("centers must be finite")
        if hessians is not None and spectra is not None:
            raise ConfigError("MultiWell takes hessians or spectra, not both")
        if hessians is None:
            if spectra is None:
                raise ConfigError("MultiWell needs hessians (K, d, d) or spectra (K, d); e.g. "
                                  "spectra=[[1, 1], [10, 10]] for a flat and a sharp well")
            lam = np.asarray(spectra, dtype=np.float64)
            if lam.shape != (K, d):
                raise ConfigError(f"spectra must have shape ({K}, {d}), got {lam.shape}")
            if not np.all(np.isfinite(lam)) or not np.all(lam > 0):
                raise ConfigError(f"spectra must be finite and positive (minima), got {lam}")
            if np.any(lam.max(axis=1) / lam.min(axis=1) > 1e14):
                raise ConfigError("a well's spectrum has a condition number beyond 1e14, more "
                                  "than a float64 Hessian holds: keep each well's max / min "
                                  "<= 1e14")
            self.spectra = lam      # as given, for the repr
            rots = [random_rotation(d, int(seed) + j) for j in range(K)]
            hessians = np.stack([(Q * lam[j]) @ Q.T for j, Q in enumerate(rots)])
        H = np.asarray(hessians, dtype=np.float64)
        if H.shape != (K, d, d):
            raise ConfigError(f"hessians must have shape ({K}, {d}, {d}), got {H.shape}")
        if not np.all(np.isfinite(H)):
            raise ConfigError(f"hessians hold inf or NaN ({int((~np.isfinite(H)).sum())} entries)")
        if not np.allclose(H, H.transpose(0, 2, 1), rtol=1e-10, atol=1e-12 * np.abs(H).max()):
            raise ConfigError("hessians must be symmetric; pass (H + H^T)/2 or spectra")
        H = 0.5 * (H + H.transpose(0, 2, 1))
        for j in range(K if self.spectra is None else 0):   # (checked spectra: positive)
            try:
                np.linalg.cholesky(H[j])
            except np.linalg.LinAlgError:
                lo = np.linalg.eigvalsh(H[j]).min()
                raise ConfigError(f"hessian of well {j} is not positive-definite (smallest "
                                  f"eigenvalue {lo:.3g}); wells need positive curvatures") from None
        E = np.zeros(K) if depths is None else np.asarray(depths, dtype=np.float64).ravel()
        if E.shape != (K,) or not np.all(np.isfinite(E)):
            raise ConfigError(f"depths must be {K} finite numbers, got {depths!r}")
        if not softness > 0:
            raise ConfigError(f"softness must be > 0 (energy units), got {softness}")
        self.centers, self.hessians, self.depths = np.ascontiguousarray(c), np.ascontiguousarray(H), E
        self.softness, self.seed = float(softness), int(seed)
        self.n_wells, self.d = K, d

    def params(self):
        return {"softness": self.softness, "seed": self.seed}

    def repr_args(self):
        wells = {"spectra": self.spectra} if self.spectra is not None else {"hessians": self.hessians}
        extra = {k: v for k, v in self.arrays().items() if k not in ("centers", "hessians", "depths")}
        return {"centers": self.centers, **extra, **wells,
                **({"depths": self.depths} if self.depths.any() else {}), **self.params()}

    def arrays(self):
        return {"centers": self.centers, "hessians": self.hessians, "depths": self.depths}

    def coefficients(self, xp=np, dtype=np.float64) -> tuple:
        """Arguments after x of `multiwell_fields` (arrays in module xp with dtype)."""
        return (xp.asarray(self.centers, dtype=dtype), xp.asarray(self.hessians, dtype=dtype),
                xp.asarray(self.depths, dtype=dtype), self.softness)

    def energy(self, x):
        return multiwell_fields(x, *self.coefficients(array_module(x), x.dtype))[0]

    def grad(self, x, batch=None):
        return multiwell_fields(x, *self.coefficients(array_module(x), x.dtype))[1]

    def _wells(self, x):
        """q (M, K), g (M, K, d) and softmax weights w (M, K) of every well."""
        xp = array_module(x)
        c, H, E, tau = self.coefficients(xp, x.dtype)
        parts = [well_quadratic(x, c[j], H[j], E[j]) for j in range(self.n_wells)]
        q = xp.stack([p[0] for p in parts], axis=1)
        g = xp.stack([p[1] for p in parts], axis=1)
        z = -(q - q.min(axis=1, keepdims=True)) / tau
        w = xp.exp(z)
        return q, g, w / w.sum(axis=1, keepdims=True)

    def hessian(self, x):
        xp = array_module(x)
        _, g, w = self._wells(x)
        H = xp.asarray(self.hessians, dtype=x.dtype)
        gbar = xp.einsum("mk,mkd->md", w, g)
        cov = xp.einsum("mk,mki,mkj->mij", w, g, g) - gbar[:, :, None] * gbar[:, None, :]
        return xp.einsum("mk,kij->mij", w, H) - cov / self.softness

    def hvp(self, x, v):
        xp = array_module(x)
        _, g, w = self._wells(x)
        H = xp.asarray(self.hessians, dtype=x.dtype)
        gbar = xp.einsum("mk,mkd->md", w, g)
        gv = xp.einsum("mkd,md->mk", g, v)
        cov_v = xp.einsum("mk,mkd->md", w * gv, g) - gbar * (gbar * v).sum(axis=1)[:, None]
        return xp.einsum("mk,kij,mj->mi", w, H, v) - cov_v / self.softness

    def basin(self, x):
        """(M,) int64 label argmin_j q_j(x) of the well whose quadratic is lowest at x."""
        q, _, _ = self._wells(x)
        return q.argmin(axis=1).astype(np.int64)

    def observables(self, x, energy=None):
        """basin: label of the lowest well quadratic at x (M,) int64."""
        return {"basin": self.basin(x)}

    def log_laplace_weights(self, temperature: float) -> np.ndarray:
        """(K,) ln of the Laplace basin weights -E_j/T - 1/2 ln det H_j (common factors dropped)."""
        logdet = np.linalg.slogdet(self.hessians)[1]
        return -self.depths / temperature - 0.5 * logdet

    def default_init(self, z):
        """Each replica starts at a well drawn uniformly by its own normals, centre
        j = floor(K Phi(z_1)) (Phi the normal CDF), plus 0.1 z: a pure function of the
        replica's INIT stream, so splitting replicas over Simulations changes nothing."""
        j = np.minimum((self.n_wells * ndtr(z[:, 0])).astype(np.int64), self.n_wells - 1)
        return self.centers[j] + 0.1 * z


def random_shifts(n: int, d: int, scale: float, seed: int) -> np.ndarray:
    """(n, d) per-sample shifts scale * z_i, centred (mean 0 exactly), z from the DATA stream
    of `seed`: their covariance is scale^2 I up to sampling error (length units)."""
    if int(n) < 1 or not scale >= 0:
        raise ConfigError(f"need n >= 1 samples and a scale >= 0, got n={n}, scale={scale}")
    z = rng.standard_normal(int(seed), rng.DATA, (int(n) * int(d),)).reshape(int(n), int(d))
    return float(scale) * (z - z.mean(axis=0))


class ShiftedMultiWell(MultiWell):
    """A finite-sum MultiWell: sample i sees the landscape shifted by xi_i,

        l_i(x) = MW(x - xi_i),   U(x) = (1/n) sum_i l_i(x),

    MW the `MultiWell` of the same arguments and `shifts` xi (n, d).  The full loss is MW
    smoothed by the shifts; with centred shifts (mean 0) and far from the other wells it is
    q_j(x) + tr(H_j Cov(xi)) / 2, the same well raised by its smoothing, and the per-sample
    gradients there are g_i = H_j (x - c_j - xi_i): minibatch noise of covariance
    H_j Cov(xi) H_j, aligned with the well's Hessian (sharper wells are noisier).
    `smoothing` gives the raise per well, so `depths` can be chosen to equalize the full
    loss's minima.  The minibatch gradient of a batch (M, B) of sample indices is the mean
    of its samples' gradients.  `basin` labels by the unshifted wells.  Units as MultiWell;
    x: (M, d).
    """

    def __init__(self, centers, shifts, hessians=None, spectra=None, depths=None,
                 softness: float = 0.05, seed: int = 0):
        super().__init__(centers, hessians=hessians, spectra=spectra, depths=depths,
                         softness=softness, seed=seed)
        xi = np.asarray(shifts, dtype=np.float64)
        if xi.ndim != 2 or xi.shape[1] != self.d or xi.shape[0] < 1 or not np.all(np.isfinite(xi)):
            raise ConfigError(f"shifts must be a finite (n, {self.d}) array with n >= 1, got "
                              f"shape {xi.shape}")
        self.shifts, self.n_samples = np.ascontiguousarray(xi), xi.shape[0]

    def arrays(self):
        return {**super().arrays(), "shifts": self.shifts}

    @property
    def shift_covariance(self) -> np.ndarray:
        """(d, d) Cov(xi) = (1/n) sum_i (xi_i - mean)(xi_i - mean)^T (length^2)."""
        y = self.shifts - self.shifts.mean(axis=0)
        return y.T @ y / self.n_samples

    def smoothing(self) -> np.ndarray:
        """(K,) tr(H_j Cov(xi)) / 2: how much the shifts raise well j of the full loss (energy)."""
        return 0.5 * np.einsum("kij,ji->k", self.hessians, self.shift_covariance)

    def _shifted(self, x, batch):
        """(M, S, d) copies x - xi_i for the samples i of `batch` (M, S) (all samples if None)."""
        xp = array_module(x)
        xi = xp.asarray(self.shifts, dtype=x.dtype)
        xi = xi[None] if batch is None else xi[xp.asarray(batch)]
        return x[:, None, :] - xi

    def _mean(self, x, batch, which: int):
        y = self._shifted(x, batch)
        M, S, d = y.shape
        out = multiwell_fields(y.reshape(M * S, d), *self.coefficients(array_module(x), x.dtype))
        return out[which].reshape((M, S) + out[which].shape[1:]).mean(axis=1)

    def energy(self, x):
        return self._mean(x, None, 0)

    def grad(self, x, batch=None):
        return self._mean(x, batch, 1)

    def hessian(self, x):
        y = self._shifted(x, None)
        M, S, d = y.shape
        return super().hessian(y.reshape(M * S, d)).reshape(M, S, d, d).mean(axis=1)

    def hvp(self, x, v):
        y = self._shifted(x, None)
        M, S, d = y.shape
        vv = array_module(x).broadcast_to(v[:, None, :], y.shape).reshape(M * S, d)
        return super().hvp(y.reshape(M * S, d), vv).reshape(M, S, d).mean(axis=1)

    def log_laplace_weights(self, temperature: float) -> np.ndarray:
        """(K,) Laplace log-weights of the full loss: depths raised by `smoothing`."""
        logdet = np.linalg.slogdet(self.hessians)[1]
        return -(self.depths + self.smoothing()) / temperature - 0.5 * logdet
