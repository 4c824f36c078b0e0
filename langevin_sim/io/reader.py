"""Run-file reader: `open_run(path)` -> `Run`, trusting nothing beyond the commit marker."""
from __future__ import annotations

import json
import os
import re
import time
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import h5py
import numpy as np

from ..errors import ConfigError, IncompleteRunWarning, RunFileError, require
from . import format as F
from . import swmr as swmr_file
from .direct import ALIGN

if TYPE_CHECKING:
    import xarray

    from ..dynamics.base import Dynamics
    from ..first_passage import FirstPassageData
    from ..potentials.base import Potential

_T = TypeVar("_T")


class Series:
    """A lazy view of one committed record series: (n_records, M, ...) sliced on demand."""

    def __init__(self, ds: h5py.Dataset, n: int):
        self.ds, self.n = ds, n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,) + self.ds.shape[1:]

    @property
    def dtype(self) -> np.dtype:
        return self.ds.dtype

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        """`np.asarray(series)[key]` for any NumPy index (Ellipsis anywhere, None, ints,
        slices, integer and boolean arrays), reading only the block that `_plan` picks."""
        if not self.ds.id.valid:
            raise RunFileError("this series' run file is closed; reopen it with open_run(path) "
                               "and index the new Run")
        read, post = _plan(key, self.shape)
        size = [len(range(*r.indices(n))) if isinstance(r, slice) else r.size
                for r, n in zip(read, self.shape)]
        block = self.ds[read] if all(size) else np.empty(size, self.dtype)
        return block[post]

    @property
    def ndim(self) -> int:
        return self.ds.ndim

    def __repr__(self) -> str:
        name = self.ds.name.rsplit("/", 1)[-1] if self.ds.id.valid else "?"
        return f"Series({name!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        a = self.ds[: self.n]
        return a if dtype is None else a.astype(dtype)


