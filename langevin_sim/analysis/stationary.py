"""Stationary distributions: sampled marginals against exact Boltzmann densities."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import integrate, stats

from ..errors import ConfigError, check_positive
from ..io.reader import check_run
from .result import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

    from ..io.reader import Run


def boltzmann_masses(energy_1d: Callable[[np.ndarray], np.ndarray], temperature: float,
                     cuts: ArrayLike) -> np.ndarray:
    """The Boltzmann law exp(-U(y)/T)/Z of a 1-D energy `energy_1d(y)` split at the sorted
    `cuts` (k,): the masses (k + 1,) of (-inf, c_0], [c_0, c_1], ..., [c_{k-1}, inf), summing
    to 1, by adaptive quadrature with breakpoints at U's local minima (the 50 lowest) on a
    grid (`_scan`: fine over the cuts, then shells of doubling width outward until U is 40 T
    above its lowest and rising): at low T the density is a spike of width ~sqrt(T / U'') that
    fixed panels missed (a double well's left tail bin read 3e-10 for 1e-3 at T = 0.01, and
    at T = 1e-6 bins summed to 1e22), and that a quadrature over an infinite tail steps over
    (bins on one well of a symmetric double well at T = 0.01 gave the other well's half of
    the mass 8e-5).  U may be inf (or NaN: taken as inf) where the law has no mass."""
    temperature = check_positive("temperature", temperature)
    c = np.sort(np.asarray(cuts, np.float64))
    y, u = _scan(energy_1d, temperature, c)
    u0 = float(np.min(u))
    inner = (u[1:-1] < u[:-2]) & (u[1:-1] <= u[2:])            # a plateau's first point
    minima = y[1:-1][inner][np.argsort(u[1:-1][inner])[:50]]   # the 50 lowest
    dens = lambda x: float(np.exp(-(_energy(energy_1d, np.array([x]))[0] - u0) / temperature))  # noqa: E731

    def width(c0: float) -> float:
        """How far from c0 U rises by T (the density falls by e), from the grid: at least
        one grid spacing."""
        j = int(np.clip(np.searchsorted(y, c0), 1, y.size - 2))
        with np.errstate(invalid="ignore"):          # inf - inf where U = inf at both
            up = np.flatnonzero(u - u[j] > temperature)
        near = np.abs(y[up] - y[j]).min() if up.size else y[-1] - y[0]
        return max(float(near), float(y[j + 1] - y[j - 1]) / 2)

    def mass(a: float, b: float) -> float:
        # breakpoints at U's minima inside and at the grid's lowest U of the piece (an end,
        # where the mass sits against a cut), each ringed by points at width * 2**k: the
        # adaptive rule then resolves a spike far narrower than the piece
        inside = (y > a) & (y < b)
        peaks = [m for m in minima if a < m < b]
        if inside.any():
            peaks.append(float(y[inside][np.argmin(u[inside])]))
        pts = set()
        for c0 in peaks:
            h = width(c0)
            ring = h * 2.0 ** np.arange(0, max(0, math.ceil(math.log2((b - a) / h))) + 1)
            pts.update(float(q) for q in np.concatenate([[c0], c0 - ring, c0 + ring])
                       if a < q < b)
        pts = sorted(pts)[::max(1, math.ceil(len(pts) / 300))]      # quad's own limit
        return integrate.quad(dens, a, b, points=pts or None, limit=max(400, 2 * len(pts)))[0]

    bounds = np.concatenate([[y[0]], c, [y[-1]]])
    m = np.array([mass(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    with np.errstate(all="ignore"):
        tails = (integrate.quad(dens, -np.inf, y[0])[0], integrate.quad(dens, y[-1], np.inf)[0])
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(tails))
            and sum(tails) <= 1e-6 * m.sum()):
        raise ConfigError(f"exp(-U/T) holds mass beyond the scanned range [{y[0]:.4g}, "
                          f"{y[-1]:.4g}] (a lower well farther out, at T = {temperature:g}): "
                          "give cuts (or samples) that reach it")
    m[0] += tails[0]
    m[-1] += tails[1]
    return m / m.sum()


LOOKAHEAD = 12   # `_scan`'s shells past the first where U has risen, that must stay risen


def _scan(energy_1d: Callable[[np.ndarray], np.ndarray], temperature: float, c: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """(y, U(y)) on a sorted grid for `boltzmann_masses`: 20001 points over [c_0 - w,
    c_{k-1} + w] (w = c_{k-1} - c_0), then on each side shells of 2000 points out to distances
    w 2**j from the cuts, until past 64 w and 4 max |c| (a well beyond the cuts, as where
    all samples sit in one well) and U at the outer end is 40 T above the lowest U seen and
    not falling outward, and then LOOKAHEAD more shells (a factor 4096 farther) stay 40 T
    above it (a deeper well at 50 beside cuts at +-0.1 was stepped over: NaN or wrong
    masses); its tail then holds no mass the quadrature could miss.  Then a probe of 40001
    points spaced evenly in log distance (0.1 % apart) over 20 decades past each side's end:
    where U comes within 40 T of the lowest there, that side is scanned again out past 4
    times that far (a single cut at 0 on a tilted double well, whose barrier top rises over
    a scale of 1e-7, stopped the scan there and missed the other well at 1).  ConfigError
    where U does not rise so within 2**200 w (no normalizable Boltzmann law)."""
    w = max(float(c[-1] - c[0]), 1e-12)
    ys = [np.linspace(c[0] - w, c[-1] + w, 20001)]
    us = [_energy(energy_1d, ys[0])]
    low = float(np.min(us[0]))
    far = max(64 * w, 4 * float(np.max(np.abs(c))))
    for side, edge in ((-1.0, float(c[0])), (1.0, float(c[-1]))):
        f = far
        for _ in range(4):
            ys_s, us_s = _scan_side(energy_1d, temperature, edge, side, w, f, low,
                                    float(us[0][0] if side < 0 else us[0][-1]))
            low = min([low] + [float(np.min(v)) for v in us_s])
            dist = abs(ys_s[-1][-1] - edge) * np.logspace(0, 20, 40001)     # 0.1 % apart
            probe = _energy(energy_1d, edge + side * dist)
            below = np.flatnonzero(probe - low <= 40 * temperature)
            if not below.size:
                break
            f = 4 * float(dist[below[-1]])
        ys += ys_s
        us += us_s
    y = np.concatenate(ys)
    order = np.argsort(y, kind="stable")
    return y[order], np.concatenate(us)[order]


def _scan_side(energy_1d, temperature: float, edge: float, side: float, w: float, far: float,
               low: float, prev_end: float) -> tuple[list, list]:
    """`_scan`'s shells on one side of the cuts (points, energies), from the lowest U seen
    so far (`low`) and U at the central grid's end on that side (`prev_end`)."""
    ys, us = [], []
    quiet = 0       # shells in a row past `far`, 40 T above the lowest U and not falling
    for j in range(200):
        near_end, far_end = w * 2.0 ** j, w * 2.0 ** (j + 1)
        shell = edge + side * np.linspace(near_end, far_end, 2001)[1:]
        u = _energy(energy_1d, shell)
        ys.append(shell)
        us.append(u)
        low = min(low, float(np.min(u)))
        # not falling at the shell's end, nor from the last shell's end (twice as near): a
        # barrier's top is flat to rounding between neighbouring points (a single cut at 0
        # on a double well at T = 1e-5 stopped there and missed the other well), not over
        # a doubling; a wall of +huge, as some tests write, is flat in both
        rising = u[-1] >= u[-2] and u[-1] >= prev_end
        prev_end = float(u[-1])
        high = float(np.min(u)) - low > 40 * temperature
        ok = far_end >= far and u[-1] - low > 40 * temperature and rising
        quiet = quiet + 1 if ok and (high or quiet == 0) else 0
        if quiet == 1:
            kept = len(ys)    # the look-ahead shells past this one add nothing to the grid
        if quiet > LOOKAHEAD:
            del ys[kept:], us[kept:]     # (their points cost each fit ~2x in quad)
            return ys, us
    raise ConfigError(f"the energy does not rise 40 T = {40 * temperature:g} above its "
                      f"lowest on the {'left' if side < 0 else 'right'} within "
                      f"{far_end:.3g} of the cuts: exp(-U/T) has no normalizable "
                      "Boltzmann law to compare with")


