"""Scenarios: a script with a frozen `Params` dataclass and `build(params) -> Simulation`.

A scenario file defines

    @dataclass(frozen=True)
    class Params(RunParams):      # RunParams: replicas, steps, record_every, seed, backend, ...
        replicas: int = 4096      # a new default; the meaning is RunParams'
        temperature: float = param(0.5, "temperature T of the Langevin noise")
        model: Literal["a", "b"] = param("a", "which model")   # --help lists the choices

    def build(p: Params) -> Simulation: ...

and ends with ``if __name__ == "__main__": main(__file__)``.  Every field states its meaning
once, in `param(default, help)`; ``--help`` prints it with the type, default and choices.
Parameters come from the dataclass defaults, then (with ``--quick``) the scenario's quick
preset, then an optional TOML file, then ``--set key=value`` overrides, each checked against
the field's type.  The resolved parameters are stored in the run file.

The quick preset is a module-level dict next to `Params`,

    QUICK = {"replicas": 256, "steps": 2000}   # a small run of the same experiment, seconds

used by ``--quick`` (``python scenarios/X.py --quick``, ``langevin-sim run X.py --quick``,
``run_scenario(..., quick=True)``), by the tests, and by the notebooks when
LANGEVIN_SIM_QUICK=1; a quick run writes ``data/<scenario>_quick.h5`` by default, so it never
replaces the real run's file.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import numbers
import os
import re
import sys
import textwrap
import tomllib
import types
import typing
import warnings
from collections.abc import Iterable
from pathlib import Path

from .backends import NAMES as BACKENDS
from .errors import ConfigError, UnusedParameterWarning
from .io import Run

Backend = typing.Literal[BACKENDS]
Dtype = typing.Literal["float64", "float32"]
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def param(default, help: str):
    """A `Params` field: its default and one line of meaning, shown by the scenario's --help."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class RunParams:
    """Parameters every scenario has: how many replicas, how long, where, how recorded."""

    replicas: int = param(256, "number of independent replicas (chains) simulated together")
    steps: int = param(10_000, "number of steps to run (the run's planned total)")
    record_every: int = param(100, "steps between two records")
    seed: int = param(0, "seed of every random number: noise, minibatches, initial states")
    backend: Backend = param("numba", "numpy: the float64 reference; numba: compiled CPU "
                                      "kernels; cuda: GPU (pip install -e \".[cuda12]\" or "
                                      "\".[cuda13]\", by the driver's CUDA major)")
    dtype: Dtype = param("float64", "floating-point type of the state")
    record_positions: bool = param(True, "record every replica's position (false: energies and "
                                         "observables only)")


def unused(p, names: Iterable[str], when: str) -> None:
    """Warn (`UnusedParameterWarning`, one line) for each parameter of `p` in `names` set
    away from its default, which has no effect `when` (e.g. "with dynamics=overdamped"): a
    scenario's build calls it where it leaves options out, so that an option the user set is
    never ignored silently (a warning, not an error: a scan over the dynamics shares its
    other settings)."""
    defaults = {f.name: f.default for f in dataclasses.fields(p)}
    for name in names:
        v = getattr(p, name)
        if v != defaults[name]:
            warnings.warn(f"{name}={v} has no effect {when} (default {defaults[name]}); the run "
                          "goes on without it", UnusedParameterWarning, stacklevel=2)


def load_scenario(path) -> types.ModuleType:
    """Import a scenario script by path; it must define `Params` and `build`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"scenario {path}: no such file; pass the path of a scenario script "
                          "such as scenarios/double_well.py")
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"{path} is not a scenario: a scenario is a Python script (*.py) "
                          "defining `Params` and `build`, such as scenarios/double_well.py")
    name = f"langevin_scenario_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    params = getattr(mod, "Params", None)
    lacks = [what for what, ok in [
        ("`Params` (a dataclass extending langevin_sim.scenario.RunParams)",
         isinstance(params, type) and issubclass(params, RunParams)),
        ("`build(params) -> Simulation`", callable(getattr(mod, "build", None)))] if not ok]
    if lacks:
        raise ConfigError(f"{path} is not a scenario: it defines no {' and no '.join(lacks)}; "
                          "see scenarios/double_well.py")
    return mod


def _read_toml(path) -> dict:
    """The table of TOML file `path`; ConfigError naming the file (and line) if unreadable."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not a TOML file (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as e:
        m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(e))
        where = f"at line {m[2]}, column {m[3]}: {m[1]}" if m else str(e)
        raise ConfigError(f"--config {path}: invalid TOML {where}") from None


def _optional(hint) -> bool:
    return (typing.get_origin(hint) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(hint))


