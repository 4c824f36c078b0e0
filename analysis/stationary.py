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
from langevin_sim.analysis.scan import save_figure  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--records", type=int, default=1,
                    help="pool the last K records (space them beyond the correlation time)")
    ap.add_argument("--bins", type=int, default=40)
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
    y = np.linspace(fit.edges[1], fit.edges[-2], 400)
    dens = np.exp(-(pot.marginal_energy(y) - pot.marginal_energy(y).min()) / T)
    dens /= np.trapezoid(dens, y) / (fit.expected[1:-1].sum() / fit.n)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(x.ravel(), bins=fit.edges[1:-1], density=False,
            weights=np.full(x.size, 1.0 / (x.size * np.diff(fit.edges[1:-1]).mean())),
            alpha=0.5, label="sampled")
    ax.plot(y, dens, "k-", label=r"exact $e^{-U/T}/Z$")
    ax.set(xlabel="x", ylabel="density", title=f"T = {T}: chi2/dof = {fit.chi2:.1f}/{fit.dof}, p = {fit.p_value:.2g}")
    ax.legend()
    save_figure(fig, a.png, a.run, "stationary", dpi=120)


if __name__ == "__main__":
    main()
