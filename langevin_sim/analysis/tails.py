"""Heavy tails of stationary SGD: Hill estimates against Kesten's tail index.

SGD with batch size b on least squares L(x) = 1/(2n) sum_i (a_i.x - y_i)^2 (the engine's
`LinearRegression`; a minibatch B of b rows has gradient (1/b) sum_{i in B} a_i (a_i.x - y_i))
at learning rate eta is the random affine recursion

    x_{t+1} - x* = A_t (x_t - x*) + eta/b sum_{i in B_t} a_i r_i,
    A_t = I - (eta/b) sum_{i in B_t} a_i a_i^T,          r_i = y_i - a_i.x*,

with x* the least-squares minimizer and B_t drawn i.i.d. (`SGD(sampling="iid")`).  By
Kesten-Goldie, when E log|A| < 0 < P(|A| > 1) the stationary law has a power tail
P(|x - x*| > u) ~ C u^(-alpha), alpha > 0 the root of the moment exponent

    h(alpha) = lim_k (1/k) log E |A_k ... A_1 u|^alpha = 0

(convex, h(0) = 0, h'(0) = top Lyapunov exponent < 0).  d = 1, b = 1: h(alpha) =
log E|1 - eta a^2|^alpha over the data set's empirical distribution of a, and its root is
exact (`brentq`).  Otherwise h is estimated by Monte Carlo products with the data set's
rows (population dynamics with resampling), an approximation with a stated standard error;
`moment_exponent_2` gives h(2) exactly (alpha < 2, infinite variance, iff h(2) > 0).
The additive term (label noise, Langevin noise) does not change alpha.

The tail index of samples is measured by the Hill estimator (`hill`), over k upper order
statistics, standard error alpha/sqrt(k); `hill_plot` shows it over k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import brentq

from ..errors import ConfigError
from ..io.reader import check_run
from .stationary import alive_positions
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..io.reader import Run


# -- Hill estimator ---------------------------------------------------------------------------
def default_k(n: int) -> int:
    """The default number of upper order statistics: k = floor(sqrt(n)) (at least 10), a
    common rule that lets k -> infinity and k/n -> 0; check it on a `hill_plot`."""
    return max(10, int(np.sqrt(n)))


@dataclass(frozen=True)
class HillEstimate(Result):
    """Hill tail index alpha from the k largest of n samples; threshold X_(k+1); se
    alpha / sqrt(k)."""

    alpha: float
    se: float
    k: int
    n: int
    threshold: float

    def table(self) -> str:
        return (f"Hill alpha = {self.alpha:.3f} +- {self.se:.3f} (k = {self.k} of n = {self.n}, "
                f"threshold {self.threshold:.4g})")

    def plot(self, ax: Axes, samples: ArrayLike | None = None) -> Axes:
        """Log-log survival function of `samples` above the threshold, with the Pareto fit
        (k/n) (u / threshold)^(-alpha) (the fit line alone without samples)."""
        u = np.geomspace(self.threshold, self.threshold * 10 ** (3 / self.alpha), 50)
        if samples is not None:
            s = np.sort(np.asarray(samples, np.float64).ravel())[::-1]
            s = s[np.isfinite(s)]
            top = s[: 20 * self.k]
            ax.loglog(top, np.arange(1, top.size + 1) / s.size, ".", ms=2, label="samples")
            u = u[u <= top[0]]
        ax.loglog(u, self.k / self.n * (u / self.threshold) ** -self.alpha, "k-",
                  label=f"Pareto, alpha = {self.alpha:.2f}")
        ax.set(xlabel="u", ylabel="P(X > u)")
        ax.legend()
        return ax


def _positive(samples) -> np.ndarray:
    s = np.asarray(samples, np.float64).ravel()
    s = s[np.isfinite(s)]
    if np.any(s < 0):
        raise ConfigError("Hill needs non-negative samples (pass |x - x*|)")
    return np.sort(s)[::-1]


def _hill_sorted(s, ks):
    """alpha_k = 1 / ((1/k) sum_{i<=k} log X_(i) - log X_(k+1)) for X sorted descending."""
    logs = np.log(s[: int(np.max(ks)) + 1])
    csum = np.cumsum(logs)
    ks = np.asarray(ks)
    return 1.0 / (csum[ks - 1] / ks - logs[ks])


def hill(samples: ArrayLike, k: int | None = None) -> HillEstimate:
    """Hill estimate of the tail index alpha of P(X > u) ~ C u^-alpha from positive samples
    (any shape, non-finite ones dropped): alpha = 1 / mean_{i<=k} log(X_(i) / X_(k+1)),
    X_(1) >= X_(2) >= ... the order statistics; se = alpha / sqrt(k) (its asymptotic
    standard deviation for independent samples).  k defaults to `default_k(n)`."""
    s = _positive(samples)
    n = s.size
    if n < 3:
        raise ConfigError(f"Hill needs >= 3 finite samples, got {n}")
    k = default_k(n) if k is None else int(k)
    if not 2 <= k < n or s[k] <= 0:
        raise ConfigError(f"k must be in 2..{n - 1} with X_(k+1) > 0 for {n} samples, got k={k}")
    if not s[0] > s[k]:
        raise ConfigError(f"the {k + 1} largest samples are all equal ({s[k]:g}: capped or "
                          "discretized data): no tail to fit; use a larger k")
    a = float(_hill_sorted(s, [k])[0])
    return HillEstimate(a, a / np.sqrt(k), k, n, float(s[k]))


@dataclass(frozen=True)
class HillPlot(Result):
    """Hill estimates alpha (K,) +- se (K,) over ks (K,) upper order statistics of n samples;
    `reference` an optional predicted alpha (e.g. Kesten's) drawn as a line."""

    ks: np.ndarray
    alpha: np.ndarray
    se: np.ndarray
    n: int
    reference: float | None = None

    def table(self) -> str:
        rows = [f"{'k':>7} {'alpha':>8} {'se':>7}"]
        rows += [f"{k:7d} {a:8.3f} {e:7.3f}" for k, a, e in zip(self.ks, self.alpha, self.se)]
        return "\n".join(rows)

    def plot(self, ax: Axes) -> Axes:
        """alpha_k +- 2 se against k (log axis), and the reference value."""
        ax.fill_between(self.ks, self.alpha - 2 * self.se, self.alpha + 2 * self.se, alpha=0.3)
        ax.semilogx(self.ks, self.alpha, "-", label="Hill estimate +- 2 se")
        if self.reference is not None:
            ax.axhline(self.reference, color="k", ls="--",
                       label=f"Kesten alpha = {self.reference:.3f}")
        ax.set(xlabel="k (upper order statistics)", ylabel="tail index alpha",
               title=f"Hill plot, n = {self.n}")
        ax.legend()
        return ax


def hill_plot(samples: ArrayLike, ks: ArrayLike | None = None, reference: float | None = None
              ) -> HillPlot:
    """Hill estimates over ks (default 40 values log-spaced from 10 to n/5)."""
    s = _positive(samples)
    n = s.size
    ks = np.unique(np.geomspace(10, max(11, n // 5), 40).astype(np.int64)) if ks is None \
        else np.asarray(ks, np.int64)
    if ks.min() < 2 or ks.max() >= n or s[ks.max()] <= 0:
        raise ConfigError(f"ks must lie in 2..{n - 1} with X_(k+1) > 0")
    a = _hill_sorted(s, ks)
    return HillPlot(ks, a, a / np.sqrt(ks), n, reference)


# -- Kesten's tail index ---------------------------------------------------------------------
def _check_data(A: ArrayLike, lr: float, batch_size: int) -> np.ndarray:
    A = np.asarray(A, np.float64)
    if A.ndim != 2 or A.shape[0] < 1:
        raise ConfigError(f"A must be the (n, d) data matrix, got shape {A.shape}")
    if not lr > 0 or int(batch_size) < 1:
        raise ConfigError(f"need lr > 0 and batch_size >= 1, got {lr}, {batch_size}")
    return A


def moment_exponent_2(A: ArrayLike, lr: float, batch_size: int = 1) -> float:
    """h(2) = log rho(K) exactly, K = E[A_t (x) A_t] (A_t = I - eta S, S = (1/b) sum_{B} a a^T
    with b i.i.d. rows): E|A_k...A_1 u|^2 = u^T E[..] u grows like rho^k.  K acts on d x d
    matrices as K(U) = E[A_t U A_t] = U - eta (C U + U C) + eta^2 E[S U S], with
    E[S U S] = (1/b) mean_i (a_i^T U a_i) a_i a_i^T + (1 - 1/b) C U C: self-adjoint, and
    positive (it maps the PSD cone into itself), so rho is its largest eigenvalue (Evans and
    Hoegh-Krohn), found by Lanczos on that O(n d^2) product (d > 16; the dense d^2 x d^2
    eigen-solve took O(d^6): 47 s and 0.8 GB at d = 64), densely below."""
    A = _check_data(A, lr, batch_size)
    n, d = A.shape
    b = int(batch_size)
    C = A.T @ A / n
    if d <= 16:
        aa = np.einsum("ni,nj->nij", A, A).reshape(n, d * d)
        ES2 = aa.T @ aa / n / b + (1 - 1 / b) * np.kron(C, C)
        Id = np.eye(d)
        K = np.kron(Id, Id) - lr * (np.kron(C, Id) + np.kron(Id, C)) + lr ** 2 * ES2
        return float(np.log(np.linalg.eigvalsh(0.5 * (K + K.T))[-1]))
    from scipy.sparse.linalg import LinearOperator, eigsh

    def apply(v):
        U = v.reshape(d, d)
        q = np.einsum("ni,ni->n", A @ U, A)                       # a_i^T U a_i
        ESUS = (A.T * q) @ A / (n * b) + (1 - 1 / b) * (C @ U @ C)
        return (U - lr * (C @ U + U @ C) + lr ** 2 * ESUS).ravel()
    op = LinearOperator((d * d, d * d), matvec=apply, dtype=np.float64)
    top = eigsh(op, k=1, which="LA", tol=1e-13, v0=np.eye(d).ravel(), return_eigenvectors=False)
    return float(np.log(top[0]))


def moment_exponent(A: ArrayLike, lr: float, alpha: float, batch_size: int = 1, walkers: int = 4000,
                    steps: int = 400, burn: int = 50, seed: int = 0) -> tuple[float, float]:
    """Monte Carlo h(alpha) = lim (1/k) log E|A_k ... A_1 u|^alpha and its standard error.

    Population dynamics: `walkers` unit vectors u_j, each step multiplied by an independent
    A_t (b rows of the data set A (n, d) drawn uniformly), weighted w_j = |A_t u_j|^alpha,
    renormalized and resampled in proportion to w (systematic resampling); h is the mean
    over steps after `burn` of log mean_j w_j (bias O(1/walkers), with a constant that
    grows fast with alpha, not in the se: d = 1, b = 2, 200 Gaussian rows, lr = 0.3,
    alpha = 12: -0.87 +- 0.09 with 4000 walkers, -0.22 +- 0.05 with 40 000, exact -0.042;
    compare two walker counts where alpha is large), its se from 10 batch means.  Fixed
    `seed`: the same row draws for every alpha (common random numbers)."""
    A = _check_data(A, lr, batch_size)
    n, d = A.shape
    b = int(batch_size)
    if int(steps) - int(burn) < 10 or int(walkers) < 2:
        raise ConfigError("need steps - burn >= 10 and walkers >= 2")
    gen = np.random.default_rng(seed)
    u = gen.standard_normal((walkers, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    logs = np.empty(int(steps))
    for t in range(int(steps)):
        rows = A[gen.integers(0, n, size=(walkers, b))]              # (W, b, d)
        v = u - (lr / b) * np.einsum("wbd,wb->wd", rows, np.einsum("wbd,wd->wb", rows, u))
        r = np.linalg.norm(v, axis=1)
        lw = alpha * np.log(np.maximum(r, 1e-300))
        c = lw.max()
        w = np.exp(lw - c)
        logs[t] = c + np.log(w.mean())
        cdf = np.cumsum(w)
        pick = np.searchsorted(cdf, (gen.random() + np.arange(walkers)) * cdf[-1] / walkers)
        pick = np.minimum(pick, walkers - 1)
        u = v[pick] / np.maximum(r[pick], 1e-300)[:, None]
    tail = logs[int(burn):]
    means = np.array([m.mean() for m in np.array_split(tail, 10)])
    return float(tail.mean()), float(means.std(ddof=1) / np.sqrt(10))


@dataclass(frozen=True)
class KestenIndex(Result):
    """Kesten's tail index alpha (inf when every A_t contracts: no power tail) +- se (0 when
    exact), `method` "exact" (d = 1, b = 1) or "Monte Carlo"; the moment exponent h on a
    grid (alphas, h) for plotting; h2 the exact h(2)."""

    alpha: float
    se: float
    method: str
    lr: float
    batch_size: int
    d: int
    n: int
    alphas: np.ndarray
    h: np.ndarray
    h2: float

    def table(self) -> str:
        se = "" if self.se == 0 else f" +- {self.se:.3f}"
        return (f"Kesten alpha = {self.alpha:.3f}{se} ({self.method}; lr = {self.lr:g}, batch "
                f"{self.batch_size}, n = {self.n}, d = {self.d}); exact h(2) = {self.h2:.4f} "
                f"({'alpha < 2' if self.h2 > 0 else 'alpha >= 2'})")

    def plot(self, ax: Axes) -> Axes:
        """The moment exponent h(alpha) and its root."""
        ax.plot(self.alphas, self.h, ".-", label="h(alpha)")
        ax.axhline(0.0, color="k", lw=0.5)
        if np.isfinite(self.alpha):
            ax.axvline(self.alpha, color="k", ls="--", label=f"alpha = {self.alpha:.3f}")
        ax.set(xlabel="alpha", ylabel="h(alpha)", title=f"Kesten moment exponent ({self.method})")
        ax.legend()
        return ax


def kesten_alpha(A: ArrayLike, lr: float, batch_size: int = 1, alpha_max: float = 64.0,
                 walkers: int = 4000, steps: int = 400, seed: int = 0) -> KestenIndex:
    """Tail index alpha of stationary SGD on least squares with data rows A (n, d), learning
    rate lr and i.i.d. batches of `batch_size`: the positive root of h(alpha) (module
    docstring).  d = 1, b = 1: exact root of log mean_i |1 - lr a_i^2|^alpha (brentq).
    Otherwise: root of the Monte Carlo `moment_exponent` (fixed seed), bracketed by doubling
    from alpha = 0.25, se = se(h) / h'(alpha) (slope by finite difference; it leaves out
    `moment_exponent`'s bias, which grows with alpha: 15.1 +- 0.4 for an exact 12.1 in the
    example there).  alpha = inf when no root lies below alpha_max (|A_t| <= 1 always:
    bounded stationary law)."""
    A = _check_data(A, lr, batch_size)
    n, d = A.shape
    b = int(batch_size)
    exact = d == 1 and b == 1
    seen: dict[float, float] = {0.0: 0.0}
    if exact:
        logc = np.log(np.maximum(np.abs(1.0 - lr * A[:, 0] ** 2), 1e-300))
        if np.mean(logc) >= 0:
            raise ConfigError(f"E log|1 - lr a^2| = {np.mean(logc):.3g} >= 0: SGD at lr = {lr} "
                              "has no stationary law; lower the learning rate")
        def h(al):
            seen[al] = float(np.log(np.mean(np.exp(al * (logc - logc.max())))) + al * logc.max())
            return seen[al]
    else:
        def h(al):
            seen[al] = moment_exponent(A, lr, al, b, walkers, steps, seed=seed)[0]
            return seen[al]
    if not exact and h(0.25) >= 0:
        raise ConfigError(f"h(0.25) >= 0: SGD at lr = {lr} has no stationary law (or a tail "
                          "index below 0.25); lower the learning rate")
    lo, hi = 1e-6, 0.25
    while h(hi) < 0:
        lo, hi = hi, 2 * hi
        if hi > alpha_max:        # the last bracket is [lo, alpha_max]: inf only past it
            lo, hi = (lo, alpha_max) if h(alpha_max) >= 0 else (alpha_max, np.inf)
            break
    root = np.inf if np.isinf(hi) else brentq(h, lo, hi, xtol=1e-6 if exact else 1e-3)
    se = 0.0
    if exact:  # cheap: a fine grid for the plot
        for g in np.linspace(0.0, 1.5 * root if np.isfinite(root) else 8.0, 31):
            h(g)
    elif np.isfinite(root):
        dh = 0.05 * root
        slope = (h(root + dh) - h(root - dh)) / (2 * dh)
        se = moment_exponent(A, lr, root, b, walkers, steps, seed=seed)[1] / slope
    grid = np.array(sorted(seen))
    return KestenIndex(float(root), float(abs(se)), "exact" if exact else "Monte Carlo", float(lr),
                       b, d, n, grid, np.array([seen[g] for g in grid]),
                       moment_exponent_2(A, lr, b))


# -- runs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TailComparison(Result):
    """Hill estimate of |x - x*| at stationarity against Kesten's alpha.

    Finite Kesten alpha: z = (Hill - Kesten) / sqrt(se_H^2 + se_K^2), consistent when
    |z| <= 3.  Infinite (`light`: no power law): Hill's index of a light tail is finite and
    grows as k shrinks, so it has no target; what the theory fixes exactly is h(2) < 0, a
    finite variance (any power-law index >= 2).  Then z = (Hill - 2) / se_H: consistent
    when z >= 3, inconsistent when z <= -3, undecided in between.  diverged: replicas left
    out because they passed the divergence bound, i.e. the largest |x - x*| of all (each
    missing `records` samples above every kept one): where they are at least the k order
    statistics Hill uses there is no verdict (the fit is of what lies below them, its index
    too high); fewer, the verdict says they were left out."""

    hill: HillEstimate
    kesten: KestenIndex
    hill_plot: HillPlot
    note: str = ""
    diverged: int = 0
    records: int = 1

    @property
    def censored_out(self) -> bool:
        """The diverged replicas' samples outnumber the k upper order statistics."""
        return self.diverged * self.records >= self.hill.k

    @property
    def light(self) -> bool:
        """Kesten's alpha is infinite: light tails predicted."""
        return not np.isfinite(self.kesten.alpha)

    @property
    def z(self) -> float:
        if self.light:
            return (self.hill.alpha - 2.0) / self.hill.se
        return (self.hill.alpha - self.kesten.alpha) / np.hypot(self.hill.se, self.kesten.se)

    @property
    def consistent(self) -> bool:
        return bool(self.z >= 3 if self.light else abs(self.z) <= 3)

    def verdict(self) -> str:
        if self.diverged and self.censored_out:
            return (f"no verdict: {self.diverged} replicas diverged (past the divergence bound: "
                    f"the tail's largest samples), more than the k = {self.hill.k} upper order "
                    "statistics Hill uses, so it fits what lies below them and reads high; rerun "
                    "with a larger divergence_bound or a smaller learning rate")
        left = (f" ({self.diverged} diverged replicas, the tail's largest samples, left out: "
                "they pull the index up)") if self.diverged else ""
        return self._verdict() + left

    def _verdict(self) -> str:
        if not self.light:
            return (f"z = {self.z:.2f}: {'CONSISTENT' if self.consistent else 'INCONSISTENT'} "
                    "(|z| <= 3)")
        head = (f"light tails predicted (Kesten alpha = inf: no power law; exact h(2) = "
                f"{self.kesten.h2:.4f}: finite variance); measured Hill alpha = "
                f"{self.hill.alpha:.3f} +- {self.hill.se:.3f}")
        if self.consistent:
            return (f"{head}, above 2 by z = {self.z:+.2f} se: CONSISTENT (no heavy tail; a "
                    "light tail's Hill index is finite and grows as k shrinks)")
        if self.z <= -3:
            return (f"{head}, below 2 by z = {self.z:+.2f} se: INCONSISTENT (a tail heavier "
                    "than the finite variance allows)")
        return (f"{head}, within 3 se of 2 (z = {self.z:+.2f}): UNDECIDED (more samples "
                "needed)")

    def table(self) -> str:
        lines = [self.hill.table(), self.kesten.table(), self.verdict()]
        return "\n".join(lines + ([self.note] if self.note else []))

    def plot(self, ax: Axes) -> Axes:
        """Hill plot with Kesten's alpha and the chosen k marked."""
        self.hill_plot.plot(ax)
        ax.errorbar([self.hill.k], [self.hill.alpha], yerr=[2 * self.hill.se], fmt="o", color="C3",
                    label=f"k = {self.hill.k}")
        ax.legend()
        return ax


def run_tail_index(run: Run, records: int = 1, k: int | None = None,
                   **kesten_kw: Any) -> TailComparison:
    """Hill estimate of |x - x*| (x* = `minimizer()`) over the live replicas of the last
    `records` records of an SGD run on LinearRegression (records pooled: space them beyond
    the mixing time), against `kesten_alpha` of the run's data set, lr and batch size.
    ConfigError for other potentials or dynamics, momentum, weight decay or scheduled lr."""
    run = check_run(run, "run_tail_index")
    pot, dyn = run.potential, run.config["dynamics"]
    if not hasattr(pot, "minimizer") or pot.n_samples is None:
        raise ConfigError(f"the tail analysis needs SGD on LinearRegression; this run's potential "
                          f"is {type(pot).__name__}")
    if dyn["class"] != "SGD" or dyn["batch_size"] is None:
        raise ConfigError(f"the tail analysis needs minibatch SGD; this run has {dyn['class']} "
                          f"with batch_size {dyn.get('batch_size')}")
    if dyn["momentum"] != 0 or dyn["weight_decay"] != 0 or dyn["lr"]["kind"] != "constant":
        raise ConfigError("Kesten's recursion here assumes momentum 0, weight_decay 0 and a "
                          f"constant lr; this run has momentum {dyn['momentum']}, weight_decay "
                          f"{dyn['weight_decay']}, lr {dyn['lr']['kind']}")
    x = alive_positions(run, records, smaller="learning rate")
    r = np.linalg.norm(x - pot.minimizer(), axis=2)
    kes = kesten_alpha(pot.A, float(dyn["lr"]["start"]), int(dyn["batch_size"]), **kesten_kw)
    sampling = dyn.get("sampling") or ("iid" if dyn["replacement"] else "epoch")
    note = "" if sampling == "iid" else (f"note: batches are not i.i.d. (sampling={sampling!r}): "
                                         "Kesten's alpha is approximate")
    ref = kes.alpha if np.isfinite(kes.alpha) else None
    return TailComparison(hill(r, k), kes, hill_plot(r, reference=ref), note,
                          diverged=int(np.sum(run.diverged_step >= 0)), records=int(records))
