"""The run files a claim notebook reads: found in DATA, made when missing.

Each notebook names its runs once, as a scenario and its parameters (`run`) or a scenario,
a grid and base parameters (`scan`); the same call finds the file under DATA or, when it is
missing, makes it by running the scenario -- the same as the command `command_lines()`
prints, which docs/results.md quotes.

Environment:
  LANGEVIN_SIM_QUICK=1   use the scenarios' quick presets (the tests): every run gets the
                         scenario's QUICK dict on top of its parameters, then the notebook's
                         `quick` overrides; files are named <name>_quick(.h5)
  LANGEVIN_SIM_DATA=DIR  where run files live (default: the repository's data/)

Figures go to FIGURES (docs/figures/ for real runs, DATA for quick runs, so that the tests
never touch the committed figures).
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

from langevin_sim import open_run
from langevin_sim.errors import ConfigError
from langevin_sim.scenario import load_scenario, quick_preset, resolve_params, run_scenario

ROOT = Path(__file__).resolve().parents[2]
QUICK = os.environ.get("LANGEVIN_SIM_QUICK", "").strip().lower() not in ("", "0", "false", "no")
DATA = Path(os.environ.get("LANGEVIN_SIM_DATA") or ROOT / "data")
FIGURES = DATA if QUICK else ROOT / "docs" / "figures"
_COMMANDS: list[str] = []


def _value(v) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v))
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _sets(scenario: str, sets: dict, quick: dict | None, axes=()) -> dict:
    """The parameters of a run: `sets`, and in quick mode the scenario's QUICK preset and
    then the notebook's `quick` overrides on top (less the scan's `axes`)."""
    if not QUICK:
        return dict(sets)
    eff = {**sets, **quick_preset(load_scenario(_path(scenario))), **(quick or {})}
    return {k: v for k, v in eff.items() if k not in axes}


def _path(scenario: str) -> Path:
    return ROOT / "scenarios" / f"{scenario}.py"


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def run(name: str, scenario: str, sets: dict, quick: dict | None = None):
    """The open `Run` of DATA/<name>.h5 (quick: DATA/<name>_quick.h5), made by running
    `scenario` (a scenarios/ stem) with `sets` when the file is missing or incomplete.  A
    complete file written with other parameters is a ConfigError (delete it to rerun)."""
    out = DATA / f"{name}{'_quick' if QUICK else ''}.h5"
    _COMMANDS.append(f"langevin-sim run scenarios/{scenario}.py "
                     + " ".join(f"--set {k}={_value(v)}" for k, v in sets.items())
                     + f" --out {_rel(ROOT / 'data' / (name + '.h5'))}")
    eff = _sets(scenario, sets, quick)
    want = dataclasses.asdict(resolve_params(load_scenario(_path(scenario)).Params, sets=eff))
    if out.exists():
        r = open_run(out)
        if r.complete:
            have = r.config["meta"]["params"]
            if have != {k: list(v) if isinstance(v, tuple) else v for k, v in want.items()}:
                r.close()
                raise ConfigError(f"{out} was written with other parameters than this notebook "
                                  "asks for; delete it to rerun")
            return r
        r.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_scenario(_path(scenario), eff, out=out, overwrite=True, progress=False).close()
    return open_run(out)


def scan(name: str, scenario: str, grid: dict, sets: dict, quick: dict | None = None,
         quick_grid: dict | None = None, zipped: dict | None = None,
         quick_zipped: dict | None = None):
    """The `Scan` of directory DATA/<name> (quick: DATA/<name>_quick, over `quick_grid` and
    `quick_zipped` when given), run serially in this process (`langevin-sim scan --workers
    1`) for the points that are not done yet."""
    from langevin_sim.scan import run_scan

    flags = " ".join([f"--grid {k}={_value(v)}" for k, v in grid.items()]
                     + [f"--zip {k}={_value(v)}" for k, v in (zipped or {}).items()]
                     + [f"--set {k}={_value(v)}" for k, v in sets.items()])
    _COMMANDS.append(f"langevin-sim scan scenarios/{scenario}.py {flags} "
                     f"--out {_rel(ROOT / 'data' / name)} --workers 1")
    out = DATA / f"{name}{'_quick' if QUICK else ''}"
    if QUICK and quick_grid is not None:
        grid = quick_grid
    if QUICK and quick_zipped is not None:
        zipped = quick_zipped
    axes = {*grid, *(zipped or {})}
    sc = run_scan(_path(scenario), grid=grid, zipped=zipped,
                  sets=_sets(scenario, sets, quick, axes), out=out, workers=1, progress=False)
    bad = sc.manifest[sc.manifest["status"] != "done"]
    if len(bad):
        raise ConfigError(f"scan {out}: points not done:\n{bad.to_string()}")
    return sc


def command_lines() -> str:
    """The commands that write the real (non-quick) run files this notebook has asked for so
    far, one per line, as docs/results.md quotes them."""
    return "\n".join(dict.fromkeys(_COMMANDS))


def figure_path(name: str) -> Path:
    """Where to save figure `name` (docs/figures/ for real runs, DATA for quick runs)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    return FIGURES / name