def _plan(key, shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """(read, post) for NumPy index `key` into an array of `shape`, with `block[post]` equal
    to `a[key]` where block = a[read]: `read` keeps every axis as h5py reads it (a forward
    slice, or on one axis at most an increasing index array: its bounding slice elsewhere),
    `post` is `key` renumbered into the block (a reversed slice flipped, None kept).
    IndexError as NumPy's for an out-of-range index or too many indices."""
    key = [np.asarray(k) if isinstance(k, list) else k
           for k in (key if isinstance(key, tuple) else (key,))]
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(0 if k is None or k is Ellipsis or isinstance(k, (bool, np.bool_)) else
               k.ndim if isinstance(k, np.ndarray) and k.dtype == bool else 1 for k in key)
    if used > len(shape):
        raise IndexError(f"too many indices for a series of shape {shape}: {used} given")
    at = next((i for i, k in enumerate(key) if k is Ellipsis), len(key))
    key[at:at + 1] = [slice(None)] * (len(shape) - used)
    read, post, picks = [], [], []
    for k in key:
        if k is None or isinstance(k, (bool, np.bool_)):
            post.append(k)          # a new axis: nothing to read
        elif isinstance(k, slice):
            idx = range(*k.indices(shape[len(read)]))     # (lazy: an axis may hold 2^24)
            back = k.step is not None and k.step < 0 and len(idx)
            lo, hi = (idx[-1], idx[0]) if back else (idx[0], idx[-1]) if len(idx) else (0, -1)
            read.append(slice(int(lo), int(hi) + 1, abs(k.step or 1)))
            post.append(slice(None, None, -1) if back else slice(None))
        else:
            k = np.asarray(k)
            if k.dtype == bool:
                axes = shape[len(read):len(read) + k.ndim]
                if k.shape != axes:
                    raise IndexError(f"boolean index of shape {k.shape} does not match the "
                                     f"series' axes {axes}")
                parts = np.nonzero(k)
            elif k.size == 0 or np.issubdtype(k.dtype, np.integer):
                parts = (k.astype(np.intp),)
            else:
                raise IndexError("only integers, slices, '...', None and integer or boolean "
                                 f"arrays are valid indices, not {k.dtype}")
            for p in parts:
                n = shape[len(read)]
                if np.any((p < -n) | (p >= n)):
                    raise IndexError(f"index {p[(p < -n) | (p >= n)].flat[0]} is out of "
                                     f"bounds for axis {len(read)} with size {n}")
                p = np.where(p < 0, p + n, p)
                picks.append((len(read), len(post), p, np.unique(p)))
                read.append(None)
                post.append(None)
    # h5py takes one index array per read: the sparsest pick; the others read their span
    waste = [u[-1] - u[0] + 1 - u.size if u.size else 0 for *_, u in picks]
    listed = int(np.argmax(waste)) if picks and max(waste) > 0 else -1
    for j, (i, at, p, uniq) in enumerate(picks):
        if j == listed:
            read[i], q = uniq, np.searchsorted(uniq, p)
        else:
            lo = int(uniq[0]) if uniq.size else 0
            read[i], q = slice(lo, int(uniq[-1]) + 1 if uniq.size else 0), p - lo
        post[at] = int(q) if q.ndim == 0 else q
    return tuple(read), tuple(post)


class Run:
    """An open run file. Records are lazy `Series`; `to_xarray()` loads them with labels."""

    def __init__(self, path: "str | os.PathLike | None", swmr: bool = False, mode: str = "r",
                 file: h5py.File | None = None, latest: bool = False) -> None:
        self.path = MEMORY if path is None else os.fspath(path)
        self._potential: Potential | None = None
        self.resumed_from: int | None = None  # set by `resume`: the checkpoint step it continued
        self._view: np.ndarray | None = None  # a SWMR reader's commit marker (`refresh`)
        if file is not None:
            self.f = file
            return
        if not os.path.exists(self.path):
            raise RunFileError(f"no run file at {self.path}")
        if os.path.isdir(self.path):
            scan = os.path.isfile(os.path.join(self.path, "scan.json"))
            raise RunFileError(
                f"{self.path} is a {'scan ' if scan else ''}directory, not a run file: give "
                + (f"one of its points' files ({os.path.join(self.path, 'points', '<id>.h5')}, "
                   "listed in its manifest.csv)" if scan else "the path of a .h5 run file"))
        if not h5py.is_hdf5(self.path):
            raise RunFileError(f"{self.path} is not a langevin_sim run file (not HDF5); pass a "
                               "file written by Simulation.run or `langevin-sim run`")
        self.f = _open_file(self.path, mode, swmr, latest)
        if self.f.attrs.get("format") != F.FORMAT:
            self.f.close()
            raise RunFileError(f"{self.path} is not a langevin_sim run file (no format="
                               f"'{F.FORMAT}' attribute); pass a file written by Simulation.run")
        self._check_parts()
        self._hold_view()

    def _check_parts(self) -> None:
        """Open what every reader needs (the commit marker, the config, the record datasets,
        the committed checkpoint), so that a damaged file is one RunFileError naming the part
        instead of an h5py KeyError or a JSON error deep in a command."""
        f, part = self.f, F.COMMIT
        try:
            c = f[F.COMMIT][()]
            part = "config"
            json.loads(f["config"].attrs["json"])
            groups = ["records"] + ([f"checkpoint/slot{int(c[F.CKPT_SLOT])}"]
                                    if c[F.CKPT_SLOT] >= 0 else [])
            for g in groups:
                part = g
                for name in f[g]:
                    part = f"{g}/{name}"
                    f[part].shape
        except (KeyError, ValueError, OSError, RuntimeError) as e:
            f.close()
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RunFileError(f"{self.path} is damaged: {part} cannot be read ({why}); a killed "
                               "run leaves a readable file, so this one was altered since: "
                               "restore it from a copy or run it again") from None

    def __repr__(self) -> str:
        if not self.f.id.valid:
            return f"<Run {self.path} (closed)>"
        try:
            cfg = self.config
            series = ", ".join(f"{k}{self[k].shape}" for k in self.names)
            return (f"<Run {self.path}: {cfg['potential']['class']} x {cfg['dynamics']['class']}, "
                    f"{self.n_records} records, {self.steps_done}/{cfg.get('steps_target', '?')} "
                    f"steps, {'complete' if self.complete else 'INCOMPLETE'}; {series}>")
        except Exception:       # a repr never raises
            return f"<Run {self.path}>"

    # -- lifecycle --------------------------------------------------------------
    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _file(self) -> h5py.File:
        """The open HDF5 file, or RunFileError naming the fix once the Run is closed."""
        if not self.f.id.valid:
            fix = ("it was in memory, so its records are gone: keep the Run open, or write the "
                   "run to a file (out=...)" if self.path == MEMORY else
                   f"reopen it: open_run({self.path!r})")
            raise RunFileError(f"this Run of {self.path} is closed (run.close() or a `with` "
                               f"block ended); {fix}")
        return self.f

    def refresh(self) -> None:
        """Re-read the commit marker and extents (for live SWMR reading): the records, step,
        time, progress and divergences read until the next refresh are those committed now."""
        f = self._file()
        for obj in (f[F.COMMIT], *f["records"].values()):
            if f.swmr_mode:
                obj.refresh()
        self._hold_view()

    def _hold_view(self) -> None:
        """A SWMR reader's commit marker, read once here (at open and `refresh`), so that the
        reads between two refreshes agree (read at each access, `run.step` and `run.energy`
        could differ in length while the writer committed); None: read at each access."""
        f = self.f
        self._view = f[F.COMMIT][()] if f.swmr_mode and f.mode == "r" else None

    # -- metadata -----------------------------------------------------------------
    @property
    def commit(self) -> np.ndarray:
        f = self._file()
        return f[F.COMMIT][()] if self._view is None else self._view

    @property
    def n_records(self) -> int:
        return int(self.commit[F.N_RECORDS])

    @property
    def steps_done(self) -> int:
        return int(self.commit[F.STEPS_DONE])

    @property
    def complete(self) -> bool:
        return bool(self.commit[F.COMPLETE])

    @property
    def config(self) -> dict:
        return json.loads(self._file()["config"].attrs["json"])

    @property
    def potential(self) -> Potential:
        if self._potential is None:
            from ..potentials.base import Potential

            self._potential = Potential.from_hdf5(self._file()["potential"])
        return self._potential

    @property
    def dynamics(self) -> Dynamics:
        """The run's Dynamics, rebuilt from its config (`Dynamics.from_dict`, as `resume`
        does): e.g. `run.dynamics.temperature(step)`, `run.dynamics.step(0)`."""
        from ..dynamics.base import Dynamics

        return Dynamics.from_dict(self.config["dynamics"])

    @property
    def machines(self) -> list[dict]:
        """The machines that wrote the run, one entry at the start and one per resume that ran
        steps (`io.machine`):
        {"step" (the first step written there), "host", "cpu", "arithmetic" (instruction set,
        BLAS kernels, library versions)}; [] for a file written before they were recorded."""
        from .machine import machines

        return machines(self._file())

    @property
    def diverged_step(self) -> np.ndarray:
        """(M,) step count at which each replica diverged, -1 where never (by the committed
        step: the writer updates the series before it moves the commit marker, so a file
        killed between the two held divergences past `steps_done`, which count as none)."""
        if "diverged_step" in self._file()["records"]:
            d = self._file()["records/diverged_step"][()]
            return np.where(d > self.steps_done, -1, d)
        return self._file()["replicas/diverged_step"][()]  # format version 1

    @property
    def dt(self) -> float:
        """Time per step of constant-step dynamics (nan for scheduled steps)."""
        dyn = self.config["dynamics"]
        s = dyn.get("step", dyn.get("lr"))
        return float(s["start"]) if s and s["kind"] == "constant" else float("nan")

    # -- records ------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        rec = self._file()["records"]
        return [k for k in rec if rec[k].maxshape and rec[k].maxshape[0] is None
                and k not in ("step", "time")]

    def _committed(self, name: str, n: int | None = None) -> tuple[h5py.Dataset, int]:
        """(record dataset `name`, the committed record count n (read now unless given)), its
        extent covering n: a live SWMR reader reads the commit marker's data fresh but a
        dataset's extent from metadata cached until refreshed, so a marker newer than the
        extent refreshes it."""
        n = self.n_records if n is None else n
        ds = self._file()["records"][name]
        if self._file().swmr_mode and ds.shape[0] < n:
            ds.refresh()
        return ds, n

    def __getitem__(self, name: str) -> Series:
        if name not in self.names and name not in ("step", "time") \
                or name not in self._file()["records"]:
            attr = " (per replica, not per record: use run.diverged_step)" \
                if name == "diverged_step" else ""
            raise KeyError(f"no record series {name!r}{attr}; have {self.names}")
        return Series(*self._committed(name))

    def __contains__(self, name) -> bool:
        """Whether `name` is a recorded series (`run.names`)."""
        return name in self.names

    def __getattr__(self, name: str):
        """Only for the message: run.basin where run["basin"] is meant (energy and positions
        alone are attributes)."""
        if not name.startswith("_") and "f" in self.__dict__:
            try:
                recorded = name in self.names
            except Exception:       # (a closed file: the plain error)
                recorded = False
            if recorded:
                raise AttributeError(f"'Run' object has no attribute {name!r}; the record "
                                     f"series is run[{name!r}] (series: {self.names})")
        raise AttributeError(f"'Run' object has no attribute {name!r}")

    @property
    def step(self) -> np.ndarray:
        return self._step()

    @property
    def time(self) -> np.ndarray:
        """Time of each record: the sum of the step sizes (or learning rates) before it."""
        return self._time()

    def _step(self, n: int | None = None) -> np.ndarray:
        ds, n = self._committed("step", n)
        return ds[:n]

    def _time(self, n: int | None = None) -> np.ndarray:
        if "time" in self._file()["records"]:
            ds, n = self._committed("time", n)
            return ds[:n]
        return self._step(n).astype(np.float64) * self.dt  # format version 1

    @property
    def energy(self) -> Series:
        return self["energy"]

    @property
    def positions(self) -> Series:
        return self["positions"]

    @property
    def first_passage(self) -> FirstPassageData | None:
        """The first-passage observer's arrays (`langevin_sim.first_passage.FirstPassageData`),
        or None when the run had none.  Taken from the committed checkpoint (the slot the
        commit marker names), so a killed or live file gives a consistent set, valid at the
        checkpoint's step (= steps_done for finished runs and, by default, after every flush);
        /first_passage holds the same arrays for plain-HDF5 readers, exact once complete."""
        if "first_passage" not in self._file():
            return None
        from ..first_passage import NAMES, STATE_KEYS, FirstPassageData

        g = self._file()["first_passage"]
        spec = json.loads(g.attrs["definition"])

        def read(c, ck):
            if ck is not None:
                return ({name: ck[key][()] for key, name in zip(STATE_KEYS, NAMES)},
                        int(c[F.CKPT_STEP]), ck["diverged_step"][()])
            # nothing committed yet: the arrays at the start
            return ({name: g[name][()] for name in NAMES}, int(g["step"][()]),
                    np.full(len(g["replica"]), -1, np.int64))

        arrays, step, dstep = self._read_checkpoint(read)
        labels = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in g["label"][()])
        return FirstPassageData(labels=labels, regions=tuple(spec["regions"]),
                                replica=g["replica"][()], step=step, dt=self.dt,
                                diverged_step=dstep, **arrays)

    @property
    def initial_state(self) -> tuple[int, dict] | None:
        """(step, state arrays (M, d) ...) this file started from, kept where the run began
        from a given `init` array (config "init": "array", which its seed cannot remake);
        None for the other inits.  `Simulation(..., init=state["x"])` starts the run again."""
        g = self._file().get("init")
        if g is None:
            return None
        return int(g.attrs["step"]), {k: v[()] for k, v in g.items() if not v.is_scale}

    def checkpoint(self) -> tuple[int, dict, np.ndarray]:
        """(step, state arrays, diverged_step) of the last valid checkpoint."""
        def read(c, g):
            if g is None:
                raise RunFileError(f"{self.path} holds no checkpoint yet (it was stopped before "
                                   "its first commit): start the run again with --overwrite "
                                   "(overwrite=True), which replaces it")
            return (int(c[F.CKPT_STEP]), {k: g[k][()] for k in g if k != "diverged_step"},
                    g["diverged_step"][()])

        return self._read_checkpoint(read)

    def _read_checkpoint(self, read: Callable, tries: int = 200):
        """read(marker, the checkpoint slot's group it names, None before the first commit),
        consistent in a file a live writer changes (SWMR): the writer fills the other slot
        and then moves the marker, so a read is the marker's state when the marker is the
        same before and after it; else (the slot rewritten meanwhile: a state of a later step
        returned as the marker's), or where HDF5 sees a dataset mid-change ("invalid dataset
        size"), it is read again with the marker refreshed."""
        f = self._file()
        marker = f[F.COMMIT]
        for _ in range(tries):
            c = marker[()]
            slot = int(c[F.CKPT_SLOT])
            try:
                g = f[f"checkpoint/slot{slot}"] if slot >= 0 else None
                if g is not None and f.swmr_mode:
                    for name in g:          # (g.values() turns an open's KeyError into None)
                        g[name].refresh()
                out = read(c, g)
            except (KeyError, OSError, RuntimeError):
                if not f.swmr_mode:
                    raise
                out = None
            if not f.swmr_mode:
                return out
            marker.refresh()
            if out is not None and np.array_equal(marker[()], c):
                return out
            time.sleep(0.005)
        raise RunFileError(f"{self.path}: no consistent checkpoint read in {tries} tries while "
                           "its writer commits; read it again (or after the run)")

    def to_xarray(self) -> xarray.Dataset:
        """All committed records as an xarray.Dataset with dims (step, replica, ...)."""
        xr = require("xarray", "analysis", "Run.to_xarray")

        n = self.n_records
        rec = self._file()["records"]
        data = {}
        for name in self.names:
            ds = self._committed(name, n)[0]
            dims = ["step", "replica"] + (["coord"] if name == "positions" else
                                          [f"{name}_dim{j}" for j in range(ds.ndim - 2)])
            data[name] = (dims, ds[:n], _long_name(ds))
        coords = {"step": ("step", self._step(n), _long_name(rec["step"])),
                  "replica": rec["replica"][()],
                  "time": ("step", self._time(n), _long_name(rec["time"]))}
        coords.update({k: rec[k][()] for k in rec if k not in coords and rec[k].attrs.get("CLASS")
                       == b"DIMENSION_SCALE"})
        out = xr.Dataset(data, coords=coords)
        out["diverged_step"] = ("replica", self.diverged_step)
        out.attrs.update(config=json.dumps(self.config), complete=int(self.complete))
        return out

    def _incomplete(self) -> str:
        """How `summary` says the run is unfinished: being written (SWMR) by a live process,
        or stopped (resume it; a killed writer's flags keep other HDF5 readers out)."""
        f = self._file()
        flagged = f.swmr_mode and f.mode == "r" and self.path is not None
        live = swmr_file.writer_alive(self.path, f.attrs.get("writer")) if flagged else None
        if live is not None:
            return f"INCOMPLETE: being written by {live} (live, SWMR)"
        return ("INCOMPLETE (resume with `langevin-sim resume`" + (
            "; its killed writer's flags keep h5py and xarray out until then, or until "
            "`langevin-sim repair`)" if flagged and swmr_file.flags_set(self.path) else ")"))

    def summary(self) -> str:
        """Human-readable description (what `langevin-sim info` prints)."""
        cfg = self.config
        div = self.diverged_step
        bad = np.flatnonzero(div >= 0)
        lines = [f"run file   {self.path}",
                 f"created    {self._file().attrs['created']}  (langevin_sim {self._file().attrs['package_version']})",
                 f"potential  {json.dumps(cfg['potential'])}",
                 f"dynamics   {json.dumps(cfg['dynamics'])}",
                 f"replicas   {cfg['replicas']} (first id {cfg['first_replica']}), dtype {cfg['dtype']}, "
                 f"backend {cfg['backend']}, seed {cfg['seed']}",
                 f"progress   {self.steps_done} / {cfg.get('steps_target', '?')} steps, "
                 f"{self.n_records} records every {cfg['record_every']} steps, "
                 f"{'complete' if self.complete else self._incomplete()}",
                 f"records    {', '.join(f'{k}{self[k].shape}' for k in self.names)}",
                 f"diverged   {bad.size} of {div.size} replicas"]
        ex = cfg.get("meta", {}).get("exchange")
        if ex is not None:
            lines.insert(5, _exchange_line(ex, cfg["dynamics"]["temperature"]["start"]))
        for k, m in enumerate(self.machines):
            device = m.get("arithmetic", {}).get("device")
            lines.insert(-1, f"{'machines' if k == 0 else '':<10} from step {m['step']}: "
                             f"{m['host']}, {m['cpu']}" + (f"; {device}" if device else ""))
        for m in bad[:20]:
            lines.append(f"           replica {int(m)} diverged at step {int(div[m])}")
        if bad.size > 20:
            lines.append(f"           ... and {bad.size - 20} more")
        fp = self.first_passage
        if fp is not None:
            for k, lab in enumerate(fp.labels):
                e = fp.first_entry_step[:, k]
                lines.append(f"{'passage' if k == 0 else '':10s} region {lab!r}: "
                             f"{int(np.sum(e > 0))} of {int(np.sum(e != 0))} starting outside "
                             f"entered by step {fp.step}, {int(fp.crossings[:, k].sum())} "
                             "crossings")
        return "\n".join(lines)


