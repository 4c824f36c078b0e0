"""Convergence diagnostics of recorded series through the ArviZ stack (arviz-stats).

Layout: a series is an array of shape (n_records, M, ...) -- records x replicas x trailing
components, the run-file layout -- or a `Run` and a series name.  Replicas are the chains
and records the draws of ArviZ; every statistic is computed per trailing component with
`arviz_stats.base.array_stats` (rank-normalized split R-hat, nested R-hat, bulk / tail /
mean ESS with Geyer's initial monotone sequence, MCSE, FFT autocovariance).  Units: ESS
in samples, integrated autocorrelation times in records of the series (x steps per record
for steps).

A sparse series -- an observable recorded every k-th record, NaN for every replica at the
records in between (SharpnessObserver's sharpness and hessian_trace) -- is analysed on the
records where it was recorded: its records are then k run records apart.  A statistic
undefined for a component (a constant series; R-hat of one replica; nested R-hat with fewer
than 2 replicas per superchain) is NaN, with the reason in `SeriesDiagnostics.undefined`.

`burn_in` detects the end of the initial transient with MSER (White 1997) on the
replica-mean series.  Imports neither numba nor cupy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, check_int, require
from ..io.reader import Run, check_run
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

QUANTILES = (0.05, 0.5, 0.95)
MIN_DRAWS = 4   # ArviZ's minimum number of draws (records) per chain (replica)
MIN_ESS_DRAWS = 10   # below: ArviZ's ESS of independent draws is 2.9-3.9 x theirs (at 10: 1.4)
REPLICA_SE_MIN = 64  # replicas from which a mean's MCSE is their averages' spread (`replica_mcse`)
CONSTANT_RTOL = 64 * np.finfo(float).eps   # spread / max |value| of a constant (to rounding)


@dataclass(frozen=True)
class Records:
    """A series at the records where it was recorded, with diverged replicas removed.

    values: (n, M', ...) float64; step: (n,) step of each record (the record index for a
    bare array); dropped: replicas removed (diverged, or non-finite at a kept record);
    unrecorded: records left out because no live replica has a value there (a sparse
    series, recorded every k-th record).
    """

    name: str
    values: np.ndarray
    step: np.ndarray
    dropped: int
    unrecorded: int = 0

    @property
    def steps_per_record(self) -> float:
        return float(np.median(np.diff(self.step))) if self.step.size > 1 else 1.0

    def after(self, burn: int) -> "Records":
        """The records from index `burn` on (a count of records to drop, >= 0)."""
        burn = check_int("burn (records to drop)", burn, minimum=0)
        return replace(self, values=self.values[burn:], step=self.step[burn:])

    def since(self, step: int) -> "Records":
        """The records at steps >= `step`."""
        return self.after(int(np.searchsorted(self.step, step)))


def load_records(data: Run | Records | ArrayLike, name: str | None = None,
                 components: int | None = None) -> Records:
    """`Records` of an (n_records, M, ...) array or of series `name` of a `Run` (a `Records`
    is returned as is).  components: keep the first C components of each record (the trailing
    dimensions flattened, (n_records, M, C)), read from a run file as a slice: only they are
    loaded (all d components of positions took ~4x the series in memory for 8 diagnosed).

    Records at which every live replica is non-finite are left out (a sparse series: an
    observable recorded every k-th record is NaN in between).  Then a run's replicas with
    diverged_step >= 0 are dropped, and replicas non-finite at a kept record (the run file
    writes NaN after a divergence).  For an array, all replicas diverging at one record are
    indistinguishable from a series no longer recorded: its records up to there are kept.
    ConfigError for a series the run did not record."""
    data = check_run(data, "load_records")
    if isinstance(data, Records):
        return data
    if isinstance(data, Run):
        if name is None:
            raise ConfigError(f"name the series to analyse: one of {data.names}")
        if name == "positions" and name not in data:
            raise ConfigError("the run recorded no positions; rerun it with record_positions "
                              "true (--set record_positions=true)")
        if name not in data:
            raise ConfigError(f"the run recorded no {name!r} series; name one of {data.names}")
        series = data[name]
        if components is not None and len(series.shape) == 3:
            series = series[:, :, :int(components)]
        values = np.asarray(series, dtype=np.float64)
        alive = data.diverged_step < 0
        step = np.asarray(data.step)
    else:
        values = np.asarray(data, dtype=np.float64)
        if values.ndim < 2:
            raise ConfigError(f"a series needs shape (n_records, replicas, ...), got "
                              f"{values.shape}")
        alive = np.ones(values.shape[1], bool)
        step = np.arange(values.shape[0])
        name = "series" if name is None else name
    if components is not None and values.ndim > 2:
        components = check_int("components", components)
        values = values.reshape(values.shape[0], values.shape[1], -1)[..., :components]
    if values.size == 0:
        raise ConfigError(f"{name!r} holds no values: shape {values.shape}")
    finite = np.isfinite(values).reshape(values.shape[0], values.shape[1], -1).all(axis=2)
    recorded = finite[:, alive].any(axis=1)
    alive &= finite[recorded].all(axis=0)
    if not (recorded.any() and alive.any()):
        raise ConfigError(f"every replica of {name!r} diverged or holds non-finite values")
    return Records(name, values[recorded][:, alive], step[recorded],
                   int(alive.size - alive.sum()), int(recorded.size - recorded.sum()))


def _chains_draws(values: np.ndarray) -> np.ndarray:
    """(n, M, ...) -> (..., M, n): ArviZ's (chain, draw) as the last two axes."""
    return np.moveaxis(np.moveaxis(values, 0, -1), 0, -2)


