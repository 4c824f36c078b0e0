"""Flatness against generalization across replicas: is a flatter end point a better one?

Per replica, at one record: sharpness s (the top Hessian eigenvalue of the training loss,
energy / length^2, as `SharpnessObserver` records it; or its Hessian trace, the mean
curvature times d; or, for comparison, the weight norm |x|, a norm-based capacity measure
that the toy-net scenarios record at every record), train loss and test loss.  The
association of s with the test loss is Spearman's rank correlation rho (invariant to any
monotone rescaling of either), with a 95 % interval on the Fisher scale, atanh(rho) +-
1.96 sqrt(1.06 / (n - 3)) (Fieller, Hartley & Pearson 1957), and the two-sided p of the
t statistic rho sqrt((n - 2) / (1 - rho^2)), or, for at most EXACT_MAX = 9 values (the
points' medians of a scan), the exact p over all n! pairings.  The interval and the p are
different approximations: at their 5 % edges they can disagree.  Because a replica that fits
the training set worse can be both sharper and worse on the test set, the partial rank
correlation given the train loss is reported too: the ranks of s and of the test loss each
residualized on the ranks of the train loss, then correlated (n - 3 degrees of freedom, interval with n - 4).
Several points (settings) are pooled by `pooled` (fixed effect on the Fisher scale, with
Cochran's Q for their heterogeneity, and the DerSimonian-Laird random-effects interval to
quote where Q rejects).  Along a run: `early_stopped` takes each replica at
its record of lowest validation loss (when the run records one, `val_loss`: an honest early
stop, the test set untouched) or of lowest test loss (an oracle: the best it reached);
`matched_fit` compares replicas of several points (learning rates, batch sizes) at equal
training loss, each at the first record where its train loss has come down to a given
level (or, as a check on fluctuations into the band, the last record before it leaves the
band for good), so that a point that has fitted more is not compared with one that has
fitted less.  Sharpness is not invariant to reparameterizations
that leave the function unchanged (Dinh et al. 2017): the comparison is meaningful within
one architecture and parameterization only.  The generalization measure (`target`) is the
test loss, or for classifiers the test error 1 - test accuracy (a cross-entropy test loss
also grows with the logits' scale on samples already classified right).  Imports neither
numba nor cupy.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ..errors import ConfigError, LangevinSimWarning
from ..io.reader import Run, check_run
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

MEASURES = {"sharpness": "sharpness (top Hessian eigenvalue)",
            "hessian_trace": "Hessian trace",
            "weight_norm": "weight norm |x|"}   # the last one for comparison: not a flatness
TARGETS = {"test_loss": "test loss",
           "test_error": "test error"}   # 1 - test_accuracy (the classifiers' records)


def _check(measure: str, target: str) -> None:
    if measure not in MEASURES:
        raise ConfigError(f"measure must be one of {tuple(MEASURES)}, got {measure!r}")
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {tuple(TARGETS)}, got {target!r}")


EXACT_MAX = 9   # `_rank_corr`: up to this many observations, p by all n! pairings


@functools.lru_cache(maxsize=None)
def _pairings(n: int) -> np.ndarray:
    """Every permutation of range(n), (n!, n) int8 (3.3 MB at n = 9), built once per n."""
    return np.array(list(itertools.permutations(range(n))), np.int8)


def _rank_corr(a: np.ndarray, b: np.ndarray, dof: int,
               exact: bool = False) -> tuple[float, tuple[float, float], float]:
    """(rho, 95 % Fisher interval, two-sided p) of the Pearson correlation of rank vectors a, b
    with `dof` + 2 effective observations.  exact (plain ranks only, not residuals): with at
    most EXACT_MAX of them, p from every pairing of a with b (the t approximation at n = 8
    halved the exact p of rho = -0.92, 0.0011 for 0.0022)."""
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    rho = float(a @ b) / den if den > 0 else float("nan")
    r = min(max(rho, -1 + 1e-15), 1 - 1e-15)
    h = 1.96 * math.sqrt(1.06 / (dof - 1))
    z = math.atanh(r)
    if exact and a.size <= EXACT_MAX and den > 0:
        # (scipy's permutation_test permutes both samples: (n!)^2 pairings, 1.3e11 at n = 9)
        null = b[_pairings(a.size)] @ a
        p = np.mean(np.abs(null) >= abs(float(a @ b)) * (1 - 1e-12))
    else:
        p = 2 * stats.t.sf(abs(r * math.sqrt(dof / (1 - r * r))), dof)
    return rho, (math.tanh(z - h), math.tanh(z + h)), float(p)


@dataclass(frozen=True)
class FlatnessGeneralization(Result):
    """Per-replica sharpness (M,), test_loss (M,), train_loss (M,) (None if not given);
    rho / ci / p: Spearman correlation of sharpness with the test loss; partial_rho /
    partial_ci / partial_p: the same given the train loss (NaN without it, or where the train
    loss's ranks fix either column's); rho NaN where either column is constant; step (M,): the
    step each replica's values were taken at, when read from a run's records (else None);
    measure: what the `sharpness` column holds (one of MEASURES); target: what the
    `test_loss` column holds (one of TARGETS); stopped_by: for an early stop, the recorded
    loss whose minimum chose each replica's record (else None)."""

    sharpness: np.ndarray
    test_loss: np.ndarray
    train_loss: np.ndarray | None
    rho: float
    ci: tuple[float, float]
    p: float
    partial_rho: float
    partial_ci: tuple[float, float]
    partial_p: float
    step: np.ndarray | None = None
    measure: str = "sharpness"
    stopped_by: str | None = None
    target: str = "test_loss"

    @property
    def n(self) -> int:
        return int(self.sharpness.size)

    def table(self, unit: str = "replicas") -> str:
        m = self.measure
        s = (f"{self.n} {unit}: {m} median {np.median(self.sharpness):.4g} "
             f"[10-90 %: {np.quantile(self.sharpness, 0.1):.4g}, "
             f"{np.quantile(self.sharpness, 0.9):.4g}], "
             f"{TARGETS[self.target]} median {np.median(self.test_loss):.4g}; ")
        if not np.isfinite(self.rho):
            same = m if np.ptp(self.sharpness) == 0 else TARGETS[self.target]
            return s + f"no rank correlation: the {same} is the same for every one of them"
        s += (f"Spearman rho({m}, test) = "
              f"{self.rho:+.3f} [{self.ci[0]:+.3f}, {self.ci[1]:+.3f}] (p = {self.p:.2g})")
        if self.train_loss is not None and not np.isfinite(self.partial_rho):
            s += f"; given the train loss none (its ranks fix the {m}'s or the target's)"
        elif self.train_loss is not None:
            s += (f"; given the train loss {self.partial_rho:+.3f} [{self.partial_ci[0]:+.3f}, "
                  f"{self.partial_ci[1]:+.3f}] (p = {self.partial_p:.2g})")
        if self.stopped_by is not None:
            s += f" (each at its lowest {self.stopped_by})"
        return s

    def plot(self, ax: Axes, **kw: Any) -> Axes:
        """The target (test loss or error) against the measure, one point per replica
        (log-log)."""
        ax.scatter(self.sharpness, self.test_loss, s=kw.pop("s", 8), **kw)
        ax.set(xscale="log", yscale="log", xlabel=MEASURES[self.measure],
               ylabel=TARGETS[self.target])
        return ax


