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
from langevin_sim.analysis.scan import int_at_least, save_figure, script  # noqa: E402
from langevin_sim.analysis.stationary import boltzmann_bin_probabilities  # noqa: E402


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
            x = np.asarray(run.positions[run.n_records - a.records:])[:, run.diverged_step < 0]
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    # the figure bins the samples on their own range (the fit's merged bins may hold no
    # finite interval); the exact density is normalized on the whole line
    edges = np.histogram_bin_edges(x.ravel(), bins=a.bins)
    y = np.linspace(edges[0], edges[-1], 400)
    u = pot.marginal_energy(y)
    dens = np.exp(-(u - u.min()) / T)
    mass = boltzmann_bin_probabilities(pot.marginal_energy, T, edges[[0, -1]])[0]
    dens *= mass / np.trapezoid(dens, y)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(x.ravel(), bins=edges, density=True, alpha=0.5, label="sampled")
    ax.plot(y, dens, "k-", label=r"exact $e^{-U/T}/Z$")
    ax.set(xlabel="x", ylabel="density", title=f"T = {T}: chi2/dof = {fit.chi2:.1f}/{fit.dof}, p = {fit.p_value:.2g}")
    ax.legend()
    save_figure(fig, a.png, a.run, "stationary", dpi=120)


if __name__ == "__main__":
    script(main)
