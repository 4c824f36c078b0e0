"""Spherical p-spin relaxation: 1RSB landmarks, energy decay, aging, overlaps, Hessian index.

The glass part of `SphericalPSpin` has covariance E[H(x) H(y)] = N xi(q), q = x.y / N,
xi(q) = V q^p with V = `potential.variance` (1/2 Crisanti-Sommers, 1 ABC); energies are per
spin, temperatures in the same energy units.  One-step replica symmetry breaking
(Crisanti-Sommers 1992) with overlap q inside blocks of Parisi size m (q0 = 0):

  -beta f = beta^2/2 [xi(1) - (1-m) xi(q)] + 1/2 [(m-1)/m ln(1-q) + ln(1-(1-m) q)/m] + const,
  e = -beta [xi(1) - (1-m) xi(q)],
  (E1)  beta^2 xi'(q) (1-q) (1-q+mq) = q                                  (d/dq)
  (E2)  beta^2 xi(q) + ln((1-q)/(1-q+mq)) / m^2 + q / (m (1-q+mq)) = 0     (d/dm)
  (E3)  beta^2 xi''(q) (1-q)^2 = 1                                        (marginal: replicon 0)

Equilibrium (static) states solve E1 + E2; the states that dynamics from random starts
reaches (marginal, threshold) solve E1 + E3.  T_s: E1 + E2 at m = 1; T_d: E1 + E3 at m = 1.
At T -> 0 with 1 - q = chi T and m = mu T:  xi'(1) chi (chi + mu) = 1 and either
xi(1) + ln(chi / (chi + mu)) / mu^2 + 1 / (mu (chi + mu)) = 0 (ground state E_gs) or
xi''(1) chi^2 = 1 (threshold E_th); e = -(chi xi'(1) + mu xi(1)).  p = 2 has a continuous
(replica-symmetric) transition: T_s = T_d and E_gs = E_th there.  Paramagnet: e = -V / T.

Dynamics (records of a run, replicas independent): energy per spin e(t) (n, M); power-law
approach e(t) - e_inf = c t^(-a) fitted on log axes (jackknife error over replicas); two-time
correlation C(t_w + tau, t_w) = x(t_w).x(t_w + tau) / N from positions (n, M, N); overlaps
q_ab = x_a.x_b / N between replicas; Hessian index = number of negative eigenvalues of the
Riemannian Hessian on the tangent space (N - 1 directions).  Imports neither numba nor cupy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import brentq

from ..errors import ConfigError
from ..io.reader import Run, check_run
from .stationary import constant_temperature
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..io.reader import Series
    from ..potentials import SphericalPSpin

EPS = 1e-12
ARRESTED = 0.99      # C(t_w + tau, t_w) at or above it: the replicas have (nearly) stopped


def _xi(q, p: int, variance: float, order: int = 0):
    """xi(q) = V q^p and its derivatives of order 1, 2."""
    c = variance * math.perm(p, order)
    return c * np.asarray(q, np.float64) ** (p - order)


def _check_p(p: int) -> int:
    if int(p) < 2:
        raise ConfigError(f"the spherical p-spin needs p >= 2, got p={p}")
    return int(p)


# ----------------------------------------------------------------------------- 1RSB

@dataclass(frozen=True)
class OneRSB:
    """1RSB solution at `temperature`: overlap q, Parisi m, energy per spin.  `marginal`:
    the threshold (E1 + E3) rather than the equilibrium (E1 + E2) solution; q = 0, m = 1
    is the paramagnet."""

    temperature: float
    q: float
    m: float
    energy: float
    marginal: bool


def _m_from_e1(q: float, beta: float, p: int, variance: float) -> float:
    """Parisi m solving E1 at overlap q."""
    return (q / (beta ** 2 * _xi(q, p, variance, 1) * (1 - q)) - (1 - q)) / q


def _e2(q: float, m: float, beta: float, p: int, variance: float) -> float:
    z = 1 - q + m * q
    return beta ** 2 * _xi(q, p, variance) + math.log((1 - q) / z) / m ** 2 + q / (m * z)


def one_rsb(temperature: float, p: int, variance: float, marginal: bool = False) -> OneRSB:
    """Solve the 1RSB equations (module docstring) at temperature T > 0 for xi = V q^p.

    Static: the solution of E1 + E2 with the largest q, if its m <= 1 (else, above T_s:
    paramagnet).  Marginal: the larger root q of E3 (none above T_d) and m from E1.
    """
    p, T = _check_p(p), float(temperature)
    if not T > 0:
        raise ConfigError(f"one_rsb needs T > 0, got {temperature}; use landmarks() for T = 0")
    if p == 2:
        raise ConfigError("p = 2 has no 1RSB phase (its transition at T_c = sqrt(2 V) is "
                          "continuous); use landmarks() for its T_c and ground state")
    beta = 1 / T
    para = OneRSB(T, 0.0, 1.0, -variance / T, marginal)

    def e2_on_e1(q):                              # E2 along the curve m(q) solving E1
        m = _m_from_e1(q, beta, p, variance)
        return _e2(q, m, beta, p, variance) if 0 < m < 2 else np.nan

    def e3(q):
        return beta ** 2 * _xi(q, p, variance, 2) * (1 - q) ** 2 - 1

    if marginal:
        qstar = (p - 2) / p                       # maximum of xi''(q) (1-q)^2
        if e3(qstar) < 0:
            return para
        q = brentq(e3, qstar, 1 - EPS, xtol=EPS)
    else:
        grid = 1 - np.geomspace(1 - 1e-4, 1e-10, 4000)
        vals = np.array([e2_on_e1(q) for q in grid])
        sign_change = np.flatnonzero(vals[:-1] * vals[1:] <= 0)   # NaN compares False
        if not sign_change.size:
            return para
        i = sign_change[-1]
        q = brentq(e2_on_e1, grid[i], grid[i + 1], xtol=EPS)
    m = _m_from_e1(q, beta, p, variance)
    if m > 1:                                     # above T_s (T_d): the paramagnet
        return para
    e = -beta * (_xi(1.0, p, variance) - (1 - m) * _xi(q, p, variance))
    return OneRSB(T, float(q), float(m), float(e), marginal)


def static_transition(p: int, variance: float) -> tuple[float, float]:
    """(T_s, q_s): E1 and E2 at m = 1; eliminating beta^2 = q / (xi'(q)(1-q)) leaves
    q xi(q) / (xi'(q)(1-q)) + ln(1-q) + q = 0, solved on (0, 1)."""
    p = _check_p(p)
    if p == 2:
        return dynamical_transition(p, variance)

    def f(q):
        return q * _xi(q, p, variance) / (_xi(q, p, variance, 1) * (1 - q)) + math.log(1 - q) + q

    q = brentq(f, 1e-6, 1 - EPS, xtol=EPS)
    return float(math.sqrt(_xi(q, p, variance, 1) * (1 - q) / q)), float(q)


def dynamical_transition(p: int, variance: float) -> tuple[float, float]:
    """(T_d, q_d): E1 and E3 at m = 1; their ratio xi'(q) = q (1-q) xi''(q) fixes q_d, then
    T_d = sqrt(xi''(q_d)) (1 - q_d)."""
    p = _check_p(p)
    q = 0.0 if p == 2 else brentq(
        lambda q: 1 - q * (1 - q) * _xi(q, p, variance, 2) / _xi(q, p, variance, 1), 1e-9, 1 - EPS,
        xtol=EPS)
    return float(math.sqrt(_xi(q, p, variance, 2)) * (1 - q)), float(q)


def zero_temperature_energy(p: int, variance: float, marginal: bool = False) -> float:
    """T -> 0 limit of the 1RSB energy per spin: the ground state E_gs (static) or the
    threshold E_th (marginal); see the module docstring."""
    p = _check_p(p)
    x, x1, x2 = (float(_xi(1.0, p, variance, k)) for k in range(3))

    def chi_of(mu):                               # E1 solved for chi
        return (-mu + math.sqrt(mu * mu + 4 / x1)) / 2

    def g(mu):                                    # the static condition at T = 0
        chi = chi_of(mu)
        return x + math.log(chi / (chi + mu)) / mu ** 2 + 1 / (mu * (chi + mu))

    if marginal or p == 2:
        chi = 1 / math.sqrt(x2)
        mu = 1 / (chi * x1) - chi
    else:
        mu = brentq(g, 1e-6, 1e3, xtol=EPS)
        chi = chi_of(mu)
    return float(-(chi * x1 + mu * x))


@dataclass(frozen=True)
class Landmarks(Result):
    """Energies per spin and temperatures of the spherical p-spin with xi = variance q^p."""

    p: int
    variance: float
    T_d: float
    T_s: float
    e_th: float
    e_gs: float

    def paramagnetic_energy(self, temperature: float) -> float:
        """-V / T (N -> infinity, T above T_s)."""
        return -self.variance / float(temperature)

    def table(self) -> str:
        return (f"p = {self.p}, xi(q) = {self.variance:g} q^{self.p} (1RSB, N -> infinity)\n"
                f"  T_d = {self.T_d:.5f}  T_s = {self.T_s:.5f}  e_th = {self.e_th:.5f}  "
                f"E_gs = {self.e_gs:.5f}  e_para(T_d) = {-self.variance / self.T_d:.5f}")


def landmarks(p: int, variance: float) -> Landmarks:
    """T_d, T_s, e_th, E_gs from the 1RSB solver (for a potential: p=pot.p,
    variance=pot.variance)."""
    return Landmarks(int(p), float(variance), dynamical_transition(p, variance)[0],
                     static_transition(p, variance)[0],
                     zero_temperature_energy(p, variance, marginal=True),
                     zero_temperature_energy(p, variance))


# ----------------------------------------------------------------------------- energy decay

@dataclass(frozen=True)
class PowerLawFit(Result):
    """e(t) - e_inf = c t^(-a) fitted to the replica-mean energy over records in `window`.

    a_se: jackknife over replicas.  times, excess, excess_se (k,): the fitted points."""

    a: float
    a_se: float
    c: float
    e_inf: float
    window: tuple[float, float]
    times: np.ndarray
    excess: np.ndarray
    excess_se: np.ndarray

    def table(self) -> str:
        return (f"power law e(t) - ({self.e_inf:.5f}) = c t^-a on t in [{self.window[0]:.4g}, "
                f"{self.window[1]:.4g}] ({self.times.size} records): a = {self.a:.4f} +- "
                f"{self.a_se:.4f}, c = {self.c:.4g}")

    def plot(self, ax: Axes) -> None:
        """Log-log excess energy with error bars and the fitted line."""
        ax.errorbar(self.times, self.excess, self.excess_se, fmt="o", ms=3, label="mean e - e_inf")
        ax.plot(self.times, self.c * self.times ** -self.a, "k-",
                label=f"a = {self.a:.3f} +- {self.a_se:.3f}")
        ax.set(xscale="log", yscale="log", xlabel="time", ylabel="e(t) - e_inf")
        ax.legend(fontsize=7)


def _loglog_slope(lt: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of ly (..., k) against lt (k,)."""
    lt0 = lt - lt.mean()
    slope = (ly * lt0).sum(axis=-1) / (lt0 ** 2).sum()
    return slope, ly.mean(axis=-1) - slope * lt.mean()


def fit_power_law(times: ArrayLike, e: ArrayLike, e_inf: float, t_min: float | None = None,
                  t_max: float | None = None) -> PowerLawFit:
    """Fit log(<e>(t) - e_inf) = log c - a log t over records with t in [t_min, t_max], t > 0.

    e: (n, M) energies per spin of independent replicas (non-finite replicas dropped).  The
    error on a is the jackknife over replicas (leave-one-out means refitted)."""
    t = np.asarray(times, np.float64)
    e = np.asarray(e, np.float64)
    e = e.reshape(t.size, -1)
    e = e[:, np.isfinite(e).all(axis=0)]
    M = e.shape[1]
    w = (t > 0) & (t >= (0 if t_min is None else t_min)) & (t <= (np.inf if t_max is None else t_max))
    if w.sum() < 3 or M < 2:
        raise ConfigError(f"a power-law fit needs >= 3 records with t > 0 in the window and >= 2 "
                          f"replicas, got {w.sum()} records and {M} replicas")
    y = e[w] - e_inf
    mean = y.mean(axis=1)
    loo = (mean[:, None] * M - y) / (M - 1)
    if np.any(mean <= 0) or np.any(loo <= 0):
        raise ConfigError(f"the mean energy is not above e_inf = {e_inf} throughout the window "
                          f"[{t[w][0]:.4g}, {t[w][-1]:.4g}]; shorten the window or lower e_inf")
    lt = np.log(t[w])
    slope, icpt = _loglog_slope(lt, np.log(mean))
    s_loo, _ = _loglog_slope(lt, np.log(loo.T))
    a_se = math.sqrt((M - 1) / M * np.sum((s_loo - s_loo.mean()) ** 2))
    return PowerLawFit(float(-slope), a_se, float(np.exp(icpt)), float(e_inf),
                       (float(t[w][0]), float(t[w][-1])), t[w], mean,
                       y.std(axis=1, ddof=1) / math.sqrt(M))


@dataclass(frozen=True)
class Relaxation(Result):
    """Energy per spin over time with the landmarks, a power-law fit and the late mean.

    times, mean, se (n,): replica mean and its standard error; late: records with
    t >= late_from, averaged per replica, then mean +- se over replicas (one coupling
    instance: the instance-to-instance spread is not included).  reference: the
    N -> infinity prediction of the late energy (paramagnet above T_d; marginal 1RSB
    energy below T_d, e_th at T = 0) and its label.  fit_note: why `fit` is None below T_d
    (the mean went below the asymptote inside the default window: small N)."""

    times: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    temperature: float
    landmarks: Landmarks
    fit: PowerLawFit | None
    late_from: float
    late_mean: float
    late_se: float
    late_min: float
    reference: float
    reference_label: str
    fit_note: str = ""

    @property
    def z(self) -> float:
        """(late mean - reference) / se."""
        return (self.late_mean - self.reference) / self.late_se

    def table(self, rows: int = 8) -> str:
        lm = self.landmarks
        out = [lm.table(), f"T = {self.temperature:g}; energy per spin (mean +- se over replicas):"]
        pos = np.flatnonzero(self.times > 0)
        sel = pos[np.unique(np.geomspace(1, pos.size, rows).round().astype(int) - 1)] if pos.size else []
        for j in sel:
            out.append(f"  t = {self.times[j]:9.4g}: e = {self.mean[j]:.5f} +- {self.se[j]:.5f}, "
                       f"e - e_th = {self.mean[j] - lm.e_th:+.5f}")
        if self.fit is not None:
            out.append(self.fit.table())
        elif self.fit_note:
            out.append(self.fit_note)
        out.append(f"late (t >= {self.late_from:.4g}): e = {self.late_mean:.5f} +- {self.late_se:.5f} "
                   f"(lowest replica {self.late_min:.5f}) vs {self.reference_label} "
                   f"{self.reference:.5f}: z = {self.z:+.2f}")
        return "\n".join(out)

    def plot(self, ax: Axes) -> None:
        """e(t) on a log time axis with e_th, E_gs and the late-time reference."""
        pos = self.times > 0
        ax.fill_between(self.times[pos], (self.mean - 2 * self.se)[pos], (self.mean + 2 * self.se)[pos],
                        alpha=0.3)
        ax.plot(self.times[pos], self.mean[pos], "-", label="mean e(t)")
        ax.axhline(self.landmarks.e_th, color="r", ls="--", lw=1, label=f"e_th = {self.landmarks.e_th:.4f}")
        ax.axhline(self.landmarks.e_gs, color="k", ls=":", lw=1, label=f"E_gs = {self.landmarks.e_gs:.4f}")
        if self.reference_label != "e_th":
            ax.axhline(self.reference, color="g", ls="-.", lw=1,
                       label=f"{self.reference_label} = {self.reference:.4f}")
        ax.set(xscale="log", xlabel="time", ylabel="energy per spin")
        ax.legend(fontsize=7)


def relaxation(times: ArrayLike, e: ArrayLike, p: int, variance: float, temperature: float = 0.0,
               t_min: float | None = None, t_max: float | None = None,
               late_from: float | None = None) -> Relaxation:
    """`Relaxation` of energies per spin e (n, M) at `times` (n,).  Below T_d the power law
    is fitted towards the N -> infinity asymptote (e_th at T = 0, the marginal 1RSB energy
    at 0 < T < T_d) over [t_min, t_max] (default: t >= 1 up to the tenth of the run; with
    neither given, a mean that goes below the asymptote inside it -- possible at small N --
    leaves the fit out with a note instead of refusing); late_from defaults to half the run."""
    t = np.asarray(times, np.float64)
    e = np.asarray(e, np.float64).reshape(t.size, -1)
    e = e[:, np.isfinite(e).all(axis=0)]
    M = e.shape[1]
    lm = landmarks(p, variance)
    T = float(temperature)
    if T >= lm.T_d:
        ref, label = lm.paramagnetic_energy(T), "paramagnet -V/T"
    elif T > 0:
        ref, label = one_rsb(T, p, variance, marginal=True).energy, "marginal 1RSB e(T)"
    else:
        ref, label = lm.e_th, "e_th"
    fit, note = None, ""
    if T < lm.T_d:
        lo, hi = 1.0 if t_min is None else t_min, t[-1] / 10 if t_max is None else t_max
        w = (t > 0) & (t >= lo) & (t <= hi)
        if t_min is None and t_max is None and np.any(e[w].mean(axis=1) <= ref):
            note = (f"no power-law fit: the mean energy goes below the N -> infinity "
                    f"{label} {ref:.5f} inside the default window [{lo:.4g}, {hi:.4g}] "
                    "(finite N); give --t-min/--t-max to fit an earlier window")
        else:
            fit = fit_power_law(t, e, ref, lo, hi)
    late_from = t[-1] / 2 if late_from is None else float(late_from)
    if not np.any(t >= late_from):
        raise ConfigError(f"late_from = {late_from:g} is past the last record (t = {t[-1]:.4g}): "
                          "no record to average; give a time within the run (analysis/"
                          "spinglass.py: --late-from)")
    per = e[t >= late_from].mean(axis=0)
    return Relaxation(t, e.mean(axis=1), e.std(axis=1, ddof=1) / math.sqrt(M), T, lm, fit,
                      late_from, float(per.mean()), float(per.std(ddof=1) / math.sqrt(M)),
                      float(e[-1].min()), float(ref), label, note)


def run_relaxation(run: Run, t_min: float | None = None, t_max: float | None = None,
                   late_from: float | None = None, temperature: float | None = None) -> Relaxation:
    """`relaxation` of a SphericalPSpin run (energy / N on `run.time`, its p, variance and
    constant temperature, or `temperature` whose landmarks to compare with: needed for a
    scheduled one, e.g. an anneal's final temperature; diverged replicas dropped)."""
    run = check_run(run, "run_relaxation")
    pot = run.potential
    if type(pot).__name__ != "SphericalPSpin":
        raise ConfigError(f"spin-glass relaxation needs a SphericalPSpin run, got {type(pot).__name__}")
    if pot.planted != 0.0:
        raise ConfigError("the 1RSB landmarks are for the pure p-spin; this run has planted = "
                          f"{pot.planted}")
    e = np.asarray(run.energy, np.float64)[:, run.diverged_step < 0] / pot.N
    T = constant_temperature(run.config) if temperature is None else float(temperature)
    return relaxation(run.time, e, pot.p, pot.variance, T, t_min, t_max, late_from)


# ----------------------------------------------------------------------------- aging

@dataclass(frozen=True)
class Aging(Result):
    """Two-time correlations C(t_w + tau, t_w) = x(t_w).x(t_w + tau) / N, mean over replicas.

    waiting (k,) waiting times; lags, C, se (k, L) padded with NaN; decay_time (k,): first
    lag at which C falls to `level` (linear interpolation; NaN if it never does)."""

    waiting: np.ndarray
    lags: np.ndarray
    C: np.ndarray
    se: np.ndarray
    level: float
    decay_time: np.ndarray

    @property
    def common_lag(self) -> float:
        """The largest lag that every waiting time reaches."""
        return float(np.nanmax(self.lags, axis=1).min())

    def at_lag(self, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """C(t_w + tau, t_w) and its se (k,), linearly interpolated between records."""
        rows = [(np.interp(tau, lag[ok], c[ok]), np.interp(tau, lag[ok], s[ok]))
                for lag, c, s in zip(self.lags, self.C, self.se) for ok in [np.isfinite(c)]]
        return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])

    def table(self) -> str:
        tau = self.common_lag
        c_tau, se_tau = self.at_lag(tau)
        out = [f"aging: C(t_w + tau, t_w) at the common lag tau = {tau:.4g}, decay time to "
               f"C = {self.level:g}"]
        for tw, c, s, td in zip(self.waiting, c_tau, se_tau, self.decay_time):
            out.append(f"  t_w = {tw:9.4g}: C = {c:.4f} +- {s:.4f}, tau(C={self.level:g}) = "
                       + (f"{td:.4g}" if np.isfinite(td) else "not reached"))
        out.append("  " + self.verdict())
        return "\n".join(out)

    def verdict(self) -> str:
        """Aging when C at the common lag grows from the first to the last waiting time by more
        than 3 standard errors and never falls by more than 3 between neighbours.  C >= ARRESTED
        at the last waiting time is flagged: replicas that stopped in minima (finite N, T = 0)
        make C grow with t_w too, in any landscape."""
        c, se = self.at_lag(self.common_lag)
        if c.size < 2:
            return "no aging resolved: one waiting time"
        if not np.isfinite(se).all():
            return "no verdict: a standard error needs at least 2 replicas"
        d, s = c[-1] - c[0], float(np.hypot(se[-1], se[0]))
        z = d / s if s > 0 else math.copysign(math.inf, d) if d else 0.0   # se 0: exact C
        drops = np.diff(c) < -3 * np.hypot(se[1:], se[:-1])
        if z > 3 and not drops.any():
            stopped = (f"; but C = {c[-1]:.4f} at the last t_w: the replicas have stopped, and "
                       "arrest in a minimum makes C grow with t_w in any landscape -- read aging "
                       "from waiting times before the stop" if c[-1] >= ARRESTED else "")
            return f"older systems decorrelate more slowly (aging; C grows by {z:.1f} se){stopped}"
        if abs(z) <= 3:
            return f"no aging resolved: C at the common lag changes by {z:+.1f} se with t_w"
        return f"not aging: C at the common lag falls with t_w ({z:+.1f} se)"

    def plot(self, ax: Axes) -> None:
        """C against tau (log axis), one curve per waiting time."""
        for tw, lag, c in zip(self.waiting, self.lags, self.C):
            ok = np.isfinite(c) & (lag > 0)
            ax.plot(lag[ok], c[ok], "-", label=f"t_w = {tw:.3g}")
        ax.axhline(self.level, color="k", lw=0.5)
        ax.set(xscale="log", xlabel=r"$\tau$", ylabel=r"$C(t_w+\tau, t_w)$")
        ax.legend(fontsize=7)


def two_time_correlation(times: ArrayLike, x: np.ndarray | Series,
                         waiting_times: ArrayLike | None = None, level: float = 0.5) -> Aging:
    """C(t_w + tau, t_w) from positions x (n, M, N) (an array or a run's lazy `positions`)
    at the first records with t >= each waiting time (default: 4 log-spaced between the
    first record after t = 0 and a quarter of the run).  Replicas with non-finite positions
    are dropped; se from the spread over replicas."""
    t = np.asarray(times, np.float64)
    if not -1 < float(level) < 1:
        raise ConfigError(f"level must be in (-1, 1) (C is 1 at lag 0 and >= -1), got {level:g}: "
                          "a decay time to it is never reached (analysis/spinglass.py: --level)")
    if waiting_times is None:
        t0 = t[t > 0][0]
        waiting_times = np.geomspace(t0, max(t0, t[-1] / 4), 4)
    past = [float(tw) for tw in np.atleast_1d(waiting_times) if not tw <= t[-1]]
    if past:
        raise ConfigError(f"waiting time(s) {past} lie past the last record (t = {t[-1]:.4g}): "
                          "choose waiting times within the run (analysis/spinglass.py: --waiting)")
    iw = np.unique([int(np.searchsorted(t, tw)) for tw in np.atleast_1d(waiting_times)])
    xw = np.stack([np.asarray(x[j], np.float64) for j in iw])          # (k, M, N)
    N = xw.shape[-1]
    C = np.full((iw.size, t.size, xw.shape[1]), np.nan)
    for j in range(iw[0], t.size):
        C[:, j] = np.einsum("kmn,mn->km", xw, np.asarray(x[j], np.float64)) / N
    alive = np.isfinite(C[:, iw[-1]:]).all(axis=(0, 1))
    if not alive.any():
        raise ConfigError("every replica's positions are non-finite from the last waiting "
                          "time on: no correlation to measure (choose earlier waiting times)")
    C = C[:, :, alive]
    mean = C.mean(axis=2)
    se = (C.std(axis=2, ddof=1) / math.sqrt(alive.sum()) if alive.sum() > 1
          else np.full_like(mean, np.nan))
    L = t.size - iw[0]
    lags, Cm, Cs = (np.full((iw.size, L), np.nan) for _ in range(3))
    decay = []
    for k, j in enumerate(iw):
        n = t.size - j
        lags[k, :n], Cm[k, :n], Cs[k, :n] = t[j:] - t[j], mean[k, j:], se[k, j:]
        below = np.flatnonzero(Cm[k, :n] <= level)
        if below.size and below[0] > 0:
            b = below[0]
            f = (Cm[k, b - 1] - level) / (Cm[k, b - 1] - Cm[k, b])
            decay.append(lags[k, b - 1] + f * (lags[k, b] - lags[k, b - 1]))
        else:
            decay.append(np.nan)
    return Aging(t[iw], lags, Cm, Cs, float(level), np.array(decay))


def run_aging(run: Run, waiting_times: ArrayLike | None = None, level: float = 0.5) -> Aging:
    """`two_time_correlation` of a run's recorded positions on `run.time`."""
    run = check_run(run, "run_aging")
    if "positions" not in run.names:
        raise ConfigError("aging needs recorded positions; rerun with record_positions true "
                          "(--set record_positions=true)")
    return two_time_correlation(run.time, run.positions, waiting_times, level)


# ----------------------------------------------------------------------------- overlaps, index

@dataclass(frozen=True)
class Overlaps(Result):
    """Overlaps q_ab = x_a.x_b / N of all replica pairs a < b (M (M-1) / 2,) at one record.
    Independent uniform points on the sphere: mean 0, variance 1 / N."""

    q: np.ndarray
    N: int

    def table(self) -> str:
        q = self.q
        return (f"overlaps q_ab of {q.size} replica pairs (N = {self.N}): mean {q.mean():+.4f}, "
                f"N var {self.N * q.var():.3f} (1 for independent random points), "
                f"|q| quantiles 50/90/max {np.quantile(np.abs(q), 0.5):.3f} / "
                f"{np.quantile(np.abs(q), 0.9):.3f} / {np.abs(q).max():.3f}")

    def plot(self, ax: Axes) -> None:
        ax.hist(self.q, bins=40, range=(-1, 1), density=True, alpha=0.6, label="q_ab")
        ax.set(xlabel=r"$q_{ab}$", ylabel="density")


def overlaps(x: ArrayLike) -> Overlaps:
    """`Overlaps` of positions x (M, N) (rows with non-finite entries dropped)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if x.shape[0] < 2:
        raise ConfigError(f"overlaps need >= 2 replicas, got {x.shape[0]}")
    G = x @ x.T / x.shape[1]
    return Overlaps(G[np.triu_indices(x.shape[0], 1)], x.shape[1])


@dataclass(frozen=True)
class HessianIndex(Result):
    """Riemannian Hessian spectra at states x: index (M,) = number of negative eigenvalues
    on the tangent space, lowest (M,) lowest eigenvalue, energy (M,) per spin."""

    index: np.ndarray
    lowest: np.ndarray
    energy: np.ndarray

    def table(self) -> str:
        vals, counts = np.unique(self.index, return_counts=True)
        hist = ", ".join(f"{v}: {c}" for v, c in zip(vals, counts))
        return (f"Hessian index of {self.index.size} states (index: count) {hist}; "
                f"minima {np.mean(self.index == 0):.3f}; lowest eigenvalue median "
                f"{np.median(self.lowest):.4g} [min {self.lowest.min():.4g}]")

    def plot(self, ax: Axes) -> None:
        """Lowest Hessian eigenvalue against energy per spin, coloured by index."""
        sc = ax.scatter(self.energy, self.lowest, c=self.index, s=12, cmap="viridis")
        ax.axhline(0.0, color="k", lw=0.5)
        ax.figure.colorbar(sc, ax=ax, label="index")
        ax.set(xlabel="energy per spin", ylabel="lowest Hessian eigenvalue")


def hessian_index(potential: SphericalPSpin, x: ArrayLike, rtol: float = 1e-10) -> HessianIndex:
    """Index of the Riemannian Hessian (`potential.riemannian_hessian`) at x (M, N).

    The normal direction x (eigenvalue 0 of P H P) is lifted to a large positive value by
    adding c x x^T / |x|^2, so only the N - 1 tangent eigenvalues are counted; eigenvalues
    below -rtol * max|lambda| are negative."""
    x = np.asarray(x, np.float64)
    H = potential.riemannian_hessian(x)
    c = 2 * np.abs(H).sum(axis=(1, 2)) + 1
    n2 = np.sum(x * x, axis=1)
    lam = np.linalg.eigvalsh(H + c[:, None, None] * x[:, :, None] * x[:, None, :] / n2[:, None, None])
    tang = lam[:, :-1]
    scale = np.abs(tang).max(axis=1)
    return HessianIndex(np.sum(tang < -rtol * scale[:, None], axis=1), tang[:, 0],
                        potential.energy(x) / x.shape[1])


def run_hessian_index(run: Run, record: int = -1) -> HessianIndex:
    """`hessian_index` of a run's recorded positions at `record` (diverged replicas dropped)."""
    run = check_run(run, "run_hessian_index")
    if "positions" not in run.names:
        raise ConfigError("the Hessian index needs recorded positions; rerun with "
                          "record_positions true (--set record_positions=true)")
    return hessian_index(run.potential, np.asarray(run.positions[record])[run.diverged_step < 0])