def flatness_vs_generalization(sharpness: ArrayLike, test_loss: ArrayLike,
                               train_loss: ArrayLike | None = None, step: ArrayLike | None = None,
                               measure: str = "sharpness",
                               target: str = "test_loss") -> FlatnessGeneralization:
    """Rank correlations of per-replica sharpness (M,) with test loss (M,), also given the
    train loss (M,) when one is passed (module docstring); non-finite replicas are dropped.
    A column the same for every replica (a classifier's test error, at few replicas) has no
    rank correlation: NaN, which `pooled` leaves out.
    `step` (M,), optional: the step of each replica's values, carried along; `measure` names
    what `sharpness` holds (one of MEASURES), `target` what `test_loss` holds (TARGETS)."""
    _check(measure, target)
    cols = [np.asarray(v, np.float64).ravel() for v in (sharpness, test_loss)
            + (() if train_loss is None else (train_loss,))]
    if step is not None and np.size(step) != cols[0].size:
        raise ConfigError(f"step needs one value per replica; got {np.size(step)}, "
                          f"not {cols[0].size}")
    if len({c.size for c in cols}) != 1:
        raise ConfigError(f"sharpness, test_loss (and train_loss) need one value per replica; "
                          f"got sizes {[c.size for c in cols]}")
    keep = np.all(np.isfinite(np.vstack(cols)), axis=0)
    cols = [c[keep] for c in cols]
    step = None if step is None else np.asarray(step).ravel()[keep]
    n = cols[0].size
    if n < 5:
        raise ConfigError(f"flatness_vs_generalization needs >= 5 finite replicas, got {n}")
    ranks = [stats.rankdata(c) for c in cols]
    rho, ci, p = _rank_corr(ranks[0], ranks[1], n - 2, exact=True)
    prho, pci, pp = float("nan"), (float("nan"), float("nan")), float("nan")
    if train_loss is not None:
        X = np.column_stack([np.ones(n), ranks[2]])
        res = [r - X @ np.linalg.lstsq(X, r, rcond=None)[0] for r in ranks[:2]]
        if min(np.linalg.norm(r) for r in res) > 1e-9 * n:   # (else rounding noise: none)
            prho, pci, pp = _rank_corr(res[0], res[1], n - 3)
    return FlatnessGeneralization(cols[0], cols[1], cols[2] if train_loss is not None else None,
                                  rho, ci, p, prho, pci, pp, step, measure, target=target)