def _long_name(ds: h5py.Dataset) -> dict:
    """xarray attrs of a record dataset: its long_name (files of 2026-12-07 on)."""
    name = ds.attrs.get("long_name")
    return {} if name is None else {"long_name": name.decode() if isinstance(name, bytes) else name}


def _exchange_line(ex: dict, T: float) -> str:
    """`Run.summary`'s line for a rung of a replica-exchange run (its config's meta.exchange,
    its temperature T): the ladder, and that the seed printed above is this rung's."""
    if ex["rung"] == 0:
        ladder = ", ".join(f"{t:g}" for t in ex["temperatures"])
        return (f"exchange   rung 0 of {len(ex['temperatures'])} of a replica-exchange ladder, "
                f"T = {ladder}; swaps every {ex['every']} steps, ladder seed {ex['seed']} (the "
                "seed above is this rung's); rungs k: <stem>.rung<k>.h5 beside this file; log: "
                "open_exchange(path)")
    return (f"exchange   rung {ex['rung']} (T = {T:g}) of a replica-exchange ladder whose rung 0 "
            "file (log, resume) is <stem>.h5 beside it; the seed above is this rung's")


_held: "weakref.WeakKeyDictionary[h5py.File, tuple[int, int, int]]" = weakref.WeakKeyDictionary()


