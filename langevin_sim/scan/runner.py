"""Parameter scans: one scenario run per point of a grid, on Dask workers or serially.

    langevin-sim scan SCENARIO.py --grid temperature=0.5,1,2 --grid step=0.01,0.02
        [--zip a=1,2 --zip b=3,4] [--repeat N] [--set key=value ...] --out DIR
        [--workers N | --scheduler tcp://HOST:PORT]

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

Workers.  The default is a `distributed.LocalCluster` of spawned worker processes, one per
core, each with ``threads`` (default 1) threads; NUMBA_NUM_THREADS, OMP_NUM_THREADS,
MKL_NUM_THREADS and OPENBLAS_NUM_THREADS are set to ``threads`` before they start, and each
point also caps Numba and BLAS threads at ``threads`` while it runs (this is what applies
on an external scheduler).  Before fanning out, the parent builds the first pending point
with 2 replicas and takes one step, so the Numba on-disk cache is written once and the
workers load it instead of racing to compile.  ``workers=1`` runs every point in this
process, in order, with no cluster; it writes the same files.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import socket
import sys
import time
import traceback
import types
import typing
from pathlib import Path

from .errors import ConfigError, RunFileError

SCAN_FORMAT = "langevin_sim-scan"
MANIFEST_COLUMNS_TAIL = ("repeat", "seed", "status", "path", "wall_s", "error")
FINISHED = ("done", "diverged")
_MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------- seeds

def splitmix64(z: int) -> int:
    """One SplitMix64 output from state `z` (Steele, Lea & Flood 2014), mod 2^64."""
    z = (int(z) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def point_id(coords: dict, repeat: int) -> str:
    """Stable id of a scan point: "p" + 16 hex digits of SHA-256 of its canonical JSON."""
    canon = json.dumps({"coords": coords, "repeat": int(repeat)}, sort_keys=True,
                       separators=(",", ":"))
    return "p" + hashlib.sha256(canon.encode()).hexdigest()[:16]


def point_seed(scan_seed: int, pid: str) -> int:
    """Run seed of point `pid`: splitmix64(splitmix64(scan_seed) ^ int(pid[1:], 16)) >> 1."""
    return splitmix64(splitmix64(scan_seed) ^ int(pid[1:], 16)) >> 1


# ----------------------------------------------------------------------------- plan

@dataclasses.dataclass(frozen=True)
class Point:
    """One scan point: id, coordinates (scan key -> coerced value), repeat index, seed, and
    the full resolved scenario parameters (JSON-normalized) it runs with."""

    id: str
    coords: dict
    repeat: int
    seed: int
    params: dict

    @property
    def path(self) -> str:
        return f"points/{self.id}.h5"


def _parse_axes(items, flag: str) -> dict:
    """['key=v1,v2', ...] or {key: [values]} -> {key: [values]} (values as given)."""
    if items is None:
        return {}
    if isinstance(items, dict):
        out = {str(k): list(v) if isinstance(v, (list, tuple, range)) else [v] for k, v in items.items()}
    else:
        out = {}
        for item in items:
            if "=" not in item:
                raise ConfigError(f"{flag} expects key=v1,v2,..., got {item!r}")
            k, v = item.split("=", 1)
            k = k.strip()
            if k in out:
                raise ConfigError(f"{flag} {k} given twice; list all its values in one {flag} {k}=v1,v2")
            out[k] = [s.strip() for s in v.split(",")]
    for k, vals in out.items():
        if not vals or any(isinstance(s, str) and s == "" for s in vals):
            raise ConfigError(f"{flag} {k}={vals!r}: give a comma-separated list of values, e.g. {k}=0.5,1")
    return out


def _parse_sets(sets) -> dict:
    if sets is None:
        return {}
    if isinstance(sets, dict):
        return dict(sets)
    out = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _canonical(params_cls, values: dict) -> dict:
    """Python numbers given for float / int fields as those types (1 -> 1.0 for a float
    field, 2.0 -> 2 for an int one), so that a point has the same id and seed whether its
    values came from the command line (strings, coerced by `resolve_params`) or Python."""
    hints = typing.get_type_hints(params_cls)
    out = {}
    for k, v in values.items():
        hint = hints.get(k)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        target = args[0] if args and typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            out[k] = v
        elif target is float:
            out[k] = float(v)
        elif target is int and isinstance(v, float):
            if not v.is_integer():
                raise ConfigError(f"{k}={v!r}: expected an int")
            out[k] = int(v)
        else:
            out[k] = v
    return out


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def plan_scan(params_cls, grid=None, zipped=None, repeat: int = 1, sets=None, toml_path=None):
    """Resolve the points of a scan of a scenario's `Params` class.

    Returns (base, points, grid_keys, zip_keys): `base` the JSON-normalized base parameters
    (defaults <- TOML <- sets; its ``seed`` is the scan seed), `points` a list of `Point` in
    order (grid axes in the order given, last fastest; then the zip axis; repeats fastest).
    """
    from .scenario import resolve_params

    grid, zipped, sets = _parse_axes(grid, "--grid"), _parse_axes(zipped, "--zip"), _parse_sets(sets)
    sets = _canonical(params_cls, sets)
    if int(repeat) < 1:
        raise ConfigError(f"--repeat must be >= 1, got {repeat}")
    fields = {f.name for f in dataclasses.fields(params_cls)}
    for flag, keys in (("--grid", grid), ("--zip", zipped)):
        unknown = sorted(set(keys) - fields)
        if unknown:
            raise ConfigError(f"{flag} key(s) {unknown} are not parameters of this scenario; "
                              f"it takes {sorted(fields)}")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise ConfigError(f"{both} given both as --grid and --zip; use one")
    scanned = set(grid) | set(zipped)
    if "seed" in scanned:
        raise ConfigError("seed cannot be a scan axis: the point seeds derive from --set seed=S; "
                          "use --repeat N for N seeds per point")
    overlap = sorted(scanned & set(sets))
    if overlap:
        raise ConfigError(f"{overlap} given both as scan axes and --set; drop the --set")
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"--zip keys need lists of equal length, got {lengths}")
    base = _jsonable(dataclasses.asdict(resolve_params(params_cls, toml_path, sets)))
    scan_seed = base["seed"]
    zip_rows = [dict(zip(zipped, vals)) for vals in zip(*zipped.values())] if zipped else [{}]
    points, seen = [], {}
    for gvals in itertools.product(*grid.values()):
        for zrow in zip_rows:
            raw = _canonical(params_cls, dict(zip(grid, gvals), **zrow))
            p = resolve_params(params_cls, toml_path, {**sets, **raw})
            coords = _jsonable({k: getattr(p, k) for k in raw})
            for r in range(int(repeat)):
                pid = point_id(coords, r)
                if pid in seen:
                    raise ConfigError(f"scan points {seen[pid]} and {coords} coincide after type "
                                      "coercion; list each value once")
                seen[pid] = coords
                seed = point_seed(scan_seed, pid)
                params = _jsonable(dataclasses.asdict(dataclasses.replace(p, seed=seed)))
                points.append(Point(pid, coords, r, seed, params))
    return base, points, list(grid), list(zipped)


# ----------------------------------------------------------------------------- files

def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _inspect(path: Path) -> dict:
    """What a point's run file holds: state missing | unreadable | incomplete | complete."""
    from .io import Run
    from .io import format as F

    if not path.exists():
        return {"state": "missing"}
    try:
        with Run(path) as run:
            cfg = run.config
            div = run.diverged_step
            info = {"state": "complete" if run.complete else "incomplete",
                    "params": cfg.get("meta", {}).get("params"),
                    "scan": cfg.get("meta", {}).get("scan"),
                    "steps_done": run.steps_done, "steps_target": cfg.get("steps_target"),
                    "checkpoint_step": run.checkpoint()[0] if run.commit[F.CKPT_SLOT] >= 0 else None,
                    "all_diverged": bool(div.size and (div >= 0).all()),
                    "first_divergence": int(div[div >= 0].min()) if (div >= 0).any() else -1,
                    "replicas": int(div.size)}
    except (RunFileError, OSError, KeyError, ValueError) as e:
        return {"state": "unreadable", "error": f"{type(e).__name__}: {e}"}
    return info


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _point_row(root: Path, pid: str, coords: dict | None, repeat, seed, info: dict | None = None) -> dict:
    """One manifest row from the point's run file (the truth) and its sidecar (how the last
    attempt ended)."""
    h5, side = root / "points" / f"{pid}.h5", _read_json(root / "points" / f"{pid}.json") or {}
    info = _inspect(h5) if info is None else info
    meta = info.get("scan") or {}
    coords = coords if coords is not None else meta.get("coords", side.get("coords", {}))
    repeat = repeat if repeat is not None else meta.get("repeat", side.get("repeat"))
    seed = seed if seed is not None else (info.get("params") or {}).get("seed", side.get("seed"))
    wall, error = None, ""
    if info["state"] == "complete":
        status = "diverged" if info["all_diverged"] else "done"
        if status == "diverged":
            error = (f"all {info['replicas']} replicas diverged (first at step "
                     f"{info['first_divergence']})")
        if side.get("status") in FINISHED:
            wall = side.get("wall_s")
    elif side.get("status") == "failed":
        status, error, wall = "failed", side.get("error", ""), side.get("wall_s")
    elif info["state"] == "incomplete":
        status = "incomplete"
        error = f"run file incomplete at step {info['steps_done']} of {info['steps_target']}"
    elif info["state"] == "unreadable":
        status, error = "incomplete", info["error"]
    else:
        status = "pending"
    return {"id": pid, "coords": coords, "repeat": repeat, "seed": seed, "status": status,
            "path": f"points/{pid}.h5", "wall_s": wall, "error": error}