def _as_chains(values, where: str) -> np.ndarray:
    """`values` as an array of shape (n_records, replicas, ...), or ConfigError naming `where`."""
    values = np.asarray(values)
    if values.ndim < 2:
        raise ConfigError(f"{where} needs a series of shape (n_records, replicas, ...), got "
                          f"{values.shape}; one chain x is x[:, None]")
    return values


def ess(values: np.ndarray, method: str = "bulk",
        prob: float | tuple[float, float] | None = None) -> np.ndarray:
    """ArviZ effective sample size of (n, M, ...) values, per trailing component (...).

    method "bulk" (rank-normalized), "mean", "tail" (min of the 5% and 95% quantile ESS
    unless `prob` says otherwise), or any other `array_stats.ess` method."""
    values = _as_chains(values, "ess")
    array_stats = require("arviz_stats.base", "analysis", "convergence diagnostics").array_stats
    if method == "tail" and prob is None:
        prob = (QUANTILES[0], QUANTILES[-1])
    return np.asarray(array_stats.ess(_chains_draws(values), method=method, prob=prob))


def replica_mcse(values: np.ndarray) -> np.ndarray:
    """Standard error of the pooled mean of (n, M, ...) values over records and replicas, per
    trailing component: the spread of the M replicas' own means over their n records /
    sqrt(M).  The replicas are independent chains, so this is exact at any n, with no model
    of the autocorrelation (its own relative error ~ 1 / sqrt(2 (M - 1))).  ArviZ's
    sd / sqrt(ESS) is not, for many short chains: on AR(1) series with 256 chains its IAT
    read 0.52-1.47x the exact one at n = 1-30 IATs (x 1.34 at n = 6, x 1.13 at 25; within
    2 % beyond ~60)."""
    values = np.asarray(values, np.float64)
    m = values.shape[1]
    return values.mean(axis=0).std(axis=0, ddof=1) / np.sqrt(m)


def integrated_autocorrelation_time(values: np.ndarray) -> np.ndarray:
    """tau = n M / ESS_mean in records, per trailing component of (n, M, ...) values.

    For an AR(1) series of coefficient phi, tau = (1 + phi) / (1 - phi)."""
    values = _as_chains(values, "integrated_autocorrelation_time")
    n, m = values.shape[:2]
    return n * m / ess(values, "mean")


COLUMNS = {"ess_bulk": "ESS bulk", "ess_tail": "ESS tail", "ess_mean": "IAT", "mcse_mean": "mcse",
           "rhat": "R-hat", "rhat_nested": "nR-hat"}   # statistic -> its column in the table


