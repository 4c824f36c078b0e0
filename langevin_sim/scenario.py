"""Scenarios: a script with a frozen `Params` dataclass and `build(params) -> Simulation`.

A scenario file defines

    @dataclass(frozen=True)
    class Params(RunParams):      # RunParams: replicas, steps, record_every, seed, backend, ...
        temperature: float = 0.5

    def build(p: Params) -> Simulation: ...

and ends with ``if __name__ == "__main__": main(__file__)``.  Parameters come from the
dataclass defaults, then an optional TOML file, then ``--set key=value`` overrides, each
checked against the field's type.  The resolved parameters are stored in the run file.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import tomllib
import types
import typing
from pathlib import Path

from .errors import ConfigError
from .io import Run


@dataclasses.dataclass(frozen=True)
class RunParams:
    """Parameters every scenario has: how many replicas, how long, where, how recorded."""

    replicas: int = 256
    steps: int = 10_000
    record_every: int = 100
    seed: int = 0
    backend: str = "numba"
    dtype: str = "float64"
    record_positions: bool = True


def load_scenario(path) -> types.ModuleType:
    """Import a scenario script by path; it must define `Params` and `build`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no scenario script at {path}; pass the path of a scenarios/*.py file")
    name = f"langevin_scenario_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    for attr in ("Params", "build"):
        if not hasattr(mod, attr):
            raise ConfigError(f"scenario {path} defines no `{attr}`; see langevin_sim.scenario")
    return mod


def _coerce(field: dataclasses.Field, hint, value):
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    target = args[0] if origin in (typing.Union, types.UnionType) and args else hint
    if value.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    try:
        if target is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if target in (int, float, str):
            return target(float(value)) if target is int and "e" in value.lower() else target(value)
    except ValueError:
        raise ConfigError(f"--set {field.name}={value!r}: expected {getattr(target, '__name__', target)}") from None
    return value


def resolve_params(params_cls, toml_path=None, sets: dict | list | None = None):
    """Defaults <- TOML file <- overrides (dict or ['key=value', ...]) -> frozen Params."""
    values: dict = {}
    if toml_path is not None:
        with open(toml_path, "rb") as fh:
            values.update(tomllib.load(fh))
    if isinstance(sets, (list, tuple)):
        for item in sets:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            values[k.strip()] = v.strip()
    elif sets:
        values.update(sets)
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; this scenario takes {sorted(fields)}")
    hints = typing.get_type_hints(params_cls)
    return params_cls(**{k: _coerce(fields[k], hints[k], v) for k, v in values.items()})


def run_scenario(path, sets=None, toml_path=None, out=None, overwrite: bool = False,
                 backend: str | None = None, progress: bool | None = None,
                 swmr: bool = False, flush_seconds: float = 1.0) -> Run:
    """Load, resolve, build and run a scenario; returns the Run (file at `out`)."""
    mod = load_scenario(path)
    p = resolve_params(mod.Params, toml_path, sets)
    if backend is not None:
        p = dataclasses.replace(p, backend=backend)
    sim = mod.build(p)
    sim.meta.update(scenario=os.path.basename(str(path)), params=dataclasses.asdict(p))
    if out is None:
        out = Path("data") / f"{Path(path).stem}.h5"
    return sim.run(p.steps, p.record_every, out=out, record_positions=p.record_positions,
                   overwrite=overwrite, progress=progress, swmr=swmr, flush_seconds=flush_seconds)


def main(path, argv=None) -> Run:
    """Command line of a scenario script: ``python scenarios/X.py [--set k=v] [--out PATH]``."""
    mod = load_scenario(path)
    ap = argparse.ArgumentParser(prog=os.path.basename(path), description=mod.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.epilog = "parameters (--set key=value):\n" + "\n".join(
        f"  {f.name} = {f.default!r}" for f in dataclasses.fields(mod.Params))
    a = ap.parse_args(argv)
    run = run_scenario(path, a.set, a.config, a.out, a.overwrite, a.backend, a.progress, a.swmr)
    print(run.summary())
    return run


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a scenario parameter (repeatable)")
    ap.add_argument("--config", metavar="TOML", help="TOML file of scenario parameters")
    ap.add_argument("--backend", choices=("numpy", "numba", "cuda"), help="override the backend")
    ap.add_argument("--out", help="run file to write (default data/<scenario>.h5)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    ap.add_argument("--swmr", action="store_true", help="write in SWMR mode for live reading")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: when stderr is a terminal)")
