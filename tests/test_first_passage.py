"""First-passage observer: updated every step, NumPy = Numba bit for bit, partition- and
resume-invariant, consistent in a killed file, equal to a brute-force recount."""
import warnings

import h5py
import numpy as np
import pytest

from langevin_sim import Simulation, open_run
from langevin_sim.backends import numba_backend
from langevin_sim.dynamics import OBABO, OverdampedLangevin, UnderdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.first_passage import NAMES, STATE_KEYS, Ball, FirstPassage, HalfSpace
from langevin_sim.io.writer import RunWriter
from langevin_sim.potentials import DoubleWell, Quadratic
from langevin_sim.simulation import resume

from .conftest import both_backends


def regions(d, seed=0):
    """A random half-space through the barrier region and a ball around a well corner."""
    g = np.random.default_rng(seed)
    return FirstPassage(HalfSpace(g.normal(size=d), 0.1 * g.normal(), "plane"),
                        Ball(np.ones(d), 0.8, "corner"), HalfSpace(np.eye(d)[0], 0.0, "right"))


def random_init(M, d, seed=1):
    return np.random.default_rng(seed).normal(scale=1.2, size=(M, d))


DYNAMICS = {"overdamped": OverdampedLangevin(0.01, 0.5),
            "baoab": UnderdampedLangevin(0.03, 1.0, 0.5), "obabo": OBABO(0.03, 1.0, 0.5)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("dyn", sorted(DYNAMICS))
def test_numba_matches_numpy_bit_for_bit(dyn, d, dtype):
    """Random starts, three regions, M = 301 (two uneven tiles of 256 lanes for d = 1, four
    for d = 3), steps in uneven calls: identical first-passage arrays, and they moved."""
    M = 301
    out = both_backends(DoubleWell(d=d, tilt=0.1), DYNAMICS[dyn], M, 377, 23, seed=3,
                        dtype=dtype, init=random_init(M, d), first_passage=regions(d))
    a, b = out["numpy"].state, out["numba"].state
    for k in STATE_KEYS:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    assert (a["fp_crossings"] > 0).mean() > 0.2 and (a["fp_first_entry"] > 0).any()
    np.testing.assert_allclose(b["x"], a["x"], rtol=1e-5 if dtype == "float32" else 1e-12)


def test_observer_changes_no_trajectory_and_frozen_replicas_stop():
    """With and without the observer the states are identical; a diverging replica's
    entries stop at its diverged step on both backends."""
    M, d = 40, 2
    init = random_init(M, d)
    init[[3, 17]] = 40.0   # these diverge within a few steps at this step size
    dyn = OverdampedLangevin(0.02, 0.5)
    for backend in ("numpy", "numba"):
        ref = Simulation(DoubleWell(d=d), dyn, M, backend=backend, seed=5, init=init)
        obs = Simulation(DoubleWell(d=d), dyn, M, backend=backend, seed=5, init=init,
                         first_passage=regions(d))
        ref.advance(300)
        obs.advance(300)
        np.testing.assert_array_equal(obs.state["x"], ref.state["x"])
        np.testing.assert_array_equal(obs.diverged_step, ref.diverged_step)
        dead = np.flatnonzero(obs.diverged_step >= 0)
        assert set(dead) == {3, 17}
        assert np.all(obs.state["fp_last_crossing"][dead] < obs.diverged_step[dead, None])
    both = both_backends(DoubleWell(d=d), dyn, M, 300, seed=5, init=init, first_passage=regions(d))
    for k in STATE_KEYS:
        np.testing.assert_array_equal(both["numba"].state[k], both["numpy"].state[k], err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_partition_invariance(backend):
    M, d = 23, 2
    init = random_init(M, d)
    kw = dict(backend=backend, seed=9, first_passage=regions(d))
    whole = Simulation(DoubleWell(d=d), DYNAMICS["baoab"], M, init=init, **kw)
    whole.advance(400)
    parts = [Simulation(DoubleWell(d=d), DYNAMICS["baoab"], n, first_replica=r0,
                        init=init[r0:r0 + n], **kw) for r0, n in ((0, 10), (10, 13))]
    for p in parts:
        p.advance(400)
    for k in STATE_KEYS:
        np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]), whole.state[k])


def brute_force(xs, normal, offset):
    """Definitions of `first_passage` recomputed from a trajectory xs (n+1, M, d)."""
    s = sum(normal[i] * xs[:, :, i] for i in range(xs.shape[2]))
    inside = s > offset                                        # (n+1, M)
    change = inside[1:] != inside[:-1]
    first = lambda mask: np.where(mask.any(0), mask.argmax(0), -1)  # noqa: E731
    last = np.where(change.any(0), change.shape[0] - change[::-1].argmax(0), -1)
    return {"first_entry_step": first(inside), "first_exit_step": first(~inside),
            "last_crossing_step": last, "crossings": change.sum(0), "inside": inside[-1] * 1}


def test_counts_match_a_brute_force_recount_of_the_reference_trajectory():
    """The NumPy reference stepped one step at a time gives the trajectory; recounting first
    entries, exits, crossings in pure NumPy gives the numba observer's arrays."""
    M, d, n = 50, 2, 600
    normal, offset = np.array([1.0, 0.5]), 0.05
    fp = FirstPassage(HalfSpace(normal, offset, "h"))
    dyn = OverdampedLangevin(0.01, 0.6)
    init = random_init(M, d, seed=4)
    ref = Simulation(DoubleWell(d=d), dyn, M, backend="numpy", seed=2, init=init)
    xs = [ref.state["x"].copy()]
    for _ in range(n):
        ref.advance(1)
        xs.append(ref.state["x"].copy())
    want = brute_force(np.array(xs), normal, offset)
    sim = Simulation(DoubleWell(d=d), dyn, M, backend="numba", seed=2, init=init, first_passage=fp)
    sim.advance(n)
    for key, name in zip(STATE_KEYS, NAMES):
        np.testing.assert_array_equal(sim.state[key][:, 0], want[name], err_msg=name)
    assert want["crossings"].sum() > 100


