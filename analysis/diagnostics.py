"""Convergence diagnostics of every recorded series of a run: burn-in, ESS, IAT, R-hat.

usage: python analysis/diagnostics.py RUN.h5 [--burn auto|K] [--components C]
                                      [--superchains G] [--png PATH]
Per series (energy, positions, observables; diverged replicas dropped): the MSER burn-in
(langevin_sim.analysis.diagnostics.burn_in), then, after the largest burn-in of all series,
ArviZ's bulk / tail ESS, integrated autocorrelation time, MCSE, R-hat and nested R-hat over
replicas of the first C components.  The verdict says whether every R-hat is below 1.01
(Vehtari et al. 2021); with many short replicas split R-hat exceeds that even at
stationarity (by about (IAT - 1) / n_records for IAT << n_records), which the verdict
then says.
The figure shows the energy's burn-in and the autocorrelation of the slowest component.
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.analysis.diagnostics import (Records, burn_in, diagnose,  # noqa: E402
                                               diagnostics_table, load_records)

RHAT_OK = 1.01
from langevin_sim.analysis.scan import save_figure  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--burn", default="auto",
                    help="records to drop, or 'auto' for the MSER burn-in (default)")
    ap.add_argument("--components", type=int, default=8,
                    help="diagnose at most the first C components of each series (default 8)")
    ap.add_argument("--superchains", type=int, default=4,
                    help="groups of consecutive replicas for nested R-hat (default 4)")
    ap.add_argument("--png", help="figure path (default: next to the run, *_diagnostics.png)")
    a = ap.parse_args(argv)
    try:
        with open_run(a.run) as run:
            series = {}
            for name in run.names:
                rec = load_records(run, name)
                v = rec.values
                if v.ndim > 2:
                    v = v.reshape(v.shape[0], v.shape[1], -1)[..., : a.components]
                series[name] = Records(name, v, rec.step, rec.dropped)
            print(f"{a.run}: {type(run.potential).__name__}, {run.config['dynamics']['class']}, "
                  f"{run.n_records} records, steps {run.steps_done}")
        burns = {k: burn_in(r) for k, r in series.items()}
        for b in burns.values():
            print(b.table())
        burn = max(b.record for b in burns.values()) if a.burn == "auto" else int(a.burn)
        print(f"diagnostics after burn-in of {burn} records:")
        results = [d for r in series.values() for d in diagnose(r, burn=burn,
                                                                superchains=a.superchains)]
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(diagnostics_table(results))
    worst = max(results, key=lambda r: r.rhat)
    slow = max(results, key=lambda r: r.iat)
    print(f"slowest: {slow.label}, IAT = {slow.iat:.3g} records ({slow.iat_steps:.4g} steps); "
          f"smallest bulk ESS {min(r.ess_bulk for r in results):.0f}")
    ok = worst.rhat < RHAT_OK
    hint = "" if ok else (
        f"; even at stationarity split R-hat exceeds 1 by about (IAT - 1) / n_records: "
        f"replicas of {worst.n_draws} records with IAT {worst.iat:.3g} need more records; "
        f"nested R-hat, which pools replicas into superchains, is {worst.rhat_nested:.4f}")
    print(f"verdict: {'mixed' if ok else 'NOT mixed'} (max R-hat {worst.rhat:.4f} at "
          f"{worst.label}; threshold {RHAT_OK}){hint}")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    burns.get("energy", next(iter(burns.values()))).plot(a1)
    slow.plot(a2)
    a2.set_title(f"slowest component: {slow.label}", fontsize="small")
    save_figure(fig, a.png, a.run, "diagnostics")


if __name__ == "__main__":
    main()
