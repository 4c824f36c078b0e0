"""Drift along a manifold of minima: velocity and diffusion against prediction, time to target.

usage: python analysis/drift.py RUN.h5 [--coordinate NAME] [--target LO HI] [--region LO HI |
       --no-region] [--t-min T] [--t-max T] [--png PATH]
Prints v and D +- se (against -alpha(d-1)T/2 and D = T for an "exp" Valley, e.g. the run of
scenarios/valley_drift.py), a verdict, the time to reach the target (Kaplan-Meier), the density
of s over time against Valley.log_density and recorded sharpness-type observables; saves a
figure (mean and mean squared displacement, density of s over time, fraction reached).
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langevin_sim import ConfigError, LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.drift import (has_default_coordinate, run_density,  # noqa: E402
                                         run_drift, run_time_to_target, run_traces)
from langevin_sim.analysis.scan import save_figure, script  # noqa: E402


def default_target(pot):
    """The last sixth of a walled line Valley at its flat end (None otherwise)."""
    if type(pot).__name__ != "Valley" or pot.bounds is None:
        return None
    lo, hi = pot.bounds
    cut = (hi - lo) / 6
    return (hi - cut, np.inf) if pot.curvature(hi) <= pot.curvature(lo) else (-np.inf, lo + cut)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--coordinate", help="recorded series to use as the coordinate (default: s)")
    ap.add_argument("--target", nargs=2, type=float, metavar=("LO", "HI"),
                    help="target interval for the first-passage time (default: the flat end "
                         "of s; none for another --coordinate)")
    ap.add_argument("--region", nargs=2, type=float, metavar=("LO", "HI"),
                    help="count increments only inside this interval (default: inside the "
                         "walls of s; everything for another --coordinate)")
    ap.add_argument("--no-region", action="store_true", help="count every increment")
    ap.add_argument("--t-min", type=float)
    ap.add_argument("--t-max", type=float)
    ap.add_argument("--png", help="figure path (default: next to the run, *_drift.png)")
    a = ap.parse_args(argv)
    region = None if a.no_region else (tuple(a.region) if a.region else "auto")
    if a.coordinate == "s":
        a.coordinate = None     # the default, with its walls, target, predictions and density
    try:
        for flag, pair in (("--target", a.target), ("--region", a.region)):
            if pair is not None and not pair[0] <= pair[1]:
                raise ConfigError(f"{flag} LO HI needs LO <= HI, got {pair[0]:g} {pair[1]:g}")
        with open_run(a.run) as run:
            pot = run.potential
            if a.coordinate is None and not has_default_coordinate(run):
                raise ConfigError("no manifold coordinate: the run has no 's' record and is no "
                                  "Valley run with positions; pass --coordinate NAME, one of its "
                                  f"recorded series: {', '.join(run.names)}")
            fit = run_drift(run, a.coordinate, a.t_min, a.t_max, region)
            target = (tuple(a.target) if a.target else
                      default_target(pot) if a.coordinate is None else None)
            fp = None if target is None else run_time_to_target(run, target, a.coordinate)
            scheduled = run.config["dynamics"].get("temperature", {}).get("kind") != "constant"
            dens = (run_density(run) if a.coordinate is None and hasattr(pot, "log_density")
                    and not scheduled else None)
            traces = run_traces(run)
            print(f"{a.run}: {type(pot).__name__}, {run.config['dynamics']['class']}, "
                  f"{run.config['replicas']} replicas, t = {run.time[-1]:.4g}")
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(fit.table())
    if fit.predictions:
        label, v, _ = fit.predictions[0]
        z = fit.z(v)[0]
        extra = "".join(f"; {lab}: {pv:.4g} (z = {fit.z(pv)[0]:+.2f})" for lab, pv, _ in fit.predictions[1:])
        print(f"verdict: drift velocity v = {fit.v:.4g} +- {fit.v_se:.2g} vs {label} = {v:.4g}, "
              f"z = {z:+.2f}: {'consistent' if abs(z) <= 4 else 'NOT consistent'} within 4 SE{extra}")
    else:
        print(f"verdict: drift velocity v = {fit.v:.4g} +- {fit.v_se:.2g} (no prediction for this run)")
    if scheduled and a.coordinate is None and hasattr(pot, "log_density"):
        print("density of s against the stationary law: skipped (the temperature is scheduled)")
    for part in (fp, dens, *traces):
        if part is not None:
            print(part.table())
    panels = [fit] + [p for p in (dens, fp) if p is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, part in zip(np.atleast_1d(axes), panels):
        part.plot(ax)
    save_figure(fig, a.png, a.run, "drift")


if __name__ == "__main__":
    script(main)
