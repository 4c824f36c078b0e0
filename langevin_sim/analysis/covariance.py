"""d-dimensional stationary laws: sampled mean and covariance against exact predictions.

Sampled side: `sample_moments` of an (n_records, M, d) series (or a `Run`'s positions)
with autocorrelation-aware standard errors (the ArviZ ESS of each entry's series, via
`diagnostics.ess`).  Predicted side (`StationaryLaw`: mean (d,), covariance (d, d)):

- `gibbs_law`            exp(-U/T) on U = (x-c)^T H (x-c)/2:  Sigma = T H^-1.
- `euler_maruyama_law`   x' = x - eta H (x-c) + sqrt(2 eta T) xi, exact at any stable step:
                         Sigma = Q diag(T / (lam (1 - eta lam / 2))) Q^T,  H = Q diag(lam) Q^T.
- `baoab_law`            BAOAB (dynamics.langevin.UnderdampedLangevin), exact: positions
                         Sigma_x = T H^-1 (Gibbs at any stable step), stored momenta
                         Sigma_p = T (m I - eta^2 H / 4), Cov(x, p) = 0.
- `obabo_law`            OBABO (dynamics.langevin.OBABO), exact: positions
                         Sigma_x = T (H - eta^2 H^2 / (4 m))^-1, momenta Sigma_p = m T I
                         (the kinetic temperature exact), Cov(x, p) = 0.
- `sgd_law`              minibatch SGD (+ momentum, weight decay, SGLD temperature) on least
                         squares, exact discrete-time second moment (a linear equation, solved
                         on vec Sigma) for i.i.d. batches, independent random subsets, or the
                         engine's per-epoch reshuffling (enumerated; tiny n only).
- `sgd_lyapunov_law`     the continuous (Mandt, Hoffman & Blei 2017) approximation
                         A Sigma + Sigma A = eta f C / (1 - mu) + 2 T (1 - mu) I.
- `linearized_sgd`       any finite-sum loss near a minimum: plain SGD linearized with the
                         Hessian H and the per-sample gradient covariance C there
                         (`gradient_noise_covariance`), exact discrete, continuous, and
                         Gibbs / Euler-Maruyama at the matched T on H's top eigen-directions.
- `noise_eigenbasis`     H's eigenbasis with degenerate eigenspaces rotated to diagonalize C,
                         so that per-direction temperatures lam_k Var_k are well defined.

`kinetic_energy_check` compares an underdamped run's recorded kinetic energies with the law's
momenta.  `compare_covariance` puts the two side by side in the eigenbasis of the predicted
covariance (z-scores, a chi-square test, Gaussian KL divergence and 2-Wasserstein distance
with jackknife errors over replicas); `gaussian_marginal_fits` and `gibbs_energy_fit` test
1-D marginals with `stationary.fit_marginal` (quadrature).  Units: positions in the
potential's length units, covariances in length^2, temperature in energy units, eta
(step / lr) in time per step.  Imports neither numba nor cupy.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import linalg, stats

from ..errors import ConfigError
from ..io.reader import Run, check_run
from .diagnostics import MIN_ESS_DRAWS, REPLICA_SE_MIN, burn_in, ess, load_records, replica_mcse
from .stationary import MarginalFit, fit_marginal
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..dynamics.base import Dynamics
    from ..potentials import LinearRegression, Quadratic
    from ..potentials.base import Potential
    from .diagnostics import Records

SAMPLINGS = ("iid", "subset", "epoch")
MAX_SEQUENCES = 20000


# ---------------------------------------------------------------------------- laws

@dataclass(frozen=True)
class StationaryLaw(Result):
    """A predicted Gaussian stationary law: mean (d,), cov (d, d) of the positions.

    name: short label; note: the dynamics and sampling it is exact for (or why it is an
    approximation); momentum_cov: (d, d) covariance of BAOAB's momenta or SGD's velocity
    buffer when known, else None.
    """

    name: str
    mean: np.ndarray
    cov: np.ndarray
    note: str
    momentum_cov: np.ndarray | None = None

    @property
    def variances(self) -> np.ndarray:
        """Eigenvalues of cov, ascending (the variances along its eigen-directions)."""
        return np.linalg.eigvalsh(self.cov)

    def table(self) -> str:
        v = " ".join(f"{x:.4g}" for x in self.variances)
        return f"{self.name}: eigen-variances [{v}]\n  {self.note}"

    def plot(self, ax: Axes) -> None:
        """Eigen-variances of the law (log scale)."""
        ax.semilogy(np.arange(self.cov.shape[0]), self.variances, "o", label=self.name)
        ax.set(xlabel="eigen-direction", ylabel="variance")
        ax.legend(fontsize="small")


def _unstable(q: float) -> bool:
    """Whether a step's stability number q (eta lam, eta sqrt(lam / m), lr lam) is >= 2 to
    rounding (relative 1e-12): at q = 2 the stationary variance diverges, and a largest
    eigenvalue that LAPACK returns an ulp low (it varies between NumPy builds) must not turn
    the edge of stability into a finite law."""
    return q >= 2 * (1 - 1e-12)


def _spd(H) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1] or not np.allclose(H, H.T):
        raise ConfigError(f"H must be a symmetric (d, d) matrix, got shape {H.shape}")
    if np.linalg.eigvalsh(H).min() <= 0:
        raise ConfigError("H must be positive-definite (the stationary law of a quadratic "
                          "with a flat or unstable direction is not Gaussian)")
    return 0.5 * (H + H.T)


def _center(center, d: int) -> np.ndarray:
    return np.zeros(d) if center is None else np.asarray(center, dtype=np.float64).reshape(d)


def gibbs_law(H: ArrayLike, temperature: float, center: ArrayLike | None = None) -> StationaryLaw:
    """exp(-U/T)/Z for U = (x-c)^T H (x-c)/2: N(c, T H^-1)."""
    H = _spd(H)
    return StationaryLaw("Gibbs T H^-1", _center(center, H.shape[0]),
                         temperature * np.linalg.inv(H),
                         f"exp(-U/T) at T = {temperature:g}; exact for BAOAB positions at any "
                         "stable step, the eta -> 0 limit of Euler-Maruyama")


def euler_maruyama_law(H: ArrayLike, step: float, temperature: float,
                       center: ArrayLike | None = None) -> StationaryLaw:
    """Exact stationary law of x' = x - eta H (x-c) + sqrt(2 eta T) xi.

    Per eigenvalue lam of H, sigma^2 (1 - (1 - eta lam)^2) = 2 eta T, so
    sigma^2 = T / (lam (1 - eta lam / 2)); stable iff eta lam_max < 2."""
    H = _spd(H)
    lam, Q = np.linalg.eigh(H)
    if _unstable(step * lam[-1]):
        raise ConfigError(f"Euler-Maruyama is unstable at eta lam_max = {step * lam[-1]:.3g} "
                          ">= 2; lower the step")
    var = temperature / (lam * (1 - step * lam / 2))
    return StationaryLaw("Euler-Maruyama exact", _center(center, H.shape[0]), (Q * var) @ Q.T,
                         f"OverdampedLangevin at eta = {step:g}, T = {temperature:g}: "
                         "T / (lam (1 - eta lam / 2)) per eigenvalue")


def baoab_law(H: ArrayLike, step: float, temperature: float, mass: float = 1.0,
              center: ArrayLike | None = None) -> StationaryLaw:
    """Exact stationary law of BAOAB (UnderdampedLangevin) on U = (x-c)^T H (x-c)/2.

    Per eigen-mode the one-step map of (x, p) is linear with additive noise; its discrete
    Lyapunov equation gives Var x = T / lam, Var p = T (m - eta^2 lam / 4), Cov(x, p) = 0
    for the momenta stored after the final B step, at any friction, stable iff
    eta sqrt(lam / m) < 2."""
    H = _spd(H)
    lam = np.linalg.eigvalsh(H)
    if _unstable(step * math.sqrt(lam[-1] / mass)):
        raise ConfigError(f"BAOAB is unstable at eta sqrt(lam_max / m) = "
                          f"{step * math.sqrt(lam[-1] / mass):.3g} >= 2; lower the step")
    d = H.shape[0]
    return StationaryLaw("BAOAB exact", _center(center, d), temperature * np.linalg.inv(H),
                         f"UnderdampedLangevin at eta = {step:g}, T = {temperature:g}, "
                         f"m = {mass:g}: positions exactly Gibbs; momenta T (m I - eta^2 H / 4)",
                         momentum_cov=temperature * (mass * np.eye(d) - step ** 2 * H / 4))


def obabo_law(H: ArrayLike, step: float, temperature: float, mass: float = 1.0,
              center: ArrayLike | None = None) -> StationaryLaw:
    """Exact stationary law of OBABO (`dynamics.OBABO`) on U = (x-c)^T H (x-c)/2.

    Per eigen-mode the discrete Lyapunov equation of its linear one-step map gives
    Var x = T / (lam (1 - eta^2 lam / (4 m))), Var p = m T, Cov(x, p) = 0 (momenta stored
    after the closing O), at any friction; stable iff eta sqrt(lam / m) < 2."""
    H = _spd(H)
    lam, Q = np.linalg.eigh(H)
    if _unstable(step * math.sqrt(lam[-1] / mass)):
        raise ConfigError(f"OBABO is unstable at eta sqrt(lam_max / m) = "
                          f"{step * math.sqrt(lam[-1] / mass):.3g} >= 2; lower the step")
    var = temperature / (lam * (1 - step ** 2 * lam / (4 * mass)))
    d = H.shape[0]
    return StationaryLaw("OBABO exact", _center(center, d), (Q * var) @ Q.T,
                         f"OBABO at eta = {step:g}, T = {temperature:g}, m = {mass:g}: "
                         "T / (lam (1 - eta^2 lam / (4 m))) per eigenvalue; momenta m T I",
                         momentum_cov=temperature * mass * np.eye(d))


# ---------------------------------------------------------------- SGD on least squares

def _samples(potential) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample gradient pieces g_i(x) = P_i x - q_i: P (n, d, d), q (n, d).

    LinearRegression l_i = (a_i . x - y_i)^2 / 2: P_i = a_i a_i^T, q_i = y_i a_i.  A
    Quadratic is one sample, P = H, q = H c (full batch only)."""
    from ..potentials import LinearRegression, Quadratic

    if isinstance(potential, LinearRegression):
        A, y = potential.A, potential.y
        return np.einsum("ni,nj->nij", A, A), A * y[:, None]
    if isinstance(potential, Quadratic):
        return potential.H[None], (potential.H @ potential.center)[None]
    raise ConfigError(f"the SGD laws need a quadratic loss (LinearRegression or Quadratic), "
                      f"got {type(potential).__name__}")


