"""The analysis scripts on runs they cannot analyse or with bad options: exit status 2 and one
line on stderr naming what is wrong and what to do, fast, with no traceback or warning; and
the grokking script's figure on a run without weight decay draws no warning."""
import os
import runpy
import sys
import time
import warnings
from unittest import mock

import pytest

from langevin_sim.scenario import run_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNS = {   # name: (scenario, settings), quick presets
    "adamw": ("grokking.py", []),
    "sgd_t0": ("teacher_student.py", []),
    "dw": ("double_well.py", []),
    "diverged": ("double_well.py", ["step=0.5"]),
    "few_alive": ("double_well.py", ["replicas=64", "steps=200", "record_every=50",
                                     "step=0.2"]),
    "quadratic": ("quadratic.py", []),
    "sgd_b1": ("sgd_least_squares.py", ["batch_size=1", "replicas=256", "steps=200"]),
    "valley": ("valley_drift.py", []),
    "classifier": ("classifier.py", ["dataset=iris"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One quick run file per entry of RUNS (about 8 s in all, NumPy backends)."""
    d = tmp_path_factory.mktemp("runs")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the diverged runs warn when written
        for name, (scenario, sets) in RUNS.items():
            out[name] = d / f"{name}.h5"
            run_scenario(os.path.join(ROOT, "scenarios", scenario), sets, out=out[name],
                         quick=True, progress=False).close()
    return out


def script(name, argv, capsys):
    """Run analysis/NAME.py's main(argv) in-process, warnings as errors: (status, stdout,
    stderr)."""
    main = runpy.run_path(os.path.join(ROOT, "analysis", f"{name}.py"))["main"]
    with warnings.catch_warnings(), mock.patch.object(sys, "argv", [f"{name}.py"]):
        warnings.simplefilter("error")
        try:
            main([str(a) for a in argv])
            status = 0
        except SystemExit as e:
            status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def one_line_error(name, argv, capsys, *parts):
    """The script exits with status 2 and a last stderr line '<name>.py: error: ...' holding
    every one of `parts` (argparse prints its usage above its own errors)."""
    status, _, err = script(name, argv, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and lines, err
    assert lines[-1].startswith(f"{name}.py: error: "), err
    assert all(not line.startswith(("Traceback", "  ")) for line in lines[:-1]
               if not line.startswith("usage:")), err
    for part in parts:
        assert part in lines[-1], err
    return lines[-1]


def test_basins_refuses_runs_without_a_positive_temperature_at_once(runs, capsys):
    """AdamW has no temperature; zero-temperature SGD (a 161-weight teacher-student net,
    whose quench took > 60 s before failing) is refused before any quench, naming
    langevin_sim.analysis.sgd_basins."""
    one_line_error("basins", [runs["adamw"]], capsys,
                   "AdamW dynamics has no temperature", "constant temperature")
    t = time.perf_counter()
    one_line_error("basins", [runs["sgd_t0"]], capsys, "need a temperature > 0",
                   "this run's is 0 (SGD without Langevin noise)",
                   "langevin_sim.analysis.sgd_basins", "basin_noise")
    assert time.perf_counter() - t < 5
    status, _, err = script("basins", [runs["sgd_t0"]], capsys)    # no "quenching" line first
    assert status == 2 and "quenching" not in err, err


def test_covariance_refuses_unsupported_runs_and_bad_burn_in(runs, capsys):
    one_line_error("covariance", [runs["adamw"]], capsys,
                   "no predicted stationary law for ModularArithmeticMLP with AdamW",
                   "supported: Quadratic")
    for bad in ("abc", "-1", "1.5"):
        one_line_error("covariance", [runs["quadratic"], f"--burn={bad}"], capsys,
                       "argument --burn: expected 'auto' or a number of records >= 0",
                       repr(bad))


def test_escape_needs_a_region_for_runs_other_than_a_double_well(runs, capsys):
    """A least-squares run without a first-passage observer read "no replica entered
    'region'; rate < ..." with exit 0: the default half-space x_1 > 0 is a DoubleWell's right
    well.  Given --normal, the same run is analysed."""
    one_line_error("escape", [runs["sgd_b1"]], capsys, "no first-passage observer",
                   "means nothing for LinearRegression", "--normal N1,N2,... --offset A")
    status, out, _ = script("escape", [runs["sgd_b1"], "--normal", "1", "--offset", "1e3"],
                            capsys)
    assert status == 0 and "no replica entered 'region'" in out, out


def test_scan_summary_on_a_run_file(runs, capsys):
    one_line_error("scan_summary", [runs["dw"]], capsys, "is a file, not a scan directory",
                   "langevin-sim scan --out DIR")
    one_line_error("scan_summary", [runs["dw"].parent / "nope"], capsys, "nope does not exist")
    one_line_error("scan_summary", [runs["dw"].parent], capsys,
                   "holds no scan (no readable scan.json)")
    one_line_error("scan_summary", [runs["dw"], "--burn", "1"], capsys,
                   "--burn 1: the fraction of records dropped must be in [0, 1)")


def test_stationary_refuses_diverged_runs_and_bad_counts(runs, capsys, tmp_path):
    """All replicas diverged, 3 of 64 alive (too few to bin), --records or --bins < 1,
    --records beyond the run: one line each.  A run with 55 of 64 alive fits without
    warnings, with a note that it fits the survivors (escape.py's: censored at divergence)."""
    one_line_error("stationary", [runs["diverged"]], capsys, "all 512 replicas diverged",
                   "smaller step")
    one_line_error("stationary", [runs["few_alive"]], capsys,
                   "3 finite samples are too few for a chi-square test")
    for flag, value in (("--records", "0"), ("--records", "-3"), ("--bins", "0")):
        one_line_error("stationary", [runs["dw"], flag, value], capsys,
                       f"argument {flag}: expected an integer >= 1, got '{value}'")
    one_line_error("stationary", [runs["dw"], "--records", "30"], capsys,
                   "records must be in 1..9 (the run has 9 records), got 30")
    path = tmp_path / "some_diverged.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_scenario(os.path.join(ROOT, "scenarios", "double_well.py"),
                     ["replicas=64", "steps=200", "record_every=50", "step=0.15",
                      "backend=numpy"], out=path, progress=False).close()
    status, out, err = script("stationary", [path, "--png", tmp_path / "s.png"], capsys)
    assert status == 0 and err == "" and "n = 55" in out, err
    # the fit is of the survivors, and says so (the diverged ones are the far-out ones)
    assert ("note: 9 of 64 replicas diverged and are left out: the fit is about the 55 "
            "others") in out
    status, out, err = script("escape", [path, "--png", tmp_path / "e.png"], capsys)
    assert status == 0 and ("note: some_diverged: 9 of 64 replicas diverged; each counts as "
                            "censored at its divergence") in out, err


def test_tails_records_below_one(runs, capsys):
    one_line_error("tails", [runs["sgd_b1"], "--records", "0"], capsys,
                   "argument --records: expected an integer >= 1, got '0'")
    one_line_error("tails", [runs["sgd_b1"], "--records", "100"], capsys,
                   "records must be in 1..")


def test_drift_refuses_reversed_intervals_and_names_the_flag(runs, capsys):
    one_line_error("drift", [runs["valley"], "--target", "5", "1"], capsys,
                   "--target LO HI needs LO <= HI, got 5 1")
    one_line_error("drift", [runs["valley"], "--region", "5", "1"], capsys,
                   "--region LO HI needs LO <= HI, got 5 1")
    line = one_line_error("drift", [runs["dw"]], capsys, "no manifold coordinate",
                          "pass --coordinate NAME", "energy, positions")
    assert "coordinate=" not in line


def test_grokking_on_a_classifier_run_without_weight_decay(runs, capsys, tmp_path):
    """A classifier run has lr wd = 0 and a zero median delay: no point for the log-log
    delay panel or fit, said in the verdict, and no log-scale warning."""
    status, out, err = script("grokking", [runs["classifier"], "--png", tmp_path / "g.png"],
                              capsys)
    assert status == 0 and err == "", err
    assert "verdict: 0 of 1 points have weight decay and a positive median delay" in out
    assert (tmp_path / "g.png").stat().st_size > 0


def test_flatness_refuses_bad_matched_levels_before_analysing(runs, capsys):
    """--matched abc ran the whole analysis, then failed; --matched 0 or -1 printed a line
    and exited 0.  Now argparse refuses them at once, nothing on stdout."""
    for bad in ("abc", "0", "-1", "0.1,x", "nan"):
        status, out, err = script("flatness", [runs["classifier"], "--matched", bad], capsys)
        assert status == 2 and out == "", (bad, out)
        line = err.strip().splitlines()[-1]
        assert line.startswith("flatness.py: error: argument --matched: expected 'auto', "
                               "'none' or train losses > 0"), err
        assert repr(bad) in line


def test_critical_points_bad_options_are_one_line_errors(capsys):
    """critical_points.py parsed its specs inside the computation: --descent-gd 0.05,
    --descent-net 64:3, --starts 0, --census 8:0:10 ended in ValueError tracebacks and an
    unknown data set in a ConfigError traceback.  Each is now one line; the specs of
    docs/results.md still parse."""
    for argv, parts in ((["--descent-widths", "2", "--descent-gd", "0.05"],
                         ["argument --descent-gd: expected LR:STEPS[:BATCH[:MOMENTUM]]"]),
                        (["--descent-widths", "2", "--descent-net", "64:3"],
                         ["argument --descent-net: expected n:d_in:teacher_width"]),
                        (["--N", "8", "--starts", "0"],
                         ["argument --starts: expected an integer >= 1"]),
                        (["--census", "8:0:10"], ["argument --census: expected N:instances"]),
                        (["--N", "x"], ["argument --N: expected p-spin sizes"]),
                        (["--descent-widths", "2", "--descent-starts", "2", "--descent-net",
                          "nosuch:10"], ["unknown data set 'nosuch'"])):
        status, _, err = script("critical_points", argv, capsys)   # its usage wraps: no
        line = err.strip().splitlines()[-1]                         # one_line_error
        assert status == 2 and "Traceback" not in err, err
        assert line.startswith("critical_points.py: error: ") and all(p in line for p in parts), err
    ns = runpy.run_path(os.path.join(ROOT, "analysis", "critical_points.py"))
    assert ns["_gd_spec"]("0.05:20000:32:0.9") == (0.05, 20000, 32, 0.9)
    assert ns["_gd_spec"]("0.1:20000:32") == (0.1, 20000, 32)
    assert ns["_net_spec"]("256:8:4") == (256, 8, 4)
    assert ns["_net_spec"]("digits:512") == ("digits", 512)
    assert ns["_census_spec"]("8:64:500,96:4:8000") == ["8:64:500", "96:4:8000"]


def test_a_figure_path_that_cannot_be_written_is_one_line(runs, capsys, tmp_path):
    """--png in a folder that does not exist (or a format matplotlib lacks) ended in a
    FileNotFoundError / ValueError traceback after the table; the default path next to a
    run in a read-only folder likewise.  Now one line naming the path and --png."""
    for png, why in ((tmp_path / "no" / "such" / "x.png", "No such file or directory"),
                     (tmp_path / "x.xyz", "Format 'xyz' is not supported")):
        status, out, err = script("stationary", [runs["dw"], "--png", png], capsys)
        line = err.strip().splitlines()[-1]
        assert status == 2 and "verdict:" in out and "Traceback" not in err, err
        assert line.startswith(f"stationary.py: error: cannot save the figure to {png}: "
                               f"{why}") and "pass --png PATH" in line, err


def test_flatness_verdict_of_pooled_points_uses_the_interval_it_quotes():
    """Where Cochran's Q rejects homogeneity the pooled correlation quotes the random-effects
    interval, but the verdict word read the fixed-effect one: data/claim6/width at equal fit
    printed 'random effects ... rho = -0.083 [-0.361, +0.208]' and 'within points
    reversed' (from the fixed effect's [-0.285, -0.045])."""
    from langevin_sim.analysis.flatness import PooledCorrelation

    said = runpy.run_path(os.path.join(ROOT, "analysis", "flatness.py"))["said"]
    het = PooledCorrelation(-0.168, (-0.285, -0.045), 0.0076, 32.8, 1.2e-5, 7, False, 0.127,
                            -0.083, (-0.361, 0.208), 0.58)
    assert het.heterogeneous() and said(het) == "not established (0 inside)"
    homo = PooledCorrelation(0.152, (0.062, 0.240), 0.001, 4.3, 0.75, 8, False, 0.0,
                             0.152, (0.062, 0.240), 0.001)
    assert said(homo) == "yes"