def rebuild_rows(root, plan: list[dict] | None = None) -> list[dict]:
    """Manifest rows of scan directory `root`: the planned points (scan.json, in order) and
    any other point found on disk (from earlier plans), each read from its files."""
    root = Path(root)
    plan = plan if plan is not None else (_read_json(root / "scan.json") or {}).get("points", [])
    rows = [_point_row(root, p["id"], p["coords"], p["repeat"], p["seed"]) for p in plan]
    return rows + _other_rows(root, {p["id"] for p in plan})


def _other_rows(root: Path, known: set) -> list[dict]:
    """Rows of the points on disk that are not in `known` (left by an earlier plan)."""
    pts = root / "points"
    ids = sorted({f.stem for f in pts.glob("p*.h5")} | {f.stem for f in pts.glob("p*.json")}) \
        if pts.is_dir() else []
    return [_point_row(root, pid, None, None, None) for pid in ids if pid not in known]


def _axes_of(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in (r["coords"] or {}) if k not in keys]
    return keys


def write_manifest(root, rows: list[dict]) -> Path:
    """Write DIR/manifest.csv (one row per point) atomically: temp file + os.replace."""
    import io

    root = Path(root)
    axes = _axes_of(rows)
    cols = ["id"] + axes + list(MANIFEST_COLUMNS_TAIL)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = {k: r[k] for k in cols if k in r}
        flat.update({k: (r["coords"] or {}).get(k) for k in axes})
        w.writerow({k: "" if v is None else v for k, v in flat.items()})
    path = root / "manifest.csv"
    _atomic_write(path, buf.getvalue())
    return path