def private(f: h5py.File) -> h5py.File:
    """`f`, kept from child processes: its descriptor close-on-exec (HDF5 opens files
    inheritable: a program that a child execs while the file is open would otherwise hold
    the file, and HDF5's lock on it, for its whole life), and detached in a child forked
    without exec (`_leave_in_child`).  Files in memory are left as they are."""
    if f.driver == "sec2":
        fd = f.id.get_vfd_handle()
        os.set_inheritable(fd, False)
        st = os.fstat(fd)
        _held[f] = (fd, st.st_dev, st.st_ino)
    return f


def _leave_in_child() -> None:
    """In a child just forked (os.fork, multiprocessing's fork): point the descriptors of the
    run files this process has open at /dev/null, so that the child neither holds their
    locks for its life nor writes into them (HDF5 flushes open files when a child exits
    through Python's shutdown).  No HDF5 call: another thread of the parent may have held
    h5py's lock at the fork; a descriptor is detached only while it is still that file's."""
    null = -1
    try:
        for fd, dev, ino in list(_held.values()):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                if null < 0:
                    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                os.dup2(null, fd, inheritable=False)
    finally:
        if null >= 0:
            os.close(null)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_leave_in_child)


def _plain(path: str, mode: str, latest: bool = False) -> h5py.File:
    """h5py.File(path, mode); for writing with the alignment that `DirectRows` needs (and
    with latest, the latest file format, which SWMR writing needs)."""
    if mode == "r":
        return h5py.File(path, mode)
    return h5py.File(path, mode, libver="latest" if latest else None, **ALIGN)


