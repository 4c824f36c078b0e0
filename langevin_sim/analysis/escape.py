"""Escape: first-passage times between labelled regions, with right-censoring.

Data.  `waiting_times(run, label)` takes a run's per-step first-passage observer
(`Simulation(..., first_passage=FirstPassage(...))`, resolution one step); replicas that
start outside the region are at risk, an entry at step n is an event at time t = n * dt,
and a replica that has not entered by the last step (or diverged first) is right-censored
there.  `waiting_times_from_records(run, region)` does the same from the recorded positions
when no observer was attached: the event is the first *record* inside, an upper bound on
the entry time that can be late by many record spacings, not at most one: a replica that
enters and leaves again between two records is found inside only at a later record, or
never (then it is censored).  Each record-based time is >= the observer's on the same path
and fewer entries are seen, so the MFPT from records is >= the observer's estimate: an
upper bound on the first-passage time, not an estimate of it.

Estimators (all on (time, event) pairs):

* `kaplan_meier`: the product-limit survival S(t) = prod_{t_j <= t} (1 - d_j / n_j)
  (d_j entries at t_j, n_j at risk; censored at t_j count as at risk) by
  `scipy.stats.ecdf` on `scipy.stats.CensoredData`, with Greenwood's variance
  Var S(t) = S(t)^2 sum_{t_j <= t} d_j / (n_j (n_j - d_j)) and the linear band
  S +- z Var^(1/2) clipped to [0, 1].
* `escape_rate`: the exponential MLE k = D / sum_i t_i (D events, total exposure sum t_i over
  all at-risk replicas, censored ones included); 1 - alpha interval from chi-square
  quantiles (exact for Poisson counts on the exposure) [chi2_(alpha/2)(2D),
  chi2_(1-alpha/2)(2D + 2)] / (2 sum t), or the profile-likelihood interval
  {k : 2 (D ln(k_hat / k) + (k - k_hat) sum t) <= chi2_1(1 - alpha)}.  The mean first-passage
  time is tau = 1/k = sum t / D (the sample mean when nothing is censored), SE tau / sqrt(D).
* `arrhenius_fit`: weighted least squares of ln tau against 1/T, ln tau = ln tau0 + dU / T,
  with sigma(ln tau) = SE(tau) / tau; slope dU (the barrier) and intercept ln tau0 with their
  standard errors (scaled by sqrt(chi2/dof) when that exceeds 1).

Predictions, for the engine's dynamics (dynamics/langevin.py): overdamped Euler-Maruyama
x <- x - eta grad U + sqrt(2 eta T) xi is dx = -grad U dt + sqrt(2 T) dW with time t = step *
eta (mobility 1, D = T); BAOAB integrates dx = p/m dt, dp = -grad U dt - gamma p dt +
sqrt(2 gamma m T) dW.

* `kramers_rate` (Kramers-Eyring-Langer): k = (kappa / 2 pi) sqrt(det H_min / |det H_s|)
  e^(-dU/T), with lambda_s < 0 the unstable Hessian eigenvalue at the saddle and kappa its
  growth rate: kappa = |lambda_s| (overdamped), kappa = sqrt(gamma^2/4 + |lambda_s|/m) -
  gamma/2 (underdamped, moderate to high friction; not the energy-diffusion regime
  gamma << omega_b).  k is the well-to-well rate; the overdamped MFPT to a dividing plane
  at signed distance delta past the saddle along the unstable mode is
  Phi(delta sqrt(|lambda_s| / T)) / k (1 / (2 k) at the saddle itself: half the arrivals
  recross).  Corrections are O(T / dU).
* `mfpt_1d`: the exact overdamped 1-D mean first-passage time to b from x0 < b with
  reflection at -infinity, tau(x0) = (1/T) int_x0^b dy e^(U(y)/T) int_-inf^y dz e^(-U(z)/T),
  by cumulative Simpson quadrature on a fine grid.
* Discretization: a discretely monitored path misses crossings between steps; for a
  diffusion this acts, to leading order, as moving the boundary away by beta sigma sqrt(eta)
  with sigma sqrt(eta) = sqrt(2 T eta) and beta = -zeta(1/2)/sqrt(2 pi) = 0.5826
  (Broadie-Glasserman-Kou; Gobet-Menozzi for diffusions): `monitoring_shift`.  The rest of
  the Euler-Maruyama bias is O(eta).

`analyze_run(run)` puts these together for one run (DoubleWell runs get the quadrature and
Kramers predictions), `escape_summary(runs)` (or `summarize_escape(analyses)`) adds the Arrhenius
fit across temperatures.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import integrate, optimize, special, stats

from ..errors import ConfigError, check_positive
from ..io.reader import check_run, check_trajectories
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..first_passage import Ball, HalfSpace
    from ..io.reader import Run
    from ..potentials.base import Potential
    from ..potentials.double_well import DoubleWell

BETA_MONITORING = 0.5825971579390106  # -zeta(1/2) / sqrt(2 pi)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class WaitingTimes(Result):
    """First-passage times of the at-risk replicas into one region, right-censored.

    time (n,) float64: entry time where `event`, else the censoring time (time units =
    steps x step size); event (n,) bool; replica (n,) global ids; x0 (n, d) starting
    positions (None when not recorded); resolution: one step for the observer, the record
    spacing from records (there entries can be late by many spacings: the times are upper
    bounds); source "observer" | "records"; n_diverged: replicas left out because they
    diverged (a blow-up swings through regions: its entries are not escapes).
    """

    time: np.ndarray
    event: np.ndarray
    label: str
    resolution: float
    source: str
    replica: np.ndarray | None = None
    x0: np.ndarray | None = None
    temperature: float | None = None
    dt: float | None = None
    n_started_inside: int = 0
    n_diverged: int = 0

    @property
    def n(self) -> int:
        return int(self.time.size)

    @property
    def events(self) -> int:
        return int(np.sum(self.event))

    def table(self) -> str:
        t = self.time[self.event]
        med = f"{np.median(t):.4g}" if t.size else "-"
        how = (f"observer, resolution {self.resolution:.3g}" if self.source == "observer" else
               f"records every {self.resolution:.3g}: entry times are upper bounds")
        return (f"region {self.label!r} ({how}): "
                f"{self.n} replicas at risk ({self.n_started_inside} started inside, "
                f"{self.n_diverged} diverged and left out), "
                f"{self.events} entered (median time {med}), {self.n - self.events} censored "
                f"at <= {self.time.max() if self.n else float('nan'):.4g}")

    def plot(self, ax: Axes, bins: int = 40, **kw: Any) -> Axes:
        """Histogram of the entry times (censored replicas not shown)."""
        ax.hist(self.time[self.event], bins=bins, **kw)
        ax.set(xlabel="first-passage time", ylabel="replicas")
        return ax


def _constant(config: dict, name: str) -> float:
    s = config["dynamics"].get(name)
    if s is None:
        return float("nan")
    if s["kind"] != "constant":
        raise ConfigError(f"the run's {name} is scheduled ({s['kind']}); escape times need a "
                          f"constant {name}")
    return float(s["start"])


def _run_constants(run) -> tuple[float, float]:
    """(time per step, temperature) of a run with constant step and temperature."""
    cfg = run.config
    dyn = cfg["dynamics"]
    dt = _constant(cfg, "step") if "step" in dyn else _constant(cfg, "lr")
    T = _constant(cfg, "temperature")
    if not np.isfinite(dt):
        raise ConfigError("the run's dynamics has no step size; escape times need one")
    return dt, T


def _start_positions(run, replicas_mask):
    """Positions at step 0 of the masked replicas (n, d), or None when not recorded."""
    if "positions" not in run.names or run.n_records == 0 or run.step[0] != 0:
        return None
    return np.asarray(run.positions[0], dtype=np.float64)[replicas_mask]


def waiting_times(run: Run, label: str | None = None) -> WaitingTimes:
    """Entry times into region `label` (default: the first) from the run's first-passage
    observer: replicas that started outside are at risk; an entry at step n is an event at
    n * dt; the others are censored at the observer's step.  Replicas that diverged are
    left out (`n_diverged`): on its way to overflow a replica swings through the regions,
    so its entry may be the blow-up's (docs/analysis.md: the kinetic analyses leave out or
    censor the whole replica)."""
    run = check_run(run, "waiting_times")
    fp = run.first_passage
    if fp is None:
        raise ConfigError(f"{run.path} has no first-passage observer; rerun with "
                          "Simulation(..., first_passage=FirstPassage(...)) or use "
                          "waiting_times_from_records(run, region)")
    dt, T = _run_constants(run)
    k = fp.index(label)
    entry = fp.first_entry_step[:, k]
    diverged = fp.diverged_step >= 0
    at_risk = (entry != 0) & ~diverged
    event = (entry > 0) & at_risk
    steps = np.where(event, entry, fp.step)[at_risk]
    return WaitingTimes(time=steps.astype(np.float64) * dt, event=event[at_risk],
                        label=fp.labels[k], resolution=dt, source="observer",
                        replica=fp.replica[at_risk], x0=_start_positions(run, at_risk),
                        temperature=T, dt=dt,
                        n_started_inside=int(np.sum((entry == 0) & ~diverged)),
                        n_diverged=int(np.sum(diverged)))


def waiting_times_from_records(run: Run, region: HalfSpace | Ball) -> WaitingTimes:
    """Entry times into `region` (a HalfSpace or Ball of `langevin_sim.first_passage`) from
    the recorded positions: the first record inside, an upper bound on the entry that can
    be many record spacings late (entries followed by exits between records are missed);
    replicas inside at the first record (which must be step 0) are not at risk; the others
    are censored at the last record.  Replicas that diverged (a non-finite record, or the
    run's divergence flag) are left out, as in `waiting_times`."""
    run = check_trajectories(run, "waiting_times_from_records")
    from ..first_passage import FirstPassage

    if "positions" not in run.names:
        raise ConfigError("the run recorded no positions; record them or attach a first-passage "
                          "observer")
    if run.n_records < 2 or run.step[0] != 0:
        raise ConfigError("need records from step 0 on to find first passages from records")
    dt, T = _run_constants(run)
    obs = FirstPassage(region)
    x = np.asarray(run.positions[:], dtype=np.float64)
    n, M, d = x.shape
    finite = np.all(np.isfinite(x), axis=2)
    diverged = ~finite.all(axis=0) | (np.asarray(run.diverged_step) >= 0)
    inside = obs.membership(x.reshape(n * M, d)).reshape(n, M)
    started_inside = inside[0] & ~diverged
    at_risk = ~inside[0] & ~diverged
    steps = run.step
    first = np.where(inside.any(axis=0), inside.argmax(axis=0), -1)
    event = (first > 0) & at_risk
    t = np.where(event, steps[np.maximum(first, 0)], steps[-1]).astype(np.float64) * dt
    spacing = float(np.min(np.diff(steps))) * dt
    return WaitingTimes(time=t[at_risk], event=event[at_risk], label=region.label,
                        resolution=spacing, source="records",
                        replica=run.f["records/replica"][()][at_risk], x0=x[0][at_risk],
                        temperature=T, dt=dt, n_started_inside=int(np.sum(started_inside)),
                        n_diverged=int(np.sum(diverged)))


def _pairs(times, event):
    if isinstance(times, WaitingTimes):
        if times.time.size == 0:
            raise ConfigError(f"no replica is at risk of entering {times.label!r}: "
                              f"{times.n_started_inside} start inside it and "
                              f"{times.n_diverged} diverged; choose a region they start "
                              "outside (or a stable step size)")
        return times.time, times.event, times.label
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ConfigError(f"times must be one waiting time per replica, shape (n,), got "
                          f"{t.shape}: pass one column (or .ravel() to pool them)")
    e = np.ones(t.shape, bool) if event is None else np.asarray(event)
    if e.dtype != bool:
        if e.dtype.kind not in "iuf" or not np.all((e == 0) | (e == 1)):
            raise ConfigError("event must be booleans (True = an observed entry, False = "
                              f"censored), or 0 / 1; got {e.dtype} values such as "
                              f"{e.ravel()[:3].tolist()}")
        e = e.astype(bool)
    if e.shape != t.shape:
        raise ConfigError(f"event must match times: {e.shape} vs {t.shape}")
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ConfigError("times must be a non-empty array of finite times >= 0")
    return t, e, ""


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be a level in (0, 1) such as 0.95, got {confidence}")


def _named(label: str) -> str:
    """' <label>' for a table's title, nothing for times given as arrays (no region)."""
    return f" {label!r}" if label else ""


# ---------------------------------------------------------------------------------------
# Kaplan-Meier
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Survival(Result):
    """Kaplan-Meier survival S(t) at the distinct event times `time`, with Greenwood's
    standard error `se` and the pointwise `confidence` band [lower, upper] (linear, clipped);
    n_at_risk, n_events per time; n replicas, events in all."""

    time: np.ndarray
    survival: np.ndarray
    se: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_at_risk: np.ndarray
    n_events: np.ndarray
    n: int
    events: int
    confidence: float
    label: str = ""
    t_max: float = float("nan")

    def at(self, t: ArrayLike) -> np.ndarray:
        """S at times t (right-continuous step function; 1 before the first event)."""
        i = np.searchsorted(self.time, np.asarray(t, dtype=np.float64), side="right")
        return np.concatenate([[1.0], self.survival])[i]

    def se_at(self, t: ArrayLike) -> np.ndarray:
        i = np.searchsorted(self.time, np.asarray(t, dtype=np.float64), side="right")
        return np.concatenate([[0.0], self.se])[i]

    def table(self, rows: int = 8) -> str:
        out = [f"Kaplan-Meier{_named(self.label)}: {self.n} at risk, {self.events} events, "
               f"{self.n - self.events} censored (Greenwood {self.confidence:.0%} band)",
               f"{'t':>11} {'at risk':>8} {'S(t)':>8} {'se':>8} {'low':>8} {'high':>8}"]
        if self.time.size:
            idx = np.unique(np.linspace(0, self.time.size - 1, rows).round().astype(int))
            for i in idx:
                out.append(f"{self.time[i]:11.4g} {self.n_at_risk[i]:8d} {self.survival[i]:8.4f} "
                           f"{self.se[i]:8.4f} {self.lower[i]:8.4f} {self.upper[i]:8.4f}")
        return "\n".join(out)

    def plot(self, ax: Axes, label: str | None = None, **kw: Any) -> Axes:
        # the step function from t = 0 (S = 1) to the last observed time
        end = max(self.t_max, self.time[-1]) if self.time.size else self.t_max
        t = np.concatenate([[0.0], self.time, [end]])

        def steps(a):
            return np.concatenate([[1.0], a, a[-1:] if a.size else [1.0]])
        line, = ax.step(t, steps(self.survival), where="post",
                        label=label if label is not None else self.label, **kw)
        ax.fill_between(t, steps(self.lower), steps(self.upper), step="post",
                        color=line.get_color(), alpha=0.2, lw=0)
        ax.set(xlabel="time", ylabel="survival S(t)")
        return ax


def kaplan_meier(times: WaitingTimes | ArrayLike, event: ArrayLike | None = None,
                 confidence: float = 0.95) -> Survival:
    """Kaplan-Meier survival of right-censored times (a WaitingTimes, or times (n,) and
    event (n,) bool, True = observed entry) by `scipy.stats.ecdf`, with Greenwood's variance."""
    _check_confidence(confidence)
    t, e, label = _pairs(times, event)
    if e.any():
        data = stats.CensoredData(uncensored=t[e], right=t[~e])
        res = stats.ecdf(data).sf
        ut, S = res.quantiles, res.probabilities
    else:
        ut, S = np.zeros(0), np.zeros(0)
    # Greenwood (scipy gives the band, not the variance): censored at t_j are at risk at t_j
    ts = np.sort(t)
    n_risk = ts.size - np.searchsorted(ts, ut, side="left")
    d = np.searchsorted(np.sort(t[e]), ut, side="right") - np.searchsorted(np.sort(t[e]), ut,
                                                                            side="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(n_risk > d, d / (n_risk * (n_risk - d)), np.inf)
        var = np.where(S > 0, S ** 2 * np.cumsum(terms), 0.0)  # S = 0 after the last at risk
    se = np.sqrt(var)
    z = stats.norm.ppf(0.5 + confidence / 2)
    return Survival(time=ut, survival=S, se=se, lower=np.clip(S - z * se, 0, 1),
                    upper=np.clip(S + z * se, 0, 1), n_at_risk=n_risk.astype(np.int64),
                    n_events=d.astype(np.int64), n=int(t.size), events=int(e.sum()),
                    confidence=confidence, label=label, t_max=float(t.max()))


# ---------------------------------------------------------------------------------------
# exponential rate
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class EscapeRate(Result):
    """Exponential MLE of the escape rate with censoring: rate k = events / exposure,
    [lower, upper] its `confidence` interval (`method` "chi2" or "profile"); mfpt = 1/k =
    exposure / events with SE mfpt / sqrt(events) and interval [1/upper, 1/lower]."""

    rate: float
    lower: float
    upper: float
    events: int
    exposure: float
    n: int
    confidence: float
    method: str
    label: str = ""

    @property
    def mfpt(self) -> float:
        return self.exposure / self.events if self.events else float("inf")

    @property
    def mfpt_se(self) -> float:
        return self.mfpt / math.sqrt(self.events) if self.events else float("inf")

    @property
    def mfpt_interval(self) -> tuple[float, float]:
        return (1.0 / self.upper, 1.0 / self.lower if self.lower > 0 else float("inf"))

    def survival(self, t: ArrayLike) -> np.ndarray:
        return np.exp(-self.rate * np.asarray(t, dtype=np.float64))

    def table(self) -> str:
        lo, hi = self.mfpt_interval
        return (f"escape rate{_named(self.label)}: k = {self.rate:.5g} [{self.lower:.5g}, {self.upper:.5g}] "
                f"({self.confidence:.0%}, {self.method}); {self.events} events of {self.n}, "
                f"exposure {self.exposure:.5g}\n"
                f"mean first-passage time 1/k = {self.mfpt:.5g} +- {self.mfpt_se:.2g} "
                f"[{lo:.5g}, {hi:.5g}]")

    def plot(self, ax: Axes, t_max: float | None = None, label: str | None = None,
             **kw: Any) -> Axes:
        """exp(-k t) with its band, on the axes of a survival plot."""
        t = np.linspace(0, t_max if t_max else 3 * self.mfpt, 200)
        line, = ax.plot(t, self.survival(t), "--",
                        label=label if label is not None else f"exp(-k t), k = {self.rate:.3g}",
                        **kw)
        ax.fill_between(t, np.exp(-self.upper * t), np.exp(-self.lower * t),
                        color=line.get_color(), alpha=0.1, lw=0)
        return ax


def escape_rate(times: WaitingTimes | ArrayLike, event: ArrayLike | None = None,
                confidence: float = 0.95, method: str = "chi2") -> EscapeRate:
    """Exponential-model MLE k = D / sum t of right-censored times (WaitingTimes, or times
    and event flags), with a chi-square ("chi2") or profile-likelihood ("profile") interval."""
    _check_confidence(confidence)
    t, e, label = _pairs(times, event)
    D, S = int(e.sum()), float(t.sum())
    if S <= 0:
        raise ConfigError("total exposure time is 0: every replica at risk was censored at "
                          "time 0 (a run of 0 steps); run it longer")
    a = 1.0 - confidence
    k = D / S
    if method == "chi2":
        lo = stats.chi2.ppf(a / 2, 2 * D) / (2 * S) if D > 0 else 0.0
        hi = stats.chi2.ppf(1 - a / 2, 2 * D + 2) / (2 * S)
    elif method == "profile":
        crit = stats.chi2.ppf(confidence, 1)

        def dev(r):
            return 2 * ((D * math.log(k / r) if D else 0.0) + (r - k) * S) - crit
        lo = optimize.brentq(dev, k * 1e-12, k) if D > 0 else 0.0
        hi = optimize.brentq(dev, max(k, 1e-300), (k + 1.0 / S) * 100 + 1.0 / S)
    else:
        raise ConfigError(f"method must be 'chi2' or 'profile', got {method!r}")
    return EscapeRate(rate=k, lower=float(lo), upper=float(hi), events=D, exposure=S, n=int(t.size),
                      confidence=confidence, method=method, label=label)


# ---------------------------------------------------------------------------------------
# Arrhenius
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ArrheniusFit(Result):
    """ln tau = ln tau0 + barrier / T by weighted least squares over runs.

    temperature, tau, tau_se (k,); barrier (energy units) and log_prefactor (ln tau0, tau0
    in time units) with standard errors; cov (2, 2) of (barrier, log_prefactor); chi2, dof,
    scaled: whether the errors were scaled by sqrt(chi2 / dof) > 1."""

    temperature: np.ndarray
    tau: np.ndarray
    tau_se: np.ndarray
    barrier: float
    barrier_se: float
    log_prefactor: float
    log_prefactor_se: float
    cov: np.ndarray
    chi2: float
    dof: int
    scaled: bool

    @property
    def prefactor(self) -> float:
        return math.exp(self.log_prefactor)

    def predict(self, temperature: ArrayLike) -> np.ndarray:
        return np.exp(self.log_prefactor + self.barrier / np.asarray(temperature, np.float64))

    def table(self) -> str:
        rows = [f"{'T':>8} {'1/T':>8} {'tau':>11} {'se':>9} {'fit':>11}"]
        for T, tau, se, f in zip(self.temperature, self.tau, self.tau_se,
                                 self.predict(self.temperature)):
            rows.append(f"{T:8.4g} {1 / T:8.4g} {tau:11.5g} {se:9.3g} {f:11.5g}")
        fit = (f"chi2 = {self.chi2:.2f} on {self.dof} dof (p = "
               f"{stats.chi2.sf(self.chi2, self.dof):.3g})" if self.dof > 0 else
               "two temperatures: the line passes through both, no test of its fit (the "
               "barrier's error is the two times')")
        rows.append(f"Arrhenius: barrier dU = {self.barrier:.4g} +- {self.barrier_se:.2g}, "
                    f"tau0 = {self.prefactor:.4g} (ln tau0 = {self.log_prefactor:.4g} +- "
                    f"{self.log_prefactor_se:.2g}); {fit}{', errors scaled' if self.scaled else ''}")
        return "\n".join(rows)

    def plot(self, ax: Axes, label: str = "simulated", **kw: Any) -> Axes:
        x = 1.0 / self.temperature
        ax.errorbar(x, np.log(self.tau), yerr=self.tau_se / self.tau, fmt="o", label=label, **kw)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, self.log_prefactor + self.barrier * xs, "-",
                label=f"fit dU = {self.barrier:.3g} +- {self.barrier_se:.2g}")
        ax.set(xlabel="1 / T", ylabel="ln tau")
        return ax


def arrhenius_fit(temperature: ArrayLike, tau: ArrayLike, tau_se: ArrayLike | None = None,
                  scale: bool = True) -> ArrheniusFit:
    """Fit ln tau = ln tau0 + dU / T (weights 1/sigma^2, sigma = tau_se / tau; unweighted
    with the residual scatter as the error when tau_se is None).  `scale`: multiply the
    covariance by chi2/dof when that exceeds 1 (the Birge ratio)."""
    T = np.asarray(temperature, np.float64).ravel()
    tau = np.asarray(tau, np.float64).ravel()
    if T.size < 2 or tau.shape != T.shape or not np.all(T > 0) or not np.all(tau > 0):
        raise ConfigError("arrhenius_fit needs >= 2 positive temperatures and times of equal length")
    if np.unique(T).size < 2:
        raise ConfigError(f"arrhenius_fit needs >= 2 distinct temperatures (the slope dU is "
                          f"along 1/T); got only T = {T[0]:g}")
    if not np.all(np.isfinite(tau)):
        raise ConfigError(f"arrhenius_fit needs finite times; tau = {tau.tolist()} (a run without "
                          "escapes has no mean first-passage time: run it longer or leave it out)")
    x, y = 1.0 / T, np.log(tau)
    weighted = tau_se is not None
    se = np.asarray(tau_se, np.float64).ravel() if weighted else np.full(T.size, np.nan)
    if weighted and (se.shape != T.shape or not np.all((se > 0) & np.isfinite(se))):
        raise ConfigError(f"arrhenius_fit's tau_se must be finite and > 0, one per temperature; "
                          f"got {se.tolist()} (or pass tau_se=None for an unweighted fit)")
    sig = se / tau if weighted else np.ones(T.size)
    A = np.stack([x, np.ones_like(x)], axis=1)
    W = 1.0 / sig ** 2
    cov = np.linalg.inv(A.T @ (A * W[:, None]))
    beta = cov @ (A.T @ (W * y))
    r = y - A @ beta
    dof = T.size - 2
    chi2 = float(np.sum(W * r * r))
    scaled = False
    if not weighted:
        if dof < 1:
            raise ConfigError("an unweighted Arrhenius fit needs >= 3 temperatures (or pass tau_se)")
        cov = cov * chi2 / dof
    elif scale and dof > 0 and chi2 / dof > 1:
        cov, scaled = cov * chi2 / dof, True
    return ArrheniusFit(temperature=T, tau=tau, tau_se=se, barrier=float(beta[0]),
                        barrier_se=float(math.sqrt(cov[0, 0])), log_prefactor=float(beta[1]),
                        log_prefactor_se=float(math.sqrt(cov[1, 1])), cov=cov, chi2=chi2, dof=dof,
                        scaled=scaled)


# ---------------------------------------------------------------------------------------
# predictions
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class KramersRate(Result):
    """Kramers-Eyring-Langer rate k = (kappa / 2 pi) sqrt(det H_min / |det H_s|) e^(-dU/T).

    barrier dU = U(saddle) - U(min); lambda_saddle < 0 the unstable eigenvalue; kappa its
    growth rate (|lambda_s| overdamped, sqrt(gamma^2/4 + |lambda_s|/m) - gamma/2 underdamped);
    friction None for overdamped dynamics; speed: the dynamics' time per unit of the run's
    time, which multiplies the rate (1 / (1 - momentum) for heavy-ball SGD: `sgd_limit`)."""

    rate: float
    barrier: float
    temperature: float
    lambda_saddle: float
    det_ratio: float
    kappa: float
    friction: float | None = None
    mass: float = 1.0
    speed: float = 1.0

    @property
    def prefactor(self) -> float:
        """k e^(dU/T): the attempt rate (1 / time)."""
        return self.speed * self.kappa / (2 * math.pi) * math.sqrt(self.det_ratio)

    def mfpt(self, offset: float | None = None) -> float:
        """Mean first-passage time to a dividing plane at signed distance `offset` past the
        saddle along the unstable mode: Phi(offset sqrt(|lambda_s| / T)) / k (overdamped;
        1/(2k) at the saddle); None means far past it, 1/k.  Underdamped: 1/k, valid for
        planes a few thermal widths sqrt(T / |lambda_s|) past the saddle.  ConfigError for a
        plane more than one width before the saddle, where the barrier's harmonic top no
        longer holds (the double well at T = 0.1, a plane 3.2 widths before: 19.1 against
        the exact 52.3; use `mfpt_1d`)."""
        if offset is None or self.friction is not None:
            return 1.0 / self.rate
        widths = offset * math.sqrt(-self.lambda_saddle / self.temperature)
        if widths < -1.0:
            raise ConfigError(f"the plane lies {-widths:.3g} thermal widths before the saddle: "
                              "Kramers' Phi(offset) / k holds within its harmonic top only; "
                              "the exact overdamped MFPT is mfpt_1d's")
        return float(special.ndtr(widths) / self.rate)

    def table(self) -> str:
        dyn = "overdamped" if self.friction is None else f"underdamped, gamma = {self.friction:g}"
        if self.speed != 1.0:
            dyn += f", time x {self.speed:.4g}"
        return (f"Kramers ({dyn}): dU = {self.barrier:.4g}, dU/T = {self.barrier / self.temperature:.3g}, "
                f"lambda_s = {self.lambda_saddle:.4g}, det ratio = {self.det_ratio:.4g}: "
                f"k = {self.rate:.5g}, 1/k = {1 / self.rate:.5g}")

    def plot(self, ax: Axes, t_max: float | None = None, offset: float | None = None,
             **kw: Any) -> Axes:
        """exp(-t / mfpt(offset)) on a survival plot."""
        tau = self.mfpt(offset)
        t = np.linspace(0, t_max if t_max else 3 * tau, 200)
        ax.plot(t, np.exp(-t / tau), ":", label=kw.pop("label", f"Kramers, tau = {tau:.3g}"), **kw)
        return ax


def kramers_rate(potential: Potential, x_min: ArrayLike, x_saddle: ArrayLike, temperature: float,
                 friction: float | None = None, mass: float = 1.0,
                 speed: float = 1.0) -> KramersRate:
    """Kramers-Eyring rate out of the minimum x_min (d,) over the saddle x_saddle (d,) of
    `potential` at temperature T, from their Hessians (`potential.hessian`); overdamped
    (friction None: dx = -grad U dt + sqrt(2T) dW) or underdamped with friction gamma; per
    unit of a time that runs `speed` times slower than the SDE's (`sgd_limit`)."""
    xm = np.asarray(x_min, np.float64).reshape(1, -1)
    xs = np.asarray(x_saddle, np.float64).reshape(1, -1)
    Hm = np.asarray(potential.hessian(xm), np.float64)[0]
    Hs = np.asarray(potential.hessian(xs), np.float64)[0]
    lm, ls = np.linalg.eigvalsh(Hm), np.linalg.eigvalsh(Hs)
    if not np.all(lm > 0):
        raise ConfigError(f"x_min is not a minimum: Hessian eigenvalues {lm}")
    if not (ls[0] < 0 and np.all(ls[1:] > 0)):
        raise ConfigError(f"x_saddle is not a first-order saddle: Hessian eigenvalues {ls}")
    dU = float(potential.energy(xs)[0] - potential.energy(xm)[0])
    lam = float(ls[0])
    det_ratio = float(np.exp(np.sum(np.log(lm)) - np.sum(np.log(np.abs(ls)))))
    if friction is None:
        kappa = -lam
    else:
        g = float(friction)
        kappa = math.sqrt(g * g / 4 - lam / mass) - g / 2
    rate = speed * kappa / (2 * math.pi) * math.sqrt(det_ratio) * math.exp(-dU / temperature)
    return KramersRate(rate=rate, barrier=dU, temperature=float(temperature), lambda_saddle=lam,
                       det_ratio=det_ratio, kappa=kappa, friction=friction, mass=float(mass),
                       speed=float(speed))


def sgd_limit(dynamics: dict, temperature: float, lr: float) -> tuple[float, float]:
    """(T_eff, speed) of full-gradient SGD (a run config's `dynamics`) as overdamped Langevin
    for slow modes (lr lam << 1 - momentum): heavy ball v <- mu v + g + s_g xi_g,
    x <- x - lr v + sqrt(2 lr T) xi moves as Euler-Maruyama with step lr / (1 - mu), whose
    noise 2 lr T + lr^2 s_g^2 / (1 - mu)^2 per step is 2 (lr / (1 - mu)) T_eff:
    T_eff = T (1 - mu) + lr s_g^2 / (2 (1 - mu)); its time runs speed = 1 / (1 - mu) times the
    run's (time = step * lr).  ConfigError where weight decay changes the potential or no
    noise is left."""
    mu = float(dynamics.get("momentum") or 0.0)
    sg = float(dynamics.get("grad_noise") or 0.0)
    if float(dynamics.get("weight_decay") or 0.0) != 0.0:
        raise ConfigError("weight decay adds wd |x|^2 / 2 to the potential the rate is for")
    t_eff = temperature * (1.0 - mu) + lr * sg * sg / (2.0 * (1.0 - mu))
    if not t_eff > 0:
        raise ConfigError("SGD without temperature or gradient noise has no thermal escape")
    return t_eff, 1.0 / (1.0 - mu)


def monitoring_shift(temperature: float, step: float) -> float:
    """beta sqrt(2 T eta): how far a boundary checked once per Euler-Maruyama step of size
    eta acts as if moved away from the start (to leading order in sqrt(eta))."""
    return BETA_MONITORING * math.sqrt(2.0 * temperature * step)


def _energy_on_grid(energy, y: np.ndarray) -> np.ndarray:
    """energy(y) (n,) float64 of the 1-D grid y (n,), or ConfigError saying what mfpt_1d needs."""
    need = ("mfpt_1d: energy must map a 1-D grid (n,) to (n,); for a separable potential "
            "pass potential.marginal_energy")
    try:
        u = np.asarray(energy(y), np.float64)
    except (ValueError, IndexError, TypeError) as e:     # ConfigError and AxisError included
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"{need} (on a grid of shape {y.shape} it raised "
                          f"{type(e).__name__}: {first})") from e
    if u.shape != y.shape:
        raise ConfigError(f"{need} (on a grid of shape {y.shape} it returned shape {u.shape})")
    return u