def _independent_noise_factor(n: int, batch_size, sampling: str, what: str) -> float:
    """`_noise_factor` for a law that takes the step's minibatch noise independent across
    steps (a linearization, a diffusion limit): ConfigError for per-epoch reshuffling, whose
    batches within an epoch are not (its noise nearly cancels over an epoch: the "iid"
    factor read a variance 27x the exact one at n = 6, S = 1)."""
    f = _noise_factor(n, batch_size, sampling)
    if sampling == "epoch" and f > 0:
        raise ConfigError(f"{what} assumes minibatches independent across steps; "
                          "sampling='epoch' (reshuffled per epoch) has no such form: use "
                          "'iid' or 'subset', or covariance.sgd_law(..., sampling='epoch') on a "
                          "quadratic loss")
    return f


def _noise_factor(n: int, batch_size, sampling: str) -> float:
    """f with Cov(batch mean) = f Cov_population: 1/S i.i.d.; (n-S)/(S(n-1)) without
    replacement; 0 for the full batch."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if batch_size is None or n == 1:
        return 0.0
    S = int(batch_size)
    if not 1 <= S <= n:
        raise ConfigError(f"batch_size must be in [1, {n}], got {batch_size}")
    return 1.0 / S if sampling == "iid" else (n - S) / (S * (n - 1))


def _step_maps(P, q, lr, momentum, weight_decay) -> np.ndarray:
    """(n, D, D) affine one-step maps of z = (x, v, 1), D = 2d + 1, one per sample.

    v' = mu v + (P_i + wd) x - q_i;  x' = x - lr v'.  A batch's map is the mean of its
    samples' maps (the batch gradient is the mean of the per-sample gradients)."""
    n, d = q.shape
    G = P + weight_decay * np.eye(d)
    T = np.zeros((n, 2 * d + 1, 2 * d + 1))
    T[:, :d, :d] = np.eye(d) - lr * G
    T[:, :d, d:2 * d] = -lr * momentum * np.eye(d)
    T[:, :d, -1] = lr * q
    T[:, d:2 * d, :d] = G
    T[:, d:2 * d, d:2 * d] = momentum * np.eye(d)
    T[:, d:2 * d, -1] = -q
    T[:, -1, -1] = 1.0
    return T


def _kron_mean(T: np.ndarray) -> np.ndarray:
    """mean_i T_i (x) T_i as a (D^2, D^2) matrix, rows (a, b), columns (c, e): T_ac T_be
    (row-major vec: (T S T^T).ravel() = kron(T, T) @ S.ravel())."""
    n, D, _ = T.shape
    K = np.tensordot(T / n, T, axes=([0], [0]))                 # (a, c, b, e)
    return K.transpose(0, 2, 1, 3).reshape(D * D, D * D)


def _affine_moments(Tbar, TT, Q) -> tuple[np.ndarray, np.ndarray, float]:
    """Stationary mean (k,) and covariance (k, k) of z' = T z + noise, z = (u, 1), k = D-1.

    Tbar = E[T] (D, D), TT = E[T (x) T] (D^2, D^2), Q (k, k) the added noise covariance.
    The mean solves (I - Tbar_uu) m = Tbar_u1; in coordinates centred on m, the covariance
    solves S = E[T_uu S T_uu^T] + E[t t^T] + Q (t the centred map's offset), a linear
    system on vec S.  Also returns the spectral radius of S -> E[T_uu S T_uu^T], < 1 iff
    the recursion is mean-square stable (ConfigError otherwise)."""
    D = Tbar.shape[0]
    k = D - 1
    m = np.linalg.solve(np.eye(k) - Tbar[:k, :k], Tbar[:k, k])
    sh, shi = np.eye(D), np.eye(D)
    sh[:k, k], shi[:k, k] = -m, m
    K4 = (np.kron(sh, sh) @ TT @ np.kron(shi, shi)).reshape(D, D, D, D)
    Kuu = K4[:k, :k, :k, :k].reshape(k * k, k * k)
    rho = float(np.abs(np.linalg.eigvals(Kuu)).max())
    if rho >= 1:
        raise ConfigError(f"the second moment diverges (mean-square spectral radius {rho:.4g} "
                          ">= 1): the step is beyond SGD's mean-square stability; lower lr")
    S = np.linalg.solve(np.eye(k * k) - Kuu, (K4[:k, :k, k, k] + Q).ravel()).reshape(k, k)
    return m, 0.5 * (S + S.T), rho


def _batch_sequences(items: tuple, size: int, count: int):
    """All ordered sequences of `count` disjoint `size`-subsets of `items`."""
    if count == 0:
        yield ()
        return
    for b in combinations(items, size):
        rest = tuple(i for i in items if i not in b)
        for tail in _batch_sequences(rest, size, count - 1):
            yield (b,) + tail


