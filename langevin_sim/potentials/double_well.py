"""Separable double well."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, check_int
from .base import Potential


def dw_energy(x, center, a, barrier, tilt):
    """Per-coordinate energy barrier*((x-c)^2 - a^2)^2 / a^4 + tilt*(x-c) (arrays or scalars)."""
    y = x - center
    s = (y * y - a * a) / (a * a)
    return barrier * s * s + tilt * y


def dw_grad(x, center, a2, k, tilt):
    """Per-coordinate derivative of `dw_energy`, k (y^2 - a2) y + tilt with y = x - center,
    from the `DoubleWell.grad_coeffs` (center, a^2, 4 barrier / a^4, tilt): no division and
    no literal per element, so compiled float32 loops stay float32."""
    y = x - center
    return k * y * (y * y - a2) + tilt


class DoubleWell(Potential):
    """U(x) = sum_i barrier * ((x_i - c)^2 - a^2)^2 / a^4 + tilt * (x_i - c).

    Each coordinate has wells near c - a and c + a (exactly there when tilt = 0) separated
    by a barrier of height `barrier` (energy units) at x_i = c.  `tilt` (energy per unit
    length) makes the wells unequal.  x: (M, d).
    """

    def __init__(self, d: int = 1, barrier: float = 1.0, a: float = 1.0, center: float = 0.0,
                 tilt: float = 0.0):
        d = check_int("d", d, minimum=None)
        if d < 1:
            raise ConfigError(f"DoubleWell needs d >= 1, got {d}")
        if not barrier > 0 or not a > 0:
            raise ConfigError(f"DoubleWell needs barrier > 0 and a > 0, got barrier={barrier}, a={a}")
        self.d, self.barrier, self.a = int(d), float(barrier), float(a)
        self.center, self.tilt = float(center), float(tilt)

    @property
    def coeffs(self) -> tuple[float, float, float, float]:
        return self.center, self.a, self.barrier, self.tilt

    def params(self):
        return {"d": self.d, "barrier": self.barrier, "a": self.a, "center": self.center,
                "tilt": self.tilt}

    def energy(self, x):
        return dw_energy(x, *self.coeffs).sum(axis=1, dtype=np.float64)   # as the kernels

    @property
    def grad_coeffs(self) -> tuple[float, float, float, float]:
        """(center, a^2, 4 barrier / a^4, tilt), the arguments of `dw_grad` after x."""
        a2 = self.a * self.a
        return self.center, a2, 4.0 * self.barrier / (a2 * a2), self.tilt

    def grad(self, x, batch=None):
        return dw_grad(x, *self.grad_coeffs)

    def marginal_energy(self, y):
        """One coordinate's energy on a grid `y` (the exact marginal is exp(-that/T))."""
        return dw_energy(np.asarray(y, dtype=np.float64), *self.coeffs)

    def hessian(self, x):
        y = x - self.center
        diag = self.barrier * (12.0 * y * y - 4.0 * self.a ** 2) / self.a ** 4
        M, d = x.shape
        H = np.zeros((M, d, d), dtype=x.dtype)
        H[:, np.arange(d), np.arange(d)] = diag
        return H

    def default_init(self, z):
        return self.center + self.a * np.sign(z + 1e-300) + 0.1 * z