def mfpt_1d(energy: Callable[[np.ndarray], np.ndarray], temperature: float, x0: ArrayLike,
            boundary: float, lower: float | None = None,
            points: int = 20001) -> np.ndarray:
    """Exact overdamped mean first-passage time from x0 (< boundary; array) to `boundary`
    for dx = -U'(x) dt + sqrt(2 T) dW, reflecting at -infinity:

        tau(x0) = (1/T) int_x0^b dy e^(U(y)/T) int_-inf^y dz e^(-U(z)/T).

    energy: vectorized U(y) (1-D).  The inner integral starts at `lower` (<= every x0; a
    reflecting point there), by default far enough left that U - min U > 40 T there and
    rising (searched from the span b - min x0 outwards by doublings: a potential without
    such a wall, where the mean is infinite, is a ConfigError); cumulative Simpson on
    `points` grid points, then linear interpolation at x0.  Time units: those of the
    dynamics (step x step size).  For a region to the left, pass U(-y), -x0, -b."""
    x0 = np.asarray(x0, np.float64)
    b = float(boundary)
    if np.any(x0 > b):
        raise ConfigError(f"x0 must be <= boundary {b} (mirror the problem for regions to the left)")
    T = check_positive("temperature", temperature)
    left = float(min(np.min(x0), b))
    if lower is not None:
        lo = float(lower)
        if not lo <= left or not lo < b:
            raise ConfigError(f"lower must be <= every x0 (min {left:g}) and < the boundary "
                              f"{b:g}, got {lo:g}")
    else:
        w = b - left if b > left else max(abs(b), 1.0)    # the problem's own length scale
        for _ in range(200):
            lo = left - w
            y = np.linspace(lo, b, 4001)
            u = _energy_on_grid(energy, y)
            if u[0] - u.min() > 40 * T and np.all(np.diff(u[:20]) < 0):
                break
            w *= 2
        else:
            raise ConfigError(f"U does not rise 40 T to the left of x0 = {left:g} within "
                              f"{w / 2:.3g}: with nothing to reflect the walk the mean "
                              "first-passage time is infinite; pass lower= (a reflecting "
                              "point) if the dynamics has one")
    y = np.linspace(lo, b, int(points) | 1)
    u = _energy_on_grid(energy, y)
    u0 = u.min()
    inner = integrate.cumulative_simpson(np.exp(-(u - u0) / T), x=y, initial=0.0)
    k0 = max(0, min(np.searchsorted(y, left, side="right") - 1, y.size - 3))
    y, u, inner = y[k0:], u[k0:], inner[k0:]     # the outer integral spans [x0, b] only
    # the outer integrand e^((U - u0)/T) inner in logs: far up a wall both factors are beyond
    # float64 (a start at U - u0 > 709 T overflowed) while their product stays moderate
    with np.errstate(divide="ignore"):
        log_f = (u - u0) / T + np.log(np.maximum(inner, 0.0))   # (Simpson: tiny < 0)
    top = log_f.max()
    # tau on the grid: (1/T) e^top int_y^b e^(log_f - top) (inf where tau is beyond float64)
    tail = integrate.cumulative_simpson(np.exp(log_f - top)[::-1], x=-y[::-1], initial=0.0)[::-1]
    with np.errstate(over="ignore"):
        tau = tail * np.exp(top) / T
    return np.interp(x0, y, tau)