def _fmt(value: float, width: int, spec: str) -> str:
    """`value` formatted as `width` + `spec`, or n/a right-aligned in `width` when NaN."""
    return f"{'n/a':>{width}}" if np.isnan(value) else f"{value:{width}{spec}}"


@dataclass(frozen=True)
class SeriesDiagnostics(Result):
    """ArviZ diagnostics of one component of one series (draws = records, chains = replicas).

    mean, sd, quantiles: pooled over records and replicas.  ess_*: effective sample sizes
    (bulk, tail, of the mean).  iat = n_draws n_chains / ess_mean, in records of the series
    (steps_per_record steps each).  mcse_mean: `replica_mcse` (the spread of the replicas'
    means) with >= REPLICA_SE_MIN replicas, else ArviZ's sd / sqrt(ess_mean); mcse_quantiles:
    ArviZ's quantile MCSE at QUANTILES.  rhat: rank-normalized split R-hat over replicas;
    rhat_nested: nested R-hat with `superchains` groups of consecutive replicas (the
    remainder of M / superchains left out).  acf: the multi-chain autocorrelation at lags
    0.. (records), the one ArviZ's ESS sums (so iat ~ 1 + 2 sum acf).  undefined:
    {statistic: reason} for the statistics (keys of COLUMNS) undefined here, which are NaN:
    a constant component (spread <= CONSTANT_RTOL max |value|) has no ESS, IAT, R-hat or
    nested R-hat (its MCSE is ~0); one whose replicas are each constant, at different
    values, has no ESS, IAT or MCSE (R-hat inf or >> 1: not mixed); R-hat needs >= 2 replicas,
    nested R-hat >= 2 per superchain.
    """

    name: str
    component: tuple[int, ...]
    n_draws: int
    n_chains: int
    dropped: int
    steps_per_record: float
    mean: float
    sd: float
    quantiles: np.ndarray
    ess_bulk: float
    ess_tail: float
    ess_mean: float
    mcse_mean: float
    mcse_quantiles: np.ndarray
    rhat: float
    rhat_nested: float
    superchains: int
    acf: np.ndarray
    undefined: dict = field(default_factory=dict)

    @property
    def iat(self) -> float:
        """Integrated autocorrelation time in records: n_draws n_chains / ess_mean."""
        return self.n_draws * self.n_chains / self.ess_mean

    @property
    def iat_steps(self) -> float:
        return self.iat * self.steps_per_record

    @property
    def label(self) -> str:
        comp = ",".join(map(str, self.component))
        return f"{self.name}[{comp}]" if self.component else self.name

    HEADER = (f"{'series':<16} {'mean':>11} {'mcse':>9} {'sd':>9} {'ESS bulk':>9} {'ESS tail':>9}"
              f" {'IAT[rec]':>9} {'IAT[step]':>9} {'R-hat':>7} {'nR-hat':>7}")

    def row(self) -> str:
        return (f"{self.label:<16} {self.mean:11.4g} {_fmt(self.mcse_mean, 9, '.2g')} "
                f"{self.sd:9.3g} {_fmt(self.ess_bulk, 9, '.0f')} {_fmt(self.ess_tail, 9, '.0f')} "
                f"{_fmt(self.iat, 9, '.2f')} {_fmt(self.iat_steps, 9, '.4g')} "
                + " ".join(_fmt(r, 7, ".1e" if r >= 1e3 else ".4f")   # stuck replicas: >> 1
                           for r in (self.rhat, self.rhat_nested)))

    def table(self) -> str:
        q = "  ".join(f"q{p:g} = {v:.4g} ± {e:.2g}" for p, v, e in
                      zip(QUANTILES, self.quantiles, self.mcse_quantiles))
        return "\n".join([self.HEADER, self.row(),
                          f"{self.n_draws} records ({self.steps_per_record:g} steps apart) x "
                          f"{self.n_chains} replicas ({self.dropped} dropped), IAT = "
                          f"{_fmt(self.iat_steps, 0, '.4g')} steps; {q}",
                          *undefined_notes([self])])

    def plot(self, ax: Axes) -> None:
        """Autocorrelation function against lag, with the AR(1) law of the same IAT."""
        lag = np.arange(self.acf.size)
        rho = (self.iat - 1) / (self.iat + 1)
        ax.plot(lag, self.acf, "o-", ms=3, label=f"{self.label} (multi-chain)")
        ax.plot(lag, np.sign(rho) ** lag * np.abs(rho) ** lag, "k--",
                label=f"AR(1) with IAT {self.iat:.3g}")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(xlabel=f"lag [records, {self.steps_per_record:g} steps each]",
               ylabel="autocorrelation")
        ax.legend(fontsize="small")


