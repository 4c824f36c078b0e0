"""Run files whose writes fail (a full disk, the file-size limit): nothing committed is lost."""
import errno
import io

import h5py
import pytest

import langevin_sim as ls
from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.io.writer import WriterThread
from langevin_sim.potentials import DoubleWell


class FullDisk(io.BytesIO):
    """An HDF5 file object whose writes of `big` bytes or more fail with ENOSPC once `big` is
    set: a full disk that still takes the metadata's small writes into blocks it holds, but
    no new record chunk (1 MiB here)."""
    big: int | None = None

    def write(self, b) -> int:
        if self.big is not None and len(b) >= self.big:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(b)


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


def test_a_failed_write_stops_the_writer_with_one_line_naming_the_fix():
    sim, probe, fh, writer = _full_writer()
    writer.write_block([probe], sim.state, 0, sim.diverged_step)
    sim.advance(10)
    thread = WriterThread(writer)
    fh.big = 1 << 16
    thread.submit("write_block", [sim.snapshot()] * 64, sim.state, 10, sim.diverged_step)
    with pytest.raises(ls.RunFileError) as e:
        thread.close()
    fh.big = None
    assert str(e.value) == (
        f"writing {writer.path} failed (No space left on device): the records committed up to "
        "step 0 and the checkpoint at step 0 stand; make room on its file system, then: "
        f"langevin-sim resume {writer.path}")
    assert list(writer.f["commit"][:2]) == [1, 0]
