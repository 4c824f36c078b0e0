"""Grokking: the delay between fitting the training set and generalizing, across replicas.

Per replica (records of `train_accuracy`, `test_accuracy`, in steps): the fit step is the
first record with train accuracy >= `train_threshold`, the generalization step the first
record with test accuracy >= `test_threshold`, the delay their difference.  A replica that
has fitted but not generalized by its last finite record is right-censored there (delay >
end - fit): medians and fractions come from Kaplan-Meier curves (`escape.kaplan_meier`),
never from the generalized replicas alone; a replica that generalizes at or before its fit
record has delay 0; one that never fits has no delay (counted apart).  Errors: the
median's by bootstrap over replicas (its fraction of resamples with a defined median is
reported), fractions binomial.

The drift picture (seed essays): once the training set is fitted, decoupled weight decay
shrinks the weights by (1 - lr wd) per step while the gradient holds the fit, so the
motion along the manifold of training minima to a low-norm, generalizing solution takes a
number of steps ~ 1/(lr wd).  `delay_scaling` fits median delay = c (lr wd)^(-a) over scan
points (a = 1 predicted), and with separate exponents for lr and wd (equal if only the
product matters).  `lr wd delay` against ln(|w|_fit / |w|_gen) compares the decay the
weights received with the shrinkage they showed (equal if the gradient did not resist).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..io.reader import check_run
from .escape import kaplan_meier
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..io.reader import Run
    from .escape import Survival


# ----------------------------------------------------------------------------- medians

def km_median(t: np.ndarray, event: np.ndarray) -> float:
    """Kaplan-Meier median of right-censored times t (n,) (event (n,) True = observed):
    the first event time with S <= 1/2, inf when S stays above 1/2 (nan for n = 0)."""
    t, event = np.asarray(t, np.float64), np.asarray(event, bool)
    if t.size == 0:
        return math.nan
    order = np.lexsort((~event, t))            # events before censorings at equal times
    t, event = t[order], event[order]
    at_risk = t.size - np.arange(t.size)
    S = np.cumprod(np.where(event, 1 - 1 / at_risk, 1.0))
    hit = np.flatnonzero(event & (S <= 0.5 + 1e-12))
    return float(t[hit[0]]) if hit.size else math.inf


def bootstrap_median(t: ArrayLike, event: ArrayLike, n_boot: int = 1000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """(KM median, bootstrap standard error, fraction of resamples with a finite median)
    of right-censored times; the se uses the finite resamples (nan if fewer than 10)."""
    t, event = np.asarray(t, np.float64), np.asarray(event, bool)
    med = km_median(t, event)
    if t.size < 2:
        return med, math.nan, float(np.isfinite(med))
    idx = np.random.default_rng(seed).integers(0, t.size, (n_boot, t.size))
    boot = np.array([km_median(t[i], event[i]) for i in idx])
    ok = np.isfinite(boot)
    se = float(boot[ok].std(ddof=1)) if ok.sum() >= 10 and np.isfinite(med) else math.nan
    return med, se, float(ok.mean())


def _first(ok: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """First step (M,) at which ok (n, M) holds, nan where it never does."""
    return np.where(ok.any(axis=0), steps[np.argmax(ok, axis=0)], np.nan)


# ----------------------------------------------------------------------------- one run

@dataclass(frozen=True)
class GrokkingTimes(Result):
    """Per-replica times in steps (M,): `fit`, `gen` (nan: not reached by `end`, the last
    finite record), `delay` = max(gen, fit) - fit for fitted replicas, censored at end - fit
    where `generalized` is False (nan for replicas that never fitted).  `table()` prints the
    counts and the Kaplan-Meier medians."""

    steps: np.ndarray
    fit: np.ndarray
    gen: np.ndarray
    end: np.ndarray
    train_threshold: float
    test_threshold: float

    @property
    def fitted(self) -> np.ndarray:
        return np.isfinite(self.fit)

    @property
    def generalized(self) -> np.ndarray:
        return np.isfinite(self.gen)

    @property
    def delay(self) -> np.ndarray:
        d = np.where(self.generalized, np.fmax(self.gen, self.fit), self.end) - self.fit
        return np.where(self.fitted, d, np.nan)

    @property
    def early(self) -> int:
        """Replicas that generalized at or before their fit record (delay 0)."""
        return int((self.fitted & (self.gen <= self.fit)).sum())

    def median_delay(self, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
        """`bootstrap_median` of the delays of the fitted replicas."""
        f = self.fitted
        return bootstrap_median(self.delay[f], self.generalized[f], n_boot, seed)

    def median_time(self, which: str, n_boot: int = 1000, seed: int = 0
                    ) -> tuple[float, float, float]:
        """`bootstrap_median` of the fit or gen step (censored at `end` when not reached)."""
        t = getattr(self, which)
        hit = np.isfinite(t)
        return bootstrap_median(np.where(hit, t, self.end), hit, n_boot, seed)

    def delay_survival(self) -> Survival:
        """Kaplan-Meier curve of the delay (`escape.Survival`) over the fitted replicas."""
        f = self.fitted
        if not f.any():
            raise ConfigError("no replica fitted the training set: no delay to analyse")
        return kaplan_meier(self.delay[f], self.generalized[f])

    def fraction_generalized_by(self, t: ArrayLike) -> np.ndarray:
        """1 - S(delay) at delays t (steps), Kaplan-Meier, with censored replicas at risk
        until their end."""
        return 1 - self.delay_survival().at(t)

    def summary(self, n_boot: int = 1000) -> dict:
        """Scalars: replicas, fitted, generalized (of the fitted; + binomial se), early, the
        medians +- bootstrap se in steps (fit, gen, delay; inf: fewer than half reached),
        the delay's 10 / 90 % quantiles (Kaplan-Meier, inf beyond the run), end (the last
        finite record of any replica)."""
        fitted = self.fitted
        m, k = int(fitted.sum()), int((fitted & self.generalized).sum())
        frac = k / m if m else math.nan
        d_med, d_se, d_ok = self.median_delay(n_boot)
        f_med, f_se, _ = self.median_time("fit", n_boot)
        g_med, g_se, _ = self.median_time("gen", n_boot)
        km = self.delay_survival() if m else None
        q10, q90 = ((_km_quantile(km, 0.1), _km_quantile(km, 0.9)) if km is not None
                    else (math.nan, math.nan))
        return dict(replicas=self.fit.size, fitted=m, generalized=k, frac_gen=frac,
                    frac_gen_se=math.sqrt(frac * (1 - frac) / m) if m else math.nan,
                    early=self.early, fit_median=f_med, fit_se=f_se, gen_median=g_med,
                    gen_se=g_se, delay_median=d_med, delay_se=d_se, delay_defined=d_ok,
                    delay_q10=q10, delay_q90=q90, end=float(np.nanmax(self.end)))

    def table(self, summary: dict | None = None, prefix: str = "grokking times: ") -> str:
        """Two lines: who fitted and generalized by when, and the median steps (`summary`:
        this `summary()`, when already computed)."""
        s = self.summary() if summary is None else summary
        return "\n".join([
            f"{prefix}{s['fitted']}/{s['replicas']} fitted the training set (train accuracy "
            f">= {self.train_threshold:g}), {s['generalized']} generalized (test accuracy >= "
            f"{self.test_threshold:g}) by step {s['end']:.0f}",
            f"  median steps: fit {_pm(s['fit_median'], s['fit_se'])}, generalize "
            f"{_pm(s['gen_median'], s['gen_se'])}, delay {_pm(s['delay_median'], s['delay_se'])} "
            f"[10 %, 90 %: {s['delay_q10']:.0f}, {s['delay_q90']:.0f}] (Kaplan-Meier, censored "
            f"{s['fitted'] - s['generalized']})"])


def grokking_times(steps: ArrayLike, train_accuracy: ArrayLike, test_accuracy: ArrayLike,
                   train_threshold: float = 1.0,
                   test_threshold: float = 0.9) -> GrokkingTimes:
    """`GrokkingTimes` from record steps (n,) and accuracies (n, M) (nan after divergence)."""
    for name, v in (("train_threshold", train_threshold), ("test_threshold", test_threshold)):
        if not 0 < float(v) <= 1:
            raise ConfigError(f"{name} must be an accuracy in (0, 1], got {v:g} (analysis/"
                              f"grokking.py: --{name.replace('_', '-')})")
    steps = np.asarray(steps, np.float64)
    tr = np.asarray(train_accuracy, np.float64)
    te = np.asarray(test_accuracy, np.float64)
    if tr.ndim != 2 or tr.shape != te.shape or tr.shape[0] != steps.size:
        raise ConfigError(f"accuracies must be (n, M) with n = {steps.size} records, got "
                          f"{tr.shape} and {te.shape}")
    finite = np.isfinite(tr) & np.isfinite(te)
    last = np.where(finite.any(axis=0), tr.shape[0] - 1 - np.argmax(finite[::-1], axis=0), 0)
    eps = 1e-9                                    # accuracies are fractions k / n_pairs
    return GrokkingTimes(steps, _first(tr >= train_threshold - eps, steps),
                         _first(te >= test_threshold - eps, steps), steps[last],
                         float(train_threshold), float(test_threshold))


def _at(values: np.ndarray, steps: np.ndarray, when: np.ndarray) -> np.ndarray:
    """values (n, M) at each replica's record `when` (M,) (nan where when is nan)."""
    out = np.full(when.shape, np.nan)
    ok = np.isfinite(when)
    rows = np.searchsorted(steps, when[ok])
    out[ok] = values[rows, np.flatnonzero(ok)]
    return out


