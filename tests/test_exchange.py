"""Replica exchange (langevin_sim.exchange): physics against the exact Boltzmann law,
partition invariance, crash-safe resume, the exchange log and its acceptance rates."""
import os

import numpy as np
import pytest

import langevin_sim
from langevin_sim import ConfigError, Simulation
from langevin_sim.errors import UnrecordedStepsWarning
from langevin_sim.dynamics import (MALA, OBABO, SGD, LeimkuhlerMatthews, OverdampedLangevin,
                                   Schedule, UnderdampedLangevin)
from langevin_sim.exchange import ExchangeRun, ReplicaExchange, log, open_exchange
from langevin_sim.potentials import DoubleWell, LinearRegression, Quadratic

from .conftest import assert_within_se

LADDER = [0.1, 0.178, 0.316, 0.562, 1.0]


@pytest.fixture(autouse=True)
def one_numba_thread():
    """The ladders here are one kernel tile per rung: a second thread only adds the wake-up
    of a parallel region per call (measured 5-25 ms on a loaded 2-core machine, against
    0.08 ms on one thread); results do not depend on the thread count."""
    import numba

    n = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(n)


def tilted_well():
    return DoubleWell(d=1, barrier=1.0, tilt=0.1)


def left_fraction(pot, T: float) -> float:
    """Exact P(x < 0) under exp(-U/T) by quadrature."""
    y = np.linspace(-3.0, 3.0, 200_001)
    u = pot.marginal_energy(y)
    w = np.exp(-(u - u.min()) / T)
    return float(w[y < 0].sum() / w.sum())


def occupancy(positions, burn: int) -> tuple[float, float]:
    """Mean fraction of records with x_1 < 0 and its standard error over replicas (ladders:
    independent, so batch means over them account for the autocorrelation in time)."""
    left = (np.asarray(positions)[burn:, :, 0] < 0).mean(axis=0)
    return left.mean(), left.std(ddof=1) / np.sqrt(left.size)


@pytest.mark.parametrize("steps,every", [pytest.param(8_000, 50, id="short"),
                                         pytest.param(80_000, 20, id="long", marks=pytest.mark.slow)])
def test_lowest_rung_occupancy_is_boltzmann_where_a_single_chain_is_stuck(steps, every):
    """At T_1 = 0.1 (barrier / T = 10) a chain crosses ~once per 2.5e6 steps of 0.01, so
    plain Langevin keeps its initial wells (~1/2 each); the ladder's rung 0 reaches the exact
    tilted ratio P(left) = 0.876."""
    pot, M = tilted_well(), 64
    exact = left_fraction(pot, LADDER[0])
    ex = ReplicaExchange(pot, OverdampedLangevin(step=0.01), LADDER, M, every=every,
                         backend="numba", seed=11)
    run = ex.run(steps, record_every=100, progress=False)
    est, se = occupancy(run.positions, burn=20)
    assert_within_se(est, exact, se, what="rung-0 P(x < 0)")
    assert se < 0.02
    plain = Simulation(pot, OverdampedLangevin(step=0.01, temperature=LADDER[0]), 4 * M,
                       backend="numba", seed=11).run(steps, 100, progress=False)
    p_est, p_se = occupancy(plain.positions, burn=20)
    assert abs(p_est - exact) > 4 * p_se, (p_est, p_se, exact)
    e = ExchangeRun(ex.runs)
    assert e.round_trips().mean() > 5


def ladder_state(ex: ReplicaExchange) -> list[dict]:
    return [dict(sim.state, diverged_step=sim.diverged_step) for sim in ex.rungs]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dyn,backend", [(OverdampedLangevin(step=0.02), "numba"),
                                         (UnderdampedLangevin(step=0.05, friction=0.5), "numba"),
                                         (MALA(step=0.05), "numpy")],
                         ids=["overdamped", "baoab", "mala"])
def test_partition_invariance(dyn, backend, dtype):
    """Ladders 2..3 run alone (first_replica=2) equal ladders 2..3 of a run of 0..5, state
    and exchange log, bit for bit."""
    kw = dict(every=7, backend=backend, dtype=dtype, seed=5)
    T = [0.2, 0.35, 0.6]
    full = ReplicaExchange(tilted_well(), dyn, T, 6, **kw)
    part = ReplicaExchange(tilted_well(), dyn, T, 2, first_replica=2, **kw)
    full.run(140, 20, progress=False)
    part.run(140, 20, progress=False)
    a, b = ExchangeRun(full.runs), ExchangeRun(part.runs)
    for sf, sp in zip(ladder_state(full), ladder_state(part)):
        for k in sf:
            np.testing.assert_array_equal(sf[k][2:4], sp[k], err_msg=k)
    for name in ("walker", "accepted", "energy"):
        np.testing.assert_array_equal(getattr(a, name)[:, 2:4], getattr(b, name), err_msg=name)
    assert (a.accepted == 1).any() and (a.accepted == 0).any()
    assert (a.walker != np.arange(3)).any()