def _epoch_moments(T, batch_size: int, Q, phase: int, Qi=None):
    """Stationary law of the engine's epoch reshuffling, by enumeration of the batch orders.

    Every ordered sequence of k = n // S disjoint batches is equally likely (a uniform
    permutation, the last n mod S samples dropped).  At epoch boundaries z_end = Phi z +
    noise with Phi the product of the k batch maps (random, independent of z): the law is
    `_affine_moments(E Phi, E Phi (x) Phi, E N)` with N the noise accumulated over the
    epoch.  At `phase` p > 0 (records p batches into an epoch) the boundary law is pushed
    through the first p batch maps of a fresh order.  Qi (n, D-1, D-1): per-sample noise,
    a batch B adding Q + mean_{i in B} Qi (label noise)."""
    n, D, _ = T.shape
    S, k = int(batch_size), n // int(batch_size)
    count = math.factorial(n) // (math.factorial(S) ** k * math.factorial(n - k * S))
    if count > MAX_SEQUENCES:
        raise ConfigError(f"the epoch-reshuffling law enumerates {count} batch orders "
                          f"(n = {n}, batch_size = {S}); it is exact only for tiny problems "
                          f"(<= {MAX_SEQUENCES} orders); use sampling='subset' or 'iid'")
    u = slice(0, D - 1)
    acc = {key: 0.0 for key in ("Phi", "PP", "N", "Phi_p", "PP_p", "N_p")}
    for seq in _batch_sequences(tuple(range(n)), S, k):
        Phi, N = np.eye(D), np.zeros((D - 1, D - 1))
        for j, b in enumerate(seq):
            if phase and j == phase:
                acc["Phi_p"] += Phi
                acc["PP_p"] += np.kron(Phi, Phi)
                acc["N_p"] += N
            Tb = T[list(b)].mean(axis=0)
            Phi = Tb @ Phi
            N = Tb[u, u] @ N @ Tb[u, u].T + Q + (0.0 if Qi is None else Qi[list(b)].mean(axis=0))
        acc["Phi"] += Phi
        acc["PP"] += np.kron(Phi, Phi)
        acc["N"] += N
    acc = {key: v / count for key, v in acc.items()}
    m0, S0, rho = _affine_moments(acc["Phi"], acc["PP"], acc["N"])
    if phase == 0:
        return m0, S0, rho
    second = np.zeros((D, D))                    # augmented second moment about m0
    second[u, u], second[-1, -1] = S0, 1.0
    sh, shi = np.eye(D), np.eye(D)
    sh[u, -1], shi[u, -1] = -m0, m0
    Phi_c = sh @ acc["Phi_p"] @ shi
    pushed = ((np.kron(sh, sh) @ acc["PP_p"] @ np.kron(shi, shi)) @ second.ravel()).reshape(D, D)
    shift = Phi_c[u, -1]                         # mean offset from m0 after p batches
    cov = pushed[u, u] + acc["N_p"] - np.outer(shift, shift)
    return m0 + shift, 0.5 * (cov + cov.T), rho


def sgd_law(potential: LinearRegression | Quadratic, lr: float, batch_size: int | None = None,
            momentum: float = 0.0, weight_decay: float = 0.0, temperature: float = 0.0,
            sampling: str = "iid", phase: int = 0, label_noise: float = 0.0,
            grad_noise: float = 0.0) -> StationaryLaw:
    """Exact stationary law of SGD (dynamics.sgd.SGD) on a quadratic finite-sum loss.

    Noise models of `SGD` (additive, mean 0 given the batch, so they only add to the noise
    covariance Q of (x, v), with L = (-lr I; I) the way a buffer kick enters (x, v)):
    grad_noise s_g adds s_g^2 L L^T; label_noise s_l (LinearRegression only) adds, for a
    batch B of size S, (s_l / S)^2 L (sum_{i in B} a_i a_i^T) L^T, i.e. s_l^2 / S L H L^T
    on average (iid and subset; the epoch law keeps it per batch).

    With per-sample gradients g_i(x) = P_i x - q_i (LinearRegression: P_i = a_i a_i^T,
    q_i = y_i a_i; Hessian H = mean P_i) the step v' = mu v + g_B(x) + wd x, x' = x - lr v'
    + sqrt(2 lr T) xi is affine in z = (x, v) with a random matrix: the minibatch noise
    (P_B - H) x - (q_B - qbar) is multiplicative.  For batches independent of the past,
    E[T_B (x) T_B] = Tbar (x) Tbar + f (mean_i T_i (x) T_i - Tbar (x) Tbar) with
    f = 1/S for sampling="iid" (with replacement) and f = (n-S)/(S(n-1)) for "subset"
    (independent uniformly random subsets: the finite-population correction); the mean is
    the ridge solution (H + wd)^-1 qbar and the covariance solves the linear equation of
    `_affine_moments` (size (2d)^2; cost O(d^6)).

    sampling="epoch" is the engine's SGD(sampling="epoch") (the default): a fresh permutation per epoch cut
    into n // S consecutive batches.  Batches within an epoch are not independent, so
    neither formula above applies; this law is exact at records `phase` batches into an
    epoch (phase 0: epoch boundaries, i.e. record_every a multiple of n // S), computed by
    enumerating all batch orders (tiny n only).  Returns the positions' law and the
    velocity buffer's covariance (momentum_cov).  ConfigError if not mean-square stable."""
    P, q = _samples(potential)
    n, d = q.shape
    if batch_size is None and sampling == "epoch":
        raise ConfigError("sampling='epoch' needs a batch_size")
    f = _noise_factor(n, batch_size, sampling)
    T = _step_maps(P, q, lr, momentum, weight_decay)
    Q = np.zeros((2 * d, 2 * d))
    Q[:d, :d] = 2 * lr * temperature * np.eye(d)
    L = np.vstack([-lr * np.eye(d), np.eye(d)])
    Q += grad_noise ** 2 * (L @ L.T)
    Qi = None
    if label_noise > 0:
        from ..potentials import LinearRegression

        if not isinstance(potential, LinearRegression):
            raise ConfigError(f"label_noise needs per-sample labels (LinearRegression), got "
                              f"{type(potential).__name__}; use grad_noise for a Quadratic")
        S_ = n if batch_size is None else int(batch_size)
        Qi = (label_noise ** 2 / S_) * np.einsum("ab,nbc,dc->nad", L, P, L)
        if sampling != "epoch":
            Q += Qi.mean(axis=0)
    what = (f"lr = {lr:g}, S = {batch_size}, momentum = {momentum:g}, weight decay = "
            f"{weight_decay:g}, T = {temperature:g}")
    if label_noise or grad_noise:
        what += f", label noise = {label_noise:g}, grad noise = {grad_noise:g}"
    if sampling == "epoch":
        if not 0 <= phase < n // int(batch_size):
            raise ConfigError(f"phase must be in [0, {n // int(batch_size)}), got {phase}")
        m, S, rho = _epoch_moments(T, batch_size, Q, phase, Qi)
        name, note = "SGD exact (epoch reshuffling)", (
            f"{what}; the engine's sampling='epoch', exact at records {phase} batches into "
            "an epoch (enumerated batch orders)")
    else:
        Tbar = T.mean(axis=0)
        TT = np.kron(Tbar, Tbar)
        TT += f * (_kron_mean(T) - TT)
        m, S, rho = _affine_moments(Tbar, TT, Q)
        if batch_size is None:
            name, note = "SGD exact (full batch)", f"{what}; deterministic gradient"
        elif sampling == "iid":
            name, note = "SGD exact (i.i.d. batches)", (
                f"{what}; exact for sampling='iid' (batches drawn with replacement)")
        else:
            name, note = "SGD exact (independent subsets)", (
                f"{what}; exact for sampling='subset' (independent random subsets each step) "
                "-- NOT per-epoch reshuffling (sampling='epoch')")
    return StationaryLaw(name, m[:d], S[:d, :d],
                         f"{note}; mean-square spectral radius {rho:.4f}", momentum_cov=S[d:, d:])


