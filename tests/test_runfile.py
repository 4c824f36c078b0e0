"""Run files: format, resume bit-for-bit, SIGKILL durability, divergence, SWMR, xarray."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import xarray as xr

import langevin_sim as ls
from langevin_sim import ConfigError, RunFileError, Simulation, open_run, resume
from langevin_sim.cli import main as cli
from langevin_sim.dynamics import OverdampedLangevin, UnderdampedLangevin
from langevin_sim.potentials import DoubleWell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dw_sim(**kw):
    kw.setdefault("backend", "numba")
    return Simulation(DoubleWell(d=2), UnderdampedLangevin(0.02, 1.0, 0.4), 64, seed=11, **kw)


def test_records_layout_and_run_api(tmp_run):
    run = dw_sim().run(1000, 100, out=tmp_run, progress=False)
    assert run.complete and run.steps_done == 1000 and run.n_records == 11
    np.testing.assert_array_equal(run.step, np.arange(0, 1001, 100))
    assert run.energy.shape == (11, 64) and run.positions.shape == (11, 64, 2)
    np.testing.assert_allclose(run.time, run.step * 0.02)
    np.testing.assert_allclose(run.energy[-1], run.potential.energy(run.positions[-1]))
    assert run.config["dynamics"]["class"] == "UnderdampedLangevin"
    assert "complete" in run.summary()
    run.close()


def test_xarray_opens_records_with_named_dims(tmp_run):
    pytest.importorskip("h5netcdf")
    dw_sim().run(500, 100, out=tmp_run, progress=False).close()
    ds = xr.open_dataset(tmp_run, group="records", engine="h5netcdf")
    assert ds["energy"].dims == ("step", "replica")
    assert ds["positions"].dims == ("step", "replica", "coord")
    assert list(ds["step"].values) == [0, 100, 200, 300, 400, 500]
    # read alone, the group says what its series are and where the parameters are
    assert "sum of the step sizes" in ds["time"].attrs["long_name"]
    assert ds["energy"].attrs["long_name"].startswith("potential energy")
    assert "/config" in ds.attrs["parameters"]
    ds.close()
    with open_run(tmp_run) as run:
        d2 = run.to_xarray()
        assert d2["positions"].sizes == {"step": 6, "replica": 64, "coord": 2}
        assert d2["positions"].attrs["long_name"] == "state x of each replica"
        assert d2["time"].attrs["long_name"] == ds["time"].attrs["long_name"]
        assert json.loads(d2.attrs["config"])["dynamics"]["class"] == "UnderdampedLangevin"


def test_resume_is_bit_for_bit(tmp_path):
    ref = dw_sim().run(1000, 50, out=tmp_path / "ref.h5", progress=False)
    part = dw_sim().run(400, 50, out=tmp_path / "part.h5", progress=False)
    part.close()
    done = resume(tmp_path / "part.h5", steps=1000, progress=False)
    assert done.complete and done.steps_done == 1000
    np.testing.assert_array_equal(done.step, ref.step)
    np.testing.assert_array_equal(done.positions[:], ref.positions[:])
    np.testing.assert_array_equal(done.energy[:], ref.energy[:])
    np.testing.assert_array_equal(done.checkpoint()[1]["p"], ref.checkpoint()[1]["p"])


def test_machines_are_recorded_and_a_resume_elsewhere_warns(tmp_path):
    """The run file lists the machine of each stretch (start, each resume) with what decides
    its rounding; a resume where that differs (here the stored entry says AVX2 and another
    BLAS) warns once, naming what changed, and still runs; a file written before the list
    existed resumes without a warning and starts it; `info` names the machines."""
    import json
    import warnings

    from langevin_sim.errors import MachineChangeWarning

    dw_sim().run(200, 50, out=tmp_path / "a.h5", progress=False).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(tmp_path / "a.h5", steps=400, progress=False).close()   # same machine: quiet
    with open_run(tmp_path / "a.h5") as run:
        m = run.machines
        assert [e["step"] for e in m] == [0, 200] and m[0] == dict(m[1], step=0)
        assert set(m[0]["arithmetic"]) >= {"isa", "blas", "numpy", "numba", "langevin_sim"}
        assert m[0]["host"] in run.summary()
    with h5py.File(tmp_path / "a.h5", "r+") as f:
        entries = json.loads(f.attrs["machines"])
        entries[-1]["arithmetic"].update(isa="avx2,fma", blas="openblas Haswell")
        f.attrs["machines"] = json.dumps(entries)
    with pytest.warns(MachineChangeWarning, match=r"up to step 400 on .*isa avx2,fma -> .*blas "
                                                  r"openblas Haswell -> "):
        done = resume(tmp_path / "a.h5", steps=600, progress=False)
    assert done.complete and [e["step"] for e in done.machines] == [0, 200, 400]
    done.close()
    dw_sim().run(200, 50, out=tmp_path / "old.h5", progress=False).close()
    with h5py.File(tmp_path / "old.h5", "r+") as f:
        del f.attrs["machines"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(tmp_path / "old.h5", steps=400, progress=False).close()
    with open_run(tmp_path / "old.h5") as run:
        assert [e["step"] for e in run.machines] == [200]


def test_time_under_a_schedule_is_the_exact_sum_however_the_run_was_cut(tmp_path, monkeypatch):
    """`time` under a step-size schedule is the correctly rounded sum of the step sizes before
    the step, whatever the records and resumes were (a running float sum drifted by ulps, so
    a resumed run's times differed from the uninterrupted run's), and past the schedule's end
    it costs no loop over the steps (it summed every step in Python: minutes at 1e9 steps)."""
    from fractions import Fraction

    from langevin_sim.dynamics import Schedule

    eta = Schedule("linear", 0.1, 0.3, 50)
    exact = [math.fsum(eta(k) for k in range(n)) for n in range(61)]

    def sim():
        return Simulation(DoubleWell(d=1), OverdampedLangevin(eta, 0.01), 1, backend="numpy")
    np.testing.assert_array_equal(sim().run(60, 1, progress=False).time, exact)
    sim().run(30, 3, out=tmp_path / "part.h5", progress=False).close()
    done = resume(tmp_path / "part.h5", steps=60, progress=False)
    np.testing.assert_array_equal(done.time, exact[::3])
    late = sim()
    late.step = 10**15 + 7
    want = sum(Fraction(eta(k)) for k in range(50)) + (late.step - 50) * Fraction(eta(50))
    calls = []
    call = Schedule.__call__
    monkeypatch.setattr(Schedule, "__call__", lambda s, k: calls.append(k) or call(s, k))
    assert late.time == float(want) and len(calls) == 51

@pytest.mark.parametrize("eta", [("cosine", 0.1, 0.003, 20_000), ("exponential", 1e-315, 1e-12, 9_000),
                                 ("linear", 3e-5, 7.0, 5_000)])
def test_long_ramps_sum_exactly_in_compiled_code(eta, monkeypatch):
    """A ramp longer than `EXACT_SUM_PYTHON` steps is summed by `schedule_digits` (a resume at
    step 1e8 of a 1e8-step ramp summed it in Python: ~100 s): its sum equals the Python loop's
    and the exact rational sum, subnormal values and carries across exponents included."""
    from fractions import Fraction

    from langevin_sim.dynamics import Schedule
    from langevin_sim.dynamics.schedules import EXACT_SUM_PYTHON, exact_units

    eta = Schedule(*eta)
    n = eta.steps
    assert n > EXACT_SUM_PYTHON
    loop = sum(exact_units(eta(k)) for k in range(n))
    assert Fraction(loop, 2**1074) == sum(Fraction(eta(k)) for k in range(n))
    assert eta.exact_sum(0, n) == loop and eta.exact_sum(7, n) == loop - eta.exact_sum(0, 7)
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(eta, 0.01), 1, backend="numpy")
    sim.step = n + 10**12
    want = float(Fraction(loop, 2**1074) + 10**12 * Fraction(eta(n)))
    calls = []
    call = Schedule.__call__
    monkeypatch.setattr(Schedule, "__call__", lambda s, k: calls.append(k) or call(s, k))
    assert sim.time == want
    assert len(calls) == 1     # the tail's value: no Python loop over the ramp


def test_float32_run_keeps_counters_exact(tmp_run):
    sim = Simulation(DoubleWell(d=3), OverdampedLangevin(1e-3, 0.5), 32, dtype="float32", seed=1)
    sim.step = 2**24 - 2     # continue a long run past 2**24, where float32 cannot count
    run = sim.run(5, 1, out=tmp_run, progress=False)
    assert run.positions.dtype == np.float32
    assert run["energy"].dtype == np.float64 and run.step.dtype == np.int64
    np.testing.assert_array_equal(run.step, 2**24 - 2 + np.arange(6))
    assert run.step[-1] == 16_777_219 and run.time[-1] == 16_777_219 * 1e-3
    x64 = run.positions[-1].astype(np.float64)
    np.testing.assert_array_equal(run.energy[-1], run.potential.energy(x64))


def test_divergent_replica_is_frozen_flagged_and_reported(tmp_run, capsys):
    init = np.ones((8, 1))
    init[3] = 50.0           # gradient 5e5 at step 1e-2: overflows within a few steps
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.3), 8, seed=2, init=init)
    with pytest.warns(ls.DivergenceWarning, match="1 of 8 replicas diverged"):
        run = sim.run(200, 10, out=tmp_run, progress=False)
    div = run.diverged_step
    assert div[3] > 0 and np.all(np.delete(div, 3) == -1)
    assert run.complete
    e = run.energy[:]
    assert np.all(np.isnan(e[run.step >= div[3], 3])) and np.all(np.isfinite(np.delete(e, 3, axis=1)))
    run.close()
    assert cli(["info", str(tmp_run)]) == 0
    assert f"replica 3 diverged at step {div[3]}" in capsys.readouterr().out


SCRIPT = textwrap.dedent("""
    import sys
    from langevin_sim import Simulation
    from langevin_sim.dynamics import UnderdampedLangevin
    from langevin_sim.potentials import DoubleWell
    sim = Simulation(DoubleWell(d=2), UnderdampedLangevin(0.02, 1.0, 0.4), 64, seed=11,
                     backend="numpy")
    sim.run(int(sys.argv[2]), 10, out=sys.argv[1], progress=False, flush_seconds=0.05,
            swmr=len(sys.argv) > 3)
