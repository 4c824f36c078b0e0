"""Parameter scans: cluster vs serial, manifest, failures, a killed worker, resume, summary.

The scenario is tests/scan_scenario.py (isotropic quadratic well, overdamped Langevin), whose
stationary mean energy is known exactly for the discrete dynamics; its build raises for
curvature <= 0 and every replica diverges when step * curvature > 2.
"""
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numba
import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("pandas")
pytest.importorskip("xarray")

import pandas as pd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from langevin_sim import open_run  # noqa: E402
from langevin_sim.cli import main as cli  # noqa: E402
from langevin_sim.errors import ConfigError, RunFileError  # noqa: E402
from langevin_sim.io import format as F  # noqa: E402
from langevin_sim.scan import (_THREAD_VARS, open_scan, plan_scan, point_id, point_seed,  # noqa: E402
                               run_scan, splitmix64)
from langevin_sim.scenario import load_scenario, run_scenario  # noqa: E402

from .conftest import assert_within_se  # noqa: E402

HERE = Path(__file__).resolve().parent
SCEN = str(HERE / "scan_scenario.py")
ROOT = HERE.parent
GRID = {"step": [0.02, 0.05], "temperature": [0.5, 1.0, 2.0]}
VOLATILE_ATTRS = ("created", "command")
ENV_BEFORE = {k: os.environ.get(k) for k in _THREAD_VARS}


def file_contents(path) -> dict:
    """Every dataset and attribute of a run file, except the timestamps (created, command) and
    the dimension-scale references.  Finished files mirror the final checkpoint into both
    slots, so the slots are compared too."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
            for k, v in obj.attrs.items():
                if k not in ("DIMENSION_LIST", "REFERENCE_LIST"):
                    out[f"{name}@{k}"] = v
        f.visititems(visit)
        out.update({f"@{k}": v for k, v in f.attrs.items() if k not in VOLATILE_ATTRS})
        out["config@json"] = json.loads(out["config@json"])
    return out


def assert_same_file(a, b):
    ca, cb = file_contents(a), file_contents(b)
    assert ca.keys() == cb.keys(), (a, b, set(ca) ^ set(cb))
    for k in ca:
        if isinstance(ca[k], dict):
            assert ca[k] == cb[k], (a, b, k)
        else:
            np.testing.assert_array_equal(ca[k], cb[k], err_msg=f"{a} vs {b}: {k}")


@pytest.fixture(scope="module")
def grid_scan(tmp_path_factory):
    """The 2 x 3 scan on run_scan's own LocalCluster of 2 worker processes."""
    out = tmp_path_factory.mktemp("grid")
    return run_scan(SCEN, grid=GRID, out=out, workers=2, progress=False)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded workers; a killed worker fails its task at once."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield c
    c.close()


def test_seed_derivation_known_answers():
    # SplitMix64 reference (Vigna, splitmix64.c): the first output from state 0
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    pid = point_id({"temperature": 0.5, "step": 0.02}, 0)
    assert pid == point_id({"step": 0.02, "temperature": 0.5}, 0)     # order of the axes
    assert pid != point_id({"step": 0.02, "temperature": 0.5}, 1)
    assert point_seed(7, pid) == splitmix64(splitmix64(7) ^ int(pid[1:], 16)) >> 1
    assert point_seed(7, pid) != point_seed(8, pid)


def test_plan_validates_axes():
    P = load_scenario(SCEN).Params
    base, pts, grid, zipped = plan_scan(P, ["temperature=0.5,1"], ["step=0.01,0.02", "d=1,3"],
                                        repeat=2, sets=["seed=5"])
    assert (grid, zipped, base["seed"], len(pts)) == (["temperature"], ["step", "d"], 5, 8)
    assert pts[0].coords == {"temperature": 0.5, "step": 0.01, "d": 1}    # coerced to field types
    assert len({p.id for p in pts}) == len({p.seed for p in pts}) == 8
    # Python values plan the same points (ids, seeds, params) as command-line strings
    again = plan_scan(P, {"temperature": [0.5, 1]}, {"step": [0.01, 0.02], "d": [1.0, 3]},
                      repeat=2, sets={"seed": 5})
    assert again == (base, pts, grid, zipped)
    bad = [dict(grid=["seed=1,2"]), dict(grid=["nope=1,2"]), dict(grid=["d=1,1.0"]),
           dict(zipped=["d=1,2", "step=0.1"]), dict(grid=["d=1,2"], sets=["d=3"]),
           dict(grid=["d=1", "d=2"]), dict(grid=["d="]), dict(repeat=0)]
    for kw in bad:
        with pytest.raises(ConfigError):
            plan_scan(P, **kw)


