"""`langevin-sim run | resume | scan | info | warmup | backends`."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from .errors import (ConfigError, LangevinSimError, RunFileError, RunStopped, RunTerminated,
                     one_line_warnings, quiet_closed_stdout)


def _run(a) -> int:
    from .scenario import run_scenario

    run = run_scenario(a.scenario, a.set, a.config, a.out, a.overwrite, a.backend, a.progress, a.swmr,
                       quick=a.quick)
    print(run.summary())
    return 0


def import_modules(names: list[str] | None) -> None:
    """Import each of `names` (a module name, or the path of a .py file): the potentials and
    dynamics they define join the registries, so that run files naming them open."""
    import importlib
    import importlib.util

    for name in names or ():
        try:
            if name.endswith(".py"):
                if not os.path.isfile(name):
                    raise FileNotFoundError(f"no file {name}")
                spec = importlib.util.spec_from_file_location(
                    os.path.splitext(os.path.basename(name))[0], name)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except (ImportError, OSError) as e:
            raise ConfigError(f"--import {name}: {e}; give a module importable from here "
                              "(on PYTHONPATH) or the path of a .py file") from None


def _resume(a) -> int:
    from .simulation import resume

    import_modules(a.imports)
    run = resume(a.path, steps=a.steps, backend=a.backend, progress=a.progress, swmr=a.swmr)
    if run.resumed_from is None:
        print(f"{a.path} is already complete at step {run.steps_done}; nothing to do "
              "(pass --steps N to extend it to N steps in all)")
    else:
        print(run.summary())
    return 0


def _info(a) -> int:
    from .io import open_run

    if os.path.isfile(os.path.join(a.path, "scan.json")):
        raise RunFileError(f"{a.path} is a scan directory, not a run file: summarize it with "
                           f"python analysis/scan_summary.py {a.path} (or open_scan in Python), "
                           "or give one of its points' files")
    with open_run(a.path) as run:
        print(run.summary())
    return 0


def _repair(a) -> int:
    from .io.reader import repair

    print(repair(a.path))
    return 0


def _warmup(a) -> int:
    from .warmup import usable_cpus, warmup

    t = time.perf_counter()
    try:
        results = [r for _, _, r in warmup(dtypes=a.dtype.split(","), only=a.only,
                                           jobs=usable_cpus() if a.jobs is None else a.jobs)]
    except KeyboardInterrupt:
        print("langevin-sim: warmup interrupted: the pairs said above are in the cache, the "
              "others compile at their first run", file=sys.stderr)
        return 130
    done = [r for r in results if isinstance(r, float)]
    failed = sum(str(r).startswith("failed") for r in results)
    print(f"{len(done)} kernels ready in {time.perf_counter() - t:.1f} s"
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


def _backends(a) -> int:
    from .backends import NAMES, describe

    missing = 0
    for name in a.names or NAMES:
        try:
            line = describe(name)
        except LangevinSimError as e:
            line, missing = f"unavailable: {e}", missing + 1
        print(f"{name:6s} {line}")
    return 1 if a.names and missing else 0


def _scan(a) -> int:
    from .scan import cli_scan

    return cli_scan(a)


def build_parser() -> argparse.ArgumentParser:
    from .backends import NAMES as BACKENDS
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
    s.add_argument("--backend", choices=BACKENDS)
    s.add_argument("--swmr", action=argparse.BooleanOptionalAction, default=None,
                   help="write in SWMR mode for live readers (default: as the run was started)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE (a module name or a .py file) first: the potentials or "
                        "dynamics it defines, for a run made with them (repeatable)")
    s.set_defaults(fn=_resume)
    i = sub.add_parser("info", help="print a run file's config, progress, records, divergences")
    i.add_argument("path")
    i.set_defaults(fn=_info)
    p = sub.add_parser("repair", help="make a stopped or killed run file readable by h5py and "
                                      "xarray as it is (clear its writer's flags, drop "
                                      "uncommitted rows) without running it")
    p.add_argument("path")
    p.set_defaults(fn=_repair)
    w = sub.add_parser("warmup", help="compile every numba kernel ahead of the first run "
                                      "(fills Numba's on-disk cache)")
    w.add_argument("--dtype", default="float32,float64", help="comma-separated dtypes "
                   "(default: float32,float64)")
    w.add_argument("--only", action="append", metavar="POTENTIAL,DYNAMICS",
                   help="one pair by class names, e.g. DoubleWell,OverdampedLangevin (repeatable)")
    w.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="processes compiling pairs at once (default: the cores this process "
                        "may use; 1: one pair after the other, in this process)")
    w.set_defaults(fn=_warmup)
    b = sub.add_parser("backends", help="say which backends run here and how (versions, "
                                        "threads, GPU), or why not and the fix")
    b.add_argument("names", nargs="*", metavar="NAME",
                   help=f"backends to check (of {', '.join(BACKENDS)}; default all); exit "
                        "status 1 if one of those named cannot run here")
    b.set_defaults(fn=_backends)
    try:
        from .scan import add_scan_parser
    except ImportError:
        pass
    else:
        add_scan_parser(sub, _scan)
    return ap


def guarded(fn, *args, prog: str = "langevin-sim", exiting: bool = False) -> int:
    """Call `fn(*args)` as a command: exit status 0, a one-line error (status 2) for a
    LangevinSimError, one line for a run stopped by a signal (status 128 + signal), nothing
    where stdout's reader closed it (`errors.quiet_closed_stdout`), and
    the package's warnings (LangevinSimWarning: divergences, unrecorded steps) as one
    `warning:` line each.  Warnings are shown as they come (under
    the filters in force), not recorded: a run's warnings could number millions.
    `exiting`: the process exits after a stop, so further Ctrl-C and SIGTERM are ignored from
    then on (a second Ctrl-C a few ms after the first, once the run had stopped, printed a
    KeyboardInterrupt traceback from Python's exit handlers, status -2)."""
    with one_line_warnings(prog):
        try:
            with quiet_closed_stdout():     # `langevin-sim info RUN | head`
                status = fn(*args)
        except LangevinSimError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        except (RunStopped, RunTerminated) as e:
            if exiting:
                _ignore_stop_signals()
            print(f"{prog}: {e}", file=sys.stderr)
            return e.exit_code
    if exiting and status and status >= 128:       # (a scan stopped by a signal)
        _ignore_stop_signals()
    return status or 0


def _ignore_stop_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):       # (not the main thread)
            signal.signal(sig, signal.SIG_IGN)


def main(argv=None, *, exiting: bool = False) -> int:
    """The `langevin-sim` command on `argv`; its exit status.  `exiting`: `guarded`'s."""
    with quiet_closed_stdout():         # `langevin-sim --help | head`
        a = build_parser().parse_args(argv)
    return guarded(a.fn, a, exiting=exiting)


def entry() -> None:
    """The console script: `main`, then exit with its status."""
    sys.exit(main(exiting=True))


if __name__ == "__main__":
    entry()
