"""What a scan directory holds: each point's status, read from its files, and manifest.csv.

A point's run file (``points/<id>.h5``) is the truth: complete per its commit marker,
parameters in ``config["meta"]["params"]``; its sidecar (``points/<id>.json``) records how
the last attempt ended.  The manifest is a view rebuilt from both, rewritten atomically.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import RunFileError
from ..io import Run
from ..io import format as F
from .ids import is_point_id

SCAN_FORMAT = "langevin_sim-scan"
MANIFEST_COLUMNS_TAIL = ("repeat", "seed", "status", "path", "wall_s", "error")
FINISHED = ("done", "diverged")


def atomic_write(path: Path, text: str) -> None:
    """Write `path` through a temporary file and os.replace, so readers never see it torn."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def inspect_run(path: Path) -> dict:
    """What a point's run file holds: state missing | unreadable | incomplete | complete,
    and for a readable file its params, scan meta, steps done and target, checkpoint step
    and divergences."""
    if not path.exists():
        return {"state": "missing"}
    try:
        with Run(path) as run:
            cfg = run.config
            div, c = run.diverged_step, run.commit
            info = {"state": "complete" if run.complete else "incomplete",
                    "params": cfg.get("meta", {}).get("params"),
                    "scan": cfg.get("meta", {}).get("scan"),
                    "steps_done": run.steps_done, "steps_target": cfg.get("steps_target"),
                    # the marker's (reading the slot's state for it read ~100 MB a point,
                    # about 4 times per point in a scan)
                    "checkpoint_step": int(c[F.CKPT_STEP]) if c[F.CKPT_SLOT] >= 0 else None,
                    "all_diverged": bool(div.size and (div >= 0).all()),
                    "first_divergence": int(div[div >= 0].min()) if (div >= 0).any() else -1,
                    "replicas": int(div.size)}
    except (RunFileError, OSError, KeyError, ValueError) as e:
        return {"state": "unreadable", "error": f"{type(e).__name__}: {e}"}
    return info


def point_row(root: Path, pid: str, coords: dict | None, repeat, seed, info: dict | None = None) -> dict:
    """One manifest row from the point's run file (the truth) and its sidecar (how the last
    attempt ended)."""
    h5, side = root / "points" / f"{pid}.h5", read_json(root / "points" / f"{pid}.json") or {}
    info = inspect_run(h5) if info is None else info
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
    plan = plan if plan is not None else (read_json(root / "scan.json") or {}).get("points", [])
    rows = [point_row(root, p["id"], p["coords"], p["repeat"], p["seed"]) for p in plan]
    return rows + other_rows(root, {p["id"] for p in plan})


def other_rows(root: Path, known: set) -> list[dict]:
    """Rows of the points on disk that are not in `known` (left by an earlier plan)."""
    pts = root / "points"
    ids = sorted({f.stem for f in point_files(pts, ".h5") + point_files(pts, ".json")})
    return [point_row(root, pid, None, None, None) for pid in ids if pid not in known]


def point_files(folder: Path, suffix: str) -> list[Path]:
    """The points' own files <id><suffix> in `folder` (none if it is missing), sorted: not
    the rung files <id>.rung<k>.h5 of a replica-exchange point, nor any other file."""
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.glob(f"p*{suffix}") if is_point_id(f.name[:-len(suffix)]))


def axes_of(rows: list[dict]) -> list[str]:
    """The scan keys of `rows`, in order of first appearance."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in (r["coords"] or {}) if k not in keys]
    return keys


def write_manifest(root, rows: list[dict]) -> Path:
    """Write DIR/manifest.csv (one row per point) atomically: temp file + os.replace."""
    root = Path(root)
    axes = axes_of(rows)
    cols = ["id"] + axes + list(MANIFEST_COLUMNS_TAIL)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = {k: r[k] for k in cols if k in r}
        flat.update({k: (r["coords"] or {}).get(k) for k in axes})
        w.writerow({k: "" if v is None else v for k, v in flat.items()})
    path = root / "manifest.csv"
    atomic_write(path, buf.getvalue())
    return path
