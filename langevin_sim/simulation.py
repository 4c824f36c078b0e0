"""Simulation: replicas, initial state, the run loop, recording, divergence, checkpoints."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import h5py
import numpy as np

from . import rng
from .backends import get_backend
from .backends.jit import one_blas_thread
from .dynamics.base import Dynamics
from .dynamics.schedules import exact_units
from .errors import (ConfigError, DivergenceWarning, RunFileError, RunStopped, RunTerminated,
                     UnrecordedStepsWarning, check_int)
from .first_passage import STATE_KEYS as FP_KEYS
from .first_passage import FirstPassage
from .io import Run, RunWriter
from .io.reader import RunFileLocked, lengthen, private, refuse_if_written, run_path
from .io.format import CKPT_SLOT, CKPT_STEP, COMPLETE, STEPS_DONE, json_default
from .io.machine import record_machine
from .io.swmr import writer_info
from .io.direct import ALIGN
from .io.recycle import Recycler
from .observers import Observer, check_observer
from .observers import rebuild as rebuild_observer
from .io.writer import WriterThread, creating_name, creating_pattern
from .potentials.base import Potential

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

DTYPES = ("float64", "float32")
_BATCH_BYTES = 1 << 20   # records gathered before they go to the writer thread together
_BETWEEN_RUNS = 2      # recycled buffers a simulation keeps per shape between runs


class Simulation:
    """M replicas of `dynamics` on `potential`, stepped by `backend`.

    replicas: M, the number of chains; their global ids are first_replica .. first_replica+M-1
    (below 2**32), and every random number depends only on (seed, id, step), so splitting
    replicas over Simulations (workers) gives identical trajectories. init: an (M, d) array,
    "default" (the potential's `default_init` of INIT-stream normals), "zeros" or "normal"
    (N(0, 1)). A replica whose state becomes non-finite or exceeds `divergence_bound` in
    absolute value is frozen at its last good state, `diverged_step[m]` records the step count
    at which it went bad, and its records are NaN from then on. `observers`: `Observer`s,
    `obs(sim) -> {name: (M, ...)}` evaluated at every record (e.g. `SharpnessObserver(every=k *
    record_every)`), registered by class so that `resume` rebuilds them (docs/extending.md). `first_passage`: a
    `FirstPassage` observer, updated by the backend after every step (first entry into labelled
    regions, crossing counts; its arrays are part of `state`, so they are checkpointed and
    resumed). `state` is a dict of (M, ...) arrays; on backend "cuda" it is a read-only host
    mirror of the device's: assign new arrays (`sim.state["x"] = x_new`) to change it (an
    in-place edit would not reach the device, so it raises).
    """

    def __init__(self, potential: Potential, dynamics: Dynamics, replicas: int,
                 backend: str = "numba", dtype: "str | type | np.dtype" = "float64", seed: int = 0,
                 init: "str | ArrayLike" = "default", first_replica: int = 0,
                 divergence_bound: float = 1e8,
                 observers: Iterable[Observer] = (),
                 meta: dict | None = None,
                 first_passage: FirstPassage | None = None) -> None:
        if not isinstance(potential, Potential):
            raise ConfigError(f"potential must be a langevin_sim Potential, got {type(potential).__name__}")
        if not isinstance(dynamics, Dynamics):
            raise ConfigError(f"dynamics must be a langevin_sim Dynamics, got {type(dynamics).__name__}")
        replicas = check_int("replicas", replicas)
        first_replica = check_int("first_replica", first_replica, minimum=0)
        if first_replica + replicas > 2**32:
            raise ConfigError(f"replica ids must be below 2**32 (the Philox counter's replica "
                              f"word), got {first_replica} + {replicas}; pass first_replica <= "
                              f"{2**32 - replicas}")
        try:
            name = np.dtype(dtype).name if dtype is not None else None   # np.float32, "f4"
        except (TypeError, ValueError):
            name = None
        if name not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES} (or np.float64, np.float32), "
                              f"got {dtype!r}")
        dtype = name
        if not divergence_bound > 0:
            raise ConfigError(f"divergence_bound must be > 0, got {divergence_bound}")
        rng.key_of(seed)
        potential.check_finite()
        potential.check_contract()
        dynamics.check_potential(potential)
        if first_passage is not None:
            if not isinstance(first_passage, FirstPassage):
                raise ConfigError("first_passage must be a langevin_sim.first_passage.FirstPassage, "
                                  f"got {type(first_passage).__name__}")
            first_passage.check(potential.d)
        self.potential, self.dynamics = potential, dynamics
        self.backend_name = backend
        self.backend = get_backend(backend)
        self.n_replicas, self.first_replica = int(replicas), int(first_replica)
        self.dtype, self.seed = np.dtype(dtype), int(seed)
        # (an infinite bound still refuses infinite states: |inf| > the dtype's largest float)
        self.divergence_bound = min(float(divergence_bound), float(np.finfo(self.dtype).max))
        self.meta = dict(meta or {})
        for key, value in self.meta.items():
            try:
                json.dumps(value, default=json_default)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"meta[{key!r}] cannot be stored in the run file ({e}); give "
                                  "numbers, strings, lists or dicts of them") from None
        self.observers = tuple(observers)
        for o in self.observers:
            check_observer(o)
        self.init_desc = init if isinstance(init, str) else "array"
        x0 = self._initial_positions(init)
        if type(potential).__module__.split(".")[0] != "langevin_sim":
            potential.check_shapes(np.asarray(x0[:2], np.float64))   # a user's: its shapes
        self.state = {k: np.ascontiguousarray(v, dtype=self.dtype if np.ndim(v) == 2 else np.float64)
                      for k, v in dynamics.init_state(potential, x0).items()}
        self.first_passage = first_passage
        if first_passage is not None:
            self.state.update(first_passage.init_state(self.state["x"]))
        self.diverged_step = np.full(self.n_replicas, -1, dtype=np.int64)
        self.step = 0
        self._clock = (0, 0)  # (t, the exact sum of the step sizes before step t, as `exact_units`)
        self._stop = False
        self._buffers: Recycler | None = None   # `run`'s copies for its writer, kept across runs

    # -- setup -------------------------------------------------------------------------
    @property
    def replica_ids(self) -> np.ndarray:
        return np.arange(self.first_replica, self.first_replica + self.n_replicas)

    def _initial_positions(self, init) -> np.ndarray:
        M, d = self.n_replicas, self.potential.d
        if isinstance(init, str):
            if init == "zeros":
                return np.zeros((M, d), self.dtype)
            z = rng.stream_normals(self.seed, rng.INIT, self.replica_ids, 0, d)
            if init == "normal":
                return z.astype(self.dtype)
            if init == "default":
                return np.asarray(self.potential.default_init(z), dtype=self.dtype)
            raise ConfigError(f"unknown init {init!r}; use an (M, d) array, 'default', 'zeros' or 'normal'")
        x = np.asarray(init, dtype=np.float64)
        if x.shape == (d,):
            x = np.broadcast_to(x, (M, d))
        if x.shape != (M, d):
            raise ConfigError(f"init has shape {x.shape} but replicas={M} and the potential has "
                              f"d={d}: pass an array of shape ({M}, {d}) (or ({d},) for all replicas)")
        if not np.all(np.isfinite(x)):
            raise ConfigError("init contains non-finite values; pass finite positions")
        if self.potential.constrained:
            on = np.asarray(self.potential.retract(x), np.float64)
            off = np.abs(on - x).max(axis=1) > 1e-5 * np.maximum(1.0, np.abs(x).max(axis=1))
            if off.any():
                r2 = np.sum(x[off] * x[off], axis=1)
                span = f"{r2.min():.6g}" + ("" if r2.min() == r2.max() else f" to {r2.max():.6g}")
                raise ConfigError(
                    f"init puts {int(off.sum())} of {M} replicas off the constraint of "
                    f"{type(self.potential).__name__} (d = {d}): their |x|^2 = {span}, and its "
                    "retract(x) moves them; pass potential.retract(x), or init='default'")
        return x.astype(self.dtype)

    def __repr__(self) -> str:
        return (f"Simulation({self.potential!r}, {self.dynamics!r}, replicas={self.n_replicas}, "
                f"backend={self.backend_name!r}, dtype={self.dtype.name!r}, seed={self.seed}"
                f"{f', first_replica={self.first_replica}' if self.first_replica else ''}; "
                f"{self.step} steps done)")

    def config(self) -> dict:
        """The resolved configuration stored in the run file's /config."""
        return {"potential": self.potential.describe(), "dynamics": self.dynamics.to_dict(),
                "replicas": self.n_replicas, "first_replica": self.first_replica,
                "dtype": self.dtype.name, "seed": self.seed, "backend": self.backend_name,
                "init": self.init_desc, "divergence_bound": self.divergence_bound,
                "observers": [o.to_dict() for o in self.observers], "meta": self.meta,
                **({"first_passage": self.first_passage.to_dict()} if self.first_passage else {})}

    def first_passage_state(self) -> dict | None:
        """The first-passage observer's arrays (STATE_KEYS -> (M, R)), or None."""
        return None if self.first_passage is None else {k: self.state[k] for k in FP_KEYS}

    @property
    def time(self) -> float:
        """Time at the current step: the sum of the step sizes (`step` or `lr`) before it,
        correctly rounded, so a pure function of the step whatever the records and resumes
        were.  A schedule is constant from its step `steps` on: that tail is one product."""
        eta = getattr(self.dynamics, "step", getattr(self.dynamics, "lr", None))
        if eta is None:
            return float("nan")
        if eta.kind == "constant":
            return self.step * float(eta.start)
        ramp = eta.steps
        end = min(self.step, ramp)
        t0, acc = self._clock
        if t0 > end:
            t0, acc = 0, 0
        acc += eta.exact_sum(t0, end)
        self._clock = (end, acc)
        return (acc + (self.step - end) * exact_units(eta(ramp))) / (1 << 1074)

    def _check_end(self, end: int, what: str) -> None:
        """Refuse a run ending at step `end` whose stream positions n = step * lanes (lanes:
        d times the dynamics' normals per coordinate, or the samples of a finite sum: its
        minibatch draws; the last step reading `steps_ahead` steps further) pass 2**63: the
        kernels count them in int64 (past it they wrap onto earlier steps' noise), the run
        file its steps.  Observers with a `check_end(end)` of their own are asked too."""
        dyn = self.dynamics
        end = int(end)
        lanes = max(self.potential.d * dyn.normals_per_coordinate, self.potential.n_samples or 1)
        last = 2**63 // lanes - dyn.steps_ahead          # the last end within int64
        if end >= 2**63 or end > last:                  # (Python ints: a NumPy step would wrap)
            raise ConfigError(f"{what} ends the run at step {end}, past int64 (the step count, "
                              f"and {lanes} stream positions a step"
                              + (f", {dyn.steps_ahead} step ahead" if dyn.steps_ahead else "")
                              + f"); end it by step {min(last, 2**63 - 1)}")
        for obs in self.observers:
            check = getattr(obs, "check_end", None)
            if check is not None:
                check(end)

    # -- stepping ----------------------------------------------------------------------
    def advance(self, steps: int, sync: bool = True) -> None:
        """Run `steps` steps without recording; `sync=False` leaves a device backend's state
        on the device (the run loop syncs at records and checkpoints)."""
        steps = check_int("steps", steps, minimum=0)
        self._check_end(self.step + steps, f"steps={steps}")
        self.backend.advance(self, self.step, steps)
        self.step += steps
        if sync:
            self.sync()

    def sync(self) -> None:
        """Bring `state` and `diverged_step` up to date on the host (device backends)."""
        to_host = getattr(self.backend, "to_host", None)
        if to_host is not None:
            to_host(self)

    def snapshot(self, record_positions: bool = True, buffers: Recycler | None = None) -> dict:
        """One record of the current state: step, time, energy (float64, (M,)), positions
        ((M, d), the state's dtype), observables (new arrays: NaN-filling a diverged replica's
        entries never touches the state; energy and positions in arrays of `buffers` when
        given).  A float32 state is widened block by block for the potential's observables,
        never whole."""
        return self.begin_snapshot(record_positions, buffers)()

    def begin_snapshot(self, record_positions: bool = True,
                       buffers: Recycler | None = None) -> Callable[[], dict]:
        """Start `snapshot` of the current state and return the function that completes it.
        A device backend computes the record on the device and copies it into host arrays
        (page-locked ones of `buffers`) while the steps queued next compute
        (`begin_record`); on the host, or with observers, the record is taken now."""
        begin = getattr(self.backend, "begin_record", None)
        taking = None if begin is None or self.observers else \
            begin(self, record_positions, np.empty if buffers is None else buffers.empty)
        head = {"step": np.int64(self.step), "time": np.float64(self.time)}
        if taking is None:
            rec = self._record(head, record_positions, buffers)
            return lambda: rec

        def complete() -> dict:
            rec = dict(head, **taking())
            return _nan_diverged(rec, rec.pop("diverged_step") >= 0)
        return complete

    def _record(self, rec: dict, record_positions: bool, buffers: Recycler | None) -> dict:
        """`rec` (step and time) completed with the record's arrays from the host mirror."""
        self.sync()
        x = self.state["x"]
        with np.errstate(all="ignore"), one_blas_thread():
            if hasattr(self.backend, "record_energy"):
                out = None if buffers is None else buffers.empty(x.shape[0], np.float64)
                energy = self.backend.record_energy(self, out)
            else:
                energy = np.asarray(self.potential.energy(np.asarray(x, np.float64)), np.float64)
            rec["energy"] = energy
            if record_positions:
                rec["positions"] = x.copy() if buffers is None else buffers.copy(x)
            compiled = getattr(self.backend, "record_observables", None)
            obs = None if compiled is None else compiled(self, energy)
            rec.update(_in_float64(self.potential, x, energy) if obs is None else obs)
            for k, v in self.dynamics.observables(self.state).items():
                rec[k] = np.array(v)
            for obs in self.observers:
                rec.update({k: np.array(v) for k, v in obs(self).items()})
        return _nan_diverged(rec, self.diverged_step >= 0)

    # -- running -----------------------------------------------------------------------
    def run(self, steps: int, record_every: int = 100, out: "str | os.PathLike | None" = None,
            record_positions: bool = True,
            checkpoint_every: int | None = None, progress: bool | None = None,
            overwrite: bool = False, swmr: bool = False, compression: str | None = None,
            flush_seconds: float = 1.0) -> Run:
        """Advance `steps` steps, recording every `record_every` steps, into run file `out`.

        out=None keeps the run file in memory.  Records are flushed at least every
        `flush_seconds` and at the end, each flush followed by the commit marker; a
        checkpoint goes with every flush (or every `checkpoint_every` steps).  Returns the
        Run, open for reading.
        """
        steps = check_int("steps", steps, minimum=0)
        record_every = check_int("record_every", record_every)
        _check_write_options(compression, flush_seconds, checkpoint_every)
        for obs in self.observers:
            check = getattr(obs, "check_record_every", None)
            if check is not None:
                check(record_every)
        _check_out(out, overwrite)                    # refuse at once, not after the probe
        end = self.step + steps
        self._check_end(end, f"steps={steps}")
        _warn_unrecorded(end, record_every, "end on a multiple of record_every", stacklevel=3)
        probe = self.snapshot(record_positions)      # before the file: it may compile, measure
        f = _create_file(out, overwrite, swmr)
        try:
            writer = self.create_writer(f, probe, record_every, record_positions,
                                        self.step + steps, compression, swmr)
            # published with its first record and a checkpoint: resumable from the start
            writer.write_block([probe] if self.step % record_every == 0 else [], self.state,
                               self.step, self.diverged_step,
                               first_passage=self.first_passage_state())
            _publish(writer, out, overwrite)
            self._loop(writer, self.step + steps, record_every, record_positions, [],
                       checkpoint_every, progress, flush_seconds)
        except BaseException:
            _close_unpublished(f, out)
            raise
        report_divergence(self.diverged_step, self.replica_ids)
        return Run(out, file=f) if out is None else _reopen(f, out)

    def create_writer(self, f: h5py.File, probe: dict, record_every: int, record_positions: bool,
                      target: int, compression: str | None = None,
                      swmr: bool = False) -> RunWriter:
        """Lay out the open HDF5 file f as this simulation's run file: config (with the
        recording plan and the target step), potential, record datasets shaped like the
        snapshot `probe`, the current state as checkpoint, first-passage observers."""
        cfg = dict(self.config(), record_every=record_every, record_positions=bool(record_positions),
                   steps_target=target, swmr=bool(swmr))
        obs = {k: (v.shape[1:], v.dtype) for k, v in probe.items()
               if k not in ("step", "time", "energy", "positions")}
        return RunWriter.create(f, config=cfg, potential=self.potential, replicas=self.replica_ids,
                                d=self.potential.d, pos_dtype=self.dtype,
                                record_positions=record_positions, observables=obs,
                                state=self.state, compression=compression, swmr=swmr,
                                first_passage=self.first_passage, start_step=self.step,
                                device=getattr(self.backend, "provenance", None),
                                keep_initial=self.init_desc == "array")

    def _loop(self, writer: RunWriter, target: int, record_every: int, record_positions: bool,
              pending: list, checkpoint_every: int | None, progress: bool | None,
              flush_seconds: float) -> None:
        """Advance to `target`, recording every `record_every` steps.  Records go to a writer
        thread as they are taken (alone, or gathered up to _BATCH_BYTES), so the file is
        written while the next block computes; a device backend's record is completed (its
        copy to the host waited for) only after the next block is queued.  A commit goes at
        least every `flush_seconds` and at the end, with a checkpoint (or every
        `checkpoint_every` steps).  SIGTERM and a first Ctrl-C stop at the next record after a
        commit, a second Ctrl-C at once."""
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=target - self.step, disable=not show, unit="step", leave=False)
        last_flush, last_ckpt = time.monotonic(), self.step
        committed = (int(writer.commit[STEPS_DONE]), bool(writer.commit[COMPLETE]))
        size = sum(v.nbytes for r in pending for v in r.values())
        self._stop = 0
        # the copies handed to the writer thread, reused once written, by this run and (up to
        # _BETWEEN_RUNS a shape) the next; in the backend's page-locked memory if it has one
        alloc = getattr(self.backend, "empty_host", np.empty)
        if self._buffers is None or self._buffers.alloc is not alloc:
            self._buffers = Recycler(alloc=alloc)
        buffers = self._buffers
        thread = WriterThread(writer, recycler=buffers)
        taking = None     # the record begun before the block last queued (device backends)
        deferred = hasattr(self.backend, "begin_record")   # else a record is complete at once

        def take():
            nonlocal pending, size, taking
            if taking is not None:
                pending.append(taking())
                size += sum(v.nbytes for v in pending[-1].values())
                taking = None
            if size >= _BATCH_BYTES:
                thread.submit("append", pending)
                pending, size = [], 0

        with _signals_stop(self) as signals:
            try:
                while self.step < target and not self._stop:
                    K = min(record_every - self.step % record_every, target - self.step)
                    self.advance(K, sync=False)
                    bar.update(K)
                    take()
                    if self.step % record_every == 0:
                        taking = self.begin_snapshot(record_positions, buffers)
                        if not deferred:     # to the writer now: written while the next
                            take()           # block computes
                    now = time.monotonic()
                    if now - last_flush >= flush_seconds or self.step == target:
                        take()
                        ckpt = checkpoint_every is None or self.step - last_ckpt >= checkpoint_every \
                            or self.step == target
                        committed = self._commit(thread, pending, ckpt, self.step == target,
                                                 buffers)
                        pending, size, last_flush = [], 0, now
                        last_ckpt = self.step if ckpt else last_ckpt
                take()
                done = self.step == target
                if pending or committed[0] != self.step or (done and not committed[1]):
                    self._commit(thread, pending, True, done, buffers, final=True)
                thread.close()
            except KeyboardInterrupt:
                # A second Ctrl-C: abort now; the last commit (data and checkpoint) stands.
                thread.close(abort=True)
                raise RunStopped(self._stopped(writer, target, "aborted by a second Ctrl-C"),
                                 128 + signal.SIGINT) from None
            except BaseException:
                thread.close(abort=True)
                raise
            finally:
                bar.close()
                buffers.trim(_BETWEEN_RUNS)
            stopped = self._stop    # (a signal after this line finds the run ended)
            if stopped:         # (a second Ctrl-C now has nothing left to abort but the close)
                signals.closing = True
                sig = signal.Signals(self._stop)
                msg = self._stopped(writer, target, f"stopped by {sig.name}")
                writer.f.close()
        if stopped:
            raise (RunStopped if sig == signal.SIGINT else RunTerminated)(msg, 128 + sig)

    def _commit(self, thread: WriterThread, pending: list, checkpoint: bool, complete: bool,
                buffers: Recycler, final: bool = False) -> tuple[int, bool]:
        """Queue `pending` records and a commit at the current step, with a checkpoint of the
        state if `checkpoint`.  The state is copied (into `buffers`) unless this is the last
        commit before the writer closes (`final`, or `complete`: no step follows).  Returns
        (step, complete)."""
        self.sync()
        keep = (lambda v: v) if final or complete else buffers.copy
        if pending:
            thread.submit("append", pending)
        state = {k: keep(v) for k, v in self.state.items()} if checkpoint else None
        fp = self.first_passage_state()
        thread.submit("commit_block", state, self.step, keep(self.diverged_step), complete,
                      None if fp is None else {k: keep(v) for k, v in fp.items()})
        return self.step, complete

    def _stopped(self, writer: RunWriter, target: int, why: str) -> str:
        """One line: where the run stopped, its checkpoint, and how to resume it."""
        f, c = writer.f, writer.commit
        where = (f"checkpoint at step {int(c[CKPT_STEP])}" if c[CKPT_SLOT] >= 0 else "no checkpoint yet")
        if f.driver == "core":
            return f"{why} at step {self.step} of {target}; the run was in memory, nothing to resume"
        return (f"{why} at step {self.step} of {target}; {where} in {writer.path}; resume with: "
                f"langevin-sim resume {shlex.quote(writer.path)}")


