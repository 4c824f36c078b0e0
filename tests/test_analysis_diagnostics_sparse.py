"""Diagnostics of sparse series (recorded every k-th record, NaN in between), statistics
undefined for a component (n/a with the reason, no warnings), and the script's option checks."""
import os
import runpy
import sys
import warnings

import numpy as np
import pytest

from langevin_sim import LangevinSimError, Simulation
from langevin_sim.analysis.diagnostics import (burn_in, diagnose, diagnostics_table, ess,
                                               load_records)
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import MissingExtraError
from langevin_sim.potentials import Quadratic
from langevin_sim.potentials.sharpness import SharpnessObserver

from .test_analysis_diagnostics import ROOT, ar1

STATS = ("mean", "sd", "quantiles", "ess_bulk", "ess_tail", "ess_mean", "mcse_mean",
         "mcse_quantiles", "rhat", "rhat_nested", "acf", "iat")


def assert_same(res, ref, k=1):
    """The same diagnostics (to rounding: sums run over differently laid out copies), with
    records k times as many steps apart."""
    assert len(res) == len(ref)
    for r, q in zip(res, ref):
        assert (r.component, r.n_draws, r.n_chains, r.undefined) == \
            (q.component, q.n_draws, q.n_chains, q.undefined)
        for f in STATS:
            np.testing.assert_allclose(getattr(r, f), getattr(q, f), rtol=1e-12, atol=1e-15,
                                       err_msg=f)
        assert r.steps_per_record == k * q.steps_per_record
        np.testing.assert_allclose(r.iat_steps, k * q.iat_steps, rtol=1e-12)


def sharpness_run(path, every):
    """Quadratic (spectrum 1, 2), 8 replicas, 400 steps recorded every 10 (41 records), the
    sharpness observables every `every` steps; replicas 1 and 5 diverge at step 1."""
    x0 = np.zeros((8, 2))
    x0[[1, 5]] = 1e9
    sim = Simulation(Quadratic(spectrum=[1.0, 2.0], seed=0), OverdampedLangevin(step=0.1),
                     replicas=8, backend="numpy", init=x0, divergence_bound=1e8, seed=0,
                     observers=[SharpnessObserver(every=every, iters=4, probes=4)])
    with pytest.warns(UserWarning, match="2 of 8 replicas diverged"):
        sim.run(steps=400, record_every=10, out=path).close()
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sparse")
    return sharpness_run(d / "every20.h5", 20), sharpness_run(d / "every200.h5", 200)


def script(argv, capsys):
    """analysis/diagnostics.py main(argv) with warnings as errors: (exit code, stdout, stderr)."""
    main = runpy.run_path(os.path.join(ROOT, "analysis", "diagnostics.py"))["main"]
    code = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sparse_array_is_diagnosed_on_its_records_as_the_dense_values():
    """An (n, M, 2) AR(1) array written at every 3rd record of a 3n - 2 record series (NaN
    in between), one replica also NaN from record 450 on (diverged): the sparse series is
    read at records 0, 3, ... (2n - 2 left out, 1 replica dropped), and its diagnostics and
    burn-in equal those of the dense values without that replica, exactly; the IAT in
    steps (here: array records) is 3 x the IAT in records."""
    dense = ar1(np.random.default_rng(0), 0.7, 300, (8, 2))
    k = 3
    sparse = np.full((k * 299 + 1, 8, 2), np.nan)
    sparse[::k] = dense
    sparse[450:, 5] = np.nan
    keep = np.arange(8) != 5
    rec = load_records(sparse)
    assert rec.unrecorded == (k - 1) * 299 and rec.dropped == 1 and rec.steps_per_record == k
    assert np.array_equal(rec.step, np.arange(0, k * 299 + 1, k))
    assert_same(diagnose(sparse, burn=10), diagnose(dense[:, keep], burn=10), k)
    b, ref = burn_in(sparse), burn_in(dense[:, keep])
    assert b.record == ref.record and b.step == k * ref.record and b.n_records == 300


def test_sparse_observable_of_a_run_with_diverged_replicas(runs):
    """hessian_trace measured every 20 steps of a run recorded every 10: diagnosed at its 21
    records (20 steps apart) on the 6 replicas that did not diverge, identical to the
    diagnostics of those values given densely; IAT in steps = 20 x IAT in records."""
    from langevin_sim import open_run

    with open_run(runs[0]) as run:
        rec = load_records(run, "hessian_trace")
        assert (rec.unrecorded, rec.dropped, rec.steps_per_record) == (20, 2, 20)
        values = np.asarray(run["hessian_trace"])[::2][:, run.diverged_step < 0]
        assert np.isfinite(values).all()
        assert_same(diagnose(run, "hessian_trace", burn=1), diagnose(values, burn=1), 20)
        assert load_records(run, "energy").unrecorded == 0