def _energy(energy_1d: Callable[[np.ndarray], np.ndarray], y: np.ndarray) -> np.ndarray:
    """U(y) float64 with NaN as inf (no mass there), overflow quiet."""
    with np.errstate(all="ignore"):
        u = np.asarray(energy_1d(y), np.float64)
    return np.where(np.isnan(u), np.inf, u)


def boltzmann_bin_probabilities(energy_1d: Callable[[np.ndarray], np.ndarray], temperature: float,
                                edges: np.ndarray) -> np.ndarray:
    """P(bin) under exp(-U(y)/T)/Z for a 1-D energy `energy_1d(y)` (`boltzmann_masses`).

    Z is integrated over the whole line; the returned (len(edges)-1,) probabilities sum to
    the mass inside [edges[0], edges[-1]].
    """
    return boltzmann_masses(energy_1d, temperature, edges)[1:-1]


@dataclass(frozen=True)
class MarginalFit(Result):
    """Histogram of samples against exact bin probabilities, with a chi-square test.

    edges (B+1,) of the merged bins (the outer ones reach -inf / +inf), counts and expected
    (B,) sample counts and exact expectations, chi2 on dof, its p_value, n samples."""

    edges: np.ndarray
    counts: np.ndarray
    expected: np.ndarray
    chi2: float
    dof: int
    p_value: float
    n: int
    p_threshold: float = 1e-3     # the verdict's level (as `covariance`'s)

    @property
    def consistent(self) -> bool:
        """Whether the chi-square test passes at `p_threshold`."""
        return self.p_value > self.p_threshold

    @property
    def verdict(self) -> str:
        word = "consistent" if self.consistent else "INCONSISTENT"
        return (f"verdict: {word} with the Boltzmann marginal exp(-U/T)/Z (p = "
                f"{self.p_value:.3g}, level {self.p_threshold:g})")

    @property
    def z(self) -> np.ndarray:
        """Per-bin standardized residuals (counts - expected) / sqrt(expected)."""
        return (self.counts - self.expected) / np.sqrt(self.expected)

    def table(self) -> str:
        rows = [f"{'bin':>17} {'sampled':>9} {'exact':>9} {'z':>6}   (fractions of n)"]
        for a, b, k, e, zi in zip(self.edges[:-1], self.edges[1:], self.counts, self.expected, self.z):
            rows.append(f"[{a:7.3f},{b:7.3f}) {k / self.n:9.5f} {e / self.n:9.5f} {zi:6.2f}")
        rows.append(f"chi2 = {self.chi2:.1f} on {self.dof} dof, p = {self.p_value:.3g}, n = {self.n}")
        return "\n".join(rows + [self.verdict])

    def plot(self, ax: Axes, samples: ArrayLike | None = None,
             energy_1d: Callable[[np.ndarray], np.ndarray] | None = None,
             temperature: float | None = None, bins: int = 40) -> Axes:
        """Sampled against exact density (per unit x).  Default: the fit's own finite bins
        (the outer tail bins are left out).  With `samples` (any shape), `energy_1d` and
        `temperature`: a histogram of the samples in `bins` bins on their range against the
        exact density exp(-U/T)/Z, normalized on the whole line."""
        if samples is not None and energy_1d is not None and temperature is not None:
            x = np.asarray(samples, np.float64).ravel()
            x = x[np.isfinite(x)]
            edges = np.histogram_bin_edges(x, bins=bins)
            y = np.linspace(edges[0], edges[-1], 400)
            u = np.asarray(energy_1d(y), np.float64)
            dens = np.exp(-(u - u.min()) / temperature)
            mass = boltzmann_bin_probabilities(energy_1d, temperature, edges[[0, -1]])[0]
            ax.hist(x, bins=edges, density=True, alpha=0.5, label="sampled")
            ax.plot(y, dens * mass / np.trapezoid(dens, y), "k-", label=r"exact $e^{-U/T}/Z$")
        else:
            finite = np.isfinite(self.edges[:-1]) & np.isfinite(self.edges[1:])
            if finite.any():
                e = self.edges[np.r_[finite, False] | np.r_[False, finite]]
                width = np.diff(e)
                ax.stairs(self.counts[finite] / (self.n * width), e, fill=True, alpha=0.5,
                          label="sampled")
                ax.stairs(self.expected[finite] / (self.n * width), e, color="k",
                          label="exact (bin average)")
        ax.set(xlabel="x", ylabel="density",
               title=f"chi2/dof = {self.chi2:.1f}/{self.dof}, p = {self.p_value:.2g}")
        ax.legend()
        return ax


