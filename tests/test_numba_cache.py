"""Numba's on-disk cache follows the kernels' sources (`langevin_sim.numba_cache`): Numba
checks only a cached function's own file, so a kernel inlining a step rule edited in another
module (or upgraded there) would load stale and run the old physics."""
import shutil
from pathlib import Path

import numba
from numba.core import config

import langevin_sim
from langevin_sim import numba_cache
from langevin_sim.kernels import common, double_well

PACKAGE = Path(langevin_sim.__file__).parent


def test_the_digest_follows_the_step_rules_not_the_analyses(tmp_path):
    """Editing a step rule (dynamics/langevin.py, backends/numpy_backend.py) gives another
    digest; editing an analysis or the CLI does not (no kernel compiles them)."""
    root = tmp_path / "pkg"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    base = numba_cache.source_digest(root)
    assert base == numba_cache.source_digest(PACKAGE)
    for edited, changes in (("analysis/stationary.py", False), ("cli.py", False),
                            ("dynamics/langevin.py", True),
                            ("backends/numpy_backend.py", True)):
        f = root / edited
        text = f.read_text()
        f.write_text(text + "\n# edited\n")
        assert (numba_cache.source_digest(root) != base) is changes, edited
        f.write_text(text)
    assert numba_cache.source_digest(root) == base


def test_kernels_cache_under_the_digest_folder():
    """The package's cached functions (made after the import set the folder) load from and
    save to <NUMBA_CACHE_DIR>/langevin_sim-<digest>."""
    want = Path(config.CACHE_DIR)
    assert want.name == numba_cache.PREFIX + numba_cache.source_digest()
    cached = [v for mod in (common, double_well) for v in vars(mod).values()
              if isinstance(v, numba.core.dispatcher.Dispatcher) and v._cache is not None
              and hasattr(v._cache, "_cache_path")]
    assert len(cached) > 10
    assert all(Path(v._cache._cache_path).is_relative_to(want) for v in cached)


def test_the_default_folder_drops_older_digests(tmp_path, monkeypatch):
    """Without NUMBA_CACHE_DIR the cache goes into the package's own folder, where the
    folders of older digests are removed."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(config, "CACHE_DIR", "")
    old = tmp_path / (numba_cache.PREFIX + "0" * 16)
    old.mkdir()
    (tmp_path / "other").mkdir()
    path = Path(numba_cache.key_cache_to_sources(tmp_path))
    assert path.parent == tmp_path and config.CACHE_DIR == str(path)
    assert not old.exists() and (tmp_path / "other").exists()


def test_the_shared_fallback_keeps_other_versions_in_use(tmp_path, monkeypatch):
    """Where the package's folder is read-only the cache goes to ~/.cache/langevin_sim/numba,
    shared by every such install of the user: two versions in use removed each other's
    folder at every import (each run then compiled cold).  There another digest's folder is
    removed only once unused for STALE_DAYS, and this one's time of use is refreshed."""
    import os
    import time

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "file").write_text("")
    shared = tmp_path / "xdg" / "langevin_sim" / "numba"
    recent, stale = (shared / (numba_cache.PREFIX + c * 16) for c in "01")
    recent.mkdir(parents=True)
    stale.mkdir()
    old = time.time() - (numba_cache.STALE_DAYS + 1) * 86400
    os.utime(stale, (old, old))
    path = Path(numba_cache.key_cache_to_sources(tmp_path / "file" / "numba"))  # not writable
    assert path.parent == shared and path.is_dir() and time.time() - path.stat().st_mtime < 60
    assert recent.exists() and not stale.exists()
