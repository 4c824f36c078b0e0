"""Numba's on-disk cache keyed by the sources its kernels are compiled from.

Numba invalidates a cached function only when its *own* source file changes, but the fused
kernels inline step rules written once in other modules (`dynamics`, `potentials`,
`backends.numpy_backend`, `rng`): after an edit of one of those, or an upgrade that changes
only them, Numba would load the old kernels and run the old physics without a word.  So the
package points Numba's cache at a folder named by a digest of every source a kernel can be
compiled from (`SOURCES`), set before any cached function is made (`langevin_sim/__init__`):
changed sources compile afresh into a new folder.  The folder sits under NUMBA_CACHE_DIR when
that is set, else in the package's own ``__pycache__/numba`` (Numba's default place, the
sources' folder), where folders of older digests are removed.  Where that is read-only it
sits in ~/.cache/langevin_sim/numba, which every such install of the user shares: there
another digest's folder is removed only once unused for STALE_DAYS (two versions in use
removed each other's kernels at every import, and each started cold).  Numba's cache
setting is process-wide: functions of other packages made afterwards cache there too.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from pathlib import Path

# what the numba and cuda kernels compile: their own modules and the step rules they inline
SOURCES = ("rng.py", "first_passage.py", "backends", "kernels", "dynamics", "potentials")
PREFIX = "langevin_sim-"
STALE_DAYS = 30   # the shared fallback folder keeps other digests' folders this long unused
DIGEST: str | None = None   # `source_digest` of the sources this process keyed its cache to


def source_digest(root: Path | None = None) -> str:
    """16 hex digits of SHA-256 over the paths and bytes of the `SOURCES` .py files under
    `root` (default: this package's folder)."""
    root = Path(__file__).parent if root is None else Path(root)
    h = hashlib.sha256()
    for entry in SOURCES:
        p = root / entry
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def key_cache_to_sources(default_base: Path | None = None) -> str:
    """Point Numba's on-disk cache at <base>/langevin_sim-<digest> (see the module docstring)
    and return that path; base: NUMBA_CACHE_DIR, else `default_base` (the package's
    __pycache__/numba; old digests' folders removed there), else ~/.cache/langevin_sim/numba."""
    from numba.core import config

    global DIGEST
    base, own, shared = os.environ.get("NUMBA_CACHE_DIR") or config.CACHE_DIR, False, False
    if not base:
        own = True
        base = Path(__file__).parent / "__pycache__" / "numba" if default_base is None \
            else Path(default_base)
        if not _writable(base):
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
                "langevin_sim" / "numba"
            shared = True
    DIGEST = source_digest()
    name = PREFIX + DIGEST
    path = Path(base) / name
    if own and path.parent.is_dir():
        stale = time.time() - STALE_DAYS * 86400
        for old in path.parent.glob(PREFIX + "*"):
            if old.name != name and not (shared and old.stat().st_mtime > stale):
                shutil.rmtree(old, ignore_errors=True)
    if shared:                      # this digest's folder in use: its time of last use
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
            os.utime(path)
    config.CACHE_DIR = str(path)
    return str(path)