class RunFileLocked(RunFileError):
    """HDF5's lock on a run file is held elsewhere (another process's handle: a run, a reader,
    or a child that inherited the descriptor, since HDF5 opens files without close-on-exec)."""


def _open_file(path: str, mode: str, swmr: bool, latest: bool = False) -> h5py.File:
    """Open `path` with h5py (close-on-exec, `private`), turning HDF5's open failures into
    errors that name the fix.

    A file whose SWMR writer was killed is opened read-only in SWMR mode; for writing
    (`mode="r+"`, i.e. resume) its consistency flags are cleared first, once no process
    is writing it any more (see `swmr.py`).  latest: open for writing with the latest file
    format (a resume that writes in SWMR mode)."""
    return private(_open_any(path, mode, swmr, latest))


def _open_any(path: str, mode: str, swmr: bool, latest: bool) -> h5py.File:
    """`_open_file`'s work, the descriptor left as HDF5 made it."""
    try:
        if swmr:
            return h5py.File(path, "r", libver="latest", swmr=True)
        return _plain(path, mode, latest)
    except BlockingIOError:
        if mode != "r":
            raise RunFileLocked(
                f"another process has {path} open (a run writing it, or a reader such as "
                "open_run in a notebook, which holds the file's lock): close it, or wait for "
                "the run to finish or stop it, then try again") from None
        raise RunFileLocked(
            f"another process is writing {path} (it holds the file's lock): wait for that run "
            "to finish or stop it; to read a run while it is written, start it with --swmr "
            "(swmr=True) and read it with open_run(path, swmr=True)") from None
    except OSError as e:
        short = _short(e)
        if short is not None:       # (resume lengthens the file first: `lengthen`)
            raise RunFileError(
                f"{path} is shorter than HDF5 expects ({short[0]} of {short[1]} bytes): its "
                "writer failed (a full disk, or the file-size limit `ulimit -f`) or the copy "
                f"is incomplete; `langevin-sim resume {path}` restores its length, checks "
                "that every committed record is in it, and continues the run") from None
        if not swmr_file.flags_set(path):
            if "already open" in str(e):
                raise RunFileError(
                    f"this process has {path} open already (a Run from open_run or "
                    "Simulation.run, e.g. in another notebook cell) and HDF5 cannot open it a "
                    "second time this way: call that Run's close() first (or read it in a "
                    "`with` block)") from None
            raise RunFileError(f"{path} is not a readable HDF5 file ({e})") from None
    # The superblock says a writer has the file open: a live or killed SWMR writer, or a
    # killed plain one (a live plain writer holds the file lock, caught above).
    try:
        f = h5py.File(path, "r", libver="latest", swmr=True)
    except OSError:
        f = None
    if f is not None:
        if mode == "r":
            return f
        with f:
            info = f.attrs.get("writer")
        live = swmr_file.writer_alive(path, info)
        if live is not None:
            raise RunFileError(f"{path} is being written (SWMR) by {live}; wait for it to "
                               "finish or stop it, then resume")
    swmr_file.clear_flags(path)
    return _plain(path, mode, latest)


