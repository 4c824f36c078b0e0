"""The README's commands and Python examples work and show what the README says."""
import dataclasses
import glob
import os
import re
import runpy
import shlex
import sys
import typing

import numpy as np
import pytest

from langevin_sim import open_run
from langevin_sim.cli import main as cli
from langevin_sim.scenario import field_help, load_scenario

from .conftest import assert_within_se

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
SCENARIOS = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.py")))


def bash_block(after: str) -> list[str]:
    """The commands of the first ```bash block after the line `after`, comments dropped."""
    block = re.search(rf"^{re.escape(after)}\n\n?```bash\n(.*?)```", README, re.S | re.M).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def sh(command: str, monkeypatch, *extra: str) -> None:
    """Run a README command line in this process (cwd: the test's directory, scripts from
    the checkout), with `extra` arguments appended; it must succeed."""
    argv = [os.path.join(ROOT, a) if a.startswith(("scenarios/", "analysis/")) else a
            for a in shlex.split(command)] + list(extra)
    if argv[0] == "langevin-sim":
        assert cli(argv[1:]) == 0, command
        return
    assert argv[0] == "python", command
    monkeypatch.setattr(sys, "argv", argv[1:])
    runpy.run_path(argv[1], run_name="__main__")


def test_first_lines_are_the_two_commands_and_ci_runs_them():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    install, test = block[1].split(" && ")
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert install == 'pip install -e ".[dev]"' and 'pip install -q -e ".[dev]"' in ci
    assert test == "python -m pytest" and "\npython3 -m pytest" in ci


def test_python_example_samples_the_exact_variance(capsys):
    """The ```python example prints the sampled variance of each eigen-coordinate, then
    Euler-Maruyama's exact one; they agree within 4 standard errors.  The pooled records are
    100 steps apart, (1 - 0.1 * 0.5)^100 < 0.01 in correlation, so all n = records x
    replicas samples count as independent: SE = exact * sqrt(2 / (n - 1)).  (```py blocks
    are cluster-only snippets and do not run here.)"""
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    printed = np.array(re.findall(r"[-+]?\d+\.\d*(?:e[-+]?\d+)?", capsys.readouterr().out), float)
    d = len(ns["exact"])
    assert printed.size == 2 * d
    sampled, exact = printed[:d], printed[d:]
    np.testing.assert_allclose(exact, ns["exact"], rtol=1e-6)
    n = ns["y"].shape[0] * ns["y"].shape[1]
    assert_within_se(sampled, exact, exact * np.sqrt(2 / (n - 1)), what="README sampled variance")


def test_demo_command_writes_the_run_and_the_figure(tmp_path, monkeypatch, capsys):
    """The first command: 4096 replicas (the scenario's default; run here with fewer and
    shorter) write data/double_well.h5, then the analysis prints the chi-square table and
    saves data/double_well_stationary.png."""
    install, scenario, analysis = bash_block("# langevin_sim")[0].split(" && ")
    assert install == "pip install -e ."
    assert load_scenario(os.path.join(ROOT, shlex.split(scenario)[1])).Params().replicas == 4096
    monkeypatch.chdir(tmp_path)
    sh(scenario, monkeypatch, "--no-progress", "--set", "replicas=256", "--set", "steps=400",
       "--set", "record_every=200")
    with open_run("data/double_well.h5") as run:
        assert run.complete and run.steps_done == 400 and run.n_records == 3
    capsys.readouterr()
    sh(analysis, monkeypatch)
    out = capsys.readouterr().out
    assert re.search(r"^chi2 = [\d.]+ on \d+ dof, p = .*, n = 256$", out, re.M), out
    assert "figure: data/double_well_stationary.png" in out
    assert os.path.getsize("data/double_well_stationary.png") > 10_000


def test_command_line_block(tmp_path, monkeypatch, capsys):
    """`run` writes data/dw.h5 with the --set values, `info` reports config, progress,
    records, divergences and completeness, `resume` leaves a finished run at its planned
    total, `resume --steps` extends it (the run uses 64 replicas to stay fast)."""
    run_cmd, info, resume, extend, help_cmd = bash_block("## Command line")
    monkeypatch.chdir(tmp_path)
    sh(run_cmd, monkeypatch, "--set", "replicas=64", "--no-progress")
    with open_run("data/dw.h5") as run:
        assert run.complete and run.steps_done == 50_000 and run.n_records == 101
        assert run.config["dynamics"]["temperature"]["start"] == 0.3
        assert run.config["meta"]["params"]["temperature"] == 0.3
    capsys.readouterr()
    sh(info, monkeypatch)
    text = capsys.readouterr().out
    for line in ('potential  {"class": "DoubleWell"',
                 '"temperature": {"kind": "constant", "start": 0.3',
                 "progress   50000 / 50000 steps, 101 records every 500 steps, complete",
                 "records    energy(101, 64), positions(101, 64, 1)",
                 "diverged   0 of 64 replicas"):
        assert line in text, (line, text)
    sh(resume, monkeypatch)
    with open_run("data/dw.h5") as run:
        assert run.complete and run.steps_done == 50_000 and run.n_records == 101
    sh(extend, monkeypatch, "--no-progress")
    with open_run("data/dw.h5") as run:
        assert run.complete and run.steps_done == 100_000 and run.n_records == 201
    assert help_cmd == "python scenarios/double_well.py --help"


def type_name(hint) -> str:
    if typing.get_origin(hint) is tuple:
        return f"list of {typing.get_args(hint)[0].__name__}"
    if typing.get_origin(hint) is typing.Literal:
        return type(typing.get_args(hint)[0]).__name__
    return " | ".join("None" if a is type(None) else a.__name__ for a in typing.get_args(hint)) \
        or hint.__name__


@pytest.mark.parametrize("path", SCENARIOS, ids=os.path.basename)
def test_every_scenario_help_lists_type_meaning_and_choices(path, monkeypatch, capsys):
    """`python scenarios/X.py --help` (README: "every scenario lists its parameters"): each
    field as `name: type = default`, its choices when it has some, then its meaning."""
    assert len(SCENARIOS) >= 8
    with pytest.raises(SystemExit) as e:
        sh(f"python {shlex.quote(path)} --help", monkeypatch)
    assert e.value.code == 0
    text = capsys.readouterr().out
    P = load_scenario(path).Params
    hints = typing.get_type_hints(P)
    for f in dataclasses.fields(P):
        head = f"\n  {f.name}: {type_name(hints[f.name])} = {f.default!r}"
        if typing.get_origin(hints[f.name]) is typing.Literal:
            head += f"  (one of: {', '.join(map(str, typing.get_args(hints[f.name])))})"
        m = re.search(re.escape(head) + r"\n((?: {6}\S.*\n)+)", text)
        assert m, (head, text)
        assert " ".join(m[1].split()) == field_help(P, f.name), (f.name, m[1])
    assert re.search(r"^  backend: str = '\w+'  \(one of: numpy, numba, cuda\)$", text, re.M)
    assert "\n  dtype: str = 'float64'  (one of: float64, float32)\n" in text