def test_grid_scan_on_local_cluster(grid_scan):
    man, root = grid_scan.manifest, grid_scan.root
    assert len(man) == 6 and man["id"].is_unique and (man["status"] == "done").all(), man
    assert sorted(zip(man["step"], man["temperature"])) == sorted(
        (s, t) for s in GRID["step"] for t in GRID["temperature"])
    csv = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    assert list(csv.columns) == ["id", "step", "temperature", "repeat", "seed", "status", "path",
                                 "wall_s", "error"]
    assert list(csv["id"]) == list(man["id"]) and list(csv["seed"]) == list(man["seed"])
    assert (csv["status"] == "done").all() and (csv["error"] == "").all() and (csv["wall_s"] > 0).all()
    assert sorted(p.name for p in (root / "points").glob("*.h5")) == sorted(f"{i}.h5" for i in man["id"])
    for _, row in man.iterrows():
        with open_run(root / row["path"]) as run:
            cfg = run.config
            params, meta = cfg["meta"]["params"], cfg["meta"]["scan"]
            assert run.complete and run.steps_done == 1000 and run.n_records == 101
            assert (params["step"], params["temperature"]) == (row["step"], row["temperature"])
            assert params["seed"] == cfg["seed"] == row["seed"] == point_seed(0, row["id"])
            assert meta["id"] == row["id"] and meta["coords"] == {"step": row["step"],
                                                                  "temperature": row["temperature"]}
            assert cfg["dynamics"]["temperature"]["start"] == row["temperature"]


def test_scan_leaves_this_process_environment_alone(grid_scan):
    """The Nanny's pre-spawn environment (NUMBA_NUM_THREADS=1 ...) must not stay in
    os.environ here: Numba rereads it at every compile and refuses a new thread count."""
    for k in _THREAD_VARS:
        assert os.environ.get(k) == ENV_BEFORE[k], k
    numba.njit(lambda a: a + 1)(1)          # a fresh compile rereads the environment


def test_summary_matches_exact_mean_energy(grid_scan):
    ds = grid_scan.summarize()
    assert dict(ds.sizes) == {"step": 2, "temperature": 3, "repeat": 1}
    eta, T = ds["step"], ds["temperature"]
    exact = 2 * T / (2 * (1 - eta / 2))       # d T / (2 (1 - eta k / 2)), d = 2, k = 1
    # per-replica time averages of 50 records over 64 independent replicas: SE from their
    # spread (~3% here), tolerance 4 SE; a factor-2 error in T or d fails by > 20 SE
    assert_within_se(ds["energy_mean"].values, exact.broadcast_like(ds["energy_mean"]).values,
                     ds["energy_se"].values, what="scan mean energy")


