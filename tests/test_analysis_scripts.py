"""analysis/ scripts read run files, print their table and write a PNG."""
import os
import runpy
import sys

from langevin_sim.scenario import run_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stationary_script(tmp_path, capsys, monkeypatch):
    out = tmp_path / "dw.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "double_well.py"),
                 ["replicas=2048", "steps=4000", "record_every=1000"], out=out, progress=False).close()
    png = tmp_path / "fig.png"
    monkeypatch.setattr(sys, "argv", ["stationary.py", str(out), "--png", str(png)])
    runpy.run_path(os.path.join(ROOT, "analysis", "stationary.py"), run_name="__main__")
    text = capsys.readouterr().out
    assert "chi2 =" in text and "n = 2048" in text
    assert png.stat().st_size > 10_000