def _nan_diverged(rec: dict, dead: np.ndarray) -> dict:
    """`rec` with the float entries of the replicas flagged in `dead` (M,) set to NaN."""
    if dead.any():
        for k, v in rec.items():
            if k not in ("step", "time") and v.dtype.kind == "f":
                v[dead] = np.nan
    return rec


_WIDEN_BYTES = 1 << 20   # float64 bytes per block of rows for record-time observables
_POOL = None


def _in_float64(potential: Potential, x: np.ndarray, energy: np.ndarray) -> dict:
    """`potential.observables(x, energy)` -> {name: (M, ...)} evaluated in float64 as new
    arrays, on blocks of rows (at most ~1 MiB of float64 each, at least one per thread) spread
    over a small thread pool (NumPy and single-threaded BLAS release the GIL): a float32 `x` is
    widened block by block, never whole, and the record's observables take one thread's share
    of the time.  `energy` (M,): the record's, for observables derived from it."""
    global _POOL
    import numba
    from concurrent.futures import ThreadPoolExecutor

    if type(potential).observables is Potential.observables:
        return {}

    def part(lo):
        with np.errstate(all="ignore"):
            return potential.observables(np.asarray(x[lo:lo + n], np.float64), energy[lo:lo + n])

    threads = numba.get_num_threads()
    n = max(1, min(_WIDEN_BYTES // (8 * max(1, x.shape[1])), -(-len(x) // threads)))
    if n >= len(x):
        parts = [part(0)]
    else:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(threads, thread_name_prefix="langevin-sim records")
        parts = list(_POOL.map(part, range(0, len(x), n)))
    if not parts[0]:
        return {}
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def report_divergence(diverged_step: np.ndarray, replica_ids: np.ndarray) -> None:
    """Warn (DivergenceWarning) how many replicas diverged and when the first did."""
    bad = np.flatnonzero(diverged_step >= 0)
    if bad.size:
        first = bad[np.argmin(diverged_step[bad])]
        warnings.warn(f"{bad.size} of {diverged_step.size} replicas diverged, the first (replica "
                      f"{int(replica_ids[first])}) at step {int(diverged_step[first])}; their "
                      "records are NaN from then on (see diverged_step, or `langevin-sim info`)",
                      DivergenceWarning, stacklevel=3)


_RUNNING: weakref.WeakSet = weakref.WeakSet()   # simulations inside run(), any thread
_RUNNING_LOCK = threading.Lock()
_STOP_LATER = [0]      # the signal every later run of this process stops by (0: none)


def stop_runs(signum: int = signal.SIGINT, later: bool = False) -> int:
    """Ask every run in progress in this process, in any thread, to flush, checkpoint and
    stop at its next record boundary, as a first Ctrl-C does in the main thread; with
    `later`, every run started afterwards too, before its first step (for a process about
    to close: a scan's local workers).  Their `run` raises RunStopped (SIGINT) or RunTerminated.
    Returns how many runs in progress were asked."""
    if later:
        _STOP_LATER[0] = signum
    with _RUNNING_LOCK:
        sims = list(_RUNNING)
    for sim in sims:
        sim._stop = signum
    return len(sims)


def stopping() -> int:
    """The signal `stop_runs(..., later=True)` set in this process, 0 if none."""
    return _STOP_LATER[0]


class _signals_stop:
    """While active in the main thread, SIGTERM and a first SIGINT (Ctrl-C) ask the run loop
    to flush, checkpoint and stop at the next record boundary; a second SIGINT aborts.  In
    any thread, the run is one `stop_runs` reaches.  A process started with SIGINT ignored
    (`nohup`, a background job of a script: the terminal's Ctrl-C reaches it too) keeps
    ignoring it, the Unix convention a scan follows; SIGTERM still stops it."""

    def __init__(self, sim):
        self.sim, self.old = sim, {}
        self.closing = False    # set while a stopped run closes its file: no abort then

    def __enter__(self):
        with _RUNNING_LOCK:
            _RUNNING.add(self.sim)
        self.sim._stop = self.sim._stop or _STOP_LATER[0]
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.sim._stop and not self.closing:
            raise KeyboardInterrupt
        self.sim._stop = signum

    def __exit__(self, *exc):
        with _RUNNING_LOCK:
            _RUNNING.discard(self.sim)
        for sig, old in self.old.items():
            signal.signal(sig, old)


def _create_file(out, overwrite: bool, swmr: bool) -> h5py.File:
    """A new HDF5 file for run file `out` (None: in memory).  On POSIX it is made under a
    hidden temporary name beside `out` and takes the name only when laid out and flushed
    (`_publish`), so a process killed while laying it out never leaves an unreadable file at
    `out` (at worst a hidden `.NAME.HOST-PID.*.creating` file, which the next run file made
    at `out` on that host removes once process PID is gone)."""
    if out is None:
        return h5py.File(f"mem-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False)
    _check_out(out, overwrite)
    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    path = out
    if os.name == "posix":      # (not mkstemp: its files are private, 0600; these get the umask's)
        _remove_orphans(parent, os.path.basename(out))
        path = creating_name(os.path.join(parent, os.path.basename(out)))
    try:
        return private(h5py.File(path, "w", libver="latest" if swmr else None, **ALIGN))
    except BaseException:
        if path != out and os.path.exists(path):
            os.unlink(path)
        raise


def _remove_orphans(parent: str, name: str) -> None:
    """Remove the temporary files `_create_file` left for run file `name` in `parent` on this
    host whose process no longer exists (killed while laying the file out).  Files of other
    hosts (a shared file system) and of live processes are left alone."""
    pattern, host = creating_pattern(name), socket.gethostname()
    for entry in os.listdir(parent):
        m = pattern.fullmatch(entry)
        if m is None or m["host"] != host:
            continue
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(parent, entry))
        except (PermissionError, OverflowError):      # alive (another user's), or no such pid
            pass


def _record_resume(cfg: dict, step: int, target: int, backend: str) -> bool:
    """Update a run's config for a resume from `step` to `target` on `backend`: the target
    (and a scenario's `steps` parameter), the backend with its history; True if it changed."""
    changed = False
    if target != cfg["steps_target"]:
        cfg["steps_target"], changed = target, True
        params = (cfg.get("meta") or {}).get("params")
        if isinstance(params, dict) and "steps" in params:
            params["steps"] = target
    if backend != cfg["backend"]:
        cfg.setdefault("backend_history", [[0, cfg["backend"]]]).append([step, backend])
        cfg["backend"], changed = backend, True
    return changed


def _check_write_options(compression: str | int | None, flush_seconds: float,
                         checkpoint_every: int | None = None) -> None:
    """ConfigError for a compression filter that HDF5 lacks here, `flush_seconds` not a
    number of seconds >= 0, or `checkpoint_every` not a step count >= 1 (None: every flush)."""
    if compression is not None:
        names = [c for c in ("gzip", "lzf", "szip") if c in h5py.filters.encode]
        if isinstance(compression, bool) or not (
                compression in names if isinstance(compression, str) else
                isinstance(compression, int) and 0 <= compression <= h5py.h5z.FILTER_MAX
                and h5py.h5z.filter_avail(compression)):
            raise ConfigError(f"compression {compression!r} is not available here; give one of "
                              f"{', '.join(names)} or None (uncompressed)")
    if isinstance(flush_seconds, bool) or not isinstance(flush_seconds, (int, float)) \
            or not flush_seconds >= 0:
        raise ConfigError(f"flush_seconds must be a number of seconds >= 0 (0: commit after "
                          f"every block), got {flush_seconds!r}")
    if checkpoint_every is not None:
        check_int("checkpoint_every", checkpoint_every)


def _resume_swmr(path, started: bool, swmr: bool | None) -> bool:
    """Whether a resume of run file `path` writes in SWMR mode: `swmr`, by default as the run
    was `started`; ConfigError for SWMR where it was started without."""
    swmr = started if swmr is None else bool(swmr)
    if swmr and not started:
        raise ConfigError(f"{path} was not started in SWMR mode, and HDF5 cannot switch a file to "
                          "it later; resume without --swmr (swmr=False)")
    return swmr


def _check_out(out, overwrite: bool) -> None:
    """Refuse an existing run file `out` unless `overwrite` (and even then one that a live
    process writes), a directory, or a place where no file can be made (None: in memory,
    never refused)."""
    if out is None:
        return
    if os.path.isdir(out):
        raise ConfigError(f"output {os.fspath(out)} is a directory; give a file path, e.g. "
                          f"{os.path.join(os.fspath(out), 'run.h5')}")
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"output {os.fspath(out)} exists; choose another path, delete it, or "
                          "pass overwrite=True (--overwrite on the command line)")
    if overwrite and os.path.isfile(out):
        refuse_if_written(os.fspath(out))
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):       # the nearest existing folder must take new files
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run file {os.fspath(out)}: {parent} is not a "
                          "writable folder; choose another path")