@pytest.mark.filterwarnings("ignore::langevin_sim.errors.UnrecordedStepsWarning")  # 300 / 40
def test_resume_after_a_kill_between_rung_commits_is_bit_identical(tmp_path, monkeypatch):
    """A kill after rungs 2, 1 committed a flush but before rung 0 (the ladder's commit):
    `langevin_sim.resume` on any rung's file rolls them back and ends bit-identical to the
    uninterrupted run (records, checkpoints, exchange log)."""
    pot, dyn, T = tilted_well(), UnderdampedLangevin(step=0.05), [0.2, 0.35, 0.6]

    def make():
        return ReplicaExchange(pot, dyn, T, 4, every=5, backend="numba", seed=2)

    ref = make().run(300, 40, out=tmp_path / "ref.h5", progress=False, flush_seconds=0)
    ref.close()
    calls = {"n": 0}
    append = log.append

    def dying(f, rows, n0):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("killed")
        append(f, rows, n0)

    monkeypatch.setattr(log, "append", dying)
    with pytest.raises(BaseException):
        make().run(300, 40, out=tmp_path / "cut.h5", progress=False, flush_seconds=0)
    monkeypatch.setattr(log, "append", append)
    with langevin_sim.open_run(tmp_path / "cut.rung2.h5") as r2, \
            langevin_sim.open_run(tmp_path / "cut.h5") as r0:
        assert r2.steps_done > r0.steps_done > 0       # rung 2 committed past the ladder
        ladder_commit = r0.steps_done
    done = langevin_sim.resume(tmp_path / "cut.rung1.h5", progress=False)
    assert done.resumed_from == ladder_commit and done.complete
    done.close()
    with open_exchange(tmp_path / "ref.h5") as a, open_exchange(tmp_path / "cut.rung2.h5") as b:
        for ra, rb in zip(a.runs, b.runs):
            assert ra.complete and rb.complete and ra.steps_done == rb.steps_done == 300
            np.testing.assert_array_equal(ra.step, rb.step)
            np.testing.assert_array_equal(np.asarray(ra.positions), np.asarray(rb.positions))
            for (sa, xa, da), (sb, xb, db) in [(ra.checkpoint(), rb.checkpoint())]:
                assert sa == sb and all(np.array_equal(xa[k], xb[k]) for k in xa)
        for name in ("step", "walker", "accepted", "energy"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert len(a.step) == 300 // 5
    again = langevin_sim.resume(tmp_path / "cut.h5")
    assert again.resumed_from is None
    again.close()


SWMR_LADDER = """
import sys
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.exchange import ReplicaExchange
from langevin_sim.potentials import DoubleWell
ReplicaExchange(DoubleWell(d=1), OverdampedLangevin(step=0.01), [0.2, 0.4, 0.8], 8, every=10,
                backend="numpy", seed=3).run(10**8, 10, out=sys.argv[1], progress=False,
                                             swmr=True, flush_seconds=0.02)
"""


@pytest.mark.parametrize("swmr", [None, True], ids=["as-started", "swmr"])
def test_a_killed_swmr_ladder_resumes_in_swmr_mode(tmp_path, monkeypatch, swmr):
    """Every rung of a ladder run with swmr=True says so in its config (rung 0 said False),
    and its resume writes every rung in SWMR mode, by default and with swmr=True (the first
    wrote none, the second was refused as 'not started in SWMR mode')."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "exs.h5"
    proc = subprocess.Popen([sys.executable, "-c", SWMR_LADDER, str(path)])
    try:
        for _ in range(1200):
            assert proc.poll() is None
            try:
                with langevin_sim.open_run(path, swmr=True) as run:
                    if run.n_records >= 3:
                        break
            except (OSError, KeyError):
                pass
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    files = [path] + [tmp_path / f"exs.rung{k}.h5" for k in (1, 2)]
    for p in files:
        with langevin_sim.open_run(p) as run:
            assert run.config["swmr"] is True, p
    with langevin_sim.open_run(path) as run:
        target = run.steps_done + 40
    modes, loop = [], ReplicaExchange._loop

    def watched(self, writers, *a):
        modes.extend(w.f.swmr_mode for w in writers)
        return loop(self, writers, *a)
    monkeypatch.setattr(ReplicaExchange, "_loop", watched)
    done = langevin_sim.resume(path, steps=target, progress=False, swmr=swmr)
    assert done.complete and done.steps_done == target and modes == [True] * 3
    done.close()


@pytest.mark.parametrize("backends", [("numpy", "numba"), ("numba", "numpy")],
                         ids=["numpy-numba", "numba-numpy"])
def test_a_resumed_ladder_records_its_new_target_and_backend_on_every_rung(tmp_path, backends):
    """`resume --steps --backend` of a ladder records on every rung what a plain resume
    records: steps_target and the scenario's `steps`, the backend and `backend_history`
    (only steps_target was rewritten)."""
    first, then = backends
    path = tmp_path / "exc.h5"
    ex = ReplicaExchange(DoubleWell(d=1), OverdampedLangevin(step=0.01), [0.2, 0.4, 0.8], 4,
                         every=10, backend=first, seed=3, meta={"params": {"steps": 100}})
    ex.run(100, 50, out=path, progress=False)
    for run in ex.runs:
        run.close()
    with pytest.warns(UnrecordedStepsWarning, match="ends at step 120, between"):
        langevin_sim.resume(path, steps=120, backend=then, progress=False).close()
    langevin_sim.resume(path, steps=200, backend=then, progress=False).close()
    for p in [path] + [tmp_path / f"exc.rung{k}.h5" for k in (1, 2)]:
        with langevin_sim.open_run(p) as run:
            cfg = run.config
            assert run.complete and run.steps_done == cfg["steps_target"] == 200, p
            assert cfg["meta"]["params"]["steps"] == 200, p
            assert cfg["backend"] == then and cfg["backend_history"] == [[0, first], [100, then]]


def test_a_full_disk_stops_a_ladder_with_one_line_and_it_resumes(tmp_path, monkeypatch):
    """A rung whose write fails (ENOSPC) stops the ladder with the one-line write failure
    naming that rung's file and how to resume, not h5py's traceback; resume ends bit-identical
    to the uninterrupted run."""
    import errno

    from langevin_sim.io import RunWriter

    def make():
        return ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.2, 0.5], 3,
                               every=5, backend="numpy", seed=4)

    ref = make().run(100, 10, out=tmp_path / "ref.h5", progress=False, flush_seconds=0)
    real, calls = RunWriter.write_block, []

    def full(self, *args, **kw):
        calls.append(1)
        if len(calls) == 5 and self.path.endswith("rung1.h5"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, *args, **kw)
    monkeypatch.setattr(RunWriter, "write_block", full)
    with pytest.raises(langevin_sim.RunFileError) as e:
        make().run(100, 10, out=tmp_path / "cut.h5", progress=False, flush_seconds=0)
    monkeypatch.setattr(RunWriter, "write_block", real)
    rung1 = tmp_path / "cut.rung1.h5"
    assert str(e.value) == (f"writing {rung1} failed (No space left on device): the records "
                            "committed up to step 5 and the checkpoint at step 5 stand; make "
                            f"room on its file system, then: langevin-sim resume {rung1}")
    with langevin_sim.resume(rung1, progress=False) as done:
        assert done.complete and done.resumed_from == 5
        np.testing.assert_array_equal(np.asarray(done.positions), np.asarray(ref.positions))
    ref.close()


def test_a_ladder_killed_before_its_files_appear_leaves_none_and_one_killed_after_resumes(
        tmp_path, monkeypatch):
    """Every rung's first commit comes before any rung file takes its name (rung 0 last): a
    ladder stopped in its first commit leaves no file to block the rerun, and one killed
    right after its files appear resumes from step 0 (it held no checkpoint: resume said to
    start again, and the rerun met 'output exists')."""
    def make():
        return ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.2, 0.5], 3,
                               every=5, backend="numpy", seed=4)

    append, calls = log.append, []

    def killed(f, rows, n0):
        calls.append(1)
        if len(calls) in (1, 3):       # the layout's commit; the first commit after it
            raise KeyboardInterrupt("killed")
        append(f, rows, n0)
    monkeypatch.setattr(log, "append", killed)
    with pytest.raises(KeyboardInterrupt):
        make().run(100, 10, out=tmp_path / "cut.h5", progress=False, flush_seconds=0)
    assert os.listdir(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        make().run(100, 10, out=tmp_path / "cut.h5", progress=False, flush_seconds=0)
    monkeypatch.undo()
    with langevin_sim.resume(tmp_path / "cut.rung1.h5", progress=False) as run, \
            make().run(100, 10, out=tmp_path / "ref.h5", progress=False) as ref:
        assert run.complete and run.resumed_from == 0
        np.testing.assert_array_equal(np.asarray(run.positions), np.asarray(ref.positions))


def test_a_start_killed_while_it_publishes_its_rungs_is_rerun_as_it_was(tmp_path,
                                                                         monkeypatch):
    """Rungs K-1 .. 1 take their names before rung 0: a start killed in between left
    cut.rung1.h5 alone, and the rerun of the same command met 'output exists' (resume of the
    rung: 'no run file at cut.h5').  The rerun removes such files (step 0 only, naming the
    missing rung 0) with a warning; resume names the missing rung 0 and the rerun."""
    from langevin_sim.errors import RunFileError, UnfinishedStartWarning
    from langevin_sim.exchange import ladder as L

    def make():
        return ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.2, 0.5], 3,
                               every=5, backend="numpy", seed=4)

    publish = L._publish

    def killed(writer, path, overwrite):
        if os.path.basename(path) == "cut.h5":
            raise KeyboardInterrupt("killed")
        publish(writer, path, overwrite)
    monkeypatch.setattr(L, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        make().run(100, 10, out=tmp_path / "cut.h5", progress=False)
    monkeypatch.undo()
    assert [p for p in os.listdir(tmp_path) if not p.startswith(".")] == ["cut.rung1.h5"]
    with pytest.raises(RunFileError, match="rung 0 file .*cut.h5 is missing.* run the command"):
        langevin_sim.resume(tmp_path / "cut.rung1.h5", progress=False)
    with pytest.warns(UnfinishedStartWarning, match="removed cut.rung1.h5: a start of this "
                                                    "ladder killed before it published cut.h5"):
        run = make().run(100, 10, out=tmp_path / "cut.h5", progress=False)
    with run, make().run(100, 10, out=tmp_path / "ref.h5", progress=False) as ref:
        assert run.complete
        np.testing.assert_array_equal(np.asarray(run.positions), np.asarray(ref.positions))
    # a rung file that ran past the start is never removed: the rerun refuses its path
    os.remove(tmp_path / "cut.h5")
    with pytest.raises(ConfigError, match="cut.rung1.h5"):
        make().run(100, 10, out=tmp_path / "cut.h5", progress=False)


def test_a_ladder_continued_into_a_new_file_logs_its_own_exchanges():
    """`run` called again on a ladder writes a file whose log holds the exchanges of that
    run only, equal to those of one uninterrupted run (the second file's log began with
    the first run's count of empty rows)."""
    def make():
        return ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.2, 0.5], 3,
                               every=5, backend="numpy", seed=4)

    whole, ex = make(), make()
    ex.run(100, 10, progress=False).close()
    with whole.run(200, 10, progress=False) as w, \
            ex.run(100, 10, progress=False, flush_seconds=0) as b:     # a commit per record
        a_log, b_log = w.f["exchange"], b.f["exchange"]
        np.testing.assert_array_equal(b_log["step"][()], np.arange(105, 201, 5))
        for name in ("walker", "accepted", "energy"):
            np.testing.assert_array_equal(b_log[name][()], a_log[name][20:], err_msg=name)