def diagnose(data: Run | Records | ArrayLike, name: str | None = None, *, burn: int = 0,
             superchains: int = 4, max_lag: int = 50) -> tuple[SeriesDiagnostics, ...]:
    """ArviZ diagnostics of every trailing component of a series, after `burn` records.

    data: (n_records, M, ...) array, `Records`, or a `Run` with series `name` (diverged
    replicas dropped; a sparse series on the records where it was recorded).  Needs >=
    MIN_DRAWS records after burn-in.  Statistics undefined for a component are NaN, the
    reason in its `undefined`.  Returns one `SeriesDiagnostics` per component, C order."""
    array_stats = require("arviz_stats.base", "analysis", "convergence diagnostics").array_stats
    if superchains < 0:
        raise ConfigError(f"superchains must be >= 0 (0: no nested R-hat), got {superchains}")
    rec = load_records(data, name).after(int(burn))
    x = rec.values
    n, m = x.shape[:2]
    if n < MIN_DRAWS:
        raise ConfigError(f"{rec.name}: {n} records after burn-in {burn}; ArviZ needs >= "
                          f"{MIN_DRAWS} (record more often, run longer or lower the burn-in)")
    cd = _chains_draws(x)
    per_group = m // superchains if superchains > 0 else 0
    with np.errstate(divide="ignore", invalid="ignore"):    # 0 / 0 where undefined: see below
        if per_group >= 2:
            ids = np.repeat(np.arange(superchains), per_group)
            nested = array_stats.rhat_nested(cd[..., : ids.size, :], superchain_ids=ids)
        else:
            nested = np.full(x.shape[2:], np.nan)
        stats = {
            "mean": x.mean(axis=(0, 1)), "sd": x.std(axis=(0, 1), ddof=1),
            "ess_bulk": ess(x, "bulk"), "ess_tail": ess(x, "tail"), "ess_mean": ess(x, "mean"),
            "mcse_mean": (replica_mcse(x) if m >= REPLICA_SE_MIN else
                          array_stats.mcse(cd, method="mean")),
            "rhat": array_stats.rhat(cd) if m >= 2 else np.full(x.shape[2:], np.nan),
            "rhat_nested": nested,
        }
        mcse_q = np.stack([array_stats.mcse(cd, method="quantile", prob=p) for p in QUANTILES],
                          -1)
        acf = _multichain_acf(cd, min(max_lag, n - 1) + 1)
    quant = np.moveaxis(np.quantile(x, QUANTILES, axis=(0, 1)), 0, -1)
    out = []
    for idx in np.ndindex(x.shape[2:]):
        s = {k: float(np.asarray(v)[idx]) for k, v in stats.items()}
        why = _undefined(x[(slice(None), slice(None)) + idx], s, superchains)
        s.update(dict.fromkeys(why, np.nan))
        out.append(SeriesDiagnostics(
            rec.name, idx, n, m, rec.dropped, rec.steps_per_record, **s,
            quantiles=quant[idx], mcse_quantiles=mcse_q[idx],
            superchains=superchains if per_group >= 2 else 0, acf=acf[idx], undefined=why))
    return tuple(out)