def _publish(writer: RunWriter, out, overwrite: bool) -> None:
    """Give the writer's laid-out run file its name `out` (an atomic rename of the flushed
    file; no-op in memory or where `_create_file` made it under that name).  Unless
    `overwrite`, a file that took the name meanwhile (another run given the same path) is
    refused, not replaced: the name is made as a hard link, which never replaces (a plain
    rename where the file system has no hard links).  With it, one that a live process
    writes is refused (`refuse_if_written`)."""
    f = writer.f
    if out is None or f.filename == os.fspath(out):
        return
    f.flush()
    out = os.fspath(out)
    if overwrite:
        refuse_if_written(out)              # a writer may have started since `_check_out`
        os.replace(f.filename, out)
    else:
        try:
            os.link(f.filename, out)
        except FileExistsError:
            _check_out(out, overwrite)      # the one-line "exists" error
            raise
        except OSError:                     # no hard links on this file system
            os.replace(f.filename, out)
        else:
            os.unlink(f.filename)
    writer.path = out


def _close_unpublished(f: h5py.File, out) -> None:
    """Close `f` after an error; a file still under its temporary name (never published as
    `out`) is removed.  A close that fails (the file's writes failed: the error being raised
    says so) is let pass."""
    temp = f.filename if f.id.valid and out is not None and f.filename != os.fspath(out) else None
    if f.id.valid:
        with contextlib.suppress(OSError, RuntimeError):
            f.close()
    if temp is not None and os.path.exists(temp):
        os.unlink(temp)