def test_acceptance_rate_matches_the_exact_gibbs_prediction():
    """Quadratic, d = 4, sampled exactly by MALA: in equilibrium U_k ~ T_k chi2_4 / 2
    independently across rungs, so the rate of pair (k, k+1) is
    E min(1, exp((1/T_k - 1/T_{k+1})(U_k - U_{k+1}))); the log records it, and the logged
    energies give the same rate."""
    T = [1.0, 1.6, 2.56]
    pot = Quadratic(spectrum=[0.5, 1.0, 2.0, 3.0], seed=3)
    ex = ReplicaExchange(pot, MALA(step=0.2), T, 128, every=2, backend="numpy", seed=9,
                         init="zeros")
    ex.run(500, 100, progress=False)
    e = ExchangeRun(ex.runs)
    keep = e.step > 100
    e.accepted, e.energy = e.accepted[keep], e.energy[keep]
    rate, se = e.acceptance()
    g = np.random.default_rng(0)
    chi = g.chisquare(4, size=(2_000_000, len(T))) / 2 * np.asarray(T)
    b = 1 / np.asarray(T)
    exact = np.minimum(1, np.exp((b[:-1] - b[1:]) * (chi[:, :-1] - chi[:, 1:]))).mean(axis=0)
    assert_within_se(rate, exact, se, what="acceptance per pair")
    assert_within_se(e.expected_acceptance(), rate, se, what="logged Metropolis probability")
    # the walker on rung k changes exactly when pair (k-1, k) or (k, k+1) swapped
    full = ExchangeRun(ex.runs)
    w = np.concatenate([np.tile(np.arange(3, dtype=np.int16), (1, 128, 1)), full.walker])
    acc = full.accepted == 1
    np.testing.assert_array_equal(w[1:] != w[:-1], np.pad(acc, ((0, 0), (0, 0), (0, 1))) |
                                  np.pad(acc, ((0, 0), (0, 0), (1, 0))))


