"""Stochastic Heun (improved Euler): the second-order integrator of overdamped Langevin."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Dynamics, NoiseSource, project, retract
from .langevin import noise_scale, overdamped_update
from .schedules import Schedule, as_schedule


# Scalar step rule (arrays or scalars): the reference step below and the fused kernels
# (`kernels.quadratic`, which names it in its STEPS) use it.

def heun_update(x, g, gt, h, sigma, xi):
    """Heun's corrector x - h (g + gt) + sigma xi, with h = eta / 2, g = grad U(x),
    gt = grad U(predictor) and the predictor's own normal xi (arrays or scalars)."""
    return x - h * (g + gt) + sigma * xi


@dataclass(frozen=True)
class Heun(Dynamics):
    """Stochastic Heun for dx = -grad U dt + sqrt(2T) dW, one normal xi ~ N(0, I) per step:

        predictor  x~ = x - eta grad U(x) + sigma xi,
        corrector  x' = x - (eta/2) (grad U(x) + grad U(x~)) + sigma xi,   sigma = sqrt(2 eta T).

    At T = 0 it is Heun's method (second order: global error O(eta^2)); on a quadratic of
    curvature lam its one-step map is x' = a x + b xi with

        a = 1 - eta lam + (eta lam)^2 / 2,   b = sigma (1 - eta lam / 2),

    stable for 0 < eta lam < 2, with the exact discrete stationary variance
    b^2 / (1 - a^2) (-> T / lam as eta -> 0; below T / lam at finite steps).
    On a constrained potential both stages are tangent steps followed by the retraction
    (the gradient at x~ is projected onto the tangent space at x).  `step` eta and
    `temperature` T are numbers or Schedules.  Two gradients per step.
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
        sigma = noise_scale(eta, T)
        xi = noise.normals(t, x.shape[1], dtype=x.dtype)
        g = potential.grad(x)
        dx = overdamped_update(0.0, g, eta, sigma, xi)
        xt = retract(potential, x + project(potential, x, dx).astype(x.dtype))
        dx = heun_update(0.0, g, potential.grad(xt), 0.5 * eta, sigma, xi)
        return {"x": retract(potential, x + project(potential, x, dx).astype(x.dtype))}
