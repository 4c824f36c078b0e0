"""Overdamped (Euler-Maruyama, Leimkuhler-Matthews) and underdamped (BAOAB, OBABO) Langevin
dynamics."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .base import Dynamics, NoiseSource, project, retract
from .schedules import Schedule, as_number, as_schedule


# Scalar step rules (arrays or scalars): the reference steps below use them, and the fused
# kernels compile the same functions for each target (`langevin_sim.kernels`).

def noise_scale(eta, temperature):
    """sigma = sqrt(2 eta T), the noise amplitude of a Langevin step of size eta at T."""
    return math.sqrt(2.0 * eta * temperature)


def overdamped_update(x, g, eta, sigma, xi):
    """x - eta * g + sigma * xi, with sigma = sqrt(2 eta T) (arrays or scalars)."""
    return x - eta * g + sigma * xi


def lm_update(x, g, eta, half_sigma, xi, xi_next):
    """Leimkuhler-Matthews: x - eta * g + (sigma / 2) (xi_t + xi_{t+1}), half_sigma = sigma / 2."""
    return x - eta * g + half_sigma * (xi + xi_next)


def baoab_coeffs(eta, gamma, temperature, mass):
    """(c1, c2) of the O step p <- c1 p + c2 xi: c1 = exp(-gamma eta), c2 = sqrt((1-c1^2) m T)."""
    c1 = math.exp(-gamma * eta)
    return c1, math.sqrt((1.0 - c1 * c1) * mass * temperature)


def baoab_first(x, p, g, h, inv_mass, c1, c2, xi):
    """B, A, O, A of one BAOAB step (h = eta/2); the caller then applies B with grad U(x)."""
    p = p - h * g
    x = x + h * inv_mass * p
    p = c1 * p + c2 * xi
    return x + h * inv_mass * p, p


def baoab_last(p, g, h):
    """The closing B of a BAOAB step (h = eta/2): p - h grad U(x) at the new x."""
    return p - h * g


def obabo_first(x, p, g, h, eta, inv_mass, c1, c2, xi):
    """O, B, A of one OBABO step (h = eta/2; c1, c2 of the half-step O): p <- c1 p + c2 xi,
    p <- p - h g, x <- x + eta p / m; the caller then applies `obabo_last` with grad U(x)."""
    p = c1 * p + c2 * xi
    p = p - h * g
    return x + eta * inv_mass * p, p


def obabo_last(p, g, h, c1, c2, xi):
    """The closing B and O of an OBABO step (h = eta/2): c1 (p - h grad U(x)) + c2 xi at the
    new x."""
    return c1 * (p - h * g) + c2 * xi


@dataclass(frozen=True)
class OverdampedLangevin(Dynamics):
    """x <- x - eta grad U(x) + sqrt(2 eta T) xi, xi ~ N(0, I).

    `step` eta (time per step) and `temperature` T (energy units) are numbers or Schedules.
    On a quadratic of curvature lam the exact discrete stationary variance is
    T / (lam (1 - eta lam / 2)); as eta -> 0 the stationary law is exp(-U/T).
    """

    samples_boltzmann = True

    step: float | Schedule = 1e-2
    temperature: float | Schedule = 1.0

    def __post_init__(self):
        object.__setattr__(self, "step", as_schedule(self.step, "step", positive=True))
        object.__setattr__(self, "temperature", as_schedule(self.temperature, "temperature", False))

    def reference_step(self, potential, state, t, noise: NoiseSource):
        x = state["x"]
        eta, T = self.step(t), self.temperature(t)
        xi = noise.normals(t, x.shape[1], dtype=x.dtype)
        dx = overdamped_update(0.0, potential.grad(x), eta, noise_scale(eta, T), xi)
        return {"x": retract(potential, x + project(potential, x, dx).astype(x.dtype))}


@dataclass(frozen=True)
class LeimkuhlerMatthews(Dynamics):
    """Leimkuhler-Matthews overdamped scheme (Leimkuhler, Matthews & Stoltz 2016):

        x_{t+1} = x_t - eta grad U(x_t) + sigma (xi_t + xi_{t+1}) / 2,   sigma = sqrt(2 eta T),

    xi_t ~ N(0, I) the NOISE normals of step t: step t draws those of steps t and t + 1 at
    their stream positions (the RNG is a function of (seed, replica, step)), so the scheme
    needs no state and runs split over replicas, chunked or resumed with the same bits.
    One gradient per step, as Euler-Maruyama, and second-order accurate for the invariant
    measure.  On a quadratic of curvature lam, with a = 1 - eta lam, x_t = z_t + (sigma/2) xi_t
    where z_{t+1} = a z_t + (sigma/2)(1 + a) xi_t is independent of xi_t, so

        var x = (sigma^2 / 4) ((1 + a) / (1 - a) + 1) = sigma^2 / (2 eta lam) = T / lam,

    the Gibbs variance exactly at any stable step (0 < eta lam < 2; Euler-Maruyama:
    T / (lam (1 - eta lam / 2))).  Constrained potentials: tangent step, then the
    retraction.  `step` and `temperature` are numbers or Schedules (sigma of step t).
    """

    steps_ahead = 1

    samples_boltzmann = True     # (replica exchange refuses it all the same: `exchange.samplers`)

    step: float | Schedule = 1e-2
    temperature: float | Schedule = 1.0

    def __post_init__(self):
        object.__setattr__(self, "step", as_schedule(self.step, "step", positive=True))
        object.__setattr__(self, "temperature", as_schedule(self.temperature, "temperature", False))

    def reference_step(self, potential, state, t, noise: NoiseSource):
        x = state["x"]
        eta, T = self.step(t), self.temperature(t)
        d = x.shape[1]
        xi, xi_next = (noise.normals(s, d, dtype=x.dtype) for s in (t, t + 1))
        dx = lm_update(0.0, potential.grad(x), eta, 0.5 * noise_scale(eta, T), xi, xi_next)
        return {"x": retract(potential, x + project(potential, x, dx).astype(x.dtype))}


@dataclass(frozen=True)
class _Underdamped:
    """What the underdamped schemes (`UnderdampedLangevin`, `OBABO`) share: their parameters
    (`step` eta, `friction` gamma in 1/time, `temperature` T, `mass` m; eta and T numbers or
    Schedules), validation, state (x, p and the gradient g at x, (M, d)), their refusal of
    constrained potentials and their recorded observable `kinetic_energy`.  Not a
    `Dynamics`: not registered."""

    samples_boltzmann = True

    step: float | Schedule = 1e-2
    friction: float = 1.0
    temperature: float | Schedule = 1.0
    mass: float = 1.0

    state_names = ("x", "p", "g")

    def __post_init__(self):
        object.__setattr__(self, "step", as_schedule(self.step, "step", positive=True))
        object.__setattr__(self, "temperature", as_schedule(self.temperature, "temperature", False))
        for name in ("friction", "mass"):
            object.__setattr__(self, name, as_number(getattr(self, name), name))
        if not self.friction >= 0:
            raise ConfigError(f"friction must be >= 0, got {self.friction}")
        if not self.mass > 0:
            raise ConfigError(f"mass must be > 0, got {self.mass}")

    def check_potential(self, potential):
        if potential.constrained:
            raise ConfigError(f"{type(self).__name__} does not support the constrained "
                              f"{type(potential).__name__}; use OverdampedLangevin")

    def init_state(self, potential, x):
        return {"x": x, "p": np.zeros_like(x), "g": potential.grad(x).astype(x.dtype)}

    def observables(self, state):
        """kinetic_energy (M,) float64: |p|^2 / (2 m) of each replica's stored momenta (energy
        units; 2 <kinetic_energy> / d is the kinetic temperature: T exactly for OBABO on a
        quadratic, T (1 - eta^2 lam / (4 m)) per mode for BAOAB)."""
        p = state["p"].astype(np.float64)
        return {"kinetic_energy": (p * p).sum(axis=1) / (2.0 * self.mass)}


@dataclass(frozen=True)
class UnderdampedLangevin(_Underdamped, Dynamics):
    """BAOAB splitting of dx = p/m dt, dp = -grad U dt - gamma p dt + sqrt(2 gamma m T) dW.

    B: p -= eta/2 grad U; A: x += eta/2 p/m; O: p <- c1 p + c2 xi; A; B, with
    c1 = exp(-gamma eta), c2 = sqrt((1 - c1^2) m T).  For a harmonic potential the
    configurational marginal is exactly N(0, T/lam) at any stable step.  State: x, p and
    the gradient g at x (M, d).  `friction` gamma is 1/time; `mass` m.
    """

    def reference_step(self, potential, state, t, noise):
        x, p, g = state["x"], state["p"], state["g"]
        eta, T = self.step(t), self.temperature(t)
        c1, c2 = baoab_coeffs(eta, self.friction, T, self.mass)
        xi = noise.normals(t, x.shape[1], dtype=x.dtype)
        x, p = baoab_first(x, p, g, 0.5 * eta, 1.0 / self.mass, c1, c2, xi)
        g = potential.grad(x).astype(x.dtype)
        return {"x": x, "p": baoab_last(p, g, 0.5 * eta), "g": g}


@dataclass(frozen=True)
class OBABO(_Underdamped, Dynamics):
    """OBABO splitting of the same SDE as `UnderdampedLangevin` (Bussi & Parrinello 2007):

        O: p <- c1 p + c2 xi1;  B: p -= eta/2 grad U(x);  A: x += eta p/m;
        B: p -= eta/2 grad U(x);  O: p <- c1 p + c2 xi2,

    c1 = exp(-gamma eta / 2), c2 = sqrt((1 - c1^2) m T) (`baoab_coeffs` at eta / 2).  On a
    harmonic potential the kinetic temperature <p^2>/m = T is exact at any stable step
    (eta^2 lam / m < 4); the position variance is not (T / (lam (1 - eta^2 lam / (4 m))),
    where BAOAB's is T / lam).  State: x, p and the gradient g at x (M, d).  Random numbers:
    step t takes the 2d NOISE normals at stream positions n = 2 t d + i, i < 2d
    (`NoiseSource.normals(t, 2 d)`): xi1 the first d, xi2 the last d, so they stay a pure
    function of (seed, replica, step).  `friction` gamma is 1/time; `mass` m.
    """

    normals_per_coordinate = 2

    def reference_step(self, potential, state, t, noise):
        x, p, g = state["x"], state["p"], state["g"]
        eta, T = self.step(t), self.temperature(t)
        c1, c2 = baoab_coeffs(0.5 * eta, self.friction, T, self.mass)
        d = x.shape[1]
        xi = noise.normals(t, 2 * d, dtype=x.dtype)
        x, p = obabo_first(x, p, g, 0.5 * eta, eta, 1.0 / self.mass, c1, c2, xi[:, :d])
        g = potential.grad(x).astype(x.dtype)
        return {"x": x, "p": obabo_last(p, g, 0.5 * eta, c1, c2, xi[:, d:]), "g": g}