def _choices(hint) -> tuple:
    """The allowed values of a Literal (or optional Literal) field type, else ()."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return sum((_choices(a) for a in typing.get_args(hint)), ())
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (tuple, list):
        return f"list of {typing.get_args(hint)[0].__name__}"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return type(typing.get_args(hint)[0]).__name__
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _parse(kind: type, value):
    """`value` as a `kind` (bool, int, float or str): strings are parsed, numbers converted
    when exactly representable; ValueError if it does not fit."""
    if isinstance(value, str) and kind is not str:
        v = value.strip().lower()
        if kind is bool and v in _TRUE + _FALSE:
            return v in _TRUE
        value = int(v) if kind is int and re.fullmatch(r"[-+]?\d+", v) else float(v)
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is float and number:
        return float(value)
    if kind is int and number and float(value).is_integer():
        return int(value)
    if kind in (bool, str) and isinstance(value, kind):
        return value
    raise ValueError(value)


def _coerce(hint, value, where: str):
    """`value` as a value of field type `hint` (bool, int, float, str, a Literal, or one of
    them | None); ConfigError naming `where` the value came from if it does not fit."""
    if _optional(hint):
        if value is None or isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is typing.Literal:
        for c in typing.get_args(hint):
            if value == c or isinstance(value, str) and value == str(c):
                return c
        raise ConfigError(f"{where}: expected one of {', '.join(map(str, _choices(hint)))}")
    if typing.get_origin(hint) in (tuple, list):   # tuple[kind, ...], tuple[a, b], list[kind]:
        args = typing.get_args(hint)                # "1,2" / "[1, 2]" or a TOML array
        variable = typing.get_origin(hint) is list or args[1:] == (Ellipsis,)
        kinds = args[:1] if variable else args
        if isinstance(value, str):
            inner = value.strip().strip("[]()")
            items = [v.strip() for v in inner.split(",")] if inner.strip() else []
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            items = None
        what = (f"a list of {kinds[0].__name__}" if variable
                else f"{len(kinds)} items ({', '.join(k.__name__ for k in kinds)})")
        if items is None:
            raise ConfigError(f"{where}: expected {what}")
        if not variable and len(items) != len(kinds):
            raise ConfigError(f"{where}: expected {what}, got {len(items)}")
        try:
            if any(isinstance(v, str) and not v for v in items):
                raise ValueError("an empty item")
            out = [_parse(kinds[min(i, len(kinds) - 1)], v) for i, v in enumerate(items)]
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected {what}") from None
        return out if typing.get_origin(hint) is list else tuple(out)
    if hint not in (bool, int, float, str):
        raise ConfigError(f"{where}: a field of type {_type_name(hint)} cannot be set from "
                          "--set or --config; a scenario's Params use bool, int, float, str, a "
                          "Literal, tuple[T, ...], tuple[T1, T2], list[T], or one of them | None")
    try:
        return _parse(hint, value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{where}: expected {_type_name(hint)}") from None


def resolve_params(params_cls, toml_path=None, sets: dict | list | None = None,
                   preset: dict | None = None):
    """Defaults <- preset (a scenario's QUICK dict) <- TOML file <- overrides (dict or
    ['key=value', ...]) -> frozen Params.

    An unknown key or a value of the wrong type is a ConfigError naming where it came from
    (the preset, the --config file and key, the --set item, or the argument)."""
    given: dict = {}  # key -> (value, where it came from)
    if preset:
        given.update((k, (v, f"{k}={v!r} in the quick preset (QUICK)")) for k, v in preset.items())
    if toml_path is not None:
        given.update((k, (v, f"{k} = {v!r} in --config {toml_path}"))
                     for k, v in _read_toml(toml_path).items())
    if isinstance(sets, (list, tuple)):
        for item in sets:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            k, v = (s.strip() for s in item.split("=", 1))
            given[k] = (v, f"--set {k}={v}")
    elif sets:
        given.update((k, (v, f"{k}={v!r}")) for k, v in sets.items())
    fields = {f.name for f in dataclasses.fields(params_cls)}
    unknown = [where for k, (_, where) in given.items() if k not in fields]
    if unknown:
        raise ConfigError(f"unknown parameter(s): {'; '.join(unknown)}; this scenario takes "
                          f"{sorted(fields)}")
    hints = typing.get_type_hints(params_cls)
    return params_cls(**{k: _coerce(hints[k], v, where) for k, (v, where) in given.items()})


def field_help(params_cls, name: str) -> str:
    """A `Params` field's meaning: its `param(..., help)`, else that of the field it overrides
    (ConfigError if there is none)."""
    for cls in params_cls.__mro__:
        f = vars(cls).get("__dataclass_fields__", {}).get(name)
        if f is not None and "help" in f.metadata:
            return f.metadata["help"]
    raise ConfigError(f"scenario parameter {name!r} has no help text; declare it as "
                      f"`{name}: type = param(default, \"what it means\")`")


def params_help(params_cls) -> str:
    """The --help listing of a scenario's parameters: name, type, default, choices and
    meaning of each (ConfigError if a field has no help text)."""
    hints = typing.get_type_hints(params_cls)
    out = ["parameters (--set KEY=VALUE, or KEY = VALUE lines in the --config TOML file):"]
    for f in dataclasses.fields(params_cls):
        head = f"  {f.name}: {_type_name(hints[f.name])} = {f.default!r}"
        if _choices(hints[f.name]):
            head += f"  (one of: {', '.join(map(str, _choices(hints[f.name])))})"
        out += [head, textwrap.fill(field_help(params_cls, f.name), 92,
                                    initial_indent=" " * 6, subsequent_indent=" " * 6)]
    return "\n".join(out)


def quick_preset(mod: types.ModuleType) -> dict:
    """A loaded scenario's quick preset: its module-level ``QUICK`` dict of parameter
    overrides (ConfigError if it declares none or not a dict)."""
    preset = getattr(mod, "QUICK", None)
    if not isinstance(preset, dict):
        name = getattr(mod, "__file__", mod.__name__)
        raise ConfigError(f"{name} declares no quick preset; add a module-level dict next to "
                          "Params, e.g. QUICK = {\"replicas\": 256, \"steps\": 2000}")
    return dict(preset)


def run_scenario(path, sets=None, toml_path=None, out=None, overwrite: bool = False,
                 backend: str | None = None, progress: bool | None = None,
                 swmr: bool = False, flush_seconds: float = 1.0, quick: bool = False) -> Run:
    """Load, resolve, build and run a scenario; returns the Run (file at `out`, default
    data/<scenario>.h5, or data/<scenario>_quick.h5 for the quick preset).

    quick: apply the scenario's `QUICK` preset before `toml_path` and `sets`."""
    mod = load_scenario(path)
    p = resolve_params(mod.Params, toml_path, sets, preset=quick_preset(mod) if quick else None)
    if backend is not None:
        p = dataclasses.replace(p, backend=backend)
    sim = mod.build(p)
    sim.meta.update(scenario=os.path.basename(str(path)), params=dataclasses.asdict(p))
    if out is None:
        out = Path("data") / f"{Path(path).stem}{'_quick' if quick else ''}.h5"
    return sim.run(p.steps, p.record_every, out=out, record_positions=p.record_positions,
                   overwrite=overwrite, progress=progress, swmr=swmr, flush_seconds=flush_seconds)