def _reopen(f: h5py.File, path, wait: float = 2.0) -> Run:
    """Close the writer's handle `f` and open the finished file at `path` for reading.  A
    lock still held for up to `wait` seconds is waited for: a child process that another
    thread started while `f` was open holds HDF5's descriptor, and with it the lock, between
    its fork and its exec (`io.reader.private` covers the rest of its life)."""
    f.close()
    deadline = time.monotonic() + wait
    while True:
        try:
            return Run(path)
        except RunFileLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _warn_unrecorded(end: int, record_every: int, fix: str, stacklevel: int) -> None:
    """Warn (UnrecordedStepsWarning) when a run's stretch ends at step `end` between records."""
    if end % record_every:
        warnings.warn(f"the run ends at step {end}, between records (record_every="
                      f"{record_every}): its last {end % record_every} steps are in the "
                      f"checkpoint, not in the records; {fix} to record the final state",
                      UnrecordedStepsWarning, stacklevel=stacklevel)


def resume(path: "str | os.PathLike | Run", steps: int | None = None, backend: str | None = None,
           progress: bool | None = None, flush_seconds: float = 1.0,
           swmr: bool | None = None) -> Run:
    """Continue the run in `path` from its last checkpoint until `steps` total steps
    (default: the target it was started with).  The continuation is bit-for-bit the
    uninterrupted run's.  A complete run at that target is left untouched (the returned
    Run's `resumed_from` is None); a file that reached its target but was not marked
    complete is repaired.  A file whose SWMR writer was killed is recovered first.
    swmr: write in SWMR mode, for live readers (default: as the run was started; only a run
    started with swmr=True can).  The config records the new target (and the scenario
    parameter `steps` with it) and, when `backend` differs, the backend from this step on
    (`backend_history`: [step, backend] pairs).  `path` may be a closed Run (its `path`)."""
    _check_write_options(None, flush_seconds)
    source, path = path, run_path(path, "resume")
    if os.path.isfile(path):
        lengthen(path)
    with Run(path) as run:
        cfg = run.config
    if "exchange" in (cfg.get("meta") or {}):       # a rung of a replica-exchange run
        from .exchange import resume as resume_ladder

        return resume_ladder(path, steps, backend, progress, flush_seconds, swmr)
    swmr = _resume_swmr(path, bool(cfg.get("swmr", False)), swmr)
    with Run(path) as run:
        if run.complete and (steps is None or int(steps) == run.steps_done):
            done = Run(path)
            done.resumed_from = None
            return done
    try:
        run = Run(path, mode="r+", latest=swmr)
    except RunFileError:
        if isinstance(source, Run) and source.f.id.valid:
            raise RunFileError(f"resume(run) writes to {path}, which the Run passed to it holds "
                               "open for reading: call run.close() first, then resume(run)"
                               ) from None
        raise
    f = run.f
    try:
        step, state, dstep = run.checkpoint()
        dyn = Dynamics.from_dict(cfg["dynamics"])
        sim = Simulation(run.potential, dyn, cfg["replicas"], backend=backend or cfg["backend"],
                         dtype=cfg["dtype"], seed=cfg["seed"], init=state["x"],
                         first_replica=cfg["first_replica"],
                         divergence_bound=cfg["divergence_bound"],
                         observers=[rebuild_observer(o) for o in cfg.get("observers", [])],
                         meta=cfg.get("meta"),
                         first_passage=FirstPassage.from_dict(cfg["first_passage"])
                         if cfg.get("first_passage") else None)
        sim.state = {k: np.ascontiguousarray(v) for k, v in state.items()}
        sim.diverged_step, sim.step = dstep.astype(np.int64), step
        target = int(cfg["steps_target"] if steps is None else steps)
        if target < step:
            raise ConfigError(f"steps={target} (--steps {target}) is before the checkpoint at "
                              f"step {step}; give a total step count >= {step}")
        sim._check_end(target, f"steps={target} (--steps {target})")
        if target > step:
            _warn_unrecorded(target, cfg["record_every"],
                             "resume to a multiple of it (--steps)", stacklevel=3)
        if _record_resume(cfg, step, target, sim.backend_name):
            f["config"].attrs["json"] = json.dumps(cfg, default=json_default)
        f.attrs["writer"] = writer_info()
        if target > step:   # a stretch of steps written here (not a repair at the target)
            record_machine(f, step, path, device=getattr(sim.backend, "provenance", None))
        writer = RunWriter(f)
        writer.truncate_to_checkpoint()
        if swmr:
            f.flush()
            f.swmr_mode = True
        sim._loop(writer, target, cfg["record_every"], cfg["record_positions"], [], None,
                  progress, flush_seconds)
    except BaseException:
        _close_unpublished(f, path)
        raise
    report_divergence(sim.diverged_step, sim.replica_ids)
    done = _reopen(f, path)
    done.resumed_from = step
    return done