@contextlib.contextmanager
def _dir_lock(root: Path):
    """Hold DIR/scan.lock (host:pid) so two scans never write one directory at once."""
    lock, me = root / "scan.lock", f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = lock.read_text().strip()
            except FileNotFoundError:
                continue
            host, _, pid = owner.rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock)
                continue
            raise ConfigError(f"another scan ({owner}) is running in {root}; wait for it to end, "
                              f"or delete {lock} if that process is gone") from None
        os.write(fd, me.encode())
        os.close(fd)
        break
    else:
        raise ConfigError(f"could not take the lock {lock}; delete it if no scan is running")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- one point

@contextlib.contextmanager
def _thread_limits(threads: int | None):
    """Cap Numba parallel threads (this thread) and BLAS/OpenMP threads at `threads`."""
    if threads is None:
        yield
        return
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        numba.set_num_threads(before)


def run_point(task: dict) -> dict:
    """Run one scan point (on a worker or in-process); never raises for a failing point.

    task: scenario (path), params (full, JSON), out (run-file path), scan (meta stored in
    the file), threads, flush_seconds.  An incomplete file left by a killed worker is
    resumed from its checkpoint when its parameters match, else replaced.  Returns
    {id, status: done | diverged | failed, wall_s, error, traceback, resumed_from, worker}.
    """
    t0 = time.perf_counter()
    pid, out = task["scan"]["id"], Path(task["out"])
    res = {"id": pid, "resumed_from": None, "error": "", "traceback": "",
           "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        with _thread_limits(task["threads"]):
            run = None
            info = _inspect(out)
            if info["state"] in ("complete", "incomplete") and info["params"] == task["params"]:
                if info["state"] == "complete":
                    from .io import Run

                    run = Run(out)
                elif info["checkpoint_step"] is not None:
                    from .simulation import resume

                    try:
                        run = resume(out, progress=False, flush_seconds=task["flush_seconds"])
                        res["resumed_from"] = info["checkpoint_step"]
                    except Exception:  # a damaged file: start again below
                        run = None
            if run is None:
                run = _fresh_run(task)
            with run:
                div = run.diverged_step
                if div.size and (div >= 0).all():
                    res.update(status="diverged", error=f"all {div.size} replicas diverged "
                                                        f"(first at step {int(div.min())})")
                else:
                    res["status"] = "done"
    except Exception as e:
        res.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    res["wall_s"] = round(time.perf_counter() - t0, 6)
    return res


def _fresh_run(task: dict):
    from .scenario import load_scenario, resolve_params

    mod = load_scenario(task["scenario"])
    p = resolve_params(mod.Params, sets=task["params"])
    sim = mod.build(p)
    sim.meta.update(scenario=os.path.basename(task["scenario"]), params=dataclasses.asdict(p),
                    scan=task["scan"])
    out = Path(task["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    return sim.run(p.steps, p.record_every, out=out, record_positions=p.record_positions,
                   overwrite=True, progress=False, flush_seconds=task["flush_seconds"])


def _warm_numba_cache(scenario: str, tasks: list[dict], tries: int = 3) -> None:
    """Compile the Numba kernels of the pending points into the on-disk cache, in this
    process, before workers start: for each distinct combination of the points' str/bool
    coordinates (a backend, a dtype, a model switch: what can change the kernels; numbers
    only change their arguments), build the first buildable point with 2 replicas and take
    one step.  A point whose build fails is skipped here; its own run reports why."""
    from .scenario import load_scenario, resolve_params

    mod = load_scenario(scenario)
    groups: dict = {}
    for t in tasks:
        key = tuple((k, v) for k, v in sorted(t["scan"]["coords"].items()) if isinstance(v, (str, bool)))
        groups.setdefault(key, []).append(t)
    for group in groups.values():
        for task in group[:tries]:
            try:
                p = resolve_params(mod.Params, sets=task["params"])
                mod.build(dataclasses.replace(p, replicas=min(p.replicas, 2))).advance(1)
                break
            except Exception:
                continue


# ----------------------------------------------------------------------------- the scan

def run_scan(scenario, grid=None, zipped=None, repeat: int = 1, sets=None, out=None,
             workers: int | None = None, scheduler=None, threads: int | None = None,
             toml_path=None, backend: str | None = None, progress: bool | None = None,
             flush_seconds: float = 1.0) -> "Scan":
    """Run `scenario` over a grid of parameters; returns the `Scan` of directory `out`.

    grid: {key: [values]} or ['key=v1,v2', ...] (Cartesian product); zipped: the same for
    keys varied together; repeat: seeds per point; sets: base overrides ({key: value} or
    ['key=value']); workers: 1 = serial in this process, N = LocalCluster of N processes,
    None = one per core / threads; scheduler: address of a running Dask scheduler (or a
    distributed.Client) to submit to instead; threads: threads per point (default 1 on
    workers, unchanged in serial mode).  Finished points in `out` are skipped; failed,
    killed and incomplete ones run again.  See the module docstring for ids, seeds, files.
    """
    from .scenario import load_scenario

    if out is None:
        raise ConfigError("run_scan needs out=DIR (--out DIR), the scan directory")
    if workers is not None and scheduler is not None:
        raise ConfigError("give workers=N or scheduler=ADDRESS, not both")
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    scenario = os.path.abspath(os.fspath(scenario))
    mod = load_scenario(scenario)
    sets = _parse_sets(sets)
    if backend is not None:
        sets["backend"] = backend
    base, points, grid_keys, zip_keys = plan_scan(mod.Params, grid, zipped, repeat, sets, toml_path)
    root = Path(out)
    (root / "points").mkdir(parents=True, exist_ok=True)
    spec = {"format": SCAN_FORMAT, "scenario": scenario, "grid": grid_keys, "zip": zip_keys,
            "repeat": int(repeat), "scan_seed": base["seed"], "base": base,
            "points": [{"id": p.id, "coords": p.coords, "repeat": p.repeat, "seed": p.seed}
                       for p in points]}
    with _dir_lock(root):
        _check_previous(root, spec, points)
        _atomic_write(root / "scan.json", json.dumps(spec, indent=1))
        infos = {p.id: _inspect(root / p.path) for p in points}
        _check_params(root, points, infos)
        rows = [_point_row(root, p.id, p.coords, p.repeat, p.seed, infos[p.id]) for p in points]
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
                _run_on_dask(tasks, state, scenario, workers, scheduler, threads or 1)
        finally:
            state.close()
    return open_scan(root)


def _check_previous(root: Path, spec: dict, points: list[Point]) -> None:
    old = _read_json(root / "scan.json")
    if old is None:
        return
    if old.get("format") != SCAN_FORMAT:
        raise ConfigError(f"{root} holds a scan.json that is not a langevin_sim scan; use a new --out")
    if os.path.basename(old["scenario"]) != os.path.basename(spec["scenario"]):
        raise ConfigError(f"{root} holds a scan of {old['scenario']}, not of {spec['scenario']}; "
                          "use a new --out directory")
    if set(old["grid"]) | set(old["zip"]) != set(spec["grid"]) | set(spec["zip"]) \
            or set(old["zip"]) != set(spec["zip"]):
        raise ConfigError(f"{root} holds a scan over grid {old['grid']} zip {old['zip']}, this one "
                          f"is over grid {spec['grid']} zip {spec['zip']}; use a new --out directory")
    diff = {k: (old["base"].get(k), v) for k, v in spec["base"].items() if old["base"].get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(f"{root} holds a scan with other base parameters ({shown}); rerun with "
                          "the same --set/--config to resume it, or use a new --out directory")


def _check_params(root: Path, points: list[Point], infos: dict) -> None:
    bad = []
    for p in points:
        info = infos[p.id]
        if info["state"] in ("complete", "incomplete") and info["params"] != p.params:
            diff = {k: (info["params"].get(k) if info["params"] else None, v)
                    for k, v in p.params.items() if not info["params"] or info["params"].get(k) != v}
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
        self.others = _other_rows(root, set(self.rows))
        self.last_write = 0.0
        self._write()

    def finished(self, task: dict, res: dict) -> None:
        p = self.points[task["scan"]["id"]]
        side = dict(res, coords=p.coords, repeat=p.repeat, seed=p.seed,
                    finished=datetime.datetime.now(datetime.timezone.utc).isoformat())
        _atomic_write(self.root / "points" / f"{p.id}.json", json.dumps(side, indent=1))
        self.rows[p.id] = _point_row(self.root, p.id, p.coords, p.repeat, p.seed)
        self.bar.update(1)
        if self.rows[p.id]["status"] != "done":
            self.bar.write(f"point {p.id} {p.coords} repeat {p.repeat}: "
                           f"{self.rows[p.id]['status']}: {self.rows[p.id]['error']}", file=sys.stderr)
        if time.monotonic() - self.last_write >= 1.0:
            self._write()

    def _write(self) -> None:
        write_manifest(self.root, [self.rows[i] for i in self.order] + self.others)
        self.last_write = time.monotonic()

    def close(self) -> None:
        self.bar.close()
        self._write()


_THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _environ_restored(keys):
    """Put os.environ[keys] back as they were on exit.

    A Dask Nanny writes its pre-spawn environment into this process's os.environ and leaves it
    there; a later Numba compile here would then read NUMBA_NUM_THREADS anew and refuse it
    (the thread pool is already launched with another size)."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_on_dask(tasks: list[dict], state: _Progress, scenario: str, workers: int | None,
                 scheduler, threads: int) -> None:
    with _environ_restored(_THREAD_VARS):
        _run_on_dask_cluster(tasks, state, scenario, workers, scheduler, threads)


def _run_on_dask_cluster(tasks: list[dict], state: _Progress, scenario: str,
                         workers: int | None, scheduler, threads: int) -> None:
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster, futures = None, {}
    if scheduler is None:
        n = int(workers) if workers is not None else max(1, len(os.sched_getaffinity(0)) // threads)
        _warm_numba_cache(scenario, tasks)
        env = {k: str(threads) for k in _THREAD_VARS}
        # allowed-failures 0: a point whose worker dies is recorded as failed at once (the
        # rerun resumes it) instead of being retried on, and possibly killing, other workers
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.worker.multiprocessing-method": "spawn",
                              "distributed.nanny.pre-spawn-environ":
                                  dict(dask.config.get("distributed.nanny.pre-spawn-environ"), **env)}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                                   dashboard_address=":0")
        client = Client(cluster, set_as_default=False)
    elif isinstance(scheduler, str):
        client = Client(scheduler, set_as_default=False)
    else:
        client = scheduler
    try:
        _announce(client)
        if cluster is None:
            # an external cluster's nodes may have another CPU than this machine: warm the
            # (shared) Numba cache on one of its workers, before fanning out
            try:
                client.submit(_warm_numba_cache, scenario, tasks, pure=False, retries=0).result()
            except Exception as e:
                print(f"warming the Numba cache on a worker failed ({type(e).__name__}: {e}); "
                      "workers compile on their own", file=sys.stderr)
        for t in tasks:
            key = f"point-{t['scan']['id']}-{os.urandom(4).hex()}"
            futures[client.submit(run_point, t, key=key, pure=False, retries=0)] = t
        for fut in as_completed(futures, loop=client.loop):
            t = futures.pop(fut)
            if fut.status == "finished":
                res = fut.result()
            else:
                exc = fut.exception()
                name = type(exc).__name__
                msg = f"{name}: {exc}"
                if name == "KilledWorker":
                    msg += " (the worker process died: killed, out of memory, or crashed)"
                res = {"id": t["scan"]["id"], "status": "failed", "error": msg,
                       "traceback": "", "wall_s": None, "resumed_from": None, "worker": ""}
            fut.release()
            state.finished(t, res)
    finally:
        for fut in list(futures):
            fut.cancel()
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _announce(client) -> None:
    """Print the scheduler address and, where the scheduler can serve it, the dashboard."""
    info = client.scheduler_info()
    where = f"dask scheduler {info['address']} ({len(info['workers'])} workers)"
    if "dashboard" in info.get("services", {}) and client.run_on_scheduler(_has_bokeh):
        print(f"{where}, dashboard {client.dashboard_link}", file=sys.stderr)
    else:
        print(f"{where}; no dashboard: it needs `pip install bokeh` where the scheduler runs",
              file=sys.stderr)


# ----------------------------------------------------------------------------- reading

class Scan:
    """A scan directory: its plan (scan.json) and a manifest rebuilt from the files on disk.

    manifest: pandas DataFrame, one row per point (id, one column per scan key, repeat,
    seed, status, path, wall_s, error).  grid / zip: the scan keys; `open(id)` opens a
    point's Run; `summarize(fn)` gathers a scalar summary of every point into an
    xarray.Dataset indexed by the scan parameters (see langevin_sim.analysis.scan.gather).
    """

    def __init__(self, root):
        import pandas as pd

        self.root = Path(root)
        spec = _read_json(self.root / "scan.json")
        if spec is None or spec.get("format") != SCAN_FORMAT:
            raise RunFileError(f"{self.root} holds no scan (no readable scan.json); pass a directory "
                               "written by `langevin-sim scan --out DIR`")
        self.spec = spec
        self.rows = rebuild_rows(self.root, spec["points"])
        axes = _axes_of(self.rows)
        self.grid = [k for k in spec["grid"]]
        self.zip = [k for k in spec["zip"]]
        self.grid += [k for k in axes if k not in self.grid and k not in self.zip]
        table = [{"id": r["id"], **{k: (r["coords"] or {}).get(k) for k in axes},
                  **{k: r[k] for k in MANIFEST_COLUMNS_TAIL}} for r in self.rows]
        cols = ["id"] + axes + list(MANIFEST_COLUMNS_TAIL)
        self.manifest = pd.DataFrame(table, columns=cols)
        self.manifest["wall_s"] = pd.to_numeric(self.manifest["wall_s"], errors="coerce")

    @property
    def keys(self) -> list[str]:
        """All scan keys: grid axes, then zip keys."""
        return self.grid + self.zip

    def open(self, pid: str):
        """The Run of point `pid` (a run file, open for reading)."""
        from .io import open_run

        return open_run(self.root / "points" / f"{pid}.h5")

    def counts(self) -> dict:
        return self.manifest["status"].value_counts().to_dict()

    def summarize(self, fn=None, **kwargs):
        """xarray.Dataset of `fn(run, **kwargs)` (a float or {name: float}) over all points;
        default `langevin_sim.analysis.scan.energy_summary`."""
        from .analysis.scan import gather

        return gather(self, fn, **kwargs)

    def describe(self) -> str:
        c = self.counts()
        lines = [f"scan {self.root}: {len(self.manifest)} points: "
                 + ", ".join(f"{n} {s}" for s, n in sorted(c.items())),
                 f"manifest {self.root / 'manifest.csv'}"]
        for _, r in self.manifest[~self.manifest["status"].isin(["done"])].head(20).iterrows():
            coords = ", ".join(f"{k}={r[k]}" for k in self.keys)
            lines.append(f"  {r['id']} ({coords}, repeat {r['repeat']}): {r['status']}: {r['error']}")
        return "\n".join(lines)


def open_scan(root) -> Scan:
    """Open scan directory `root`; its manifest is rebuilt from the files on disk."""
    return Scan(root)


# ----------------------------------------------------------------------------- CLI

def add_scan_parser(sub, fn) -> None:
    """Add `langevin-sim scan` to the CLI's subparsers."""
    s = sub.add_parser("scan", help="run a scenario over a parameter grid (Dask or serial)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("scenario", help="path of a scenarios/*.py script")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a scan axis (repeatable; the axes form a Cartesian product)")
    s.add_argument("--zip", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="keys varied together, as one axis (repeatable; equal lengths)")
    s.add_argument("--repeat", type=int, default=1, help="seeds per point (default 1)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario parameter for every point (repeatable)")
    s.add_argument("--config", metavar="TOML", help="TOML file of scenario parameters")
    s.add_argument("--backend", choices=("numpy", "numba", "cuda"), help="override the backend")
    s.add_argument("--out", required=True, metavar="DIR", help="scan directory (resumed if it exists)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="1: serial in this process; N: a local cluster "
                   "of N processes (default: one per core)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="submit to a running Dask scheduler, "
                   "e.g. tcp://10.0.0.1:8786")
    s.add_argument("--threads", type=int, help="threads per point (default 1 on workers)")
    s.add_argument("--flush-seconds", type=float, default=1.0,
                   help="flush records and checkpoint at least this often (default 1)")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    s.set_defaults(fn=fn)


def cli_scan(a) -> int:
    """`langevin-sim scan`: exit status 0 when every point is done, 1 otherwise."""
    scan = run_scan(a.scenario, a.grid, a.zip, a.repeat, a.set, a.out, a.workers, a.scheduler,
                    a.threads, a.config, a.backend, a.progress, a.flush_seconds)
    print(scan.describe())
    return 0 if (scan.manifest["status"] == "done").all() else 1
