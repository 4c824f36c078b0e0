"""analysis/ scripts read run files, print their table and write a PNG."""
import os
import runpy
import sys

import matplotlib.pyplot as plt
import pytest

from langevin_sim import open_run
from langevin_sim.analysis import run_marginal_fit
from langevin_sim.scenario import run_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stationary_script(tmp_path, capsys, monkeypatch):
    """On an equilibrated double-well run (2048 replicas, T = 0.5) the script prints the fit
    of `run_marginal_fit`, which passes (measured p = 0.19) while the same samples reject
    T = 0.35 (p ~ 1e-22); its figure is a 720 x 480 image with a coloured histogram."""
    out = tmp_path / "dw.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "double_well.py"),
                 ["replicas=2048", "steps=4000", "record_every=1000"], out=out,
                 progress=False).close()
    png = tmp_path / "fig.png"
    monkeypatch.setattr(sys, "argv", ["stationary.py", str(out), "--png", str(png)])
    runpy.run_path(os.path.join(ROOT, "analysis", "stationary.py"), run_name="__main__")
    text = capsys.readouterr().out
    with open_run(out) as run:
        fit = run_marginal_fit(run)
        wrong = run_marginal_fit(run, temperature=0.35)
    assert fit.table() in text
    assert fit.n == 2048 and fit.dof >= 20 and fit.p_value > 0.01, fit.table()
    assert wrong.p_value < 1e-6, wrong.table()
    assert "verdict: consistent with the Boltzmann marginal" in text
    assert wrong.table().endswith("verdict: INCONSISTENT with the Boltzmann marginal exp(-U/T)/Z "
                                  f"(p = {wrong.p_value:.3g}, level 0.001)")
    with pytest.raises(TypeError):      # its options keyword-only: (run, 30, 5) was a record
        run_marginal_fit(out, 30, 5)    # index and a temperature, silently
    img = plt.imread(png)
    assert img.shape == (480, 720, 4)
    rgb = img[..., :3]
    coloured = rgb.max(axis=-1) - rgb.min(axis=-1) > 0.1
    assert coloured.mean() > 0.05, "no histogram drawn"
    assert (rgb.max(axis=-1) < 0.3).mean() > 0.002, "no axes, text or curve drawn"


def test_an_incomplete_run_is_analysed_with_one_warning_line(tmp_path, capsys, monkeypatch):
    """A run stopped short of its target (killed, stopped, still written) is analysed as far
    as it got, which the output said nowhere ("steps 2600" of a 2,000,000-step run): the
    analyses warn (IncompleteRunWarning, once per run file however many functions read it)
    and a script prints it as one line."""
    import json
    import warnings

    import h5py

    from langevin_sim import Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.errors import IncompleteRunWarning
    from langevin_sim.io import format as F
    from langevin_sim.potentials import DoubleWell

    out = tmp_path / "inc.h5"
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(0.01, 1.0), 64, backend="numpy", seed=1)
    sim.run(300, 100, out=out, progress=False).close()
    with h5py.File(out, "r+") as f:             # as a run started for 2,000,000 steps, stopped
        cfg = json.loads(f["config"].attrs["json"])
        f["config"].attrs["json"] = json.dumps(dict(cfg, steps_target=2_000_000))
        commit = f["commit"][()]
        commit[list(F.COMMIT_FIELDS).index("complete")] = 0
        f["commit"][...] = commit
    with open_run(out) as run, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert not run.complete
        run_marginal_fit(run)
        run_marginal_fit(run, temperature=0.5)
    said = [str(w.message) for w in caught if issubclass(w.category, IncompleteRunWarning)]
    assert said == [f"{out} is incomplete (step 300 of 2000000): analysed as far as it got; "
                    f"`langevin-sim resume {out}` finishes it"]
    monkeypatch.setattr(sys, "argv", ["stationary.py", str(out), "--png", str(tmp_path / "f.png")])
    runpy.run_path(os.path.join(ROOT, "analysis", "stationary.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert err.count("stationary.py: warning: ") == 1 and "is incomplete (step 300 of" in err, err
