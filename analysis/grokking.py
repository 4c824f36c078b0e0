"""Grokking: delay between fitting the training set and generalizing, per replica and point.

usage: python analysis/grokking.py RUN.h5 | SCAN_DIR [--train-threshold A] [--test-threshold A]
       [--png PATH]
Reads a run of scenarios/grokking.py (or any run recording train and test accuracy and the
weight norm) or a scan directory of them (DIR/points/*.h5), prints
per point the fraction of fitted replicas that generalized, the Kaplan-Meier median steps
to fit, and the median delay from fit to generalization +- bootstrap se (censored replicas
kept), the weight norm and sharpness at both times, then the fit of median delay =
c (lr wd)^(-a) against the drift picture's a = 1 (3 or more points) and a verdict; saves a
figure (test accuracy, weight norm and sharpness over steps; delay against lr wd).
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.grokking import (constant_product, delay_scaling, points_table,  # noqa: E402
                                            run_grokking)
from langevin_sim.analysis.scan import run_files, save_figure, script  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a run file or a scan directory")
    ap.add_argument("--train-threshold", type=float, default=1.0)
    ap.add_argument("--test-threshold", type=float, default=0.9)
    ap.add_argument("--png", help="figure path (default: next to the run or in the scan dir)")
    a = ap.parse_args(argv)
    try:
        points = []
        for f in run_files(a.path):
            with open_run(f) as run:
                points.append(run_grokking(run, a.train_threshold, a.test_threshold))
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    for p in points:
        print(p.table())
    print(points_table(points))
    S = [p.summary() for p in points]
    # the log-log fit and panel take points with lr wd > 0 and a median delay > 0 with an error
    done = [s for s in S if s["lr_wd"] > 0 and 0 < s["delay_median"] < np.inf
            and 0 < s["delay_se"] < np.inf]
    spread = len({s["lr_wd"] for s in done}) >= 2
    fit = delay_scaling(done) if len(done) >= 3 and spread else None
    if fit is not None:
        product = constant_product(done)
        print(fit.table())
        print(product.table())
        print(fit.verdict(product))
    elif len(done) >= 3:
        print(f"verdict: the {len(done)} points with a median delay share lr wd = "
              f"{done[0]['lr_wd']:.3g}: no 1/(lr wd) fit (it needs points at two or more values)")
    else:
        print(f"verdict: {len(done)} of {len(S)} points have weight decay and a positive median "
              "delay with an error (more than half of the fitted replicas generalized); the "
              "1/(lr wd) fit needs 3 of them")
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    for p in points:
        p.plot(ax[:3])
    for s in done:
        ax[3].errorbar(s["lr_wd"], s["delay_median"], s["delay_se"], fmt="o", capsize=3,
                       label=f"lr {s['lr']:g}, wd {s['weight_decay']:g}")
    if fit is not None:
        x = np.geomspace(min(s["lr_wd"] for s in done), max(s["lr_wd"] for s in done), 20)
        ax[3].plot(x, fit.c * x ** -fit.a, "k-", lw=0.8, label=f"fit, a = {fit.a:.2f}")
    ax[3].set(xscale="log", yscale="log", xlabel="lr x weight decay",
              ylabel="median delay fit -> generalize (steps)")
    for a_ in ax:
        if a_.get_legend_handles_labels()[0]:
            a_.legend(fontsize="xx-small")
    save_figure(fig, a.png, a.path, "grokking")


if __name__ == "__main__":
    script(main)