def _undefined(v: np.ndarray, stats: dict, superchains: int) -> dict[str, str]:
    """{statistic: reason} for the statistics of one component's (n, M) values `v` that are
    undefined, given ArviZ's values `stats`; in COLUMNS order."""
    m = v.shape[1]
    why = {}
    if m < 2:
        why["rhat"] = "1 replica; R-hat compares >= 2"
    if superchains == 0:
        why["rhat_nested"] = "no superchains (superchains = 0)"
    elif m // superchains < 2:
        why["rhat_nested"] = (f"{m} replicas in {superchains} superchains; nested R-hat needs "
                              ">= 2 replicas per superchain")
    tol = CONSTANT_RTOL * np.abs(v).max()
    if np.ptp(v) <= tol:
        for k in ("ess_bulk", "ess_tail", "ess_mean", "rhat", "rhat_nested"):
            why.setdefault(k, f"constant (every value is {v.flat[0]:.6g} up to rounding)")
    elif (np.ptp(v, axis=0) <= tol).all():
        for k in ("ess_bulk", "ess_tail", "ess_mean", "mcse_mean"):
            why[k] = ("each replica constant, at different values: no within-replica "
                      "variance (replicas not mixed: R-hat >> 1)")
    n_all = v.shape[0] * m
    cap = n_all * np.log10(n_all) if n_all > 1 else np.inf
    if v.shape[0] < MIN_ESS_DRAWS:
        for k in ("ess_bulk", "ess_tail", "ess_mean", "mcse_mean"):
            why.setdefault(k, f"{v.shape[0]} records per replica: ArviZ's ESS from fewer than "
                              f"{MIN_ESS_DRAWS} is biased high (x 2.9-3.9 for independent draws, "
                              "the IAT and MCSE low with it); record more often or run longer")
    capped = [k for k in ("ess_bulk", "ess_tail", "ess_mean") if stats[k] >= cap * (1 - 1e-9)]
    if "ess_mean" in capped:
        capped.append("mcse_mean")
    for k in capped:                         # ArviZ clips an ESS there: no estimate
        why.setdefault(k, f"ESS at ArviZ's cap n M log10(n M) = {cap:.0f} (an IAT below "
                          f"1/log10(n M) records): the autocorrelation of {v.shape[0]} records "
                          "per replica could not be estimated; record more often or run longer")
    for k in COLUMNS:
        if np.isnan(stats[k]):               # e.g. split halves constant (n odd)
            why.setdefault(k, "0 / 0 in ArviZ: no variance within or between split replicas")
    return {k: why[k] for k in COLUMNS if k in why}


def _multichain_acf(cd: np.ndarray, lags: int) -> np.ndarray:
    """Multi-chain autocorrelation (Vehtari et al. 2021, eq. 10) of (..., M, n) draws, the
    one ArviZ's ESS sums: rho_t = 1 - (W - mean_m acov_m(t)) / var+, with W the mean
    within-chain variance and var+ = W (n-1)/n + Var_m(chain means)."""
    array_stats = require("arviz_stats.base", "analysis", "convergence diagnostics").array_stats
    n = cd.shape[-1]
    acov = np.asarray(array_stats.autocov(cd, axis=-1)).mean(axis=-2)[..., :lags]
    w = acov[..., :1] * n / (n - 1)
    chain_var = cd.mean(axis=-1).var(axis=-1, ddof=1)[..., None] if cd.shape[-2] > 1 else 0.0
    return 1 - (w - acov) / (w * (n - 1) / n + chain_var)


