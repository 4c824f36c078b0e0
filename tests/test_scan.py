"""Parameter scans: cluster vs serial, manifest, failures, a killed worker, resume, repair,
summary.

The scenario is tests/scan_scenario.py (isotropic quadratic well, overdamped Langevin), whose
stationary mean energy is known exactly for the discrete dynamics; its build raises for
curvature <= 0 and every replica diverges when step * curvature > 2.
"""
import hashlib
import json
import contextlib
import os
import re
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

from langevin_sim import open_run, resume  # noqa: E402
from langevin_sim.cli import main as cli  # noqa: E402
from langevin_sim.errors import ConfigError, RunFileError  # noqa: E402
from langevin_sim.io import format as F  # noqa: E402
from langevin_sim.scan import open_scan, plan_scan, point_id, point_seed, run_scan, splitmix64  # noqa: E402
from langevin_sim.scan import manifest as manifest_module  # noqa: E402
from langevin_sim.scan.cluster import THREAD_VARS, announce  # noqa: E402
from langevin_sim.scenario import load_scenario, run_scenario  # noqa: E402

from .conftest import assert_within_se  # noqa: E402

HERE = Path(__file__).resolve().parent
SCEN = str(HERE / "scan_scenario.py")
ROOT = HERE.parent
GRID = {"step": [0.02, 0.05], "temperature": [0.5, 1.0, 2.0]}
PARAMS = load_scenario(SCEN).Params
VOLATILE_ATTRS = ("created", "command", "writer")   # writer: host and pid that wrote the file
ENV_BEFORE = {k: os.environ.get(k) for k in THREAD_VARS}
THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}"


def exact_mean_energy(temperature, step, curvature=1.0, d=2):
    """<U> = d T / (2 (1 - eta k / 2)): Euler-Maruyama's stationary mean energy (scan_scenario)."""
    return d * temperature / (2 * (1 - step * curvature / 2))


def sidecar(root: Path, pid: str) -> dict:
    return json.loads((root / "points" / f"{pid}.json").read_text())


def mtimes(root: Path, ids) -> dict:
    """Modification times of the run files and sidecars of points `ids`."""
    return {p: p.stat().st_mtime_ns for i in ids for p in (root / "points").glob(f"{i}.*")}


