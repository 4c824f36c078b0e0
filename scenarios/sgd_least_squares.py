"""SGD on least squares: what law does minibatch SGD sample at stationarity?

Replicas of minibatch SGD (optionally with momentum, weight decay and Langevin noise) on the
finite-sum loss L(w) = 1/(2n) sum_i (a_i . w - y_i)^2 of a synthetic regression data set.
The iterates settle into a stationary law around the least-squares solution whose second
moment is known exactly (`analysis/covariance.py`: the exact discrete law for i.i.d. batches,
independent subsets or, for small n, the engine's epoch reshuffling, next to the continuous
Lyapunov approximation of Mandt et al.), and with batch_size=1 and a learning rate at which
some lr |a_i|^2 > 2 its tails are power laws of Kesten's index (`analysis/tails.py`, e.g.
--set d=1 --set n=200 --set batch_size=1 --set lr=0.6); at the defaults (d = 4, lr = 0.1)
every lr |a_i|^2 < 2, every step contracts and the tails are light (Kesten's index is
infinite).  Defaults: replacement (i.i.d. batches), d = 4.

Claim 1 of docs/results.md ("SGD samples exp(-L/T)") uses two more switches.  `spectrum`
whitens the Gaussian inputs and rescales them so that the Hessian H = A^T A / n is exactly
diag(spectrum) (isotropic: all equal; anisotropic: spread), which sets lr lambda_max and the
shape of the minibatch noise.  `dynamics=matched_langevin` replaces minibatch SGD by
isotropic Langevin on the same loss, x' = x - lr grad L + sqrt(2 lr T) xi (Euler-Maruyama,
step lr), run on the equal quadratic L(x) - L(x*) = (x - x*)^T H (x - x*) / 2 (`Quadratic`,
centre x* the least-squares solution: d^2 work per step instead of n d), at the
temperature matched to this SGD's gradient noise,

    T = lr tr(C) / (2 S d),   C = (1/n) sum_i g_i g_i^T - gbar gbar^T at the minimizer,

g_i the per-sample gradients and S the batch size (the minibatch noise covariance is C / S
for i.i.d. batches): the one temperature at which isotropic Langevin has the same mean
noise power per coordinate as SGD.  When C is not a multiple of the identity no single T
matches every direction (see `matched_temperature`).
"""
from dataclasses import dataclass
from typing import Literal

import numpy as np

from langevin_sim import ConfigError, Simulation
from langevin_sim.analysis.covariance import gradient_noise_covariance, noise_eigenbasis
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.potentials import LinearRegression, Quadratic
from langevin_sim.scenario import RunParams, main, param, unused


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 512, "steps": 1000, "record_every": 25, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 4096
    steps: int = 4000
    record_every: int = 50
    n: int = param(64, "number of training samples")
    d: int = param(4, "number of weights")
    noise: float = param(0.5, "standard deviation of the label noise")
    data_seed: int = param(1, "seed of the data set and the teacher")
    lr: float = param(0.1, "SGD learning rate")
    batch_size: int | None = param(4, "minibatch size (none: full batch)")
    momentum: float = param(0.0, "heavy-ball momentum")
    weight_decay: float = param(0.0, "L2 weight decay")
    temperature: float = param(0.0, "Langevin noise temperature (> 0: SGLD)")
    replacement: bool = param(True, "minibatches drawn i.i.d. with replacement (false: "
                                    "per-epoch permutations)")
    spectrum: tuple[float, ...] = param(
        (), "Hessian eigenvalues: whiten the inputs and rescale them so that H = A^T A / n = "
            "diag(spectrum) exactly, d values (empty: raw N(0, I) inputs)")
    dynamics: Literal["sgd", "matched_langevin"] = param(
        "sgd", "sgd: minibatch SGD; matched_langevin: isotropic Langevin (Euler-Maruyama, step "
               "lr, no momentum or weight decay) on the same loss at the temperature "
               "lr tr(C) / (2 S d) matched to this SGD's minibatch noise (S = batch_size)")


def data_set(p: Params) -> LinearRegression:
    """The regression data set of `p`: N(0, I) inputs and labels (seed `data_seed`), the inputs
    whitened and rescaled to the Hessian diag(spectrum) when a spectrum is given."""
    pot = LinearRegression(n=p.n, d=p.d, noise=p.noise, seed=p.data_seed)
    if not p.spectrum:
        return pot
    if len(p.spectrum) != p.d or min(p.spectrum) <= 0:
        raise ConfigError(f"spectrum must hold d = {p.d} positive eigenvalues, got {p.spectrum}")
    w, V = np.linalg.eigh(pot.A.T @ pot.A / p.n)
    if p.n < p.d or not w.min() > 1e-12 * w.max():
        raise ConfigError(f"a spectrum needs inputs of full rank d = {p.d} (A^T A / n is "
                          f"rank <= n): give n >= d samples, got n = {p.n}")
    A = pot.A @ (V / np.sqrt(w)) @ V.T * np.sqrt(np.asarray(p.spectrum))  # A^T A/n = diag(spec.)
    y = A @ pot.w_star + (pot.y - pot.A @ pot.w_star)                 # same teacher, same noise
    return LinearRegression(n=p.n, d=p.d, noise=p.noise, seed=p.data_seed, A=A, y=y,
                            w_star=pot.w_star)


def matched_temperature(pot: LinearRegression, lr: float, batch_size: int | None) -> dict:
    """The Langevin temperature matched to SGD's minibatch noise on `pot` at the minimizer m:
    C = (1/n) sum_i g_i g_i^T - gbar gbar^T with g_i = a_i (a_i . m - y_i), noise covariance
    of an i.i.d. batch C / S; T = lr tr(C) / (2 S d) (isotropic Langevin with the same noise
    power per coordinate).  Returns {"T", "C", "lam", "V", "per_direction"}: lam (d,), V
    (d, d) H's eigenbasis (ascending eigenvalues; a degenerate eigenspace, e.g. an isotropic
    spectrum, rotated to diagonalize C: `noise_eigenbasis`), per_direction[k] = lr C_kk /
    (2 S) in it, the temperature each direction would need; they are all equal only when C
    is isotropic there."""
    if batch_size is None:
        raise ConfigError("full-batch SGD has no minibatch noise to match (batch_size=none)")
    C = gradient_noise_covariance(pot, pot.minimizer())
    lam, V = noise_eigenbasis(pot.hessian_matrix, C)
    return {"T": lr * np.trace(C) / (2 * batch_size * pot.d), "C": C, "lam": lam, "V": V,
            "per_direction": lr * np.diag(V.T @ C @ V) / (2 * batch_size)}


def build(p: Params) -> Simulation:
    pot = data_set(p)
    if p.dynamics == "matched_langevin":
        unused(p, ["momentum", "weight_decay", "temperature", "replacement"],
               "with dynamics=matched_langevin (its temperature is the matched one)")
        T = matched_temperature(pot, p.lr, p.batch_size)["T"]
        pot, dyn = (Quadratic(H=pot.hessian_matrix, center=pot.minimizer()),
                    OverdampedLangevin(step=p.lr, temperature=T))
    else:
        dyn = SGD(lr=p.lr, batch_size=p.batch_size, momentum=p.momentum,
                  weight_decay=p.weight_decay, temperature=p.temperature,
                  sampling="iid" if p.replacement else "epoch")
    return Simulation(pot, dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      init=data_set(p).w_star)


if __name__ == "__main__":
    main(__file__)