def _next_measured(values: np.ndarray, steps: np.ndarray, when: np.ndarray) -> np.ndarray:
    """values (n, M) of an observable measured at some records only (nan elsewhere), at the
    first measured record at or after each replica's `when` (M,) (nan if none)."""
    rows = np.flatnonzero(np.isfinite(values).any(axis=1))
    out = np.full(when.shape, np.nan)
    ok = np.isfinite(when)
    j = np.searchsorted(steps[rows], when[ok]) if rows.size else np.zeros(0, int)
    has = j < rows.size
    cols = np.flatnonzero(ok)[has]
    out[cols] = values[rows[j[has]], cols]
    return out


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan


@dataclass(frozen=True)
class GrokkingPoint(Result):
    """One run's grokking summary.  `params`: the run's optimizer settings (lr, weight_decay,
    optimizer, activation); `times`; per replica (M,) weight norms and sharpness (top Hessian
    eigenvalue, first measured record at or after; nan if none) at the fit and generalization
    records; `steps` (n,), `median_train`, `median_test` (n,) accuracies, `norm` (n, M) and
    `sharpness` (n, M) (nan where not measured) for the figures."""

    params: dict
    times: GrokkingTimes
    norm_fit: np.ndarray
    norm_gen: np.ndarray
    sharp_fit: np.ndarray
    sharp_gen: np.ndarray
    norm: np.ndarray
    sharpness: np.ndarray
    median_train: np.ndarray
    median_test: np.ndarray
    n_boot: int = 1000

    @property
    def lr_wd(self) -> float:
        return float(self.params["lr"] * self.params["weight_decay"])

    def summary(self) -> dict:
        """Scalars: replicas, fitted, generalized (+ binomial se over fitted), medians ± se
        (fit, gen, delay; inf: fewer than half reached), delay quantiles 10/90 %
        (Kaplan-Meier, inf beyond the run), lr wd x delay, norms and sharpness at fit and gen
        (mean ± se over the replicas that reached them), ln(norm_fit / norm_gen)."""
        t = self.times
        gen = t.fitted & t.generalized
        out = dict(self.params, **t.summary(self.n_boot))
        d_med, d_se = out["delay_median"], out["delay_se"]
        shrink = np.log(self.norm_fit / self.norm_gen)
        out.update(lr_wd=self.lr_wd, decay_units=self.lr_wd * d_med,
                   decay_units_se=self.lr_wd * d_se)
        for name, v in (("norm_fit", self.norm_fit), ("norm_gen", self.norm_gen),
                        ("shrink", shrink[gen]), ("sharp_fit", self.sharp_fit),
                        ("sharp_gen", self.sharp_gen)):
            out[name], out[name + "_se"] = _mean_se(v)
        # the decay each generalized replica received, lr wd delay, against its shrinkage
        out["decay_gen"], out["decay_gen_se"] = _mean_se(self.lr_wd * t.delay[gen])
        return out

    def table(self) -> str:
        s = self.summary()
        return "\n".join([
            self.times.table(s, f"{s['optimizer']} lr {s['lr']:g}, weight decay "
                                f"{s['weight_decay']:g}, {s['activation']}: "),
            f"  lr wd x median delay = {_pm(s['decay_units'], s['decay_units_se'], 3)}; weight "
            f"norm at fit {_pm(s['norm_fit'], s['norm_fit_se'], 4)} -> at generalization "
            f"{_pm(s['norm_gen'], s['norm_gen_se'], 4)}, ln(fit/gen) "
            f"{_pm(s['shrink'], s['shrink_se'], 3)} vs lr wd delay "
            f"{_pm(s['decay_gen'], s['decay_gen_se'], 3)}",
            f"  sharpness (top Hessian eigenvalue) at fit "
            f"{_pm(s['sharp_fit'], s['sharp_fit_se'], 4)}, at generalization "
            f"{_pm(s['sharp_gen'], s['sharp_gen_se'], 4)}" + self._measured_after()])

    def _measured_after(self) -> str:
        """How long after each event (median over replicas, steps) the sharpness was measured:
        it is taken at the first measured record at or after the fit and the generalization."""
        t = self.times
        at = np.where(np.isfinite(self.sharpness), t.steps[:, None], np.nan)
        gen_at = np.where(t.fitted & t.generalized, np.fmax(t.gen, t.fit), np.nan)
        said = [f"{np.nanmedian(lag):.0f} steps after the {event}"
                for event, when in (("fit", t.fit), ("generalization", gen_at))
                if np.isfinite(lag := _next_measured(at, t.steps, when) - when).any()]
        return f" (measured a median {' and '.join(said)})" if said else ""

    def plot(self, axes: Sequence[Axes] | np.ndarray) -> None:
        """Three panels: median accuracies over steps; weight norm (median, 10-90 %) with
        the fit and generalization medians marked; sharpness (median over replicas)."""
        ax0, ax1, ax2 = axes
        st = self.times.steps
        lab = f"lr {self.params['lr']:g}, wd {self.params['weight_decay']:g}"
        line, = ax0.plot(st, self.median_test, label=f"test, {lab}")
        ax0.plot(st, self.median_train, "--", color=line.get_color(), lw=0.8)
        ax0.set(xlabel="step", ylabel="accuracy (median; dashed: train)", ylim=(0, 1.02))
        q = np.nanquantile(self.norm, [0.1, 0.5, 0.9], axis=1)
        ax1.plot(st, q[1], color=line.get_color(), label=lab)
        ax1.fill_between(st, q[0], q[2], color=line.get_color(), alpha=0.2, lw=0)
        ax1.set(xlabel="step", ylabel="weight norm (median, 10-90 %)")
        rows = np.flatnonzero(np.isfinite(self.sharpness).any(axis=1))
        if rows.size:
            ax2.plot(st[rows], np.nanmedian(self.sharpness[rows], axis=1), "o-",
                     color=line.get_color(), ms=3, label=lab)
        elif not ax2.lines:   # (another run's curve may be there already)
            ax2.text(0.5, 0.5, "sharpness not recorded\n(--set sharpness_every=K)",
                     transform=ax2.transAxes, ha="center", va="center")
        # a log axis only while every curve on it is positive (a top eigenvalue can be <= 0)
        ys = np.concatenate([np.asarray(c.get_ydata(), float) for c in ax2.lines] or [[]])
        ys = ys[np.isfinite(ys)]
        ax2.set_yscale("log" if ys.size and np.all(ys > 0) else "linear")
        ax2.set(xlabel="step", ylabel="top Hessian eigenvalue (median)")

    def plot_delay(self, ax: Axes, scaled: bool = True, **kw: Any) -> None:
        """Kaplan-Meier fraction of the fitted replicas generalized against the delay, in
        units of 1/(lr wd) when `scaled` (curves collapse if the delay is c/(lr wd))."""
        km = self.times.delay_survival()
        u = self.lr_wd if scaled else 1.0
        end = np.nanmax(self.times.delay[self.times.fitted]) * u
        x = np.concatenate([[0.0], km.time * u, [end]])
        F = 1 - km.survival
        y = np.concatenate([[0.0], F, F[-1:] if F.size else [0.0]])
        ax.step(x, y, where="post", label=kw.pop("label", f"lr {self.params['lr']:g}, "
                                                 f"wd {self.params['weight_decay']:g}"), **kw)
        ax.set(xlabel="lr wd x delay" if scaled else "delay (steps)",
               ylabel="fraction generalized (Kaplan-Meier)", ylim=(0, 1.02))