def test_fused_pairs_without_the_update_fall_back_to_the_reference_with_a_warning(monkeypatch):
    monkeypatch.setattr(numba_backend, "_warned", set())
    pot = Quadratic(spectrum=[0.5, 2.0], seed=1)
    fp = FirstPassage(HalfSpace([1.0, 0.0], 0.2, "h"))
    with pytest.warns(UserWarning, match="does not update first-passage observers"):
        out = both_backends(pot, OverdampedLangevin(0.05, 1.0), 7, 120, seed=1, first_passage=fp)
    for k in out["numpy"].state:
        np.testing.assert_array_equal(out["numba"].state[k], out["numpy"].state[k], err_msg=k)
    assert out["numba"].state["fp_crossings"].sum() > 0
    with warnings.catch_warnings():   # without an observer: the fused kernel, no warning
        warnings.simplefilter("error")
        Simulation(pot, OverdampedLangevin(0.05, 1.0), 7, backend="numba", seed=1).advance(10)


def test_config_errors():
    with pytest.raises(ConfigError, match="d=1"):
        Simulation(DoubleWell(d=1), OverdampedLangevin(), 4,
                   first_passage=FirstPassage(HalfSpace([1.0, 0.0], 0.0)))
    with pytest.raises(ConfigError, match="unique"):
        FirstPassage(HalfSpace([1.0]), Ball([0.0], 1.0))
    with pytest.raises(ConfigError, match="radius"):
        Ball([0.0], -1.0)
    with pytest.raises(ConfigError, match="zero"):
        HalfSpace([0.0, 0.0])


def fp_sim(backend="numba", M=37):
    fp = FirstPassage(HalfSpace([1.0], 0.0, "right"), Ball([-1.0], 0.25, "left"))
    return Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 0.4), M, backend=backend, seed=2,
                      first_passage=fp)


def assert_same_fp(a, b):
    for name in NAMES + ("diverged_step",):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.step == b.step and a.labels == b.labels


def test_run_file_layout_and_reader(tmp_run):
    sim = fp_sim()
    with sim.run(1500, 100, out=tmp_run, progress=False) as run:
        fpd = run.first_passage
        assert fpd.labels == ("right", "left") and fpd.step == 1500 and fpd.dt == 0.01
        for key, name in zip(STATE_KEYS, NAMES):
            np.testing.assert_array_equal(getattr(fpd, name), sim.state[key])
        assert run.config["first_passage"]["regions"][1] == {"class": "Ball", "center": [-1.0],
                                                             "radius": 0.25, "label": "left"}
        assert "right" in fpd.table()
    with h5py.File(tmp_run, "r") as f:
        g = f["first_passage"]
        assert int(g["step"][()]) == 1500
        for name in NAMES:   # the plain-HDF5 view equals the committed checkpoint's arrays
            np.testing.assert_array_equal(g[name][()], getattr(fpd, name))
            assert [d[0].name for d in g[name].dims] == ["/first_passage/replica",
                                                         "/first_passage/region"]
        assert [s.decode() for s in g["label"][()]] == ["right", "left"]
    with Simulation(DoubleWell(d=1), OverdampedLangevin(), 3).run(10, 5) as plain:
        assert plain.first_passage is None and "first_passage" not in plain.config


def test_resume_is_bit_for_bit(tmp_path):
    whole = fp_sim().run(2000, 100, out=tmp_path / "whole.h5", progress=False)
    fp_sim().run(700, 100, out=tmp_path / "part.h5", progress=False).close()
    with resume(tmp_path / "part.h5", steps=2000, progress=False) as run:
        assert_same_fp(run.first_passage, whole.first_passage)
        np.testing.assert_array_equal(run.positions[:], whole.positions[:])
    whole.close()


def test_killed_between_data_and_marker_stays_consistent_and_resumes(tmp_path, monkeypatch):
    """A kill after a block's data (records, /first_passage, the other checkpoint slot) is
    written but before its marker: the reader's first-passage arrays are the committed
    checkpoint's, equal to an uninterrupted run's at that step; resume finishes exactly."""
    path = tmp_path / "killed.h5"
    real, calls = RunWriter._commit, []

    def dying(self, commit):
        calls.append(1)
        if len(calls) == 4:     # the third after the layout's
            self.f.flush()   # the block's data reach the file, the marker does not
            raise RuntimeError("killed")
        real(self, commit)

    monkeypatch.setattr(RunWriter, "_commit", dying)
    with pytest.raises(RuntimeError, match="killed"):
        fp_sim().run(3000, 100, out=path, progress=False, flush_seconds=0.0)
    monkeypatch.setattr(RunWriter, "_commit", real)
    with h5py.File(path, "r") as f:
        behind = int(f["commit"][3]) < int(f["first_passage/step"][()])
    with open_run(path) as run:
        got, step = run.first_passage, run.checkpoint()[0]
        assert behind and step == run.steps_done == 200 and got.step == step
    ref = fp_sim()
    ref.advance(step)
    for key, name in zip(STATE_KEYS, NAMES):
        np.testing.assert_array_equal(getattr(got, name), ref.state[key], err_msg=name)
    with resume(path, progress=False) as run, fp_sim().run(3000, 100, out=tmp_path / "ref.h5",
                                                            progress=False) as full:
        assert_same_fp(run.first_passage, full.first_passage)
