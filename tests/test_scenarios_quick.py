"""Every scenario's quick preset (`QUICK`, `--quick`) runs in seconds, and the analysis script
made for the scenario reads its output, prints its table and saves a figure (the issue "one
scenario, one notebook and one verdict per claim": quick presets in the default suite).

The presets run on the NumPy backend, so no Numba kernel is compiled here; the whole file
takes ~15 s on the 2-core machine."""
import glob
import os
import runpy
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest

from langevin_sim import ConfigError, open_run
from langevin_sim.cli import main as cli_main
from langevin_sim.scenario import load_scenario, main as scenario_main, quick_preset, run_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.py")))
# the analysis script made for each scenario's runs (docs/analysis.md), and what it prints
SCRIPTS = {"double_well": ("stationary.py", "chi2 ="),
           "flat_vs_sharp": ("basins.py", "sampled occupancy"),
           "flat_vs_sharp_sgd": None,  # analysed in the claim 2b notebook (analysis.sgd_basins)
           "quadratic": ("covariance.py", "verdict:"),
           "sgd_least_squares": ("covariance.py", "verdict:"),
           "valley_drift": ("drift.py", "verdict:"),
           "pspin_threshold": ("spinglass.py", "verdict:"),
           "teacher_student": ("diagnostics.py", "verdict:"),
           "classifier": ("flatness.py", "verdict:"),
           "grokking": ("grokking.py", "verdict:"),
           "exchange_double_well": None,  # read with langevin_sim.exchange (tests/test_exchange.py)
           "scale_symmetric": None}   # analysed in the claim 5 notebook (analysis.drift)


def test_every_scenario_has_a_script_entry():
    assert len(SCENARIOS) >= 8
    names = {os.path.basename(p)[:-3] for p in SCENARIOS}
    assert names == set(SCRIPTS), (
        f"scenarios without an entry in this file's SCRIPTS (the analysis script that reads "
        f"their runs and what it prints, or None): {sorted(names - set(SCRIPTS))}; entries "
        f"without a scenario: {sorted(set(SCRIPTS) - names)}")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: os.path.basename(p)[:-3])
def test_quick_preset_runs_in_seconds_and_its_analysis_reads_it(path, tmp_path, capsys,
                                                                monkeypatch):
    name = os.path.basename(path)[:-3]
    preset = quick_preset(load_scenario(path))
    out = tmp_path / f"{name}.h5"
    t0 = time.perf_counter()
    run_scenario(path, out=out, quick=True, progress=False).close()
    wall = time.perf_counter() - t0
    assert wall < 30, f"{name} quick preset took {wall:.1f} s (budget 30 s on 2 cores)"
    with open_run(out) as run:
        params = run.config["meta"]["params"]
        assert run.complete and run.steps_done == preset.get("steps", params["steps"])
        assert all(params[k] == (list(v) if isinstance(v, tuple) else v)
                   for k, v in preset.items()), (params, preset)
        assert (run.diverged_step < 0).all()
    if SCRIPTS[name] is None:
        return
    script, says = SCRIPTS[name]
    png = tmp_path / f"{name}.png"
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", [script, str(out), "--png", str(png)])
    runpy.run_path(os.path.join(ROOT, "analysis", script), run_name="__main__")
    text = capsys.readouterr().out
    assert says in text, text
    img = plt.imread(png)
    assert img.shape[0] >= 200 and img.shape[1] >= 300, img.shape
    assert np.mean(img[..., :3].min(axis=-1) < 0.5) > 0.01, "blank figure"


def test_quick_flag_on_the_command_lines(tmp_path, monkeypatch, capsys):
    """`langevin-sim run X.py --quick` and `python X.py --quick` apply the preset; --set
    still wins over it; the default output is data/<scenario>_quick.h5; --help shows it."""
    monkeypatch.chdir(tmp_path)
    path = os.path.join(ROOT, "scenarios", "quadratic.py")
    assert cli_main(["run", path, "--quick", "--set", "steps=200"]) == 0
    with open_run(tmp_path / "data" / "quadratic_quick.h5") as run:
        p = run.config["meta"]["params"]
        assert (p["replicas"], p["steps"], p["backend"]) == (256, 200, "numpy")
    run = scenario_main(path, ["--quick", "--out", "q.h5"])
    assert run.steps_done == 1000
    run.close()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        scenario_main(path, ["--help"])
    assert "quick preset (--quick): replicas=256, steps=1000" in capsys.readouterr().out


def test_a_scenario_without_a_preset_is_told_how_to_add_one(tmp_path):
    src = open(os.path.join(ROOT, "scenarios", "quadratic.py")).read()
    bare = tmp_path / "bare.py"
    bare.write_text(src.replace("\nQUICK = ", "\n_NOT_QUICK = "))
    with pytest.raises(ConfigError, match="declares no quick preset; add a module-level dict"):
        run_scenario(bare, out=tmp_path / "x.h5", quick=True)
    bad = tmp_path / "bad.py"
    bad.write_text(src.replace('QUICK = {"replicas": 256', 'QUICK = {"replicaz": 256'))
    with pytest.raises(ConfigError, match="replicaz=256 in the quick preset"):
        run_scenario(bad, out=tmp_path / "x.h5", quick=True)


