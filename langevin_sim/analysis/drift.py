"""Drift along a manifold of minima: velocity, diffusion, density and time to a target.

A manifold coordinate s (n_records, M) -- the arclength `s` of a `Valley`, any recorded
observable (ScaleSymmetric's `log_ratio`, a toy net's `test_accuracy`), or a function of
the positions -- is followed over the run's time axis t (n_records,) (`Run.time`: the sum of
the step sizes, in the dynamics' time units).  Replicas are independent, so every error bar
comes from the spread between replicas.

Drift and diffusion (`fit_drift`).  For s(t) = s(0) + v t + sqrt(2 D) W(t) the mean
displacement is <Delta s> = v t and its variance Var(Delta s) = 2 D t.  Near walls or
ends of the manifold v and D change, so increments may be counted only while the replica is
inside a `region` [lo, hi] at the start of each record interval (an indicator known at that
time).  Per replica r, X_r = sum_j a_rj (s_r,j+1 - s_rj) and T_r = sum_j a_rj (t_j+1 - t_j)
with a_rj = 1{s_rj in region}; optional stopping gives E[X - v T] = 0 and
E[(X - v T)^2] = 2 D E[T] exactly for that process, hence the ratio estimators

    v = sum_r X_r / sum_r T_r,      D = M/(M-1) sum_r (X_r - v T_r)^2 / (2 sum_r T_r),

with standard errors of ratio estimators over the M independent replicas.  Without a
region, X_r is the displacement over the window and T_r its duration: v is the endpoint
(maximum-likelihood) estimate of <Delta s> = v t and D is Var(Delta s) / 2t.

Valley prediction (`valley_velocity`): for k(s) = k0 e^(alpha s) the entropic force
-dU/ds = -(alpha/2) sum_i k w_i y_i^2 averages, by equipartition, to v0 = -alpha (d-1) T/2
(Valley's docstring), with D = T.  To first order the transverse variances carry the
Euler-Maruyama factor 1 + eta k w_i / 2 and lag behind k(s(t)) by alpha v0 / (2 k w_i) in
transit; replicas in the stationary phase start each record interval at equilibrium and lag
only along it, so their increments between records carry a lag growing from 0 (alpha v0 dt/2
over a short interval dt) to that level (`valley_velocity(..., record_dt=dt)`).  The force's
fluctuations and its response to each step along the valley (the transverse variances
relax at 2 k w_i) make D = T (1 - sum_i eps_i) over long windows to first order in
eps_i = alpha^2 T / (4 k w_i) (`valley_diffusion`, for windows counted without a region).

Time to a target (`time_to_target`): the first record time at which s enters a target
interval, right-censored at the last finite record (Kaplan-Meier survival, Greenwood
errors).  Density over time (`density_evolution`): histograms of s at chosen records
against a stationary law exp(log_density(s)), both conditioned on the histogram range.
Imports neither numba nor cupy.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import integrate, linalg, stats

from ..errors import ConfigError, LangevinSimWarning
from ..io.reader import Run, check_run, check_trajectories
from .escape import kaplan_meier
from .stationary import constant_temperature
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..potentials.manifolds import Valley

TRACES = ("sharpness", "hessian_trace", "curvature", "weight_norm", "test_accuracy")


def _as_series(times, s) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=np.float64).ravel()
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != t.size:
        raise ConfigError(f"need times (n,) and a coordinate (n, M) with the same n records, got "
                          f"times {t.shape} and coordinate {s.shape}")
    if t.size < 2 or not np.all(np.diff(t) > 0):
        raise ConfigError("times must hold >= 2 strictly increasing record times; a scheduled "
                          "run with zero step sizes has no time axis")
    return t, s


def _ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """R = sum a / sum b over replicas and its standard error (delta method, M/(M-1))."""
    m = a.size
    r = a.sum() / b.sum()
    return float(r), float(math.sqrt(m / (m - 1) * np.sum((a - r * b) ** 2)) / b.sum())


# ----------------------------------------------------------------------------- drift

@dataclass(frozen=True)
class DriftFit(Result):
    """Drift velocity v and diffusion coefficient D of a coordinate, with standard errors.

    v in coordinate units per time unit, D in coordinate units^2 per time unit.  Curves
    (n,) at the window's records: `elapsed` <T(t)> (counted time per replica), `mean`
    <X(t)> (counted displacement) and `msd` <(X - v T)^2>; for a drifted Brownian motion
    mean = v elapsed and msd = 2 D elapsed.  `predictions`: rows (label, v, D) to compare;
    `coordinate`: the coordinate's name in the table.
    """

    v: float
    v_se: float
    D: float
    D_se: float
    replicas: int
    exposure: float
    window: tuple[float, float]
    region: tuple[float, float] | None
    elapsed: np.ndarray
    mean: np.ndarray
    msd: np.ndarray
    predictions: tuple[tuple[str, float, float], ...] = ()
    coordinate: str = "s"

    def z(self, v: float, D: float | None = None) -> tuple[float, float]:
        """z-scores (v_hat - v) / se and (D_hat - D) / se (nan when D is None)."""
        zd = float("nan") if D is None else (self.D - D) / self.D_se
        return (self.v - v) / self.v_se, zd

    def table(self) -> str:
        c = self.coordinate
        reg = (f"all of {c}" if self.region is None
               else f"{c} in [{self.region[0]:.3g}, {self.region[1]:.3g}]")
        rows = [f"drift over t in [{self.window[0]:.4g}, {self.window[1]:.4g}], increments counted "
                f"for {reg}: {self.replicas} replicas, {self.exposure:.4g} replica-time units",
                f"  v = {self.v:.5g} +- {self.v_se:.2g}    D = {self.D:.5g} +- {self.D_se:.2g}"]
        for label, v, D in self.predictions:
            zv, zd = self.z(v, D)
            rows.append(f"  prediction {label}: v = {v:.5g} (z = {zv:+.2f}), D = {D:.5g} (z = {zd:+.2f})")
        return "\n".join(rows)

    def plot(self, ax: Axes) -> None:
        """Mean displacement and MSD against counted time, with the lines v t and 2 D t."""
        ax.plot(self.elapsed, self.mean, "o", ms=3, label=r"$\langle\Delta s\rangle$")
        ax.plot(self.elapsed, self.msd, "s", ms=3, label=r"$\langle(\Delta s - vt)^2\rangle$")
        t = np.array([0.0, self.elapsed.max()])
        ax.plot(t, self.v * t, "k-", lw=1, label=f"v t, v = {self.v:.3g}")
        ax.plot(t, 2 * self.D * t, "k--", lw=1, label=f"2 D t, D = {self.D:.3g}")
        ax.set(xlabel="time counted per replica", ylabel="displacement")
        ax.legend(fontsize=7)


def fit_drift(times: ArrayLike, s: ArrayLike, t_min: float | None = None,
              t_max: float | None = None, region: tuple[float, float] | None = None,
              predictions: tuple[tuple[str, float, float], ...] = ()) -> DriftFit:
    """v and D of coordinate `s` (n, M) at record `times` (n,) over records in [t_min, t_max].

    Increments whose starting value lies outside `region` (or either end is non-finite: a
    diverged replica) are not counted; see the module docstring for the estimators.
    """
    t, s = _as_series(times, s)
    if region is not None and not region[0] <= region[1]:
        raise ConfigError(f"region must be (lo, hi) with lo <= hi, got {tuple(region)}")
    lo_t = t[0] if t_min is None else t_min
    hi_t = t[-1] if t_max is None else t_max
    w = (t >= lo_t) & (t <= hi_t)
    if w.sum() < 2:
        raise ConfigError(f"the window [{lo_t}, {hi_t}] holds {w.sum()} records; it needs >= 2 "
                          f"(records span [{t[0]:.4g}, {t[-1]:.4g}])")
    t, s = t[w], s[w]
    ds, dt = np.diff(s, axis=0), np.diff(t)[:, None]
    a = np.isfinite(ds)
    if region is not None:
        a &= (s[:-1] >= region[0]) & (s[:-1] <= region[1])
    X = np.vstack([np.zeros(s.shape[1]), np.cumsum(np.where(a, ds, 0.0), axis=0)])
    T = np.vstack([np.zeros(s.shape[1]), np.cumsum(a * dt, axis=0)])
    keep = T[-1] > 0
    m = int(keep.sum())
    if m < 2:
        raise ConfigError(f"only {m} replicas have increments counted in the window and region "
                          f"{region}; widen them")
    X, T = X[:, keep], T[:, keep]
    v, v_se = _ratio(X[-1], T[-1])
    e2 = (X - v * T) ** 2 * m / (m - 1)
    D, D_se = _ratio(e2[-1] / 2, T[-1])
    return DriftFit(v, v_se, D, D_se, m, float(T[-1].sum()), (float(t[0]), float(t[-1])),
                    None if region is None else (float(region[0]), float(region[1])),
                    T.mean(axis=1), X.mean(axis=1), e2.mean(axis=1), tuple(predictions))


def valley_velocity(potential: Valley, temperature: float, step: float = 0.0,
                    s: ArrayLike | None = None, record_dt: float | None = None) -> float:
    """Drift velocity of s on a line Valley with profile "exp" at temperature T.

    Without `s`: v0 = -alpha (d-1) T / 2 (time units of the dynamics).  With the positions
    `s` (any shape) at which increments were counted: v0 times the mean over s of
    mean_i (1 + step k(s) w_i / 2 + alpha v0 / (2 k(s) w_i)), the first-order Euler-Maruyama
    (step) and adiabatic-lag corrections of the transverse variances T / (k w_i): the speed
    of replicas in transit, whose variances lag at that steady level.

    record_dt: the mean increment per unit time over records record_dt apart for replicas
    that start each interval at equilibrium (the stationary phase, away from the walls):
    their variances start at T / (k w_i) and fall behind as they move, so the lag term is
    weighted by g(2 k w_i dt), g(x) = 1 - (1 - e^-x) / x: alpha v0 dt / 2 for short
    intervals (exact to first order in dt: at equilibrium the generator takes the force
    f = -dU/ds to E[Lf | s] = alpha v0^2), the transit's lag for long ones.
    """
    _check_exp_line(potential)
    v0 = -potential.alpha * (potential.d - 1) * float(temperature) / 2
    if s is None:
        return v0
    return float(v0 * np.mean(_first_order_factor(potential, v0, step, s, record_dt)))


def valley_diffusion(potential: Valley, temperature: float, times: ArrayLike,
                     s: ArrayLike) -> float:
    """First-order D that `fit_drift` without a region estimates from records `times` (n,)
    of the arclengths s (n, M) on a line "exp" Valley at temperature T (< T: the transverse
    variances hold s back).

    In z_i = sqrt(k(s) w_i) y_i (equilibrium N(0, T)) the force along the valley is
    -(alpha/2) sum_i z_i^2: it fluctuates with autocovariance (alpha^2 T^2 / 2) sum_i
    e^(-2 k w_i |t|), and answers a displacement ds by -(alpha^2 T / 2) sum_i
    e^(-2 k w_i t) ds (a step along the valley rescales every z_i^2 by e^(alpha ds), which
    relaxes at 2 k w_i).  To first order in eps_i = alpha^2 T / (4 k w_i) a replica's
    counted displacement then has variance 2 T t - alpha^2 T^2 sum_i I_i, where
    I_i = double integral over counted times u < t' of e^(-2 k w_i (t' - u)) (k piecewise
    constant at each record's s): T (1 - sum_i eps_i g(2 k w_i t)) over one window of length t
    at fixed k, g(x) = 1 - (1 - e^-x) / x, so T (1 - sum_i eps_i) over long windows (the
    fluctuating force adds eps T, the response takes 2 eps T); the next order adds
    ~T eps^2.  The transverse coordinates are taken at equilibrium given s (a window
    opening on replicas started on the axis is not: they need ~1 / (2 k w_i) first).
    Increments with a non-finite end are not counted, as in `fit_drift`.  No
    prediction for a `region`: counting increments by position selects them (a region
    narrow against the diffusion over 1 / (2 k w) reads D close to T)."""
    _check_exp_line(potential)
    t, s = _as_series(times, s)
    T = float(temperature)
    ds, dt = np.diff(s, axis=0), np.diff(t)[:, None]
    a = np.isfinite(ds)
    k = potential.curvature(np.where(a, s[:-1], 0.0).ravel()).reshape(ds.shape)
    I = 0.0
    for w in potential.weights:
        x = 2 * k * w * dt                                        # (n - 1, M)
        b = -np.expm1(-x) / (2 * k * w)                           # int_interval e^-2kw(end - u)
        inner = np.where(a, (dt - b) / (2 * k * w), 0.0)          # both times in one interval
        b = np.where(a, b, 0.0)
        H = np.zeros(s.shape[1])                                  # earlier intervals, decayed
        for j in range(ds.shape[0]):
            I += float(np.sum(inner[j] + b[j] * H))
            H = H * np.exp(-x[j]) + b[j]
    counted = float(np.sum(a * dt))
    if not counted > 0:
        raise ConfigError("no finite increment between the records: nothing to predict")
    return T - potential.alpha ** 2 * T * T * I / (2 * counted)


def _check_exp_line(potential: Valley) -> None:
    if type(potential).__name__ != "Valley" or potential.profile != "exp" or potential.curve != "line":
        raise ConfigError("a constant drift velocity is predicted for a line Valley with profile "
                          f"'exp' only, got {type(potential).__name__} "
                          f"{getattr(potential, 'params', dict)()}; pass your own predictions")


def _first_order_factor(potential: Valley, v0: float, step: float, s: ArrayLike,
                        record_dt: float | None = None) -> np.ndarray:
    """(n,) at arclengths s (n,): mean_i (1 + step k w_i / 2 + lag_i), `valley_velocity`'s
    first-order factor of v0 (record_dt: the lag grown along a record interval)."""
    kw = potential.curvature(np.asarray(s, np.float64).ravel())[:, None] * potential.weights
    lag = potential.alpha * v0 / (2 * kw)
    if record_dt is not None:
        if not record_dt > 0:
            raise ConfigError(f"record_dt must be > 0 (time between records), got {record_dt}")
        x = 2 * kw * float(record_dt)
        lag = lag * (1 + np.expm1(-x) / x)
    return np.mean(1 + step * kw / 2 + lag, axis=1)


def _passage_ends(potential: Valley, temperature: float, target: float, record_dt: float,
                  start: float | None, where: str) -> tuple[float, float, float, float]:
    """(T, x0, hi, x_lo) of a first passage on a walled line "exp" Valley: the start (default
    the lower wall), the target with Siegmund's shift 0.5826 sqrt(2 T record_dt) (crossings
    seen only at records record_dt apart) and the lower end of the line, 10 thermal widths
    sqrt(T / wall) behind the lower wall (or the start, if below it).  ConfigError otherwise."""
    _check_exp_line(potential)
    T = float(temperature)
    if potential.bounds is None or not potential.wall > 0 or not T > 0:
        raise ConfigError(f"{where} needs walls (bounds, wall > 0) and T > 0")
    if not record_dt >= 0:
        raise ConfigError(f"{where}: record_dt must be >= 0, got {record_dt}")
    s_lo = potential.bounds[0]
    x0 = s_lo if start is None else float(start)
    hi = float(target) + (0.5826 * math.sqrt(2 * T * record_dt) if record_dt > 0 else 0.0)
    if not x0 < hi <= potential.bounds[1]:
        raise ConfigError(f"{where}: need start {x0:g} < target {hi:g} <= the upper wall "
                          f"{potential.bounds[1]:g}")
    return T, x0, hi, min(x0, s_lo) - 10 * math.sqrt(T / potential.wall)


def _passage_drift(potential: Valley, T: float, step: float, first_order: bool,
                   x: np.ndarray) -> np.ndarray:
    """(n,) drift b(x) of s at x (n,): v0 = -alpha (d-1) T / 2, times `valley_velocity`'s
    first-order factor at x unless not `first_order`, plus the lower wall's force
    wall (s_lo - x) behind it (the upper wall lies beyond any target)."""
    v0 = valley_velocity(potential, T)
    v = v0 * (_first_order_factor(potential, v0, step, x) if first_order else np.ones_like(x))
    return v + potential.wall * np.maximum(potential.bounds[0] - x, 0.0)


def _settle_time(potential: Valley, x0: float) -> float:
    """mean_i 1 / (2 k(x0) w_i): the delay of a start on the axis (transverse variances 0)."""
    return float(np.mean(1 / (2 * potential.curvature(np.array([x0]))[0] * potential.weights)))


def valley_passage_time(potential: Valley, temperature: float, target: float, step: float = 0.0,
                        record_dt: float = 0.0, start: float | None = None,
                        first_order: bool = True, n: int = 20001,
                        from_axis: bool = False) -> float:
    """Mean first-passage time of s from `start` (default: the lower wall) up to `target` on a
    walled line Valley with profile "exp", for ds = v(s) dt + sqrt(2T) dW (time units).

    v(s): v0 = -alpha(d-1)T/2, times `valley_velocity`'s first-order factor at s (EM and the
    transit's steady lag) unless `first_order` is False, plus the lower wall's force: the wall
    is soft, and the time spent behind it counts (about sqrt(pi T / (2 wall)) / v0 more than a
    reflecting wall; 0.17 at T = 0.5 in scenarios/valley_drift.py).  record_dt > 0: crossings
    seen only at records, target shifted by Siegmund's 0.5826 sqrt(2 T record_dt).  Quadrature
    of E[tau] = int_start^target dx int_lo^x exp(Phi(y) - Phi(x)) dy / T, Phi' = v / T, on n
    points.  Transverse coordinates at equilibrium at the start; `from_axis`: started on the
    axis instead, mean_i 1 / (2 k(start) w_i) later (`valley_passage_law`'s docstring).
    """
    T, x0, hi, x_lo = _passage_ends(potential, temperature, target, record_dt, start,
                                    "valley_passage_time")
    x = np.linspace(x_lo, hi, n)
    v = _passage_drift(potential, T, step, first_order, x)
    phi = integrate.cumulative_trapezoid(v, x, initial=0.0) / T
    e = np.exp(phi - phi.max())
    inner = integrate.cumulative_trapezoid(e, x, initial=0.0) / (T * e)
    keep = x >= x0
    settle = _settle_time(potential, x0) if from_axis else 0.0
    return float(integrate.trapezoid(inner[keep], x[keep])) + settle


@dataclass(frozen=True)
class PassageLaw(Result):
    """Survival law S(t) = P(tau > t) of a first passage, as a sum of decaying exponentials.

    S(t) = 1 for t < `delay`, then sum_j weights_j exp(rates_j (t - delay)); `rates` (n,) < 0
    and `weights` (n,) (summing to 1) are the spectrum of the lattice chain
    (`valley_passage_law`); `h` its spacing, `x` (n,) its live states, `drift` (n,) b(x).
    """

    rates: np.ndarray
    weights: np.ndarray
    delay: float
    start: float
    target: float
    h: float
    x: np.ndarray
    drift: np.ndarray

    def survival(self, t: ArrayLike) -> np.ndarray:
        """S(t) at times t (any shape; the shape of t)."""
        t = np.asarray(t, np.float64)
        u = np.maximum(t - self.delay, 0.0)
        S = (np.exp(u[..., None] * self.rates) @ self.weights).clip(0.0, 1.0)
        return np.where(u > 0, S, 1.0)

    def restricted_mean(self, t_end: float) -> float:
        """E[min(tau, t_end)] = int_0^t_end S(t) dt (a passage not made by t_end counts there)."""
        u = float(t_end) - self.delay
        if u <= 0:
            return float(t_end)
        return self.delay + float(self.weights @ (np.expm1(self.rates * u) / self.rates))

    @property
    def mean(self) -> float:
        """E[tau] = delay + sum_j weights_j / (-rates_j)."""
        return self.delay + float(self.weights @ (-1 / self.rates))

    def table(self) -> str:
        q = [self.quantile(p) for p in (0.1, 0.5, 0.9)]
        return (f"first passage {self.start:.4g} -> {self.target:.4g} (lattice h = {self.h:.3g}, "
                f"{self.x.size} states): mean {self.mean:.4g}, delay {self.delay:.3g}; "
                f"10/50/90 %: {q[0]:.4g} / {q[1]:.4g} / {q[2]:.4g}")

    def quantile(self, q: float) -> float:
        """Time by which a fraction q has passed (bisection on the monotone S)."""
        lo, hi = self.delay, self.delay + 1.0
        while 1 - float(self.survival(hi)) < q:
            lo, hi = hi, self.delay + 2 * (hi - self.delay)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if 1 - float(self.survival(mid)) < q else (lo, mid)
        return 0.5 * (lo + hi)

    def plot(self, ax: Axes) -> None:
        """Fraction passed 1 - S(t) out to its 99.9 % quantile."""
        t = np.linspace(0.0, self.quantile(0.999), 400)
        ax.plot(t, 1 - self.survival(t), "--", label="first-passage law")
        ax.set(xlabel="time", ylabel="fraction reached", ylim=(0, 1))


def valley_passage_law(potential: Valley, temperature: float, target: float, step: float = 0.0,
                       record_dt: float = 0.0, start: float | None = None,
                       first_order: bool = True, from_axis: bool = False,
                       h: float | None = None) -> PassageLaw:
    """The whole first-passage law of `valley_passage_time`'s process (time units): s from
    `start` (default the lower wall) up to `target` (+ Siegmund's shift for `record_dt`) for
    ds = b(s) dt + sqrt(2T) dW, b = v(s) (first-order or v0) plus the soft lower wall's force.

    Lattice: a birth-death chain on a uniform grid of spacing h (the start a node, the shifted
    target the absorbing node, reflecting 10 thermal widths behind the wall) with rates
    T/h^2 +- b(x)/(2h) (central differences: mean and survival O(h^2) exact); default h:
    (target - start)/1000, cut to T / max|b| so that every rate stays >= T/(2h^2) > 0 (the
    wall's force, wall * 10 sqrt(T / wall), sets it: 1133 states at T = 0.25 for
    scenarios/valley_drift.py).  The generator is similar (diagonal scaling) to a symmetric
    tridiagonal matrix, diagonalized by scipy.linalg.eigh_tridiagonal; ConfigError if more
    than 6000 states would be needed (a wall too stiff for this grid: use a reflecting law).

    from_axis: the replicas start on the axis (transverse variances 0, as in
    scenarios/valley_drift.py), not at transverse equilibrium.  The entropic force along s is
    the transverse variances' deficit relaxing at rates 2 k w_i, so the drift loses
    v0 mean_i 1/(2 k w_i) of displacement within a few 1/(2k) (0.025 at k = 20): the law is
    shifted in time by mean_i 1/(2 k(start) w_i) (`PassageLaw.delay`).  An argument rather than
    an offset the caller adds, because the shift belongs to the start (k and the weights at it),
    and a shift rather than a second coordinate, because it is short against the transit and
    the record interval, so the shape it leaves in S(t) cannot be resolved.
    """
    T, x0, hi, x_lo = _passage_ends(potential, temperature, target, record_dt, start,
                                    "valley_passage_law")
    n_up = 1000
    if h is not None:
        if not h > 0:
            raise ConfigError(f"valley_passage_law: h must be > 0, got {h}")
        n_up = max(1, math.ceil((hi - x0) / h))
    x_probe = np.linspace(x_lo, hi, 4001)
    b_max = float(np.max(np.abs(_passage_drift(potential, T, step, first_order, x_probe))))
    n_up = max(n_up, math.ceil((hi - x0) * b_max / T))           # h <= T / max|b|
    h_ = (hi - x0) / n_up
    n_down = math.ceil((x0 - x_lo) / h_)
    if n_up + n_down > 6000:
        raise ConfigError(f"valley_passage_law: {n_up + n_down} lattice states needed for rates "
                          f">= 0 (wall {potential.wall:g}, T {T:g}, h {h_:.3g}); at most 6000")
    x = x0 + h_ * np.arange(-n_down, n_up)                          # live states; hi absorbs
    b = _passage_drift(potential, T, step, first_order, x)
    up, down = T / h_ ** 2 + b / (2 * h_), T / h_ ** 2 - b / (2 * h_)
    down[0] = 0.0                                                  # reflecting at x_lo
    # Q = S A S^-1 with S = diag(sigma), sigma_i+1 / sigma_i = sqrt(down_i+1 / up_i): A symmetric
    off = np.sqrt(up[:-1] * down[1:])
    lam, U = linalg.eigh_tridiagonal(-(up + down), off)
    log_sigma = np.concatenate([[0.0], np.cumsum(0.5 * np.log(down[1:] / up[:-1]))])
    i0 = n_down
    # S(t) = e_i0^T e^(Qt) 1 = sum_k e^(lam_k t) U[i0, k] sum_j U[j, k] sigma_i0 / sigma_j
    w = U[i0] * (np.exp(log_sigma[i0] - log_sigma) @ U)
    delay = _settle_time(potential, x0) if from_axis else 0.0
    return PassageLaw(lam, w, delay, x0, hi, h_, x, b)


# ----------------------------------------------------------------------------- first passage

@dataclass(frozen=True)
class TimeToTarget(Result):
    """Time at which each replica first enters `target`, right-censored when it never does.

    durations (M',): the first record time in the target, or the censoring time (last finite
    record) where `observed` is False, for the M' replicas with a finite record (one NaN
    throughout, as `manifold_coordinate` makes a diverged replica, is left out).  Kaplan-Meier curve `event_times` (k,), `survival`
    (k,) = P(not yet reached) just after each, `survival_var` (k,) (Greenwood).
    """

    target: tuple[float, float]
    durations: np.ndarray
    observed: np.ndarray
    event_times: np.ndarray
    survival: np.ndarray
    survival_var: np.ndarray

    def survival_at(self, t: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """S(t) and its standard error at times t (array), from the Kaplan-Meier step curve."""
        t = np.asarray(t, np.float64)
        S, var = np.append(1.0, self.survival), np.append(0.0, self.survival_var)
        i = np.searchsorted(self.event_times, t, side="right")      # 0: before any event
        return S[i], np.sqrt(var[i])

    @property
    def fraction_reached(self) -> float:
        """1 - S at the last event time (the empirical fraction without early censoring)."""
        return float(1 - self.survival[-1]) if self.survival.size else 0.0

    def quantile(self, q: float) -> float:
        """Smallest time by which a fraction q has reached the target (nan if never)."""
        hit = np.flatnonzero(1 - self.survival >= q - 1e-12)
        return float(self.event_times[hit[0]]) if hit.size else float("nan")

    def table(self) -> str:
        lo, hi = self.target
        reached = int(self.observed.sum())
        _, se = self.survival_at(self.event_times[-1:])
        qs = "  ".join(f"t{int(100 * q)} = {self.quantile(q):.4g}" for q in (0.25, 0.5, 0.75))
        return (f"first passage into [{lo:.4g}, {hi:.4g}]: {reached} of {self.durations.size} "
                f"replicas reached it; Kaplan-Meier fraction {self.fraction_reached:.3f} +- "
                f"{float(se.sum()):.3f}\n  {qs}  (nan: not reached by that fraction)")

    def plot(self, ax: Axes) -> None:
        """Kaplan-Meier fraction reached 1 - S(t) as a step curve, out to the last time
        observed (flat at 0 when no replica reached the target: it drew one point)."""
        end = float(np.max(self.durations)) if self.durations.size else 0.0
        F = np.concatenate([[0.0], 1 - self.survival])
        t = np.concatenate([[0.0], self.event_times])
        if end > t[-1]:
            t, F = np.append(t, end), np.append(F, F[-1])
        ax.step(t, F, where="post", label="reached (Kaplan-Meier)")
        ax.set(xlabel="time", ylabel="fraction reached", ylim=(0, 1))


def check_target(target: Iterable[float], where: str) -> tuple[float, float]:
    """`target` as floats (lo, hi), or ConfigError naming `where` unless it is a pair lo <= hi."""
    try:
        lo, hi = (float(b) for b in target)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: target must be an interval (lo, hi), e.g. (3.0, np.inf), "
                          f"got {target!r}") from None
    if not lo <= hi:
        raise ConfigError(f"target must be (lo, hi) with lo <= hi, got ({lo:g}, {hi:g})")
    return lo, hi


def time_to_target(times: ArrayLike, s: ArrayLike, target: tuple[float, float]) -> TimeToTarget:
    """First record time at which s (n, M) lies in the closed interval `target` = (lo, hi)
    (use +-inf for a one-sided target); censored at each replica's last finite record.
    Replicas with no finite record are left out (they counted as a time of 0 in a mean)."""
    lo, hi = check_target(target, "time_to_target")
    t, s = _as_series(times, s)
    s = s[:, np.isfinite(s).any(axis=0)]
    inside = (s >= lo) & (s <= hi)
    hit = inside.any(axis=0)
    finite = np.isfinite(s)
    last = np.where(finite.any(axis=0), s.shape[0] - 1 - np.argmax(finite[::-1], axis=0), 0)
    dur = np.where(hit, t[np.argmax(inside, axis=0)], t[last])
    km = kaplan_meier(dur, hit)
    return TimeToTarget((lo, hi), dur, hit, km.time, km.survival, km.se ** 2)


# ----------------------------------------------------------------------------- density

@dataclass(frozen=True)
class DensityEvolution(Result):
    """Histograms of s at selected records against the stationary law, on [edges[0], edges[-1]].

    times (k,); density (k, B) per unit s and `expected` (B,) bin-averaged predicted density,
    both normalized on the range; counts (k,) samples in range; tv (k,) total-variation
    distance between binned laws; chi2, dof, p (k,) Pearson test of the counts, bins merged
    to >= 5 expected (samples at one record are independent replicas).
    """

    times: np.ndarray
    edges: np.ndarray
    density: np.ndarray
    expected: np.ndarray
    counts: np.ndarray
    tv: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    p: np.ndarray

    def table(self) -> str:
        rows = [f"density of s on [{self.edges[0]:.4g}, {self.edges[-1]:.4g}] "
                f"({self.edges.size - 1} bins) against the stationary law",
                f"{'time':>10} {'n':>7} {'TV':>7} {'chi2/dof':>12} {'p':>9}"]
        for t, n, tv, c, k, p in zip(self.times, self.counts, self.tv, self.chi2, self.dof, self.p):
            rows.append(f"{t:10.4g} {int(n):7d} {tv:7.3f} {c:7.1f}/{int(k):<4d} {p:9.3g}")
        return "\n".join(rows)

    def plot(self, ax: Axes) -> None:
        """Each selected record's histogram (colour = time) and the stationary density (log
        axis: an exponential law is a line)."""
        mid = 0.5 * (self.edges[1:] + self.edges[:-1])
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        for j, t in enumerate(self.times):
            ax.step(mid, self.density[j], where="mid", color=cmap(j / max(1, len(self.times) - 1)),
                    lw=1, label=f"t = {t:.3g}")
        ax.plot(mid, self.expected, "k--", lw=1.5, label="stationary")
        top = max(self.density.max(), self.expected.max())
        ax.set(xlabel="s", ylabel="density", yscale="log",
               ylim=(max(self.expected[self.expected > 0].min() / 10, top * 1e-4), 2 * top))
        ax.legend(fontsize=7)


def density_evolution(times: ArrayLike, s: ArrayLike,
                      log_density: Callable[[np.ndarray], np.ndarray],
                      records: ArrayLike | None = None, bins: int = 30, lo: float | None = None,
                      hi: float | None = None) -> DensityEvolution:
    """Histograms of s (n, M) at `records` (indices; default 6 spread over the run) against
    exp(log_density(s)) (unnormalized, e.g. `lambda s: valley.log_density(s, T)`), both
    conditioned on [lo, hi] (default: the range of all finite samples)."""
    t, s = _as_series(times, s)
    idx = np.unique(np.linspace(0, t.size - 1, 6).round().astype(int)) if records is None \
        else np.atleast_1d(np.asarray(records, int))
    if np.any((idx < -t.size) | (idx >= t.size)):
        raise ConfigError(f"records {idx.tolist()} reach outside the {t.size} records (0..{t.size - 1}, "
                          f"or -{t.size}..-1 from the end)")
    idx = idx % t.size
    fin = s[np.isfinite(s)]
    lo = float(fin.min()) if lo is None else float(lo)
    hi = float(fin.max()) if hi is None else float(hi)
    edges = np.linspace(lo, hi, bins + 1)
    grid = np.linspace(lo, hi, 200 * bins + 1)
    logp = log_density(grid)
    f = np.exp(logp - logp.max())
    cum = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(grid))])
    prob = np.diff(cum[::200]) / cum[-1]
    width = np.diff(edges)
    dens, counts, tv, chi2, dof = [], [], [], [], []
    for j in idx:
        c = np.histogram(s[j][np.isfinite(s[j])], edges)[0]
        n = c.sum()
        dens.append(c / max(n, 1) / width)
        counts.append(n)
        tv.append(0.5 * np.abs(c / max(n, 1) - prob).sum())
        x2, k = _pearson(c, prob * n)
        chi2.append(x2)
        dof.append(k)
    return DensityEvolution(t[idx], edges, np.array(dens), prob / width, np.array(counts),
                            np.array(tv), np.array(chi2), np.array(dof),
                            stats.chi2.sf(chi2, np.maximum(dof, 1)))


def _pearson(counts: np.ndarray, expected: np.ndarray, min_expected: float = 5.0) -> tuple[float, int]:
    """Pearson chi2 and its degrees of freedom after merging adjacent bins (left to right,
    the remainder into the last) until each expects >= min_expected counts."""
    c_m, e_m = [], []
    acc_c = acc_e = 0.0
    for c, e in zip(counts, expected):
        acc_c, acc_e = acc_c + c, acc_e + e
        if acc_e >= min_expected:
            c_m.append(acc_c)
            e_m.append(acc_e)
            acc_c = acc_e = 0.0
    if not c_m:
        return float("nan"), 0
    c_m[-1] += acc_c
    e_m[-1] += acc_e
    c_m, e_m = np.array(c_m), np.array(e_m)
    return float(np.sum((c_m - e_m) ** 2 / e_m)), len(c_m) - 1


# ----------------------------------------------------------------------------- traces

@dataclass(frozen=True)
class Trace(Result):
    """Replica statistics of an observable over time (records where it was measured).

    times, mean, se, median, q10, q90: (n,); se from the spread of the finite replicas.
    """

    name: str
    times: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    median: np.ndarray
    q10: np.ndarray
    q90: np.ndarray

    def table(self, rows: int = 8) -> str:
        out = [f"{self.name} over time (mean +- se, median [10%, 90%] over replicas)"]
        for j in np.unique(np.linspace(0, self.times.size - 1, rows).round().astype(int)):
            out.append(f"  t = {self.times[j]:9.4g}: {self.mean[j]:.5g} +- {self.se[j]:.2g}, "
                       f"{self.median[j]:.5g} [{self.q10[j]:.4g}, {self.q90[j]:.4g}]")
        return "\n".join(out)

    def plot(self, ax: Axes) -> None:
        ax.fill_between(self.times, self.q10, self.q90, alpha=0.3)
        ax.plot(self.times, self.median, "-", label=f"{self.name} (median, 10-90%)")
        ax.set(xlabel="time", ylabel=self.name)


def trace(times: ArrayLike, values: ArrayLike, name: str = "observable") -> Trace:
    """`Trace` of values (n, M); records where no replica is finite (e.g. a sharpness
    observer's unmeasured records, NaN) are left out."""
    t, v = _as_series(times, values)
    keep = np.isfinite(v).any(axis=1)
    if not keep.any():
        raise ConfigError(f"{name}: no record has a finite value (every replica NaN or inf)")
    t, v = t[keep], v[keep]
    n = np.isfinite(v).sum(axis=1)
    q = np.nanquantile(v, [0.1, 0.5, 0.9], axis=1)
    se = np.nanstd(v, axis=1, ddof=1) / np.sqrt(n) if v.shape[1] > 1 else np.full(t.size, np.nan)
    return Trace(name, t, np.nanmean(v, axis=1), se, q[1], q[0], q[2])


# ----------------------------------------------------------------------------- runs

def has_default_coordinate(run: Run) -> bool:
    """Whether `manifold_coordinate(run)` finds a coordinate without being told one: a
    recorded `s`, or a Valley run with recorded positions."""
    return "s" in run.names or ("positions" in run.names
                                and type(run.potential).__name__ == "Valley")


def manifold_coordinate(run: Run, coordinate: str | Callable | None = None) -> np.ndarray:
    """The coordinate (n_records, M) of a run, NaN at every record of a replica that diverged
    (a warning counts them): the records before its divergence may hold the blow-up itself
    (a double well at too large a step: s = 3.5e4 a record before, D 18538 instead of 0.13).

    None: the recorded observable `s` (Valley), else computed from recorded positions with
    `run.potential.observables(x)["s"]`; a str: that recorded observable (1-D per replica;
    a multi-component one such as `log_ratio` (n, M, k-1) gives its first component); a
    callable: f(positions (M, d)) -> (M,) applied to each record's positions.
    """
    run = check_run(run, "manifold_coordinate")
    names = run.names
    if callable(coordinate):
        if "positions" not in names:
            raise ConfigError("a coordinate function needs recorded positions; rerun with "
                              "record_positions true (--set record_positions=true)")
        pos = run.positions
        s = np.stack([np.asarray(coordinate(np.asarray(pos[j], np.float64)), np.float64)
                      for j in range(run.n_records)])
    elif coordinate is not None or "s" in names:
        name = "s" if coordinate is None else coordinate
        if name not in names:
            raise ConfigError(f"the run recorded no {name!r}; recorded series: {names}")
        s = np.asarray(run[name], np.float64)
        s = s.reshape(s.shape[0], s.shape[1], -1)[:, :, 0]
    elif has_default_coordinate(run):
        pos = run.positions
        s = np.stack([run.potential.observables(np.asarray(pos[j], np.float64))["s"]
                      for j in range(run.n_records)])
    else:
        raise ConfigError(f"no manifold coordinate: the run has no 's' record and is no Valley "
                          f"run with positions; pass coordinate= a recorded series ({names}) or "
                          "a function of the positions")
    dead = np.asarray(run.diverged_step) >= 0
    if dead.any():
        warnings.warn(f"{int(dead.sum())} of {dead.size} replicas diverged: left out (the records "
                      "before a divergence can hold the blow-up)", LangevinSimWarning, stacklevel=3)
        s = np.where(dead, np.nan, s)
    return s


def default_region(run: Run) -> tuple[float, float] | None:
    """For a line Valley with walls (s_lo, s_hi): (s_lo + m, s_hi - m), the margin m =
    4 sqrt(2 T dt_rec) + |v0| dt_rec keeping counted record intervals off the walls
    (dt_rec the time between records; T a scheduled temperature's largest); None for
    anything else."""
    pot = run.potential
    if type(pot).__name__ != "Valley" or pot.curve != "line" or pot.bounds is None:
        return None
    t = run.config["dynamics"].get("temperature") or {}
    # a scheduled temperature: its largest (start or end), the widest margin
    T = constant_temperature(run.config) if t.get("kind") == "constant" else \
        max(float(t["start"]), float(t["end"])) if t else constant_temperature(run.config)
    dtr = float(np.median(np.diff(run.time)))
    v0 = abs(valley_velocity(pot, T)) if pot.profile == "exp" else 0.0
    m = 4 * math.sqrt(2 * T * dtr) + v0 * dtr
    lo, hi = pot.bounds[0] + m, pot.bounds[1] - m
    if not lo < hi:
        raise ConfigError(f"the walls at {pot.bounds} are closer than twice the margin {m:.3g} "
                          "(records too sparse); pass region=(lo, hi) or region=None "
                          "(analysis/drift.py: --region LO HI or --no-region)")
    return (lo, hi)


def run_drift(run: Run, coordinate: str | Callable | None = None, t_min: float | None = None,
              t_max: float | None = None, region: tuple[float, float] | None | str = "auto",
              stationary: bool = False) -> DriftFit:
    """`fit_drift` of a run's manifold coordinate on `run.time`.  region "auto":
    `default_region` (inside a walled line Valley's walls; everything otherwise).  For an
    overdamped-Langevin run on an "exp" line Valley the predictions -alpha(d-1)T/2 with
    D = T and its first-order correction over the counted positions are attached: the
    transit's steady lag, or with `stationary` (a window where the replicas are at
    equilibrium) the lag that grows along each record interval (`valley_velocity`'s
    record_dt); its D is `valley_diffusion`'s without a region, T with one.  The walls,
    "auto" and the predictions are of the manifold coordinate s: coordinate "s" is the
    default (None); any other series is fitted with no default region (everything) and no
    prediction."""
    run = check_trajectories(run, "run_drift")
    if coordinate == "s":
        coordinate = None
    s = manifold_coordinate(run, coordinate)
    pot = run.potential
    if coordinate is None and getattr(pot, "curve", None) == "circle":
        s = np.unwrap(s, period=2 * math.pi * pot.radius, axis=0)   # arclength travelled
    t = run.time
    if region == "auto":
        region = default_region(run) if coordinate is None else None
    fit = fit_drift(t, s, t_min, t_max, region)
    if coordinate is not None:
        fit = replace(fit, coordinate=coordinate if isinstance(coordinate, str)
                      else getattr(coordinate, "__name__", "the coordinate"))
    dyn = run.config["dynamics"]
    if (coordinate is None and type(pot).__name__ == "Valley" and pot.profile == "exp"
            and pot.curve == "line" and dyn["class"] == "OverdampedLangevin"
            and dyn["temperature"]["kind"] == "constant" and dyn["step"]["kind"] == "constant"):
        T, eta = dyn["temperature"]["start"], dyn["step"]["start"]
        w = (t >= fit.window[0]) & (t < fit.window[1])
        at = s[w]
        if region is not None:
            at = at[(at >= region[0]) & (at <= region[1])]
        at = at[np.isfinite(at)]
        # D: the transverse variances' first order without a region (`valley_diffusion`)
        inside = (t >= fit.window[0]) & (t <= fit.window[1])
        D1 = T if region is not None else valley_diffusion(pot, T, t[inside], s[inside])
        if stationary:
            dt = float(np.median(np.diff(t[inside])))                     # record spacing
            first = ("first order (EM, lag along a record)",
                     valley_velocity(pot, T, eta, at, record_dt=dt), D1)
        else:
            first = ("first order (EM, lag)", valley_velocity(pot, T, eta, at), D1)
        preds = (("-alpha(d-1)T/2", valley_velocity(pot, T), T), first)
        fit = replace(fit, predictions=preds)
    return fit


def run_time_to_target(run: Run, target: tuple[float, float],
                      coordinate: str | Callable | None = None) -> TimeToTarget:
    """`time_to_target` of a run's coordinate (see `manifold_coordinate`) on `run.time`."""
    check_target(target, "run_time_to_target")
    check_trajectories(run, "run_time_to_target")
    return time_to_target(run.time, manifold_coordinate(run, coordinate), target)


def run_density(run: Run, records: ArrayLike | None = None, bins: int = 30,
                temperature: float | None = None) -> DensityEvolution:
    """`density_evolution` of a Valley run's s against Valley.log_density(s, T) on the walls'
    interval (line with bounds) or the range of the samples."""
    pot = run.potential
    if not hasattr(pot, "log_density"):
        raise ConfigError(f"{type(pot).__name__} has no log_density; call density_evolution "
                          "with your own stationary law")
    T = constant_temperature(run.config) if temperature is None else temperature
    lo, hi = (None, None) if pot.bounds is None else pot.bounds
    return density_evolution(run.time, manifold_coordinate(run), lambda s: pot.log_density(s, T),
                             records, bins, lo, hi)


def run_traces(run: Run, names: Iterable[str] = TRACES) -> tuple[Trace, ...]:
    """`trace` of each recorded observable among `names` (sharpness, weight norm, ...) with
    a finite value somewhere among the live replicas."""
    alive = run.diverged_step < 0
    series = {n: np.asarray(run[n], np.float64)[:, alive] for n in names if n in run.names}
    return tuple(trace(run.time, v, n) for n, v in series.items() if np.isfinite(v).any())


@dataclass(frozen=True)
class DriftComparison(Result):
    """Drift, diffusion and time to target of several runs side by side (e.g. SGD vs
    isotropic Langevin on the same manifold)."""

    labels: tuple[str, ...]
    drifts: tuple[DriftFit, ...]
    passages: tuple[TimeToTarget | None, ...]

    def table(self) -> str:
        rows = [f"{'run':>14} {'v':>10} {'+-':>8} {'D':>10} {'+-':>8} {'reached':>8} {'t50':>9}"]
        for lab, f, fp in zip(self.labels, self.drifts, self.passages):
            reach = ("-", "-") if fp is None else (f"{fp.fraction_reached:.3f}", f"{fp.quantile(0.5):.4g}")
            rows.append(f"{lab:>14} {f.v:10.4g} {f.v_se:8.2g} {f.D:10.4g} {f.D_se:8.2g} "
                        f"{reach[0]:>8} {reach[1]:>9}")
        return "\n".join(rows)

    def plot(self, ax: Axes) -> None:
        """Mean counted displacement against counted time for each run."""
        for lab, f in zip(self.labels, self.drifts):
            ax.plot(f.elapsed, f.mean, "-", label=f"{lab}: v = {f.v:.3g} +- {f.v_se:.1g}")
        ax.set(xlabel="time counted per replica", ylabel=r"$\langle\Delta s\rangle$")
        ax.legend(fontsize=7)


def compare_runs(runs: Mapping[str, Run], coordinate: str | Callable | None = None,
                 target: tuple[float, float] | None = None, t_min: float | None = None,
                 t_max: float | None = None, region: tuple[float, float] | None | str = "auto"
                 ) -> DriftComparison:
    """`run_drift` (and `run_time_to_target` when `target` is given) of each labelled run with
    the same coordinate, window and region."""
    if not isinstance(check_run(runs, "compare_runs"), Mapping):
        raise ConfigError(f"compare_runs takes a mapping {{name: Run}}, e.g. "
                          f"dict(sgd=run_a, langevin=run_b), not a {type(runs).__name__}")
    if target is not None:
        check_target(target, "compare_runs")
    runs = {k: check_run(r, "compare_runs") for k, r in runs.items()}
    drifts = tuple(run_drift(r, coordinate, t_min, t_max, region) for r in runs.values())
    fps = tuple(None if target is None else run_time_to_target(r, target, coordinate)
                for r in runs.values())
    return DriftComparison(tuple(runs), drifts, fps)