@dataclass(frozen=True)
class PooledCorrelation(Result):
    """Within-point rank correlations of k points pooled: rho with 95 % interval and p (fixed
    effect); Cochran's q (k - 1 degrees of freedom) and its p (small: the points disagree); the
    DerSimonian-Laird between-point variance tau2 (Fisher scale) and the random-effects rho,
    95 % interval and p (re_rho, re_ci, re_p: equal to the fixed-effect ones when q <= k - 1).
    `quoted(level)` is the one to quote: the random-effects estimate where Q rejects
    homogeneity at `level`, the fixed-effect one otherwise."""

    rho: float
    ci: tuple[float, float]
    p: float
    q: float
    q_p: float
    k: int
    partial: bool
    tau2: float = 0.0
    re_rho: float = float("nan")
    re_ci: tuple[float, float] = (float("nan"), float("nan"))
    re_p: float = float("nan")

    def heterogeneous(self, level: float = 0.05) -> bool:
        """Does Cochran's Q reject homogeneity of the points at `level`?"""
        return bool(self.k > 1 and self.q_p < level)

    def quoted(self, level: float = 0.05) -> tuple[float, tuple[float, float], float]:
        """(rho, 95 % interval, p): random effects where Q rejects at `level`, else fixed effect."""
        if self.heterogeneous(level):
            return self.re_rho, self.re_ci, self.re_p
        return self.rho, self.ci, self.p

    def table(self) -> str:
        what = "given the train loss" if self.partial else "raw"
        text = (f"pooled over {self.k} points ({what}): rho = {self.rho:+.3f} [{self.ci[0]:+.3f}, "
                f"{self.ci[1]:+.3f}] (p = {self.p:.2g}); "
                + (f"heterogeneity Q = {self.q:.1f} on {self.k - 1} dof (p = {self.q_p:.2g})"
                   if self.k > 1 else "one point: no heterogeneity test"))
        if self.heterogeneous():
            text += (f"; random effects (DerSimonian-Laird, tau^2 = {self.tau2:.3g}): rho = "
                     f"{self.re_rho:+.3f} [{self.re_ci[0]:+.3f}, {self.re_ci[1]:+.3f}] (p = {self.re_p:.2g})")
        return text