def test_logged_energies_are_the_rungs_energies():
    ex = ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.2, 0.5], 3, every=10,
                         backend="numpy", seed=1)
    ex.run(10, 10, progress=False)
    e = ExchangeRun(ex.runs)
    swapped = e.accepted[0, :, 0] == 1
    U = np.stack([tilted_well().energy(s.state["x"]) for s in ex.rungs], axis=1)
    U[swapped] = U[swapped, ::-1]
    np.testing.assert_allclose(e.energy[0], U, rtol=1e-14)


def test_expected_acceptance_skips_the_pairs_of_diverged_walkers():
    """With divergence_bound=inf the diverged walkers' logged energies are inf; a pair with
    both untried (inf - inf = nan) must not turn the expected rate into nan."""
    ex = ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.2), [0.1, 0.5, 3.0], 16,
                         every=5, backend="numpy", seed=0, divergence_bound=float("inf"))
    with pytest.warns(UserWarning):
        ex.run(200, 50, progress=False)
    e = ExchangeRun(ex.runs)
    assert (np.isinf(e.energy[..., 1]) & np.isinf(e.energy[..., 2])).any()
    expected, (rate, se) = e.expected_acceptance(), e.acceptance()
    assert np.isfinite(expected).all() and np.isfinite(rate).all()