def test_teacher_student_records_sharpness_every_k_steps(tmp_path):
    """teacher_student's sharpness_every: the top Hessian eigenvalue at the steps that are a
    multiple of it (the claim 6 notebook), NaN at the other records."""
    path = os.path.join(ROOT, "scenarios", "teacher_student.py")
    out = tmp_path / "ts.h5"
    run_scenario(path, {"sharpness_every": 250, "replicas": 4, "hidden": 4}, out=out, quick=True,
                 progress=False).close()
    with open_run(out) as run:
        s = np.asarray(run["sharpness"], np.float64)
        steps = np.rint(run.time / run.time[-1] * run.steps_done).astype(int)
        measured = np.isfinite(s).all(axis=1)
        assert (measured == (steps % 250 == 0)).all(), (steps, measured)
        assert (s[measured] > 0).all()


@pytest.mark.parametrize("scenario, sets, names", [
    ("quadratic", {"friction": 3.0}, ["friction"]),
    ("sgd_least_squares", {"dynamics": "matched_langevin", "momentum": 0.9,
                           "weight_decay": 5.0, "temperature": 3.0},
     ["momentum", "weight_decay", "temperature"]),
    ("flat_vs_sharp_sgd", {"temperature": 0.5}, ["temperature"]),
    ("flat_vs_sharp_sgd", {"dynamics": "langevin", "batch_size": 4, "sampling": "subset"},
     ["batch_size", "sampling"]),
    ("scale_symmetric", {"dynamics": "langevin", "batch_size": 4}, ["batch_size"]),
])
def test_an_option_the_dynamics_leaves_out_is_named(scenario, sets, names):
    """--set dynamics=matched_langevin --set momentum=0.9 --set weight_decay=5 --set
    temperature=3 ran plain Langevin at the matched temperature without a word (and the
    run file's params said momentum 0.9); so did friction with overdamped dynamics."""
    import warnings

    from langevin_sim.errors import UnusedParameterWarning
    from langevin_sim.scenario import resolve_params

    mod = load_scenario(os.path.join(ROOT, "scenarios", f"{scenario}.py"))
    p = resolve_params(mod.Params, sets={**sets, "backend": "numpy", "replicas": 2})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mod.build(p)
    said = [str(w.message) for w in seen if issubclass(w.category, UnusedParameterWarning)]
    assert [m.split("=")[0] for m in said] == names, said
    assert all("has no effect with dynamics=" in m for m in said), said
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedParameterWarning)   # the defaults: no warning
        mod.build(resolve_params(mod.Params, sets={"backend": "numpy", "replicas": 2,
                                                   "dynamics": sets.get("dynamics",
                                                                        mod.Params.dynamics)}))



def test_a_spectrum_with_fewer_samples_than_dimensions_is_one_error():
    """sgd_least_squares with spectrum= and n < d said "the array 'A' holds inf or NaN"
    (A^T A / n is singular: its whitening divided by zero eigenvalues)."""
    from langevin_sim.errors import ConfigError
    from langevin_sim.scenario import resolve_params

    mod = load_scenario(os.path.join(ROOT, "scenarios", "sgd_least_squares.py"))
    p = resolve_params(mod.Params, sets={"n": 3, "d": 4, "spectrum": [1, 2, 3, 4],
                                         "backend": "numpy", "replicas": 2})
    with pytest.raises(ConfigError, match="give n >= d samples, got n = 3"):
        mod.build(p)


def test_list_and_fixed_tuple_params_are_parsed_and_others_refused():
    """Params of type list[float], tuple[int, int] or dict reached build() as the raw strings
    ("1,4", a 1-tuple (7,), "{kind='linear'}"); "a, b" kept the space of " b"; "1,,2"
    dropped the empty item silently."""
    import dataclasses

    from langevin_sim.errors import ConfigError
    from langevin_sim.scenario import RunParams, param, resolve_params

    @dataclasses.dataclass(frozen=True)
    class Params(RunParams):
        spectrum: list[float] = param((1.0, 2.0), "eigenvalues")
        pair: tuple[int, int] = param((1, 2), "two well indices")
        names: tuple[str, ...] = param(("a",), "labels")
        temps: tuple[float, ...] = param((1.0,), "temperatures")
        lr: dict | None = param(None, "a schedule")

    p = resolve_params(Params, sets=["spectrum=1,4", "pair=7, 8", "names=[a, b]", "temps="])
    assert p.spectrum == [1.0, 4.0] and p.pair == (7, 8) and p.names == ("a", "b")
    assert p.temps == ()
    for bad, says in (("pair=7", "expected 2 items"), ("temps=1,,2", "a list of float"),
                      ("spectrum=1,x", "a list of float"), ("lr={kind='linear'}", "cannot be set")):
        with pytest.raises(ConfigError, match=says):
            resolve_params(Params, sets=[bad])
