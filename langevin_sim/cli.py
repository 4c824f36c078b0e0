"""`langevin-sim run | resume | scan | info`."""
from __future__ import annotations

import argparse
import sys

from .errors import LangevinSimError


def _run(a) -> int:
    from .scenario import run_scenario

    run = run_scenario(a.scenario, a.set, a.config, a.out, a.overwrite, a.backend, a.progress, a.swmr)
    print(run.summary())
    return 0


def _resume(a) -> int:
    from .simulation import resume

    run = resume(a.path, steps=a.steps, backend=a.backend, progress=a.progress)
    print(run.summary())
    return 0


def _info(a) -> int:
    from .io import open_run

    with open_run(a.path) as run:
        print(run.summary())
    return 0


def _scan(a) -> int:
    from .scan import cli_scan

    return cli_scan(a)


def build_parser() -> argparse.ArgumentParser:
    from .scenario import add_run_arguments

    ap = argparse.ArgumentParser(prog="langevin-sim", description="Langevin / SGD simulation engine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a scenario script into an HDF5 run file")
    r.add_argument("scenario", help="path of a scenarios/*.py script")
    add_run_arguments(r)
    r.set_defaults(fn=_run)
    s = sub.add_parser("resume", help="continue a killed or finished run from its checkpoint")
    s.add_argument("path")
    s.add_argument("--steps", type=int, help="total step count to reach (default: the planned total)")
    s.add_argument("--backend", choices=("numpy", "numba", "cuda"))
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    s.set_defaults(fn=_resume)
    i = sub.add_parser("info", help="print a run file's config, progress, records, divergences")
    i.add_argument("path")
    i.set_defaults(fn=_info)
    try:
        from .scan import add_scan_parser
    except ImportError:
        pass
    else:
        add_scan_parser(sub, _scan)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except LangevinSimError as e:
        print(f"langevin-sim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