def sgd_lyapunov_law(potential: LinearRegression | Quadratic, lr: float,
                     batch_size: int | None = None, momentum: float = 0.0,
                     weight_decay: float = 0.0, temperature: float = 0.0, sampling: str = "iid"
                     ) -> StationaryLaw:
    """Continuous-time (Ornstein-Uhlenbeck) approximation of SGD's stationary law.

    A Sigma + Sigma A = lr f C / (1 - mu) + 2 T (1 - mu) I  (Mandt, Hoffman & Blei 2017 for
    mu = T = 0, f = 1/S), with A = H + wd I, the mean m = A^-1 qbar, C = mean_i g_i g_i^T
    the per-sample gradient covariance at m (g_i = (P_i + wd) m - q_i, mean zero), f as in
    `sgd_law` ("iid" or "subset"), and heavy ball's effective step lr / (1 - mu).  It keeps
    the noise additive (C frozen at m) and drops O(lr lam) terms; `lyapunov_gap` measures
    how far it is from `sgd_law`."""
    if sampling == "epoch":
        raise ConfigError("the continuous approximation has no epoch-reshuffling form; use "
                          "sampling='iid' or 'subset'")
    P, q = _samples(potential)
    n, d = q.shape
    f = _noise_factor(n, batch_size, sampling)
    A = P.mean(axis=0) + weight_decay * np.eye(d)
    m = np.linalg.solve(A, q.mean(axis=0))
    g = (P + weight_decay * np.eye(d)) @ m - q
    C = g.T @ g / n - np.outer(g.mean(axis=0), g.mean(axis=0))
    rhs = lr * f * C / (1 - momentum) + 2 * temperature * (1 - momentum) * np.eye(d)
    S = linalg.solve_continuous_lyapunov(A, rhs)
    return StationaryLaw(f"continuous Lyapunov ({sampling})", m, 0.5 * (S + S.T),
                         f"A Sigma + Sigma A = lr f C / (1 - mu) + 2 T (1 - mu) I, f = {f:.4g}; "
                         "an O(lr lam) approximation")


@dataclass(frozen=True)
class LyapunovGap(Result):
    """Distance of the continuous approximation from the exact SGD law over a grid of lr.

    lr (k,); eta_lambda_max = lr lam_max(H + wd) (k,); rel_diff = |Sigma_L - Sigma_exact|_F /
    |Sigma_exact|_F (k,); top_ratio = Var_L / Var_exact along the top eigenvector of H (k,);
    NaN where SGD is not mean-square stable (no exact stationary law).
    """

    lr: np.ndarray
    eta_lambda_max: np.ndarray
    rel_diff: np.ndarray
    top_ratio: np.ndarray

    def table(self) -> str:
        rows = [f"{'lr':>10} {'lr lam_max':>10} {'rel diff':>10} {'top ratio':>10}"]
        rows += [f"{a:10.4g} {b:10.4g} {c:10.4g} {e:10.4g}" for a, b, c, e in
                 zip(self.lr, self.eta_lambda_max, self.rel_diff, self.top_ratio)]
        return "\n".join(rows)

    def plot(self, ax: Axes) -> None:
        """Relative difference and 1 - top_ratio against lr lam_max (log-log)."""
        from matplotlib.ticker import NullFormatter

        ax.loglog(self.eta_lambda_max, self.rel_diff, "o-", label="|Σ_L - Σ|_F / |Σ|_F")
        ax.loglog(self.eta_lambda_max, np.abs(1 - self.top_ratio), "s--", mfc="none",
                  label="|1 - Var_L / Var| along the top eigenvector")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=r"$\eta\lambda_{max}$", ylabel="continuous approximation's error")
        ax.legend(fontsize="small")


def lyapunov_gap(potential: LinearRegression | Quadratic, lrs: ArrayLike,
                 batch_size: int | None = None, momentum: float = 0.0, weight_decay: float = 0.0,
                 temperature: float = 0.0, sampling: str = "iid") -> LyapunovGap:
    """`sgd_lyapunov_law` against `sgd_law` at each lr of `lrs` (same other arguments)."""
    P, q = _samples(potential)
    _noise_factor(q.shape[0], batch_size, sampling)              # validate before the loop
    lam, V = np.linalg.eigh(P.mean(axis=0) + weight_decay * np.eye(P.shape[1]))
    top = V[:, -1]
    kw = dict(batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
              temperature=temperature, sampling=sampling)
    rows = []
    for lr in np.asarray(lrs, dtype=np.float64):
        try:
            ex = sgd_law(potential, lr, **kw).cov
        except ConfigError:                                       # not mean-square stable
            rows.append((lr, lr * lam[-1], np.nan, np.nan))
            continue
        ly = sgd_lyapunov_law(potential, lr, **kw).cov
        rows.append((lr, lr * lam[-1], np.linalg.norm(ly - ex) / np.linalg.norm(ex),
                     (top @ ly @ top) / (top @ ex @ top)))
    return LyapunovGap(*map(np.array, zip(*rows)))


# ------------------------------------------------- SGD linearized at a minimum

def gradient_noise_covariance(potential: Potential, x: ArrayLike) -> np.ndarray:
    """Per-sample gradient covariance C = (1/n) sum_i g_i g_i^T - gbar gbar^T (d, d) of a
    finite-sum potential at one point x (d,), g_i = grad l_i(x) from `grad(x, [[i]])`
    (energy^2 / length^2).  An i.i.d. batch of S samples has gradient noise C / S."""
    n = potential.n_samples
    if n is None:
        raise ConfigError(f"{type(potential).__name__} is not a finite sum (no per-sample "
                          "gradients); the minibatch noise covariance needs n_samples")
    x = np.asarray(x, np.float64).reshape(1, potential.d)
    g = np.asarray(potential.grad(np.repeat(x, n, axis=0), np.arange(n)[:, None]), np.float64)
    gc = g - g.mean(axis=0)
    return gc.T @ gc / n


def noise_eigenbasis(H: ArrayLike, C: ArrayLike, rtol: float = 1e-8
                     ) -> tuple[np.ndarray, np.ndarray]:
    """H's eigenvalues lam (d,) ascending and eigenvectors V (d, d), with every cluster of
    eigenvalues equal within rtol * max|lam| rotated to diagonalize C (d, d) there.

    Per-direction quantities such as C_kk = (V^T C V)_kk or lam_k Var_k are defined only up to
    a rotation inside a degenerate eigenspace; `eigh` alone picks that rotation from rounding
    noise (H = I to 1e-16 gave max/min C_kk anywhere from 1.04 to 1.26 where C's own
    eigenvalues span 1.30).  Within a cluster the columns follow C's ascending eigenvalues."""
    H, C = (0.5 * (np.asarray(a, np.float64) + np.asarray(a, np.float64).T) for a in (H, C))
    lam, V = np.linalg.eigh(H)
    tol = rtol * max(np.abs(lam).max(), np.finfo(float).tiny)
    start = 0
    for end in range(1, lam.size + 1):
        if end == lam.size or lam[end] - lam[end - 1] > tol:
            if end - start > 1:
                U = V[:, start:end]
                V[:, start:end] = U @ np.linalg.eigh(U.T @ C @ U)[1]
            start = end
    return lam, V