""")


def _start(tmp_path, path, steps, *extra):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(path), str(steps), *extra], cwd=ROOT)


def _wait_records(path, n, proc, timeout=60, swmr=False):
    """Wait for `n` committed records of the run `proc` writes, peeking at the marker without
    a lock: a reader holding the file while the writer opens it makes the writer refuse (a
    resume polled by `open_run` exited 'another process has ... open').  swmr: then read the
    file once with `open_run(swmr=True)`, live."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "run finished before it could be killed; make it longer"
        try:
            with h5py.File(path, "r", locking=False, **({"libver": "latest", "swmr": True}
                                                        if swmr else {})) as f:
                if f["commit"][0] >= n:
                    break
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.05)
    else:
        raise AssertionError("run produced no records in time")
    if not swmr:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["commit"][0])
    with open_run(path, swmr=True) as run:
        return run.n_records


@pytest.mark.parametrize("swmr", [False, True], ids=["plain", "swmr"])
def test_sigkill_leaves_readable_file_that_resumes_exactly(tmp_path, swmr, capsys):
    steps = 3000
    ref = Simulation(DoubleWell(d=2), UnderdampedLangevin(0.02, 1.0, 0.4), 64, seed=11,
                     backend="numpy").run(steps, 10, out=tmp_path / "ref.h5", progress=False)
    path = tmp_path / "killed.h5"
    proc = _start(tmp_path, path, 10**7, *(["swmr"] if swmr else []))  # planned far beyond reach
    _wait_records(path, 20, proc, swmr=swmr)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if swmr:    # the killed SWMR writer left the superblock's "open for write" flags set
        with pytest.raises(OSError, match="already open for write"):
            h5py.File(path, "r")
    assert cli(["info", str(path)]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out
    with open_run(path) as run:
        n = run.n_records
        assert 20 <= n and not run.complete
        assert run.checkpoint()[0] < steps, "killed too late for this test's reference"
        np.testing.assert_array_equal(run.positions[:], ref.positions[:n])
        np.testing.assert_array_equal(run.energy[:], ref.energy[:n])
    # `repair` makes a copy readable by plain HDF5 readers as it is: the flags cleared, rows
    # past the commit marker (a writer killed while growing the series) dropped
    copy = tmp_path / "copy.h5"
    shutil.copyfile(path, copy)
    assert cli(["repair", str(copy)]) == 0
    said = capsys.readouterr().out
    assert f"{n} records to step" in said and ("flags cleared" in said) == swmr, said
    with h5py.File(copy, "r+") as f:
        f["records/energy"].resize(n + 2, axis=0)
    assert cli(["repair", str(copy)]) == 0
    assert "uncommitted rows dropped: energy (2)" in capsys.readouterr().out
    with xr.open_dataset(copy, group="records", engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["energy"].values, ref.energy[:n])
    assert cli(["resume", str(path), "--steps", str(steps)]) == 0
    with open_run(path) as run:
        assert run.complete and run.n_records == ref.n_records
        np.testing.assert_array_equal(run.positions[:], ref.positions[:])
        np.testing.assert_array_equal(run.time, ref.time)
        np.testing.assert_array_equal(run.checkpoint()[1]["x"], ref.checkpoint()[1]["x"])
        np.testing.assert_array_equal(run.checkpoint()[1]["p"], ref.checkpoint()[1]["p"])
    h5py.File(path, "r").close()     # flags cleared: plain HDF5 opens it again


def test_a_file_whose_superblock_lags_its_objects_resumes(tmp_path):
    """A writer killed in the middle of an HDF5 flush can leave objects (here the last chunk
    of the positions) past the end-of-file address its last superblock write recorded: HDF5
    reads them as "addr overflow", and a resume that opened the file for writing put new
    chunks over them (a replica-exchange file became unreadable once in 34 kills). `resume`
    and `repair` raise the address to the file's size first (`h5clear -i`): every dataset
    reads again, and the resumed run ends on the uninterrupted one's bits."""
    import struct

    ref = dw_sim().run(400, 10, out=tmp_path / "ref.h5", progress=False)
    path = tmp_path / "lag.h5"
    dw_sim().run(200, 10, out=path, progress=False).close()
    size = path.stat().st_size
    with open(path, "r+b") as fh:                  # version 0 superblock: address at byte 40
        fh.seek(40)
        assert struct.unpack("<Q", fh.read(8))[0] == size
        fh.seek(40)
        fh.write(struct.pack("<Q", size - 256))
    def overflowing(p) -> list:
        bad = []

        def read(name, obj):
            if isinstance(obj, h5py.Dataset):
                try:
                    obj[()]
                except OSError as e:
                    bad.append(name) if "addr overflow" in str(e) else None
        with h5py.File(p, "r") as f:
            f.visititems(read)
        return bad
    assert overflowing(path)
    copy = tmp_path / "copy.h5"
    shutil.copyfile(path, copy)
    assert cli(["repair", str(copy)]) == 0 and not overflowing(copy)
    done = resume(path, steps=400, progress=False)
    np.testing.assert_array_equal(done.positions[:], ref.positions[:])
    np.testing.assert_array_equal(done.checkpoint()[1]["x"], ref.checkpoint()[1]["x"])
    done.close()
    ref.close()


SLOW_FIRST_RECORD = textwrap.dedent("""
    import pathlib, sys, time
    import numpy as np
    from langevin_sim import Observer, Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.potentials import DoubleWell

    class Slow(Observer):             # a first record that takes long (compiling, measuring)
        def __call__(self, sim):
            pathlib.Path(sys.argv[2]).touch()
            time.sleep(60)
            return {"slow": np.zeros(sim.n_replicas)}

        def to_dict(self):
            return {"class": "Slow"}

    Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 8, backend="numpy", seed=1,
               observers=[Slow()]).run(100, 10, out=sys.argv[1], progress=False)
""")


def _kill_once_flagged(script_text: str, tmp_path, flag_name: str):
    """Run `script_text` (argv: run path, flag path) as slow.py in tmp_path, SIGKILL it once it
    has made the flag file; returns the run path (tmp_path / run.h5)."""
    script, flag, path = tmp_path / "slow.py", tmp_path / flag_name, tmp_path / "run.h5"
    script.write_text(script_text)
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(flag)], cwd=ROOT)
    try:
        t0 = time.time()
        while not flag.exists():
            assert proc.poll() is None and time.time() - t0 < 60, f"{flag_name} never began"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    return path


