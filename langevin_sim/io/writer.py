"""HDF5 run-file writer: data -> flush -> commit marker -> flush, two checkpoint slots."""
from __future__ import annotations

import datetime
import json
import sys

import h5py
import numpy as np

from . import format as F
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
    g.attrs["definition"] = json.dumps(fp.to_dict())


def _write_first_passage(g: h5py.Group, arrays: dict, step: int) -> None:
    from ..first_passage import NAMES, STATE_KEYS

    for key, name in zip(STATE_KEYS, NAMES):
        g[name][...] = arrays[key]
    g["step"][()] = np.int64(step)


def _chunk_rows(row_bytes: int) -> int:
    return max(1, F.CHUNK_BYTES // max(1, row_bytes))


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
        self.commit = f[F.COMMIT][()].copy()

    # -- creation -----------------------------------------------------------
    @classmethod
    def create(cls, f: h5py.File, *, config: dict, potential, replicas: np.ndarray, d: int,
               pos_dtype, record_positions: bool, observables: dict, state: dict,
               compression: str | None, swmr: bool, first_passage=None,
               first_passage_step: int = 0) -> "RunWriter":
        """Lay out a new run file. `observables`: name -> (trailing shape, dtype).
        `first_passage`: the Simulation's `FirstPassage` observer (its arrays are in `state`),
        laid out in /first_passage."""
        from .. import __version__

        f.attrs["format"] = F.FORMAT
        f.attrs["format_version"] = F.FORMAT_VERSION
        f.attrs["package_version"] = __version__
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        f.attrs["command"] = " ".join(sys.argv)
        f.attrs["writer"] = writer_info()
        f.create_group("config").attrs["json"] = json.dumps(config)
        potential.to_hdf5(f.create_group("potential"))
        M = len(replicas)
        rec = f.create_group("records")
        step = rec.create_dataset("step", (0,), np.int64, maxshape=(None,), chunks=(4096,))
        step.make_scale("step")
        rep = rec.create_dataset("replica", data=np.asarray(replicas, np.int64))
        rep.make_scale("replica")
        kw = {"compression": compression} if compression else {}

        def series(name, trailing, dtype, dims):
            row = int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
            ds = rec.create_dataset(name, (0,) + trailing, dtype, maxshape=(None,) + trailing,
                                    chunks=(_chunk_rows(row),) + trailing, **kw)
            for i, scale in enumerate(dims):
                ds.dims[i].attach_scale(scale)
            ds.attrs["coordinates"] = "time"  # CF: xarray makes `time` a coordinate on `step`
            return ds

        series("energy", (M,), np.float64, (step, rep))
        if record_positions:
            coord = rec.create_dataset("coord", data=np.arange(d, dtype=np.int64))
            coord.make_scale("coord")
            series("positions", (M, d), pos_dtype, (step, rep, coord))
        for name, (trailing, dtype) in observables.items():
            extra = []
            for j, n in enumerate(trailing):
                sc = rec.create_dataset(f"{name}_dim{j}", data=np.arange(n, dtype=np.int64))
                sc.make_scale(f"{name}_dim{j}")
                extra.append(sc)
            series(name, (M,) + tuple(trailing), dtype, (step, rep, *extra))
        tm = rec.create_dataset("time", (0,), np.float64, maxshape=(None,), chunks=(4096,))
        tm.dims[0].attach_scale(step)
        div = rec.create_dataset("diverged_step", data=np.full(M, -1, np.int64))
        div.dims[0].attach_scale(rep)
        ck = f.create_group("checkpoint")
        ck_scales = _scales(ck, {"replica": np.asarray(replicas, np.int64), "coord": np.arange(d)})
        for slot in (0, 1):
            g = ck.create_group(f"slot{slot}")
            for k, v in dict(state, diverged_step=np.full(M, -1, np.int64)).items():
                ds = g.create_dataset(k, data=v)
                for i, n in enumerate(ds.shape):
                    name = ("replica" if i == 0 else "coord") if (i < 2 and n == (M, d)[i]) \
                        else f"{k}_dim{i}"
                    if k.startswith("fp_") and i == 1:
                        name = "region"  # first-passage arrays: (replica, region)
                    if name not in ck_scales:
                        ck_scales.update(_scales(ck, {name: np.arange(n)}))
                    ds.dims[i].attach_scale(ck_scales[name])
        _scale_the_rest(f["potential"])
        if first_passage is not None:
            _first_passage_layout(f, first_passage, replicas, state, first_passage_step)
        fields = f.create_dataset("commit_field", data=np.array(F.COMMIT_FIELDS, dtype="S"))
        fields.make_scale("commit_field")
        f.create_dataset(F.COMMIT, data=np.array([0, 0, -1, -1, 0], np.int64)).dims[0] \
            .attach_scale(fields)
        f.flush()
        if swmr:
            f.swmr_mode = True
        return cls(f)

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
        take the committed checkpoint's copy, see `Run.first_passage`)."""
        rec = self.f["records"]
        n0 = self.n_records
        n1 = n0 + len(records)
        if records:
            for name in records[0]:
                if name == "time" and name not in rec:
                    continue  # format version 1 files have no /records/time
                ds = rec[name]
                if ds.shape[0] < n1:
                    ds.resize(n1, axis=0)
                ds[n0:n1] = np.stack([r[name] for r in records])
        self.f["records/diverged_step"][...] = diverged_step
        if first_passage is not None and "first_passage" in self.f:
            _write_first_passage(self.f["first_passage"], first_passage, steps_done)
        commit = self.commit.copy()
        if state is not None:
            slot = 1 - int(commit[F.CKPT_SLOT]) if commit[F.CKPT_SLOT] >= 0 else 0
            g = self.f[f"checkpoint/slot{slot}"]
            for k, v in state.items():
                g[k][...] = v
            g["diverged_step"][...] = diverged_step
            commit[F.CKPT_SLOT], commit[F.CKPT_STEP] = slot, steps_done
        commit[F.N_RECORDS], commit[F.STEPS_DONE], commit[F.COMPLETE] = n1, steps_done, complete
        self._commit(commit)
        if complete and state is not None:
            # Mirror the final state into the other slot and name slot 0, so a finished file
            # does not depend on when earlier flushes happened (the valid slot is untouched
            # until the marker moves).
            other = self.f[f"checkpoint/slot{1 - slot}"]
            for k, v in state.items():
                other[k][...] = v
            other["diverged_step"][...] = diverged_step
            commit = commit.copy()
            commit[F.CKPT_SLOT] = 0
            self._commit(commit)

    def _commit(self, commit: np.ndarray) -> None:
        """Flush the data written so far, then the marker, then flush again."""
        self.f.flush()
        self.f[F.COMMIT][...] = commit
        self.f.flush()
        self.commit = commit

    def truncate_to_checkpoint(self) -> None:
        """Drop records beyond the last checkpoint (before resuming from it)."""
        step_at = int(self.commit[F.CKPT_STEP])
        steps = self.f["records/step"][: self.n_records]
        keep = int(np.searchsorted(steps, step_at, side="right"))
        for ds in self.f["records"].values():
            if ds.maxshape[0] is None and ds.shape[0] > keep:
                ds.resize(keep, axis=0)
        commit = self.commit.copy()
        commit[F.N_RECORDS], commit[F.STEPS_DONE], commit[F.COMPLETE] = keep, step_at, 0
        self._commit(commit)
