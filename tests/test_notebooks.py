"""Every notebook in analysis/notebooks/ runs end to end on the quick runs (the issue "one
scenario, one notebook and one verdict per claim").

Each notebook is executed with nbclient in a fresh kernel, with LANGEVIN_SIM_QUICK=1 (the
scenarios' quick presets) and LANGEVIN_SIM_DATA set to a temporary directory, where the
notebook makes its quick run files and figures itself (analysis/notebooks/runs.py).  The
notebooks are committed without outputs; the commands they print for the real runs must
be the ones docs/results.md quotes."""
import glob
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "analysis", "notebooks", "*.ipynb")))


def test_there_is_a_notebook_per_claim_in_scope():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert {"claim1_sgd_samples_boltzmann.ipynb", "claim2_flat_minima_volume.ipynb",
            "claim3_saddles_and_minima.ipynb", "claim4_spin_glass_threshold.ipynb",
            "claim5_grokking_diffusion.ipynb", "claim5c_grokking_delay.ipynb",
            "claim6_overparameterization.ipynb"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_committed_without_outputs(path):
    with open(path) as fh:
        nb = json.load(fh)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{os.path.basename(path)} has outputs; clear them before committing")


def _execute(path: str, data_dir: str):
    """The notebook at `path` executed in a fresh kernel on the quick runs (files in data_dir)."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.dirname(path)}})
    client.execute(env=dict(os.environ, LANGEVIN_SIM_QUICK="1", LANGEVIN_SIM_DATA=data_dir,
                            MPLBACKEND="Agg"))
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """path -> (future of the executed notebook, its data directory): every notebook started
    when the first is asked for, two kernels at a time (each kernel is mostly one busy
    thread, so a 2-core machine runs them in about half the time)."""
    pool = ThreadPoolExecutor(2)
    out = {}
    for path in NOTEBOOKS:
        d = tmp_path_factory.mktemp(os.path.basename(path).split(".")[0])
        out[path] = (pool.submit(_execute, path, str(d)), d)
    yield out
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_on_the_quick_runs(path, executed):
    future, tmp_path = executed[path]
    nb = future.result()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.get("name") == "stdout")
    assert "VERDICT" in text, "the notebook printed no verdict"
    assert list(tmp_path.glob("*.png")), "the notebook saved no figure"
    with open(os.path.join(ROOT, "docs", "results.md")) as fh:
        results = " ".join(fh.read().replace("\\\n", " ").split())
    commands = [line for line in text.splitlines() if line.startswith(("langevin-sim ", "python analysis/"))]
    assert commands, "the notebook printed no command for its real runs"
    for cmd in commands:
        assert " ".join(cmd.split()) in results, f"docs/results.md does not quote: {cmd}"