def pooled(fgs: Iterable[FlatnessGeneralization], partial: bool = False) -> PooledCorrelation:
    """Pooling of the points' correlations (`FlatnessGeneralization` each; the partial ones
    with `partial`) on the Fisher scale: z_i = atanh(rho_i) with variance v_i = 1.06 / (n_i - 3)
    (n_i - 4 for partial).  Fixed effect: w_i = 1 / v_i, z = sum(w_i z_i) / sum(w_i),
    var z = 1 / sum(w_i); Q = sum(w_i (z_i - z)^2).  Random effects (DerSimonian & Laird 1986):
    tau2 = max(0, (Q - (k - 1)) / (sum w_i - sum w_i^2 / sum w_i)), w*_i = 1 / (v_i + tau2),
    z* = sum(w*_i z_i) / sum(w*_i), var z* = 1 / sum(w*_i).  Intervals z +- 1.96 se mapped back
    by tanh; p two-sided normal."""
    fgs = list(fgs)
    if not fgs:
        raise ConfigError("pooled needs at least one point")
    r = np.array([f.partial_rho if partial else f.rho for f in fgs], np.float64)
    ok = np.isfinite(r)
    what = ("the measure, the target or its part not fixed by the train loss the same for "
            "every replica, or no train loss" if partial else
            "the measure or the target the same for every replica")
    if not ok.any():
        raise ConfigError(f"no point has a finite correlation ({what})")
    if not ok.all():
        warnings.warn(f"{int((~ok).sum())} of {len(fgs)} points have no "
                      f"{'partial ' if partial else ''}rank correlation ({what}): left out of "
                      "the pooling", LangevinSimWarning, stacklevel=2)
        fgs, r = [f for f, good in zip(fgs, ok) if good], r[ok]
    v = np.array([1.06 / (f.n - (4 if partial else 3)) for f in fgs])
    z = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15))
    w = 1 / v
    zbar, se = float(np.sum(w * z) / w.sum()), float(1 / math.sqrt(w.sum()))
    q = float(np.sum(w * (z - zbar) ** 2))
    k = len(fgs)
    q_p = float(stats.chi2.sf(q, k - 1)) if k > 1 else float("nan")
    tau2 = max(0.0, (q - (k - 1)) / float(w.sum() - np.sum(w * w) / w.sum())) if k > 1 else 0.0
    ws = 1 / (v + tau2)
    zre, sre = float(np.sum(ws * z) / ws.sum()), float(1 / math.sqrt(ws.sum()))

    def est(m: float, s: float) -> tuple[float, tuple[float, float], float]:
        return (math.tanh(m), (math.tanh(m - 1.96 * s), math.tanh(m + 1.96 * s)),
                float(2 * stats.norm.sf(abs(m) / s)))

    fe, re = est(zbar, se), est(zre, sre)
    return PooledCorrelation(*fe, q, q_p, k, bool(partial), tau2, *re)


ERRORS = {"test_error": "test_accuracy", "val_error": "val_accuracy"}   # 1 - the accuracy


def _recorded(name: str) -> str:
    """The record a measure, target or early-stop choice is read from."""
    return ERRORS.get(name, name)


def _series(run: Run, name: str) -> np.ndarray:
    """Records (R, M) float64 of `name`; test_error, val_error: 1 - the accuracy."""
    v = np.asarray(run[_recorded(name)], np.float64)
    return 1.0 - v if name in ERRORS else v


RELIABLE = 0.8   # `_warn_if_noisy`: the share of a measure's spread that must be signal