def _km_quantile(km, q: float) -> float:
    hit = np.flatnonzero(1 - km.survival >= q - 1e-12)
    return float(km.time[hit[0]]) if hit.size else math.inf


def _pm(v: float, se: float, digits: int = 0) -> str:
    """v +- se with `digits` significant digits (0: as integers)."""
    fmt = f"{{:.{digits}g}}" if digits else "{:.0f}"
    out = fmt.format(v) if np.isfinite(v) else str(v)
    return out + (f" +- {fmt.format(se)}" if np.isfinite(v) and np.isfinite(se) else "")


def run_grokking(run: Run, train_threshold: float = 1.0, test_threshold: float = 0.9,
                 n_boot: int = 1000) -> GrokkingPoint:
    """`GrokkingPoint` of a run of scenarios/grokking.py (or any run recording
    train_accuracy, test_accuracy and weight_norm; sharpness optional)."""
    run = check_run(run, "run_grokking")
    need = {"train_accuracy", "test_accuracy", "weight_norm"} - set(run.names)
    if need:
        raise ConfigError(f"the run does not record {sorted(need)}: not a grokking run "
                          "(scenarios/grokking.py)")
    dyn, pot = run.config["dynamics"], run.config["potential"]
    steps = np.asarray(run.step, np.float64)
    alive = run.diverged_step < 0
    tr = np.asarray(run["train_accuracy"], np.float64)
    te = np.asarray(run["test_accuracy"], np.float64)
    norm = np.asarray(run["weight_norm"], np.float64)
    sharp = (np.asarray(run["sharpness"], np.float64) if "sharpness" in run.names
             else np.full(norm.shape, np.nan))
    times = grokking_times(steps, tr, te, train_threshold, test_threshold)
    gen_ok = times.fitted & times.generalized
    gen_at = np.where(gen_ok, np.fmax(times.gen, times.fit), np.nan)
    lr = dyn.get("lr")                                 # a Schedule's dict: its start
    params = {"optimizer": dyn["class"], "lr": float(lr["start"] if isinstance(lr, dict) else lr),
              "weight_decay": float(dyn.get("weight_decay", 0.0)),
              "activation": pot.get("activation", "?"),
              "train_fraction": float(pot.get("train_fraction", math.nan)),
              "hidden": int(pot.get("hidden", 0)),
              "diverged": int((~alive).sum())}
    return GrokkingPoint(params, times, _at(norm, steps, times.fit), _at(norm, steps, gen_at),
                         _next_measured(sharp, steps, times.fit),
                         _next_measured(sharp, steps, gen_at), norm, sharp,
                         np.nanmedian(tr, axis=1), np.nanmedian(te, axis=1), n_boot)