def file_contents(path) -> dict:
    """Every dataset and attribute of a run file, except VOLATILE_ATTRS (when, by which command
    and process it was written) and the dimension-scale references.  Finished files mirror the final checkpoint into both
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
    # SplitMix64 reference (Vigna, splitmix64.c): the first outputs from state 0; splitmix64(z)
    # is the output after one step from state z - gamma, so output k is splitmix64(k gamma)
    gamma = 0x9E3779B97F4A7C15
    assert [splitmix64(k * gamma) for k in range(4)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    # the id is SHA-256 of the canonical JSON (sorted keys, no spaces), whatever the axis order
    canon = b'{"coords":{"step":0.02,"temperature":0.5},"repeat":0}'
    pid = point_id({"temperature": 0.5, "step": 0.02}, 0)
    assert pid == "p" + hashlib.sha256(canon).hexdigest()[:16] == "pd353036b780479e8"
    assert pid == point_id({"step": 0.02, "temperature": 0.5}, 0)
    assert pid != point_id({"step": 0.02, "temperature": 0.5}, 1)
    # pinned: changing it would change the seed of every point of every existing scan
    assert point_seed(7, pid) == 2414189677209262351 < 2 ** 63
    assert point_seed(8, pid) != point_seed(7, pid)


def test_plan_validates_axes():
    base, pts, grid, zipped = plan_scan(PARAMS, ["temperature=0.5,1"], ["step=0.01,0.02", "d=1,3"],
                                        repeat=2, sets=["seed=5"])
    assert (grid, zipped, base["seed"]) == (["temperature"], ["step", "d"], 5)
    # grid axes outermost (last fastest), then the zip axis, repeats fastest; values coerced
    # to the field types (temperature, step float; d int)
    assert [(p.coords, p.repeat) for p in pts] == [
        ({"temperature": t, "step": s, "d": d}, r)
        for t in (0.5, 1.0) for s, d in ((0.01, 1), (0.02, 3)) for r in (0, 1)]
    assert all(type(p.coords["temperature"]) is float and type(p.coords["d"]) is int for p in pts)
    for p in pts:
        assert p.id == point_id(p.coords, p.repeat) and p.seed == point_seed(5, p.id)
        assert p.params == dict(base, **p.coords, seed=p.seed) and p.path == f"points/{p.id}.h5"
    assert len({p.seed for p in pts}) == 8
    # Python values plan the same points (ids, seeds, params) as command-line strings
    again = plan_scan(PARAMS, {"temperature": [0.5, 1]}, {"step": [0.01, 0.02], "d": [1.0, 3]},
                      repeat=2, sets={"seed": 5})
    assert again == (base, pts, grid, zipped)
    # a point's id and seed do not depend on the other points of the scan
    alone = plan_scan(PARAMS, {"temperature": [1.0]}, {"step": [0.02], "d": [3]}, repeat=2,
                      sets={"seed": 5})[1]
    assert alone == pts[-2:]
    bad = {"seed cannot be a scan axis": dict(grid=["seed=1,2"]),
           r"\['nope'\] are not parameters": dict(grid=["nope=1,2"]),
           "coincide after type coercion": dict(grid=["temperature=1,1.0"]),
           "lists of equal length": dict(zipped=["d=1,2", "step=0.1"]),
           "both as scan axes and --set": dict(grid=["d=1,2"], sets=["d=3"]),
           "--grid d given twice": dict(grid=["d=1", "d=2"]),
           "comma-separated list": dict(grid=["d="]),
           "--repeat must be >= 1": dict(repeat=0)}
    for match, kw in bad.items():
        with pytest.raises(ConfigError, match=match):
            plan_scan(PARAMS, **kw)


def test_grid_scan_on_local_cluster(grid_scan):
    man, root = grid_scan.manifest, grid_scan.root
    plan = plan_scan(PARAMS, GRID)[1]
    assert list(man["id"]) == [p.id for p in plan], man          # plan order, 6 points
    assert [(r["step"], r["temperature"]) for _, r in man.iterrows()] == [
        (s, t) for s in GRID["step"] for t in GRID["temperature"]]
    assert (man["status"] == "done").all() and (man["error"] == "").all(), man
    csv = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    assert list(csv.columns) == ["id", "step", "temperature", "repeat", "seed", "status", "path",
                                 "wall_s", "error"]
    pd.testing.assert_frame_equal(csv, man, check_dtype=False)
    assert sorted(p.name for p in (root / "points").glob("*.h5")) == sorted(f"{i}.h5" for i in man["id"])
    for p, (_, row) in zip(plan, man.iterrows()):
        side = sidecar(root, p.id)
        # the manifest's wall time is the attempt's own; it ran on a worker, from scratch
        assert side["status"] == "done" and side["wall_s"] == row["wall_s"] > 0
        assert side["worker"] != THIS_PROCESS and side["resumed_from"] is None
        assert (row["path"], row["repeat"], row["seed"]) == (p.path, 0, point_seed(0, p.id))
        with open_run(root / row["path"]) as run:
            cfg = run.config
            assert cfg["meta"]["params"] == p.params and p.params["seed"] == cfg["seed"] == p.seed
            assert cfg["meta"]["scan"] == {"id": p.id, "coords": p.coords, "repeat": 0, "scan_seed": 0}
            assert cfg["dynamics"]["temperature"]["start"] == row["temperature"]
            assert cfg["dynamics"]["step"]["start"] == row["step"] and cfg["replicas"] == 64
            assert run.complete and run.steps_done == 1000
            np.testing.assert_array_equal(run.step, np.arange(0, 1001, 10))
            assert (run.diverged_step == -1).all()


def test_scan_leaves_this_process_environment_alone(grid_scan):
    """The Nanny's pre-spawn environment (NUMBA_NUM_THREADS=1 ...) must not stay in
    os.environ here: Numba rereads it at every compile and refuses a new thread count."""
    for k in THREAD_VARS:
        assert os.environ.get(k) == ENV_BEFORE[k], k
    assert numba.njit(lambda a: a + 1)(1) == 2     # a fresh compile rereads the environment


def test_summary_matches_records_and_exact_mean_energy(grid_scan):
    ds = grid_scan.summarize()
    assert dict(ds.sizes) == {"step": 2, "temperature": 3, "repeat": 1}
    assert list(ds["step"]) == GRID["step"] and list(ds["temperature"]) == GRID["temperature"]
    # each value from the point's own records: the last half (records 50..100 of 101) of
    # the 64 replicas, SE from the spread of the per-replica means
    for _, row in grid_scan.manifest.iterrows():
        pt = ds.sel(step=row["step"], temperature=row["temperature"], repeat=0)
        with grid_scan.open(row["id"]) as run:
            per_replica = np.asarray(run.energy[50:]).mean(axis=0)
        assert per_replica.shape == (64,)
        assert float(pt["energy_mean"]) == pytest.approx(per_replica.mean(), rel=1e-12)
        assert float(pt["energy_se"]) == pytest.approx(per_replica.std(ddof=1) / 8, rel=1e-12)
        assert (float(pt["alive"]), int(pt["seed"]), pt["status"].item()) == (1.0, row["seed"], "done")
    exact = exact_mean_energy(ds["temperature"], ds["step"])
    # per-replica time averages of 51 records over 64 independent replicas: SE from their
    # spread (~3% here), tolerance 4 SE; a factor-2 error in T or d fails by > 20 SE
    assert_within_se(ds["energy_mean"].values, exact.broadcast_like(ds["energy_mean"]).values,
                     ds["energy_se"].values, what="scan mean energy")


def test_serial_scan_gives_identical_files_and_points_rerun_alone(grid_scan, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "serial"
    args = ["scan", SCEN, "--grid", "step=0.02,0.05", "--grid", "temperature=0.5,1,2",
            "--workers", "1", "--threads", "1", "--out", str(out)]
    assert cli(args) == 0
    serial = open_scan(out)
    assert list(serial.manifest["id"]) == list(grid_scan.manifest["id"])
    assert (serial.manifest["status"] == "done").all()
    for rel in grid_scan.manifest["path"]:
        assert_same_file(grid_scan.root / rel, out / rel)
    ids = list(serial.manifest["id"])
    assert all(sidecar(out, i)["worker"] == THIS_PROCESS for i in ids)   # in this process
    # one point alone, from its manifest row, gives the same records
    row = serial.manifest.iloc[4]
    alone = run_scenario(SCEN, {"step": row["step"], "temperature": row["temperature"],
                                "seed": int(row["seed"])}, out=tmp_path / "alone.h5", progress=False)
    with alone, open_run(out / row["path"]) as run:
        for name in ("step", "energy", "positions", "diverged_step"):
            np.testing.assert_array_equal(getattr(alone, name)[:], getattr(run, name)[:], err_msg=name)
    # rerunning the same command touches no finished point (run files and sidecars)
    before = mtimes(out, ids)
    assert len(before) == 12 and cli(args) == 0
    assert mtimes(out, ids) == before
    # ... and opens each point's file once (a rerun of 10^4 finished points reads them all)
    opened, real = [], manifest_module.Run
    monkeypatch.setattr(manifest_module, "Run", lambda path: opened.append(str(path)) or real(path))
    rerun = run_scan(SCEN, grid=GRID, out=out, workers=1, threads=1)
    monkeypatch.undo()
    assert sorted(opened) == sorted(str(out / p) for p in rerun.manifest["path"])
    pd.testing.assert_frame_equal(rerun.manifest, open_scan(out).manifest)
    # a half-written (truncated, unreadable) file is detected and redone from scratch, alone
    victim = out / row["path"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    status = open_scan(out).manifest.set_index("id")["status"]
    assert status[row["id"]] == "incomplete" and (status.drop(row["id"]) == "done").all()
    others = {p: t for p, t in before.items() if not p.name.startswith(row["id"])}
    again = run_scan(SCEN, grid=GRID, out=out, workers=1, threads=1)
    assert (again.manifest["status"] == "done").all()
    assert sidecar(out, row["id"])["resumed_from"] is None
    assert_same_file(grid_scan.root / row["path"], victim)
    assert {p: p.stat().st_mtime_ns for p in others} == others
    # another base parameter in the same directory is refused, not mixed in
    with pytest.raises(ConfigError, match=r"other base parameters \(steps: 1000 -> 2000\)"):
        run_scan(SCEN, grid=GRID, sets=["steps=2000"], out=out, workers=1)


def test_rerun_repairs_a_point_at_its_target_marked_incomplete(tmp_path):
    """A finished point whose commit marker says incomplete at its target step (what
    `langevin-sim resume` of a complete run used to leave) is repaired by the rerun: exit 0,
    the file complete again and otherwise unchanged, not an endless 'incomplete'."""
    out = tmp_path / "repair"
    args = ["scan", SCEN, "--grid", "temperature=0.5,1", "--set", "steps=200", "--workers", "1",
            "--out", str(out)]
    assert cli(args) == 0
    ids = list(open_scan(out).manifest["id"])
    victim, kept = out / "points" / f"{ids[0]}.h5", tmp_path / "finished.h5"
    shutil.copy(victim, kept)
    with h5py.File(victim, "r+") as f:
        commit = f[F.COMMIT][()]
        assert commit[F.COMPLETE] == 1 and commit[F.STEPS_DONE] == commit[F.CKPT_STEP] == 200
        commit[F.COMPLETE] = 0
        f[F.COMMIT][...] = commit
    row = open_scan(out).manifest.iloc[0]
    assert (row["status"], row["error"]) == ("incomplete", "run file incomplete at step 200 of 200")
    before = mtimes(out, ids[1:])
    assert cli(args) == 0
    man = open_scan(out).manifest
    assert list(man["status"]) == ["done", "done"], man
    with open_run(victim) as run:
        assert run.complete and run.steps_done == 200 and run.n_records == 21
    assert_same_file(kept, victim)                  # records, checkpoints, config: unchanged
    side = sidecar(out, ids[0])
    assert side["status"] == "done" and side["resumed_from"] == 200
    assert mtimes(out, ids[1:]) == before           # the other point was not touched


def test_failing_and_diverging_points_are_recorded(cluster, tmp_path, capsys):
    out = tmp_path / "fail"
    scan = run_scan(SCEN, grid={"curvature": [1.0, -1.0, 100.0]}, repeat=2, out=out,
                    scheduler=cluster.scheduler_address, sets=["steps=200"])
    err = capsys.readouterr().err
    man = scan.manifest.set_index("id")
    assert len(man) == 6 and man["seed"].is_unique
    assert sorted(man["curvature"]) == [-1.0] * 2 + [1.0] * 2 + [100.0] * 2
    by = {c: man[man["curvature"] == c] for c in (1.0, -1.0, 100.0)}
    assert (by[1.0]["status"] == "done").all() and (by[1.0]["error"] == "").all()
    assert (by[-1.0]["status"] == "failed").all()
    assert (by[-1.0]["error"] == "ValueError: curvature must be > 0, got -1.0").all()
    assert not any((out / p).exists() for p in by[-1.0]["path"])
    for pid in by[-1.0].index:
        side = sidecar(out, pid)
        assert side["status"] == "failed" and "raise ValueError" in side["traceback"]
        assert side["wall_s"] == man.loc[pid, "wall_s"]
    # step * curvature = 5 > 2: Euler-Maruyama is unstable, every replica diverges; the
    # error names the first divergence step recorded in the file
    assert (by[100.0]["status"] == "diverged").all()
    for pid, row in by[100.0].iterrows():
        with open_run(out / row["path"]) as run:
            assert run.complete and (run.diverged_step >= 0).all()
            first = int(run.diverged_step.min())
        assert row["error"] == f"all 64 replicas diverged (first at step {first})"
        # the worker's DivergenceWarning comes back with the point: in its sidecar, and one
        # line of the parent's (a worker's stderr showed it raw, without the point)
        warned = [w for w in sidecar(out, pid)["warnings"] if "DivergenceWarning" in w]
        assert len(warned) == 1 and warned[0].startswith(
            "DivergenceWarning: 64 of 64 replicas diverged, the first (replica"), warned
        assert (f"point {pid} {{'curvature': 100.0}} repeat {row['repeat']}: warning: "
                f"{warned[0]}") in err
    assert all(sidecar(out, pid)["warnings"] == [] for pid in by[1.0].index)
    ds = scan.summarize()
    assert np.isnan(ds["energy_mean"].sel(curvature=[-1.0, 100.0])).all()
    assert (ds["status"].sel(curvature=-1.0) == "failed").all()
    # the finished points: 21 records, the last 11 (steps 100..200, 5 relaxation times in)
    assert_within_se(ds["energy_mean"].sel(curvature=1.0).values, exact_mean_energy(1.0, 0.05),
                     ds["energy_se"].sel(curvature=1.0).values, what="curvature 1 mean energy")
    csv = pd.read_csv(out / "manifest.csv")
    assert sorted(csv["status"]) == ["diverged"] * 2 + ["done"] * 2 + ["failed"] * 2
    # the command's rerun: exit 1 (not every point done), the failed points listed, tried
    # again, the finished ones (done and diverged) untouched
    finished_ids = [*by[1.0].index, *by[100.0].index]
    finished = mtimes(out, finished_ids)
    capsys.readouterr()
    assert cli(["scan", SCEN, "--grid", "curvature=1,-1,100", "--repeat", "2", "--set", "steps=200",
                "--scheduler", cluster.scheduler_address, "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"scan {out}: 6 points: 2 diverged, 2 done, 2 failed" in printed
    assert all(f"{pid} (curvature=-1.0, repeat {r}): failed: ValueError: curvature must be > 0"
               in printed for pid, r in by[-1.0]["repeat"].items())
    assert mtimes(out, finished_ids) == finished
    assert open_scan(out).manifest.set_index("id")["status"].equals(man["status"])


def _committed_checkpoint(path: Path) -> bool:
    """Whether a run file being written elsewhere has committed a checkpoint past its start
    (read without HDF5 file locking; a torn read just means 'not yet')."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f[F.COMMIT][F.CKPT_STEP]) > 0 and not f[F.COMMIT][F.COMPLETE]
    except (OSError, KeyError):
        return False


