"""Minibatch SGD with momentum, weight decay and optional Langevin noise (SGLD)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .. import rng
from ..errors import ConfigError, check_int
from ..potentials.base import array_module
from .base import Dynamics, NoiseSource
from .langevin import noise_scale
from .schedules import Schedule, as_number, as_schedule


def sgd_update(x, v, g, lr, momentum, weight_decay, sigma, xi):
    """Heavy-ball step (PyTorch convention): v <- mu v + g + wd x; x <- x - lr v + sigma xi."""
    v = momentum * v + g + weight_decay * x
    return x - lr * v + sigma * xi, v


SAMPLINGS = ("iid", "epoch", "subset")
SAMPLING_CODES = {"epoch": 0, "iid": 1, "subset": 2}   # as the compiled kernels take them


def sampling_of(sampling) -> str:
    """A sampling name; the legacy `replacement` bools map to "iid" (True) / "epoch" (False)."""
    if isinstance(sampling, (bool, np.bool_)):
        return "iid" if sampling else "epoch"
    return sampling


def resolve_sampling(dynamics: str, sampling, replacement) -> str:
    """The sampling name of `sampling=` and the deprecated `replacement=` (True: "iid", False:
    "epoch"; a DeprecationWarning naming sampling= when it comes alone); ConfigError for a
    name outside SAMPLINGS or a contradiction.  Default: "epoch"."""
    if sampling is not None and sampling not in SAMPLINGS:
        raise ConfigError(f"{dynamics} sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if replacement is None:
        return sampling or "epoch"
    legacy = sampling_of(bool(replacement))
    if sampling is None:
        warnings.warn(f"{dynamics}(replacement={bool(replacement)}) is deprecated; pass "
                      f"sampling={legacy!r}", DeprecationWarning, stacklevel=4)
        return legacy
    if (sampling == "iid") != bool(replacement):
        raise ConfigError(f"replacement={replacement} contradicts sampling={sampling!r}; drop "
                          "replacement (deprecated) and keep sampling")
    return sampling


def floyd_subset(words, n: int, xp=np):
    """(M, S) indices of a uniformly random S-subset of range(n) per row, distinct within a
    row, by Floyd's algorithm from the row's S words: for k < S, j = n - S + k, c =
    bounded_index(word k, j + 1); take c unless already taken, else j."""
    M, S = words.shape
    idx = xp.zeros((M, S), dtype=np.int64)
    for k in range(S):
        j = n - S + k
        c = rng.bounded_index(words[:, k], j + 1).astype(np.int64)
        taken = (idx[:, :k] == c[:, None]).any(axis=1) if k else c < 0
        idx[:, k] = xp.where(taken, np.int64(j), c)
    return idx


def minibatch(noise: NoiseSource, t: int, batch_size: int, n: int, sampling):
    """(M, B) sample indices of step t: i.i.d. draws ("iid"), slices of per-epoch
    permutations ("epoch"), or an independent uniformly random subset per step ("subset",
    Floyd's algorithm on SUBSET words t*B .. t*B + B - 1).  `sampling` may be the legacy
    bool `replacement` (True: "iid", False: "epoch")."""
    sampling = sampling_of(sampling)
    if sampling == "iid":
        return rng.bounded_index(noise.words(rng.MINIBATCH, t * batch_size, batch_size), n).astype(np.int64)
    if sampling == "subset":
        w = noise.words(rng.SUBSET, t * batch_size, batch_size)
        return floyd_subset(w, n, array_module(w))
    per_epoch = n // batch_size
    epoch, j = divmod(t, per_epoch)
    return noise.permutations(epoch, n)[:, j * batch_size:(j + 1) * batch_size].copy()


def check_batch_size(batch_size) -> int | None:
    """`batch_size` as an int (None: full batch); ConfigError unless it is an integer >= 1."""
    if batch_size is None:
        return None
    batch_size = check_int("batch_size", batch_size, minimum=None)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")
    return batch_size


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


def batch_gradient(potential, x, noise: NoiseSource, t: int, batch_size, sampling,
                   label_noise: float = 0.0):
    """Full gradient (batch_size None) or the minibatch gradient of step t, (M, d).

    label_noise s > 0: the gradient of the batch loss with labels y_i + s eps_b, eps_b fresh
    LABEL_NOISE normals at n = t*B + b for batch slot b (B = n samples for the full batch),
    by the potential's `grad_noisy_labels(x, batch, shift)`."""
    if label_noise > 0:
        n = potential.n_samples
        B = n if batch_size is None else batch_size
        batch = (minibatch(noise, t, batch_size, n, sampling) if batch_size is not None else
                 array_module(x).broadcast_to(array_module(x).arange(n, dtype=np.int64),
                                              (x.shape[0], n)))
        eps = noise.normals(t, B, rng.LABEL_NOISE, dtype=x.dtype)
        return potential.grad_noisy_labels(x, batch, x.dtype.type(label_noise) * eps)
    if batch_size is None:
        return potential.grad(x)
    return potential.grad(x, minibatch(noise, t, batch_size, potential.n_samples, sampling))


def check_label_noise(dynamics: str, label_noise: float, potential) -> None:
    """ConfigError unless `potential` has labels with a squared-error residual."""
    if label_noise > 0 and (potential.n_samples is None
                            or not callable(getattr(potential, "grad_noisy_labels", None))):
        raise ConfigError(f"{dynamics} label_noise={label_noise} needs a least-squares potential "
                          f"with labels (LinearRegression, ScaleSymmetric, TeacherStudentMLP); "
                          f"{type(potential).__name__} has none: use label_noise=0 or grad_noise")


@dataclass(frozen=True)
class SGD(Dynamics):
    """Minibatch SGD on a finite-sum loss L = mean_i l_i, with optional noise models.

        g = grad of the batch loss;  v <- momentum v + g + weight_decay x + grad_noise xi_g;
        x <- x - lr v (+ sqrt(2 lr T) xi when temperature T > 0: SGLD).

    `batch_size=None` means full batch, and is the only choice for potentials that are not
    finite sums.  On a quadratic of top curvature lam, full-batch heavy ball is stable iff
    lr lam < 2 (1 + momentum).

    Sampling of the batch B_t (size S) of step t, `sampling=`:

    - "epoch" (the default): consecutive slices of a fresh per-epoch permutation (the last
      n mod S samples of each epoch are dropped); batches within an epoch are disjoint;
    - "iid": S indices drawn i.i.d. uniformly with replacement (repeats possible);
    - "subset": an independent uniformly random S-subset each step (no repeats within a
      batch, independent across steps), by Floyd's algorithm on S SUBSET-stream words;
      Cov(g_B) = (n - S) / (S (n - 1)) Cov_i(g_i) (the finite-population factor).

    `replacement` is the deprecated alias of earlier versions (True: "iid", False:
    "epoch"); it is kept as the derived bool sampling == "iid" so serialized runs read back.

    Noise models (each from its own rng purpose, a pure function of (seed, replica, step)):

    - `label_noise` s_l: fresh label noise.  Each sampled label gets y_i + s_l eps_b, eps_b ~
      N(0, 1) per batch slot b (LABEL_NOISE stream at n = t*S + b), and g is the gradient of
      the batch loss with those labels.  For least squares l_i = (a_i.x - y_i)^2 / 2 the
      extra gradient is -s_l (1/S) sum_b eps_b a_{i_b}: additive, mean 0, covariance
      s_l^2 / S * mean_i a_i a_i^T (= s_l^2 H / S).  Needs a potential with
      `grad_noisy_labels` (LinearRegression, ScaleSymmetric, TeacherStudentMLP).
    - `grad_noise` s_g: additive gradient noise inside the momentum buffer, xi_g ~ N(0, I_d)
      (GRAD_NOISE stream at n = t*d + i): the noise is filtered by the momentum, unlike the
      SGLD noise sqrt(2 lr T) xi added to x.  With momentum 0 it equals SGLD at 2 lr T =
      lr^2 s_g^2.

    Constrained potentials (e.g. the sphere of `SphericalPSpin`): Riemannian heavy ball,
    g <- P_x g (g including grad_noise); v <- momentum v + g; x' = retract(x + P_x(-lr v +
    sqrt(2 lr T) xi)); v <- P_x' v (P the tangent projection: the buffer is carried to the
    new tangent space by projection, so it stays tangent).  With momentum 0 this is
    `OverdampedLangevin` with step lr.  weight_decay > 0 is refused there: the penalty
    wd |x|^2 / 2 is constant on a sphere |x|^2 = N, its gradient wd x is radial and would be
    projected out.
    """

    lr: float | Schedule = 1e-2
    batch_size: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    temperature: float | Schedule = 0.0
    replacement: bool | None = None
    sampling: str | None = None
    label_noise: float = 0.0
    grad_noise: float = 0.0

    state_names = ("x", "v")

    def __post_init__(self):
        object.__setattr__(self, "lr", as_schedule(self.lr, "lr", positive=True))
        object.__setattr__(self, "temperature", as_schedule(self.temperature, "temperature", False))
        for name in ("momentum", "weight_decay", "label_noise", "grad_noise"):
            object.__setattr__(self, name, as_number(getattr(self, name), name))
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for key in ("label_noise", "grad_noise"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        sampling = resolve_sampling("SGD", self.sampling, self.replacement)
        object.__setattr__(self, "sampling", sampling)
        object.__setattr__(self, "replacement", sampling == "iid")

    def check_potential(self, potential):
        check_finite_sum("SGD", self.batch_size, potential)
        check_constrained_weight_decay("SGD", self.weight_decay, potential)
        check_label_noise("SGD", self.label_noise, potential)

    def init_state(self, potential, x):
        return {"x": x, "v": np.zeros_like(x)}

    def reference_step(self, potential, state, t, noise):
        x, v = state["x"], state["v"]
        lr, T = self.lr(t), self.temperature(t)
        g = batch_gradient(potential, x, noise, t, self.batch_size, self.sampling,
                           self.label_noise).astype(x.dtype)
        if self.grad_noise > 0:
            g = g + x.dtype.type(self.grad_noise) * noise.normals(t, x.shape[1], rng.GRAD_NOISE,
                                                                  dtype=x.dtype)
        xi = noise.normals(t, x.shape[1], dtype=x.dtype) if T > 0 else 0.0
        sigma = noise_scale(lr, T)
        if not potential.constrained:
            x, v = sgd_update(x, v, g, lr, self.momentum, self.weight_decay, sigma, xi)
            return {"x": x, "v": v}
        # tangent step from 0 (weight_decay is 0 here, see check_potential), then retraction
        dx, v = sgd_update(0.0, v, potential.project(x, g), lr, self.momentum, 0.0, sigma, xi)
        x = potential.retract(x + potential.project(x, dx))
        return {"x": x, "v": potential.project(x, v)}
