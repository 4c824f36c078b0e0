"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019), on minibatches."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..rng import sqrt
from .base import Dynamics, NoiseSource
from .schedules import Schedule, as_number, as_schedule
from .sgd import (batch_gradient, check_batch_size, check_constrained_weight_decay,
                  check_finite_sum, resolve_sampling)


def adamw_update(x, m, s, g, lr, beta1, beta2, a1, a2, eps, weight_decay, c1, c2):
    """One AdamW step (PyTorch's `AdamW`) on arrays or scalars: returns (x, m, s).

    m <- beta1 m + a1 g;  s <- beta2 s + a2 g^2;
    x <- x - lr (weight_decay x + (m / c1) / (sqrt(s / c2) + eps)),
    with a1 = 1 - beta1, a2 = 1 - beta2 (`complements`: the caller's, computed in float64,
    then in the state's dtype like every scalar: an int literal's 1 - beta1 would widen a
    float32 kernel to float64) and bias corrections c1 = 1 - beta1^(t+1), c2 = 1 - beta2^(t+1)
    at 0-based step t.  A step rule: the fused kernels compile it (`sqrt` the target's).
    """
    m = beta1 * m + a1 * g
    s = beta2 * s + a2 * g * g
    return x - lr * (weight_decay * x + (m / c1) / (sqrt(s / c2) + eps)), m, s


def complements(beta1: float, beta2: float) -> tuple[float, float]:
    """(1 - beta1, 1 - beta2) in float64: `adamw_update`'s a1, a2."""
    return 1.0 - float(beta1), 1.0 - float(beta2)


@dataclass(frozen=True)
class AdamW(Dynamics):
    """AdamW on a finite-sum loss L = mean_i l_i, with the minibatches of `SGD`.

    g is the gradient of the batch mean (batches as in `SGD`, `sampling=` "epoch" (default:
    slices of per-epoch permutations), "iid" (with replacement) or "subset" (a fresh random
    subset each step), from the PERMUTE / MINIBATCH streams; `replacement` is the deprecated
    bool alias; `batch_size` None = full batch); the update is `adamw_update` with the step t counted from 0 over the whole run,
    so a resumed run continues the bias corrections exactly.  Units: `lr` is parameter units
    per step (Adam's steps have size ~lr regardless of the gradient scale); `weight_decay`
    is per unit lr (decay factor 1 - lr * weight_decay per step).  State: x, the first
    moment m and the second moment s (all (M, d)).  No noise: deterministic given the batches.

    Constrained potentials (e.g. the sphere of `SphericalPSpin`): the moments see the tangent
    gradient P_x g, the step -lr P_x(m_hat / (sqrt(s_hat) + eps)) is taken in the tangent
    space and retracted, and m is carried to the new tangent space by projection (s, a
    per-coordinate scale, is kept as is).  weight_decay > 0 is refused there (check_potential):
    the decay -lr wd x is radial, so the retraction would undo it; pass weight_decay=0.
    """

    lr: float | Schedule = 1e-3
    batch_size: int | None = None
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    replacement: bool | None = None
    sampling: str | None = None

    state_names = ("x", "m", "s")

    def __post_init__(self):
        object.__setattr__(self, "lr", as_schedule(self.lr, "lr", positive=True))
        for name in ("beta1", "beta2", "eps", "weight_decay"):
            object.__setattr__(self, name, as_number(getattr(self, name), name))
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.eps > 0:
            raise ConfigError(f"eps must be > 0, got {self.eps}; the default is 1e-8")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        sampling = resolve_sampling("AdamW", self.sampling, self.replacement)
        object.__setattr__(self, "sampling", sampling)
        object.__setattr__(self, "replacement", sampling == "iid")   # (the legacy field)

    def check_potential(self, potential):
        check_finite_sum("AdamW", self.batch_size, potential)
        check_constrained_weight_decay("AdamW", self.weight_decay, potential)

    def init_state(self, potential, x):
        return {"x": x, "m": np.zeros_like(x), "s": np.zeros_like(x)}

    def reference_step(self, potential, state, t, noise: NoiseSource):
        x, m, s = state["x"], state["m"], state["s"]
        g = batch_gradient(potential, x, noise, t, self.batch_size, self.sampling)
        c1 = 1.0 - math.pow(self.beta1, t + 1)
        c2 = 1.0 - math.pow(self.beta2, t + 1)
        a1, a2 = complements(self.beta1, self.beta2)
        if not potential.constrained:
            x, m, s = adamw_update(x, m, s, g.astype(x.dtype), self.lr(t), self.beta1, self.beta2,
                                   a1, a2, self.eps, self.weight_decay, c1, c2)
            return {"x": x, "m": m, "s": s}
        # tangent step from 0 (weight_decay is 0 here, see check_potential), then retraction
        dx, m, s = adamw_update(0.0, m, s, potential.project(x, g.astype(x.dtype)), self.lr(t),
                                self.beta1, self.beta2, a1, a2, self.eps, 0.0, c1, c2)
        x = potential.retract(x + potential.project(x, dx))
        return {"x": x, "m": potential.project(x, m), "s": s}