def refuse_if_written(path: str) -> None:
    """RunFileLocked if a live process is writing run file `path` (it holds HDF5's lock, or
    writes it in SWMR mode), before the file is replaced (--overwrite).  A missing file, one
    only read elsewhere, and one that is not HDF5 pass."""
    if not os.path.isfile(path):
        return
    fix = "wait for that run to finish or stop it, or write the new run to another path"
    try:
        with h5py.File(path, "r"):
            pass
    except BlockingIOError:
        raise RunFileLocked(f"another process is writing {path} (it holds the file's lock); "
                            f"--overwrite (overwrite=True) would replace it under that run: "
                            f"{fix}") from None
    except OSError:
        pass
    if not swmr_file.flags_set(path):
        return
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            info = f.attrs.get("writer")
    except OSError:
        return
    live = swmr_file.writer_alive(path, info)
    if live is not None:
        raise RunFileLocked(f"{path} is being written (SWMR) by {live}; --overwrite "
                            f"(overwrite=True) would replace it under that run: {fix}")


_SHORT = re.compile(r"truncated file: eof = (\d+), sblock->base_addr = \d+, stored_eof = (\d+)")


def _short(e: OSError) -> tuple[int, int] | None:
    """(file size, end of file the superblock expects) in bytes when HDF5 refused to open a
    file for being shorter than its superblock says, else None."""
    m = _SHORT.search(str(e))
    return (int(m[1]), int(m[2])) if m else None


