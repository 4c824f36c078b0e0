"""`run_scan`: plan the points, check the directory against earlier runs, run what is not
finished (serially or on Dask) and keep the sidecars and the manifest up to date."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from ..errors import ConfigError, require
from ..scenario import load_scenario, quick_preset
from .cluster import check_gpus_with, check_local_gpus, run_on_dask
from .lock import dir_lock
from .manifest import (FINISHED, SCAN_FORMAT, atomic_write, inspect_run, other_rows, point_row,
                       read_json, write_manifest)
from .plan import Point, parse_sets, plan_scan
from .point import check_builds, run_point
from .reader import Scan


def run_scan(scenario, grid=None, zipped=None, repeat: int = 1, sets=None, out=None,
             workers: int | None = None, scheduler=None, threads: int | None = None,
             toml_path=None, backend: str | None = None, progress: bool | None = None,
             flush_seconds: float = 1.0, scenario_edited: bool = False,
             quick: bool = False) -> Scan:
    """Run `scenario` over a grid of parameters; returns the `Scan` of directory `out`.

    grid: {key: [values]} or ['key=v1,v2', ...] (Cartesian product); zipped: the same for
    keys varied together; repeat: seeds per point; sets: base overrides ({key: value} or
    ['key=value']); workers: 1 = serial in this process, N = LocalCluster of N processes,
    None = one per core / threads; scheduler: address of a running Dask scheduler (or a
    distributed.Client) to submit to instead; threads: threads per point (default 1 on
    workers, unchanged in serial mode).  Finished points in `out` are skipped; failed,
    killed and incomplete ones run again.  A directory whose scan ran an earlier version of
    the scenario file (its SHA-256 in scan.json) is refused unless `scenario_edited` says the
    edit leaves the points' physics as it was.  quick: every point starts from the
    scenario's quick preset (its scanned keys left out; `sets` over it), a scan of seconds
    to try a grid.  Ids, seeds and files: docs/scans.md.
    """
    if out is None:
        raise ConfigError("run_scan needs out=DIR (--out DIR), the scan directory")
    if workers is not None and scheduler is not None:
        raise ConfigError("give workers=N or scheduler=ADDRESS, not both")
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if workers is None or int(workers) > 1:       # before any file is written
        require("distributed", "scan", "a scan on a Dask cluster (workers > 1, a scheduler "
                "or the default local cluster; workers=1 runs serially without it)")
    if isinstance(scheduler, str):
        _check_scheduler_address(scheduler)
    check_gpus_with(scheduler)
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    scenario = os.path.abspath(os.fspath(scenario))
    mod = load_scenario(scenario)
    sets = parse_sets(sets)
    if backend is not None:
        sets["backend"] = backend
    # a rerun that lists the axes in another order keeps the scan's own (its manifest's
    # columns, the points' order and scan_summary's default --x)
    previous = read_json(Path(out) / "scan.json") if Path(out).is_dir() else None
    base, points, grid_keys, zip_keys = plan_scan(mod.Params, grid, zipped, repeat, sets, toml_path,
                                                  quick_preset(mod) if quick else None,
                                                  axis_order=(previous or {}).get("grid"))
    check_builds(scenario, points)
    if scheduler is None and any(p.params.get("backend") == "cuda" for p in points):
        # here, not in each point: one line (CuPy missing, no GPU), before any file is written;
        # also where the grid mixes backends (its cuda points would fail one by one)
        from ..backends.cuda_runtime import preflight
        preflight()
    if scheduler is None and not (workers is not None and int(workers) == 1):
        check_local_gpus([p.params for p in points])   # --gpus beyond the GPUs shown
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out {out} is a file; a scan writes a directory (its scan.json, "
                          "manifest and points/): give a new or an existing scan's directory")
    try:
        (root / "points").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make the scan directory --out {out}: {e.strerror or e}"
                          ) from None
    source = hashlib.sha256(Path(scenario).read_bytes()).hexdigest()
    spec = {"format": SCAN_FORMAT, "scenario": scenario, "scenario_sha256": source,
            "grid": grid_keys, "zip": zip_keys,
            "repeat": int(repeat), "scan_seed": base["seed"], "base": base,
            "points": [{"id": p.id, "coords": p.coords, "repeat": p.repeat, "seed": p.seed}
                       for p in points]}
    added = _defaults(mod.Params)
    with dir_lock(root):
        _check_previous(root, spec, added, scenario_edited)
        atomic_write(root / "scan.json", json.dumps(spec, indent=1))
        infos = {p.id: inspect_run(root / p.path) for p in points}
        _check_params(root, points, infos, added)
        rows = [point_row(root, p.id, p.coords, p.repeat, p.seed, infos[p.id]) for p in points]
        todo = [p for p, r in zip(points, rows) if r["status"] not in FINISHED]
        serial = workers is not None and int(workers) == 1
        tasks = [{"scenario": scenario, "params": p.params, "out": str((root / p.path).resolve()),
                  "scan": {"id": p.id, "coords": p.coords, "repeat": p.repeat,
                           "scan_seed": base["seed"]},
                  "threads": threads if serial else (threads or 1), "flush_seconds": flush_seconds}
                 for p in todo]
        for t in tasks:   # a stale record of an earlier attempt must not outlive this one
            with contextlib.suppress(FileNotFoundError):
                os.remove(root / "points" / f"{t['scan']['id']}.json")
        state = _Progress(root, points, rows, progress)
        try:
            if tasks and serial:
                for t in tasks:
                    state.finished(t, run_point(t))
            elif tasks:
                run_on_dask(tasks, state.finished, scenario, workers, scheduler, threads or 1)
        finally:
            state.close()
    return Scan(root, rows=state.all_rows())


def _check_scheduler_address(address: str) -> None:
    """Refuse, before any file is written, an address Dask cannot connect to by its scheme
    (http://HOST:8787 is the dashboard's URL, not the scheduler's address)."""
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend

    try:
        get_backend(parse_address(address)[0])
    except ValueError as e:
        raise ConfigError(f"--scheduler {address}: not a Dask scheduler address ({e}); give "
                          "tcp://HOST:PORT, the port the scheduler listens on (8786 by default, "
                          "not the dashboard's 8787)") from None


def _defaults(params_cls) -> dict:
    """The scenario's parameter defaults (JSON values, as resolved parameters store them): a
    parameter that an earlier scan or run file does not hold at all, asked for at its default,
    is one added to the scenario since (at a default that keeps the old behaviour, the
    scenarios' convention), not a difference."""
    return {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
            for f in dataclasses.fields(params_cls) if f.default is not dataclasses.MISSING}


_ABSENT = object()


def _differs(old: dict, key: str, new, added: dict) -> bool:
    have = old.get(key, _ABSENT)
    if have is _ABSENT:
        return added.get(key, _ABSENT) != new
    return have != new


def _check_previous(root: Path, spec: dict, added: dict, edited: bool = False) -> None:
    """Refuse a directory holding another scan (scenario, scan keys or base parameters;
    parameters added to the scenario since, at their defaults, excepted: `_defaults`), or a
    scan of another version of the scenario file unless `edited` accepts it."""
    old = read_json(root / "scan.json")
    if old is None:
        return
    if old.get("format") != SCAN_FORMAT:
        raise ConfigError(f"{root} holds a scan.json that is not a langevin_sim scan; use a new --out")
    if not any((root / "points").glob("*.h5")):
        return     # it ran nothing (every point failed at once, no scheduler): this one replaces it
    if os.path.basename(old["scenario"]) != os.path.basename(spec["scenario"]):
        raise ConfigError(f"{root} holds a scan of {old['scenario']}, not of {spec['scenario']}; "
                          "use a new --out directory")
    was = old.get("scenario_sha256")
    if was is not None and was != spec["scenario_sha256"] and not edited:
        raise ConfigError(f"{spec['scenario']} changed since {root} began (its finished points ran "
                          "the earlier file, whose results would mix with the new one's): use a "
                          "new --out directory, or --scenario-edited if the edit leaves the "
                          "points' physics as it was (a comment, a print)")
    if set(old["grid"]) | set(old["zip"]) != set(spec["grid"]) | set(spec["zip"]) \
            or set(old["zip"]) != set(spec["zip"]):
        raise ConfigError(f"{root} holds a scan over grid {old['grid']} zip {old['zip']}, this one "
                          f"is over grid {spec['grid']} zip {spec['zip']}; use a new --out directory")
    diff = {k: (old["base"].get(k), v) for k, v in spec["base"].items()
            if _differs(old["base"], k, v, added)}
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(f"{root} holds a scan with other base parameters ({shown}); rerun with "
                          "the same --set/--config to resume it, or use a new --out directory")


def _check_params(root: Path, points: list[Point], infos: dict, added: dict) -> None:
    """Refuse run files in the directory that were written with other parameters (those added
    to the scenario since, at their defaults, excepted: `_defaults`)."""
    bad = []
    for p in points:
        info = infos[p.id]
        if info["state"] in ("complete", "incomplete") and info["params"] != p.params:
            old = info["params"] or {}
            diff = {k: (old.get(k), v) for k, v in p.params.items()
                    if not old or _differs(old, k, v, added)}
            diff.update({k: (v, None) for k, v in old.items() if k not in p.params})
            if not diff:
                continue
            bad.append(f"{root / p.path}: " + ", ".join(f"{k} {a!r} != {b!r}" for k, (a, b) in diff.items()))
    if bad:
        raise ConfigError("run files in the scan directory were written with other parameters:\n  "
                          + "\n  ".join(bad[:5]) + "\nuse a new --out directory, or delete those files")


class _Progress:
    """The scan's bookkeeping in the parent: sidecars, manifest rewrites, one tqdm bar."""

    def __init__(self, root: Path, points: list[Point], rows: list[dict], progress: bool | None):
        from tqdm.auto import tqdm

        self.root, self.points = root, {p.id: p for p in points}
        self.rows = {r["id"]: r for r in rows}
        self.order = [p.id for p in points]
        done = sum(r["status"] in FINISHED for r in rows)
        show = sys.stderr.isatty() if progress is None else bool(progress)
        self.bar = tqdm(total=len(points), initial=done, unit="point", desc="scan",
                        disable=not show)
        self.others = other_rows(root, set(self.rows))
        self.last_write = 0.0
        self._write()

    def finished(self, task: dict, res: dict) -> None:
        if res["status"] == "stopped":  # a stopping scan's: the last reread reads its file
            return
        p = self.points[task["scan"]["id"]]
        side = dict(res, coords=p.coords, repeat=p.repeat, seed=p.seed,
                    finished=datetime.datetime.now(datetime.timezone.utc).isoformat())
        atomic_write(self.root / "points" / f"{p.id}.json", json.dumps(side, indent=1))
        self.rows[p.id] = point_row(self.root, p.id, p.coords, p.repeat, p.seed)
        self.bar.update(1)
        for w in res["warnings"]:
            self.bar.write(f"point {p.id} {p.coords} repeat {p.repeat}: warning: {w}",
                           file=sys.stderr)
        if self.rows[p.id]["status"] != "done":
            self.bar.write(f"point {p.id} {p.coords} repeat {p.repeat}: "
                           f"{self.rows[p.id]['status']}: {self.rows[p.id]['error']}", file=sys.stderr)
        if time.monotonic() - self.last_write >= 1.0:
            self._write()

    def all_rows(self) -> list[dict]:
        """The manifest's rows: the planned points in order, then the others on disk."""
        return [self.rows[i] for i in self.order] + self.others

    def _write(self) -> None:
        write_manifest(self.root, self.all_rows())
        self.last_write = time.monotonic()

    def reread(self) -> None:
        """The unfinished points' rows from their files again (a scan stopped midway: points
        in flight may have finished, or stopped partway, without reporting back)."""
        for i, r in self.rows.items():
            if r["status"] not in FINISHED:
                p = self.points[i]
                self.rows[i] = point_row(self.root, i, p.coords, p.repeat, p.seed)

    def close(self) -> None:
        """The unfinished points' rows reread (a point's attempt that failed while another
        copy of it still ran, since finished; a scan stopped midway, Ctrl-C or a dead
        scheduler: points in flight ended as they did), then the manifest written."""
        self.bar.close()
        self.reread()
        self._write()
