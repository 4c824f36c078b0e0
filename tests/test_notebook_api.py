"""The Python API as a notebook uses it: a mistake gets one clear error naming the fix, never a
deep NumPy/h5py traceback or a silently wrong array."""
import numpy as np
import pytest

from langevin_sim import RunFileError, Simulation, open_run, resume
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.potentials import DoubleWell


def small_run(out=None, steps=100, replicas=4):
    return Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), replicas,
                      backend="numpy", seed=1).run(steps, 10, out=out)


def test_indexing_a_run_by_a_non_series_name_is_refused():
    """`run["diverged_step"]` (M,) used to come back as a Series of n_records rows: its
    `shape` said (11,) while the array held the 4 replicas."""
    run = small_run()
    with pytest.raises(KeyError, match=r"run\.diverged_step"):
        run["diverged_step"]
    with pytest.raises(KeyError, match="no record series 'replica'"):
        run["replica"]
    assert run["step"].shape == (11,)
    assert np.asarray(run["step"]).shape == (11,)


def test_membership_test_on_a_run():
    run = small_run()
    assert "energy" in run and "positions" in run
    assert "sharpness" not in run and "diverged_step" not in run


def test_a_closed_run_says_so(tmp_path):
    run = small_run(out=tmp_path / "r.h5")
    run.close()
    with pytest.raises(RunFileError, match=r"closed.*open_run"):
        run.n_records
    with pytest.raises(RunFileError, match="closed"):
        run.positions
    assert "closed" in repr(run)
    mem = small_run()
    mem.close()
    with pytest.raises(RunFileError, match="in memory"):
        mem.energy

def test_resume_while_this_process_reads_the_file(tmp_path):
    path = tmp_path / "r.h5"
    Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy",
               seed=1).run(50, 10, out=path).close()
    reader = open_run(path)
    with pytest.raises(RunFileError, match=r"this process.*close\(\)"):
        resume(path, steps=100)
    reader.close()
    assert resume(path, steps=100).steps_done == 100


def test_series_reversed_and_unsorted_record_indices():
    run = small_run()
    x = np.asarray(run.positions)
    assert np.array_equal(run.positions[::-1], x[::-1])
    assert np.array_equal(run.positions[::-3, :, 0], x[::-3, :, 0])
    assert np.array_equal(run.positions[[3, 1, 3]], x[[3, 1, 3]])
    assert np.array_equal(run.energy[np.array([-1, 0])], np.asarray(run.energy)[[-1, 0]])

def test_reprs_say_what_a_notebook_holds(tmp_path):
    run = small_run(out=tmp_path / "r.h5")
    text = repr(run)
    assert "r.h5" in text and "11 records" in text and "complete" in text
    assert "positions(11, 4, 1)" in text
    assert repr(run.energy) == "Series('energy', shape=(11, 4), dtype=float64)"
    assert run.energy.ndim == 2
