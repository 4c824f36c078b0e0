"""The plan of a scan: its points (ids, coordinates, repeats, seeds, full parameters).

The grid axes form a Cartesian product (last fastest), the zip keys vary together as one
more axis, repeats are fastest.  Every value is coerced by the scenario's `Params` field
types, so a point has the same id and seed from the command line or from Python.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import types
import typing

from ..errors import ConfigError
from ..scenario import _coerce, resolve_params
from .ids import point_id, point_seed


@dataclasses.dataclass(frozen=True)
class Point:
    """One scan point: id, coordinates (scan key -> coerced value), repeat index, seed, and
    the full resolved scenario parameters (JSON-normalized) it runs with."""

    id: str
    coords: dict
    repeat: int
    seed: int
    params: dict

    @property
    def path(self) -> str:
        return f"points/{self.id}.h5"


def _is_list(params_cls, key: str) -> bool:
    """Whether `key` is a list-valued field of `params_cls` (a tuple type, or one | None)."""
    hint = typing.get_type_hints(params_cls).get(key)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    return typing.get_origin(hint) in (tuple, list)


def _parse_axes(items, flag: str, params_cls) -> dict:
    """['key=v1,v2', ...] or {key: [values]} -> {key: [values]} (values as given).  A
    list-valued key's points are separated by ';' and its elements by ',', as --set reads
    one: spectrum=1,3;2,4 is two points, (1, 3) and (2, 4) (with ',' between points, the
    two-element --set spectrum=1,3 became two one-element spectra in a scan)."""
    if items is None:
        return {}
    if isinstance(items, dict):
        out = {str(k): list(v) if isinstance(v, (list, tuple, range)) else [v] for k, v in items.items()}
    else:
        out = {}
        for item in items:
            if "=" not in item:
                raise ConfigError(f"{flag} expects key=v1,v2,..., got {item!r}")
            k, v = item.split("=", 1)
            k = k.strip()
            if k in out:
                raise ConfigError(f"{flag} {k} given twice; list all its values in one {flag} {k}=v1,v2")
            out[k] = [s.strip() for s in v.split(";" if _is_list(params_cls, k) else ",")]
    hints = typing.get_type_hints(params_cls)
    for k, vals in out.items():
        sep = ";" if _is_list(params_cls, k) else ","
        given = f"{flag} {k}={sep.join(map(str, vals))}"
        if not vals or any(isinstance(s, str) and s == "" for s in vals):
            example = (f"a ';'-separated list of points, e.g. '{k}=1,3;2,4'"
                       if sep == ";" else f"a comma-separated list of values, e.g. {k}=0.5,1")
            raise ConfigError(f"{given}: give {example}")
        if k in hints:      # (an unknown key: `plan_scan` names the scenario's parameters)
            for v in vals:
                _coerce(hints[k], v, f"{given}: {v!r}")
    return out


def parse_sets(sets) -> dict:
    """['key=value', ...] or {key: value} -> {key: value} (values as given)."""
    if sets is None:
        return {}
    if isinstance(sets, dict):
        return dict(sets)
    out = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _canonical(params_cls, values: dict) -> dict:
    """Python numbers given for float / int fields as those types (1 -> 1.0 for a float
    field, 2.0 -> 2 for an int one), so that a point has the same id and seed whether its
    values came from the command line (strings, coerced by `resolve_params`) or Python."""
    hints = typing.get_type_hints(params_cls)
    out = {}
    for k, v in values.items():
        hint = hints.get(k)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        target = args[0] if args and typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            out[k] = v
        elif target is float:
            out[k] = float(v)
        elif target is int and isinstance(v, float):
            if not v.is_integer():
                raise ConfigError(f"{k}={v!r}: expected an int")
            out[k] = int(v)
        else:
            out[k] = v
    return out


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def plan_scan(params_cls: type, grid=None, zipped=None, repeat: int = 1, sets=None,
              toml_path=None, preset: dict | None = None, axis_order: list | None = None
              ) -> tuple[dict, list[Point], list[str], list[str]]:
    """Resolve the points of a scan of a scenario's `Params` class.

    Returns (base, points, grid_keys, zip_keys): `base` the JSON-normalized base parameters
    (defaults <- preset <- TOML <- sets; its ``seed`` is the scan seed), `points` a list of
    `Point` in order (grid axes in the order given, last fastest; then the zip axis; repeats
    fastest).  preset: the scenario's quick preset (``--quick``), less the scanned keys.
    axis_order: the grid keys' order to keep when they are these keys in another order (a
    rerun of a scan).
    """
    grid = _parse_axes(grid, "--grid", params_cls)
    if axis_order is not None and sorted(axis_order) == sorted(grid):
        grid = {k: grid[k] for k in axis_order}
    zipped, sets = _parse_axes(zipped, "--zip", params_cls), parse_sets(sets)
    sets = _canonical(params_cls, sets)
    if int(repeat) < 1:
        raise ConfigError(f"--repeat must be >= 1, got {repeat}")
    fields = {f.name for f in dataclasses.fields(params_cls)}
    for flag, keys in (("--grid", grid), ("--zip", zipped)):
        unknown = sorted(set(keys) - fields)
        if unknown:
            raise ConfigError(f"{flag} key(s) {unknown} are not parameters of this scenario; "
                              f"it takes {sorted(fields)}")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise ConfigError(f"{both} given both as --grid and --zip; use one")
    scanned = set(grid) | set(zipped)
    if "seed" in scanned:
        raise ConfigError("seed cannot be a scan axis: the point seeds derive from --set seed=S; "
                          "use --repeat N for N seeds per point")
    overlap = sorted(scanned & set(sets))
    if overlap:
        raise ConfigError(f"{overlap} given both as scan axes and --set; drop the --set")
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"--zip keys need lists of equal length, got {lengths}")
    preset = {k: v for k, v in (preset or {}).items() if k not in scanned} or None
    base = _jsonable(dataclasses.asdict(resolve_params(params_cls, toml_path, sets, preset)))
    scan_seed = base["seed"]
    zip_rows = [dict(zip(zipped, vals)) for vals in zip(*zipped.values())] if zipped else [{}]
    points, seen = [], {}
    for gvals in itertools.product(*grid.values()):
        for zrow in zip_rows:
            raw = _canonical(params_cls, dict(zip(grid, gvals), **zrow))
            p = resolve_params(params_cls, toml_path, {**sets, **raw}, preset)
            coords = _jsonable({k: getattr(p, k) for k in raw})
            for r in range(int(repeat)):
                pid = point_id(coords, r)
                if pid in seen:
                    raise ConfigError(f"scan points {seen[pid]} and {coords} coincide after type "
                                      "coercion; list each value once")
                seen[pid] = coords
                seed = point_seed(scan_seed, pid)
                params = _jsonable(dataclasses.asdict(dataclasses.replace(p, seed=seed)))
                points.append(Point(pid, coords, r, seed, params))
    return base, points, list(grid), list(zipped)