def test_a_run_killed_or_failing_before_its_file_is_laid_out_leaves_no_file(tmp_path,
                                                                              monkeypatch):
    """The first record is taken before the run file exists, and the file is laid out under
    a hidden temporary name and renamed once flushed: a run killed while its first record is
    measured leaves no file (not an unreadable one that blocks the rerun), and a run whose
    layout fails leaves nothing either."""
    path = _kill_once_flagged(SLOW_FIRST_RECORD, tmp_path, "measuring")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measuring", "slow.py"]

    from langevin_sim.io import writer as writer_module

    real = writer_module.RunWriter.create.__func__

    def failing(cls, f, **kw):
        real(cls, f, **kw)
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(writer_module.RunWriter, "create", classmethod(failing))
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="numpy", seed=1)
    with pytest.raises(OSError, match="disk full"):
        sim.run(20, 10, out=path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measuring", "slow.py"]
    monkeypatch.undo()
    run = sim.run(20, 10, out=path, progress=False)     # no "exists" error: nothing was left
    assert run.complete and run.n_records == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measuring", "run.h5", "slow.py"]
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask     # as any new file, not private
    taken = []                        # an existing file is refused before the first record
    monkeypatch.setattr(sim, "snapshot", lambda *a, **k: taken.append(1))
    with pytest.raises(ls.ConfigError, match="exists; choose another path"):
        sim.run(20, 10, out=path, progress=False)
    assert taken == []
    with open_run(path) as run:
        assert run.complete


def test_a_run_never_replaces_a_file_published_meanwhile(tmp_path, monkeypatch):
    """Two runs given one output path: the one whose layout ends second is refused, and the
    first one's file stays (its publishing rename replaced it, and both runs said they had
    finished, the first one's records in an unlinked file)."""
    from langevin_sim.io import writer as writer_module

    path = tmp_path / "run.h5"
    real = writer_module.RunWriter.create.__func__

    def racing(cls, f, **kw):         # another run publishes at `path` while this one lays out
        w = real(cls, f, **kw)
        path.write_bytes(b"another run's file")
        return w
    monkeypatch.setattr(writer_module.RunWriter, "create", classmethod(racing))
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="numpy", seed=1)
    with pytest.raises(ls.ConfigError, match="run.h5 exists; choose another path"):
        sim.run(20, 10, out=path, progress=False)
    assert path.read_bytes() == b"another run's file"
    assert os.listdir(tmp_path) == ["run.h5"]
    with sim.run(20, 10, out=path, progress=False, overwrite=True) as run:
        assert run.complete


SLOW_FIRST_BLOCK = textwrap.dedent("""
    import pathlib, sys, time
    from langevin_sim import Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.potentials import DoubleWell

    def slow(self, steps, sync=True):     # a first block that takes long (a large run's)
        pathlib.Path(sys.argv[2]).touch()
        time.sleep(60)
    Simulation.advance = slow
    Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 8, backend="numpy", seed=1
               ).run(100, 10, out=sys.argv[1], progress=False)
""")


def test_a_run_killed_during_its_first_block_resumes_exactly(tmp_path):
    """A run file is published with its first record and a checkpoint of the initial state,
    so a run killed at any moment after its file appears resumes (it said to start again,
    and the file it left made the rerun refuse its path)."""
    path = _kill_once_flagged(SLOW_FIRST_BLOCK, tmp_path, "stepping")
    with open_run(path) as run:
        assert run.n_records == 1 and run.checkpoint()[0] == 0 and not run.complete
    ref = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 8, backend="numpy",
                     seed=1).run(100, 10, out=tmp_path / "ref.h5", progress=False)
    with resume(path, progress=False) as run:
        assert run.complete and run.resumed_from == 0
        np.testing.assert_array_equal(run.step, ref.step)
        np.testing.assert_array_equal(run.positions[:], ref.positions[:])
        np.testing.assert_array_equal(run.checkpoint()[1]["x"], ref.checkpoint()[1]["x"])
    ref.close()


_DIE_AT_COMMIT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from langevin_sim import Simulation, resume
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.io import writer as W
    from langevin_sim.potentials import DoubleWell
    out, mode = sys.argv[1], sys.argv[2]
    orig = W.RunWriter._commit

    def commit(self, c):
        if mode == "diverged" and (self._held["records/diverged_step"] >= 0).any():
            self.f.flush()              # the data (diverged_step too) out, the marker not
            os._exit(9)
        if mode == "resume":            # a resume's first commit: truncate_to_checkpoint's
            self.f.flush()
            os._exit(9)
        orig(self, c)
        if mode == "run" and c[1] >= 150:
            os._exit(9)                 # records past the checkpoint at 100, committed
    W.RunWriter._commit = commit
    if mode == "resume":
        resume(out, progress=False)
    x0 = np.full((8, 1), -1.0)
    x0[5] = 30.0 if mode == "diverged" else -1.0         # replica 5 diverges at once
    Simulation(DoubleWell(d=1), OverdampedLangevin(2e-3, 0.5), 8, backend="numpy", seed=0,
               init=x0).run(300, 10, out=out, progress=False, flush_seconds=0,
                            checkpoint_every=None if mode == "diverged" else 100)
""")


def _die_at_commit(path, mode: str) -> int:
    return subprocess.run([sys.executable, "-c", _DIE_AT_COMMIT, str(path), mode],
                          capture_output=True, timeout=300).returncode


def test_killed_between_data_and_marker_the_file_keeps_to_its_marker(tmp_path):
    """A kill after a commit's data flush but before its marker: the diverged_step series
    (written with the data) said replica 5 diverged at step 3 of a file at step 0.  A resume
    killed in truncate_to_checkpoint (records committed past the last checkpoint) shrank the
    datasets before it moved the marker: 16 records counted, 11 held, `np.asarray` of a
    series 11 rows long.  Each file now keeps to its marker, and resumes exactly."""
    path = tmp_path / "div.h5"
    assert _die_at_commit(path, "diverged") == 9
    with open_run(path) as run:
        assert run.steps_done == 0
        np.testing.assert_array_equal(run.diverged_step, -1)
        np.testing.assert_array_equal(run.checkpoint()[2], -1)
    path = tmp_path / "trunc.h5"
    assert _die_at_commit(path, "run") == 9 and _die_at_commit(path, "resume") == 9
    with open_run(path) as run:
        n = run.n_records
        assert run.steps_done == 150 and n == 16 and np.asarray(run.energy).shape == (n, 8)
        assert run.f["records/energy"].shape[0] >= n
    ref = Simulation(DoubleWell(d=1), OverdampedLangevin(2e-3, 0.5), 8, backend="numpy",
                     seed=0, init=np.full((8, 1), -1.0)).run(300, 10, out=tmp_path / "ref.h5",
                                                             progress=False)
    with resume(path, progress=False) as run:
        assert run.complete
        for name in ("step", "energy", "positions"):
            np.testing.assert_array_equal(np.asarray(run[name]), np.asarray(ref[name]))
    ref.close()


def test_a_new_run_file_removes_the_temporary_files_of_dead_processes_only(tmp_path):
    """Temporary files a killed process left for the same run file on this host go when the
    next run at that name lays out its file; a live process's, another host's and another
    run file's stay."""
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    names = {"orphan": f".run.h5.{host}-{dead.pid}.0123456789ab.creating",
             "live": f".run.h5.{host}-{os.getpid()}.0123456789ab.creating",
             "other host": f".run.h5.elsewhere-{dead.pid}.0123456789ab.creating",
             "other run": f".other.h5.{host}-{dead.pid}.0123456789ab.creating"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"")
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="numpy", seed=1)
    sim.run(20, 10, out=tmp_path / "run.h5", progress=False).close()
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"run.h5"} | set(names.values()) - {names["orphan"]}, left