# ----------------------------------------------------------------------------- scans

@dataclass(frozen=True)
class DelayScaling(Result):
    """Weighted least squares of ln(median delay) over scan points with finite medians:
    ln D = ln c - a ln(lr wd) (`a`, `a_se`, `c`; a = 1 predicted, z = (a - 1)/a_se) and
    ln D = b0 - a_lr ln lr - a_wd ln wd (`a_lr`, `a_wd` ± se, and `a_diff_se` the se of
    a_lr - a_wd from the fit's covariance: the two exponents are correlated; equal if only
    lr wd matters);
    chi2/dof of the first fit (se of ln D = se(D)/D), `chi2_separate` of the second on
    n - 3 dof.  The se are the fits' own; where a fit's chi2/dof > 1 the model does not
    describe the points within their errors and `z`, `z_lr_wd` use the se
    times sqrt(chi2/dof) (`scale`, `scale_separate`).  And the drift picture with a fixed
    lag, D = A + B/(lr wd) (`A`, `B` ± se, `chi2_affine` on dof)."""

    n: int
    a: float
    a_se: float
    c: float
    c_se: float
    chi2: float
    dof: int
    a_lr: float
    a_lr_se: float
    a_wd: float
    a_wd_se: float
    a_diff_se: float
    A: float
    A_se: float
    B: float
    B_se: float
    chi2_affine: float
    chi2_separate: float

    @property
    def scale(self) -> float:
        """sqrt(chi2/dof) of the product fit, at least 1: the factor its se is widened by."""
        return math.sqrt(max(1.0, self.chi2 / self.dof)) if self.dof > 0 else 1.0

    @property
    def scale_separate(self) -> float:
        """The same for the separate lr, wd fit (n - 3 dof; 1 where it was not made)."""
        dof = self.n - 3
        if dof <= 0 or not math.isfinite(self.chi2_separate):
            return 1.0
        return math.sqrt(max(1.0, self.chi2_separate / dof))

    @property
    def z(self) -> float:
        """(a - 1) / (a_se scale): a = 1 against the widened se."""
        return (self.a - 1) / (self.a_se * self.scale)

    @property
    def z_lr_wd(self) -> float:
        """(a_lr - a_wd) / (a_diff_se scale_separate): do lr and wd enter only through lr wd?"""
        return (self.a_lr - self.a_wd) / (self.a_diff_se * self.scale_separate)

    def table(self) -> str:
        return (f"median delay = c (lr wd)^(-a) over {self.n} points: a = {self.a:.3f} +- "
                f"{self.a_se:.3f} (x {self.scale:.2g} for chi2/dof: 1 predicted, z = "
                f"{self.z:+.2f}), c = {self.c:.3g} +- {self.c_se:.2g}, chi2/dof = "
                f"{self.chi2:.1f}/{self.dof}\n"
                + (f"  separately: delay ~ lr^(-{self.a_lr:.3f} +- {self.a_lr_se:.3f}) "
                   f"wd^(-{self.a_wd:.3f} +- {self.a_wd_se:.3f}) (x {self.scale_separate:.2g}; "
                   f"chi2/dof = {self.chi2_separate:.1f}/{self.n - 3}; a_lr - a_wd: z = "
                   f"{self.z_lr_wd:+.2f})\n" if np.isfinite(self.a_lr) and np.isfinite(self.a_wd)
                   else "  separately: no exponents (they need both lr and wd varied, at "
                        ">= 4 points)\n")
                + f"  lag + 1/(lr wd): delay = {self.A:.4g} +- {self.A_se:.2g} + ({self.B:.3g} +- "
                f"{self.B_se:.2g})/(lr wd), chi2/dof = {self.chi2_affine:.1f}/{self.dof}")


    def verdict(self, product: "ConstantProduct | None" = None, alpha: float = 0.05) -> str:
        """One line: a = 1 against the widened se (`z`, within 3 of it), quoting that se, the
        one z uses; with `product` (`constant_product` of the same points), also whether lr wd
        x delay is constant (chi2 p >= alpha): consistent only if both hold."""
        slope = abs(self.z) <= 3
        const = product is None or product.p >= alpha
        why = "" if slope and const else " (" + "; ".join(x for x in (
            "" if slope else f"a is {self.z:+.1f} widened se from 1",
            "" if const else f"lr wd x delay is not constant: chi2 {product.chi2:.1f} on "
                             f"{product.dof} dof, p = {product.p:.2g} < {alpha:g}") if x) + ")"
        return (f"verdict: median delay ~ (lr wd)^(-{self.a:.2f} +- {self.a_se * self.scale:.2f}"
                + (f", se widened x {self.scale:.2g} for chi2/dof" if self.scale > 1 else "")
                + f"): {'consistent' if slope and const else 'NOT consistent'} with the drift "
                f"picture's 1/(lr wd){why} (power-law chi2/dof {self.chi2:.1f}/{self.dof})")


