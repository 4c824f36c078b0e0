"""Scalar summaries of scan points, gathered into one xarray.Dataset over the scan axes.

`gather(scan, fn)` applies `fn(run) -> float | {name: float}` to every finished point of a
scan (a `langevin_sim.scan.Scan`, from `open_scan(DIR)`) and returns a Dataset with one
dimension per grid key, one ``zip`` dimension for keys varied together (those keys become
coordinates along it), and ``repeat``; points that did not finish are NaN.  Imports
neither numba, dask nor `langevin_sim.scan` (whose `Scan.summarize` calls `gather`);
xarray and pandas are imported when called.  Also the analysis scripts' small helpers:
run files of a path, figure paths, `save_figure`, the argparse type `int_at_least`, `script`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, one_line_warnings, quiet_closed_stdout, require

if TYPE_CHECKING:
    import xarray
    from matplotlib.figure import Figure

    from ..io.reader import Run
    from ..scan import Scan


def run_files(path: str | os.PathLike) -> list[Path]:
    """The run files of `path`: itself (a .h5 file) or the .h5 files in a directory's
    points/ (a scan's, or any made by hand), less the upper rungs' files of a replica-exchange
    run (`exchange.ladder.is_upper_rung`: its rung 0 file stands for the ladder)."""
    from ..exchange.ladder import is_upper_rung

    path = Path(path)
    files = [path] if path.is_file() else sorted(
        f for f in (path / "points").glob("*.h5") if not is_upper_rung(f))
    if not files:
        raise ConfigError(f"{path}: neither a run file nor a scan directory with points/*.h5")
    return files


def figure_next_to(path: str | os.PathLike, name: str) -> Path:
    """Default figure path of an analysis of `path`: DIR/<name>.png in a scan directory,
    <run stem>_<name>.png next to a run file."""
    path = Path(path)
    return path / f"{name}.png" if path.is_dir() else path.with_name(f"{path.stem}_{name}.png")


def save_figure(fig: Figure, png: str | os.PathLike | None = None,
                next_to: str | os.PathLike | None = None, name: str = "figure",
                dpi: int = 80) -> Path:
    """Lay out, save and close an analysis script's figure: to `png`, or by default to
    `figure_next_to(next_to, name)`; prints "figure: PATH" and returns the path."""
    import matplotlib.pyplot as plt

    png = Path(png) if png else figure_next_to(next_to, name)
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=dpi)
    except (OSError, ValueError) as e:      # no such folder, not writable, unknown format
        plt.close(fig)
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"{os.path.basename(sys.argv[0])}: error: cannot save the figure to {png}: {why}; "
              "pass --png PATH (a writable folder, a .png name)", file=sys.stderr)
        sys.exit(2)
    plt.close(fig)
    print(f"figure: {png}")
    return png


def script(main: Callable[[], object]) -> None:
    """Run an analysis script's main() under `errors.quiet_closed_stdout`
    (`python analysis/x.py RUN | head` exits quietly, status 141), the package's warnings
    (an incomplete run analysed, ...) one line each (`errors.one_line_warnings`)."""
    with one_line_warnings(os.path.basename(sys.argv[0]) or "analysis"), quiet_closed_stdout():
        main()


def diverged_note(run: Run, what: str) -> str | None:
    """An analysis script's line for a run some of whose replicas diverged: how many, and
    that `what` (e.g. "the fit") is about the others, a sample biased to the inner ones (the
    replicas that diverge are those far out); None where none did."""
    div = np.asarray(run.diverged_step)
    n = int(np.sum(div >= 0))
    if n == 0:
        return None
    return (f"note: {n} of {div.size} replicas diverged and are left out: {what} is about the "
            f"{div.size - n} others, which need not be a fair sample (the replicas that diverge "
            "are those far out)")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type for the analysis scripts: an integer >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


def energy_summary(run: Run, burn: float = 0.5) -> dict[str, float]:
    """Mean energy over the last (1 - burn) of the records and the replicas that never diverged.

    With E[t, m] the recorded energies (float64, energy units) of records t >= burn * n and
    the surviving replicas m = 1..M', returns
      energy_mean = mean_{t,m} E[t, m],
      energy_se   = std_m(mean_t E[t, m]) / sqrt(M')    (replicas are independent chains,
                    so this standard error needs no autocorrelation estimate; NaN if M' < 2),
      alive       = M' / M.
    """
    from ..io.reader import check_run

    run = check_run(run, "energy_summary")
    if not 0 <= burn < 1:
        raise ValueError(f"burn must be in [0, 1), got {burn}")
    n = run.n_records
    first = min(int(np.floor(burn * n)), n - 1)
    alive = run.diverged_step < 0
    if n == 0 or not alive.any():
        return {"energy_mean": np.nan, "energy_se": np.nan, "alive": float(alive.mean())}
    e = np.asarray(run.energy[first:n], dtype=np.float64)[:, alive]
    per_replica = e.mean(axis=0)
    m = per_replica.size
    se = per_replica.std(ddof=1) / np.sqrt(m) if m > 1 else np.nan
    return {"energy_mean": float(per_replica.mean()), "energy_se": float(se),
            "alive": float(alive.mean())}


def gather(scan: Scan, fn: Callable[..., float | Mapping[str, float]] | None = None,
           **kwargs: Any) -> xarray.Dataset:
    """xarray.Dataset of `fn(run, **kwargs)` over the points of `scan` (a `Scan`).

    fn returns a float (variable ``fn.__name__``) or a dict {name: float}; default
    `energy_summary`.  Dimensions: the grid keys, ``zip`` (when the scan has zip keys, which
    become coordinates along it) and ``repeat``.  Variables also hold ``seed`` and
    ``status`` per point.  Points whose status is not "done" get NaN (a "diverged" one, every
    replica diverged, has ``alive`` 0 where fn returns an ``alive``).  A list-valued key
    (e.g. a spectrum) has its values' JSON text as coordinates (`coordinate`), since an
    index needs hashable scalars: ``ds.sel(spectrum="[1.0, 3.0]")``, in the order the scan
    lists them (as text, "[10.0]" would sort before "[2.0]").
    """
    pd = require("pandas", "analysis", "gathering a scan's summaries")
    fn = energy_summary if fn is None else fn
    man = scan.manifest
    if not (man["status"] == "done").any():
        counts = ", ".join(f"{n} {st}" for st, n in man["status"].value_counts().items())
        raise ConfigError(f"no point of the scan {scan.root} is done ({counts or 'no points'}): "
                          "nothing to summarize; rerunning its `langevin-sim scan` command "
                          "finishes pending, incomplete and failed points (diverged ones need "
                          "other parameters, e.g. a smaller step)")
    zip_index: dict = {}
    listed: dict = {k: {} for k in scan.grid}      # JSON-text coordinates in the scan's order
    records = []
    for _, row in man.iterrows():
        values: dict = {}
        if row["status"] == "done":
            with scan.open(row["id"]) as run:
                out = fn(run, **kwargs)
            values = out if isinstance(out, dict) else {getattr(fn, "__name__", "value"): out}
        rec = {k: coordinate(row[k]) for k in scan.grid}
        for k in scan.grid:
            if isinstance(row[k], (list, dict)):
                listed[k].setdefault(rec[k], None)
        if scan.zip:
            rec["zip"] = zip_index.setdefault(tuple(coordinate(row[k]) for k in scan.zip),
                                              len(zip_index))
        rec.update(repeat=int(row["repeat"]), seed=int(row["seed"]), status=row["status"],
                   **{k: float(v) for k, v in values.items()})
        records.append(rec)
    index = list(scan.grid) + (["zip"] if scan.zip else []) + ["repeat"]
    df = pd.DataFrame(records)
    if "alive" in df.columns:
        df.loc[df["status"] == "diverged", "alive"] = 0.0
    ds = df.set_index(index).to_xarray()
    ds = ds.reindex({k: list(v) for k, v in listed.items() if v})   # not sorted as text
    if scan.zip:
        ds = ds.assign_coords({k: ("zip", [t[j] for t in zip_index]) for j, k in enumerate(scan.zip)})
    ds.attrs.update(scan=str(scan.root), scenario=scan.spec["scenario"],
                    scan_seed=scan.spec["scan_seed"])
    return ds


def coordinate(value: Any) -> Any:
    """A scan key's value as an xarray coordinate: a list or dict (unhashable) as its JSON
    text, e.g. [1.0, 3.0] -> "[1.0, 3.0]" (json.loads gives it back); others as they are."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def reduce_repeats(ds: xarray.Dataset, mean: str = "energy_mean",
                   se: str = "energy_se") -> xarray.Dataset:
    """Combine the ``repeat`` dimension: the mean of the per-repeat means over the R repeats
    that have one, and its standard error: sqrt(sum_r se_r^2) / R where each of them has a
    se, else (a repeat of one surviving replica has none) the spread of the R means,
    std_r / sqrt(R) (NaN for R < 2).

    Returns a Dataset with `mean`, `se` and ``n_repeat`` (R) over the remaining dimensions,
    and ``alive`` when `ds` has it: the mean over every repeat that ran (its whole replicas
    diverged included, at 0) of the fraction of replicas that never diverged; below 1,
    `mean` is over the surviving replicas only.
    """
    xr = require("xarray", "analysis", "combining a scan's repeats")
    ok = ds[mean].notnull()
    n = ok.sum("repeat")
    means = ds[mean].where(ok)
    m = means.sum("repeat") / n
    each = np.sqrt((ds[se].where(ok) ** 2).sum("repeat")) / n
    spread = means.std("repeat", ddof=1) / np.sqrt(n)
    s = xr.where((ds[se].notnull() & ok).sum("repeat") == n, each, spread)
    out = {mean: m.where(n > 0), se: s.where(n > 0), "n_repeat": n}
    if "alive" in ds:
        out["alive"] = ds["alive"].mean("repeat", skipna=True)
    return xr.Dataset(out)
