"""HDF5 run-file writer: data -> flush -> commit marker -> flush, two checkpoint slots."""
from __future__ import annotations

import datetime
import errno
import json
import os
import queue
import re
import socket
import sys
import threading
import uuid

import h5py
import numpy as np

from ..errors import LangevinSimError, RunFileError
from . import format as F
from .direct import DirectRows, early_allocation
from .machine import record_machine
from .recycle import Recycler
from .swmr import writer_info


def _scales(group: h5py.Group, values: dict) -> dict:
    """Create 1-D dimension-scale datasets `name -> values` in `group`."""
    out = {}
    for name, v in values.items():
        out[name] = group.create_dataset(name, data=np.asarray(v, np.int64))
        out[name].make_scale(name)
    return out


def _scale_the_rest(group: h5py.Group) -> None:
    """Give every dimension without a scale in `group` (recursively) a scale `<name>_dim<i>`."""
    todo = []
    group.visititems(lambda n, o: todo.append(o) if isinstance(o, h5py.Dataset) and not o.is_scale
                     else None)
    for ds in todo:
        for i, n in enumerate(ds.shape):
            if not len(ds.dims[i]):
                name = f"{ds.name.rsplit('/', 1)[1]}_dim{i}"
                sc = _scales(ds.parent, {name: np.arange(n)})[name]
                ds.dims[i].attach_scale(sc)


def _first_passage_layout(f: h5py.File, fp, replicas, state: dict, step: int) -> None:
    """/first_passage: region labels, (replica, region) int64 arrays first_entry_step,
    first_exit_step, last_crossing_step, crossings, inside, and the step they describe."""
    from ..first_passage import NAMES, STATE_KEYS

    g = f.create_group("first_passage")
    sc = _scales(g, {"replica": np.asarray(replicas, np.int64), "region": np.arange(len(fp))})
    lab = g.create_dataset("label", data=np.array(fp.labels, dtype=h5py.string_dtype()))
    lab.dims[0].attach_scale(sc["region"])
    for key, name in zip(STATE_KEYS, NAMES):
        ds = g.create_dataset(name, data=np.asarray(state[key], np.int64))
        ds.dims[0].attach_scale(sc["replica"])
        ds.dims[1].attach_scale(sc["region"])
    g.create_dataset("step", data=np.int64(step))
    g.attrs["definition"] = json.dumps(fp.to_dict(), default=F.json_default)


def _write_first_passage(g: h5py.Group, arrays: dict, step: int) -> None:
    from ..first_passage import NAMES, STATE_KEYS

    for key, name in zip(STATE_KEYS, NAMES):
        g[name][...] = arrays[key]
    g["step"][()] = np.int64(step)


MIN_CHUNK_ROWS = 64   # record rows a chunk holds at least (unless a row passes CHUNK_BYTES)


