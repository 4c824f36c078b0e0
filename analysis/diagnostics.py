"""Convergence diagnostics of every recorded series of a run: burn-in, ESS, IAT, R-hat.

usage: python analysis/diagnostics.py RUN.h5 [--series NAME[,NAME]] [--burn auto|K]
                                      [--components C] [--superchains G] [--png PATH]
Per series (default: every recorded one -- energy, positions, observables; diverged
replicas dropped): the MSER burn-in (langevin_sim.analysis.diagnostics.burn_in), then, after
the latest burn-in of all series, ArviZ's bulk / tail ESS, integrated autocorrelation time
(in records and in steps), MCSE, R-hat and nested R-hat over replicas of the first C
components.  A series recorded every k-th record (sharpness, hessian_trace: NaN in between)
is diagnosed on the records where it was recorded; a series with fewer than 4 records
(after the burn-in) is skipped with a note; a statistic undefined for a component (a
constant series, too few replicas) prints n/a, with the reason below the table.
The verdict says whether every R-hat is below 1.01 (Vehtari et al. 2021); with many short
replicas split R-hat exceeds that even at stationarity (by about (IAT - 1) / n_records for
IAT << n_records), which the verdict then says.
The figure shows the energy's burn-in and the autocorrelation of the slowest component (the
longest IAT in steps).
"""
import argparse
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.diagnostics import (MIN_DRAWS, burn_in, diagnose,  # noqa: E402
                                               diagnostics_table, load_records)
from langevin_sim.analysis.scan import save_figure, script  # noqa: E402
from langevin_sim.errors import ConfigError  # noqa: E402

RHAT_OK = 1.01


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--series", help="comma-separated series to diagnose (default: every "
                                     "recorded series)")
    ap.add_argument("--burn", default="auto",
                    help="records to drop, or 'auto' for the MSER burn-in (default)")
    ap.add_argument("--components", type=int, default=8,
                    help="diagnose at most the first C components of each series (default 8)")
    ap.add_argument("--superchains", type=int, default=4,
                    help="groups of consecutive replicas for nested R-hat (default 4)")
    ap.add_argument("--png", help="figure path (default: next to the run, *_diagnostics.png)")
    a = ap.parse_args(argv)
    if a.components < 1:
        ap.error(f"--components {a.components}: C must be >= 1 (the first C components of "
                 "each series are diagnosed)")
    if a.superchains < 0:
        ap.error(f"--superchains {a.superchains}: G must be >= 0 (0: no nested R-hat)")
    if a.burn != "auto" and not a.burn.isdigit():
        ap.error(f"--burn {a.burn}: 'auto' or a number of records >= 0")
    try:
        with open_run(a.run) as run:
            names = a.series.split(",") if a.series else run.names
            unknown = [s for s in names if s not in run.names]
            if unknown:
                ap.error(f"--series: {', '.join(unknown)} not recorded; the run records "
                         f"{', '.join(run.names)}")
            steps = np.asarray(run.step)
            if a.burn != "auto" and int(a.burn) >= steps.size:
                ap.error(f"--burn {a.burn}: the run has {steps.size} records (K in 0.."
                         f"{steps.size - 1})")
            series = {}
            for name in names:
                series[name] = load_records(run, name, components=a.components)
            print(f"{a.run}: {type(run.potential).__name__}, {run.config['dynamics']['class']}, "
                  f"{run.n_records} records, steps {run.steps_done}")
        for r in list(series.values()):
            if r.dropped:
                print(f"{r.name}: {r.dropped} of {r.dropped + r.values.shape[1]} replicas "
                      "dropped (diverged, or non-finite at a kept record)")
            if r.unrecorded:
                print(f"{r.name}: recorded at {r.step.size} of {steps.size} records (every "
                      f"{r.steps_per_record:g} steps), diagnosed on those")
            if r.step.size < MIN_DRAWS:
                print(f"skipped {series.pop(r.name).name}: {r.step.size} records; burn-in and "
                      f"diagnostics need >= {MIN_DRAWS}")
        if not series:
            raise ConfigError(f"no series has >= {MIN_DRAWS} records: run longer or record "
                              "more often")
        burns = {k: burn_in(r) for k, r in series.items()}
        for b in burns.values():
            print(b.table())
        burn_step = max(b.step for b in burns.values()) if a.burn == "auto" \
            else int(steps[int(a.burn)])
        print(f"diagnostics after burn-in of {np.searchsorted(steps, burn_step)} records "
              f"(step {burn_step}):")
        results = []
        for r in series.values():
            kept = r.since(burn_step)
            if kept.step.size < MIN_DRAWS:
                print(f"skipped {r.name}: {kept.step.size} records after the burn-in; the "
                      f"diagnostics need >= {MIN_DRAWS}")
            else:
                results += diagnose(kept, superchains=a.superchains)
        if not results:
            raise ConfigError(f"no series has >= {MIN_DRAWS} records after the burn-in (step "
                              f"{burn_step}): run longer, record more often or lower --burn (--burn 0 keeps "
                              f"all {steps.size})")
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(diagnostics_table(results))
    timed = [r for r in results if np.isfinite(r.iat)]
    slow = max(timed, key=lambda r: r.iat_steps) if timed else None
    if slow is not None:
        print(f"slowest: {slow.label}, IAT = {slow.iat:.3g} records ({slow.iat_steps:.4g} "
              f"steps); smallest bulk ESS {min(r.ess_bulk for r in timed):.0f}")
    rated = [r for r in results if not np.isnan(r.rhat)]
    if rated:
        worst = max(rated, key=lambda r: r.rhat)
        ok = worst.rhat < RHAT_OK
        nested = (f"{worst.rhat_nested:.4f}" if not np.isnan(worst.rhat_nested) else
                  f"undefined ({worst.undefined['rhat_nested']})")
        hint = "" if ok or not np.isfinite(worst.iat) else (
            f"; even at stationarity split R-hat exceeds 1 by about (IAT - 1) / n_records: "
            f"replicas of {worst.n_draws} records with IAT {worst.iat:.3g} need more records; "
            f"nested R-hat, which pools replicas into superchains, is {nested}")
        print(f"verdict: {'mixed' if ok else 'NOT mixed'} (max R-hat {worst.rhat:.4f} at "
              f"{worst.label}; threshold {RHAT_OK}){hint}")
    else:
        print(f"verdict: undefined: no R-hat ({results[0].undefined['rhat']})")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    burns.get("energy", next(iter(burns.values()))).plot(a1)
    if slow is not None:
        slow.plot(a2)
        a2.set_title(f"slowest component: {slow.label}", fontsize="small")
    else:
        a2.text(0.5, 0.5, "no autocorrelation time defined", ha="center", va="center")
        a2.set_axis_off()
    save_figure(fig, a.png, a.run, "diagnostics")


if __name__ == "__main__":
    script(main)