@pytest.mark.parametrize("make,says", [
    (lambda: ReplicaExchange(LinearRegression(n=8, d=2), SGD(lr=0.1, batch_size=2), [1, 2], 2),
     r"Boltzmann sampler \(Heun, MALA, OBABO, OverdampedLangevin, UnderdampedLangevin\); SGD"),
    (lambda: ReplicaExchange(tilted_well(), LeimkuhlerMatthews(), [1, 2], 2),
     "cannot use LeimkuhlerMatthews.* use Heun, MALA, OBABO, OverdampedLangevin, "
     "UnderdampedLangevin$"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(temperature=Schedule(
        "linear", 1.0, 0.5, 10)), [1, 2], 2), "constant temperature"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), [1.0, 0.5], 2), "T_1 < T_2"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), [1.0], 2), ">= 2"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), [1, 2], 2, every=0), "every"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), [1, 2], 2, every=2.5),
     "every .* integer"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), [0.1, 0.5, 0.3], 2),
     r"pass them sorted, \[0.1, 0.3, 0.5\]"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), [0.1, 0.3, 0.3], 2),
     "distinct, 0.3 appears twice .* remove the duplicate"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), [0.0, 0.3], 2), "> 0, got 0.0"),
    (lambda: ReplicaExchange(tilted_well(), OverdampedLangevin(), 0.3, 2), "list of numbers"),
    (lambda: ReplicaExchange(tilted_well(), OBABO(friction=0.0), [1, 2], 2),
     "OBABO with friction 0 is deterministic Hamiltonian .* friction > 0"),
])
def test_refusals_are_one_line_config_errors(make, says):
    with pytest.raises(ConfigError, match=says) as e:
        make()
    assert "\n" not in str(e.value)