@dataclass(frozen=True)
class ConstantProduct(Result):
    """The drift picture's prediction itself, lr wd x median delay the same at every point
    (`constant_product`): `units` (n,) ± `units_se` per point, their inverse-variance
    weighted `mean`, and `chi2` of the points about it on n - 1 dof with its `p`."""

    units: np.ndarray
    units_se: np.ndarray
    mean: float
    chi2: float
    dof: int
    p: float

    def table(self) -> str:
        return (f"lr wd x median delay over {self.units.size} points: "
                + ", ".join(f"{u:.2f} ± {e:.2f}" for u, e in zip(self.units, self.units_se))
                + f"; weighted mean {self.mean:.3f}, constant: chi2 = {self.chi2:.1f} on "
                f"{self.dof} dof, p = {self.p:.2g}")


def constant_product(points: Iterable[GrokkingPoint | Mapping[str, Any]]) -> ConstantProduct:
    """`ConstantProduct` over the points (`GrokkingPoint`s or their summaries) with a finite
    median delay and error (at least 2)."""
    from scipy import stats

    S = [p.summary() if isinstance(p, GrokkingPoint) else p for p in points]
    S = [s for s in S if np.isfinite(s["delay_median"]) and np.isfinite(s["delay_se"])
         and s["decay_units_se"] > 0]
    if len(S) < 2:
        raise ConfigError(f"need >= 2 points with a finite median delay and error, got {len(S)}")
    u = np.array([s["decay_units"] for s in S])
    se = np.array([s["decay_units_se"] for s in S])
    w = 1 / se ** 2
    mean = float(np.sum(w * u) / np.sum(w))
    chi2 = float(np.sum(w * (u - mean) ** 2))
    return ConstantProduct(u, se, mean, chi2, u.size - 1, float(stats.chi2.sf(chi2, u.size - 1)))


