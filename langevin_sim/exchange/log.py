"""The exchange log: group /exchange of the lowest rung's run file, one row per exchange.

Datasets (n = exchanges, M = ladders, K = rungs), appended before that file's commit marker:
  step (n,) int64          the step count at which exchange i took place (i + 1) * every
  walker (n, M, K) int16   which walker (its starting rung) sits on each rung after it
  accepted (n, M, K-1) int8  per rung pair (k, k+1): 1 swapped, 0 refused, -1 not attempted
  energy (n, M, K) float64 U on each rung just before it (what the acceptance used)
  walker_start (M, K) int16  the walker on each rung when the file was laid out (identity
                             from step 0; a ladder continued into a new file carries its own)
plus scales ladder (replica ids), rung, pair and temperature (K,).  Committed rows: the
first steps_done // every - start // every (the commit marker of the file is the exchange
commit), with start (attribute, 0 when absent) the ladder's step when the file was laid out.
"""
from __future__ import annotations

import h5py
import numpy as np

from ..io import format as F

GROUP = "exchange"
SERIES = {"walker": (np.int16, "rung"), "accepted": (np.int8, "pair"), "energy": (np.float64, "rung")}


def create(f: h5py.File, ladders: np.ndarray, temperatures, every: int, start: int,
           walker: np.ndarray, target: int | None = None) -> None:
    """Lay out an empty /exchange group for ladders `ladders` (ids) and K temperatures, for
    a run from step `start` whose walker permutation (M, K) is then `walker`; with the run's
    `target` step its chunks hold at most the planned exchanges (64 rows at least: 1 MB
    chunks made a tiny ladder's rung 0 3.3 MB), a resume past it adds chunks."""
    g = f.create_group(GROUP)
    K = len(temperatures)
    step = g.create_dataset("step", (0,), np.int64, maxshape=(None,), chunks=(4096,))
    step.make_scale("step")
    scales = {}
    for name, values in (("ladder", ladders), ("rung", np.arange(K)), ("pair", np.arange(K - 1))):
        scales[name] = g.create_dataset(name, data=np.asarray(values, np.int64))
        scales[name].make_scale(name)
    t = g.create_dataset("temperature", data=np.asarray(temperatures, np.float64))
    t.dims[0].attach_scale(scales["rung"])
    M = len(ladders)
    for name, (dtype, last) in SERIES.items():
        n_last = K if last == "rung" else K - 1
        rows = max(1, F.CHUNK_BYTES // (M * n_last * np.dtype(dtype).itemsize))
        if target is not None:
            rows = min(rows, max(64, (int(target) - int(start)) // int(every) + 1))
        ds = g.create_dataset(name, (0, M, n_last), dtype, maxshape=(None, M, n_last),
                              chunks=(rows, M, n_last))
        for i, sc in enumerate((step, scales["ladder"], scales[last])):
            ds.dims[i].attach_scale(sc)
    ds = g.create_dataset("walker_start", data=np.asarray(walker, np.int16))
    ds.dims[0].attach_scale(scales["ladder"])
    ds.dims[1].attach_scale(scales["rung"])
    g.attrs["every"] = int(every)
    g.attrs["start"] = int(start)


def committed(f: h5py.File, steps_done: int) -> int:
    """Number of committed exchanges of a file whose marker says `steps_done` (0 before the
    first commit of a file laid out at a later step)."""
    g = f[GROUP]
    every = int(g.attrs["every"])
    return max(0, int(steps_done) // every - int(g.attrs.get("start", 0)) // every)


def append(f: h5py.File, rows: list[dict], n0: int) -> None:
    """Write exchange rows n0 .. n0 + len(rows) - 1 (the caller commits them)."""
    if not rows:
        return
    g, n1 = f[GROUP], n0 + len(rows)
    for name in ("step", *SERIES):
        ds = g[name]
        if ds.shape[0] < n1:
            ds.resize(n1, axis=0)
        ds[n0:n1] = np.stack([r[name] for r in rows])
        ds.flush()   # a failed write raises here, not unseen when `ds` is dropped (RunWriter._ds)


def walker_start(f: h5py.File) -> np.ndarray:
    """(M, K) int16 walker permutation at the file's first step (identity in files written
    before `walker_start` was logged)."""
    g = f[GROUP]
    if "walker_start" in g:
        return g["walker_start"][()]
    return np.tile(np.arange(len(g["rung"]), dtype=np.int16), (len(g["ladder"]), 1))


def truncate(f: h5py.File, n: int) -> None:
    """Drop rows beyond the first `n` (before resuming)."""
    g = f[GROUP]
    for name in ("step", *SERIES):
        if g[name].shape[0] > n:
            g[name].resize(n, axis=0)
