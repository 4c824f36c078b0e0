"""Tail index of stationary SGD iterates: Hill estimate against Kesten's prediction.

usage: python analysis/tails.py RUN.h5 [--records R] [--k K] [--png PATH]
For SGD (batch size b, no momentum) on LinearRegression: Hill's estimate of the tail index
of |x - x*| over the replicas of the last R records (space them beyond the mixing time)
against Kesten's alpha computed from the run's data set, learning rate and b (exact for
d = 1, b = 1; Monte Carlo otherwise).  Prints both and the verdict (|z| <= 3; when Kesten's
alpha is infinite, light tails are predicted and the verdict asks the Hill index to exceed
2, the finite variance that the exact h(2) < 0 fixes, by 3 se); saves a Hill plot.
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.scan import int_at_least, save_figure, script  # noqa: E402
from langevin_sim.analysis.tails import run_tail_index  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--records", type=int_at_least(1), default=1,
                    help="pool the last R >= 1 records")
    ap.add_argument("--k", type=int_at_least(2),
                    help="upper order statistics for Hill, >= 2 (default sqrt(n))")
    ap.add_argument("--png", help="figure path (default: next to the run, *_tails.png)")
    a = ap.parse_args(argv)
    try:
        with open_run(a.run) as run:
            tc = run_tail_index(run, records=a.records, k=a.k)
            print(f"{a.run}: {type(run.potential).__name__}, d = {run.potential.d}, "
                  f"steps {run.steps_done}, {tc.hill.n} samples of |x - x*|"
                  + (f" ({tc.diverged} diverged replicas left out)" if tc.diverged else ""))
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(tc.table())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    tc.plot(ax1)
    tc.kesten.plot(ax2)
    save_figure(fig, a.png, a.run, "tails")


if __name__ == "__main__":
    script(main)