def test_a_point_whose_task_the_lost_scheduler_cancelled_says_so():
    """A scheduler that dies mid-scan leaves its points' futures cancelled with no exception:
    the error said "NoneType: None"."""
    from langevin_sim.scan.cluster import _finish

    class Cancelled:
        status = "cancelled"

        def exception(self):
            return None

        def release(self):
            pass

    fut, got = Cancelled(), []
    _finish({fut: {"scan": {"id": "p0"}}}, fut, lambda t, res: got.append(res))
    assert got[0]["status"] == "failed"
    assert got[0]["error"].startswith("the point's Dask task was cancelled") and "None" not in \
        got[0]["error"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_signal_whose_raise_was_dropped_still_stops_the_scan(sig):
    """The gate's `_Terminated`, raised where the main thread ran a weakref callback, was
    printed as "Exception ignored" and dropped: the scan ran its 10^7-step point to the end
    (91 s) and exited 0.  The gate remembers the signal, and the scan's wait raises it; so
    for Ctrl-C, which went through Python's own handler and had the same race.  While the
    scan waits, the handler does not raise at all (a full suite's Ctrl-C test then read the
    dropped raise's traceback on the scan's stderr)."""
    from langevin_sim.scan.cluster import _collect, _Terminated, sigterm_stops

    class Running:
        def done(self):
            return False

    class Signalled(Running):
        def done(self):             # the signal delivered while the scan waits for a point
            signal.raise_signal(sig)
            return False

    raised = _Terminated if sig == signal.SIGTERM else KeyboardInterrupt
    with sigterm_stops() as gate:
        assert signal.getsignal(sig) is gate
        with contextlib.suppress(raised):          # (the raise a callback would drop)
            signal.raise_signal(sig)
        with pytest.raises(raised) as e:
            _collect({Running(): {}}, lambda t, res: None, gate)
        assert type(e.value) is raised and not gate.polled
        # while the scan waits, the handler only remembers (raised there, it could land in
        # a weakref callback: "Exception ignored" and a traceback on stderr); the wait raises
        gate.pending = 0
        with pytest.raises(raised) as e:
            _collect({Signalled(): {}}, lambda t, res: None, gate)
        assert type(e.value) is raised and e.traceback[-1].name == "_collect"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_or_sigterm_while_the_cluster_closes_waits_for_the_close():
    """A second Ctrl-C (or SIGTERM), "at once", landed inside Dask's cluster close, left it half
    closed, and Dask's exit hook waited 10 s on it: the scan ended in 11 s, one Ctrl-C in 3 s.
    Now the close runs to its end and the signal is raised after it."""
    from langevin_sim.scan.cluster import _signals_after_close, _Terminated, sigterm_stops

    for sig, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, _Terminated)):
        closed = []
        with pytest.raises(raised), sigterm_stops() as gate, _signals_after_close(gate):
            signal.raise_signal(sig)
            closed.append(True)         # (the close goes on)
        assert closed == [True], sig
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


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
    assert man.loc[slow, "status"] == "failed"
    assert man.loc[slow, "error"].startswith("KilledWorker: ") and "the worker process died" in \
        man.loc[slow, "error"]
    fast = [i for i in man.index if i != slow]
    assert (man.loc[fast, "status"] == "done").all()
    try:
        with open_run(out / "points" / f"{slow}.h5") as run:     # half-written, committed
            assert not run.complete and 0 < run.steps_done < slow_steps
        torn = False
    except RunFileError:      # torn by the kill mid-write: the rerun must start it again
        torn = True
    before = mtimes(out, fast)
    again = run_scan(SCEN, **kw)
    man = again.manifest
    assert len(man) == 3 and man["id"].is_unique and (man["status"] == "done").all(), man
    assert sorted(p.name for p in (out / "points").glob("*.h5")) == sorted(f"{i}.h5" for i in man["id"])
    assert mtimes(out, fast) == before                 # the finished points were skipped
    side = sidecar(out, slow)
    assert side["status"] == "done" and side["worker"] != THIS_PROCESS
    if not torn:      # resumed from a committed checkpoint, which sits on a record step
        assert 0 < side["resumed_from"] < slow_steps and side["resumed_from"] % slow_every == 0
    with open_run(out / "points" / f"{slow}.h5") as run:       # every record once
        assert run.complete and run.steps_done == slow_steps
        np.testing.assert_array_equal(run.step, np.arange(0, slow_steps + 1, slow_every))
        assert (run.diverged_step == -1).all()
    ds = again.summarize()
    assert ds["energy_mean"].dims == ("zip", "repeat")
    assert list(ds["steps"]) == [200, 200, slow_steps] and list(ds["temperature"]) == [0.5, 1.0, 2.0]
    # the resumed point samples its stationary law (the bit-for-bit continuation of a killed
    # run is tests/test_runfile.py's): the last 101 records of 64 replicas, T = 2
    slow_ds = ds.isel(zip=2, repeat=0)
    assert_within_se(float(slow_ds["energy_mean"]), exact_mean_energy(2.0, 0.05),
                     float(slow_ds["energy_se"]), what="resumed point's mean energy")


def test_scan_summary_script_writes_table_and_png(grid_scan, tmp_path, capsys):
    import matplotlib.image

    png = tmp_path / "summary.png"
    main = runpy.run_path(str(ROOT / "analysis" / "scan_summary.py"))["main"]
    table = main([str(grid_scan.root), "--x", "temperature", "--png", str(png)])
    assert matplotlib.image.imread(png).shape[:2] == (480, 720)      # 6 x 4 in at 120 dpi
    # one row per point (sorted by step, temperature), the repeat's own summary values
    assert [(r.step, r.temperature) for r in table.itertuples()] == [
        (s, t) for s in GRID["step"] for t in GRID["temperature"]]
    assert (table["n_repeat"] == 1).all()
    ds = grid_scan.summarize().sel(repeat=0)
    for r in table.itertuples():
        pt = ds.sel(step=r.step, temperature=r.temperature)
        assert r.energy_mean == pytest.approx(float(pt["energy_mean"]), rel=1e-12)
        assert r.energy_se == pytest.approx(float(pt["energy_se"]), rel=1e-12)
    printed = capsys.readouterr().out
    assert f"scan {grid_scan.root}: 6 points: 6 done\n" in printed and f"figure: {png}" in printed
    assert table.to_string(index=False, float_format=lambda v: f"{v:.6g}") in printed
    assert "energy_mean: each point's mean energy (energy units) over the last 0.5" in printed


def test_import_langevin_sim_needs_no_dask_and_analysis_needs_no_scan(tmp_path):
    code = ("import sys, langevin_sim, langevin_sim.analysis;"
            "assert 'langevin_sim.scan' not in sys.modules;"     # no scan <-> analysis cycle
            "import langevin_sim.scan, langevin_sim.cli;"
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
    assert len(scan.manifest) == 4 and (scan.manifest["status"] == "done").all()
    starts = []
    for pid in scan.manifest["id"]:
        side = sidecar(out, pid)
        end = datetime.datetime.fromisoformat(side["finished"]).timestamp()
        starts.append(end - side["wall_s"])
    written = [f.stat().st_mtime for f in cache.rglob("*") if f.suffix in (".nbi", ".nbc")]
    assert written and max(written) < min(starts), "a worker wrote to the Numba cache"


def test_scheduler_address_and_dashboard_note(cluster, capsys):
    import importlib.util

    with Client(cluster.scheduler_address) as client:
        announce(client)
    err = capsys.readouterr().err
    assert f"dask scheduler {cluster.scheduler_address} (2 workers)" in err
    if importlib.util.find_spec("bokeh") is None:
        assert "no dashboard: it needs `pip install bokeh`" in err
    else:
        assert "/status" in err


def test_an_unreachable_scheduler_is_one_line_and_the_rerun_takes_the_points(tmp_path, capsys):
    """--scheduler at an address where none listens: a one-line error naming the fix (it was
    Dask's 60-line traceback after 30 s), exit status 2; the points stay pending."""
    import dask

    with socket.socket() as s:          # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "unreached"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = cli(["scan", SCEN, "--grid", "temperature=1.0", "--set", "steps=20", "--out",
                    str(out), "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"langevin-sim: error: cannot reach the Dask scheduler at "
                             f"tcp://127.0.0.1:{port}") and "leave out --scheduler" in err[0]
    assert set(pd.read_csv(out / "manifest.csv")["status"]) == {"pending"}


