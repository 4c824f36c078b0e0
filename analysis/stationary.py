"""Compare a run's sampled marginal with the exact Boltzmann density (quadrature).

usage: python analysis/stationary.py RUN.h5 [--records K] [--bins B] [--png PATH]
Prints the table (sampled vs exact density per bin, z-scores, chi-square) and saves a figure.
Needs a separable potential (DoubleWell); other runs get a one-line error.
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis import run_marginal_fit  # noqa: E402
from langevin_sim.analysis.scan import (diverged_note, int_at_least, save_figure,  # noqa: E402
                                         script)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--records", type=int_at_least(1), default=1,
                    help="pool the last K >= 1 records (space them beyond the correlation time)")
    ap.add_argument("--bins", type=int_at_least(1), default=40, help="histogram bins (>= 1)")
    ap.add_argument("--png", help="figure path (default: next to the run, *_stationary.png)")
    a = ap.parse_args(argv)
    try:
        with open_run(a.run) as run:
            fit = run_marginal_fit(run, bins=a.bins, records=a.records)
            pot, T = run.potential, run.config["dynamics"]["temperature"]["start"]
            print(f"{a.run}: {type(pot).__name__}, T = {T}, steps {run.steps_done}")
            print(fit.table())
            note = diverged_note(run, "the fit")
            if note:
                print(note)
            x = np.asarray(run.positions[run.n_records - a.records:])[:, run.diverged_step < 0]
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    # the figure bins the samples on their own range (the fit's merged bins may hold no
    # finite interval); the exact density is normalized on the whole line
    fig, ax = plt.subplots(figsize=(6, 4))
    fit.plot(ax, x, pot.marginal_energy, T, bins=a.bins)
    ax.set_title(f"T = {T}: {ax.get_title()}")
    save_figure(fig, a.png, a.run, "stationary", dpi=120)


if __name__ == "__main__":
    script(main)