class _ScenarioParser(argparse.ArgumentParser):
    """A scenario script's parser; its help ends with `params_help`, built when asked for, so
    a field without help text fails ``--help`` but not a run."""

    def __init__(self, params_cls, quick: dict | None = None, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self.params_cls, self.quick = params_cls, quick

    def format_help(self) -> str:
        self.epilog = params_help(self.params_cls)
        if self.quick:
            self.epilog += "\n\n" + textwrap.fill(
                "quick preset (--quick): " + ", ".join(f"{k}={v}" for k, v in self.quick.items()),
                92, subsequent_indent="  ")
        return super().format_help()


def main(path, argv=None) -> Run:
    """Command line of a scenario script: ``python scenarios/X.py [--set k=v] [--out PATH]``.

    A LangevinSimError exits with status 2 and one line ``X.py: error: ...``; Ctrl-C and
    SIGTERM stop with one line saying how to resume; diverged replicas are reported."""
    from .cli import guarded

    prog = os.path.basename(path)
    done = []

    def go() -> None:
        mod = load_scenario(path)
        ap = _ScenarioParser(mod.Params, getattr(mod, "QUICK", None), prog=prog,
                             description=mod.__doc__)
        add_run_arguments(ap)
        a = ap.parse_args(argv)
        done.append(run_scenario(path, a.set, a.config, a.out, a.overwrite, a.backend,
                                 a.progress, a.swmr, quick=a.quick))
        print(done[0].summary())

    status = guarded(go, prog=prog, exiting=True)    # (a nonzero status exits below)
    if status:
        sys.exit(status)
    return done[0]


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `langevin-sim run` and of a scenario script."""
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a scenario parameter (repeatable)")
    ap.add_argument("--config", metavar="TOML", help="TOML file of scenario parameters")
    ap.add_argument("--backend", choices=typing.get_args(Backend), help="override the backend")
    ap.add_argument("--quick", action="store_true", help="start from the scenario's quick preset (QUICK: a small run of seconds; "
                         "--config and --set still apply on top)")
    ap.add_argument("--out", help="run file to write (default data/<scenario>.h5, "
                                  "data/<scenario>_quick.h5 with --quick)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    ap.add_argument("--swmr", action="store_true", help="write in SWMR mode for live reading")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: when stderr is a terminal)")