def test_serial_scan_gives_identical_files_and_points_rerun_alone(grid_scan, tmp_path):
    out = tmp_path / "serial"
    rc = cli(["scan", SCEN, "--grid", "step=0.02,0.05", "--grid", "temperature=0.5,1,2",
              "--workers", "1", "--threads", "1", "--out", str(out)])
    assert rc == 0
    serial = open_scan(out)
    assert list(serial.manifest["id"]) == list(grid_scan.manifest["id"])
    for rel in grid_scan.manifest["path"]:
        assert_same_file(grid_scan.root / rel, out / rel)
    # one point alone, from its manifest row, gives the same records
    row = serial.manifest.iloc[4]
    alone = run_scenario(SCEN, {"step": row["step"], "temperature": row["temperature"],
                                "seed": int(row["seed"])}, out=tmp_path / "alone.h5", progress=False)
    with alone, open_run(out / row["path"]) as run:
        np.testing.assert_array_equal(alone.energy[:], run.energy[:])
        np.testing.assert_array_equal(alone.positions[:], run.positions[:])
    # rerunning the same command touches no finished point
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert cli(["scan", SCEN, "--grid", "step=0.02,0.05", "--grid", "temperature=0.5,1,2",
                "--workers", "1", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "points").iterdir()} == mtimes
    # a half-written (truncated, unreadable) file is detected and redone from scratch
    victim = out / row["path"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert open_scan(out).manifest.set_index("id").loc[row["id"], "status"] == "incomplete"
    run_scan(SCEN, grid=GRID, out=out, workers=1, threads=1)
    assert_same_file(grid_scan.root / row["path"], victim)
    # another base parameter in the same directory is refused, not mixed in
    with pytest.raises(ConfigError, match="other base parameters"):
        run_scan(SCEN, grid=GRID, sets=["steps=2000"], out=out, workers=1)


def test_failing_and_diverging_points_are_recorded(cluster, tmp_path):
    out = tmp_path / "fail"
    scan = run_scan(SCEN, grid={"curvature": [1.0, -1.0, 100.0]}, repeat=2, out=out,
                    scheduler=cluster.scheduler_address, sets=["steps=200"])
    man = scan.manifest.set_index("id")
    assert len(man) == 6 and man["seed"].is_unique
    by = {c: man[man["curvature"] == c] for c in (1.0, -1.0, 100.0)}
    assert (by[1.0]["status"] == "done").all()
    assert (by[-1.0]["status"] == "failed").all()
    assert by[-1.0]["error"].str.contains("ValueError: curvature must be > 0, got -1.0").all()
    assert not any((out / p).exists() for p in by[-1.0]["path"])
    side = json.loads((out / "points" / f"{by[-1.0].index[0]}.json").read_text())
    assert side["status"] == "failed" and "raise ValueError" in side["traceback"]
    # step * curvature = 5 > 2: Euler-Maruyama is unstable, every replica diverges
    assert (by[100.0]["status"] == "diverged").all()
    assert by[100.0]["error"].str.contains("all 64 replicas diverged").all()
    ds = scan.summarize()
    assert np.isnan(ds["energy_mean"].sel(curvature=[-1.0, 100.0])).all()
    assert np.isfinite(ds["energy_mean"].sel(curvature=1.0)).all()
    csv = pd.read_csv(out / "manifest.csv")
    assert sorted(csv["status"]) == ["diverged"] * 2 + ["done"] * 2 + ["failed"] * 2
    assert "curvature must be > 0" in scan.describe()


def _committed_checkpoint(path: Path) -> bool:
    """Whether a run file being written elsewhere has committed a checkpoint (read without
    HDF5 file locking; a torn read just means 'not yet')."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f[F.COMMIT][F.CKPT_SLOT]) >= 0 and not f[F.COMMIT][F.COMPLETE]
    except (OSError, KeyError):
        return False


def test_killed_worker_then_rerun_completes_without_duplicates(cluster, tmp_path):
    out = tmp_path / "kill"
    slow_steps, slow_every = 100_000, 500
    kw = dict(zipped={"temperature": [0.5, 1.0, 2.0], "steps": [200, 200, slow_steps],
                      "record_every": [10, 10, slow_every]},
              out=out, scheduler=cluster.scheduler_address, flush_seconds=0.05)
    slow = point_id({"temperature": 2.0, "steps": slow_steps, "record_every": slow_every}, 0)
    result = {}
    th = threading.Thread(target=lambda: result.update(scan=run_scan(SCEN, **kw)))
    th.start()
    killed = None
    with Client(cluster.scheduler_address) as client:
        deadline = time.monotonic() + 120
        while killed is None and th.is_alive() and time.monotonic() < deadline:
            if _committed_checkpoint(out / "points" / f"{slow}.h5"):
                for addr, keys in client.processing().items():
                    if any(k.startswith(f"point-{slow}") for k in keys):
                        killed = client.run(os.getpid, workers=[addr])[addr]
                        os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
    th.join(timeout=120)
    assert killed is not None, "the slow point finished or never started before the kill"
    man = result["scan"].manifest.set_index("id")
    assert man.loc[slow, "status"] == "failed" and "KilledWorker" in man.loc[slow, "error"]
    try:
        with open_run(out / "points" / f"{slow}.h5") as run:     # half-written, committed
            assert not run.complete and 0 < run.steps_done < slow_steps
        torn = False
    except RunFileError:      # torn by the kill mid-write: the rerun must start it again
        torn = True
    again = run_scan(SCEN, **kw)
    man = again.manifest
    assert len(man) == 3 and man["id"].is_unique and (man["status"] == "done").all(), man
    assert sorted(p.name for p in (out / "points").glob("*.h5")) == sorted(f"{i}.h5" for i in man["id"])
    with open_run(out / "points" / f"{slow}.h5") as run:
        assert run.complete and run.steps_done == slow_steps
        np.testing.assert_array_equal(run.step, np.arange(0, slow_steps + 1, slow_every))
        assert np.isfinite(run.energy[:]).all()
    side = json.loads((out / "points" / f"{slow}.json").read_text())
    assert side["status"] == "done" and (torn or side["resumed_from"] > 0), side
    ds = again.summarize()
    assert ds["energy_mean"].dims == ("zip", "repeat") and list(ds["steps"]) == [200, 200, slow_steps]


def test_scan_summary_script_writes_table_and_png(grid_scan, tmp_path, capsys):
    png = tmp_path / "summary.png"
    main = runpy.run_path(str(ROOT / "analysis" / "scan_summary.py"))["main"]
    table = main([str(grid_scan.root), "--x", "temperature", "--png", str(png)])
    assert png.stat().st_size > 1000
    assert len(table) == 6 and (table["n_repeat"] == 1).all()
    printed = capsys.readouterr().out
    assert "energy_mean" in printed and "6 done" in printed


def test_import_langevin_sim_needs_no_dask(tmp_path):
    code = ("import sys, langevin_sim, langevin_sim.scan, langevin_sim.analysis, langevin_sim.cli;"
            "langevin_sim.cli.build_parser();"
            "bad = [m for m in ('dask', 'distributed', 'pandas', 'xarray') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.slow
def test_cold_numba_cache_is_warmed_once_before_workers(tmp_path):
    """A scan on an empty NUMBA_CACHE_DIR, over two dtypes (two kernel specializations): the
    parent compiles both into the cache before fanning out, so no worker writes to it."""
    import datetime

    cache, out = tmp_path / "numba_cache", tmp_path / "cold"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    subprocess.run([sys.executable, "-m", "langevin_sim.cli", "scan", SCEN, "--grid",
                    "dtype=float64,float32", "--grid", "temperature=0.5,1", "--set", "steps=200",
                    "--workers", "2", "--out", str(out)], check=True, env=env, cwd=tmp_path)
    scan = open_scan(out)
    assert (scan.manifest["status"] == "done").all()
    starts = []
    for pid in scan.manifest["id"]:
        side = json.loads((out / "points" / f"{pid}.json").read_text())
        end = datetime.datetime.fromisoformat(side["finished"]).timestamp()
        starts.append(end - side["wall_s"])
    written = [f.stat().st_mtime for f in cache.rglob("*") if f.suffix in (".nbi", ".nbc")]
    assert written and max(written) < min(starts), "a worker wrote to the Numba cache"


def test_scheduler_address_and_dashboard_note(cluster, capsys):
    import importlib.util

    from langevin_sim.scan import _announce

    with Client(cluster.scheduler_address) as client:
        _announce(client)
    err = capsys.readouterr().err
    assert cluster.scheduler_address in err and "2 workers" in err
    if importlib.util.find_spec("bokeh") is None:
        assert "no dashboard: it needs `pip install bokeh`" in err
    else:
        assert "/status" in err


def test_scan_directory_lock_refuses_a_second_scan(tmp_path):
    out = tmp_path / "locked"
    (out / "points").mkdir(parents=True)
    (out / "scan.lock").write_text(f"{socket.gethostname()}:{os.getpid()}")
    with pytest.raises(ConfigError, match="another scan"):
        run_scan(SCEN, grid={"temperature": [1.0]}, out=out, workers=1)
    (out / "scan.lock").write_text(f"{socket.gethostname()}:999999999")   # a dead owner
    run_scan(SCEN, grid={"temperature": [1.0]}, sets=["steps=20"], out=out, workers=1)
    assert not (out / "scan.lock").exists()
    shutil.rmtree(out)