def test_resume_refuses_a_live_swmr_writer_and_reads_it(tmp_path):
    path = tmp_path / "live.h5"
    proc = _start(tmp_path, path, 10**7, "swmr")
    try:
        _wait_records(path, 3, proc, swmr=True)
        with open_run(path) as run:          # read-only: opened in SWMR mode, no flag changes
            assert run.n_records >= 3 and not run.complete
            # (`info` said "INCOMPLETE (resume with ...)" of a run still being written)
            assert f"INCOMPLETE: being written by process {proc.pid}" in run.summary()
        with pytest.raises(ls.RunFileError, match=f"being written .SWMR. by process {proc.pid}"):
            resume(path, progress=False)
    finally:
        proc.kill()
        proc.wait()
    with open_run(path) as run:
        assert ("INCOMPLETE (resume with `langevin-sim resume`; its killed writer's flags keep "
                "h5py and xarray out until then, or until `langevin-sim repair`)") in run.summary()


_LIVE_WRITER = textwrap.dedent("""
    import sys
    from langevin_sim import Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.first_passage import FirstPassage, HalfSpace
    from langevin_sim.potentials import DoubleWell
    Simulation(DoubleWell(d=2), OverdampedLangevin(2e-3, 0.5), 128, backend="numpy", seed=7,
               first_passage=FirstPassage(HalfSpace([1.0, 0.0], 0.0, "right"))).run(
        10**7, 50, out=sys.argv[1], swmr=True, flush_seconds=0, progress=False)
""")


def test_live_reads_of_the_checkpoint_are_the_markers_state(tmp_path):
    """A live SWMR reader's `checkpoint()` read the marker, then the slot it names, while
    the writer could refill that slot two commits later: about 1 read in 100 returned a
    later step's state as the marker's (and `first_passage` likewise), and opening a slot
    sometimes raised KeyError 'invalid dataset size'.  Reads now check the marker before and
    after (stochastic: with a commit at every record, ~150 reads in 3 s)."""
    path = tmp_path / "live.h5"
    proc = subprocess.Popen([sys.executable, "-c", _LIVE_WRITER, str(path)])
    try:
        _wait_records(path, 3, proc, swmr=True)
        checked = 0
        with open_run(path, swmr=True) as run:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                run.refresh()
                step, state, _ = run.checkpoint()
                fp = run.first_passage
                assert fp.step >= step
                steps = run.step
                i = int(np.searchsorted(steps, step))
                if i < steps.size and steps[i] == step:
                    np.testing.assert_array_equal(run.positions[i], state["x"])
                    checked += 1
        assert checked > 20
    finally:
        proc.kill()
        proc.wait()


def test_a_reader_opened_before_the_second_commit_reads_every_checkpoint(tmp_path):
    """Checkpoint slot 1 was allocated at the second commit (small arrays: late allocation),
    and a SWMR reader that had opened the file before could never open those datasets
    ("invalid dataset size", which `g.values()` turned into None): `checkpoint()` and
    `first_passage` raised AttributeError on ~40 % of live reads of a BAOAB run with an
    observer.  Every slot dataset is now allocated at creation."""
    writer = _LIVE_WRITER.replace("OverdampedLangevin(2e-3, 0.5)", "UnderdampedLangevin(2e-3)")
    writer = writer.replace("import OverdampedLangevin", "import UnderdampedLangevin")
    writer = writer.replace("10**7, 50,", "10**7, 1500,")
    assert "UnderdampedLangevin(2e-3)" in writer and "1500" in writer
    path = tmp_path / "live.h5"
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)])
    try:
        _wait_records(path, 1, proc, swmr=True)
        slots = set()
        with open_run(path, swmr=True) as run:
            end = time.monotonic() + 20      # (stops at 3 slots: seconds; more only under load)
            while time.monotonic() < end and len(slots) < 3:
                run.refresh()
                step, state, _ = run.checkpoint()
                assert run.first_passage.step >= step and set(state) >= {"x", "p", "g"}
                slots.add(step)
                time.sleep(0.01)
        assert len(slots) >= 3, slots
    finally:
        proc.kill()
        proc.wait()


def test_reading_a_run_written_without_swmr_names_the_writer_and_swmr(tmp_path):
    path = tmp_path / "busy.h5"
    proc = _start(tmp_path, path, 10**7)
    try:
        _wait_records(path, 3, proc)
        for open_it in (open_run, lambda p: open_run(p).to_xarray()):
            with pytest.raises(ls.RunFileError) as e:
                open_it(path)
            msg = str(e.value)
            assert "another process is writing" in msg and "--swmr" in msg and "h5clear" not in msg
        with pytest.raises(ls.RunFileError, match="another process is writing"):
            resume(path, progress=False)
        with pytest.raises(BlockingIOError):      # xarray itself can only say this
            xr.open_dataset(path, group="records", engine="h5netcdf")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("swmr", [False, True], ids=["plain", "swmr"])