def lengthen(path: "str | os.PathLike") -> None:
    """Restore the length of run file `path` where it is shorter than its superblock says
    (`_restore_length`, what `resume` does first), or the superblock's end-of-file address
    where the file is longer (`swmr.raise_end_of_file`: a writer killed mid-flush); nothing
    otherwise, and nothing to a file another process holds."""
    try:
        h5py.File(path, "r").close()
    except OSError as e:
        short = _short(e)
        if short is not None:
            _restore_length(os.fspath(path), *short)
        return
    swmr_file.raise_end_of_file(os.fspath(path))


def repair(path: "str | os.PathLike") -> str:
    """Make a stopped or killed run file readable by any HDF5 reader (h5py, xarray) as it is,
    without running a step: restore its length (`lengthen`), clear a killed writer's
    open-for-write flags and cut the record series to the committed records (a writer killed
    between growing them and its commit left rows no marker counts).  Refuses a file a live
    process writes.  Returns what it did, in words; `resume` continues the file after."""
    path = run_path(path, "repair")
    if not os.path.isfile(path):
        raise RunFileError(f"no run file at {path}")
    lengthen(path)
    flagged = swmr_file.flags_set(path)
    with Run(path, mode="r+") as run:
        keep, cut = run.n_records, []
        for name, ds in run.f["records"].items():
            if ds.maxshape[0] is None and ds.shape[0] > keep:
                cut.append(f"{name} ({ds.shape[0] - keep})")
                ds.resize(keep, axis=0)
        done = run.steps_done
    said = ["open-for-write flags cleared"] if flagged else []
    if cut:
        said.append("uncommitted rows dropped: " + ", ".join(cut))
    return (f"{path}: " + ("; ".join(said) if said else "nothing to repair")
            + f"; {keep} records to step {done}, readable by h5py and xarray")


def _restore_length(path: str, size: int, stored: int) -> None:
    """Lengthen run file `path` from `size` to the `stored` bytes its superblock expects, as
    HDF5 would have at close: a writer whose write failed (ENOSPC, EFBIG) flushed metadata that
    allocates space it never wrote.  Kept only if everything committed (`_past_end`) lies
    within the first `size` bytes; else (an incomplete copy) the file is cut back to `size`
    and refused."""
    try:
        os.truncate(path, stored)
    except OSError as e:
        raise RunFileError(f"{path} is shorter than HDF5 expects ({size} of {stored} bytes) and "
                           f"cannot be lengthened ({e.strerror}): make room on its file system "
                           "or raise the file-size limit (`ulimit -f`), then try again") from None
    try:
        try:
            f = h5py.File(path, "r")
        except OSError:         # a killed SWMR writer's flags are set too
            f = h5py.File(path, "r", libver="latest", swmr=True)
        with f:
            past = _past_end(f, size)
    except Exception as e:      # metadata in the missing part: unreadable
        past = f"its metadata ({e})"
    if past is not None:
        os.truncate(path, size)
        raise RunFileError(f"{path} is cut short: {past} lies past its {size} bytes (an "
                           "incomplete copy?); copy the file again")