@dataclass(frozen=True)
class LinearizedSGD(Result):
    """SGD with heavy-ball momentum mu (0: plain) linearized at a minimum x*: v' = mu v +
    H y + zeta, y' = y - lr v' (plain: y' = (I - lr H) y - lr zeta), y = x - x*, zeta the
    batch gradient noise, Cov zeta = f C (f = `_noise_factor`), in the coordinates of H's
    top-k eigenvectors V (d, k) (ascending eigenvalues lam (k,)), where the linear dynamics
    decouples from the other directions exactly.

    discrete: the exact stationary law of that linear recursion (discrete Lyapunov of
    z = (y, v), z' = A z + B zeta, A = [[I - lr L, -lr mu I], [L, mu I]], B = [-lr I; I];
    its y block); continuous: Mandt et al. at the effective step lr / (1 - mu),
    L S + S L = lr f C_k / (1 - mu); gibbs: isotropic Langevin's Gibbs law T L^-1 at the
    matched temperature T = lr f tr(C) / (2 d (1 - mu)) (tr over all d directions, as in
    claim 1); euler_maruyama: the Euler-Maruyama chain at that T with step lr / (1 - mu)
    (None where that step is unstable, lr lam_max >= 2 (1 - mu), while heavy ball is not).
    All four are (k, k) covariances of V^T y.  Units: covariances length^2, T energy.
    """

    lam: np.ndarray
    V: np.ndarray
    C: np.ndarray
    lr: float
    noise_factor: float
    temperature: float
    discrete: StationaryLaw
    continuous: StationaryLaw
    gibbs: StationaryLaw
    euler_maruyama: StationaryLaw | None
    momentum: float = 0.0

    @property
    def temperatures(self) -> np.ndarray:
        """(k,) per-direction temperatures lam_i Var_i of the exact linearized law."""
        return self.lam * np.diag(self.discrete.cov)

    def table(self) -> str:
        rows = [f"SGD linearized at a minimum: lr = {self.lr:g}, momentum = {self.momentum:g}, "
                f"f = {self.noise_factor:.4g}, matched T = {self.temperature:.4g}",
                f"{'lam':>9} {'lr lam':>7} {'Var exact':>10} {'continuous':>10} "
                f"{'Gibbs T':>10} {'EM T':>10} {'T_i/T':>7}"]
        em = np.full(self.lam.size, np.nan) if self.euler_maruyama is None else \
            np.diag(self.euler_maruyama.cov)
        for i in range(self.lam.size):
            rows.append(f"{self.lam[i]:9.4g} {self.lr * self.lam[i]:7.3f} "
                        f"{self.discrete.cov[i, i]:10.4g} {self.continuous.cov[i, i]:10.4g} "
                        f"{self.gibbs.cov[i, i]:10.4g} {em[i]:10.4g} "
                        f"{self.temperatures[i] / self.temperature:7.3f}")
        return "\n".join(rows)

    def plot(self, ax: Axes) -> None:
        """Variance along each eigen-direction: exact linear SGD, continuous, Gibbs (log-log)."""
        for law, mk in ((self.discrete, "o"), (self.continuous, "x"), (self.gibbs, "s")):
            ax.loglog(self.lam, np.diag(law.cov), mk, mfc="none", label=law.name)
        ax.set(xlabel="Hessian eigenvalue", ylabel="variance")
        ax.legend(fontsize="small")


def linearized_sgd(H: ArrayLike, C: ArrayLike, lr: float, batch_size: int | None, n: int,
                   sampling: str = "iid", k: int | None = None, momentum: float = 0.0
                   ) -> LinearizedSGD:
    """`LinearizedSGD` from the Hessian H (d, d) and per-sample gradient covariance C (d, d)
    at a minimum (`gradient_noise_covariance`), for SGD with learning rate lr, heavy-ball
    `momentum` mu in [0, 1) and batches of `batch_size` of n samples drawn by `sampling`
    ("iid" or "subset"), on the top k eigen-directions of H (default: all; they must have
    lam > 0, and lr lam < 2 (1 + mu))."""
    H, C = (0.5 * (np.asarray(a, np.float64) + np.asarray(a, np.float64).T) for a in (H, C))
    d = H.shape[0]
    if H.shape != (d, d) or C.shape != (d, d):
        raise ConfigError(f"H and C must be (d, d) matrices, got {H.shape} and {C.shape}")
    mu = float(momentum)
    if not 0.0 <= mu < 1.0:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
    f = _independent_noise_factor(int(n), batch_size, sampling, "linearized_sgd")
    lam, V = np.linalg.eigh(H)
    k = d if k is None else int(k)
    if not 1 <= k <= d:
        raise ConfigError(f"k must be in 1..{d}, got {k}")
    lam, V = lam[-k:], V[:, -k:]
    if lam[0] <= 0 or _unstable(lr * lam[-1] / (1 + mu)):
        raise ConfigError(f"the linearized SGD law needs 0 < lr lam < 2 (1 + momentum) on the "
                          f"chosen directions; got lam in [{lam[0]:.3g}, {lam[-1]:.3g}] at "
                          f"lr = {lr:g}, momentum = {mu:g} (lower k or lr)")
    Ck = V.T @ C @ V
    I, L = np.eye(k), np.diag(lam)
    A = np.block([[I - lr * L, -lr * mu * I], [L, mu * I]])
    B = np.vstack([-lr * I, I])
    S = linalg.solve_discrete_lyapunov(A, f * B @ Ck @ B.T)[:k, :k]
    step = lr / (1 - mu)                 # the effective step of heavy-ball momentum
    Sc = linalg.solve_continuous_lyapunov(L, step * f * Ck)
    T = step * f * np.trace(C) / (2 * d)
    what = f"lr = {lr:g}, momentum = {mu:g}, S = {batch_size}, {sampling}"
    return LinearizedSGD(
        lam, V, Ck, float(lr), f, float(T),
        StationaryLaw("linear SGD exact", np.zeros(k), 0.5 * (S + S.T),
                      f"{what}: the linear recursion's discrete Lyapunov equation"),
        StationaryLaw("continuous (Mandt)", np.zeros(k), 0.5 * (Sc + Sc.T),
                      f"{what}: H S + S H = lr f C / (1 - mu), an O(lr lam) approximation"),
        gibbs_law(L, T), None if _unstable(step * lam[-1]) else euler_maruyama_law(L, step, T),
        mu)


# ------------------------------------------------------------------ laws of a run