# ---------------------------------------------------------------------------------------
# one run, several runs
# ---------------------------------------------------------------------------------------

def double_well_landmarks(potential: DoubleWell) -> tuple[float, float, float]:
    """(left minimum, saddle, right minimum) of each coordinate of a DoubleWell (they are
    alike): the real roots of k y (y^2 - a^2) + tilt = 0 (y = x - center), sorted.
    ConfigError when the tilt leaves a single well."""
    c, a2, k, tilt = potential.grad_coeffs
    roots = np.roots([k, 0.0, -k * a2, tilt])
    real = np.sort(roots[np.abs(roots.imag) < 1e-9].real)
    if real.size != 3:
        raise ConfigError(f"the tilt {tilt} leaves this DoubleWell a single well; no barrier")
    return tuple(float(c + r) for r in real)


def _axis_region(region: dict, d: int):
    """(coordinate, sign, threshold) when the region is the half-space sign * x_i > threshold."""
    if region.get("class") != "HalfSpace":
        return None
    n = np.asarray(region["normal"], np.float64)
    nz = np.flatnonzero(n)
    if nz.size != 1:
        return None
    i = int(nz[0])
    return i, float(np.sign(n[i])), float(region["offset"]) / abs(n[i])


@dataclass(frozen=True, eq=False)
class EscapeAnalysis(Result):
    """One run's escape into one region: waiting times, Kaplan-Meier, exponential rate and,
    for DoubleWell runs with an axis-aligned half-space, the predictions.

    quadrature: the exact overdamped MFPT (`mfpt_1d`) averaged over the at-risk replicas'
    starting points, with the boundary moved by `monitoring_shift` (the chain is checked
    once per step); quadrature_continuous without that shift; kramers: the `KramersRate`
    (None when not a DoubleWell); kramers_mfpt its MFPT to the region's boundary; z =
    (mfpt - quadrature) / mfpt_se.  From records the MFPT is an upper bound (`bound`): only
    z < -3 (below the quadrature) is a disagreement, anything else tests nothing."""

    name: str
    temperature: float
    dt: float
    dynamics: str
    waiting: WaitingTimes
    survival: Survival
    rate: EscapeRate
    quadrature: float | None = None
    quadrature_continuous: float | None = None
    kramers: KramersRate | None = None
    kramers_mfpt: float | None = None
    notes: tuple = field(default_factory=tuple)

    @property
    def effective_temperature(self) -> float:
        """The temperature of the Langevin limit the predictions use: heavy-ball SGD's T_eff
        (`sgd_limit`), else the run's T."""
        return self.kramers.temperature if self.kramers is not None else self.temperature

    @property
    def z(self) -> float | None:
        if self.quadrature is None or not np.isfinite(self.rate.mfpt_se):
            return None
        return (self.rate.mfpt - self.quadrature) / self.rate.mfpt_se

    @property
    def bound(self) -> bool:
        """True when the waiting times come from records: the MFPT is then an upper bound."""
        return self.waiting.source == "records"

    @property
    def agrees(self) -> bool | None:
        """|z| <= 3; from records False when z < -3, else None (a bound tests nothing above
        it); None when there is no quadrature to compare with."""
        if self.z is None:
            return None
        if self.bound:
            return False if self.z < -3.0 else None
        return abs(self.z) <= 3.0

    def verdict(self) -> str:
        if self.rate.events == 0:
            return (f"verdict: {self.name}: no replica entered {self.waiting.label!r}; rate < "
                    f"{self.rate.upper:.3g} ({self.rate.confidence:.0%})")
        mfpt = f"{self.rate.mfpt:.4g} +- {self.rate.mfpt_se:.2g}"
        if self.bound:
            head = (f"verdict: {self.name}: from records (no first-passage observer) the MFPT "
                    f"{mfpt} is only an upper bound (each record-based entry time is >= the "
                    "true one)")
            if self.agrees is False:
                return (f"{head}, yet it lies below the quadrature {self.quadrature:.4g} "
                        f"(z = {self.z:+.2f}): DISAGREES with the quadrature")
            quad = ("" if self.z is None else
                    f", not compared with the quadrature {self.quadrature:.4g}")
            return (f"{head}{quad}; for first-passage times rerun with "
                    "Simulation(..., first_passage=FirstPassage(...))")
        if self.z is None:
            return f"verdict: {self.name}: MFPT {mfpt} (no exact prediction for this run)"
        word = "AGREES with" if self.agrees else "DISAGREES with"
        return (f"verdict: {self.name}: simulated MFPT {mfpt} {word} the quadrature "
                f"{self.quadrature:.4g} (z = {self.z:+.2f})")

    def _kramers_factor(self) -> str:
        """Why the Kramers MFPT is not the 1/k its line below prints: the dividing plane."""
        if self.kramers is None or self.kramers_mfpt is None:
            return ""
        f = self.kramers_mfpt * self.kramers.rate
        if self.kramers.friction is not None:
            return (" (= 1/k: underdamped Kramers, its transmission factor kappa included, for "
                    "a plane a few thermal widths sqrt(T/|lambda_s|) past the saddle; nearer, "
                    "it reads long: crossings the friction sends back count too)")
        return "" if abs(f - 1) < 1e-9 else (
            f" (= {f:.3g}/k: the time to reach the region's plane, Phi(offset sqrt(|lambda_s|/T))"
            "/k for a plane at that offset past the saddle; 1/(2k) at the saddle itself)")

    def table(self, verdict: bool = True) -> str:
        fmt = (lambda v: "n/a" if v is None else f"{v:.5g}")
        sim = "upper bound (records)" if self.bound else "simulated"
        lines = [f"== {self.name}: T = {self.temperature:g}, dt = {self.dt:g}, {self.dynamics}",
                 self.waiting.table(), self.rate.table(),
                 f"MFPT: {sim} {self.rate.mfpt:.5g} +- {self.rate.mfpt_se:.2g} | quadrature "
                 f"{fmt(self.quadrature)} (continuous time {fmt(self.quadrature_continuous)}) | "
                 f"Kramers {fmt(self.kramers_mfpt)}" + self._kramers_factor()]
        if self.kramers is not None:
            lines.append(self.kramers.table())
        lines += list(self.notes)
        if verdict:
            lines.append(self.verdict())
        return "\n".join(lines)

    def plot(self, ax: Axes, **kw: Any) -> Axes:
        """Kaplan-Meier curve with its band, the fitted exponential and the predictions."""
        t_max = float(self.waiting.time.max())
        self.survival.plot(ax, label=kw.pop("label", f"{self.name} (KM)"), **kw)
        self.rate.plot(ax, t_max=t_max, label=f"exp fit, tau = {self.rate.mfpt:.3g}")
        if self.quadrature is not None:
            t = np.linspace(0, t_max, 200)
            ax.plot(t, np.exp(-t / self.quadrature), "k:", lw=1,
                    label=f"exp(-t/tau_quad), tau = {self.quadrature:.3g}")
        ax.set(xlim=(0, t_max), ylim=(0, 1.02))
        return ax