def _chunk_rows(row_bytes: int) -> int:
    return max(1, F.CHUNK_BYTES // max(1, row_bytes))


def _row_is_chunk(ds: h5py.Dataset) -> bool:
    """Whether each row of `ds` is one whole unfiltered chunk (rows >= CHUNK_BYTES / 2), so
    that a row can be written as the chunk's bytes (H5Dwrite_chunk), bypassing HDF5's
    per-element machinery."""
    return ds.chunks == (1,) + ds.shape[1:] and ds.id.get_create_plist().get_nfilters() == 0


class RunWriter:
    """Appends record blocks and checkpoints to an open run file.

    Layout: /records/{step, time, replica, coord, energy, positions, <observables>,
    diverged_step}, /checkpoint/slot{0,1}/<state
    arrays>, /first_passage (with a first-passage observer), and /commit (int64, fields in
    format.COMMIT_FIELDS), rewritten last after each block.  Every dimension of every dataset
    has a dimension scale (netCDF-4 style), so that xarray opens any group without phony
    dimensions.
    """

    def __init__(self, f: h5py.File):
        self.f = f
        self.path = f.filename   # the run file's name (a new file's, once published)
        self.commit = f[F.COMMIT][()].copy()
        self.rows = self.n_records   # record rows written, committed or not
        self._held: dict[str, np.ndarray] = {}   # dataset path -> what this writer last wrote there
        self._open: dict[str, h5py.Dataset] = {}  # datasets kept open (`_ds`)
        self._direct = DirectRows.open(f)

    def _ds(self, path: str) -> h5py.Dataset:
        """Chunked dataset `path`, kept open while the writer lives: its chunk cache is then
        written by the commit's flush, which raises a failed write, not when a dropped h5py
        object closes it, which only prints the error (a full disk left records unwritten under
        a marker that counted them)."""
        ds = self._open.get(path)
        if ds is None:
            ds = self._open[path] = self.f[path]
        return ds

    # -- creation -----------------------------------------------------------
    @classmethod
    def create(cls, f: h5py.File, *, config: dict, potential, replicas: np.ndarray, d: int,
               pos_dtype, record_positions: bool, observables: dict, state: dict,
               compression: str | None, swmr: bool, first_passage=None,
               start_step: int = 0, device: str | None = None,
               keep_initial: bool = False) -> "RunWriter":
        """Lay out a new run file of a run starting at `start_step`. `observables`: name ->
        (trailing shape, dtype). `first_passage`: the Simulation's `FirstPassage` observer
        (its arrays are in `state`), laid out in /first_passage. `device`: the GPU stack of a
        cuda run (`io.machine.machine_entry`).  `keep_initial`: `state` is also written to
        /init, kept for good (a run started from a given array: the seed cannot remake it)."""
        from .. import __version__

        f.attrs["format"] = F.FORMAT
        f.attrs["format_version"] = F.FORMAT_VERSION
        f.attrs["package_version"] = __version__
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        f.attrs["command"] = " ".join(sys.argv)
        f.attrs["writer"] = writer_info()
        record_machine(f, start_step, device=device)
        f.create_group("config").attrs["json"] = json.dumps(config, default=F.json_default)
        _write_potential(f, potential)
        M = len(replicas)
        rec = f.create_group("records")
        step = rec.create_dataset("step", (0,), np.int64, maxshape=(None,), chunks=(4096,))
        step.make_scale("step")
        rep = rec.create_dataset("replica", data=np.asarray(replicas, np.int64))
        rep.make_scale("replica")
        kw = {"compression": compression} if compression else {}
        # records this file will hold at most: chunks of CHUNK_BYTES held 3 records of a tiny
        # run in 1 MB per series (2 MB a file; 420 MB for a scan of 200 tiny points); a
        # resume that extends the run adds chunks of this size
        try:
            planned = int(config["steps_target"]) // int(config["record_every"]) + 1
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            planned = None

        def series(name, trailing, dtype, dims, long_name):
            row = int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
            rows = _chunk_rows(row)
            if planned is not None:
                rows = min(rows, max(MIN_CHUNK_ROWS, planned))
            # a row a chunk: allocated on extension, written past the page cache (DirectRows)
            early = early_allocation() if rows == 1 and not compression else {}
            ds = rec.create_dataset(name, (0,) + trailing, dtype, maxshape=(None,) + trailing,
                                    chunks=(rows,) + trailing, **kw, **early)
            for i, scale in enumerate(dims):
                ds.dims[i].attach_scale(scale)
            ds.attrs["coordinates"] = "time"  # CF: xarray makes `time` a coordinate on `step`
            ds.attrs["long_name"] = long_name
            return ds

        series("energy", (M,), np.float64, (step, rep), "potential energy U(x) of each replica")
        if record_positions:
            coord = rec.create_dataset("coord", data=np.arange(d, dtype=np.int64))
            coord.make_scale("coord")
            series("positions", (M, d), pos_dtype, (step, rep, coord), "state x of each replica")
        for name, (trailing, dtype) in observables.items():
            extra = []
            for j, n in enumerate(trailing):
                sc = rec.create_dataset(f"{name}_dim{j}", data=np.arange(n, dtype=np.int64))
                sc.make_scale(f"{name}_dim{j}")
                extra.append(sc)
            series(name, (M,) + tuple(trailing), dtype, (step, rep, *extra),
                   f"observable {name} of each replica")
        tm = rec.create_dataset("time", (0,), np.float64, maxshape=(None,), chunks=(4096,))
        tm.dims[0].attach_scale(step)
        step.attrs["long_name"] = "steps done at the record"
        tm.attrs["long_name"] = "time at the record: the sum of the step sizes before it"
        rec.attrs["parameters"] = ("the run's parameters: JSON in the attribute 'json' of the "
                                   "group /config; open_run(path).to_xarray() carries them")
        div = rec.create_dataset("diverged_step", (M,), np.int64, fillvalue=-1)
        div.dims[0].attach_scale(rep)
        ck = f.create_group("checkpoint")
        ck_scales = _scales(ck, {"replica": np.asarray(replicas, np.int64), "coord": np.arange(d)})
        for slot in (0, 1):
            g = ck.create_group(f"slot{slot}")
            # shapes only: the first commit writes a slot (no slot is valid before it)
            for k, v in dict(state, diverged_step=np.empty(M, np.int64)).items():
                # large state arrays: storage allocated now, written past the page cache
                # every slot dataset allocated now: a live SWMR reader that saw a dataset
                # unallocated cannot open it once the writer allocates it ("invalid dataset size")
                if k != "diverged_step":
                    early = early_allocation()
                else:
                    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                    early = {"dcpl": dcpl, "fill_time": "alloc"}
                ds = g.create_dataset(k, v.shape, v.dtype,
                                      fillvalue=-1 if k == "diverged_step" else None, **early)
                for i, n in enumerate(ds.shape):
                    name = ("replica" if i == 0 else "coord") if (i < 2 and n == (M, d)[i]) \
                        else f"{k}_dim{i}"
                    if k.startswith("fp_") and i == 1:
                        name = "region"  # first-passage arrays: (replica, region)
                    if name not in ck_scales:
                        ck_scales.update(_scales(ck, {name: np.arange(n)}))
                    ds.dims[i].attach_scale(ck_scales[name])
        _scale_the_rest(f["potential"])
        if keep_initial:
            init = f.create_group("init")
            init.attrs["step"] = start_step
            scales = _scales(init, {"replica": np.asarray(replicas, np.int64), "coord": np.arange(d)})
            for k, v in state.items():
                ds = init.create_dataset(k, data=v)
                for i, n in enumerate(v.shape[:2]):
                    if n == (M, d)[i]:
                        ds.dims[i].attach_scale(scales[("replica", "coord")[i]])
            _scale_the_rest(init)
        if first_passage is not None:
            _first_passage_layout(f, first_passage, replicas, state, start_step)
        fields = f.create_dataset("commit_field", data=np.array(F.COMMIT_FIELDS, dtype="S"))
        fields.make_scale("commit_field")
        f.create_dataset(F.COMMIT, data=np.array([0, 0, -1, -1, 0], np.int64)).dims[0] \
            .attach_scale(fields)
        f.flush()
        if swmr:
            f.swmr_mode = True
        w = cls(f)
        unset = np.full(M, -1, np.int64)
        w._held = {p: unset for p in ("records/diverged_step", "checkpoint/slot0/diverged_step",
                                      "checkpoint/slot1/diverged_step")}
        return w

    # -- appending ------------------------------------------------------------
    @property
    def n_records(self) -> int:
        return int(self.commit[F.N_RECORDS])

    def write_block(self, records: list[dict], state: dict | None, steps_done: int,
                    diverged_step: np.ndarray, complete: bool = False,
                    first_passage: dict | None = None) -> None:
        """Append `records` (each: step, energy, positions?, observables) and optionally a
        checkpoint of `state` at `steps_done`; then commit. Safe against a kill anywhere.
        `first_passage`: the observer's arrays at `steps_done` (first_passage.STATE_KEYS ->
        (M, R)), rewritten in /first_passage before the marker (a plain-HDF5 view; readers
        take the committed checkpoint's copy, see `Run.first_passage`).  A write that fails
        (a full disk, the file-size limit) raises `write_failed`'s one line."""
        try:
            self.append(records)
            self.commit_block(state, steps_done, diverged_step, complete, first_passage)
        except (OSError, RuntimeError) as e:
            raise write_failed(self, e) from None

    def append(self, records: list[dict]) -> None:
        """Write `records` after the rows written so far, uncommitted: readers ignore them
        until `commit_block` moves the marker.  One record is written from its own arrays
        (no stacked copy)."""
        if not records:
            return
        rec = self.f["records"]
        n0 = self.rows
        n1 = n0 + len(records)
        for name in records[0]:
            if name == "time" and name not in rec:
                continue  # format version 1 files have no /records/time
            ds = self._ds(f"records/{name}")
            if ds.shape[0] < n1:
                ds.resize(n1, axis=0)
            rows = [r[name] for r in records]
            if _row_is_chunk(ds):   # large rows: whole chunks, past HDF5's element machinery
                for i, row in enumerate(rows, n0):
                    if self._direct is None or not self._direct.write(ds, i, row):
                        ds.id.write_direct_chunk((i,) + (0,) * (ds.ndim - 1),
                                                 np.ascontiguousarray(row, ds.dtype))
            else:
                ds[n0:n1] = np.asarray(rows[0])[None] if len(rows) == 1 else np.stack(rows)
        self.rows = n1

    def commit_block(self, state: dict | None, steps_done: int, diverged_step: np.ndarray,
                     complete: bool = False, first_passage: dict | None = None) -> None:
        """Commit every row written so far, with a checkpoint of `state` at `steps_done`
        unless None (see `write_block`): data -> flush -> marker -> flush."""
        self._put("records/diverged_step", diverged_step)
        if first_passage is not None and "first_passage" in self.f:
            _write_first_passage(self.f["first_passage"], first_passage, steps_done)
        commit = self.commit.copy()
        if state is not None:
            slot = 1 - int(commit[F.CKPT_SLOT]) if commit[F.CKPT_SLOT] >= 0 else 0
            g = self.f[f"checkpoint/slot{slot}"]
            self._write_state(g, state)
            self._put(f"checkpoint/slot{slot}/diverged_step", diverged_step)
            commit[F.CKPT_SLOT], commit[F.CKPT_STEP] = slot, steps_done
        commit[F.N_RECORDS], commit[F.STEPS_DONE], commit[F.COMPLETE] = self.rows, steps_done, complete
        self._commit(commit)
        if complete and state is not None:
            # Mirror the final state into the other slot and name slot 0, so a finished file
            # does not depend on when earlier flushes happened (the valid slot is untouched
            # until the marker moves).
            other = self.f[f"checkpoint/slot{1 - slot}"]
            self._write_state(other, state)
            self._put(f"checkpoint/slot{1 - slot}/diverged_step", diverged_step)
            commit = commit.copy()
            commit[F.CKPT_SLOT] = 0
            self._commit(commit)

    def _write_state(self, g: h5py.Group, state: dict) -> None:
        """The state arrays into checkpoint slot g: large ones past the page cache
        (`DirectRows.write_whole`), the rest through HDF5."""
        for k, v in state.items():
            if self._direct is None or not self._direct.write_whole(g[k], v):
                g[k][...] = v

    def _put(self, path: str, value: np.ndarray) -> None:
        """Overwrite dataset `path` with `value`, unless this writer already wrote that value
        there (diverged_step, (M,) int64, rarely changes: most commits skip its writes)."""
        held = self._held.get(path)
        if held is None or not np.array_equal(held, value):
            self.f[path][...] = value
            self._held[path] = np.array(value)

    def _commit(self, commit: np.ndarray) -> None:
        """Flush the data written so far, then the marker, then flush again; then hand the
        file's cached pages back (`_drop_cached_pages`)."""
        self.f.flush()
        self.f[F.COMMIT][...] = commit
        self.f.flush()
        self.commit = commit
        self._drop_cached_pages()

    def _drop_cached_pages(self) -> None:
        """Start writing the flushed pages to disk and free those already written (Linux
        POSIX_FADV_DONTNEED: dirty pages are queued for writeback, clean ones dropped), so that
        the next commit's writes through the page cache (checkpoints, small series, metadata;
        large record rows bypass it, `DirectRows`) reuse freshly freed memory instead of
        growing the page cache: on VMs whose host backs guest memory lazily a new page costs
        15-35 us, a recycled one ~0.5 us (docs/design_changes.md 24).  No durability is
        implied or lost; without fadvise or a file descriptor (other HDF5 drivers) nothing
        happens."""
        if not hasattr(os, "posix_fadvise") or self.f.driver != "sec2":
            return
        try:
            os.posix_fadvise(self.f.id.get_vfd_handle(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass

    def truncate_to_checkpoint(self) -> None:
        """Drop records beyond the last checkpoint (before resuming from it): the marker
        first, then the datasets (shrunk first, a file killed in between had a marker
        counting records its datasets no longer held)."""
        step_at = int(self.commit[F.CKPT_STEP])
        steps = self.f["records/step"][: self.n_records]
        keep = int(np.searchsorted(steps, step_at, side="right"))
        commit = self.commit.copy()
        commit[F.N_RECORDS], commit[F.STEPS_DONE], commit[F.COMPLETE] = keep, step_at, 0
        self._commit(commit)
        for ds in self.f["records"].values():
            if ds.maxshape[0] is None and ds.shape[0] > keep:
                ds.resize(keep, axis=0)
        self.f.flush()
        self.rows = keep


def _write_potential(f: h5py.File, potential) -> None:
    """The potential's group /potential (`Potential.to_hdf5`), its large arrays (a p-spin's
    couplings passed in: 134 MB at N = 256) allocated at creation and written past the page
    cache (`DirectRows.write_whole`): through it each run paid ~1 s of first touches of fresh
    pages on this VM (design_changes 28)."""
    large = []

    def put(group, name, value):
        if value.nbytes >= F.CHUNK_BYTES // 2 and value.dtype.kind in "biuf":
            large.append((group.create_dataset(name, value.shape, value.dtype,
                                               **early_allocation()), value))
        else:
            group.create_dataset(name, data=value)

    potential.to_hdf5(f.create_group("potential"), put)
    direct = DirectRows.open(f) if large else None
    for ds, value in large:
        if direct is None or not direct.write_whole(ds, value):
            ds[...] = value


class WriterThread:
    """One background thread that owns a RunWriter: `submit("append", records)` and
    `submit("commit_block", ...)` queue its calls and return at once, so that HDF5 writes and
    flushes overlap the next block's compute (the kernels release the GIL).  Calls run in
    order, so the commit marker keeps its meaning (data -> flush -> marker -> flush).  Arrays
    handed over must not change afterwards (pass copies); those from `recycler` are given
    back to it once their call has written them.  At most `depth` calls wait; an error in the
    thread drops the calls after it and is raised by the next `submit` or by `close`."""

    def __init__(self, writer: RunWriter, depth: int = 4, recycler: Recycler | None = None):
        self.writer = writer
        self.recycler = recycler
        self._jobs: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._drop = self._closed = False
        self._done = threading.Event()      # set when the thread has left its last call
        self._thread = threading.Thread(target=self._work, name="langevin-sim writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if self._error is None and not self._drop:
                    try:
                        getattr(self.writer, job[0])(*job[1])
                    except BaseException as e:  # raised in the submitting thread
                        self._error = write_failed(self.writer, e)
                    else:
                        if self.recycler is not None:
                            self.recycler.give(job[1])
        finally:
            self._done.set()

    def submit(self, method: str, *args) -> None:
        """Queue `writer.<method>(*args)` (blocks while `depth` calls wait)."""
        self._raise()
        self._jobs.put((method, args))

    def close(self, abort: bool = False) -> None:
        """Wait for the queued calls and stop the thread, raising its error if any;
        `abort=True` lets only the running call finish (the last commit stands) and raises
        nothing (the caller is already handling an error)."""
        self._drop = self._drop or abort
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
        # waited on an Event, not Thread.join: a Ctrl-C inside join left Python 3.11's thread
        # marked stopped while it still wrote (bpo-45274's release of the running thread's
        # lock), so a second Ctrl-C reported an old checkpoint and the process could hang at
        # exit on h5py's lock, held by the daemon thread being torn down
        while True:
            try:
                self._done.wait()
                break
            except KeyboardInterrupt:
                if not abort:
                    raise           # (the caller's abort then waits here, dropping the queue)
                self._drop = True   # a further Ctrl-C while aborting: the call in flight ends
        if not abort:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def creating_name(out: str) -> str:
    """The hidden name beside run file `out` under which this process lays it out until it
    is flushed and published (`simulation._create_file`): `.NAME.HOST-PID.TOKEN.creating`."""
    parent, name = os.path.split(out)
    return os.path.join(parent, f".{name}.{socket.gethostname()}-{os.getpid()}."
                                f"{uuid.uuid4().hex[:12]}.creating")


def creating_pattern(name: str) -> re.Pattern:
    """Matches the hidden names `creating_name` gives run file `name` in any process (groups
    host and pid)."""
    return re.compile(rf"\.{re.escape(name)}\.(?P<host>.+)-(?P<pid>\d+)\.[0-9a-f]{{12}}\.creating")


def published_name(path: str) -> str:
    """The name run file `path` has or will have: `path` itself, or `out` for the hidden
    name `creating_name(out)` of this process."""
    parent, name = os.path.split(path)
    m = re.fullmatch(rf"\.(.+)\.{re.escape(socket.gethostname())}-{os.getpid()}\.[0-9a-f]{{12}}"
                     r"\.creating", name)
    return path if m is None else os.path.join(parent, m[1])


def write_failed(writer: RunWriter, e: BaseException) -> BaseException:
    """The error to raise for `e`, raised while `writer` wrote its file: an OS-level write
    failure (an errno: a full disk, the file-size limit) becomes one RunFileError line naming
    the cause, the last commit and the fix, and the file is detached (`detach`); anything else
    is returned as it is."""
    if not isinstance(e, (OSError, RuntimeError)) or isinstance(e, LangevinSimError):
        return e
    m = re.search(r"errno = (\d+)", str(e))     # h5py's errors carry it in their message
    code = e.errno if isinstance(e, OSError) and e.errno else int(m[1]) if m else None
    if not code:
        return e
    why = os.strerror(code)
    fix = {errno.ENOSPC: "make room on its file system", errno.EDQUOT: "make room in your quota",
           errno.EFBIG: "raise the file-size limit (`ulimit -f`)"}.get(code, "fix its cause")
    c, path = writer.commit, published_name(writer.path)
    where = (f"the records committed up to step {int(c[F.STEPS_DONE])} and the checkpoint at step "
             f"{int(c[F.CKPT_STEP])} stand; {fix}, then: langevin-sim resume {path}"
             if c[F.CKPT_SLOT] >= 0 else
             f"nothing was committed and the new file is removed; {fix}, then start the run "
             "again")
    detach(writer.f, code)
    return RunFileError(f"writing {path} failed ({why}): {where}")


def detach(f: h5py.File, code: int = errno.ENOSPC) -> None:
    """Point HDF5's descriptor of `f` at an anonymous in-memory file (Linux memfd), so that
    nothing more reaches the run file after a failed write (errno `code`): closing `f` (its
    flush, its length change) then succeeds and leaves the file's last commit as it is on
    disk.  Without this the close fails again, leaves the file's datasets open on a
    half-closed file, and HDF5 crashes the interpreter when they are freed (at exit, or at a
    notebook's next garbage collection).  After EFBIG (the file-size limit, `ulimit -f`,
    which binds every regular file, a memfd too) the descriptor goes to /dev/null instead: a
    character device takes writes at any offset; only the close's length change then fails,
    after every dataset is closed.  No-op elsewhere."""
    if not hasattr(os, "memfd_create") or not f.id.valid or f.driver != "sec2":
        return
    mem = (os.open(os.devnull, os.O_RDWR) if code == errno.EFBIG
           else os.memfd_create("langevin-sim-detached"))
    try:
        os.dup2(mem, f.id.get_vfd_handle(), inheritable=False)
    finally:
        os.close(mem)
