"""Minibatch SGD with momentum, weight decay and optional Langevin noise (SGLD)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import rng
from ..errors import ConfigError
from .base import Dynamics, NoiseSource
from .langevin import noise_scale
from .schedules import Schedule, as_schedule


def sgd_update(x, v, g, lr, momentum, weight_decay, sigma, xi):
    """Heavy-ball step (PyTorch convention): v <- mu v + g + wd x; x <- x - lr v + sigma xi."""
    v = momentum * v + g + weight_decay * x
    return x - lr * v + sigma * xi, v


def minibatch(noise: NoiseSource, t: int, batch_size: int, n: int, replacement: bool):
    """(M, B) sample indices of step t: i.i.d. draws, or slices of per-epoch permutations."""
    if replacement:
        return rng.bounded_index(noise.words(rng.MINIBATCH, t * batch_size, batch_size), n).astype(np.int64)
    per_epoch = n // batch_size
    epoch, j = divmod(t, per_epoch)
    perms = [rng.epoch_permutation(noise.seed, int(r), epoch, n) for r in noise.replicas]
    return np.stack(perms)[:, j * batch_size:(j + 1) * batch_size].astype(np.int64)


def check_batch_size(batch_size) -> None:
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")


def check_finite_sum(dynamics: str, batch_size, potential) -> None:
    """ConfigError unless `potential` can give minibatch gradients of `batch_size` samples."""
    n = potential.n_samples
    if batch_size is None:
        return
    if n is None:
        raise ConfigError(f"{dynamics} batch_size={batch_size} needs a finite-sum potential; "
                          f"{type(potential).__name__} has no samples: use batch_size=None")
    if batch_size > n:
        raise ConfigError(f"batch_size {batch_size} exceeds the {n} samples; use <= {n}")


def check_constrained_weight_decay(dynamics: str, weight_decay: float, potential) -> None:
    """ConfigError for weight_decay > 0 on a constrained potential (the package's constraints
    are spheres |x|^2 = const): the decay -wd x is radial, so it has no tangent component and
    the retraction would undo it."""
    if potential.constrained and weight_decay > 0:
        raise ConfigError(f"{dynamics} weight_decay={weight_decay} has no effect on the constrained "
                          f"{type(potential).__name__} (the decay is radial and the retraction "
                          f"undoes it); use weight_decay=0")


def batch_gradient(potential, x, noise: NoiseSource, t: int, batch_size, replacement: bool):
    """Full gradient (batch_size None) or the minibatch gradient of step t, (M, d)."""
    if batch_size is None:
        return potential.grad(x)
    return potential.grad(x, minibatch(noise, t, batch_size, potential.n_samples, replacement))


@dataclass(frozen=True)
class SGD(Dynamics):
    """Minibatch SGD on a finite-sum loss L = mean_i l_i.

    g = grad of the batch mean; v <- momentum v + g + weight_decay x; x <- x - lr v
    (+ sqrt(2 lr T) xi when temperature T > 0: SGLD).  Batches are drawn i.i.d. with
    replacement, or as consecutive slices of a fresh per-epoch permutation (the last
    n mod B samples of each epoch are dropped).  `batch_size=None` means full batch, and
    is the only choice for potentials that are not finite sums.  On a quadratic of top
    curvature lam, full-batch heavy ball is stable iff lr lam < 2 (1 + momentum).

    Constrained potentials (e.g. the sphere of `SphericalPSpin`): Riemannian heavy ball,
    g <- P_x g; v <- momentum v + g; x' = retract(x + P_x(-lr v + sqrt(2 lr T) xi));
    v <- P_x' v (P the tangent projection: the buffer is carried to the new tangent space
    by projection, so it stays tangent).  With momentum 0 this is `OverdampedLangevin`
    with step lr.  weight_decay > 0 is refused there: the penalty wd |x|^2 / 2 is constant
    on a sphere |x|^2 = N, its gradient wd x is radial and would be projected out.
    """

    lr: float | Schedule = 1e-2
    batch_size: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    temperature: float | Schedule = 0.0
    replacement: bool = False

    state_names = ("x", "v")

    def __post_init__(self):
        object.__setattr__(self, "lr", as_schedule(self.lr, "lr", positive=True))
        object.__setattr__(self, "temperature", as_schedule(self.temperature, "temperature", False))
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        check_batch_size(self.batch_size)

    def check_potential(self, potential):
        check_finite_sum("SGD", self.batch_size, potential)
        check_constrained_weight_decay("SGD", self.weight_decay, potential)

    def init_state(self, potential, x):
        return {"x": x, "v": np.zeros_like(x)}

    def reference_step(self, potential, state, t, noise):
        x, v = state["x"], state["v"]
        lr, T = self.lr(t), self.temperature(t)
        g = batch_gradient(potential, x, noise, t, self.batch_size, self.replacement)
        xi = noise.normals(t, x.shape[1], dtype=x.dtype) if T > 0 else 0.0
        sigma = noise_scale(lr, T)
        if not potential.constrained:
            x, v = sgd_update(x, v, g.astype(x.dtype), lr, self.momentum, self.weight_decay, sigma, xi)
            return {"x": x, "v": v}
        # tangent step from 0 (weight_decay is 0 here, see check_potential), then retraction
        dx, v = sgd_update(0.0, v, potential.project(x, g.astype(x.dtype)), lr, self.momentum,
                           0.0, sigma, xi)
        x = potential.retract(x + potential.project(x, dx))
        return {"x": x, "v": potential.project(x, v)}