def predicted_laws(source: Run | tuple[Potential, Dynamics]) -> tuple[StationaryLaw, ...]:
    """The stationary laws that apply to a run (a `Run` or a (potential, dynamics) pair),
    the exact one first, then approximations and alternatives for comparison.

    Quadratic + OverdampedLangevin: Euler-Maruyama exact, Gibbs.  Quadratic +
    UnderdampedLangevin: BAOAB exact.  Quadratic + OBABO: OBABO exact, Gibbs.  Quadratic +
    full-batch SGD: SGD exact, continuous.
    LinearRegression + SGD, sampling="iid": i.i.d. exact, continuous; "subset": subset
    exact, i.i.d. exact, continuous; with label_noise / grad_noise: the exact law of the
    sampling only (epoch: when recorded at epoch boundaries).  sampling="epoch":
    the epoch-reshuffling law when it is enumerable and every record falls at an epoch
    boundary (record_every a multiple of n // S), then the independent-subset law (first
    when the epoch law is not available, then renamed an approximation: no exact law
    applies), i.i.d. exact, continuous.  ConfigError for scheduled step sizes or
    temperatures, for underdamped dynamics without friction (Hamiltonian: no noise, no
    stationary law) and for other potentials or dynamics."""
    source = check_run(source, "predicted_laws")
    from ..dynamics import OBABO, SGD, OverdampedLangevin, UnderdampedLangevin
    from ..dynamics.base import Dynamics
    from ..potentials import LinearRegression, Quadratic

    record_every = None
    if isinstance(source, Run):
        pot, dyn = source.potential, Dynamics.from_dict(source.config["dynamics"])
        record_every = int(source.config["record_every"])
    else:
        pot, dyn = source
    if not (isinstance(pot, Quadratic) and isinstance(dyn, (OverdampedLangevin,
                                                             UnderdampedLangevin, OBABO, SGD))
            or isinstance(pot, LinearRegression) and isinstance(dyn, SGD)):
        raise ConfigError(f"no predicted stationary law for {type(pot).__name__} with "
                          f"{type(dyn).__name__}; supported: Quadratic with OverdampedLangevin, "
                          "UnderdampedLangevin, OBABO or full-batch SGD, LinearRegression with "
                          "SGD")
    for key in ("step", "lr", "temperature"):
        s = getattr(dyn, key, None)
        if s is not None and s.kind != "constant":
            raise ConfigError(f"the run's {key} is scheduled ({s.kind}); stationary laws need a "
                              "constant step size and temperature")
    if isinstance(dyn, (UnderdampedLangevin, OBABO)) and dyn.friction == 0:
        raise ConfigError(f"the run's {type(dyn).__name__} has friction 0: deterministic "
                          "Hamiltonian dynamics (velocity Verlet), which keeps each replica's "
                          "energy and has no stationary law; give it friction > 0")
    T = dyn.temperature.start
    if isinstance(pot, Quadratic) and isinstance(dyn, OverdampedLangevin):
        eta = dyn.step.start
        return (euler_maruyama_law(pot.H, eta, T, pot.center), gibbs_law(pot.H, T, pot.center))
    if isinstance(pot, Quadratic) and isinstance(dyn, UnderdampedLangevin):
        return (baoab_law(pot.H, dyn.step.start, T, dyn.mass, pot.center),)
    if isinstance(pot, Quadratic) and isinstance(dyn, OBABO):
        return (obabo_law(pot.H, dyn.step.start, T, dyn.mass, pot.center),
                gibbs_law(pot.H, T, pot.center))
    # SGD on Quadratic or LinearRegression
    kw = dict(batch_size=dyn.batch_size, momentum=dyn.momentum,
              weight_decay=dyn.weight_decay, temperature=T)
    lr = dyn.lr.start
    if dyn.label_noise or dyn.grad_noise:      # exact law only (no continuous analogue here)
        nkw = dict(kw, label_noise=dyn.label_noise, grad_noise=dyn.grad_noise)
        if dyn.batch_size is None or dyn.sampling != "epoch":
            return (sgd_law(pot, lr, sampling=dyn.sampling if dyn.batch_size else "iid",
                            **nkw),)
        return _epoch_first(pot, lr, nkw, record_every, [sgd_law(pot, lr, sampling="subset",
                                                                 **nkw)])
    if dyn.sampling == "iid" or dyn.batch_size is None:
        return (sgd_law(pot, lr, **kw), sgd_lyapunov_law(pot, lr, **kw))
    if dyn.sampling == "subset":
        return (sgd_law(pot, lr, sampling="subset", **kw), sgd_law(pot, lr, **kw),
                sgd_lyapunov_law(pot, lr, sampling="subset", **kw))
    return _epoch_first(pot, lr, kw, record_every,
                        [sgd_law(pot, lr, sampling="subset", **kw), sgd_law(pot, lr, **kw),
                         sgd_lyapunov_law(pot, lr, sampling="subset", **kw)])


def _epoch_first(pot: LinearRegression, lr: float, kw: dict, record_every: int | None,
                 laws: list[StationaryLaw]) -> tuple[StationaryLaw, ...]:
    """`laws` (the independent-subset law first) of an epoch-sampling SGD run, led by the
    exact epoch law when records fall on epoch boundaries (record_every a multiple of
    n // S) and its batch orders can be enumerated; else no exact law applies and the
    subset law, first, is renamed an approximation, so that no verdict calls it exact."""
    per_epoch = pot.n_samples // kw["batch_size"]
    if record_every is None:
        why = "the records' place in an epoch is unknown (pass the Run)"
    elif record_every % per_epoch:
        why = (f"records every {record_every} steps are off the epoch boundaries (every "
               f"{per_epoch} steps)")
    else:
        try:
            return (sgd_law(pot, lr, sampling="epoch", **kw), *laws)
        except ConfigError:
            why = f"its batch orders are too many to enumerate (> {MAX_SEQUENCES})"
    sub = laws[0]
    return (replace(sub, name="SGD independent subsets (approximation: no exact epoch law)",
                    note=f"no exact law for this epoch sampling: {why}; {sub.note}"), *laws[1:])


# --------------------------------------------------------------- sampled moments

@dataclass(frozen=True)
class SampleMoments(Result):
    """Pooled mean (d,) and covariance (d, d) of (n, M, d) records x replicas, with standard
    errors of each entry's series, x_i for the mean and (x_i - mean_i)(x_j - mean_j) for the
    covariance (autocorrelation across records accounted for; replicas are independent
    chains): with M >= REPLICA_SE_MIN replicas the spread of the replicas' own averages over
    their records / sqrt(M), exact at any number of records; with fewer, sd / sqrt(ESS) from
    ArviZ's ESS (method "mean"), biased by up to +-50 % where the records span fewer than
    ~60 autocorrelation times (`diagnostics.replica_mcse`).  ess_*: sd^2 / se^2."""

    mean: np.ndarray
    mean_se: np.ndarray
    cov: np.ndarray
    cov_se: np.ndarray
    ess_mean: np.ndarray
    ess_cov: np.ndarray
    n_records: int
    n_replicas: int

    def table(self) -> str:
        d = self.mean.size
        rows = [f"{self.n_records} records x {self.n_replicas} replicas",
                f"{'i':>3} {'j':>3} {'cov':>11} {'se':>9} {'ESS':>9}"]
        rows += [f"{i:3d} {j:3d} {self.cov[i, j]:11.4g} {self.cov_se[i, j]:9.2g} "
                 f"{self.ess_cov[i, j]:9.0f}" for i in range(d) for j in range(i, d)]
        return "\n".join(rows)

    def plot(self, ax: Axes) -> None:
        """Covariance entries with their error bars."""
        iu = np.triu_indices(self.mean.size)
        ax.errorbar(np.arange(iu[0].size), self.cov[iu], 2 * self.cov_se[iu], fmt="o", ms=3)
        ax.set(xlabel="entry (i <= j, row-major)", ylabel="covariance ± 2 se")


COV_BLOCK_BYTES = 64 << 20   # `sample_moments` forms the products y_i y_j in blocks of this


