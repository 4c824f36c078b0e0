"""Metropolis-adjusted Langevin: the exact Boltzmann reference sampler."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import rng
from ..errors import ConfigError
from .base import Dynamics
from .langevin import noise_scale, overdamped_update
from .schedules import Schedule, as_schedule


# Scalar step rules (arrays or scalars): the reference step below and the fused kernels
# (`kernels.drivers`, via `kernels.common.STEPS`) use them.

def proposal_residual2(to, frm, g_frm, eta):
    """(to - frm + eta g_frm)^2: one coordinate's term of -4 eta T ln q(to | frm)."""
    r = to - frm + eta * g_frm
    return r * r


def mala_log_alpha(uy, u, bwd, fwd, eta, temperature):
    """ln of the acceptance ratio -(U(y) - U(x))/T - (|bwd|^2 - |fwd|^2) / (4 eta T), with
    fwd, bwd the sums of `proposal_residual2` of the forward and backward moves."""
    return -(uy - u) / temperature - (bwd - fwd) / (4 * eta * temperature)


def accept_uniform(word):
    """Uniform in (0, 1) from one 32-bit ACCEPT word: (w + 1/2) 2^-32."""
    return (word + 0.5) * rng.TWO_NEG32


def mala_accept(uni, log_alpha):
    """The Metropolis test ln(uni) < ln alpha."""
    return np.log(uni) < log_alpha


@dataclass(frozen=True)
class MALA(Dynamics):
    """Proposal y = x - eta grad U(x) + sqrt(2 eta T) xi, accepted with probability
    min(1, exp(-(U(y) - U(x))/T) q(x|y) / q(y|x)), q(y|x) = N(y; x - eta grad U(x), 2 eta T).

    Samples exp(-U/T) exactly at any step.  State: x, U(x) (M,), grad U(x), and the
    per-replica count of accepted proposals `accepted` (M,) float64, cumulative since step 0
    (resumes included): the observable recorded as `accepted` is that running count, so the
    acceptance rate between records i < j is (accepted[j] - accepted[i]) / (step[j] - step[i]).
    """

    samples_boltzmann = True

    step: float | Schedule = 1e-2
    temperature: float | Schedule = 1.0

    state_names = ("x", "u", "g", "accepted")
    counters = ("accepted",)

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
        y = overdamped_update(x, g, eta, noise_scale(eta, T),
                              noise.normals(t, x.shape[1], dtype=x.dtype))
        uy, gy = potential.energy(y), potential.grad(y)
        # summed in float64, as the kernels do (in float32 at |U| / T ~ 1e7 the sums' rounding
        # was of order 1 in log alpha: acceptance 0.15 where float64 and numba gave ~0.9)
        fwd = np.sum(proposal_residual2(y, x, g, eta), axis=1, dtype=np.float64)
        bwd = np.sum(proposal_residual2(x, y, gy, eta), axis=1, dtype=np.float64)
        log_alpha = mala_log_alpha(uy, u, bwd, fwd, eta, T)
        acc = mala_accept(accept_uniform(noise.words(rng.ACCEPT, t, 1)[:, 0]), log_alpha)
        a = acc[:, None]
        return {"x": np.where(a, y, x), "u": np.where(acc, uy, u), "g": np.where(a, gy, g),
                "accepted": state["accepted"] + acc}
