"""Recording: records written by the writer thread, batching, widening float32 states by
blocks, errors in the thread, and diverged_step written only when it changes."""
import os
import shutil
import subprocess
import threading

import h5py
import numpy as np
import pytest

from langevin_sim import Simulation, open_run, resume, simulation
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.errors import DivergenceWarning
from langevin_sim.io import direct, recycle, writer
from langevin_sim.io.writer import RunWriter
from langevin_sim.potentials import DoubleWell, LinearRegression


def lr_sim(dtype="float64", M=7):
    return Simulation(LinearRegression(n=20, d=3, seed=2), SGD(0.05, 4, momentum=0.5, temperature=1e-2),
                      M, dtype=dtype, seed=4)


def dw_sim():
    """Replicas leave |x| <= 1.6 (flagged as diverged) at steps 35, 43, 68 and 129."""
    return Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), 40, seed=3,
                      divergence_bound=1.6)


def writer_threads():
    return [t for t in threading.enumerate() if t.name == "langevin-sim writer"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_records_hold_the_state_at_each_record_step(tmp_run, dtype, monkeypatch):
    """Written on the writer thread (the first with the layout), each record equals an independent twin's positions at that
    step, its float64 energy and observables; small records go in batches."""
    calls = []
    real = RunWriter.append

    def append(self, records):
        calls.append((threading.current_thread().name, len(records)))
        real(self, records)

    monkeypatch.setattr(RunWriter, "append", append)
    with lr_sim(dtype).run(200, 10, out=tmp_run, progress=False) as run:
        assert run.complete and run.n_records == 21 and not writer_threads()
        twin = lr_sim(dtype)
        for i in range(21):
            x = twin.state["x"]
            assert run.step[i] == twin.step
            np.testing.assert_array_equal(run.positions[i], x)
            x64 = x.astype(np.float64)
            np.testing.assert_allclose(run.energy[i], twin.potential.energy(x64), rtol=1e-10)
            np.testing.assert_allclose(run["weight_error"][i],
                                       ((x64 - twin.potential.w_star) ** 2).sum(axis=1), rtol=1e-12)
            twin.advance(10)
    # the first record is committed with the file's layout, before the writer thread starts
    assert calls[0] == ("MainThread", 1)
    assert {name for name, _ in calls[1:]} == {"langevin-sim writer"}
    assert sum(n for _, n in calls) == 21 and max(n for _, n in calls) > 1


def test_batched_and_committed_records_agree(tmp_path):
    """Records gathered into batches (one commit) and committed one by one give equal files."""
    a = lr_sim().run(80, 1, out=tmp_path / "a.h5", progress=False)
    b = lr_sim().run(80, 1, out=tmp_path / "b.h5", progress=False, flush_seconds=0.0)
    with a, b:
        assert a.n_records == b.n_records == 81
        np.testing.assert_array_equal(a.step, b.step)
        np.testing.assert_array_equal(a.time, b.time)
        for name in ("energy", "positions", "weight_error"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_large_rows_are_written_as_whole_chunks(tmp_path, dtype, monkeypatch):
    """Rows of a chunk each (0.5-1 MiB and a few bytes: an unaligned tail) go in as whole
    chunks, past the page cache where O_DIRECT serves (here in SWMR mode): the same records as
    through HDF5's chunk writes (O_DIRECT off) and its filtered path, and the twin's state;
    checkpoints of the state are written the same way: a run resumed from one to a later
    target writes the records the uninterrupted run wrote."""
    def sim():
        return Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), (1 << 17) + 3,
                          dtype=dtype, seed=1)

    direct, whole = [], []
    write, write_whole = writer.DirectRows.write, writer.DirectRows.write_whole
    monkeypatch.setattr(writer.DirectRows, "write",
                        lambda self, *a: direct.append(write(self, *a)) or direct[-1])
    monkeypatch.setattr(writer.DirectRows, "write_whole",
                        lambda self, *a: whole.append(write_whole(self, *a)) or whole[-1])
    a = sim().run(20, 10, out=tmp_path / "a.h5", progress=False, swmr=True)
    b = sim().run(20, 10, out=tmp_path / "b.h5", progress=False, compression="gzip")
    sim().run(10, 10, out=tmp_path / "d.h5", progress=False).close()
    d = resume(tmp_path / "d.h5", steps=20)
    with monkeypatch.context() as m:
        m.setattr(writer.DirectRows, "open", classmethod(lambda cls, f: None))
        c = sim().run(20, 10, out=tmp_path / "c.h5", progress=False)
    twin = sim()
    twin.advance(20)
    with a, b, c, d, h5py.File(tmp_path / "a.h5", "r") as f, \
            h5py.File(tmp_path / "b.h5", "r") as g:
        assert all(writer._row_is_chunk(f["records"][k]) for k in ("positions", "energy"))
        assert not writer._row_is_chunk(g["records/positions"])
        for other in (b, c, d):
            np.testing.assert_array_equal(a.positions[:], other.positions[:])
            np.testing.assert_array_equal(a.energy[:], other.energy[:])
        np.testing.assert_array_equal(a.positions[-1], twin.state["x"])
        assert a.n_records == 3 and np.isfinite(a.energy[:]).all()
    if direct:   # the file system takes O_DIRECT (not tmpfs): every chunk row went that way,
        assert len(direct) == 2 * (3 + 3) and all(direct), direct   # and every checkpoint's x
        assert whole and all(whole), whole    # (d resumed from one: its records equal a's)