def _past_end(f: h5py.File, size: int) -> str | None:
    """The name of the first dataset of run file `f` whose committed storage (rows within the
    commit marker, the valid checkpoint slot, everything else) reaches past byte `size`, or
    None."""
    c = f[F.COMMIT][()]
    rows = {"records": int(c[F.N_RECORDS])}
    if "exchange" in f:
        from ..exchange.log import committed   # (a continued ladder's log starts later)
        rows["exchange"] = committed(f, int(c[F.STEPS_DONE]))
    slot = int(c[F.CKPT_SLOT])
    skip = tuple(f"checkpoint/slot{k}/" for k in (0, 1) if k != slot)
    found = []

    def check(name: str, ds) -> None:
        if found or not isinstance(ds, h5py.Dataset) or name.startswith(skip):
            return
        if ds.chunks is None:
            at = ds.id.get_offset()
            if at is not None and at + ds.id.get_storage_size() > size:
                found.append(name)
            return
        group = name.split("/", 1)[0]
        limit = rows[group] if group in rows and ds.maxshape[0] is None else None
        def visit(info) -> bool | None:
            if (limit is None or info.chunk_offset[0] < limit) and \
                    info.byte_offset + info.size > size:
                found.append(name)
                return True        # (stops chunk_iter)
            return None
        if hasattr(ds.id, "chunk_iter"):   # one pass (get_chunk_info(i) costs O(i): 9.5 s
            ds.id.chunk_iter(visit)        # for 20000 chunks, a file of ~20 GB)
        else:
            any(visit(ds.id.get_chunk_info(i)) for i in range(ds.id.get_num_chunks()))
    f.visititems(check)
    return found[0] if found else None


MEMORY = "<memory>"      # the `path` of a Run held in memory (Simulation.run without out=)


def run_path(source: "str | os.PathLike | Run", where: str) -> str:
    """The file path of `source`: a path, or a Run's `path`; ConfigError for an in-memory Run
    (or its path "<memory>"), which has no file: `where` names the caller."""
    path = source.path if isinstance(source, Run) else os.fspath(source)
    if path == MEMORY:
        fix = ("an in-memory run cannot be resumed: call sim.run(...) again, with out=PATH for a "
               "resumable file" if where == "resume" else
               "use that Run itself (it is open until closed), or write the run to a file (out=PATH)")
        raise ConfigError(f"{where}: this run was held in memory and has no file; {fix}")
    return path


def open_run(path: "str | os.PathLike | Run", swmr: bool = False) -> Run:
    """Open a run file for reading; `swmr=True` to follow a live SWMR run (call `refresh`).
    `path` may be a Run: its file is opened again (a new Run)."""
    return Run(run_path(path, "open_run"), swmr=swmr)


def check_run(run: _T, where: str) -> _T:
    """`run` itself, or ConfigError when it is a path (str or os.PathLike): the analyses take
    an open `Run`, and `where` (the function's name) says which one was handed a path.  A
    Run short of its target step (killed, stopped, still written) is analysed as far as it
    got, with an `IncompleteRunWarning` (once per run file)."""
    if isinstance(run, (str, bytes, os.PathLike)):
        path = os.fsdecode(run)
        raise ConfigError(f"{where} takes an open Run (or an array), not the path {path!r}: "
                          f"pass open_run({path!r})")
    if isinstance(run, Run) and not run.complete:
        warnings.warn(IncompleteRunWarning(
            f"{run.path} is incomplete (step {run.steps_done} of "
            f"{run.config.get('steps_target', '?')}): analysed as far as it got; `langevin-sim "
            f"resume {run.path}` finishes it"), stacklevel=1)
    return run


def check_trajectories(run: _T, where: str) -> _T:
    """`check_run`, and a ConfigError for a rung of a replica-exchange run: its replicas jump
    between configurations at accepted swaps, so times along its records (escape, drift) are
    not its dynamics' (an escape analysis of a ladder's rungs fitted a barrier of 0.26 to a
    DoubleWell of barrier 1)."""
    run = check_run(run, where)
    ex = run.config.get("meta", {}).get("exchange") if isinstance(run, Run) else None
    if ex is not None:
        raise ConfigError(f"{where}: {run.path} is rung {ex['rung']} of a replica-exchange run, "
                          "whose replicas jump between configurations at accepted swaps: its "
                          "records are samples, not trajectories, so escape or drift times "
                          "read from them are not the dynamics'; measure kinetics on a plain "
                          "Simulation at that temperature")
    return run