def undefined_notes(results: Sequence[SeriesDiagnostics]) -> list[str]:
    """One line per reason some statistic of `results` is undefined (n/a in the table): its
    columns, the rows it concerns ("every row" when all do) and the reason."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in results:
        cols: dict[str, list[str]] = {}
        for stat, why in r.undefined.items():
            cols.setdefault(why, []).append(COLUMNS[stat])
        for why, c in cols.items():
            groups.setdefault((", ".join(c), why), []).append(r.label)
    return [f"n/a {c} of {'every row' if 1 < len(rows) == len(results) else ', '.join(rows)}: "
            f"{why}" for (c, why), rows in groups.items()]


def diagnostics_table(results: Sequence[SeriesDiagnostics]) -> str:
    """One header and one row per `SeriesDiagnostics` in `results`, then `undefined_notes`."""
    return "\n".join([SeriesDiagnostics.HEADER] + [r.row() for r in results]
                     + undefined_notes(results))


@dataclass(frozen=True)
class BurnIn(Result):
    """MSER truncation point of a series (White 1997).

    With Y_t the replica mean of component c at record t (batched in means of `batch`
    records), MSER(k) = sum_{t>=k} (Y_t - mean(Y_k..))^2 / (n_b - k)^2 estimates the
    squared error of the mean after discarding k batches; k* = argmin over the first half.
    record: the first kept record (max over components); per_component: (C,) records;
    converged: False when, for some component, MSER over the first three quarters is
    smallest in the second half (the transient outlasts half the run: run longer).  The
    last quarter is left out because MSER of a few batches is noise-dominated.
    replica_mean, replica_se: (n, C) series and its standard error sd_replicas / sqrt(M),
    for the plot.
    """

    name: str
    record: int
    step: int
    n_records: int
    per_component: np.ndarray
    converged: bool
    batch: int
    replica_mean: np.ndarray
    replica_se: np.ndarray

    def table(self) -> str:
        worst = int(np.argmax(self.per_component))
        verdict = "converged" if self.converged else \
            "NOT converged: the MSER minimum lies in the second half; run longer"
        return (f"burn-in of {self.name} (MSER, batches of {self.batch} records): record "
                f"{self.record} of {self.n_records} (step {self.step}), set by component "
                f"{worst}; {verdict}")

    def plot(self, ax: Axes) -> None:
        """The replica-mean series of the deciding component, +-2 se, and the burn-in."""
        c = int(np.argmax(self.per_component))
        t = np.arange(self.n_records)
        y, s = self.replica_mean[:, c], self.replica_se[:, c]
        ax.fill_between(t, y - 2 * s, y + 2 * s, alpha=0.3, lw=0)
        what = self.name if self.per_component.size == 1 else f"{self.name} component {c}"
        ax.plot(t, y, "-", lw=1, label=f"{what}: replica mean ± 2 se")
        ax.axvline(self.record, color="r", ls="--", label=f"MSER burn-in: record {self.record}")
        ax.set(xlabel="record", ylabel=self.name)
        ax.legend(fontsize="small")


def mser(y: np.ndarray) -> np.ndarray:
    """MSER(k) = sum_{t>=k} (y_t - mean(y_k..))^2 / (n - k)^2 for k = 0..n-1, y of shape (n, C)."""
    s1 = np.cumsum(y[::-1], axis=0)[::-1]           # suffix sums over t >= k
    s2 = np.cumsum(y[::-1] ** 2, axis=0)[::-1]
    count = np.arange(y.shape[0], 0, -1)[:, None]   # n - k
    return (s2 - s1 ** 2 / count) / count ** 2


def burn_in(data: Run | Records | ArrayLike, name: str | None = None, *, batch: int = 1) -> BurnIn:
    """MSER burn-in of every component of a (n, M, ...) series (or a `Run`'s series `name`).

    Returns the first record to keep: the largest over components of the MSER truncation
    point of the replica-mean series (see `BurnIn`)."""
    batch = check_int("batch (records per batch)", batch)
    rec = load_records(data, name)
    x = rec.values.reshape(rec.values.shape[0], rec.values.shape[1], -1)
    n = x.shape[0]
    nb = n // batch
    if nb < 4:
        raise ConfigError(f"{rec.name}: burn-in detection needs >= 4 batches of {batch} "
                          f"records, got {n} records")
    y = x.mean(axis=1)
    yb = y[: nb * batch].reshape(nb, batch, -1).mean(axis=1)
    curve = mser(yb)[: (3 * nb) // 4]       # the noisy last quarter is never a candidate
    half = (nb + 1) // 2
    k = np.argmin(curve[:half], axis=0)
    converged = bool(np.all(np.argmin(curve, axis=0) < half))
    per = k * batch
    first = int(per.max())
    se = x.std(axis=1, ddof=1) / np.sqrt(x.shape[1]) if x.shape[1] > 1 else np.zeros_like(y)
    return BurnIn(rec.name, first, int(rec.step[first]), n, per, converged, batch, y, se)