def test_large_potential_arrays_and_pieces_go_past_the_page_cache(tmp_path, monkeypatch):
    """A potential's large array (a p-spin's own coupling tensor, 2 MiB) is allocated at layout and
    written like checkpoints (`write_whole`); writes split into pieces of a small buffer
    (PIECE of 8 KiB) give the file an unsplit write gives."""
    from langevin_sim.potentials import SphericalPSpin

    whole = []
    write_whole = writer.DirectRows.write_whole
    monkeypatch.setattr(writer.DirectRows, "write_whole",
                        lambda self, ds, v: whole.append((ds.name, write_whole(self, ds, v)))
                        or whole[-1][1])

    def sim():
        return Simulation(SphericalPSpin(64, 3, seed=2, J=J), OverdampedLangevin(1e-2, 0.5),
                          2048, seed=1)

    J = SphericalPSpin(64, 3, seed=2).J     # passed in: stored (seed-drawn ones are not)

    a = sim().run(10, 5, out=tmp_path / "a.h5", progress=False)
    with monkeypatch.context() as m:
        m.setattr(direct, "PIECE", 8192)
        b = sim().run(10, 5, out=tmp_path / "b.h5", progress=False)
    with a, b:
        np.testing.assert_array_equal(a.potential.J, sim().potential.J)
        np.testing.assert_array_equal(b.potential.J, a.potential.J)
        for name in ("energy", "positions"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    assert ("/potential/J", True) in whole or not any(ok for _, ok in whole)


def test_recycler_takes_back_only_what_it_handed_out():
    """Large arrays come back to the free list once given (any nesting), small ones and
    foreign arrays are never kept, and a buffer is handed out again only after its return."""
    r = recycle.Recycler(min_bytes=1024)
    a = r.copy(np.arange(256.0))
    small = r.empty(3, np.float64)
    foreign = np.empty(256)
    assert r.allocated == 1 and r.empty(256, np.float64) is not a and r.allocated == 2
    r.give([{"x": a, "s": small}, (foreign,)])
    b = r.empty((256,), "float64")
    assert b is a and r.allocated == 2
    r.give(b)
    r.give(b)          # a second return of the same handing adds nothing
    assert r.empty(256, np.float64) is a and r.empty(256, np.float64) is not a
    assert r.empty((16, 16), np.float64) is not a     # another shape: another buffer
    held = [r.empty(256, np.float64) for _ in range(3)]
    r.give(held)
    r.trim(1)          # what a simulation keeps between runs: the first one given back
    (kept,) = r._free[((256,), np.dtype(np.float64).str)]
    assert kept is held[0]


@pytest.mark.parametrize("flush", [0.0, 1.0])
def test_large_records_reuse_buffers_written_before_reuse(tmp_path, flush, monkeypatch):
    """Records and checkpoints of a large state (1 MiB arrays) are copied into a few recycled
    buffers, each reused only after the writer thread wrote it: every record equals the
    twin's state at its step (committed one by one with checkpoints, or in batches)."""
    made = []
    init = recycle.Recycler.__init__
    monkeypatch.setattr(recycle.Recycler, "__init__",
                        lambda self, *a, **k: init(self, *a, **k) or made.append(self))

    def sim():
        return Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), 1 << 17, seed=5)

    s, twin = sim(), sim()
    with s.run(40, 1, out=tmp_path / "a.h5", progress=False, flush_seconds=flush) as run:
        for i in range(41):
            np.testing.assert_array_equal(run.positions[i], twin.state["x"])
            np.testing.assert_allclose(run.energy[i],
                                       twin.potential.energy(twin.state["x"])[:], rtol=1e-12)
            twin.advance(1)
    (r,) = made
    assert 0 < r.allocated <= 24, r.allocated     # 40 records x 2 arrays (+ checkpoints)
    # the next run of the same simulation hands out again the buffers the first one kept
    kept = [a for free in r._free.values() for a in free]
    assert kept and all(len(free) <= 2 for free in r._free.values())
    handed = []
    empty = r.empty
    r.empty = lambda *a: handed.append(empty(*a)) or handed[-1]
    twin = sim()
    twin.advance(40)
    with s.run(20, 1, out=tmp_path / "b.h5", progress=False, flush_seconds=flush) as run:
        for i in range(21):
            np.testing.assert_array_equal(run.positions[i], twin.state["x"])
            twin.advance(1)
    assert made == [r] and all(any(a is h for h in handed) for a in kept)


