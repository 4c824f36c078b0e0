"""Point ids and seeds: a stable id per (coordinates, repeat) and a run seed per id.

id = "p" + the first 16 hex digits of SHA-256 of the canonical JSON {"coords", "repeat"};
seed = splitmix64(splitmix64(scan seed) XOR int(id[1:], 16)) >> 1 (63 bits).
"""
from __future__ import annotations

import hashlib
import json
import re

_MASK64 = (1 << 64) - 1
_ID = re.compile(r"p[0-9a-f]{16}")


def splitmix64(z: int) -> int:
    """One SplitMix64 output from state `z` (Steele, Lea & Flood 2014), mod 2^64."""
    z = (int(z) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def point_id(coords: dict, repeat: int) -> str:
    """Stable id of a scan point: "p" + 16 hex digits of SHA-256 of its canonical JSON."""
    canon = json.dumps({"coords": coords, "repeat": int(repeat)}, sort_keys=True,
                       separators=(",", ":"))
    return "p" + hashlib.sha256(canon.encode()).hexdigest()[:16]


def is_point_id(name: str) -> bool:
    """Whether `name` is a point id (`point_id`'s form), e.g. a point file's stem; a
    replica-exchange point's rung file <id>.rung<k>.h5 has the stem <id>.rung<k>, not one."""
    return _ID.fullmatch(name) is not None


def point_seed(scan_seed: int, pid: str) -> int:
    """Run seed of point `pid`: splitmix64(splitmix64(scan_seed) ^ int(pid[1:], 16)) >> 1."""
    return splitmix64(splitmix64(scan_seed) ^ int(pid[1:], 16)) >> 1
