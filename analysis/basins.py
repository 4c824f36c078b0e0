"""Basins of a run's potential: minima, Hessian spectra, Laplace weights, occupancy over time.

usage: python analysis/basins.py RUN.h5 [--tail K] [--method quench|nearest|observable]
                                 [--records N] [--png PATH]
Prints the basins table (minimum, energy, Hessian spectrum summary, Laplace log Z and
occupancy) and the sampled occupancy (pooled over the last K records) against the Laplace
prediction and, for d <= 2 or separable potentials, exact quadrature (in any d, two
isotropic wells' closed form with --method observable); saves a figure.
Made for scenarios/flat_vs_sharp.py runs; any run with a constant temperature > 0 works
(SGD runs without Langevin noise: langevin_sim.analysis.sgd_basins in Python).
"""
import argparse
import sys

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.basins import occupancy_temperature, run_occupancy  # noqa: E402
from langevin_sim.analysis.scan import (diverged_note, int_at_least, save_figure,  # noqa: E402
                                         script)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--tail", type=int, default=1,
                    help="pool the last K records (equilibrated ones) for the sampled occupancy")
    ap.add_argument("--method", choices=["quench", "nearest", "observable"],
                    help="how replicas are assigned to basins (default: quench the recorded "
                         "positions, or the recorded `basin` observable without positions)")
    ap.add_argument("--starts", type=int_at_least(1), default=1000,
                    help="draws of the potential's initial distribution quenched to find its "
                         "basins (default 1000)")
    ap.add_argument("--records", type=int_at_least(2), default=200,
                    help="quench or label at most N records evenly spaced for the occupancy "
                         "over time, plus the last K pooled (default 200; the recorded "
                         "`basin` observable is read at every record)")
    ap.add_argument("--png", help="figure path (default: next to the run, *_basins.png)")
    a = ap.parse_args(argv)
    try:
        with open_run(a.run) as run:
            method = a.method or ("quench" if "positions" in run.names else "observable")
            pot = run.potential
            occupancy_temperature(run)     # (refused before the quench, not after its line)
            print(f"{ap.prog}: finding the basins of {type(pot).__name__} (d = {pot.d}): "
                  f"quenching {a.starts} starts" + (", then the records' positions"
                                                    if method == "quench" else ""), file=sys.stderr)
            n = run.n_records
            records = None if method == "observable" or n <= a.records else np.union1d(
                np.linspace(0, n - 1, a.records).round().astype(int),
                np.arange(max(0, n - a.tail), n))
            basins, occ = run_occupancy(run, method=method, tail=a.tail, starts=a.starts,
                                        records=records)
            print(f"{a.run}: {type(run.potential).__name__}, d = {run.potential.d}, "
                  f"T = {basins.temperature:g}, steps {run.steps_done}, assignment: {method}")
            note = diverged_note(run, "the sampled occupancy")
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(basins.table())
    print(occ.table())
    if note:
        print(note)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    occ.plot(ax1)
    basins.plot(ax2)
    save_figure(fig, a.png, a.run, "basins")


if __name__ == "__main__":
    script(main)