def test_a_continued_ladder_killed_before_its_first_exchange_row_resumes_its_walkers(
        tmp_path, monkeypatch):
    """A ladder continued into a new file and killed before that file logged an exchange
    resumes with the walker permutation it had (logged as walker_start), not the identity:
    its log equals the uninterrupted continuation's."""
    def make():
        return ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.2, 0.5], 3,
                               every=5, backend="numpy", seed=4)

    ref, cut = make(), make()
    for ex, name in ((ref, "a"), (cut, "b")):
        ex.run(100, 10, out=tmp_path / f"{name}0.h5", progress=False).close()
    ref.run(100, 10, out=tmp_path / "a1.h5", progress=False).close()
    assert (cut.walker != np.arange(2)).any()          # seed 4: some ladder swapped by step 100
    append, calls = log.append, []

    def killed(f, rows, n0):
        calls.append(1)
        if len(calls) == 2:            # the first commit with rows, after the layout's
            raise KeyboardInterrupt("killed")
        append(f, rows, n0)
    monkeypatch.setattr(log, "append", killed)
    with pytest.raises(KeyboardInterrupt):
        cut.run(100, 10, out=tmp_path / "b1.h5", progress=False, flush_seconds=0)
    monkeypatch.undo()
    langevin_sim.resume(tmp_path / "b1.h5", progress=False).close()
    with open_exchange(tmp_path / "a1.h5") as a, open_exchange(tmp_path / "b1.h5") as b:
        assert len(b.step) == 20
        for name in ("step", "walker", "accepted", "energy"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)


def round_trips_by_hand(start: np.ndarray, walker: np.ndarray) -> np.ndarray:
    """Per ladder, each walker's rung sequence through a bottom -> top -> bottom machine."""
    n, M, K = walker.shape
    trips = np.zeros(M, np.int64)
    for m in range(M):
        for w in range(K):
            state = "bottom" if start[m, 0] == w else "none"
            for i in range(n):
                r = int(np.flatnonzero(walker[i, m] == w)[0])
                if r == 0:
                    trips[m] += state == "top"
                    state = "bottom"
                elif r == K - 1 and state == "bottom":
                    state = "top"
    return trips


def test_round_trips_of_a_continued_ladder_start_from_its_walkers():
    """The second file of a ladder continued by `run` counts round trips from the walkers it
    started with (walker_start), as a hand count of each walker's rung sequence does."""
    ex = ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.2, 0.3, 0.5], 4,
                         every=5, backend="numpy", seed=1)
    first = ex.run(300, 50, progress=False)
    with ExchangeRun(ex.runs) as e:
        identity = np.tile(np.arange(3), (4, 1))
        np.testing.assert_array_equal(e.round_trips(), round_trips_by_hand(identity, e.walker))
    first.close()
    start = ex.walker.copy()
    assert (start[:, 0] != 0).all()                 # seed 1: every bottom walker moved
    ex.run(300, 50, progress=False)
    with ExchangeRun(ex.runs) as e:
        np.testing.assert_array_equal(e.round_trips(), round_trips_by_hand(start, e.walker))
        np.testing.assert_array_equal(e.walker_start, start)


def test_obabo_kinetic_temperature_stays_exact_on_every_rung():
    """OBABO's kinetic temperature <p^2> / m on a quadratic is T exactly at any step; with
    its momenta rescaled at a swap (as BAOAB's) every rung's <p^2> / T stays 1 (unrescaled,
    the walkers coming down from the hot rung heat rung 0 by ~13 %: the BAOAB test below)."""
    T = [1.0, 2.0, 4.0]
    ex = ReplicaExchange(Quadratic(spectrum=[1.0, 1.0], seed=0),
                         OBABO(step=0.1, friction=0.5), T, 256, every=1, backend="numpy", seed=5)
    ex.run(500, record_every=100, progress=False)
    q = []    # (rung, ladder) <p^2> / T over 15 states 100 steps apart (friction 0.5: ~5
    for _ in range(15):   # relaxation times, nearly independent)
        ex.run(100, record_every=100, progress=False)
        q.append([(s.state["p"] ** 2).mean(axis=1) / t for s, t in zip(ex.rungs, T)])
    q = np.mean(q, axis=0)
    est, se = q.mean(axis=1), q.std(axis=1, ddof=1) / np.sqrt(q.shape[1])
    assert np.all(se < 0.03)
    assert 0.6 < ExchangeRun(ex.runs).acceptance()[0].min()
    assert_within_se(est, 1.0, se, what="<p^2> / T per rung")


