"""Run files whose writes fail (a full disk, the file-size limit): nothing committed is lost."""
import errno
import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import langevin_sim as ls
from langevin_sim import Simulation, open_run, resume
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.io.writer import write_failed
from langevin_sim.potentials import DoubleWell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A real run file (HDF5's sec2 driver, as runs use) whose record chunk (1 MiB) cannot be
# written: the soft file-size limit is set to the file's length + 64 KiB after its first
# record, so metadata still fits but no new chunk does (EFBIG; Python ignores SIGXFSZ).  In a
# child process, since the limit is the process's; it prints what the test asserts.  (An
# in-memory file object through h5py's fileobj driver stood in before: after the injected
# failure that driver once lost its file object's methods and crashed the interpreter.)
FULL = textwrap.dedent("""
    import json, os, resource, sys
    import h5py
    import langevin_sim as ls
    from langevin_sim import Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.io.reader import lengthen
    from langevin_sim.io.writer import WriterThread
    from langevin_sim.potentials import DoubleWell

    path, how = sys.argv[1], sys.argv[2]
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 2048, backend="numpy",
                     seed=1)
    probe = sim.snapshot()
    writer = sim.create_writer(h5py.File(path, "w"), probe, 10, True, 100)
    out = {}
    if how == "thread":
        writer.write_block([probe], sim.state, 0, sim.diverged_step)
        sim.advance(10)
    writer.f.flush()
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + (64 << 10), hard))
    try:
        if how == "thread":
            thread = WriterThread(writer)
            thread.submit("write_block", [sim.snapshot()] * 64, sim.state, 10,
                          sim.diverged_step)
            thread.close()
        else:
            writer.write_block([probe], sim.state, 0, sim.diverged_step)
    except Exception as e:
        out = dict(type=type(e).__name__, message=str(e), path=str(writer.path))
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    try:
        writer.f.flush()
    except RuntimeError:              # HDF5's first flush after a failed one fails
        pass
    writer.f.close()
    lengthen(path)                    # as resume does first (the writer's metadata outran it)
    with h5py.File(path, "r") as f:  # the commit row on disk
        out["commit"] = [int(c) for c in f["commit"][:3]]
    print(json.dumps(out))
""")


def _full(tmp_path, how: str) -> dict:
    """Run FULL (`how`: "commit" writes the first record into the full file, "thread" a
    block through a WriterThread after one record fitted) and return what it printed."""
    script = tmp_path / "full.py"
    script.write_text(FULL)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run.h5"), how],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_record_chunk_that_cannot_be_written_is_never_committed(tmp_path):
    """A record chunk is written when the commit flushes and its failure raised there, before
    the marker: it was written when a dropped h5py dataset closed, whose error h5py only
    prints, and the marker then counted a record of zeros."""
    out = _full(tmp_path, "commit")
    assert out["type"] == "RunFileError" and "failed (File too large)" in out["message"], out
    assert out["commit"][0] == 0 and out["commit"][2] == -1


def test_a_failed_write_stops_the_writer_with_one_line_naming_the_fix(tmp_path):
    out = _full(tmp_path, "thread")
    assert out["type"] == "RunFileError"
    assert out["message"] == (
        f"writing {out['path']} failed (File too large): the records committed up to "
        "step 0 and the checkpoint at step 0 stand; raise the file-size limit (`ulimit -f`), "
        f"then: langevin-sim resume {out['path']}")
    assert out["commit"][:2] == [1, 0]
    run = resume(tmp_path / "run.h5", progress=False)
    assert run.complete and run.n_records == 11
    run.close()


class _Writer:
    """What `write_failed` reads of a RunWriter: its commit row, path and file."""
    def __init__(self, path, commit):
        self.path, self.commit, self.f = path, np.array(commit), h5py.File(path, "w")


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "make room on its file system"),
                                       (errno.EDQUOT, "make room in your quota")])
def test_a_full_disk_or_quota_names_its_fix(tmp_path, code, fix):
    writer = _Writer(str(tmp_path / "run.h5"), [3, 30, 1, 30, 0])
    e = write_failed(writer, OSError(code, os.strerror(code)))
    writer.f.close()
    assert str(e) == (f"writing {writer.path} failed ({os.strerror(code)}): the records "
                      f"committed up to step 30 and the checkpoint at step 30 stand; {fix}, "
                      f"then: langevin-sim resume {writer.path}")


# The run under a hard file-size limit, as `ulimit -f` sets it; the error caught, as a notebook
# would, then everything freed: the process must live on (exit 3), not crash (HDF5 freed a
# half-closed file's datasets: a segfault at the next garbage collection or at exit).
LIMITED = textwrap.dedent("""
    import gc, resource, sys
    from langevin_sim import RunFileError, Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.potentials import DoubleWell

    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 2048, backend="numpy",
                   seed=1).run(400, 2, out=sys.argv[1], progress=False, flush_seconds=0)
    except RunFileError as e:
        print(e, file=sys.stderr)
    gc.collect()
    print("alive", file=sys.stderr)
    sys.exit(3)
""")


def _limited(tmp_path, path, limit: int) -> str:
    """Run LIMITED on `path` under a hard file-size limit of `limit` bytes; its stderr."""
    script = tmp_path / "limited.py"
    script.write_text(LIMITED)
    proc = subprocess.run([sys.executable, str(script), str(path), str(limit)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 3 and proc.stderr.endswith("alive\n"), (proc.returncode,
                                                                       proc.stderr[-2000:])
    return proc.stderr


def test_a_run_stopped_by_the_file_size_limit_resumes_bit_for_bit(tmp_path):
    """A writer stopped by EFBIG leaves a file shorter than its superblock says (HDF5 flushed
    metadata allocating space it could not write): reading it names the fix, `resume`
    restores the length, checks the committed records lie within it, and continues."""
    ref = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 2048, backend="numpy",
                     seed=1).run(400, 2, out=tmp_path / "ref.h5", progress=False)
    path = tmp_path / "limited.h5"
    err = _limited(tmp_path, path, 6 << 20)
    assert f"writing {path} failed (File too large): the records committed up to step" in err
    size = os.path.getsize(path)
    assert size <= 6 << 20
    with pytest.raises(ls.RunFileError, match="shorter than HDF5 expects.*langevin-sim resume"):
        open_run(path)
    run = resume(path, progress=False)
    assert run.complete and run.resumed_from > 0
    for name in ("step", "time"):
        np.testing.assert_array_equal(getattr(run, name), getattr(ref, name))
    for name in ("energy", "positions"):
        np.testing.assert_array_equal(run[name][:], ref[name][:])
    run.close()

    cut = tmp_path / "cut.h5"                 # a copy cut short: committed records missing
    cut.write_bytes((tmp_path / "ref.h5").read_bytes()[: size])
    with pytest.raises(ls.RunFileError, match="is cut short: records/.*incomplete copy"):
        resume(cut, progress=False)
    assert os.path.getsize(cut) == size
    ref.close()



def test_a_file_size_limit_hit_before_the_first_commit_is_one_line_and_leaves_no_file(tmp_path):
    """Under a limit below the first commit's size the run's first write (before the file is
    published under its name) fails with the same one line, not HDF5's traceback, and the
    temporary file is removed."""
    path = tmp_path / "tiny.h5"
    err = _limited(tmp_path, path, 1 << 20)
    assert f"writing {path} failed (File too large): nothing was committed and the new file " \
           "is removed; raise the file-size limit (`ulimit -f`), then start the run again" in err
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == ["limited.py"]