def analyze_run(run: Run, label: str | None = None, confidence: float = 0.95,
                region: HalfSpace | Ball | None = None,
                name: str | None = None) -> EscapeAnalysis:
    """Escape analysis of one run into region `label` of its first-passage observer (or,
    with `region` given, from its records).  DoubleWell runs whose region is a half-space
    along one coordinate get the exact 1-D quadrature (the Euler-Maruyama chain: overdamped
    Langevin, SGD without momentum, gradient noise or weight decay) and the Kramers prediction
    (overdamped and underdamped Langevin, MALA, Heun, Leimkuhler-Matthews; heavy-ball SGD in
    its slow-mode limit, `sgd_limit`; none for AdamW)."""
    run = check_trajectories(run, "analyze_run")
    notes = []
    if region is None:
        wt = waiting_times(run, label)
        reg = run.first_passage.regions[run.first_passage.index(label)]
    else:
        wt = waiting_times_from_records(run, region)
        reg = region.to_dict()
        notes.append("from records: an entry time is the first record inside (records every "
                     f"{wt.resolution:g}), late by one or many spacings (entries followed by "
                     "exits between records are missed); the MFPT is an upper bound")
    if wt.time.size == 0:
        how = ("the half-space --normal, --offset of analysis/escape.py (region= here)"
               if region is not None else "the run's first-passage region")
        raise ConfigError(f"no replica is at risk of entering {wt.label!r}: "
                          f"{wt.n_started_inside} start inside it and {wt.n_diverged} "
                          f"diverged, so there is no escape to time; choose a region they "
                          f"start outside ({how}), or a stable step size")
    surv = kaplan_meier(wt, confidence=confidence)
    rate = escape_rate(wt, confidence=confidence)
    cfg = run.config
    dyn = cfg["dynamics"]["class"]
    T, dt = wt.temperature, wt.dt
    pot = run.potential
    quad = quad_c = kr = kr_mfpt = None
    axis = _axis_region(reg, pot.d)
    if type(pot).__name__ == "DoubleWell" and axis is not None and wt.events > 0:
        i, sign, b = axis
        friction = (float(cfg["dynamics"]["friction"])
                    if dyn in ("UnderdampedLangevin", "OBABO") else None)
        mass = float(cfg["dynamics"].get("mass", 1.0))
        T_kr, speed = T, 1.0
        euler = dyn == "OverdampedLangevin"
        start_min = None
        try:
            if dyn == "AdamW":
                raise ConfigError("AdamW's per-coordinate step sizes have no Langevin limit "
                                  "at one temperature")
            if dyn == "SGD":
                T_kr, speed = sgd_limit(cfg["dynamics"], T if np.isfinite(T) else 0.0, dt)
                euler = speed == 1.0 and T_kr == T     # no momentum, no gradient noise
                if not euler:
                    notes.append(f"Kramers for heavy-ball SGD in its slow-mode limit: "
                                 f"overdamped at T_eff = {T_kr:.4g}, time x {speed:.4g} "
                                 "(`sgd_limit`; O(lr lam / (1 - momentum)) corrections)")
            lm, s, rm = double_well_landmarks(pot)    # (a single well: no barrier, no Kramers)
            start_min = lm if sign > 0 else rm
            xm = np.full(pot.d, lm)
            xm[i] = start_min
            xs = xm.copy()
            xs[i] = s
            kr = kramers_rate(pot, xm, xs, T_kr, friction=friction, mass=mass, speed=speed)
            kr_mfpt = kr.mfpt(b - sign * s)  # offset of the plane y = b past the saddle
        except ConfigError as e:
            notes.append(f"no Kramers prediction: {e}")
            if "single well" in str(e):
                notes.append("without a barrier the waiting times need not be exponential: "
                             "the MFPT exposure / events is their mean only while few "
                             "replicas are censored")
        if euler and wt.x0 is None and start_min is None:
            notes.append("starting positions not recorded, and no minimum to start from: "
                         "no quadrature")
        elif euler:   # Euler-Maruyama: also SGD without momentum, gradient noise or decay
            x0 = wt.x0[:, i] if wt.x0 is not None else np.array([start_min])
            if wt.x0 is None:
                notes.append("starting positions not recorded: quadrature from the minimum")
            U = (lambda y: pot.marginal_energy(sign * y))  # noqa: E731
            shift = monitoring_shift(T, dt)
            x0s = sign * x0
            quad_c = float(np.mean(mfpt_1d(U, T, x0s, b)))
            quad = float(np.mean(mfpt_1d(U, T, x0s, b + shift)))
            notes.append(f"quadrature boundary moved by the per-step monitoring shift "
                         f"0.5826 sqrt(2 T dt) = {shift:.3g}")
        else:
            notes.append("exact quadrature is for the Euler-Maruyama chain (overdamped "
                          "Langevin, SGD without momentum); compare with Kramers")
    elif wt.events == 0:
        notes.append("no replica entered the region: no rate beyond the upper bound")
    return EscapeAnalysis(name=name or str(run.path), temperature=T, dt=dt, dynamics=dyn,
                          waiting=wt, survival=surv, rate=rate, quadrature=quad,
                          quadrature_continuous=quad_c, kramers=kr, kramers_mfpt=kr_mfpt,
                          notes=tuple(notes))