@pytest.mark.parametrize("rescaled", [True, False], ids=["rescaled", "not-rescaled"])
def test_baoab_momenta_rescaled_at_a_swap_keep_each_rung_at_its_temperature(rescaled, monkeypatch):
    """BAOAB samples the configuration of a quadratic exactly at any step, and the momenta
    travel with a swap rescaled by sqrt(T_new / T_old): each rung's <x^2> lambda / T is 1.
    Swapped as they are (the ablation), a walker brings the hot rung's kinetic energy down
    and the friction (0.5) only slowly removes it: rung 0 sits ~13 % high (z ~ 20 here)."""
    from langevin_sim.exchange import ladder

    if not rescaled:
        monkeypatch.setattr(ladder, "SWAPPED", ladder.SWAPPED + ladder.RESCALED)
        monkeypatch.setattr(ladder, "RESCALED", ())
    T = [1.0, 2.0, 4.0]
    ex = ReplicaExchange(Quadratic(spectrum=[1.0, 1.0], seed=0),
                         UnderdampedLangevin(step=0.1, friction=0.5), T, 256, every=1,
                         backend="numpy", seed=5)
    ex.run(2000, record_every=10, progress=False)
    q = np.stack([(np.asarray(r.positions)[50:] ** 2).mean(axis=(0, 2)) / t   # per ladder
                  for r, t in zip(ex.runs, T)])
    est, se = q.mean(axis=1), q.std(axis=1, ddof=1) / np.sqrt(q.shape[1])
    assert np.all(se < 0.01)
    assert 0.6 < ExchangeRun(ex.runs).acceptance()[0].min()
    if rescaled:
        assert_within_se(est, 1.0, se, what="<x^2> lambda / T per rung")
    else:
        assert (est[0] - 1.0) / se[0] > 8, (est, se)


def test_a_ladder_run_or_resumed_to_a_step_it_reached_is_complete(tmp_path, monkeypatch):
    """`run(0, ...)` of a ladder, and a resume to the step where a SIGTERM stopped it, wrote
    no commit with the complete flag: the files stayed INCOMPLETE however often resumed (a
    plain Simulation's are complete), and a scan reported the point failed."""
    import signal

    def make():
        return ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.02), [0.5, 1.0], 3,
                               every=5, backend="numpy", seed=4)

    with make().run(0, 10, out=tmp_path / "zero.h5", progress=False) as r:
        assert r.complete
    ex, real = make(), ReplicaExchange.exchange

    def exchange(self):
        if self.step == 40:
            self._stop = signal.SIGTERM
        return real(self)
    monkeypatch.setattr(ReplicaExchange, "exchange", exchange)
    with pytest.raises(langevin_sim.RunTerminated):
        ex.run(100, 10, out=tmp_path / "s.h5", progress=False)
    monkeypatch.setattr(ReplicaExchange, "exchange", real)
    with langevin_sim.resume(tmp_path / "s.h5", steps=40, progress=False) as r:
        assert r.complete and r.config["steps_target"] == 40


def test_acceptance_without_attempts_is_nan_and_its_se_counts_the_ladders_that_tried():
    """No attempt gave a rate of 0 +- 0; ladders that never attempted a pair entered the
    spread as rates of 0 (the se divided by sqrt(all ladders))."""
    e = ExchangeRun.__new__(ExchangeRun)
    e.temperatures = np.array([0.5, 1.0, 2.0])
    acc = np.full((4, 5, 2), -1, np.int8)              # (exchanges, ladders, pairs)
    acc[:, :3, 0] = [[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]]   # ladders 3, 4: no attempt
    e.accepted, e.energy = acc, np.zeros((4, 5, 3))
    rate, se = e.acceptance()
    per = np.array([3, 1, 2]) / 4
    assert rate[0] == 6 / 12 and se[0] == pytest.approx(per.std(ddof=1) / np.sqrt(3))
    assert np.isnan(rate[1]) and np.isnan(se[1]) and np.isnan(e.expected_acceptance()[1])


def test_a_continued_ladders_log_is_measured_from_its_own_start(tmp_path):
    """The file-size check of `lengthen` counted a continued ladder's committed log rows from
    step 0 (steps_done // every, not less its `start`): uncommitted rows in a new chunk read
    as committed storage past the end, and resume refused the file as cut short."""
    import h5py

    from langevin_sim.io.reader import _past_end

    ex = ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.01), [0.5, 1.0], 512, every=1,
                         backend="numpy", seed=0)
    ex.run(200, 100, progress=False).close()
    ex.run(100, 100, out=tmp_path / "c.h5", progress=False).close()
    with h5py.File(tmp_path / "c.h5", "r+") as f:     # uncommitted rows in a new chunk
        e = f["exchange/energy"]
        n = e.shape[0]
        e.resize(n + 300, axis=0)
        e[n:] = 1.0
    with h5py.File(tmp_path / "c.h5", "r") as f:
        e = f["exchange/energy"]
        last = max(e.id.get_chunk_info(i).byte_offset for i in range(e.id.get_num_chunks()))
        assert _past_end(f, last) is None