@pytest.mark.skipif(shutil.which("fincore") is None or not hasattr(os, "posix_fadvise"),
                    reason="needs Linux fadvise and util-linux fincore")
def test_committed_pages_leave_the_page_cache(tmp_path):
    """After each commit the writer hands the file's written pages back to the kernel: of a
    ~10 MB run file (ten 1 MiB records), at most the last records' pages stay cached."""
    path = tmp_path / "a.h5"
    if subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                      text=True).stdout.strip() in ("tmpfs", "ramfs"):
        pytest.skip("a memory file system has no pages to drop")
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), 1 << 17, seed=1)
    sim.run(100, 10, out=path, progress=False, flush_seconds=0.0).close()
    cached = int(subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                                 str(path)], capture_output=True, text=True, check=True).stdout)
    assert os.path.getsize(path) > 10 << 20
    assert cached < 4 << 20, cached


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float32_states_are_widened_by_blocks(monkeypatch, dtype):
    """Observables of a float32 state, evaluated on float64 blocks of rows, equal the
    whole-state evaluation; the record's arrays are copies."""
    sim = lr_sim(dtype, M=11)
    sim.advance(30)
    monkeypatch.setattr(simulation, "_WIDEN_BYTES", 3 * 8 * 3)   # blocks of 3 rows
    rec = sim.snapshot()
    x64 = sim.state["x"].astype(np.float64)
    np.testing.assert_array_equal(rec["weight_error"], sim.potential.observables(x64)["weight_error"])
    rec["positions"][:] = np.nan
    assert np.isfinite(sim.state["x"]).all()
    assert simulation._in_float64(DoubleWell(d=3), sim.state["x"], rec["energy"]) == {}


