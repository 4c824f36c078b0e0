"""Compare a run's sampled mean and covariance with its exact predicted stationary law.

usage: python analysis/covariance.py RUN.h5 [--burn auto|K] [--png PATH]
For Quadratic runs (Euler-Maruyama, BAOAB, OBABO, full-batch SGD) and LinearRegression + SGD
runs (langevin_sim.analysis.covariance.predicted_laws): prints the variances along the predicted
law's eigen-directions (sampled ± se, predicted, z, and the alternative laws), a chi-square
test of means and covariances, KL and W2 distances, and a verdict; for SGD runs also how far
the continuous Lyapunov approximation is from the exact law over a grid of learning rates;
otherwise the chi-square fits of the last record's eigen-coordinate marginals (and, for
BAOAB, of the energy) by quadrature, skipped (one line says so) below 40 replicas.  Saves a
figure: the comparison, and the Lyapunov gap or the widest marginal's fit beside it.
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.covariance import (compare_covariance,  # noqa: E402
                                              gaussian_marginal_fits, gibbs_energy_fit,
                                              kinetic_energy_check, lyapunov_gap,
                                              predicted_laws)
from langevin_sim.analysis.scan import save_figure, script  # noqa: E402
from langevin_sim.analysis.stationary import MIN_EXPECTED  # noqa: E402


def burn_arg(text: str):
    """--burn: 'auto' or a number of records >= 0."""
    if text == "auto":
        return text
    try:
        burn = int(text)
    except ValueError:
        burn = -1
    if burn < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of records >= 0, "
                                         f"got {text!r}")
    return burn


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--burn", default="auto", type=burn_arg,
                    help="records to drop, or 'auto' for the MSER burn-in (default)")
    ap.add_argument("--png", help="figure path (default: next to the run, *_covariance.png)")
    a = ap.parse_args(argv)
    try:
        with open_run(a.run) as run:
            cfg = run.config
            dyn = cfg["dynamics"]
            laws = predicted_laws(run)
            cmp = compare_covariance(run, laws[0], laws[1:], burn=a.burn)
            print(f"{a.run}: {type(run.potential).__name__} (d = {run.potential.d}), "
                  f"{dyn['class']}, {cfg['replicas']} replicas, steps {run.steps_done}")
            print(cmp.table())
            if "kinetic_energy" in run and laws[0].momentum_cov is not None:
                ke, se, want = kinetic_energy_check(run, laws[0], cmp.burn)
                print(f"kinetic energy per replica: {ke:.5g} +- {se:.2g}, {laws[0].name} "
                      f"predicts {want:.5g} (z = {(ke - want) / se:.2f}; d T / 2 = "
                      f"{run.potential.d * dyn['temperature']['start'] / 2:.5g})")
            gap = fits = None
            if dyn["class"] == "SGD":
                lr = dyn["lr"]["start"]
                kw = {k: dyn[k] for k in ("batch_size", "momentum", "weight_decay")}
                sampling = "iid" if dyn["replacement"] else "subset"
                gap = lyapunov_gap(run.potential, lr * 2.0 ** np.arange(-6, 4), sampling=sampling,
                                   temperature=dyn["temperature"]["start"], **kw)
                print(f"continuous Lyapunov vs exact SGD law ({sampling} batches) over lr "
                      f"(this run: lr = {lr:g}):")
                print(gap.table())
            elif cmp.sampled.n_replicas < 2 * MIN_EXPECTED:
                print(f"marginal fits of the last record skipped: {cmp.sampled.n_replicas} "
                      f"replicas, a chi-square test needs >= {2 * MIN_EXPECTED:g}")
            else:
                fits = gaussian_marginal_fits(run, laws[0])
                for k, f in enumerate(fits):
                    print(f"eigen-coordinate {k} marginal (last record, quadrature): chi2 = "
                          f"{f.chi2:.1f} on {f.dof} dof, p = {f.p_value:.3g}")
                if dyn["class"] == "UnderdampedLangevin":
                    alive = run.diverged_step < 0
                    e = gibbs_energy_fit(run.energy[-1][alive], run.potential.d,
                                         dyn["temperature"]["start"])
                    print(f"energy marginal (Gamma(d/2) T): chi2 = {e.chi2:.1f} on {e.dof} dof, "
                          f"p = {e.p_value:.3g}")
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    panels = 1 if gap is None and fits is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    cmp.plot(axes[0, 0])
    a2 = axes[0, -1]
    if gap is not None:
        gap.plot(a2)
        a2.axvline(gap.eta_lambda_max[np.argmin(abs(gap.lr - lr))], color="r", ls="--",
                   label="this run")
        a2.legend(fontsize="small")
    elif fits is not None:
        k = int(np.argmax(cmp.predicted))
        f = fits[k]
        edges = f.edges[1:-1]
        a2.stairs(f.counts[1:-1] / (f.n * np.diff(edges)), edges, fill=True, alpha=0.5,
                  label=f"sampled, eigen-coordinate {k}")
        y = np.linspace(edges[0], edges[-1], 300)
        v = cmp.predicted[k]
        a2.plot(y, np.exp(-y ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v), "k-",
                label=f"N(0, {v:.3g}) ({laws[0].name})")
        a2.set(xlabel="y", ylabel="density", title=f"chi2/dof = {f.chi2:.1f}/{f.dof}, "
                                                  f"p = {f.p_value:.2g}")
        a2.legend(fontsize="small")
    save_figure(fig, a.png, a.run, "covariance")


if __name__ == "__main__":
    script(main)