def _wls(X: np.ndarray, y: np.ndarray, se: np.ndarray):
    """Weighted least squares of y (n,) on X (n, k) with errors se (n,): (coef (k,), their
    covariance (k, k), chi2)."""
    w = 1 / se
    coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
    cov = np.linalg.inv((X * w[:, None] ** 2).T @ X)
    chi2 = float(np.sum(((y - X @ coef) * w) ** 2))
    return coef, cov, chi2


def delay_scaling(points: Iterable[GrokkingPoint | Mapping[str, Any]]) -> DelayScaling:
    """`DelayScaling` over `GrokkingPoint`s' (or their summaries') median delays."""
    S = [p.summary() if isinstance(p, GrokkingPoint) else p for p in points]
    S = [s for s in S if np.isfinite(s["delay_median"]) and np.isfinite(s["delay_se"])
         and s["delay_se"] > 0]
    if len(S) < 3:
        raise ConfigError(f"need >= 3 points with a finite median delay and error, got {len(S)}")
    if len({s["lr"] * s["weight_decay"] for s in S}) < 2:
        raise ConfigError("the points share one lr * weight_decay: the delay's scaling with it "
                          "needs points at two or more values (a scan over lr or weight_decay)")
    y = np.log([s["delay_median"] for s in S])
    se = np.array([s["delay_se"] / s["delay_median"] for s in S])
    lr, wd = np.log([s["lr"] for s in S]), np.log([s["weight_decay"] for s in S])
    one = np.ones(len(S))
    (b, slope), cov, chi2 = _wls(np.stack([one, lr + wd], 1), y, se)
    b_se, slope_se = np.sqrt(np.diag(cov))
    if np.ptp(lr) > 0 and np.ptp(wd) > 0 and len(S) >= 4:
        (_, s_lr, s_wd), cov_sep, chi2_sep = _wls(np.stack([one, lr, wd], 1), y, se)
        s_lr_se, s_wd_se = np.sqrt(np.diag(cov_sep))[1:]
        diff_se = math.sqrt(cov_sep[1, 1] + cov_sep[2, 2] - 2 * cov_sep[1, 2])
    else:
        s_lr = s_wd = s_lr_se = s_wd_se = diff_se = chi2_sep = math.nan
    D = np.exp(y)
    (A, B), cov_aff, chi2_aff = _wls(np.stack([one, np.exp(-(lr + wd))], 1), D, se * D)
    A_se, B_se = np.sqrt(np.diag(cov_aff))
    c = math.exp(b)
    return DelayScaling(len(S), -slope, slope_se, c, c * b_se, chi2, len(S) - 2,
                        -s_lr, s_lr_se, -s_wd, s_wd_se, diff_se, A, A_se, B, B_se, chi2_aff,
                        chi2_sep)