def test_grid_values_the_scenario_refuses_are_one_error_before_any_file(tmp_path, capsys):
    """A --grid value the scenario's build refuses with a ConfigError (a negative
    temperature: the dynamics' own check) stops the scan at once, naming each such point and
    writing nothing; it was a failed point per value after the others had run."""
    out = tmp_path / "refused"
    assert cli(["scan", SCEN, "--grid", "temperature=-1,0.5,-2", "--set", "steps=20",
                "--workers", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("the scenario refuses 2 of 3 scan points; change those --grid/--zip/--set values "
            "(nothing was run or written): [temperature=-1.0] temperature must be >= 0") in err
    assert "[temperature=-2.0] temperature must be >= 0" in err and not out.exists()


def test_scan_directory_lock_refuses_a_second_scan(tmp_path):
    from langevin_sim.scan.lock import dir_lock

    out = tmp_path / "locked"
    (out / "points").mkdir(parents=True)
    with dir_lock(out):                          # a live scan holds the directory
        live = (out / "scan.lock").read_text()
        assert live == f"{socket.gethostname()}:{os.getpid()}"
        with pytest.raises(ConfigError, match=f"another scan \\({live}\\) is running"):
            run_scan(SCEN, grid={"temperature": [1.0]}, out=out, workers=1)
        # refused before writing anything; the live owner keeps its lock
        assert (out / "scan.lock").read_text() == live
        assert sorted(p.name for p in out.rglob("*")) == ["points", "scan.lock"]
    # a killed scan's file, its flock gone with its process: free
    (out / "scan.lock").write_text(f"{socket.gethostname()}:999999999")
    scan = run_scan(SCEN, grid={"temperature": [1.0]}, sets=["steps=20"], out=out, workers=1)
    assert list(scan.manifest["status"]) == ["done"] and not (out / "scan.lock").exists()
    # a scan refused inside the lock (other base parameters) releases it too
    with pytest.raises(ConfigError, match="other base parameters"):
        run_scan(SCEN, grid={"temperature": [1.0]}, sets=["steps=40"], out=out, workers=1)
    assert not (out / "scan.lock").exists()
    # two takers of a dead scan's lock at once: the check-then-remove takeover let both
    # hold it (one removed the other's fresh lock); only one holds it now
    (out / "scan.lock").write_text(f"{socket.gethostname()}:999999999")
    held, barrier = [], threading.Barrier(8)

    def take():
        barrier.wait()
        try:
            with dir_lock(out):
                held.append(1)
                time.sleep(0.3)
        except ConfigError:
            held.append(0)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(held) == [0] * 7 + [1] and not (out / "scan.lock").exists()


GPU_SCENARIO = '''
"""Scan test scenario (GPU or CPU workers): scan_scenario's well on `backend`, and a log
of when and where each point ran (pid, CUDA_VISIBLE_DEVICES, start, end)."""
import json, os, time
from dataclasses import dataclass

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.potentials import Quadratic
from langevin_sim.scenario import RunParams, main, param


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 4
    steps: int = 20
    record_every: int = 10
    temperature: float = param(1.0, "temperature")
    log: str = param("", "directory of the per-point timing logs")


def cuda_backend():
    """get_backend("cuda") -> CudaBackend until backends/__init__.py does it (docs/gpu.md)."""
    import langevin_sim.backends as B
    import langevin_sim.simulation as S
    from langevin_sim.backends.cuda_backend import CudaBackend
    try:
        if isinstance(B.get_backend("cuda"), CudaBackend):
            return
    except Exception:
        pass
    orig = B.get_backend
    B.get_backend = S.get_backend = lambda n: CudaBackend() if n == "cuda" else orig(n)


class Timed(Simulation):
    def run(self, *a, **k):
        t0 = time.time()
        time.sleep(0.4)              # long enough that two points on one worker would overlap
        out = super().run(*a, **k)
        rec = {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "backend": self.backend.name, "device": getattr(self.backend, "device", "cpu"),
               "start": t0, "end": time.time()}
        with open(os.path.join(self.meta["log"], f"{os.getpid()}-{t0}.json"), "w") as fh:
            json.dump(rec, fh)
        return out

    def advance(self, steps, sync=True):
        if sync and steps == 1:      # the scan's priming step (`warm_numba_cache`)
            with open(os.path.join(self.meta["log"], f"{os.getpid()}-{time.time()}.prime"),
                      "w") as fh:
                json.dump({"pid": os.getpid(), "dtype": self.dtype.name}, fh)
        return super().advance(steps, sync)


def build(p):
    cuda_backend()
    return Timed(Quadratic(spectrum=[1.0, 1.0]), OverdampedLangevin(0.05, p.temperature),
                 p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed, meta={"log": p.log})


if __name__ == "__main__":
    main(__file__)
'''


def _points_by_worker(log) -> dict:
    """The Timed scenario's records, by worker process, in start order."""
    by_pid: dict = {}
    for x in (json.loads(p.read_text()) for p in log.glob("*.json")):
        by_pid.setdefault(x["pid"], []).append(x)
    for xs in by_pid.values():
        xs.sort(key=lambda x: x["start"])
        for a, b in zip(xs, xs[1:]):
            assert b["start"] >= a["end"], f"a worker ran two points at once: {a} {b}"
    return by_pid


def test_cpu_scan_runs_one_point_per_worker_at_a_time(tmp_path):
    """`--threads 2` means 2 threads for each point, not 2 points on each worker: the local
    workers had threads_per_worker=2, so each ran two points at once, each with 2 Numba
    threads (4 threads per core's worth).  The Numba cache is primed on the workers, one
    task per dtype (it was primed in the launching process, one dtype after the other)."""
    scen, log, out = tmp_path / "scenario.py", tmp_path / "log", tmp_path / "scan"
    scen.write_text(GPU_SCENARIO)
    log.mkdir()
    r = subprocess.run([sys.executable, "-m", "langevin_sim.cli", "scan", str(scen),
                        "--grid", "temperature=0.5,1", "--grid", "dtype=float32,float64",
                        "--set", "backend=numpy",
                        "--set", f"log={log}", "--workers", "2", "--threads", "2",
                        "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert list(open_scan(out).manifest["status"]) == ["done"] * 4
    by_pid = _points_by_worker(log)
    assert sum(map(len, by_pid.values())) == 4 and len(by_pid) <= 2
    primed = [json.loads(p.read_text()) for p in log.glob("*.prime")]
    assert sorted(x["dtype"] for x in primed) == ["float32", "float64"]
    assert {x["pid"] for x in primed} <= set(by_pid), (primed, list(by_pid))


def test_gpu_scan_runs_one_point_per_gpu_at_a_time(tmp_path):
    """`scan --set backend=cuda --gpus 2` under the CUDA simulator: 2 workers, each pinned to
    its own CUDA_VISIBLE_DEVICES and declaring GPU=1, with 2 threads each (so only the
    resource keeps a worker to one point): 4 points, and no worker ever runs two at once."""
    scen, log, out = tmp_path / "gpu_scenario.py", tmp_path / "log", tmp_path / "scan"
    scen.write_text(GPU_SCENARIO)
    log.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["NUMBA_ENABLE_CUDASIM"] = "1"
    r = subprocess.run([sys.executable, "-m", "langevin_sim.cli", "scan", str(scen),
                        "--grid", "temperature=0.5,1,1.5,2", "--set", "backend=cuda",
                        "--set", f"log={log}", "--gpus", "2", "--threads", "2", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert list(open_scan(out).manifest["status"]) == ["done"] * 4
    by_pid = _points_by_worker(log)
    recs = [x for xs in by_pid.values() for x in xs]
    assert len(recs) == 4 and {x["backend"] for x in recs} == {"cuda"}
    assert all("simulator" in x["device"] for x in recs)
    gpus = {pid: {x["gpu"] for x in xs} for pid, xs in by_pid.items()}
    assert all(len(g) == 1 and g <= {"0", "1"} for g in gpus.values()), gpus   # pinned
    assert len({next(iter(g)) for g in gpus.values()}) == len(gpus)            # one GPU each
    for p in (out / "points").glob("*.h5"):
        with open_run(p) as run:
            assert run.config["backend"] == "cuda" and run.complete


def test_gpus_beyond_the_machines_are_one_error(monkeypatch):
    """`--gpus N` with CUDA_VISIBLE_DEVICES unset is held to the GPUs the machine shows (a
    worker pinned to a device that does not exist failed each of its points instead)."""
    from langevin_sim.backends import cuda_runtime as rt
    from langevin_sim.errors import ConfigError
    from langevin_sim.scan import cluster

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(rt, "simulated", lambda: False)
    monkeypatch.setattr(rt, "device_count", lambda: 2)
    assert cluster.gpu_ids(2) == ["0", "1"] and cluster.gpu_ids(None) == ["0", "1"]
    with pytest.raises(ConfigError, match=r"^--gpus 3 but this machine shows 2 GPU\(s\)"):
        cluster.gpu_ids(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(ConfigError, match="lists 1 device"):
        cluster.gpu_ids(2)
    # under the simulator each "GPU" is a worker process on the CPUs: --gpus 64 on 2 cores
    # started 64 workers that ran nothing for minutes
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(rt, "simulated", lambda: True)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert cluster.gpu_ids(2) == ["0", "1"]
    with pytest.raises(ConfigError, match=r"^--gpus 64 under the CUDA simulator: .* 2 CPU\(s\); "
                                          r"ask for at most 2$"):
        cluster.gpu_ids(64)


def test_gpus_beyond_the_visible_devices_are_refused_before_any_file(tmp_path, monkeypatch):
    """`--gpus 2` with CUDA_VISIBLE_DEVICES listing one device: the error came from the
    cluster's start, after scan.json, the manifest and points/ were written (docs/gpu.md:
    "one error line before anything is written")."""
    from langevin_sim.errors import ConfigError
    from langevin_sim.scan.cluster import requested_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = tmp_path / "scan"
    with requested_gpus(2), pytest.raises(ConfigError, match="^--gpus 2 but CUDA_VISIBLE_DEVICES"):
        run_scan(SCEN, grid={"temperature": [0.5, 1.0]}, sets={"steps": 20}, out=out)
    assert not out.exists()


def test_a_local_cuda_scan_without_cupy_or_a_gpu_is_one_error_before_any_file(tmp_path,
                                                                              monkeypatch):
    """Points on backend=cuda (all, or some in a grid mixing backends) and no GPU here (CuPy
    missing, or CUDA_VISIBLE_DEVICES hiding them all): the scan says so once, as `require`
    would, before it writes anything or starts a cluster, instead of one failed point per
    cuda point (or a "--gpus 1" never given)."""
    from langevin_sim.backends import cuda_runtime as rt
    from langevin_sim.errors import BackendUnavailableError

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    if rt.simulated():
        pytest.skip("the CUDA simulator has no GPU to miss")
    plans = (({"temperature": [0.5, 1.0]}, {"backend": "cuda"}),
             ({"backend": ["numpy", "cuda"]}, {}))                          # a mixed grid too
    for workers in (None, 1):
        for k, (grid, sets) in enumerate(plans):
            out = tmp_path / f"scan-{workers}-{k}"
            with pytest.raises(BackendUnavailableError,
                               match="^backend 'cuda' (needs CuPy|found no GPU)"):
                run_scan(SCEN, grid=grid, sets={"steps": 20, **sets}, out=out, workers=workers)
            assert not out.exists()


def test_gpu_points_wait_for_a_worker_to_see_that_workers_declare_the_gpu(tmp_path,
                                                                         monkeypatch):
    """On an external scheduler whose workers are not up yet (dask-jobqueue's jobs queued
    when the scan starts), the GPU resource is decided once the first worker is there: a
    worker declaring GPU=1 with 2 threads still runs one point at a time."""
    import threading

    from langevin_sim.scan import cluster as C

    scen, log = tmp_path / "gpu_scenario.py", tmp_path / "log"
    scen.write_text(GPU_SCENARIO)
    log.mkdir()
    monkeypatch.setattr(C, "uses_gpu", lambda tasks: True)   # GPU points, on numpy (no GPU)
    with LocalCluster(n_workers=0, processes=False, threads_per_worker=2,
                      resources={"GPU": 1}, dashboard_address=":0") as cluster:
        threading.Timer(1.5, cluster.scale, (1,)).start()
        scan = run_scan(scen, grid={"temperature": [0.5, 1.0, 1.5, 2.0]},
                        sets={"backend": "numpy", "log": str(log)}, out=tmp_path / "scan",
                        scheduler=cluster.scheduler_address)
    assert list(scan.manifest["status"]) == ["done"] * 4
    recs = sorted((json.loads(p.read_text()) for p in log.glob("*.json")),
                  key=lambda x: x["start"])
    assert len(recs) == 4
    for a, b in zip(recs, recs[1:]):
        assert b["start"] >= a["end"], f"one GPU ran two points at once: {a} {b}"

def test_a_parameter_added_to_the_scenario_at_its_default_keeps_the_scan(tmp_path):
    """A scan made before the scenario gained a parameter resumes (its finished points
    skipped, their files untouched) when the new parameter is asked for at its default, the
    scenarios' convention for keeping the old behaviour; at another value it is refused."""
    old = tmp_path / "well.py"
    shutil.copy(SCEN, old)
    out = tmp_path / "scan"
    run_scan(old, grid={"temperature": [0.5, 1.0]}, sets=["steps=20"], out=out, workers=1)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "points").glob("*.h5")}
    src = old.read_text()
    assert src.count('    step: float = param(0.05, "Euler-Maruyama time step")\n') == 1
    old.write_text(src.replace('    step: float = param(0.05, "Euler-Maruyama time step")\n',
                               '    step: float = param(0.05, "Euler-Maruyama time step")\n'
                               '    friction: float = param(0.0, "added later; 0: as before")\n'))
    with pytest.raises(ConfigError, match=r"well.py changed since .* --scenario-edited"):
        run_scan(old, grid={"temperature": [0.5, 1.0]}, sets=["steps=20"], out=out, workers=1)
    again = run_scan(old, grid={"temperature": [0.5, 1.0]}, sets=["steps=20"], out=out, workers=1,
                     scenario_edited=True)
    assert (again.manifest["status"] == "done").all()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((out / "scan.json").read_text())["base"]["friction"] == 0.0
    with pytest.raises(ConfigError, match=r"other base parameters \(friction: 0.0 -> 0.5\)"):
        run_scan(old, grid={"temperature": [0.5, 1.0]}, sets=["steps=20", "friction=0.5"],
                 out=out, workers=1, scenario_edited=True)


def test_an_edited_scenario_does_not_extend_its_scan_silently(tmp_path, capsys):
    """A scenario file edited after its scan began (here: every temperature x 4, a wider
    grid) is refused on the rerun, before anything is written, naming the way out; the CLI
    says it in one line and resumes with --scenario-edited."""
    scen = tmp_path / "well.py"
    shutil.copy(SCEN, scen)
    out = tmp_path / "scan"
    run_scan(scen, grid={"temperature": [0.5, 1.0]}, sets=["steps=20"], out=out, workers=1)
    before = (out / "scan.json").read_text()
    src = scen.read_text()
    assert src.count("temperature=p.temperature") == 1
    scen.write_text(src.replace("temperature=p.temperature", "temperature=4 * p.temperature"))
    with pytest.raises(ConfigError, match="changed since"):
        run_scan(scen, grid={"temperature": [0.5, 1.0, 2.0]}, sets=["steps=20"], out=out,
                 workers=1)
    assert (out / "scan.json").read_text() == before and len(list((out / "points").glob("*.h5"))) == 2
    from langevin_sim.cli import main as cli

    args = ["scan", str(scen), "--grid", "temperature=0.5,1.0,2.0", "--set", "steps=20",
            "--out", str(out), "--workers", "1"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scenario-edited" in err[0], err
    assert cli(args + ["--scenario-edited"]) == 0
    assert len(list((out / "points").glob("*.h5"))) == 3


def test_scan_summary_plot_keeps_zip_rows_apart(tmp_path, monkeypatch):
    """--x a grid key of a scan that also has zip keys: one line per zip row (and per value of
    the other grid keys), not one line zigzagging through the zip rows' points."""
    import matplotlib.axes

    scan = run_scan(SCEN, grid={"curvature": [1.0, 2.0]},
                    zipped={"temperature": [0.5, 2.0], "step": [0.02, 0.05]},
                    sets={"steps": 40, "record_every": 10, "replicas": 8}, out=tmp_path / "z",
                    workers=1, progress=False)
    lines, errorbar = [], matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", lambda self, x, y, **kw: (
        lines.append((list(x), kw.get("label"))), errorbar(self, x, y, **kw))[1])
    main = runpy.run_path(str(ROOT / "analysis" / "scan_summary.py"))["main"]
    table = main([str(scan.root), "--x", "curvature", "--png", str(tmp_path / "s.png")])
    assert len(table) == 4
    assert len(lines) == 2, lines                     # one per zip row (temperature, step)
    assert all(x == [1.0, 2.0] for x, _ in lines), lines
    assert {label for _, label in lines} == {"temperature=0.5, step=0.02",
                                             "temperature=2, step=0.05"}
    xlabels, set_xlabel = [], matplotlib.axes.Axes.set_xlabel      # a zip key on x: say
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", lambda self, t, *a, **kw: (
        xlabels.append(t), set_xlabel(self, t, *a, **kw))[1])      # what varies with it
    main([str(scan.root), "--x", "temperature", "--png", str(tmp_path / "t.png")])
    assert xlabels == ["temperature (zipped: step varied with it)"], xlabels


def test_a_rerun_listing_the_axes_in_another_order_keeps_the_scans_order(tmp_path):
    """Rerunning a scan with its --grid flags in another order rewrote scan.json's axis order:
    the manifest's columns and scan_summary's default --x changed under the user."""
    out = tmp_path / "order"
    first = run_scan(SCEN, grid={"temperature": [0.5, 1.0], "step": [0.02]},
                     sets={"steps": 20}, out=out, workers=1, progress=False)
    again = run_scan(SCEN, grid={"step": [0.02, 0.05], "temperature": [0.5, 1.0]},
                     sets={"steps": 20}, out=out, workers=1, progress=False)
    assert json.loads((out / "scan.json").read_text())["grid"] == ["temperature", "step"]
    assert again.keys == first.keys == ["temperature", "step"]
    assert list(again.manifest["status"]) == ["done"] * 4


def test_a_list_valued_grid_key_on_the_command_line():
    """--grid spectrum=1,3 made two points, spectra (1) and (3), where --set spectrum=1,3 is
    one two-element spectrum, and no command line gave a point two elements: a list-valued
    key's points are separated by ';', its elements by ','; the same points as from Python."""
    from langevin_sim.scan.plan import plan_scan
    from langevin_sim.scenario import load_scenario

    P = load_scenario(ROOT / "scenarios" / "quadratic.py").Params
    coords = lambda grid: [p.coords for p in plan_scan(P, grid=grid)[1]]   # noqa: E731
    assert coords(["spectrum=1,3;2,4"]) == [{"spectrum": [1.0, 3.0]}, {"spectrum": [2.0, 4.0]}]
    assert coords(["spectrum=1,3"]) == [{"spectrum": [1.0, 3.0]}]
    assert coords(["spectrum=1;3"]) == coords({"spectrum": [[1], [3]]})
    assert [p.id for p in plan_scan(P, grid=["spectrum=1,3;2,4"])[1]] == \
        [p.id for p in plan_scan(P, grid={"spectrum": [[1.0, 3.0], [2.0, 4.0]]})[1]]
    assert coords(["step=0.1,0.2"]) == [{"step": 0.1}, {"step": 0.2}]
    with pytest.raises(ConfigError, match=r"a ';'-separated list of points, e.g. "
                                          r"'spectrum=1,3;2,4'"):
        plan_scan(P, grid=["spectrum=1,3;"])


def test_a_list_valued_scan_key_summarizes(tmp_path, capsys):
    """--grid spectrum=1,3 on quadratic.py ran, then summarize() and scan_summary.py ended in
    "TypeError: unhashable type: 'list'": a list-valued key's coordinates are its values'
    JSON text, on a grid axis and along zip, in the order the scan lists them (sorted as
    text, "[1.0, 2.0]" came before "[1.0]")."""
    quad, sets = str(ROOT / "scenarios" / "quadratic.py"), {"steps": 40, "record_every": 10,
                                                             "replicas": 8, "backend": "numpy"}
    scan = run_scan(quad, grid={"spectrum": [[1.0], [3.0], [1.0, 2.0]]}, sets=sets,
                    out=tmp_path / "g", workers=1, progress=False)
    ds = scan.summarize()
    assert list(ds["spectrum"].values) == ["[1.0]", "[3.0]", "[1.0, 2.0]"]
    assert ds.sel(spectrum="[1.0, 2.0]", repeat=0)["status"] == "done"
    main = runpy.run_path(str(ROOT / "analysis" / "scan_summary.py"))["main"]
    table = main([str(scan.root), "--png", str(tmp_path / "g.png")])
    assert sorted(table["spectrum"]) == ["[1.0, 2.0]", "[1.0]", "[3.0]"], table
    assert "[1.0, 2.0]" in capsys.readouterr().out
    zipped = run_scan(quad, zipped={"spectrum": [[1.0], [2.0, 3.0]], "temperature": [0.5, 1.0]},
                      sets=sets, out=tmp_path / "z", workers=1, progress=False).summarize()
    assert list(zipped["spectrum"].values) == ["[1.0]", "[2.0, 3.0]"]
    assert list(zipped["temperature"].values) == [0.5, 1.0]


def _double_well_steps(out, steps_grid, **sets):
    """A serial numpy scan of scenarios/double_well.py at T = 1 over `steps_grid` step sizes
    (`sets`: steps, record_every, replicas), its divergence warnings silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_scan(str(ROOT / "scenarios" / "double_well.py"), grid={"step": steps_grid},
                        sets=dict(sets, temperature=1.0, backend="numpy"), out=out, workers=1,
                        progress=False)


def test_scan_summary_shows_points_that_lost_replicas_to_divergence(tmp_path, capsys,
                                                                     monkeypatch):
    """A point where some (not all) replicas diverged is `done` and its mean energy is over the
    survivors only: the table must say so (alive < 1), not print it like any other point, and
    the figure ring it; a point where all diverged has no mean: the figure drew nothing for it
    (now a cross on the x axis)."""
    import matplotlib.axes

    scan = _double_well_steps(tmp_path / "pd", [0.002, 0.1, 5.0], steps=2000, record_every=200,
                              replicas=32)
    from langevin_sim.analysis.scan import reduce_repeats

    red = reduce_repeats(scan.summarize())
    alive = red["alive"].to_series()
    assert alive[0.002] == 1.0 and 0 < alive[0.1] < 1 and alive[5.0] == 0, alive
    marks, plot = [], matplotlib.axes.Axes.plot

    def spy(self, x, y, fmt, **kw):
        marks.append((fmt, list(x), kw.get("transform") is self.get_xaxis_transform()))
        return plot(self, x, y, fmt, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    main = runpy.run_path(str(ROOT / "analysis" / "scan_summary.py"))["main"]
    table = main([str(scan.root), "--png", str(tmp_path / "s.png")])
    assert list(table["alive"]) == [1.0, alive[0.1], 0.0]
    out = capsys.readouterr().out
    assert "2 point(s) lost replicas to divergence" in out, out
    assert ("o", [0.1], False) in marks and ("x", [5.0], True) in marks, marks


def test_reduce_repeats_keeps_the_error_of_one_replica_repeats_and_counts_diverged_ones():
    """A repeat of one surviving replica has no se (NaN), which the sum took for 0 (8 repeats
    of 1 replica: se 0, "perfect"); now the spread of the repeats' means stands in.  A repeat
    whose every replica diverged (alive 0) was left out of `alive`."""
    import xarray as xr

    from langevin_sim.analysis.scan import reduce_repeats

    means = np.array([[0.13, 0.29, 0.2, 0.25], [1.0, 1.1, np.nan, np.nan]])
    ds = xr.Dataset({"energy_mean": (("step", "repeat"), means),
                     "energy_se": (("step", "repeat"), [[np.nan] * 4, [0.1, 0.2, np.nan, np.nan]]),
                     "alive": (("step", "repeat"), [[1.0] * 4, [1.0, 0.5, 0.0, 0.0]])},
                    coords={"step": [0.1, 0.3], "repeat": range(4)})
    red = reduce_repeats(ds)
    assert red["energy_se"].sel(step=0.1) == pytest.approx(means[0].std(ddof=1) / 2)
    assert red["energy_se"].sel(step=0.3) == pytest.approx(np.sqrt(0.1 ** 2 + 0.2 ** 2) / 2)
    assert red["alive"].values.tolist() == [1.0, 0.375]
    assert red["n_repeat"].values.tolist() == [4, 2]


def test_a_point_whose_replicas_all_diverged_is_alive_zero(tmp_path):
    scan = _double_well_steps(tmp_path / "dv", [0.002, 5.0], steps=20, record_every=10, replicas=2)
    ds = scan.summarize()
    assert list(ds["status"].values.ravel()) == ["done", "diverged"]
    assert ds["alive"].values.ravel().tolist() == [1.0, 0.0]


def test_a_scan_of_replica_exchange_has_its_points_not_their_rung_files(tmp_path, capsys):
    """A replica-exchange point writes <id>.h5 and <id>.rung<k>.h5: the rung files were taken
    for points of an earlier plan ("10 points: 10 done" for 2, rows p<id>.rung1 ... in the
    manifest), and scan_summary.py failed on the repeated coordinates (non-unique index)."""
    scan = run_scan(str(ROOT / "scenarios" / "exchange_double_well.py"),
                    grid={"exchange_every": [10, 20]}, quick=True, sets={"steps": 200},
                    out=tmp_path / "x", workers=1, progress=False)
    assert len(list((scan.root / "points").glob("*.rung*.h5"))) == 8
    assert list(scan.manifest["status"]) == ["done", "done"], scan.manifest
    assert list(open_scan(scan.root).manifest["id"]) == list(scan.manifest["id"])
    main = runpy.run_path(str(ROOT / "analysis" / "scan_summary.py"))["main"]
    table = main([str(scan.root), "--png", str(tmp_path / "s.png")])
    assert list(table["exchange_every"]) == [10, 20]
    assert "2 points" in capsys.readouterr().out


def test_scan_summary_of_a_scan_with_no_finished_point_is_one_line(tmp_path, capsys):
    """A scan whose points are all pending, incomplete (killed) or diverged has no summary
    variables: scan_summary.py ended in "KeyError: 'energy_mean'" from reduce_repeats.
    gather now says which statuses there are and what to do."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = run_scan(str(ROOT / "scenarios" / "double_well.py"), grid={"step": [0.5, 0.6]},
                        sets={"steps": 200, "record_every": 100, "replicas": 8,
                              "backend": "numpy"}, out=tmp_path / "div", workers=1,
                        progress=False)
    with pytest.raises(ConfigError, match=r"no point of the scan .*div is done \(2 diverged\): "
                                          r"nothing to summarize"):
        scan.summarize()
    main = runpy.run_path(str(ROOT / "analysis" / "scan_summary.py"))["main"]
    with pytest.raises(SystemExit) as e:
        main([str(scan.root), "--png", str(tmp_path / "s.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and ": error: no point of the scan" in err[-1], err


def test_a_scheduler_address_of_another_scheme_is_one_line_before_any_file(tmp_path, capsys):
    """--scheduler http://HOST:8787 (the dashboard's URL): one line naming tcp://HOST:PORT,
    nothing written (it was a ValueError traceback, then a 60 s hang closing the client)."""
    out = tmp_path / "dash"
    code = cli(["scan", SCEN, "--grid", "temperature=1.0", "--set", "steps=20", "--out",
                str(out), "--scheduler", "http://127.0.0.1:8787"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("langevin-sim: error: --scheduler http://127.0.0.1:8787") \
        and "tcp://" in err[0], err
    assert not out.exists()


def test_a_stopped_scan_says_so_in_one_line_with_a_manifest_read_from_the_files(
        tmp_path, monkeypatch, capsys):
    """Ctrl-C while a point is in flight (here: its file finished, its report never came
    back): one line with the points' states and how to resume, status 130, and a manifest
    that says what the files say (it kept the in-flight point 'pending')."""
    import pandas as pd

    from langevin_sim.cli import main as cli
    from langevin_sim.scan import runner

    real, calls = runner.run_point, []

    def interrupted(task):
        calls.append(task)
        if len(calls) == 2:
            real(task)                 # finished on disk, never reported
            raise KeyboardInterrupt
        return real(task)
    monkeypatch.setattr(runner, "run_point", interrupted)
    out = tmp_path / "scan"
    args = ["scan", SCEN, "--grid", "temperature=0.5,1.0,2.0", "--set", "steps=20",
            "--out", str(out), "--workers", "1"]
    assert cli(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["langevin-sim: scan stopped (2 done, 1 pending); rerun the same command to "
                   "resume it"], err
    status = pd.read_csv(out / "manifest.csv")["status"]
    assert sorted(status) == ["done", "done", "pending"]
    monkeypatch.setattr(runner, "run_point", real)
    assert cli(args) == 0 and len(calls) == 2


def test_a_point_waits_while_another_copy_of_it_writes_its_file(tmp_path, monkeypatch):
    """An external scheduler's worker that retires (`dask worker --lifetime`) runs its point to
    the end while the scheduler sends the point to another worker, and a rerun right after a
    stopped scan finds the old attempt still writing: the second copy replaced the file under
    the first and failed (RunFileLocked), the scan exiting 1 on a point that finished.  It
    now waits for the writer to let go, then reports what the file holds, with a warning."""
    from langevin_sim.scan import point as P

    out = tmp_path / "scan"
    run_scan(SCEN, grid={"temperature": [0.5]}, sets=["steps=40"], out=out, workers=1)
    (path,) = (out / "points").glob("*.h5")
    with open_run(path) as run:
        meta = run.config["meta"]
    task = {"scenario": SCEN, "params": meta["params"], "out": str(path), "scan": meta["scan"],
            "threads": 1, "flush_seconds": 1.0}
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], "
                               "'r+'); print('held', flush=True); sys.stdin.read()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(P, "WAIT_POLL_S", 0.05)
        stamp, res = path.stat().st_mtime_ns, {}
        th = threading.Thread(target=lambda: res.update(P.run_point(task)))
        th.start()
        time.sleep(1.0)
        assert th.is_alive() and path.stat().st_mtime_ns == stamp     # waiting, file untouched
    finally:
        holder.communicate("")                                      # the writer lets go
    th.join(30)
    assert not th.is_alive() and res["status"] == "done", res
    assert any(re.search(r"waited \d+ s for another process writing", w)
               for w in res["warnings"]), res


def test_the_manifest_says_what_the_files_hold_when_a_failed_point_finished_anyway(
        tmp_path, monkeypatch):
    """A point's attempt that failed while another copy of it ran on (its file complete by the
    scan's end) was written to manifest.csv as failed while the summary and the exit status,
    read from the files, said done: the unfinished rows are now reread before the last
    write."""
    import pandas as pd

    from langevin_sim.scan import runner

    real, first = runner.run_point, []

    def attempt(task):
        if not first:                   # the first point's attempt fails at once ...
            first.append(task)
            return {"id": task["scan"]["id"], "status": "failed", "wall_s": 0.0,
                    "error": "RunFileLocked: another process is writing it", "traceback": "",
                    "resumed_from": None, "worker": "", "warnings": []}
        real(first[0])                  # ... while its other copy runs on and finishes
        return real(task)
    monkeypatch.setattr(runner, "run_point", attempt)
    out = tmp_path / "scan"
    scan = run_scan(SCEN, grid={"temperature": [0.5, 1.0]}, sets=["steps=20"], out=out,
                    workers=1)
    assert list(scan.manifest["status"]) == ["done", "done"]
    assert list(pd.read_csv(out / "manifest.csv")["status"]) == ["done", "done"]


def test_gpus_with_a_scheduler_is_refused_before_any_file(tmp_path, capsys):
    """--gpus N asks for a local cluster of GPU workers: with --scheduler it sent the CPU
    points to the scheduler's GPU workers, its other workers idle."""
    out = tmp_path / "scan"
    code = cli(["scan", SCEN, "--grid", "temperature=0.5,1.0", "--out", str(out),
                "--scheduler", "tcp://127.0.0.1:1", "--gpus", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--gpus N starts a local cluster of GPU workers" in err, err
    assert not out.exists()


def test_a_scan_that_ran_nothing_does_not_hold_its_directory(tmp_path):
    """A base value every point refuses leaves no run file; the corrected command then runs
    in the same directory (it was refused as 'other base parameters'). replicas=0, a
    ConfigError of the build, is refused before the directory is made; curvature=-1, the
    test scenario's own ValueError, fails each point before it writes a file."""
    out = tmp_path / "scan"
    with pytest.raises(ConfigError, match=r"refuses 2 of 2 scan points.*\[temperature=0.5\] "
                                          "replicas must be an integer >= 1, got 0"):
        run_scan(SCEN, grid={"temperature": [0.5, 1.0]}, sets=["steps=20", "replicas=0"],
                 out=out, workers=1)
    assert not out.exists()
    bad = run_scan(SCEN, grid={"temperature": [0.5, 1.0]}, sets=["steps=20", "curvature=-1"],
                   out=out, workers=1)
    assert (bad.manifest["status"] == "failed").all() and not list((out / "points").glob("*.h5"))
    good = run_scan(SCEN, grid={"temperature": [0.5, 1.0]}, sets=["steps=20", "replicas=4"],
                    out=out, workers=1)
    assert (good.manifest["status"] == "done").all()
    assert json.loads((out / "scan.json").read_text())["base"]["replicas"] == 4



def test_a_scheduler_address_that_answers_as_something_else_is_one_line(tmp_path, capsys,
                                                                       monkeypatch):
    """--scheduler tcp://HOST:PORT where a server accepts but never answers as a Dask
    scheduler (the dashboard's port, a worker's): one line within seconds (a Client waited
    on it for ever)."""
    import threading

    import dask

    from langevin_sim.scan import cluster

    monkeypatch.setattr(cluster, "probe_scheduler",
                        lambda address, seconds=10.0, real=cluster.probe_scheduler:
                        real(address, 1.0))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    threading.Thread(target=lambda: held.extend(srv.accept() for _ in range(4)),
                     daemon=True).start()
    port = srv.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = cli(["scan", SCEN, "--grid", "temperature=1.0", "--set", "steps=20", "--out",
                    str(tmp_path / "silent"), "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    srv.close()
    assert code == 2 and len(err) == 1, err
    assert "answers, but not as a Dask scheduler" in err[0] and "8786" in err[0], err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_of_a_scan_on_its_local_cluster_stops_points_at_a_record(tmp_path, sig):
    """Ctrl-C reaches the whole process group: the local workers died of it mid-point
    ("workers died" errors, tracebacks, leaked semaphores) or were killed after 4 s, losing
    what their points ran since the last checkpoint.  Now the workers ignore SIGINT; the scan
    asks the points running to stop at their next record, with a checkpoint, and starts no
    other: two lines, status 130, and the rerun resumes the stopped point from there.
    SIGTERM to the scan (a SLURM time limit) does the same, status 143 (it killed the scan,
    no line, its workers' semaphores leaked)."""
    out = tmp_path / "scan"
    slow = point_id({"temperature": 2.0, "steps": 10_000_000, "record_every": 500}, 0)
    # the scan as a terminal starts it, SIGINT handled: a pytest started in the background of
    # a shell without job control (`(pytest &)`) has SIGINT and SIGQUIT ignored, which its
    # subprocesses inherit, and the scan then ignored the test's Ctrl-C (its 10^7-step point
    # ran to the end, status 0: three of six full suites here)
    args = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, "
            "signal.default_int_handler); from langevin_sim.cli import main; sys.exit(main())",
            "scan", SCEN, "--zip",
            "temperature=0.5,2.0", "--zip", "steps=200,10000000", "--zip",
            "record_every=10,500", "--workers", "2", "--flush-seconds", "0.5",
            "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    fast = point_id({"temperature": 0.5, "steps": 200, "record_every": 10}, 0)
    deadline, t0 = time.monotonic() + 120, time.monotonic()
    while not (_committed_checkpoint(out / "points" / f"{slow}.h5")
               and (out / "points" / f"{fast}.json").exists()) \
            and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # (a scan that ends first: say which wait never ended)
    assert proc.poll() is None, (
        f"the scan ended after {time.monotonic() - t0:.0f} s before the test saw both the "
        f"slow point's checkpoint (its file "
        f"{'there' if (out / 'points' / f'{slow}.h5').exists() else 'absent'}) and the fast "
        f"point's report "
        f"{'there' if (out / 'points' / f'{fast}.json').exists() else 'absent'}: "
        + proc.communicate()[1])
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)                     # what a terminal's Ctrl-C does
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stdout + stderr
    # (after the scheduler's line; on a cold Numba cache the compile notice comes first)
    assert [line for line in stderr.splitlines() if "compiling numba" not in line][1:] == [
        "langevin-sim: stopping: the points running stop at their next record, with a "
        f"checkpoint ({'Ctrl-C' if sig == signal.SIGINT else 'SIGTERM'} again: at once)",
        "langevin-sim: scan stopped (1 done, 1 incomplete); rerun the same command to resume "
        "it"], stderr
    with open_run(out / "points" / f"{slow}.h5") as run:
        stopped = run.steps_done
        assert not run.complete and 0 < stopped < 10_000_000 and stopped % 500 == 0
        assert run.checkpoint()[0] == stopped          # the state at the stop, kept
    assert not (out / "points" / f"{slow}.json").exists()   # no attempt's report: it stopped
    with resume(out / "points" / f"{slow}.h5", steps=stopped + 1000, progress=False) as run:
        assert run.resumed_from == stopped and run.steps_done == stopped + 1000
        np.testing.assert_array_equal(run.step, np.arange(0, stopped + 1001, 500))


def test_sigterm_while_the_local_cluster_starts_stops_the_scan_with_its_line(tmp_path):
    """SIGTERM while the cluster started (Numba cache warmed, workers spawned) ended the scan
    at once, status 143 without a word, its scan.lock left behind: it is now remembered and
    stops the scan, with its line, as soon as it waits for its points."""
    out = tmp_path / "scan"
    args = [sys.executable, "-m", "langevin_sim.cli", "scan", SCEN, "--grid",
            "temperature=0.5,2.0", "--set", "steps=10000000", "--set", "record_every=500",
            "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out / "scan.lock").exists() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stdout + stderr
    assert "langevin-sim: scan stopped (" in stderr and "rerun the same command" in stderr, \
        stderr
    assert not (out / "scan.lock").exists()


def test_sigterm_while_waiting_for_an_external_schedulers_first_worker_stops_the_scan(tmp_path):
    """A scan on a scheduler no worker has joined yet (a SLURM job's workers still queued)
    deferred SIGTERM until a worker came, and was killed instead by the job's end; it now
    stops at once, with its line, status 143."""
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=":0") as c:
        out = tmp_path / "scan"
        proc = subprocess.Popen([sys.executable, "-m", "langevin_sim.cli", "scan", SCEN, "--grid",
                                 "temperature=0.5,1.0", "--set", "steps=20", "--out", str(out),
                                 "--scheduler", c.scheduler_address], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not c.scheduler.clients.keys() - {"fire-and-forget"} and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 143, err          # (no worker ever joins: it waited for ever)
    assert "scan stopped (2 pending)" in err, err


@pytest.mark.slow
def test_the_slurm_recipe_runs_a_scan_end_to_end_under_stand_ins(tmp_path):
    """scenarios/slurm/scan_claim.sbatch as docs/scans.md says to run it, on this machine:
    `srun` and `scontrol` stand-ins (srun starts --ntasks copies and forwards SIGTERM), its
    EDIT lines pointed at this environment and repository, its scan made tiny.  It starts the
    scheduler and 2 workers, runs the scan on them, writes the summary and ends them: status
    0, every point done (an audit ran it so; nothing else exercises the script).  Dask's
    default scheduler port, 8786, is taken meanwhile, as by another job's scheduler on the
    node: the script's scheduler listened there, failed, and the job ended without a scan."""
    import stat

    bin_, home = tmp_path / "bin", tmp_path / "home"
    bin_.mkdir()
    (bin_ / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    (bin_ / "srun").write_text(
        "#!/bin/bash\nn=1\nwhile [[ $# -gt 0 ]]; do case \"$1\" in\n"
        "  -w) shift 2;; --ntasks=*) n=${1#--ntasks=}; shift;; -*) shift;; *) break;; esac; done\n"
        "pids=()\nfor _ in $(seq \"$n\"); do \"$@\" & pids+=($!); done\n"
        "trap 'kill -TERM \"${pids[@]}\" 2>/dev/null' TERM INT\nwait\n")
    for f in ("scontrol", "srun"):
        (bin_ / f).chmod((bin_ / f).stat().st_mode | stat.S_IEXEC)
    (home / "venvs").mkdir(parents=True)
    (home / "venvs" / "langevin").symlink_to(sys.prefix)
    repo = home / "langevin_sim"
    (repo / "logs").mkdir(parents=True)
    for d in ("scenarios", "analysis"):
        (repo / d).symlink_to(Path(ROOT) / d)
    script = (Path(ROOT) / "scenarios" / "slurm" / "scan_claim.sbatch").read_text()
    big = "--set softness=0.02 --set replicas=2048 --set steps=40000 --set record_every=20"
    assert script.count(big) == 1 and script.count("--grid d=1,2,3,4,6,8") == 1
    script = script.replace(big, "--set softness=0.02 --set replicas=16 --set steps=200 "
                                 "--set record_every=20").replace("--grid d=1,2,3,4,6,8",
                                                                  "--grid d=1,2")
    env = dict(os.environ, HOME=str(home), PATH=f"{bin_}:{os.environ['PATH']}",
               SLURM_JOB_ID="7", SLURM_JOB_NODELIST="node1", SLURM_NTASKS="2",
               SLURM_MEM_PER_CPU="2000", MPLBACKEND="Agg")
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8786))
            taken.listen()
        except OSError:         # taken already
            pass
        r = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    scan = open_scan(repo / "data" / "claim2" / "d_scan")
    assert list(scan.manifest["status"]) == ["done", "done"], r.stdout + r.stderr


def test_the_local_cluster_workers_drop_only_the_heartbeat_lost_at_close(caplog):
    """A worker's heartbeat in flight while the scan's own cluster closed failed against the
    closing scheduler and printed a traceback at ERROR after a scan that had stopped as asked
    (1 in ~8 suites, the sigterm case above).  The plugin the scan registers on its local
    cluster drops that one record on every worker; other errors of the workers still show."""
    import logging

    from langevin_sim.scan.worker_logs import HEARTBEAT_LOST, QuietHeartbeatLoss, not_heartbeat_lost

    def log_both():
        log = logging.getLogger("distributed.worker")
        log.error(HEARTBEAT_LOST)
        log.error("a point's worker failed for a reason worth reading")

    logger = logging.getLogger("distributed.worker")
    try:
        with LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                          dashboard_address=":0") as c, Client(c, set_as_default=False) as client:
            client.register_plugin(QuietHeartbeatLoss())
            client.register_plugin(QuietHeartbeatLoss())        # (re-registering: one filter)
            assert logger.filters.count(not_heartbeat_lost) == 1
            with caplog.at_level(logging.ERROR, logger="distributed.worker"):
                client.run(log_both)
    finally:
        logger.removeFilter(not_heartbeat_lost)
    got = [r.getMessage() for r in caplog.records
           if r.name == "distributed.worker" and r.levelno >= logging.ERROR]
    assert got == ["a point's worker failed for a reason worth reading"]


def test_points_running_in_threads_of_one_worker_keep_their_own_warnings():
    """An external `dask worker` with several threads runs points concurrently in one
    process: each point's warnings are its own, a warning from a thread running no point is
    shown as usual, and when the last point ends the process's filters and `showwarning` are
    as before (with `catch_warnings` per point, entered A, B and left A, B, every later
    warning of the process went into A's finished list, and B recorded A's warnings)."""
    import threading
    import warnings

    from langevin_sim.scan.point import point_warnings

    before = list(warnings.filters), warnings.showwarning, warnings._showwarnmsg_impl
    caught = {"a": [], "b": []}
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def point(name, first, then):
        with point_warnings(caught[name]):
            first.set()
            then.wait(5)
            warnings.warn(f"from {name}", RuntimeWarning)
            warnings.warn(f"from {name}", RuntimeWarning)     # every time, not once
            if name == "a":
                a_out.set()

    ta = threading.Thread(target=point, args=("a", a_in, b_in))
    ta.start()
    a_in.wait(5)
    tb = threading.Thread(target=point, args=("b", b_in, a_out))
    tb.start()
    ta.join(5)
    tb.join(5)
    assert caught == {"a": ["RuntimeWarning: from a"] * 2, "b": ["RuntimeWarning: from b"] * 2}
    assert (warnings.filters, warnings.showwarning, warnings._showwarnmsg_impl) == before
    with point_warnings(caught["a"]):
        with warnings.catch_warnings(record=True) as outside:
            warnings.simplefilter("always")
            t = threading.Thread(target=lambda: warnings.warn("no point here", UserWarning))
            t.start()
            t.join(5)
    assert [str(w.message) for w in outside] == ["no point here"]
    assert caught["a"] == ["RuntimeWarning: from a"] * 2


def test_points_running_in_threads_of_one_worker_share_its_blas_limit(monkeypatch):
    """The BLAS thread limit is process-wide: with per-point limits, A, B in and A out let B
    run on the machine's BLAS threads, and B out left the process at one thread for good.
    (threadpoolctl's limits stand in for a process-wide setting here, so that the test does
    not depend on the BLAS the machine has.)"""
    import contextlib
    import threading

    import threadpoolctl

    from langevin_sim.scan.point import _thread_limits

    blas = {"threads": 8}

    @contextlib.contextmanager
    def limits(limits=None):
        before, blas["threads"] = blas["threads"], limits
        try:
            yield
        finally:
            blas["threads"] = before
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", limits)
    a_in, a_out, seen = threading.Event(), threading.Event(), []

    def point_a():
        with _thread_limits(1):
            a_in.set()
            a_out.wait(5)

    ta = threading.Thread(target=point_a)
    ta.start()
    a_in.wait(5)
    with _thread_limits(1):
        a_out.set()
        ta.join(5)
        seen.append(blas["threads"])             # A has left, B still runs
    assert seen == [1] and blas["threads"] == 8


def test_a_quick_scan_starts_every_point_from_the_scenarios_quick_preset(tmp_path, capsys):
    """`scan --quick` (a scan of seconds to try a grid; there was no such flag): each point's
    parameters are the quick preset's, less the scanned keys, with --set over it."""
    scen = str(ROOT / "scenarios" / "double_well.py")
    quick = load_scenario(scen).QUICK
    assert cli(["scan", scen, "--grid", "temperature=0.5,1.0", "--grid", "steps=250,500", "--quick",
                "--set", "replicas=8", "--workers", "1", "--out", str(tmp_path / "q"),
                "--no-progress"]) == 0
    scan = open_scan(tmp_path / "q")
    assert (scan.manifest["status"] == "done").all() and len(scan.manifest) == 4
    for path in scan.manifest["path"]:
        with open_run(tmp_path / "q" / path) as run:
            p = run.config["meta"]["params"]
        assert p["replicas"] == 8 and p["steps"] in (250, 500) and p["temperature"] in (0.5, 1.0)
        assert all(p[k] == v for k, v in quick.items() if k not in ("replicas", "steps"))
    base, points, _, _ = plan_scan(load_scenario(scen).Params, {"steps": [250]},
                                   preset=quick)
    assert base["steps"] != quick["steps"] and points[0].params["steps"] == 250


PRIMED: list = []


def record_priming(scenario, tasks, tries=3):
    """Stands in for `warm_numba_cache` on the workers (in this process): the dtypes of the
    points it was given."""
    PRIMED.append(sorted({t["scan"]["coords"]["dtype"] for t in tasks}))


def test_an_external_cluster_primes_each_group_of_kernels_as_a_task_of_its_own(tmp_path,
                                                                              monkeypatch):
    """On an external scheduler the Numba cache is warmed on the workers, one task per group
    of points with kernels of their own (here a dtype each), so that the groups compile at
    once on several workers rather than one after the other on one."""
    from langevin_sim.scan import cluster as C

    monkeypatch.setattr(C, "warm_numba_cache", record_priming)
    PRIMED.clear()
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=":0") as cluster:
        scan = run_scan(SCEN, grid={"dtype": ["float32", "float64"], "temperature": [0.5, 1.0]},
                        sets={"steps": 20, "backend": "numpy"}, out=tmp_path / "scan",
                        scheduler=cluster.scheduler_address)
    assert list(scan.manifest["status"]) == ["done"] * 4
    assert sorted(PRIMED) == [["float32"], ["float64"]]