def test_error_in_the_writer_thread_reaches_the_caller(tmp_run, monkeypatch):
    """The writer thread's error is raised by `run`, the thread is gone, the file keeps every
    commit before it and resumes to the uninterrupted run's records."""
    real, calls = RunWriter.commit_block, []

    def failing(self, *args, **kw):
        calls.append(1)
        if len(calls) == 4:     # the third after the layout's
            raise OSError("disk full")
        real(self, *args, **kw)

    monkeypatch.setattr(RunWriter, "commit_block", failing)
    with pytest.raises(OSError, match="disk full"):
        lr_sim().run(300, 10, out=tmp_run, progress=False, flush_seconds=0.0)
    monkeypatch.setattr(RunWriter, "commit_block", real)
    assert not writer_threads()
    with open_run(tmp_run) as run:
        assert run.steps_done == 20 and run.n_records == 3 and not run.complete
    with resume(tmp_run, progress=False) as done, \
            lr_sim().run(300, 10, out=tmp_run.with_name("ref.h5"), progress=False) as ref:
        np.testing.assert_array_equal(done.positions[:], ref.positions[:])
        np.testing.assert_array_equal(done.energy[:], ref.energy[:])


@pytest.mark.parametrize("stop_at", [5, 8, 14])
def test_diverged_step_in_checkpoints_as_replicas_diverge(tmp_run, monkeypatch, stop_at):
    """diverged_step is rewritten only when it changed, yet every committed checkpoint slot
    and /records/diverged_step hold the step counts of their step, slots alternating."""
    real, calls = RunWriter._commit, []

    def dying(self, commit):
        calls.append(1)
        if len(calls) == stop_at + 1:     # the layout's commit comes first
            raise RuntimeError("killed")
        real(self, commit)

    monkeypatch.setattr(RunWriter, "_commit", dying)
    with pytest.raises(RuntimeError, match="killed"):
        dw_sim().run(300, 10, out=tmp_run, progress=False, flush_seconds=0.0)
    monkeypatch.setattr(RunWriter, "_commit", real)
    with open_run(tmp_run) as run:
        step, _, dstep = run.checkpoint()
        ref = dw_sim()
        ref.advance(step)
        assert step == 10 * (stop_at - 1)
        np.testing.assert_array_equal(dstep, ref.diverged_step)
    with pytest.warns(DivergenceWarning, match="4 of 40 replicas diverged"):
        resume(tmp_run, progress=False).close()
    with h5py.File(tmp_run) as f:
        ref.advance(300 - step)
        assert (ref.diverged_step >= 0).sum() == 4
        for path in ("records/diverged_step", "checkpoint/slot0/diverged_step",
                     "checkpoint/slot1/diverged_step"):
            np.testing.assert_array_equal(f[path][()], ref.diverged_step, err_msg=path)


def test_a_ctrl_c_while_the_writer_thread_closes_waits_for_the_call_in_flight():
    """A second Ctrl-C landing in `WriterThread.close`'s Thread.join left Python 3.11's thread
    marked stopped while it still wrote (the join released the running thread's lock): the
    stop line named an older checkpoint than the file held, and in 1 of 8 tries the process
    hung at exit on h5py's lock.  close() now waits on an Event: interrupted, it raises; the
    abort that follows waits for the call in flight (a further Ctrl-C too) and drops the
    queued ones."""
    import signal
    import time

    class Slow:
        def __init__(self):
            self.done = []

        def work(self, x):
            time.sleep(1.5)
            self.done.append(x)

    slow = Slow()
    thread = writer.WriterThread(slow)
    thread.submit("work", 1)
    thread.submit("work", 2)
    t0 = time.monotonic()
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        thread.close()
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    thread.close(abort=True)
    assert slow.done == [1] and time.monotonic() - t0 >= 1.4
    thread._thread.join(5)
    assert not thread._thread.is_alive()