@dataclass(frozen=True, eq=False)
class EscapeSummary(Result):
    """Escape analyses of several runs and, with two or more temperatures, the Arrhenius fit
    of their simulated MFPTs (and of the quadrature's, for comparison); barrier: the
    potential's barrier when all runs share one (DoubleWell), else None."""

    runs: tuple
    arrhenius: ArrheniusFit | None = None
    arrhenius_quadrature: ArrheniusFit | None = None
    barrier: float | None = None

    def verdict(self) -> list[str]:
        out = [r.verdict() for r in self.runs]
        a = self.arrhenius
        if a is not None and any(r.bound for r in self.runs):
            out.append(f"verdict: Arrhenius barrier {a.barrier:.4g} +- {a.barrier_se:.2g} from "
                       "record-based MFPT upper bounds: no test of the barrier")
        elif a is not None and self.barrier is not None:
            z = (a.barrier - self.barrier) / a.barrier_se
            eff = any(r.effective_temperature != r.temperature for r in self.runs)
            out.append(f"verdict: Arrhenius barrier {a.barrier:.4g} +- {a.barrier_se:.2g} "
                       f"{'(against heavy-ball SGD T_eff, sgd_limit) ' if eff else ''}"
                       f"{'AGREES with' if abs(z) <= 3 else 'DISAGREES with'} the potential's "
                       f"{self.barrier:.4g} (z = {z:+.2f}; O(T) prefactor corrections shift it "
                       "slightly)")
        return out

    def table(self) -> str:
        w = max([3] + [len(r.name) for r in self.runs])     # names whole, however long
        head = (f"{'run':<{w}} {'T':>7} {'dU/T':>6} {'n':>6} {'esc':>6} {'rate':>10} "
                f"{'rate CI':>21} {'MFPT':>10} {'+-':>8} {'quad':>10} {'Kramers':>10} {'z':>6}")
        rows = [head]
        for r in self.runs:
            du = r.kramers.barrier / r.effective_temperature if r.kramers else float("nan")
            q = f"{r.quadrature:10.4g}" if r.quadrature is not None else f"{'n/a':>10}"
            k = f"{r.kramers_mfpt:10.4g}" if r.kramers_mfpt is not None else f"{'n/a':>10}"
            z = (f"{'':>6}" if r.z is None else f"{'bound':>6}" if r.bound and r.agrees is None
                 else f"{r.z:+6.2f}")
            ci = f"[{r.rate.lower:.4g}, {r.rate.upper:.4g}]"
            rows.append(f"{r.name:<{w}} {r.temperature:7.4g} {du:6.3g} {r.rate.n:6d} "
                        f"{r.rate.events:6d} {r.rate.rate:10.4g} {ci:>21} {r.rate.mfpt:10.4g} "
                        f"{r.rate.mfpt_se:8.2g} {q} {k} {z}")
        if self.arrhenius is not None:
            rows.append(self.arrhenius.table())
        if self.arrhenius_quadrature is not None:
            a = self.arrhenius_quadrature
            rows.append(f"Arrhenius of the quadrature MFPTs: dU = {a.barrier:.4g}, "
                        f"tau0 = {a.prefactor:.4g}")
        rows += self.verdict()
        return "\n".join(rows)

    def plot(self, axes: Sequence[Axes] | np.ndarray) -> Sequence[Axes] | np.ndarray:
        """axes[0]: survival curves; axes[1]: Arrhenius plot (ln tau vs 1/T)."""
        ax0, ax1 = axes
        for r in self.runs:
            r.survival.plot(ax0, label=f"T = {r.temperature:g} (KM)")
            color = ax0.lines[-1].get_color()
            t = np.linspace(0, float(r.waiting.time.max()), 200)
            if r.quadrature is not None:
                ax0.plot(t, np.exp(-t / r.quadrature), ":", color=color, lw=1)
        ax0.set(xlim=(0, None), ylim=(0, 1.02), title="survival (band: Greenwood 95%; "
                                                       "dotted: exp(-t/tau_quad))")
        ax0.legend(fontsize="small")
        if self.arrhenius is not None:
            self.arrhenius.plot(ax1)
            x = 1.0 / self.arrhenius.temperature
            q = [r.quadrature for r in self.runs]
            if all(v is not None for v in q):
                ax1.plot(x, np.log(q), "k+", ms=10, label="quadrature")
            kk = [r.kramers_mfpt for r in self.runs]
            if all(v is not None for v in kk):
                ax1.plot(x, np.log(kk), "rx", label="Kramers")
            ax1.legend(fontsize="small")
        ax1.set(title="Arrhenius")
        return axes