def sample_moments(data: Run | Records | ArrayLike, name: str = "positions", burn: int = 0
                   ) -> SampleMoments:
    """`SampleMoments` of an (n_records, M, d) array, or of a `Run`'s series `name`, after
    `burn` records (diverged replicas dropped; >= MIN_ESS_DRAWS records needed for ArviZ's
    ESS where M < REPLICA_SE_MIN, one where M is larger)."""
    x = load_records(data, name).after(int(burn)).values
    by_replicas = x.ndim == 3 and x.shape[1] >= REPLICA_SE_MIN
    if x.ndim != 3 or x.shape[0] < (1 if by_replicas else MIN_ESS_DRAWS):
        raise ConfigError(f"sample moments need (n >= {MIN_ESS_DRAWS}, M, d) records, got "
                          f"{x.shape}: with fewer than {REPLICA_SE_MIN} replicas their errors "
                          "come from ArviZ's ESS, biased high (errors too small) on fewer "
                          "records; run longer, record more often or run more replicas")
    n, M, d = x.shape
    N = n * M
    mean = x.mean(axis=(0, 1))
    y = x - mean
    # ArviZ's ESS of short chains reads above n M for independent draws (x 1.09 at 50 records,
    # x 1.22 at 20): capped at n M, or the se are too small and a chi2 over d (d + 3) / 2
    # entries rejects exact samples (the replicas' spread needs no cap)
    sd_x = x.std(axis=(0, 1), ddof=1)
    if by_replicas:
        mean_se = replica_mcse(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            ess_mean = sd_x ** 2 / mean_se ** 2
    else:
        ess_mean = np.minimum(ess(x, "mean"), N)
        mean_se = sd_x / np.sqrt(ess_mean)
    cov, sd, se_c, ess_c = (np.zeros((d, d)) for _ in range(4))
    iu = np.triu_indices(d)
    per = max(1, COV_BLOCK_BYTES // (8 * N))     # entries y_i y_j per block: (n, M, per)
    for a in range(0, iu[0].size, per):          # (all d^2 at once: n M d^2 floats, 2 copies)
        i, j = iu[0][a:a + per], iu[1][a:a + per]
        prod = y[..., i] * y[..., j]
        m, v = prod.mean(axis=(0, 1)) * (N / (N - 1)), prod.std(axis=(0, 1), ddof=1)
        if by_replicas:
            se = replica_mcse(prod) * (N / (N - 1))
            with np.errstate(divide="ignore", invalid="ignore"):
                e = v ** 2 / se ** 2
        else:
            e = np.minimum(ess(prod, "mean"), N)
            se = v / np.sqrt(e)
        for out, val in ((ess_c, e), (se_c, se), (cov, m), (sd, v)):
            out[i, j] = val
            out[j, i] = val
    return SampleMoments(mean, mean_se, cov, se_c, ess_mean, ess_c, n, M)


# ------------------------------------------------------------ Gaussian distances

def _gaussians(*arrays: ArrayLike) -> tuple[np.ndarray, ...]:
    """mean0 (d,), cov0 (d, d), mean1 (d,), cov1 (d, d) as float64, or one ConfigError."""
    m0, c0, m1, c1 = (np.asarray(a, np.float64) for a in arrays)
    d = m0.shape[-1] if m0.ndim == 1 else -1
    if not (m0.shape == m1.shape == (d,) and c0.shape == c1.shape == (d, d)):
        raise ConfigError(f"two Gaussians in the same dimension d: means (d,) and covariances "
                          f"(d, d), got {m0.shape}, {c0.shape}, {m1.shape}, {c1.shape}")
    return m0, c0, m1, c1


def gaussian_kl(mean0: ArrayLike, cov0: ArrayLike, mean1: ArrayLike, cov1: ArrayLike) -> float:
    """KL(N0 || N1) = (tr(S1^-1 S0) - d + dm^T S1^-1 dm + ln det S1 - ln det S0) / 2, nats."""
    mean0, cov0, mean1, cov1 = _gaussians(mean0, cov0, mean1, cov1)
    L = np.linalg.cholesky(cov1)
    dm = np.linalg.solve(L, mean1 - mean0)
    W = np.linalg.solve(L, np.linalg.solve(L, cov0).T)          # L^-1 S0 L^-T
    ld0 = np.linalg.slogdet(cov0)[1]
    return float(0.5 * (np.trace(W) - len(dm) + dm @ dm + 2 * np.log(np.diag(L)).sum() - ld0))


def gaussian_w2(mean0: ArrayLike, cov0: ArrayLike, mean1: ArrayLike, cov1: ArrayLike) -> float:
    """2-Wasserstein distance: W2^2 = |m0 - m1|^2 + tr S0 + tr S1 - 2 tr (S1^1/2 S0 S1^1/2)^1/2."""
    mean0, cov0, mean1, cov1 = _gaussians(mean0, cov0, mean1, cov1)
    lam, V = np.linalg.eigh(cov1)
    r = (V * np.sqrt(np.clip(lam, 0, None))) @ V.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ cov0 @ r), 0, None)).sum()
    w2 = np.sum((mean0 - mean1) ** 2) + np.trace(cov0) + np.trace(cov1) - 2 * cross
    return float(np.sqrt(max(w2, 0.0)))


def _jackknife(y: np.ndarray, groups: int, stat) -> tuple[float, float, float]:
    """(stat, se, bias) of stat(mean, cov) of (n, M, d) y, delete-one-group jackknife over
    `groups` groups of consecutive replicas (independent chains, so records stay together)."""
    n, M, d = y.shape
    G = min(groups, M)
    part = np.array_split(np.arange(M), G)
    s1 = np.stack([y[:, p].sum(axis=(0, 1)) for p in part])
    s2 = np.stack([np.einsum("tmi,tmj->ij", y[:, p], y[:, p]) for p in part])
    cnt = np.array([n * p.size for p in part], dtype=np.float64)

    def moments(a, b, c):
        m = a / c
        return m, b / c - np.outer(m, m)

    full = stat(*moments(s1.sum(0), s2.sum(0), cnt.sum()))
    if G < 2:
        return full, np.nan, np.nan
    loo = np.array([stat(*moments(s1.sum(0) - s1[g], s2.sum(0) - s2[g], cnt.sum() - cnt[g]))
                    for g in range(G)])
    se = math.sqrt((G - 1) / G * np.sum((loo - loo.mean()) ** 2))
    return full, se, (G - 1) * (loo.mean() - full)


# ------------------------------------------------------------------- comparison

@dataclass(frozen=True)
class CovarianceComparison(Result):
    """Sampled mean and covariance against a predicted `law` (and `alternatives`).

    Everything is expressed in the eigenbasis `basis` (d, d) of law.cov, centred on
    law.mean: y = (x - law.mean) @ basis, where the predicted law is N(0, diag(predicted)).
    `sampled`: `SampleMoments` of y after `burn` records.  z-scores: (sampled - predicted) /
    se for the d means and the d(d+1)/2 covariance entries; chi2 = sum z^2 on that many
    degrees of freedom (entries are nearly uncorrelated in this basis when the law holds).
    kl = KL(sampled || law), w2 = W2(sampled, law), each with a jackknife se and bias over
    replica groups; both are >= 0 and biased upwards by sampling noise (about
    (d + d(d+1)/2) / (2 ESS) for KL), so judge them against their se and bias.
    """

    name: str
    law: StationaryLaw
    alternatives: tuple[StationaryLaw, ...]
    basis: np.ndarray
    burn: int
    dropped: int
    sampled: SampleMoments
    kl: tuple[float, float, float]
    w2: tuple[float, float, float]
    p_threshold: float = field(default=1e-3)

    @property
    def predicted(self) -> np.ndarray:
        """(d,) predicted variances along the eigen-directions (ascending)."""
        return np.diag(self.basis.T @ self.law.cov @ self.basis)

    def in_basis(self, law: StationaryLaw) -> tuple[np.ndarray, np.ndarray]:
        """(mean, cov) of `law` in this comparison's centred eigen-coordinates."""
        return (law.mean - self.law.mean) @ self.basis, self.basis.T @ law.cov @ self.basis

    def z_scores(self, law: StationaryLaw | None = None) -> tuple[np.ndarray, np.ndarray]:
        """z of the sampled means (d,) and covariance entries (d, d) against `law` (default
        the predicted law)."""
        m, c = self.in_basis(self.law if law is None else law)
        s = self.sampled
        return (s.mean - m) / s.mean_se, (s.cov - c) / s.cov_se

    def chi2(self, law: StationaryLaw | None = None) -> tuple[float, int, float]:
        """(chi2, dof, p) of the means and upper-triangle covariance entries against `law`."""
        zm, zc = self.z_scores(law)
        z = np.concatenate([zm, zc[np.triu_indices(zm.size)]])
        c = float(np.sum(z ** 2))
        return c, z.size, float(stats.chi2.sf(c, z.size))

    @property
    def consistent(self) -> bool:
        return self.chi2()[2] > self.p_threshold

    @property
    def verdict(self) -> str:
        c, dof, p = self.chi2()
        word = "consistent" if self.consistent else "INCONSISTENT"
        return f"verdict: {word} with {self.law.name} (chi2 = {c:.1f} on {dof} dof, p = {p:.3g})"

    def table(self) -> str:
        s = self.sampled
        d = s.mean.size
        zm, zc = self.z_scores()
        alt = [np.diag(self.in_basis(a)[1]) for a in self.alternatives]
        head = f"{'k':>3} {'predicted':>11} {'sampled':>11} {'± se':>9} {'z':>6}"
        head += "".join(f" | {a.name[:31]:>31} {'z':>7}" for a in self.alternatives)
        rows = [f"{self.name}: {s.n_records} records x {s.n_replicas} replicas after burn-in "
                f"{self.burn} records ({self.dropped} diverged replicas dropped)",
                f"predicted: {self.law.name} -- {self.law.note}",
                "variances along the eigen-directions of the predicted covariance:", head]
        for k in range(d):
            r = (f"{k:3d} {self.predicted[k]:11.5g} {s.cov[k, k]:11.5g} {s.cov_se[k, k]:9.2g} "
                 f"{zc[k, k]:6.2f}")
            r += "".join(f" | {v[k]:31.5g} {(s.cov[k, k] - v[k]) / s.cov_se[k, k]:7.1f}"
                         for v in alt)
            rows.append(r)
        off = np.abs(zc[np.triu_indices(d, 1)])
        rows.append(f"means (eigen-coordinates): max |z| = {np.abs(zm).max():.2f}; off-diagonal "
                    f"covariances: max |z| = {off.max() if off.size else 0.0:.2f} "
                    f"({off.size} entries)")
        for a in self.alternatives:
            c, dof, p = self.chi2(a)
            rows.append(f"alternative {a.name}: chi2 = {c:.1f} on {dof} dof, p = {p:.3g}")
        (kl, kse, kb), (w, wse, wb) = self.kl, self.w2
        rows.append(f"KL(sampled || predicted) = {kl:.3g} ± {kse:.2g} nats (jackknife bias "
                    f"{kb:.2g}); W2 = {w:.3g} ± {wse:.2g} (bias {wb:.2g})")
        rows.append(self.verdict)
        return "\n".join(rows)

    def plot(self, ax: Axes) -> None:
        """Sampled / predicted variance per eigen-direction (± 2 se), with alternatives."""
        s, pred = self.sampled, self.predicted
        k = np.arange(pred.size)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.errorbar(k, np.diag(s.cov) / pred, 2 * np.diag(s.cov_se) / pred, fmt="o", ms=4,
                    capsize=3, label=f"sampled ± 2 se / {self.law.name}")
        for j, a in enumerate(self.alternatives):
            ax.plot(k, np.diag(self.in_basis(a)[1]) / pred, "sx^dv"[j % 5], mfc="none",
                    label=a.name)
        ax.set_xticks(k)
        ax.set(xlabel="eigen-direction k (ascending predicted variance)",
               ylabel="variance / predicted", title=self.verdict.replace("verdict: ", ""))
        ax.title.set_fontsize("small")
        ax.legend(fontsize="small")


