"""Every notebook in analysis/notebooks/ runs end to end on the quick runs (the issue "one
scenario, one notebook and one verdict per claim").

Each notebook is executed with nbclient in a fresh kernel (in a subprocess queued when
collection ends: `starts_early`), with LANGEVIN_SIM_QUICK=1 (the scenarios' quick presets)
and LANGEVIN_SIM_DATA set to a temporary directory, where the notebook makes its quick run
files and figures itself (analysis/notebooks/runs.py).  The notebooks are committed without
outputs; the commands they print for the real runs must be the ones docs/results.md quotes."""
import glob
import json
import os
import sys

import pytest

from .conftest import early_result, starts_early

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "analysis", "notebooks", "*.ipynb")))


def test_there_is_a_notebook_per_claim_in_scope():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert {"claim1_sgd_samples_boltzmann.ipynb", "claim2_flat_minima_volume.ipynb",
            "claim3_saddles_and_minima.ipynb", "claim4_spin_glass_threshold.ipynb",
            "claim5_grokking_diffusion.ipynb", "claim5c_grokking_delay.ipynb",
            "claim6_overparameterization.ipynb", "claim7_flat_minima_generalize.ipynb"} <= names, names
    with open(os.path.join(ROOT, "analysis", "notebooks", "README.md")) as fh:   # the index
        index = fh.read()
    assert [n for n in sorted(names) if f"`{n}`" not in index] == [], "list them in README.md"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_committed_without_outputs(path):
    with open(path) as fh:
        nb = json.load(fh)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{os.path.basename(path)} has outputs; clear them before committing")


# The notebook at argv[1] executed in a fresh kernel on the quick runs (files in a temporary
# directory); prints {"stdout": the cells' printed text, "figures": the .png files it saved}.
EXECUTE = """
import json, os, sys, tempfile
import nbclient, nbformat
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
with tempfile.TemporaryDirectory() as data:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}}).execute(
        env=dict(os.environ, LANGEVIN_SIM_QUICK="1", LANGEVIN_SIM_DATA=data, MPLBACKEND="Agg"))
    figures = sorted(f for f in os.listdir(data) if f.endswith(".png"))
text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
               for o in c.outputs if o.get("name") == "stdout")
print(json.dumps({"stdout": text, "figures": figures}))
"""


# the two longest quick notebooks (~40 s each of the suite's tail on 2 cores) run with -m slow
SLOW_NOTEBOOKS = ("claim1b_teacher_student.ipynb", "claim7_flat_minima_generalize.ipynb")


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow)
                                  if os.path.basename(p) in SLOW_NOTEBOOKS else p
                                  for p in NOTEBOOKS], ids=os.path.basename)
@starts_early(lambda path: ([sys.executable, "-c", EXECUTE, path], dict(os.environ)), timeout=600)
def test_notebook_runs_on_the_quick_runs(path):
    """(Its notebook runs in a subprocess queued when collection ends.)"""
    r = early_result(test_notebook_runs_on_the_quick_runs, path=path)
    assert r.returncode == 0, r.stderr[-4000:]
    done = json.loads(r.stdout.strip().splitlines()[-1])
    text = done["stdout"]
    assert "VERDICT" in text, "the notebook printed no verdict"
    for line in text.splitlines():
        if line.startswith("VERDICT"):
            word = line.split(":", 1)[1].strip()
            assert word.startswith(WORDS), f"not one of the verdict words {WORDS}: {line}"
    assert done["figures"], "the notebook saved no figure"
    with open(os.path.join(ROOT, "docs", "results.md")) as fh:
        results = " ".join(fh.read().replace("\\\n", " ").split())
    commands = [line for line in text.splitlines() if line.startswith(("langevin-sim ", "python analysis/"))]
    assert commands, "the notebook printed no command for its real runs"
    for cmd in commands:
        assert " ".join(cmd.split()) in results, f"docs/results.md does not quote: {cmd}"


# the words a verdict may say (docs/results.md's header)
WORDS = ("holds only under stated conditions", "holds", "fails as stated", "undecided")
VERDICT_LINE = r"VERDICT[^:{]*: \{"        # print(f"VERDICT claim N ...: {word}: ...")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_verdict_words_are_computed_not_written_in(path):
    """Each VERDICT line prints its word from a variable the notebook computes from stated
    criteria: eight notebooks printed a fixed "holds only under stated conditions" (or no
    word at all) that no data could change."""
    import re

    with open(path) as fh:
        nb = json.load(fh)
    src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    lines = [line for line in src.splitlines() if "VERDICT" in line]
    assert lines, "the notebook prints no verdict"
    for line in lines:
        assert re.search(VERDICT_LINE, line), f"a verdict word written in, not computed: {line}"
