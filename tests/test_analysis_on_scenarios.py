"""Each analysis script on a run file of the scenario it is made for (the other pairs are in
the test_analysis_* files: stationary/double_well, basins/flat_vs_sharp, drift/valley_drift,
spinglass/pspin_threshold).  Quick settings; the verdict must hold and the figure be real."""
import os
import runpy

import matplotlib.pyplot as plt
import numpy as np
import pytest

from langevin_sim.scenario import run_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "covariance-em": ("quadratic.py", ["replicas=512", "steps=2000", "record_every=20",
                                       "spectrum=1,3"], "covariance.py", [],
                      "verdict: consistent with Euler-Maruyama exact"),
    "covariance-baoab": ("quadratic.py", ["replicas=512", "steps=2000", "record_every=20",
                                          "dynamics=baoab"], "covariance.py", [],
                         "verdict: consistent with BAOAB exact"),
    "covariance-sgd": ("sgd_least_squares.py", ["replicas=512", "steps=1500", "record_every=25"],
                       "covariance.py", [], "verdict: consistent with SGD exact (i.i.d. batches)"),
    "tails": ("sgd_least_squares.py", ["replicas=4096", "steps=800", "record_every=200", "d=1",
                                       "n=200", "batch_size=1", "lr=0.6", "backend=numpy"],
              "tails.py", ["--records", "2"], "CONSISTENT (|z| <= 3)"),
    "escape": ("double_well.py", ["start=left", "first_passage=true", "temperature=0.3",
                                  "replicas=1000", "steps=15000", "record_every=5000"],
               "escape.py", [], "AGREES with the quadrature"),
    "diagnostics": ("double_well.py", ["replicas=64", "steps=20000", "record_every=100"],
                    "diagnostics.py", [], "verdict:"),
}


@pytest.mark.parametrize("case", CASES)
def test_script_on_its_scenario(case, tmp_path, capsys, monkeypatch):
    scenario, sets, script, args, verdict = CASES[case]
    out = tmp_path / "run.h5"
    run_scenario(os.path.join(ROOT, "scenarios", scenario), sets, out=out).close()
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", [script, str(out), *args])
    runpy.run_path(os.path.join(ROOT, "analysis", script), run_name="__main__")
    text = capsys.readouterr().out
    assert verdict in text, text
    assert "INCONSISTENT" not in text and "DISAGREES" not in text, text
    png = tmp_path / f"run_{script[:-3]}.png"
    img = plt.imread(png)
    assert img.shape[0] >= 300 and img.shape[1] >= 400
    rgb = img[..., :3]
    assert np.mean(rgb.min(axis=-1) < 0.5) > 0.01                  # axes, text, marks drawn
    assert np.mean(np.std(rgb, axis=-1) > 0.05) > 0.002             # in colour (data)
