"""Tabulate and plot the mean energy of every point of a parameter scan.

usage: python analysis/scan_summary.py DIR [--x KEY] [--burn F] [--png PATH]
Rebuilds the scan's manifest from its files (langevin_sim.scan.open_scan), takes each
finished point's mean energy over the last (1 - F) of its records and its surviving
replicas (langevin_sim.analysis.scan.energy_summary), combines repeats, prints the table
(with `alive`, the fraction of replicas that never diverged, and a note when it is < 1)
and plots mean energy (with standard errors) against KEY (default: the first scan key),
one line per value of the other scan keys (per zip row when KEY is a grid key); points
that lost replicas ringed, those that lost all as crosses on the x axis, the energy axis
logarithmic where positive means span more than 1e3.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langevin_sim import ConfigError, LangevinSimError  # noqa: E402
from langevin_sim.analysis.scan import (energy_summary, gather, reduce_repeats,  # noqa: E402
                                        save_figure, script)
from langevin_sim.scan import open_scan  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="scan directory (langevin-sim scan --out DIR)")
    ap.add_argument("--x", help="scan key on the horizontal axis (default: the first one)")
    ap.add_argument("--burn", type=float, default=0.5,
                    help="fraction of the records dropped as burn-in (default 0.5)")
    ap.add_argument("--png", help="figure path (default DIR/scan_summary.png)")
    a = ap.parse_args(argv)
    try:
        if not 0 <= a.burn < 1:
            raise ConfigError(f"--burn {a.burn:g}: the fraction of records dropped must be in "
                              "[0, 1)")
        scan = open_scan(a.dir)
        print(scan.describe())
        x = a.x or scan.keys[0]
        if x not in scan.keys:
            ap.error(f"--x {x}: not a scan key; this scan varies {scan.keys}")
        red = reduce_repeats(gather(scan, energy_summary, burn=a.burn))
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    table = red.to_dataframe().reset_index()
    keys = [k for k in scan.keys if k in table.columns]
    table = table[keys + ["energy_mean", "energy_se", "n_repeat", "alive"]].sort_values(keys)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print(f"energy_mean: each point's mean energy (energy units) over the last {1 - a.burn:g} of "
          "its records and its surviving replicas, averaged over repeats; energy_se: its standard "
          "error (over replicas, combined over repeats); alive: the fraction of replicas that "
          "never diverged")
    lost = int((table["alive"] < 1).sum())
    if lost:
        print(f"note: {lost} point(s) lost replicas to divergence (alive < 1: the fraction of "
              "replicas that never diverged): their mean energy is over the survivors only, "
              "which may be diverging too (ringed in the figure; no mean where none survived)")
    # one line per value of every other scan key: the other grid keys, and the zip keys
    # unless x is one of them (the zip keys vary together with it)
    others = [k for k in scan.grid if k != x] + ([] if x in scan.zip else list(scan.zip))
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = table.groupby(others, sort=True) if others else [((), table)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values(x)
        label = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in zip(others, key)) or None
        line = ax.errorbar(g[x], g["energy_mean"], yerr=g["energy_se"], marker="o", capsize=3,
                           label=label)[0]
        # a point that lost replicas: a ring around its marker (its mean is over survivors,
        # which may be diverging too); one that lost all: a cross on the x axis (no mean)
        part = g[(g["alive"] > 0) & (g["alive"] < 1)]
        ax.plot(part[x], part["energy_mean"], "o", ms=12, mfc="none", color=line.get_color())
        gone = g[~(g["alive"] > 0)]
        ax.plot(gone[x], [0.02] * len(gone), "x", ms=9, mew=2, color=line.get_color(),
                transform=ax.get_xaxis_transform(), clip_on=False)
    flags = [(table["alive"] > 0) & (table["alive"] < 1), ~(table["alive"] > 0)]
    for flag, marker, text in zip(flags, ("o", "x"), (
            "ringed: lost replicas to divergence (mean over the survivors)",
            "x on the axis: every replica diverged (no mean)")):
        if flag.any():
            ax.plot([], [], marker, color="gray", mfc="none", ms=9, mew=1.5, ls="none",
                    label=text)
    finite = table["energy_mean"][table["alive"] > 0]
    if len(finite) and (finite > 0).all() and finite.max() > 1e3 * finite.min():
        ax.set_yscale("log")        # (diverging points' means dwarf the others)
    along = [k for k in scan.zip if k != x] if x in scan.zip else []
    ax.set(xlabel=x + (f" (zipped: {', '.join(along)} varied with it)" if along else ""),
           ylabel="mean energy",
           title=f"{Path(scan.spec['scenario']).name}: last {1 - a.burn:.0%} of records")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    save_figure(fig, a.png, a.dir, "scan_summary", dpi=120)
    return table


if __name__ == "__main__":
    script(main)