def test_the_exchange_scenario_warns_of_friction_it_does_not_use_and_warms_the_cache(monkeypatch):
    """friction= without dynamics=underdamped was ignored silently; `warm_numba_cache`
    called `advance` on the ladder, which has none, and skipped it silently."""
    from langevin_sim.errors import UnusedParameterWarning
    from langevin_sim.scan.point import warm_numba_cache
    from langevin_sim.scenario import load_scenario, resolve_params

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scenarios",
                        "exchange_double_well.py")
    mod = load_scenario(path)
    with pytest.warns(UnusedParameterWarning, match="friction=5.0 has no effect"):
        mod.build(resolve_params(mod.Params, sets={"friction": 5.0, "backend": "numpy"}))
    steps = []
    real = Simulation.advance
    monkeypatch.setattr(Simulation, "advance", lambda self, n, **kw: steps.append(n) or real(self, n, **kw))
    warm_numba_cache(path, [{"scan": {"coords": {"backend": "numpy"}},
                             "params": {"backend": "numpy", "replicas": 4, "steps": 100}}])
    assert steps == [1]


def test_kinetic_analyses_refuse_a_rung_whose_records_jump_at_swaps():
    """Escape and drift times along a rung's records are not the dynamics': the replicas jump
    between wells at swaps (escape.py fitted an Arrhenius barrier of 0.26 to barrier 1)."""
    from langevin_sim.analysis.drift import run_drift
    from langevin_sim.analysis.escape import analyze_run
    from langevin_sim.first_passage import HalfSpace

    ex = ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.01), [0.1, 0.3], 4, every=5)
    ex.run(20, record_every=10, progress=False)
    for run in ex.runs:
        with pytest.raises(ConfigError, match="replica-exchange run.*not the dynamics'"):
            analyze_run(run, region=HalfSpace([1.0], 0.0, "right"))
        with pytest.raises(ConfigError, match="replica-exchange run"):
            run_drift(run)


def test_info_names_the_ladder_and_says_the_seed_is_the_rungs():
    """`langevin-sim info` on a rung file said nothing of the ladder and printed the rung's
    derived seed as if it were the run's."""
    ex = ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.01), [0.1, 0.3, 0.9], 2,
                         every=5, seed=7)
    ex.run(10, record_every=10, progress=False)
    assert ("rung 0 of 3 of a replica-exchange ladder, T = 0.1, 0.3, 0.9; swaps every 5 steps, "
            "ladder seed 7") in ex.runs[0].summary()
    assert "exchange   rung 2 (T = 0.9) of a replica-exchange ladder" in ex.runs[2].summary()


def test_a_copied_ladder_is_resumed_and_read_in_its_copy_not_its_original(tmp_path):
    """The rungs found each other by the names they were written with: `resume` of a copy's
    rung file extended the original ladder's files, and open_exchange of the copy read them."""
    import shutil

    ex = ReplicaExchange(tilted_well(), OverdampedLangevin(step=0.01), [0.1, 0.3], 2, every=5)
    ex.run(20, record_every=10, out=tmp_path / "a.h5", progress=False)
    for r in ex.runs:
        r.close()
    for src, dst in (("a.h5", "b.h5"), ("a.rung1.h5", "b.rung1.h5")):
        shutil.copy(tmp_path / src, tmp_path / dst)
    langevin_sim.resume(tmp_path / "b.rung1.h5", steps=30)
    with open_exchange(tmp_path / "b.h5") as e:
        assert [r.steps_done for r in e.runs] == [30, 30] and e.step[-1] == 30
    with open_exchange(tmp_path / "a.rung1.h5") as e:
        assert [r.steps_done for r in e.runs] == [20, 20] and e.step[-1] == 20
    os.rename(tmp_path / "b.rung1.h5", tmp_path / "c.h5")
    with pytest.raises(langevin_sim.RunFileError, match="rung 1 file .*b.rung1.h5 is missing"):
        open_exchange(tmp_path / "b.h5")