def _warn_if_noisy(values: np.ndarray, se: np.ndarray, step: int) -> None:
    """Warn when a Hutchinson trace's own noise (its recorded standard errors `se`) is more
    than 1 - RELIABLE of its variance across the replicas (values, se: (M,)): a correlation
    of the estimate is then attenuated toward 0 by about sqrt(reliability) (at claim 7's
    toy-net end points the 16 probes' noise was 2-3 times the spread of the exact trace)."""
    var = float(np.var(values, ddof=1)) if values.size > 1 else 0.0
    noise = float(np.mean(se ** 2))
    if noise <= (1 - RELIABLE) * var:
        return
    share, rel = (f"{noise / var:.0%}", f"{1 - noise / var:.2f}") if var > 0 else ("all", "0")
    warnings.warn(f"hessian_trace at step {step}: its probes' noise is {share} of its "
                  f"variance across the replicas (reliability {rel}), so its correlations are "
                  "attenuated toward 0 by about sqrt(reliability): take the exact trace at the "
                  "checkpoints "
                  "(potentials.sharpness.exact_hessian_trace) or record more probes",
                  LangevinSimWarning, stacklevel=4)


def _records(run: Run, measure: str, by: str | None = None, target: str = "test_loss"):
    """(step (R,), measure, train loss, target, `by` (R, M); by None: the target) at the R
    records that hold `measure` for every live replica, diverged replicas dropped (train loss
    NaN if not recorded); a warning names the records left out that hold it for only some."""
    _check(measure, target)
    by = by or target
    missing = [_recorded(k) for k in (measure, target, by) if _recorded(k) not in run.names]
    if missing:
        raise ConfigError(f"the run has no {', '.join(dict.fromkeys(missing))} records; rerun on "
                          "a potential with a test set"
                          + (" and a validation set (e.g. --set n_val=1024)"
                             if {"val_loss", "val_accuracy"} & set(missing) else "")
                          + (" that records accuracies (a classifier)"
                             if "test_accuracy" in missing else "")
                          + (" with sharpness_every > 0 (e.g. --set sharpness_every=1000)"
                             if measure in missing and measure != "weight_norm" else "")
                          + ("; or take target test_loss" if "test_accuracy" in missing else ""))
    alive = run.diverged_step < 0
    S = np.asarray(run[measure], np.float64)[:, alive]
    finite = np.isfinite(S)
    ok = np.flatnonzero(np.all(finite, axis=1))
    if not ok.size:
        raise ConfigError(f"no record holds a {measure} for every live replica")
    partial = np.flatnonzero(finite.any(axis=1) & ~finite.all(axis=1))
    if partial.size:       # (records between sharpness_every ones hold none: not these)
        steps = np.asarray(run.step)[partial]
        warnings.warn(f"{partial.size} record(s) (steps {', '.join(map(str, steps[:5]))}"
                      f"{', ...' if partial.size > 5 else ''}) hold a {measure} for only some "
                      f"live replicas ({int((~finite[partial]).any(axis=0).sum())} replica(s) "
                      "non-finite there, not flagged diverged): left out, so the analysis "
                      f"reads the records where every live replica has one (the last: step "
                      f"{int(np.asarray(run.step)[ok[-1]])})", LangevinSimWarning, stacklevel=3)
    if measure == "hessian_trace" and "hessian_trace_se" in run.names:
        _warn_if_noisy(S[ok[-1]], np.asarray(run["hessian_trace_se"], np.float64)[ok[-1], alive],
                       int(np.asarray(run.step)[ok[-1]]))
    test = _series(run, target)[ok][:, alive]
    train = (np.asarray(run["train_loss"], np.float64)[ok][:, alive]
             if "train_loss" in run.names else np.full_like(test, np.nan))
    chooser = test if by == target else _series(run, by)[ok][:, alive]
    return np.asarray(run.step)[ok], S[ok], train, test, chooser