def kinetic_energy_check(run: Run, law: StationaryLaw, burn: int = 0) -> tuple[float, float,
                                                                              float]:
    """(sampled mean, its se, predicted) kinetic energy per replica (energy units) of an
    underdamped run's recorded `kinetic_energy` after `burn` records, against the law's
    momenta: tr(momentum_cov) / (2 m).  se from the replicas' time averages (independent
    replicas; diverged ones dropped)."""
    run = check_run(run, "kinetic_energy_check")
    if "kinetic_energy" not in run or law.momentum_cov is None:
        raise ConfigError("kinetic_energy_check needs a run that records kinetic_energy "
                          "(UnderdampedLangevin, OBABO) and a law with momentum_cov")
    ke = np.asarray(run["kinetic_energy"])[burn:][:, run.diverged_step < 0]
    per = ke.mean(axis=0)
    return (float(per.mean()), float(per.std(ddof=1) / math.sqrt(per.size)),
            float(np.trace(law.momentum_cov) / (2.0 * run.dynamics.mass)))


def compare_covariance(data: Run | Records | ArrayLike, law: StationaryLaw,
                       alternatives: Iterable[StationaryLaw] = (), *, name: str = "positions",
                       burn: int | Literal["auto"] = "auto",
                       groups: int = 20) -> CovarianceComparison:
    """Compare an (n_records, M, d) series (or a `Run`'s series `name`) with `law`.

    burn: records to drop, or "auto" for the MSER burn-in (`diagnostics.burn_in`) of the
    eigen-coordinates y and of y^2 (so a relaxing variance counts, not only the mean).
    groups: replica groups of the KL / W2 jackknife.  Diverged replicas are dropped."""
    rec = load_records(data, name)
    x = rec.values
    if x.ndim != 3 or x.shape[2] != law.mean.size:
        raise ConfigError(f"{rec.name} has shape {x.shape}; the law needs "
                          f"(n, M, {law.mean.size})")
    var, basis = np.linalg.eigh(law.cov)
    if var[0] <= 0:
        raise ConfigError(f"{law.name} has a singular covariance (smallest variance "
                          f"{var[0]:.3g}): a point mass (deterministic dynamics) has no "
                          "Gaussian comparison")
    y = (x - law.mean) @ basis
    if burn == "auto" and y.shape[0] < 4:
        raise ConfigError(f"{rec.name}: {y.shape[0]} records; the burn-in detection and the "
                          "comparison need >= 4: run longer or record more often")
    if burn == "auto":
        burn = burn_in(np.concatenate([y, y ** 2], axis=2)).record
    elif not (isinstance(burn, (int, np.integer)) and burn >= 0):
        raise ConfigError(f"burn must be 'auto' or a number of records >= 0, got {burn!r}")
    y = y[int(burn):]
    if y.shape[0] < MIN_ESS_DRAWS and y.shape[1] < REPLICA_SE_MIN:
        raise ConfigError(f"{y.shape[0]} records after burn-in {burn}; with fewer than "
                          f"{REPLICA_SE_MIN} replicas the errors (ArviZ's ESS, biased high on "
                          f"fewer records) need >= {MIN_ESS_DRAWS}: run longer, record more "
                          "often or run more replicas")
    pred_cov = np.diag(np.diag(basis.T @ law.cov @ basis))
    zero = np.zeros(y.shape[2])
    kl = _jackknife(y, groups, lambda m, c: gaussian_kl(m, c, zero, pred_cov))
    w2 = _jackknife(y, groups, lambda m, c: gaussian_w2(m, c, zero, pred_cov))
    return CovarianceComparison(rec.name, law, tuple(alternatives), basis, int(burn), rec.dropped,
                                sample_moments(y), kl, w2)


# --------------------------------------------------------------------- marginals

def gaussian_marginal_fits(data: Run | Records | ArrayLike, law: StationaryLaw, *,
                           name: str = "positions", record: int = -1, bins: int = 30
                           ) -> tuple[MarginalFit, ...]:
    """Chi-square fits of each eigen-coordinate y_k = ((x - law.mean) @ basis)_k of one
    record (replicas are independent samples) to its predicted density N(0, var_k),
    by `stationary.fit_marginal` (quadrature of exp(-y^2 / (2 var_k)))."""
    x = load_records(data, name).values[record]                    # (M', d)
    var, basis = np.linalg.eigh(law.cov)
    y = (x - law.mean) @ basis
    return tuple(fit_marginal(y[:, k], lambda u, v=v: u ** 2 / (2 * v), 1.0, bins=bins)
                 for k, v in enumerate(var))


def gibbs_energy_fit(energies: ArrayLike, d: int, temperature: float, bins: int = 30
                     ) -> MarginalFit:
    """Chi-square fit of independent energies U - U_min of a d-dimensional quadratic under
    Gibbs, U / T ~ Gamma(d / 2): density exp(-(u - (d/2 - 1) T ln u) / T) on u > 0
    (`stationary.fit_marginal`).  Exact for BAOAB positions; not for Euler-Maruyama or SGD,
    whose energies are weighted chi-square sums."""
    def energy_1d(u):
        u = np.asarray(u, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(u > 0, u - (d / 2 - 1) * temperature * np.log(u), np.inf)

    return fit_marginal(energies, energy_1d, temperature, bins=bins)
