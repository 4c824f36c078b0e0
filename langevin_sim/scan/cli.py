"""Parameter scans: one scenario run per point of a grid, on Dask workers or serially.

    langevin-sim scan SCENARIO.py --grid temperature=0.5,1,2 --grid step=0.01,0.02
        [--zip a=1,2 --zip b=3,4] [--repeat N] [--set key=value ...] --out DIR
        [--workers N | --scheduler tcp://HOST:PORT] [--gpus N]

Points.  The grid axes (``--grid``) form a Cartesian product; the ``--zip`` keys vary
together as one more axis; ``--repeat N`` runs N seeds per point.  Each point is the
scenario's `Params` with the base overrides (``--config``, ``--set``) and the point's
coordinates applied, coerced by `resolve_params`.

Identity and seeds.  A point's id is ``"p"`` + the first 16 hex digits of
SHA-256(canonical JSON of {"coords": {key: value}, "repeat": r}) (sorted keys, the values as
coerced by the scenario's field types), so it does not depend on the order of the axes or
on which other points the scan has.  With ``h`` that id as a 64-bit integer and ``s`` the
scan seed (the scenario's ``seed`` parameter, ``--set seed=S``), the point's run seed is

    seed = splitmix64(splitmix64(s) XOR h) >> 1            (63 bits, so CSV readers keep it)

where splitmix64(z) is one SplitMix64 output from state z:
z += 0x9E3779B97F4A7C15; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) *
0x94D049BB133111EB; return z ^ z>>31 (all mod 2^64).  The point's file stores its resolved
parameters (with that seed) in ``config["meta"]["params"]``, so
``langevin-sim run SCENARIO --set key=value ... --set seed=SEED`` reproduces one point alone.

Files.  ``DIR/points/<id>.h5`` is the point's run file (the source of truth: complete per its
commit marker, parameters in its config meta, scan coordinates in ``meta["scan"]``);
``DIR/points/<id>.json`` records how the last attempt ended (status, wall time, error);
``DIR/scan.json`` holds the plan; ``DIR/manifest.csv`` is a view rebuilt from those files
(one row per point: id, coordinates, repeat, seed, status, path, wall_s, error), rewritten
atomically as points finish.  `open_scan(DIR)` rebuilds it from disk.

Resume.  Rerunning the same command skips points whose file is complete ("done", or
"diverged" when every replica diverged); a point whose file is incomplete or unreadable (a
killed worker) is resumed from its last checkpoint, or run again from scratch when the
file holds none; failed points run again.

GPUs.  With ``backend=cuda`` (``--set backend=cuda`` or ``--backend cuda``) the local cluster
has one worker per GPU (``--gpus N``, default every visible GPU), pinned with
CUDA_VISIBLE_DEVICES and declaring the Dask resource GPU=1; each point requests it, so a GPU
runs one point at a time.  On ``--scheduler`` the points request GPU=1 when the workers
declare it (``dask worker ADDRESS --nthreads 1 --resources GPU=1``, one per GPU).

Workers.  The default is a `distributed.LocalCluster` of spawned worker processes, one per
core (per ``threads`` cores), each running one point at a time with ``threads`` (default 1)
threads; NUMBA_NUM_THREADS, OMP_NUM_THREADS,
MKL_NUM_THREADS and OPENBLAS_NUM_THREADS are set to ``threads`` before they start, and each
point also caps Numba and BLAS threads at ``threads`` while it runs (this is what applies
on an external scheduler).  Before fanning out, the parent builds, for each combination of
the pending points' string and boolean values (what can change the kernels), the first
such point with 2 replicas and takes one step, so the Numba on-disk cache is written once
and the workers load it instead of racing to compile.  ``workers=1`` runs every point in this
process, in order, with no cluster; it writes the same files.
"""
from __future__ import annotations

import argparse

from ..backends import NAMES as BACKENDS
from .reader import open_scan
from .runner import run_scan


def add_scan_parser(sub: argparse._SubParsersAction, fn) -> None:
    """Add `langevin-sim scan` to the CLI's subparsers."""
    s = sub.add_parser("scan", help="run a scenario over a parameter grid (Dask or serial)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("scenario", help="path of a scenarios/*.py script")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a scan axis (repeatable; the axes form a Cartesian product); a "
                        "list-valued key's points are separated by ';': 'spectrum=1,3;2,4'")
    s.add_argument("--zip", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="keys varied together, as one axis (repeatable; equal lengths)")
    s.add_argument("--repeat", type=int, default=1, help="seeds per point (default 1)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario parameter for every point (repeatable)")
    s.add_argument("--config", metavar="TOML", help="TOML file of scenario parameters")
    s.add_argument("--quick", action="store_true",
                   help="every point starts from the scenario's quick preset (QUICK, less the "
                        "scanned keys; --set over it): a scan of seconds to try a grid")
    s.add_argument("--backend", choices=BACKENDS, help="override the backend")
    s.add_argument("--out", required=True, metavar="DIR", help="scan directory (resumed if it exists)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="1: serial in this process; N: a local cluster "
                   "of N processes (default: one per core)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="submit to a running Dask scheduler, "
                   "e.g. tcp://10.0.0.1:8786")
    s.add_argument("--threads", type=int, help="threads per point (default 1 on workers)")
    s.add_argument("--gpus", type=int, metavar="N", help="a local cluster of N workers, one per "
                   "GPU (pinned with CUDA_VISIBLE_DEVICES, each declaring the Dask resource GPU=1 "
                   "that every point requests); default with backend=cuda: one per visible GPU")
    s.add_argument("--flush-seconds", type=float, default=1.0,
                   help="flush records and checkpoint at least this often (default 1)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    s.add_argument("--scenario-edited", action="store_true",
                   help="resume a scan whose scenario file changed since it began (refused "
                        "otherwise: its finished points ran the earlier file)")
    s.set_defaults(fn=fn)


def cli_scan(a: argparse.Namespace) -> int:
    """`langevin-sim scan`: exit status 0 when every point is done, 1 otherwise; stopped by
    Ctrl-C or SIGTERM, one line with the points' states (128 + the signal)."""
    import sys

    from ..errors import RunTerminated
    from .cluster import requested_gpus, sigterm_stops

    try:
        with requested_gpus(a.gpus), sigterm_stops():
            scan = run_scan(a.scenario, a.grid, a.zip, a.repeat, a.set, a.out, a.workers,
                            a.scheduler, a.threads, a.config, a.backend, a.progress,
                            a.flush_seconds, a.scenario_edited, a.quick)
    except (KeyboardInterrupt, RunTerminated) as e:   # (RunStopped is a KeyboardInterrupt)
        try:
            counts = open_scan(a.out).manifest["status"].value_counts()
            states = ", ".join(f"{n} {s}" for s, n in counts.items())
        except Exception:   # noqa: BLE001 - the line is said whatever the directory holds
            states = "states unknown"
        print(f"langevin-sim: scan stopped ({states}); rerun the same command to resume it",
              file=sys.stderr)
        return getattr(e, "exit_code", 130)
    print(scan.describe())
    return 0 if (scan.manifest["status"] == "done").all() else 1