def escape_summary(runs: Iterable[Run], label: str | None = None,
                   names: Sequence[str | None] | None = None, confidence: float = 0.95,
                   region: HalfSpace | Ball | None = None) -> EscapeSummary:
    """`analyze_run` on each run (Run objects; runs without a first-passage observer use
    `region` on their records), then `summarize_escape`."""
    runs = [check_run(r, "escape_summary") for r in check_run(runs, "escape_summary")]
    names = names or [None] * len(runs)
    return summarize_escape(tuple(
        analyze_run(r, label=label, confidence=confidence, name=n,
                    region=region if r.first_passage is None else None)
        for r, n in zip(runs, names)))


def summarize_escape(analyses: Iterable[EscapeAnalysis]) -> EscapeSummary:
    """EscapeSummary of `EscapeAnalysis` results: the Arrhenius fit of the simulated MFPTs
    across temperatures (when there are >= 2 distinct ones, all with events), and of the
    quadrature MFPTs when every run has one.  The temperatures are the runs'
    `effective_temperature`s: heavy-ball SGD at T escapes as Langevin at T (1 - momentum),
    so against its nominal T the slope would read barrier / (1 - momentum)."""
    res = tuple(analyses)
    arr = arr_q = None
    Ts = np.array([r.effective_temperature for r in res])
    if len(set(Ts.tolist())) >= 2 and all(r.rate.events > 0 for r in res):
        arr = arrhenius_fit(Ts, [r.rate.mfpt for r in res], [r.rate.mfpt_se for r in res])
        if all(r.quadrature is not None for r in res):
            arr_q = arrhenius_fit(Ts, [r.quadrature for r in res],
                                  [r.quadrature * 1e-6 for r in res], scale=False)
    bars = {round(r.kramers.barrier, 12) for r in res if r.kramers is not None}
    barrier = bars.pop() if len(bars) == 1 and all(r.kramers for r in res) else None
    return EscapeSummary(runs=res, arrhenius=arr, arrhenius_quadrature=arr_q, barrier=barrier)