def run_flatness(run: Run, record: int | None = None, measure: str = "sharpness",
                 target: str = "test_loss") -> FlatnessGeneralization:
    """`flatness_vs_generalization` of a run's recorded `measure` (one of MEASURES),
    `target` (test_loss, or test_error = 1 - test_accuracy) and `train_loss` at `record` (an
    index into all records; default: the last record with the measure for every live
    replica); diverged replicas dropped."""
    run = check_run(run, "run_flatness")
    steps, S, train, test, _ = _records(run, measure, target=target)
    i = len(steps) - 1
    if record is not None:
        step = int(np.asarray(run.step)[record])
        at = np.flatnonzero(steps == step)
        if not at.size:
            raise ConfigError(f"record {record} (step {step}) holds no {measure} for every "
                              f"live replica; records with it: steps {steps.tolist()}")
        i = int(at[0])
    M = S.shape[1]
    return flatness_vs_generalization(S[i], test[i], None if np.isnan(train[i]).all()
                                      else train[i], np.full(M, steps[i]), measure, target)


def early_stopped(run: Run, measure: str = "sharpness", by: str | None = None,
                  target: str = "test_loss") -> FlatnessGeneralization:
    """Each live replica at its record (among those holding `measure`) of lowest `by`:
    "val_loss" or "val_error" (1 - val_accuracy), a validation set's (an early stop as in
    practice; its test loss is an honest estimate), or "test_loss" / "test_error" (chosen
    with the test set itself: the best the replica reached, an oracle).  Default: the
    validation set's counterpart of the target where the run records it (val_error for
    test_error, val_loss for test_loss), else the target.  Its `step` holds the chosen
    steps, `stopped_by` the choice."""
    run = check_run(run, "early_stopped")
    if by is None:
        val = "val_error" if target == "test_error" else "val_loss"
        by = val if _recorded(val) in run.names else target
    steps, S, train, test, chooser = _records(run, measure, by, target)
    i = np.argmin(chooser, axis=0)
    m = np.arange(S.shape[1])
    fg = flatness_vs_generalization(S[i, m], test[i, m], None if np.isnan(train).all()
                                    else train[i, m], steps[i], measure, target)
    return dataclasses.replace(fg, stopped_by=by)


@dataclass(frozen=True)
class MatchedFit(Result):
    """Replicas of several points at equal training loss (`matched_fit`): `fg` the rank
    correlation over all of them (its `step` the steps used; replicas as the units, so it
    mixes the association within points with the one between them), `point` (m,) the index
    of each one's point, `reached` (k,) how many of each point's `live` (k,) replicas came
    into the band, `within` the points' own correlations pooled (points with >= 8 replicas in
    the band; None if fewer than one); `settings` the rank correlation across points with
    the points as the units (each point's median measure and target, points with >=
    SETTINGS_MIN replicas in the band; None with fewer than 5 such points): the test of "the
    flatter settings generalize worse / better"; `pick` which record in the band."""

    level: float
    factor: float
    fg: FlatnessGeneralization
    point: np.ndarray
    reached: np.ndarray
    live: np.ndarray
    within: PooledCorrelation | None
    pick: str = "first"
    settings: FlatnessGeneralization | None = None

    def table(self, labels: Sequence[str] | None = None) -> str:
        """Per point: replicas in the band, median step, measure and test loss; then the
        correlations across and within points."""
        labels = labels or [f"point {i}" for i in range(len(self.reached))]
        lo, hi = self.level / self.factor, self.level * self.factor
        where = (f"the first record at or below {hi:.4g} that holds its {self.fg.measure} "
                 f"(left out if already below {lo:.4g} there: it jumped past the band)"
                 if self.pick == "first" else
                 f"the last record at or above {lo:.4g} that holds its {self.fg.measure} (left "
                 f"out if above {hi:.4g} there)")
        lines = [f"train loss in [{lo:.4g}, {hi:.4g}] (level {self.level:.4g}), each replica at "
                 f"{where}:"]
        for k, lab in enumerate(labels):
            on = self.point == k
            if not on.any():
                lines.append(f"  {lab}: none of {self.live[k]} replicas in the band")
                continue
            lines.append(f"  {lab}: {on.sum()} of {self.live[k]} replicas, step median "
                         f"{np.median(self.fg.step[on]):.0f}, {self.fg.measure} median "
                         f"{np.median(self.fg.sharpness[on]):.4g}, "
                         f"{TARGETS[self.fg.target]} median "
                         f"{np.median(self.fg.test_loss[on]):.4g}")
        lines.append(f"  across points, all replicas: {self.fg.table()}")
        lines.append("  across points, the points' medians as units: "
                     + (self.settings.table("points") if self.settings is not None else
                        f"fewer than 5 points with >= {SETTINGS_MIN} replicas in the band"))
        if self.within is not None:
            lines.append(f"  within points: {self.within.table()}")
        return "\n".join(lines)