def points_table(points: Iterable[GrokkingPoint]) -> str:
    """One row per point, sorted by (lr, weight decay, training fraction, width): the width,
    the fraction of the pairs trained on, fitted/replicas, fraction of the fitted that
    generalized ± binomial se, median fit step, median delay ± bootstrap se and
    its 10/90 % Kaplan-Meier quantiles, lr wd x median delay, weight norm and sharpness
    (λ, top Hessian eigenvalue) at fit and generalization (means), ln(|w|_fit/|w|_gen)."""
    rows = [f"{'act':>9} {'hidden':>6} {'lr':>7} {'wd':>6} {'lr*wd':>8} {'train':>5} {'fit/M':>7} "
            f"{'gen frac':>13} "
            f"{'fit t50':>8} {'delay t50 ± se':>15} {'[10%, 90%]':>13} {'lr wd t50':>12} "
            f"{'|w| fit':>8} {'|w| gen':>8} {'ln ratio':>8} {'λ fit':>7} {'λ gen':>7}"]
    for s in sorted((p.summary() for p in points),
                    key=lambda s: (s["lr"], s["weight_decay"], s["train_fraction"], s["hidden"])):
        rows.append(
            f"{s['activation']:>9} {s['hidden']:6d} {s['lr']:7.3g} {s['weight_decay']:6.3g} "
            f"{s['lr_wd']:8.2e} {s['train_fraction']:5.2f} "
            f"{s['fitted']:3d}/{s['replicas']:<3d} {s['frac_gen']:6.3f} ± {s['frac_gen_se']:.3f} "
            f"{s['fit_median']:8.0f} {s['delay_median']:7.0f} ± {s['delay_se']:5.0f} "
            f"[{s['delay_q10']:4.0f}, {s['delay_q90']:5.0f}] "
            f"{s['decay_units']:5.2f} ± {s['decay_units_se']:4.2f} {s['norm_fit']:8.2f} "
            f"{s['norm_gen']:8.2f} {s['shrink']:8.3f} {s['sharp_fit']:7.3g} {s['sharp_gen']:7.3g}")
    return "\n".join(rows)
