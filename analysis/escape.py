"""Escape times of one or several runs: survival, rate, MFPT against theory, Arrhenius fit.

usage: python analysis/escape.py RUN.h5 [RUN.h5 ... | SCAN_DIR] [--label L] [--png PATH]
                                 [--normal 1,0 --offset 0]
Reads the runs' first-passage observer (Simulation(..., first_passage=FirstPassage(...));
scenarios/double_well.py: --set start=left --set first_passage=true).  Runs without one are
analysed from their records: the entry time is the first record inside the half-space
{normal . x > offset} (default x_1 > 0, on DoubleWell runs only), which can be many record
spacings late (a replica can enter and leave again between two records), so their MFPT is
only an upper bound and is not
compared with the quadrature (a bound below it still disagrees).  A scan directory
contributes its finished points.  Prints per run the escape rate with its 95% interval, the
mean first-passage time against the exact quadrature and Kramers (DoubleWell runs), a
verdict line, and across temperatures the Arrhenius fit; saves survival curves and the
Arrhenius plot as a PNG.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langevin_sim import ConfigError, LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.escape import escape_summary  # noqa: E402
from langevin_sim.analysis.scan import save_figure, script  # noqa: E402
from langevin_sim.first_passage import HalfSpace  # noqa: E402


def run_paths(items):
    """Run files from the arguments: files as they are, scan directories' finished points."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            from langevin_sim.scan import open_scan

            scan = open_scan(p)
            done = scan.manifest[scan.manifest["status"] == "done"]
            out += [p / "points" / f"{pid}.h5" for pid in done["id"]]
        else:
            out.append(p)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run files or scan directories")
    ap.add_argument("--label", help="first-passage region label (default: the first)")
    ap.add_argument("--normal", help="records only: half-space normal, e.g. 1,0 (default 1)")
    ap.add_argument("--offset", type=float, help="records only: half-space offset (default 0)")
    ap.add_argument("--png", help="figure path (default: next to the first run, *_escape.png)")
    a = ap.parse_args(argv)
    runs = []
    try:
        paths = run_paths(a.runs)
        if not paths:
            raise LangevinSimError("no finished runs found in " + ", ".join(a.runs))
        runs = [open_run(p) for p in paths]
        notes = [f"{Path(r.path).stem}: {n} of {r.diverged_step.size} replicas diverged; "
                 "each counts as censored at its divergence (not as escaped): if they diverged "
                 "because they escaped, the rates above are too low"
                 for r in runs if (n := int(np.sum(r.diverged_step >= 0)))]
        region = None
        if any(r.first_passage is None for r in runs):
            kinds = sorted({type(r.potential).__name__ for r in runs} - {"DoubleWell"})
            if kinds and a.normal is None and a.offset is None:
                raise ConfigError(
                    f"these runs have no first-passage observer, and the default region "
                    f"x_1 > 0 (a DoubleWell's right well) means nothing for {', '.join(kinds)}: "
                    "give the region to reach, --normal N1,N2,... --offset A for "
                    "{N . x > A}, or run with a first-passage observer")
            normal = [float(v) for v in (a.normal or "1").split(",")]
            d = runs[0].potential.d
            region = HalfSpace(normal + [0.0] * (d - len(normal)), a.offset or 0.0, "region")
        elif a.normal is not None or a.offset is not None:
            raise ConfigError("--normal and --offset define a region for runs without a "
                              "first-passage observer; these runs have one, whose regions are "
                              "their own: choose among them with --label")
        summary = escape_summary(runs, label=a.label, names=[Path(r.path).stem for r in runs],
                                 region=region)
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        for r in runs:
            r.close()
    for r in summary.runs:
        print(r.table(verdict=False))
        print()
    print(summary.table())
    for note in notes:
        print(f"note: {note}")
    if any(r.bound for r in summary.runs):
        print("note: runs without a first-passage observer give upper bounds only; for "
              "first-passage times rerun with one (scenarios/double_well.py: --set start=left "
              "--set first_passage=true)")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    summary.plot(axes)
    save_figure(fig, a.png, paths[0], "escape")


if __name__ == "__main__":
    script(main)
