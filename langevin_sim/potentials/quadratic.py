"""Quadratic wells with a dense Hessian."""
from __future__ import annotations

import numpy as np

from .. import rng
from ..errors import ConfigError, check_int
from .base import Potential


def random_rotation(d: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal (d, d) matrix from the DATA stream of `seed`."""
    q, r = np.linalg.qr(rng.standard_normal(seed, rng.DATA, (d, d)))
    return q * np.sign(np.diag(r))


class Quadratic(Potential):
    """U(x) = 1/2 (x - c)^T H (x - c) with H symmetric positive-definite (d, d).

    Give `H`, or `spectrum` (d eigenvalues, 1-D) and `seed` for H = Q diag(spectrum) Q^T with
    a Haar-random rotation Q, not both.  `d`, if given, must equal H's size.  `center` c (d,) defaults to 0.  Units: H is energy / length^2.
    """

    batched_products = True

    def __init__(self, H=None, spectrum=None, seed: int = 0, center=None, d: int | None = None):
        if H is not None and spectrum is not None:
            raise ConfigError("Quadratic takes H or spectrum, not both; pass H alone, or "
                              "spectrum (and seed) alone")
        if H is None:
            if spectrum is None:
                raise ConfigError("Quadratic needs H or spectrum; e.g. Quadratic(spectrum=[1, 10])")
            spectrum = np.asarray(spectrum, dtype=np.float64)
            if spectrum.ndim != 1 or spectrum.size == 0:
                raise ConfigError(f"spectrum must be a 1-D list of d eigenvalues, got shape "
                                  f"{spectrum.shape}; for a full matrix pass H")
            if not np.all(np.isfinite(spectrum)) or not np.all(spectrum > 0):
                raise ConfigError(f"spectrum must hold finite positive eigenvalues (H positive-"
                                  f"definite), got {spectrum}; a flat direction needs lam > 0")
            if spectrum.max() / spectrum.min() > 1e14:
                raise ConfigError(f"spectrum's condition number {spectrum.max() / spectrum.min():.3g}"
                                  " is beyond what a float64 H holds (its rotation rounds the "
                                  "smallest eigenvalues to +-1e-16 of the largest): keep it "
                                  "<= 1e14")
            Q = random_rotation(spectrum.size, seed)
            H = (Q * spectrum) @ Q.T
        H = np.asarray(H, dtype=np.float64)
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            raise ConfigError(f"H must be a square (d, d) matrix, got shape {H.shape}")
        if d is not None and check_int("d", d) != H.shape[0]:
            raise ConfigError(f"Quadratic got d={d} but its {'H' if spectrum is None else 'spectrum'}"
                              f" has d = {H.shape[0]}; leave d out (it follows from "
                              f"{'H' if spectrum is None else 'spectrum'})")
        if not np.all(np.isfinite(H)):
            raise ConfigError(f"H holds inf or NaN ({int((~np.isfinite(H)).sum())} entries)")
        if not np.allclose(H, H.T, rtol=1e-10, atol=1e-12 * np.abs(H).max()):
            raise ConfigError("H is not symmetric; pass (H + H.T) / 2 or a spectrum")
        H = 0.5 * (H + H.T)
        try:
            if spectrum is None:     # (a checked spectrum's H is positive-definite)
                np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            lo = np.linalg.eigvalsh(H).min()
            raise ConfigError(f"H is not positive-definite (smallest eigenvalue {lo:.3g}); "
                              "use a spectrum of positive eigenvalues") from None
        self.H = H
        self.spectrum = spectrum          # the eigenvalues it was built from (None: given H)
        self.d = H.shape[0]
        self.seed = int(seed)
        self.center = np.zeros(self.d) if center is None else np.asarray(center, np.float64)
        if self.center.shape != (self.d,):
            raise ConfigError(f"center must have shape ({self.d},), got {self.center.shape}")
        self._eig = None

    def params(self):
        return {"seed": self.seed}

    def arrays(self):
        return {"H": self.H, "center": self.center}

    def repr_args(self):
        defined = ({"spectrum": self.spectrum, "seed": self.seed} if self.spectrum is not None
                   else {"H": self.H})
        return {"d": self.d, **defined, **({"center": self.center} if self.center.any() else {})}

    @property
    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (d,) ascending and eigenvectors (d, d) of H."""
        if self._eig is None:
            self._eig = np.linalg.eigh(self.H)
        return self._eig

    def energy(self, x):
        y = x - self.center.astype(x.dtype)
        return 0.5 * np.einsum("md,md->m", y @ self.H.astype(x.dtype), y, dtype=np.float64)

    def grad(self, x, batch=None):
        return (x - self.center.astype(x.dtype)) @ self.H.astype(x.dtype)

    def hessian(self, x):
        return np.broadcast_to(self.H, (x.shape[0],) + self.H.shape).copy()

    def hvp(self, x, v):
        return v @ self.H

    def default_init(self, z):
        return self.center + z
