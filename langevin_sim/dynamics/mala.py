"""Metropolis-adjusted Langevin: the exact Boltzmann reference sampler."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import rng
from ..errors import ConfigError
from .base import Dynamics
from .langevin import noise_scale
from .schedules import Schedule, as_schedule


@dataclass(frozen=True)
class MALA(Dynamics):
    """Proposal y = x - eta grad U(x) + sqrt(2 eta T) xi, accepted with probability
    min(1, exp(-(U(y) - U(x))/T) q(x|y) / q(y|x)), q(y|x) = N(y; x - eta grad U(x), 2 eta T).

    Samples exp(-U/T) exactly at any step.  State: x, U(x) (M,), grad U(x), and the
    per-replica count of accepted proposals `accepted` (M,).
    """

    step: float | Schedule = 1e-2
    temperature: float | Schedule = 1.0

    state_names = ("x", "u", "g", "accepted")

    def __post_init__(self):
        object.__setattr__(self, "step", as_schedule(self.step, "step", positive=True))
        object.__setattr__(self, "temperature", as_schedule(self.temperature, "temperature", True))

    def check_potential(self, potential):
        if potential.constrained:
            raise ConfigError("MALA on a constrained potential is not supported; use OverdampedLangevin")

    def init_state(self, potential, x):
        return {"x": x, "u": potential.energy(x), "g": potential.grad(x),
                "accepted": np.zeros(x.shape[0])}

    def observables(self, state):
        return {"accepted": state["accepted"]}

    def reference_step(self, potential, state, t, noise):
        x, u, g = state["x"], state["u"], state["g"]
        eta, T = self.step(t), self.temperature(t)
        y = x - eta * g + noise_scale(eta, T) * noise.normals(t, x.shape[1], dtype=x.dtype)
        uy, gy = potential.energy(y), potential.grad(y)
        fwd = np.sum((y - x + eta * g) ** 2, axis=1)
        bwd = np.sum((x - y + eta * gy) ** 2, axis=1)
        log_alpha = -(uy - u) / T - (bwd - fwd) / (4 * eta * T)
        uni = (noise.words(rng.ACCEPT, t, 1)[:, 0] + 0.5) * rng.TWO_NEG32
        acc = np.log(uni) < log_alpha
        a = acc[:, None]
        return {"x": np.where(a, y, x), "u": np.where(acc, uy, u), "g": np.where(a, gy, g),
                "accepted": state["accepted"] + acc}