def test_overwrite_refuses_a_file_another_process_writes(tmp_path, swmr, monkeypatch, capsys):
    """--overwrite of a file that a live run writes is refused (it replaced the file, and
    the other run then reported success on the new one): at the start, and at the rename
    that publishes the new file, where a writer that started meanwhile is caught."""
    from langevin_sim import simulation as S

    path = tmp_path / "busy.h5"
    proc = _start(tmp_path, path, 10**7, *(["swmr"] if swmr else []))
    try:
        _wait_records(path, 3, proc, swmr=swmr)
        with pytest.raises(ls.RunFileError, match="overwrite=True. would replace it") as e:
            dw_sim(backend="numpy").run(20, 10, out=path, overwrite=True, progress=False)
        assert "\n" not in str(e.value)
        assert cli(["run", os.path.join(ROOT, "scenarios", "double_well.py"), "--quick",
                    "--set", "backend=numpy", "--out", str(path), "--overwrite"]) == 2
        assert "would replace it" in capsys.readouterr().err
        later = tmp_path / "later.h5"
        real = S._create_file

        def create(out, overwrite, swmr_):    # another run takes the name after the check
            f = real(out, overwrite, swmr_)
            os.link(path, later)
            return f
        monkeypatch.setattr(S, "_create_file", create)
        with pytest.raises(ls.RunFileError, match="would replace it"):
            dw_sim(backend="numpy").run(20, 10, out=later, overwrite=True, progress=False)
        assert proc.poll() is None and os.path.samefile(path, later)
        monkeypatch.setattr(S, "_create_file", real)
        dw_sim(backend="numpy").run(20, 10, out=tmp_path / "new.h5", overwrite=True,
                                    progress=False).close()      # no file yet: no check
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".creating")]
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_flushes_and_stops(tmp_path):
    path = tmp_path / "term.h5"
    proc = _start(tmp_path, path, 10**6)
    _wait_records(path, 5, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    with open_run(path) as run:
        assert not run.complete and run.n_records >= 5
        assert run.checkpoint()[0] == run.steps_done


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(tmp_path):
    """A background job of a script (`python job.py &`, nohup) starts with SIGINT ignored, so
    that the terminal's Ctrl-C, which reaches it too, leaves it running: the run installed its
    Ctrl-C handler whatever it inherited and stopped (a scan kept ignoring it).  It now keeps
    the inherited SIG_IGN, and SIGTERM still stops it at a record with its checkpoint."""
    path = tmp_path / "bg.h5"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(10**6)], cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        n = _wait_records(path, 3, proc)
        proc.send_signal(signal.SIGINT)
        _wait_records(path, n + 3, proc)                  # (asserts it is still running)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    with open_run(path) as run:
        assert not run.complete and run.checkpoint()[0] == run.steps_done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stop_prints_one_line_with_the_resume_command(tmp_path, sig):
    path = tmp_path / "stop.h5"
    scen = os.path.join(ROOT, "scenarios", "double_well.py")
    proc = subprocess.Popen([sys.executable, "-m", "langevin_sim.cli", "run", scen, "--backend",
                             "numpy", "--set", "steps=10000000", "--set", "record_every=100",
                             "--set", "replicas=64", "--out", str(path), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_records(path, 3, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()                     # (not left running its 10^7 steps when the test fails)
    assert proc.returncode == 128 + sig
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    with open_run(path) as run:
        n, k = run.steps_done, run.checkpoint()[0]
        assert not run.complete and n >= 200
    assert err.strip() == (f"langevin-sim: stopped by {sig.name} at step {n} of 10000000; "
                           f"checkpoint at step {k} in {path}; resume with: langevin-sim resume "
                           f"{path}")
    assert cli(["resume", str(path), "--steps", str(n + 200)]) == 0
    with open_run(path) as run:
        assert run.complete and run.steps_done == n + 200


def test_swmr_reader_sees_the_run_grow(tmp_path):
    path = tmp_path / "live.h5"
    proc = _start(tmp_path, path, 10**6, "swmr")
    try:
        n1 = _wait_records(path, 3, proc, swmr=True)
        with open_run(path, swmr=True) as run:
            first = run.n_records
            t0 = time.time()
            while run.n_records <= first and time.time() - t0 < 30:
                time.sleep(0.1)
                run.refresh()
            assert run.n_records > first >= n1
            energy = run.energy        # a Series of the records committed when it was made
            assert energy[:].shape[0] == len(energy) > first
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_swmr_reads_between_refreshes_agree(tmp_path):
    """A live reader read the commit marker at every access, so `run.step` and `run.energy`
    read one after the other while the writer committed differed in length (a notebook's
    plot(run.time, run.energy[:, 0]) failed ~1 cell in 90): the view now moves at `refresh`."""
    path = tmp_path / "live.h5"
    proc = subprocess.Popen([sys.executable, "-c", _LIVE_WRITER, str(path)])
    try:
        _wait_records(path, 3, proc, swmr=True)
        with open_run(path, swmr=True) as run:
            n, t0 = run.n_records, time.monotonic()
            while run.f["commit"][0] < n + 2 and time.monotonic() - t0 < 30:
                time.sleep(0.02)                        # the writer commits meanwhile
            assert len(run.step) == len(run.time) == len(run.energy) == run.n_records == n
            assert run.to_xarray().sizes["step"] == n and run.steps_done == run.step[-1]
            run.refresh()
            assert len(run.step) == len(run.energy) == run.n_records >= n + 2
    finally:
        proc.kill()
        proc.wait()


def test_cli_run_info_resume(tmp_path, capsys):
    out = tmp_path / "dw.h5"
    scen = os.path.join(ROOT, "scenarios", "double_well.py")
    args = ["run", scen, "--set", "steps=300", "--set", "replicas=16", "--set", "record_every=100",
            "--out", str(out), "--no-progress"]
    assert cli(args) == 0
    assert cli(args) == 2
    assert "exists" in capsys.readouterr().err
    assert cli(args + ["--overwrite"]) == 0
    assert cli(["resume", str(out), "--steps", "500"]) == 0
    with open_run(out) as run:
        assert run.steps_done == 500 and run.complete
        assert run.config["meta"]["params"]["replicas"] == 16
    r = subprocess.run([sys.executable, scen, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "temperature" in r.stdout


def test_not_a_run_file(tmp_path):
    junk = tmp_path / "junk.h5"
    with h5py.File(junk, "w") as f:
        f["x"] = 1
    with pytest.raises(ls.RunFileError, match="not a langevin_sim run file"):
        open_run(junk)
    txt = tmp_path / "a.txt"
    txt.write_text("hello")
    with pytest.raises(ls.RunFileError, match="not HDF5"):
        open_run(txt)


def test_a_directory_is_not_a_run_file(tmp_path):
    """A scan directory given where a run file is expected (every analysis script but
    escape.py) names its points' files, not 'not HDF5'."""
    scan = tmp_path / "scan"
    (scan / "points").mkdir(parents=True)
    (scan / "scan.json").write_text("{}")
    with pytest.raises(ls.RunFileError, match=r"scan is a scan directory, not a run file: give "
                                              r"one of its points' files \(.*points/<id>\.h5"):
        open_run(scan)
    with pytest.raises(ls.RunFileError, match="is a directory, not a run file"):
        open_run(tmp_path)


@pytest.mark.parametrize("part", ["records/energy", "config"])
def test_a_damaged_run_file_is_one_error_naming_the_part(tmp_run, part, capsys):
    """A run file whose bytes were altered (not by a kill: that leaves it readable) is refused
    on opening with one line naming the damaged part, not a KeyError or a JSON traceback
    from deep in a command."""
    dw_sim(backend="numpy").run(100, 10, out=tmp_run, progress=False).close()
    with h5py.File(tmp_run, "r") as f:
        at = h5py.h5o.get_info(f[part].id).addr
    with open(tmp_run, "r+b") as fh:     # garble its object header (or the config's JSON)
        fh.seek(at)
        fh.write(b"\xff" * 8 if part != "config" else b"")
    if part == "config":
        with h5py.File(tmp_run, "r+") as f:
            f["config"].attrs["json"] = f["config"].attrs["json"][:-7]
    for command in (["info", str(tmp_run)], ["resume", str(tmp_run), "--no-progress"]):
        assert cli(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{tmp_run} is damaged: {part} cannot be read" in err[0], err


def test_resume_keeps_swmr_and_records_target_and_backend(tmp_path):
    """A run started in SWMR mode resumes in it (a live reader follows the continuation);
    --steps updates the target and the scenario's `steps`; another backend is recorded with
    the step it took over; a run not started in SWMR mode cannot resume in it; a reader
    holding the file makes resume say so."""
    live = tmp_path / "live.h5"
    _start(tmp_path, live, 20, "swmr").wait(timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "langevin_sim.cli", "resume", str(live),
                             "--steps", str(10**7), "--no-progress"], cwd=ROOT)
    try:
        assert _wait_records(live, 8, proc, swmr=True) >= 8    # read live while it resumes
    finally:
        proc.kill()
        proc.wait()
    sim = Simulation(ls.potentials.DoubleWell(d=2), OverdampedLangevin(0.01, 1.0), 3,
                     backend="numpy", meta={"params": {"steps": 20}})
    sim.run(20, 10, out=tmp_path / "s.h5", swmr=True, progress=False).close()
    resume(tmp_path / "s.h5", steps=40, backend="numba", progress=False).close()
    with open_run(tmp_path / "s.h5") as run:
        cfg = run.config
        assert cfg["swmr"] and cfg["steps_target"] == 40 and cfg["meta"]["params"]["steps"] == 40
        assert cfg["backend"] == "numba" and cfg["backend_history"] == [[0, "numpy"], [20, "numba"]]
    plain = Simulation(ls.potentials.DoubleWell(d=2), OverdampedLangevin(0.01, 1.0), 3,
                       backend="numpy")
    plain.run(10, 10, out=tmp_path / "p.h5", progress=False).close()
    with pytest.raises(ls.ConfigError, match="was not started in SWMR mode"):
        resume(tmp_path / "p.h5", steps=20, swmr=True)
    resume(tmp_path / "p.h5", steps=20, progress=False).close()
    with open_run(tmp_path / "p.h5") as run:
        assert not run.config["swmr"] and "backend_history" not in run.config
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from langevin_sim import open_run
        run = open_run({str(tmp_path / "p.h5")!r})
        print("open", flush=True)
        time.sleep(60)""")], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(ls.RunFileError, match="another process has .* open .a run writing "
                                                  "it, or a reader such as open_run"):
            resume(tmp_path / "p.h5", steps=30, progress=False)
    finally:
        reader.kill()
        reader.wait()


def test_sharpness_observer_is_recorded_and_survives_resume(tmp_path):
    from langevin_sim.potentials import Quadratic
    from langevin_sim.potentials.sharpness import SharpnessObserver

    pot = Quadratic(spectrum=[0.5, 1.0, 3.0], seed=1)
    sim = Simulation(pot, OverdampedLangevin(0.05, 0.2), 4, seed=3,
                     observers=[SharpnessObserver(every=20)])
    sim.run(40, 10, out=tmp_path / "s.h5", progress=False).close()
    run = resume(tmp_path / "s.h5", steps=80, progress=False)
    top = run["sharpness"][:]
    assert top.shape == (9, 4)
    np.testing.assert_allclose(top[::2], 3.0, rtol=1e-8)     # exact for a quadratic
    assert np.all(np.isnan(top[1::2]))
    assert run.config["observers"][0]["every"] == 20


def test_resume_of_a_complete_run_is_a_no_op_and_says_so(tmp_run, capsys):
    dw_sim().run(300, 100, out=tmp_run, progress=False).close()
    before = tmp_run.read_bytes()
    assert cli(["resume", str(tmp_run)]) == 0
    assert "already complete at step 300; nothing to do" in capsys.readouterr().out
    run = resume(tmp_run, progress=False)
    assert run.resumed_from is None and run.complete
    run.close()
    assert tmp_run.read_bytes() == before
    assert cli(["info", str(tmp_run)]) == 0 and "INCOMPLETE" not in capsys.readouterr().out


def test_resume_repairs_a_file_at_its_target_marked_incomplete(tmp_path):
    ref = dw_sim().run(300, 100, out=tmp_path / "ref.h5", progress=False)
    path = tmp_path / "bad.h5"
    dw_sim().run(300, 100, out=path, progress=False).close()
    with h5py.File(path, "r+") as f:          # what the old `resume` of a finished run did
        f["commit"][4] = 0
    with open_run(path) as run:
        assert not run.complete and run.steps_done == 300
    run = resume(path, progress=False)
    assert run.complete and run.resumed_from == 300 and run.n_records == 4
    np.testing.assert_array_equal(run.positions[:], ref.positions[:])
    np.testing.assert_array_equal(run.checkpoint()[1]["p"], ref.checkpoint()[1]["p"])
    np.testing.assert_array_equal(run.commit, ref.commit)
    run.close()


def test_divergence_is_reported_at_the_end_of_run(tmp_run, capsys):
    import warnings

    from langevin_sim.cli import guarded

    init = np.ones((8, 1))
    init[[3, 5], 0] = 50.0, 60.0

    def sim():
        return Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.3), 8, seed=2, init=init,
                          first_replica=100)

    with pytest.warns(ls.DivergenceWarning) as w:
        run = sim().run(200, 10, out=tmp_run, progress=False)
    div = run.diverged_step
    run.close()
    bad = np.flatnonzero(div >= 0)
    first = bad[np.argmin(div[bad])]
    w = [x for x in w if x.category is ls.DivergenceWarning]   # (not a first compile's)
    assert list(bad) == [3, 5] and len(w) == 1
    msg = (f"2 of 8 replicas diverged, the first (replica {100 + first}) at step {div[first]}; "
           "their records are NaN from then on (see diverged_step, or `langevin-sim info`)")
    assert str(w[0].message) == msg
    assert guarded(lambda: sim().run(200, 10, progress=False) and 0) == 0
    assert capsys.readouterr().err.strip().splitlines() == [f"langevin-sim: warning: {msg}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.3), 8, seed=2).run(50, 10)


GUARDED = """
import sys, warnings
from langevin_sim import DivergenceWarning
from langevin_sim.cli import guarded
warnings.simplefilter("always")

def command():
    for i in range(3):
        warnings.warn(f"warning {i}", UserWarning)
        print(f"after {i}", flush=True)
    warnings.warn(DivergenceWarning("2 of 8 replicas diverged"))
    print("done", flush=True)
    return 0

sys.exit(guarded(command, prog="x"))
"""


def test_cli_shows_warnings_as_they_come_and_keeps_none():
    """`cli.guarded` shows each warning when it is issued (in a fresh interpreter, as the CLI
    runs). The guard used to record every warning and replay the others at the end inside its
    own recording context: each replay was recorded again, an endless loop after any warning
    that was not a DivergenceWarning (on the GPU: numba-cuda's at the first launch; this
    test then timed out; design_changes 63)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-u", "-c", GUARDED], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert p.returncode == 0, p.stdout
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    order = [i for i, ln in enumerate(lines) if "UserWarning: warning" in ln or
             ln.startswith(("after", "done", "x: warning"))]
    assert [lines[i].split(": ")[-1] if "UserWarning" in lines[i] else lines[i]
            for i in order] == ["warning 0", "after 0", "warning 1", "after 1", "warning 2",
                                "after 2", "x: warning: 2 of 8 replicas diverged", "done"], lines


@pytest.mark.filterwarnings("error")
def test_every_group_opens_in_xarray_without_phony_dims(tmp_run):
    pytest.importorskip("h5netcdf")
    from langevin_sim.dynamics import SGD, Schedule
    from langevin_sim.potentials import LinearRegression
    from langevin_sim.potentials.sharpness import SharpnessObserver

    lr = Schedule("linear", 0.05, 0.01, 60)
    sim = Simulation(LinearRegression(n=32, d=3, seed=1), SGD(lr=lr, batch_size=4, momentum=0.5),
                     5, seed=1, observers=[SharpnessObserver(every=20)])
    sim.run(100, 20, out=tmp_run, progress=False).close()
    groups, unscaled = ["/"], []

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            groups.append(name)
        elif not obj.is_scale and not all(len(d) for d in obj.dims):
            unscaled.append(name)

    with h5py.File(tmp_run, "r") as f:
        f.visititems(visit)
    assert unscaled == [] and {"records", "potential", "checkpoint/slot1"} <= set(groups)
    for g in groups:
        with xr.open_dataset(tmp_run, group=g, engine="h5netcdf") as ds:
            assert not any(d.startswith("phony") for d in ds.dims), (g, ds.dims)
    with xr.open_dataset(tmp_run, group="records", engine="h5netcdf") as ds:
        assert ds["time"].dims == ("step",) and "time" in ds.coords
        assert ds["diverged_step"].dims == ("replica",)
        assert ds["sharpness"].dims == ("step", "replica")
        etas = [lr(k) for k in range(100)]
        np.testing.assert_allclose(ds["time"].values, [sum(etas[:n]) for n in range(0, 101, 20)],
                                   rtol=1e-12)
    with h5py.File(tmp_run, "r") as f, xr.open_dataset(tmp_run, group="checkpoint/slot0",
                                                       engine="h5netcdf") as ds:
        assert ds["x"].dims == ("replica", "coord") and ds["v"].dims == ("replica", "coord")
        assert [x.decode() for x in f["commit_field"][()]] == [
            "n_records", "steps_done", "checkpoint_slot", "checkpoint_step", "complete"]


def test_records_of_a_diverged_replica_do_not_touch_the_state(tmp_run):
    """NaN-filling a diverged replica's record entries must work on copies: MALA records its
    `accepted` state array as an observable."""
    from langevin_sim.dynamics import MALA

    init = np.ones((4, 1))
    init[2] = 1e3
    sim = Simulation(DoubleWell(d=1), MALA(0.5, 0.3), 4, seed=3, init=init, backend="numpy",
                     divergence_bound=1e5)
    with pytest.warns(ls.DivergenceWarning):
        run = sim.run(20, 10, out=tmp_run, progress=False)
    assert sim.diverged_step[2] >= 0 and np.isnan(run["accepted"][-1][2])
    assert all(np.all(np.isfinite(v)) for v in sim.state.values())
    run.close()


BOWL = '''
import numpy as np
from langevin_sim.potentials.base import Potential


class Bowl(Potential):
    """U = k |x|^2 / 2 (a potential defined outside the package)."""

    def __init__(self, d=2, k=1.5):
        self.d, self.k = int(d), float(k)

    def energy(self, x):
        return 0.5 * self.k * np.sum(np.asarray(x, dtype=np.float64) ** 2, axis=1)

    def grad(self, x, batch=None):
        return self.k * x

    def params(self):
        return {"d": self.d, "k": self.k}
'''


def test_resume_imports_a_potential_defined_outside_the_package(tmp_path):
    """A run of a potential from the user's own file: `langevin-sim resume` in a fresh process
    says which option imports it, and with `--import FILE.py` finishes the run, equal to the
    uninterrupted one."""
    (tmp_path / "bowl.py").write_text(BOWL)
    make = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from bowl import Bowl; "
            "from langevin_sim import Simulation; "
            "from langevin_sim.dynamics import OverdampedLangevin; "
            "s = Simulation(Bowl(), OverdampedLangevin(0.05, 0.5), 8, backend='numpy', seed=3); "
            "s.run({steps}, 10, out={out!r}, progress=False).close()")
    for steps, out in ((20, "part.h5"), (40, "whole.h5")):
        subprocess.run([sys.executable, "-c", make.format(steps=steps, out=str(tmp_path / out))],
                       check=True, cwd=tmp_path)
    cmd = [sys.executable, "-m", "langevin_sim.cli", "resume", str(tmp_path / "part.h5"),
           "--steps", "40", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "unknown potential class 'Bowl'" in r.stderr, r.stderr
    assert "--import MODULE" in r.stderr
    r = subprocess.run(cmd + ["--import", str(tmp_path / "nope.py")], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--import" in r.stderr, r.stderr
    r = subprocess.run(cmd + ["--import", str(tmp_path / "bowl.py")], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        import bowl  # noqa: F401  (registers Bowl here, for open_run)
        with open_run(tmp_path / "part.h5") as a, open_run(tmp_path / "whole.h5") as b:
            assert a.steps_done == b.steps_done == 40
            np.testing.assert_array_equal(np.asarray(a.positions), np.asarray(b.positions))
    finally:        # (the registries are the process's: other tests iterate over them)
        from langevin_sim.potentials import REGISTRY
        REGISTRY.pop("Bowl", None)
        sys.path.remove(str(tmp_path))
        sys.modules.pop("bowl", None)


def test_stop_runs_reaches_a_run_in_another_thread_and_later_ones(tmp_path, monkeypatch):
    """`simulation.stop_runs` (what a stopping scan asks of its workers, whose points run in
    worker threads, out of reach of signal handlers) stops a run in progress at its next
    record with a checkpoint; with later=True, a run started afterwards before its first
    step."""
    import threading

    from langevin_sim import simulation as S
    from langevin_sim.errors import RunStopped

    monkeypatch.setattr(S, "_STOP_LATER", [0])
    sim = Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy", seed=1)
    raised = []

    def run(path):
        try:
            sim.run(10**9, 100, out=path, progress=False, flush_seconds=0.01)
        except RunStopped as e:
            raised.append(str(e))
    th = threading.Thread(target=run, args=(tmp_path / "a.h5",))
    th.start()
    while sim.step == 0:
        time.sleep(0.01)
    assert S.stopping() == 0 and S.stop_runs() == 1
    th.join(30)
    assert not th.is_alive() and raised[0].startswith("stopped by SIGINT at step ")
    with open_run(tmp_path / "a.h5") as a:
        assert not a.complete and a.steps_done % 100 == 0 and a.checkpoint()[0] == a.steps_done
    assert S.stop_runs(later=True) == 0 and S.stopping() == signal.SIGINT
    other = Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy", seed=2)
    with pytest.raises(RunStopped, match="at step 0 of 100000; checkpoint at step 0"):
        other.run(100_000, 100, out=tmp_path / "b.h5", progress=False)


def _forked_child(seconds: float) -> int:
    """A child forked now that sleeps `seconds` and exits (os._exit: no Python shutdown)."""
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(0)
    return pid


def _holder(f, seconds: float) -> subprocess.Popen:
    """A program holding writer `f`'s descriptor for `seconds`: what a child started by
    another thread holds between its fork and its exec (passed on explicitly here)."""
    return subprocess.Popen(["sleep", str(seconds)], pass_fds=(f.id.get_vfd_handle(),))


def test_a_run_returns_its_file_while_a_forked_child_still_holds_the_lock(tmp_path, monkeypatch):
    """A child process started (by another thread, as the test suite's background notebooks
    are) while a run writes holds HDF5's descriptor, and its lock, between its fork and its
    exec; the run's reopen for reading failed with "another process is writing" (it did once
    in CI).  The reopen now waits for such a lock, up to 2 s."""
    from langevin_sim import simulation as S

    real, children = S._reopen, []

    def reopen(f, path, wait=2.0):       # a child holding the open descriptor for 0.3 s
        children.append(_holder(f, 0.3))
        return real(f, path, wait)
    monkeypatch.setattr(S, "_reopen", reopen)
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="numpy", seed=1)
    run = sim.run(20, 10, out=tmp_path / "r.h5", progress=False)
    assert run.complete and run.n_records == 3 and children[0].poll() is not None
    run.close()
    sim2 = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="numpy", seed=1)
    holder = []

    def held(f, path):
        holder.append(_holder(f, 0.5))
        return real(f, path, wait=0.0)
    monkeypatch.setattr(S, "_reopen", held)
    with pytest.raises(ls.RunFileError, match="holds the file's lock"):
        sim2.run(20, 10, out=tmp_path / "s.h5", progress=False)      # without the wait
    holder[0].wait()


def test_a_program_started_while_a_run_writes_does_not_hold_its_file(tmp_path, monkeypatch):
    """Run files are opened close-on-exec: a program exec'd while a run writes (os.system, or
    subprocess with close_fds=False) does not inherit HDF5's descriptor, so the run's file is
    free the moment the run is done, for this process and for others, however long the
    program lives."""
    from langevin_sim import simulation as S

    real, children = S._reopen, []

    def reopen(f, path):                 # no waiting for a lock
        children.append(subprocess.Popen(["sleep", "30"], close_fds=False))
        return real(f, path, wait=0.0)
    monkeypatch.setattr(S, "_reopen", reopen)
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="numpy", seed=1)
    try:
        run = sim.run(20, 10, out=tmp_path / "r.h5", progress=False)
        assert run.complete and run.n_records == 3
        run.close()
        code = (f"import langevin_sim as ls; r = ls.resume({str(tmp_path / 'r.h5')!r}, 40, "
                "progress=False); print(r.n_records)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split()[-1] == "5", out.stderr
        assert children[0].poll() is None                         # still alive
    finally:
        for c in children:
            c.kill()
            c.wait()


def test_a_child_forked_while_a_run_file_is_open_does_not_hold_it(tmp_path):
    """A child forked without exec (os.fork, multiprocessing's fork) while this process has a
    run file open would hold HDF5's descriptor, and its lock, for its whole life; run files
    are detached in the child at the fork (`io.reader._leave_in_child`), so once this process
    closes the file another one resumes it while the child still lives."""
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 4, backend="numpy", seed=1)
    sim.run(20, 10, out=tmp_path / "r.h5", progress=False).close()
    run = open_run(tmp_path / "r.h5")
    child = _forked_child(30)
    try:
        run.close()
        code = (f"import langevin_sim as ls; r = ls.resume({str(tmp_path / 'r.h5')!r}, 40, "
                "progress=False); print(r.n_records)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split()[-1] == "5", out.stderr
        assert os.waitpid(child, os.WNOHANG)[0] == 0                # still alive
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_fortran_ordered_data_set_resumes_bit_for_bit(tmp_path):
    """LinearRegression kept a Fortran-ordered A (X.T, pandas' to_numpy()) where the run
    file and so the rebuilt potential hold it in C order: BLAS rounded the gradients
    differently and the resume differed by 2e-16."""
    from langevin_sim.potentials import LinearRegression

    g = np.random.default_rng(0)
    pot = LinearRegression(n=40, d=17, A=np.asfortranarray(g.normal(size=(40, 17))),
                           y=g.normal(size=40), w_star=np.zeros(17))
    assert pot.A.flags.c_contiguous

    def sim():
        return Simulation(pot, OverdampedLangevin(0.01, 0.1), 8, backend="numpy", seed=3)
    with sim().run(20, 2, out=tmp_path / "u.h5", progress=False) as u:
        whole = np.asarray(u.positions)
    sim().run(10, 2, out=tmp_path / "r.h5", progress=False).close()
    with resume(tmp_path / "r.h5", steps=20, progress=False) as r:
        np.testing.assert_array_equal(np.asarray(r.positions), whole)


OBSERVER_MODULE = textwrap.dedent("""
    import numpy as np
    from langevin_sim import Observer

    class Radius(Observer):
        def __init__(self, scale):
            self.scale = scale

        def __call__(self, sim):
            return {"radius": self.scale * np.linalg.norm(sim.state["x"], axis=1)}

        def to_dict(self):
            return {"class": "Radius", "scale": self.scale}
""")


def test_a_user_observer_resumes_with_its_module_imported(tmp_path, monkeypatch):
    """A user observer with a to_dict() was written without complaint but its run could never
    be resumed ("unknown observer 'Radius'; known: ['SharpnessObserver']", --import or not);
    one without to_dict failed with an AttributeError at the run.  Observers subclass
    `Observer` (registered by class name); anything else is refused at once."""
    import importlib

    from langevin_sim.observers import REGISTRY

    (tmp_path / "my_observers.py").write_text(OBSERVER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("my_observers")

    def sim():
        return Simulation(DoubleWell(d=2), OverdampedLangevin(0.01, 1.0), 4, backend="numpy",
                          seed=1, observers=[mod.Radius(2.0)])
    with sim().run(8, 2, out=tmp_path / "u.h5", progress=False) as u:
        whole = np.asarray(u["radius"])
    sim().run(4, 2, out=tmp_path / "r.h5", progress=False).close()
    with resume(tmp_path / "r.h5", steps=8, progress=False) as r:
        np.testing.assert_array_equal(np.asarray(r["radius"]), whole)
    monkeypatch.delitem(REGISTRY, "Radius")      # a new process that did not import it
    with pytest.raises(RunFileError, match="unknown observer 'Radius'.*--import MODULE"):
        resume(tmp_path / "r.h5", steps=10, progress=False)
    for bad in (lambda sim: {}, np.zeros(3)):
        with pytest.raises(ConfigError, match="subclasses langevin_sim.observers.Observer"):
            Simulation(DoubleWell(d=2), OverdampedLangevin(0.01, 1.0), 4, observers=[bad])


def test_data_sets_built_by_a_product_are_stored_whole(tmp_path):
    """Labels computed by a BLAS product (LinearRegression's y = A w*, a teacher's outputs)
    round differently on another machine's BLAS: stored as digests, a run file written on one
    node was refused on another.  They are stored whole; the p-spin's couplings (drawn, no
    product) stay digests."""
    from langevin_sim.potentials import LinearRegression, SphericalPSpin, TeacherStudentMLP

    pots = {"lr": LinearRegression(n=300, d=4, seed=2),
            "ts": TeacherStudentMLP(n=16, d_in=3, hidden=4, teacher_hidden=2, n_val=5, seed=1),
            "ps": SphericalPSpin(N=8, p=3, seed=1)}
    for key, pot in pots.items():
        path = tmp_path / f"{key}.h5"
        Simulation(pot, OverdampedLangevin(1e-3, 0.1), 2, backend="numpy").run(
            2, 1, out=path, progress=False).close()
        with h5py.File(path, "r") as f:
            stored = {k for k, v in f["potential"].items() if not v.is_scale}
        assert stored == (set() if key == "ps" else set(pot.arrays())), (key, stored)
        with open_run(path) as run:
            for k, v in pot.arrays().items():
                np.testing.assert_array_equal(run.potential.arrays()[k], v, err_msg=k)


def test_a_tiny_run_makes_a_small_file_and_extends(tmp_path):
    """Record chunks of 1 MB whatever the run held: 3 records of 4 replicas made a 2.2 MB
    file (a scan of 200 tiny points wrote 420 MB).  Chunks now hold at most the planned
    records (64 rows at least); a resume past the plan adds chunks."""
    def sim():
        return Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 0.5), 4, backend="numpy",
                          seed=2)
    sim().run(50, 25, out=tmp_path / "small.h5", progress=False).close()
    assert os.path.getsize(tmp_path / "small.h5") < 200_000
    with h5py.File(tmp_path / "small.h5", "r") as f:
        assert f["records/energy"].chunks == (64, 4)
    with resume(tmp_path / "small.h5", steps=2_000, progress=False) as r, \
            sim().run(2_000, 25, progress=False) as whole:
        assert r.n_records == 81
        np.testing.assert_array_equal(np.asarray(r.positions), np.asarray(whole.positions))


def test_an_observer_must_be_its_own_registered_class(tmp_path, monkeypatch):
    """A subclass of SharpnessObserver stored itself as "SharpnessObserver" and resumed as
    the base class (then an HDF5 KeyError for its own series); an observer whose class was
    shadowed by another of the same name passed the check.  Each stores its own class name,
    and the check wants that name to rebuild that very class."""
    from langevin_sim.observers import REGISTRY
    from langevin_sim.potentials.sharpness import SharpnessObserver

    class TopEig(SharpnessObserver):
        pass
    assert TopEig(every=2).to_dict()["class"] == "TopEig"
    obs = TopEig(every=2)

    class TopEig(SharpnessObserver):       # noqa: F811  (a second class of the same name)
        pass
    with pytest.raises(ConfigError, match="subclasses langevin_sim.observers.Observer"):
        Simulation(DoubleWell(d=2), OverdampedLangevin(0.01, 1.0), 4, observers=[obs])
    monkeypatch.delitem(REGISTRY, "TopEig")


def test_a_run_from_an_init_array_keeps_it_and_starts_again_from_it(tmp_path):
    """A Simulation given an init array (a notebook's random starts) wrote only
    "init": "array": once its checkpoint slots had turned over, a file without position
    records could not be remade.  /init keeps the state it started from."""
    x0 = np.random.default_rng(5).normal(size=(16, 2))
    make = lambda init: Simulation(DoubleWell(d=2), UnderdampedLangevin(0.02), 16, init=init)
    run = make(x0).run(600, 100, out=tmp_path / "a.h5", record_positions=False,
                       checkpoint_every=100, progress=False)
    step, state = run.initial_state
    assert step == 0 and set(state) >= {"x", "p"} and run.checkpoint()[0] == 600
    np.testing.assert_array_equal(state["x"], x0)
    again = make(state["x"]).run(600, 100, out=tmp_path / "b.h5", record_positions=False,
                                 progress=False)
    np.testing.assert_array_equal(again.checkpoint()[1]["x"], run.checkpoint()[1]["x"])
    xr = pytest.importorskip("xarray")
    xr.open_dataset(tmp_path / "a.h5", group="init", engine="h5netcdf").close()
    assert make("default").run(10, 10, out=tmp_path / "c.h5", progress=False).initial_state is None