def test_script_diagnoses_sparse_series_and_skips_short_ones(runs, capsys):
    """The script on the run above diagnoses the sparse series with the others, without a
    warning; measured every 200 steps (3 records), they are skipped with a note."""
    code, out, err = script([runs[0], "--png", runs[0].with_suffix(".png")], capsys)
    assert code == 0, err
    assert "hessian_trace: recorded at 21 of 41 records (every 20 steps)" in out
    # (docs/analysis.md: "the number dropped is reported"; the script said nothing of it)
    assert "energy: 2 of 8 replicas dropped (diverged, or non-finite at a kept record)" in out
    assert "\nhessian_trace " in out and "\nenergy " in out and "verdict:" in out
    # sharpness of a quadratic is its top eigenvalue, 2 at every record: n/a with the reason
    assert "ESS bulk, ESS tail, IAT, R-hat of sharpness: constant (every value is 2 up to " \
        "rounding)" in out
    code, out, err = script([runs[1], "--png", runs[1].with_suffix(".png")], capsys)
    assert code == 0, err
    assert "skipped hessian_trace: 3 records; burn-in and diagnostics need >= 4" in out
    assert "\nenergy " in out and "\nhessian_trace " not in out and "verdict:" in out
    code, out, err = script([runs[0], "--series", "hessian_trace", "--burn", "0",
                             "--png", runs[0].with_suffix(".png")], capsys)
    assert code == 0 and "\nhessian_trace " in out and "\nenergy " not in out, err


@pytest.mark.parametrize("args, message", [
    (["--components", "0"], "--components 0: C must be >= 1"),
    (["--superchains", "-1"], "--superchains -1: G must be >= 0"),
    (["--burn", "half"], "--burn half: 'auto' or a number of records >= 0"),
    (["--burn", "41"], "--burn 41: the run has 41 records (K in 0..40)"),
    (["--series", "energy,nope"], "--series: nope not recorded; the run records energy,"),
])
def test_script_option_errors_are_one_line(runs, capsys, args, message):
    """argparse's usage, then one error line naming the valid range; no traceback."""
    code, out, err = script([runs[0], *args], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("usage:") and "error: " + message in last, err


def test_constant_and_frozen_components_are_na_with_the_reason():
    """Components: AR(1); constant 1; replica r constant at r.  No RuntimeWarning; the AR(1)
    component's diagnostics are those of it alone; the constant one has mean 1, sd 0, MCSE
    0 and no ESS, IAT, R-hat, nested R-hat; the frozen one no ESS, IAT, MCSE and R-hat >>
    1 (not mixed; ArviZ's ranks leave a rounding-level within-replica variance).  The table prints n/a and one line per reason."""
    x = np.empty((200, 8, 3))
    x[..., 0] = ar1(np.random.default_rng(1), 0.5, 200, (8,))
    x[..., 1] = 1.0
    x[..., 2] = np.arange(8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok, const, frozen = res = diagnose(x)
    assert_same((ok,), diagnose(x[..., :1]))
    assert ok.undefined == {}
    assert (const.mean, const.sd, const.mcse_mean) == (1.0, 0.0, 0.0)
    assert np.isnan([const.ess_bulk, const.ess_tail, const.iat, const.rhat,
                     const.rhat_nested]).all() and np.isfinite(const.quantiles).all()
    assert list(const.undefined) == ["ess_bulk", "ess_tail", "ess_mean", "rhat", "rhat_nested"]
    assert frozen.rhat > 1e6 and np.isnan([frozen.ess_bulk, frozen.iat, frozen.mcse_mean]).all()
    lines = diagnostics_table(res).splitlines()
    assert "n/a" not in lines[1] and lines[2].split().count("n/a") == 6
    assert lines[3].split().count("n/a") == 5 and len(lines[3]) == len(lines[1])
    assert lines[4:] == [
        "n/a ESS bulk, ESS tail, IAT, R-hat, nR-hat of series[1]: constant (every value is 1 "
        "up to rounding)",
        "n/a ESS bulk, ESS tail, IAT, mcse of series[2]: each replica constant, at different "
        "values: no within-replica variance (replicas not mixed: R-hat >> 1)"]


def test_too_few_replicas_and_constant_split_halves():
    """One replica: R-hat n/a; 3 replicas in 4 superchains: nested R-hat n/a (every row);
    5 records whose split halves (records 0-1, 3-4) are constant: R-hat 0 / 0, n/a."""
    x = ar1(np.random.default_rng(2), 0.5, 50, (3,))
    one = diagnose(x[:, :1])[0]
    assert np.isnan(one.rhat) and one.undefined["rhat"] == "1 replica; R-hat compares >= 2"
    three = diagnose(x[:, :, None].repeat(2, axis=2) * [1.0, 2.0])
    assert all(set(r.undefined) == {"rhat_nested"} for r in three)
    assert diagnostics_table(three).splitlines()[-1] == (
        "n/a nR-hat of every row: 3 replicas in 4 superchains; nested R-hat needs >= 2 "
        "replicas per superchain")
    halves = np.zeros((5, 4))
    halves[2] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = diagnose(halves, superchains=2)[0]
    assert np.isnan(d.rhat) and d.undefined["rhat"].startswith("0 / 0 in ArviZ")


def test_missing_arviz_names_the_extra(monkeypatch):
    """Without arviz-stats, diagnose and ess raise MissingExtraError (a LangevinSimError)
    naming the 'analysis' extra."""
    monkeypatch.setitem(sys.modules, "arviz_stats.base", None)
    x = ar1(np.random.default_rng(3), 0.5, 20, (4,))
    for call in (lambda: diagnose(x), lambda: ess(x)):
        with pytest.raises(MissingExtraError, match=r"convergence diagnostics .*\.\[analysis\]"):
            call()
    assert issubclass(MissingExtraError, LangevinSimError)
