"""Spherical p-spin relaxation: energy against the 1RSB landmarks, aging, overlaps, Hessian index.

usage: python analysis/spinglass.py RUN.h5 [--t-min T] [--t-max T] [--late-from T]
       [--waiting T ...] [--level C] [--png PATH]
For a SphericalPSpin run (e.g. of scenarios/pspin_threshold.py) prints the 1RSB landmarks
(T_d, T_s, e_th, E_gs for the run's p and convention), the energy per spin over time with a
power-law fit towards the N -> infinity asymptote, the late energy against it (paramagnet above
T_d) and a verdict; with recorded positions also two-time correlations for several waiting
times, replica overlaps and Hessian indices of the final states.  Saves a figure.
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.scan import save_figure, script  # noqa: E402
from langevin_sim.analysis.spinglass import (overlaps, run_aging, run_hessian_index,  # noqa: E402
                                             run_relaxation)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--t-min", type=float, help="power-law window start (default 1)")
    ap.add_argument("--t-max", type=float, help="power-law window end (default: a tenth of the run)")
    ap.add_argument("--late-from", type=float, help="late-time average from (default: half the run)")
    ap.add_argument("--waiting", type=float, nargs="+", help="waiting times for the aging curves")
    ap.add_argument("--level", type=float, default=0.5, help="C level for the decay time")
    ap.add_argument("--temperature", type=float,
                    help="the temperature whose landmarks to compare with (default: the run's; "
                         "needed for a scheduled one, e.g. an anneal's final temperature)")
    ap.add_argument("--png", help="figure path (default: next to the run, *_spinglass.png)")
    a = ap.parse_args(argv)
    try:
        with open_run(a.run) as run:
            pot = run.potential
            rel = run_relaxation(run, a.t_min, a.t_max, a.late_from, a.temperature)
            parts = []
            if "positions" in run.names:
                alive = run.diverged_step < 0
                parts = [run_aging(run, a.waiting, a.level),
                         overlaps(np.asarray(run.positions[-1])[alive]), run_hessian_index(run)]
            print(f"{a.run}: SphericalPSpin N = {pot.N}, p = {pot.p}, {pot.convention}, "
                  f"{run.config['replicas']} replicas, T = {rel.temperature:g}, t = {run.time[-1]:.4g}")
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(rel.table())
    for part in parts:
        print(part.table())
    if not parts:
        print("(no recorded positions: aging, overlaps and Hessian indices need record_positions=true)")
    if rel.reference_label.startswith("paramagnet"):
        ok = "consistent" if abs(rel.z) <= 4 else "NOT consistent"
        print(f"verdict: late energy {rel.late_mean:.5f} +- {rel.late_se:.5f} vs the paramagnet "
              f"{rel.reference:.5f}: z = {rel.z:+.2f} ({ok} within 4 SE; one coupling instance, "
              "finite-N and step-size biases not in the SE)")
    else:
        above = rel.z > 4
        gs = rel.landmarks.e_gs
        reached = (f"not reached (lowest replica {rel.late_min:.5f})" if rel.late_min > gs else
                   f"reached or passed by the lowest replica ({rel.late_min:.5f}; finite N)")
        print(f"verdict: late energy {rel.late_mean:.5f} +- {rel.late_se:.5f} "
              f"{'stays above' if above else 'does NOT stay above'} the N -> infinity "
              f"{rel.reference_label} {rel.reference:.5f} (z = {rel.z:+.1f}); N -> infinity "
              f"ground state {gs:.5f} {reached}")
    panels = [rel] + ([rel.fit] if rel.fit is not None else []) + parts[:2]
    rows = 1 if len(panels) <= 2 else 2
    fig, axes = plt.subplots(rows, 2, figsize=(9, 3.4 * rows))
    for ax, part in zip(np.ravel(axes), panels):
        part.plot(ax)
    for ax in np.ravel(axes)[len(panels):]:
        ax.set_axis_off()
    save_figure(fig, a.png, a.run, "spinglass")


if __name__ == "__main__":
    script(main)