MIN_EXPECTED = 20.0     # fit_marginal's least expected count per bin; it needs 2x the samples


def fit_marginal(samples: ArrayLike, energy_1d: Callable[[np.ndarray], np.ndarray],
                 temperature: float, bins: int = 40,
                 lo: float | None = None, hi: float | None = None,
                 min_expected: float = MIN_EXPECTED) -> MarginalFit:
    """Chi-square goodness of fit of independent `samples` (any shape) to exp(-U/T).

    Samples must be independent (e.g. distinct replicas at one record, or records spaced
    beyond the correlation time).  Bins with fewer than `min_expected` expected counts are
    merged into their neighbours; samples outside [lo, hi] form two tail bins.  ConfigError
    when bins < 1 or the samples are too few for >= 2 merged bins (a test with >= 1 dof).
    """
    if int(bins) < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    s = np.asarray(samples, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < 2 * min_expected:
        raise ConfigError(f"{s.size} finite samples are too few for a chi-square test (it needs "
                          f">= {2 * min_expected:g}: two bins of >= {min_expected:g} expected)")
    lo = np.quantile(s, 0.001) if lo is None else lo
    hi = np.quantile(s, 0.999) if hi is None else hi
    edges = np.linspace(lo, hi, bins + 1)
    p = boltzmann_masses(energy_1d, temperature, edges)     # tails, the bins, the right tail
    counts = np.concatenate([[np.sum(s < lo)], np.histogram(s, edges)[0], [np.sum(s > hi)]])
    full_edges = np.concatenate([[-np.inf], edges, [np.inf]])
    n = s.size
    exp = p * n
    # merge sparse bins left to right
    c_m, e_m, ed = [], [], [full_edges[0]]
    acc_c = acc_e = 0.0
    for k in range(len(exp)):
        acc_c += counts[k]
        acc_e += exp[k]
        if acc_e >= min_expected:
            c_m.append(acc_c)
            e_m.append(acc_e)
            ed.append(full_edges[k + 1])
            acc_c = acc_e = 0.0
    if (acc_e > 0 or acc_c > 0) and c_m:     # samples in trailing bins of no mass count too
        c_m[-1] += acc_c
        e_m[-1] += acc_e
        ed[-1] = full_edges[-1]
    if len(c_m) < 2:
        raise ConfigError(f"{n} samples fill fewer than 2 bins of >= {min_expected:g} expected "
                          "counts: no chi-square test; pool more records or run more replicas")
    c_m, e_m = np.array(c_m), np.array(e_m)
    chi2 = float(np.sum((c_m - e_m) ** 2 / e_m))
    dof = len(c_m) - 1
    return MarginalFit(np.array(ed), c_m, e_m, chi2, dof, float(stats.chi2.sf(chi2, dof)), n)


def constant_temperature(config: dict) -> float:
    """The constant temperature of a run's dynamics (energy units); ConfigError if it is
    scheduled or the dynamics has none (AdamW)."""
    dyn = config["dynamics"]
    t = dyn.get("temperature")
    if t is None:
        raise ConfigError(f"the run's {dyn['class']} dynamics has no temperature; this analysis "
                          "needs a run at a constant temperature (Langevin dynamics, or SGD with "
                          "temperature > 0)")
    if t["kind"] != "constant":
        raise ConfigError("the run's temperature is scheduled (no stationary law at one "
                          "temperature); pass temperature= to compare with one")
    return float(t["start"])


def run_marginal_fit(run: Run, *, record: int = -1, temperature: float | None = None,
                     bins: int = 40, records: int = 1) -> MarginalFit:
    """Fit the last `records` records' (or `record`'s) coordinates of a separable-potential
    run to the exact marginal.  Coordinates and replicas are independent samples when the
    potential is separable; records should be spaced beyond the correlation time.
    ConfigError if the potential has no `marginal_energy`."""
    run = check_run(run, "run_marginal_fit")
    pot = run.potential
    if not hasattr(pot, "marginal_energy"):
        name = type(pot).__name__
        raise ConfigError(
            "the stationary-marginal analysis needs a separable potential (independent "
            f"coordinates with one 1-D `marginal_energy`, such as DoubleWell); this run's {name} "
            f"is not.  Compare the run's records with {name}'s own stationary law instead: e.g. "
            "for a Quadratic its exact Gaussian law by analysis/covariance.py "
            "(`langevin_sim.analysis.covariance`), or the recorded energies and observables")
    T = constant_temperature(run.config) if temperature is None else temperature
    if not T > 0:
        raise ConfigError(f"the Boltzmann marginal exp(-U/T) needs a temperature > 0; "
                          + (f"this run's {run.config['dynamics']['class']} has T = {T:g} (no "
                             "Langevin noise: it samples no Boltzmann law at T = 0)"
                             if temperature is None else f"got temperature={temperature}"))
    x = alive_positions(run, records, record, smaller="step")
    return fit_marginal(x, pot.marginal_energy, T, bins=bins)


def alive_positions(run: Run, records: int = 1, record: int = -1, smaller: str = "step"
                    ) -> np.ndarray:
    """Positions (records, M', d) float64 of the replicas that never diverged, at the last
    `records` records (or at record `record` alone); ConfigError when the run recorded no
    positions, records is outside 1..n_records, or every replica diverged (then the fix named
    is a smaller `smaller`, the dynamics' step parameter)."""
    if "positions" not in run.names:
        raise ConfigError("the run recorded no positions; rerun it with record_positions "
                          "true (--set record_positions=true)")
    n = run.n_records
    if not 1 <= int(records) <= n:
        raise ConfigError(f"records must be in 1..{n} (the run has {n} records), got {records}")
    if not -n <= int(record) < n:
        raise ConfigError(f"record {record} is outside the run's {n} records (0..{n - 1}, or "
                          f"-{n}..-1 from the end)")
    alive = run.diverged_step < 0
    if not alive.any():
        raise ConfigError(f"all {alive.size} replicas diverged: nothing to fit; rerun with a "
                          f"smaller {smaller}")
    sel = slice(n - int(records), n) if record == -1 else slice(record, record + 1)
    return np.asarray(run.positions[sel], np.float64)[:, alive]