SETTINGS_MIN = 3     # replicas in the band for a point to count in `MatchedFit.settings`


def matched_fit(runs: Iterable[Run], level: float, factor: float = 1.5, measure: str = "sharpness",
                pick: str = "first", target: str = "test_loss") -> MatchedFit:
    """Compare the replicas of several runs (points) at equal training loss: each live
    replica at the first record holding `measure` whose train loss is <= level * factor,
    kept if that train loss is >= level / factor (a replica that jumps past the band between
    two such records, or never gets there, is left out; `reached` counts who is in).
    pick="last": instead at the last such record whose train loss is >= level / factor, kept
    if <= level * factor: where a replica leaves the band for good, not where it first dips
    into it (a noisy setting may dip into the band early by a fluctuation; the two picks
    bracket that effect).  `target`: test_loss or test_error, as `run_flatness`'s.  Across
    points the result has both the correlation over all replicas (`fg`) and the one over the
    points' medians (`settings`): a claim about settings has the points as its units (with a
    within-point association, the replicas' interval excludes 0 across points that are
    unrelated, far more often than its 5 %)."""
    if not (level > 0 and factor > 1):
        raise ConfigError(f"matched_fit needs level > 0 and factor > 1, got {level}, {factor}")
    if pick not in ("first", "last"):
        raise ConfigError(f"pick must be 'first' or 'last', got {pick!r}")
    cols, per = [], []
    for k, run in enumerate(check_run(runs, "matched_fit")):
        steps, S, train, test, _ = _records(check_run(run, "matched_fit"), measure, target=target)
        if np.isnan(train).all():
            raise ConfigError("matched_fit needs train_loss records")
        if pick == "first":
            past = train <= level * factor
            at = np.argmax(past, axis=0)
            inside = train[at, np.arange(S.shape[1])] >= level / factor
        else:
            past = train >= level / factor
            at = len(steps) - 1 - np.argmax(past[::-1], axis=0)
            inside = train[at, np.arange(S.shape[1])] <= level * factor
        m = np.flatnonzero(past.any(axis=0) & inside)
        i = at[m]
        cols.append((S[i, m], test[i, m], train[i, m], steps[i], np.full(m.size, k)))
        per.append((m.size, S.shape[1]))
    S, test, train, step, point = (np.concatenate(c) for c in zip(*cols))
    if S.size < 5:
        raise ConfigError(f"only {S.size} replicas reach a train loss within a factor "
                          f"{factor} of {level}; choose a level the runs pass through")
    fg = flatness_vs_generalization(S, test, train, step, measure, target)
    inner = [flatness_vs_generalization(S[point == k], test[point == k], train[point == k],
                                        measure=measure, target=target)
             for k in range(len(per)) if per[k][0] >= 8]
    reached, live = np.asarray(per).T
    units = [k for k in range(len(per)) if per[k][0] >= SETTINGS_MIN]
    settings = None
    if len(units) >= 5:
        meds = np.array([[np.median(v[point == k]) for v in (S, test, step)] for k in units])
        settings = flatness_vs_generalization(meds[:, 0], meds[:, 1], step=meds[:, 2],
                                              measure=measure, target=target)
    return MatchedFit(float(level), float(factor), fg, point, reached, live,
                      pooled(inner, partial=False) if inner else None, pick, settings)
