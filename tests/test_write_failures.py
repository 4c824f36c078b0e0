"""Run files whose writes fail (a full disk, the file-size limit): nothing committed is lost."""
import contextlib
import errno
import io
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
from langevin_sim.io.writer import WriterThread
from langevin_sim.potentials import DoubleWell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FullDisk(io.BytesIO):
    """An HDF5 file object whose writes of `big` bytes or more fail with ENOSPC once `big` is
    set: a full disk that still takes the metadata's small writes into blocks it holds, but
    no new record chunk (1 MiB here)."""
    big: int | None = None

    def write(self, b) -> int:
        if self.big is not None and len(b) >= self.big:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(b)

    # h5py's file-object driver calls these after a write raised, and then at times misses
    # the methods BytesIO inherits ("'FullDisk' object has no attribute 'flush'", then a
    # segfault at exit; once in CI): defined here, on the class itself
    def truncate(self, size=None) -> int:
        return super().truncate(size)

    def flush(self) -> None:
        return super().flush()


def _close(writer, fh: FullDisk) -> None:
    """Make room again and close the writer's file (HDF5's first flush after a failed one
    fails; an unclosed broken file would crash the interpreter at exit)."""
    fh.big = None
    with contextlib.suppress(RuntimeError):
        writer.f.flush()
    writer.f.close()


def _full_writer():
    """(simulation of 2048 replicas, its first record, a file object, its run writer)."""
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 2048, backend="numpy",
                     seed=1)
    fh = FullDisk()
    probe = sim.snapshot()
    writer = sim.create_writer(h5py.File(fh, "w"), probe, 10, True, 100)
    return sim, probe, fh, writer


def test_a_record_chunk_that_cannot_be_written_is_never_committed():
    """A record chunk is written when the commit flushes and its failure raised there, before
    the marker: it was written when a dropped h5py dataset closed, whose error h5py only
    prints, and the marker then counted a record of zeros."""
    sim, probe, fh, writer = _full_writer()
    fh.big = 1 << 16
    with pytest.raises(OSError, match="No space left"):
        writer.write_block([probe], sim.state, 0, sim.diverged_step)
    fh.big = None
    assert writer.f["commit"][0] == 0 and writer.f["commit"][2] == -1
    _close(writer, fh)


def test_a_failed_write_stops_the_writer_with_one_line_naming_the_fix():
    sim, probe, fh, writer = _full_writer()
    writer.write_block([probe], sim.state, 0, sim.diverged_step)
    sim.advance(10)
    thread = WriterThread(writer)
    fh.big = 1 << 16
    thread.submit("write_block", [sim.snapshot()] * 64, sim.state, 10, sim.diverged_step)
    with pytest.raises(ls.RunFileError) as e:
        thread.close()
    assert str(e.value) == (
        f"writing {writer.path} failed (No space left on device): the records committed up to "
        "step 0 and the checkpoint at step 0 stand; make room on its file system, then: "
        f"langevin-sim resume {writer.path}")
    assert list(writer.f["commit"][:2]) == [1, 0]
    _close(writer, fh)


LIMITED = textwrap.dedent("""
    import resource, sys
    from langevin_sim import Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.potentials import DoubleWell

    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 2048, backend="numpy",
               seed=1).run(400, 2, out=sys.argv[1], progress=False, flush_seconds=0)
""")


def test_a_run_stopped_by_the_file_size_limit_resumes_bit_for_bit(tmp_path):
    """A writer stopped by EFBIG leaves a file shorter than its superblock says (HDF5 flushed
    metadata allocating space it could not write): reading it names the fix, `resume`
    restores the length, checks the committed records lie within it, and continues."""
    ref = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 2048, backend="numpy",
                     seed=1).run(400, 2, out=tmp_path / "ref.h5", progress=False)
    path = tmp_path / "limited.h5"
    script = tmp_path / "limited.py"
    script.write_text(LIMITED)
    proc = subprocess.run([sys.executable, str(script), str(path), str(6 << 20)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr[-2000:]
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

