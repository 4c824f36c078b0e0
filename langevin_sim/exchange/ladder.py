"""Replica exchange (parallel tempering): K rungs at T_1 < ... < T_K, M ladders.

Rung k is an ordinary `Simulation` (same potential, the dynamics at T_k, M replicas with the
ladder ids, seed `rung_seed(seed, k)`), advanced by its backend's fused kernels between
exchanges.  Ladder m has one walker on each rung.  At every step s = n * every (n = 1, 2,
...) the pairs (k, k+1) with k = n mod 2, n mod 2 + 2, ... swap configurations with
probability min(1, exp((1/T_k - 1/T_{k+1}) (U_k - U_{k+1}))), decided by the Philox word at
(seed, EXCHANGE, ladder id, n (K-1) + k): a pure function of (seed, ladder, exchange), so
splitting ladders (first_replica) or resuming changes nothing.  The exchange is part of
reaching step s: records and checkpoints at s see the swapped state.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import signal
import sys
import time
import warnings

import numpy as np

from .. import rng
from ..dynamics import REGISTRY as DYNAMICS
from ..dynamics import LeimkuhlerMatthews
from ..errors import ConfigError, RunStopped, RunTerminated, UnfinishedStartWarning, check_int
from ..io import Run, RunWriter
from ..io import format as F
from ..io.writer import write_failed
from ..scan.ids import splitmix64
from ..simulation import (Simulation, _check_out, _check_write_options, _close_unpublished,
                          _create_file, _publish, _signals_stop, _warn_unrecorded,
                          report_divergence)
from . import log


def samplers() -> list[str]:
    """The registered dynamics a swap is valid for: Boltzmann samplers (their
    `samples_boltzmann`; SGD / AdamW do not sample exp(-U/T)), less Leimkuhler-Matthews, whose
    noise carried from one step into the next a swap breaks (docs/exchange.md)."""
    return sorted(n for n, c in DYNAMICS.items()
                  if c.samples_boltzmann and not issubclass(c, LeimkuhlerMatthews))


SWAPPED = ("x", "g", "u")   # functions of the configuration: they travel with it
RESCALED = ("p",)           # momenta: p -> p sqrt(T_new / T_old) (Sugita & Okamoto 2000)
KEPT = ("accepted",)        # MALA's acceptance counter stays with its rung (temperature)


def rung_seed(seed: int, k: int) -> int:
    """Seed of rung k's dynamics noise: splitmix64(splitmix64(seed) ^ k) >> 1 (63 bits)."""
    return splitmix64(splitmix64(int(seed)) ^ int(k)) >> 1


def check_temperatures(temperatures) -> list[float]:
    """The ladder's temperatures (K,) as floats, or a one-line ConfigError naming the fix:
    K >= 2 finite values 0 < T_1 < ... < T_K (energy units; rung 0 the lowest)."""
    try:
        T = [float(t) for t in temperatures] if np.ndim(temperatures) == 1 else None
    except (TypeError, ValueError):
        T = None
    if T is None:
        raise ConfigError(f"temperatures must be a list of numbers T_1 < ... < T_K, got "
                          f"{temperatures!r}")
    if len(T) < 2:
        raise ConfigError(f"replica exchange needs >= 2 temperatures T_1 < T_2 < ..., got {T}; "
                          "add the higher rungs (e.g. a geometric ladder up to where the "
                          "barriers are crossed)")
    bad = [t for t in T if not (t > 0 and math.isfinite(t))]
    if bad:
        raise ConfigError(f"temperatures must be finite and > 0, got {bad[0]} in {T}")
    same = sorted({t for t in T if T.count(t) > 1})
    if same:
        raise ConfigError(f"temperatures must be distinct, {same[0]} appears twice in {T}: "
                          "remove the duplicate rung")
    if T != sorted(T):
        raise ConfigError(f"temperatures must increase, T_1 < T_2 < ... (rung 0 the lowest), got "
                          f"{T}: pass them sorted, {sorted(T)}")
    return T


def rung_path(out, k: int):
    """Run file of rung k: `out` itself for k = 0, else <stem>.rung<k>.h5 beside it."""
    if out is None or k == 0:
        return out
    root, ext = os.path.splitext(os.fspath(out))
    return f"{root}.rung{k}{ext or '.h5'}"


def is_upper_rung(path) -> bool:
    """Whether run file `path` is the file of a rung k >= 1 (`rung_path`) whose rung 0 file
    lies beside it: part of that ladder, not a run of its own."""
    m = re.fullmatch(r"(.+)\.rung[1-9]\d*(\.[^.]*)", os.path.basename(os.fspath(path)))
    return m is not None and os.path.isfile(os.path.join(os.path.dirname(os.fspath(path)),
                                                         m[1] + m[2]))


class ReplicaExchange:
    """M ladders of K rungs of `dynamics` on `potential`, one `Simulation` per rung.

    temperatures: T_1 < ... < T_K (energy units, K >= 2); `dynamics` must be a Boltzmann
    sampler (`samplers()`) with a constant temperature, which is replaced by T_k on rung k.
    every: steps between exchanges (even and odd pairs alternate: with K = 2 its one pair is
    tried every 2 every steps).  replicas: M ladders with ids first_replica ...; init
    as for Simulation ("default": each rung draws its own).  Swaps exchange x (and g, u);
    BAOAB and OBABO momenta are rescaled by sqrt(T_new / T_old), which leaves the acceptance
    rule on U exact for the joint (x, p) law; MALA's `accepted` count stays with its rung.  A ladder
    whose walker diverged on either rung of a pair does not swap there.  `run` writes one
    ordinary run file per rung (`rung_path`) and the exchange log in rung 0's file.
    """

    def __init__(self, potential, dynamics, temperatures, replicas: int, every: int = 10,
                 backend: str = "numba", dtype: str = "float64", seed: int = 0,
                 init="default", first_replica: int = 0, divergence_bound: float = 1e8,
                 meta: dict | None = None):
        T = check_temperatures(temperatures)
        if isinstance(dynamics, LeimkuhlerMatthews):
            raise ConfigError("replica exchange cannot use LeimkuhlerMatthews: its x carries half "
                              "of the next step's noise, which a swap breaks, biasing every rung "
                              f"by O(acceptance / every) at any step; use {', '.join(samplers())}")
        if not type(dynamics).samples_boltzmann:
            raise ConfigError(f"replica exchange needs a Boltzmann sampler ({', '.join(samplers())}); "
                              f"{type(dynamics).__name__} does not sample exp(-U/T), so the swap rule would be wrong")
        if getattr(dynamics, "friction", None) == 0:
            raise ConfigError(f"replica exchange needs a Boltzmann sampler; {type(dynamics).__name__} "
                              "with friction 0 is deterministic Hamiltonian dynamics (no noise: "
                              "each rung keeps its energy); give it friction > 0")
        if dynamics.temperature.kind != "constant":
            raise ConfigError("replica exchange sets each rung's temperature; give the dynamics a constant temperature")
        every = check_int("every (steps between exchanges)", every)
        self.temperatures, self.every, self.seed = T, every, int(seed)
        self.meta = dict(meta or {})
        self.rungs = [Simulation(potential, dataclasses.replace(dynamics, temperature=t), replicas,
                                 backend=backend, dtype=dtype, seed=rung_seed(seed, k), init=init,
                                 first_replica=first_replica, divergence_bound=divergence_bound)
                      for k, t in enumerate(T)]
        odd = set(self.rungs[0].state) - set(SWAPPED + RESCALED + KEPT)
        if odd:
            raise ConfigError(f"replica exchange does not know how to swap state {sorted(odd)}")
        self.walker = np.tile(np.arange(len(T), dtype=np.int16), (self.rungs[0].n_replicas, 1))
        self.step, self._stop = 0, 0
        self.runs: list[Run] = []

    @property
    def ladder_ids(self) -> np.ndarray:
        return self.rungs[0].replica_ids

    def exchange_config(self, k: int, files: list) -> dict:
        """What rung k's run file stores under meta.exchange (rung 0: everything resume needs)."""
        out = {"rung": k, "temperatures": self.temperatures, "every": self.every, "seed": self.seed,
               "files": [None if p is None else os.path.basename(p) for p in files]}
        return out if k == 0 else {"rung": k, "lowest": out["files"][0]}

    # -- exchanges ------------------------------------------------------------
    def exchange(self) -> dict:
        """Attempt the swaps of exchange n = step // every (step a multiple of every); return
        its log row."""
        n, K = self.step // self.every, len(self.rungs)
        live = [_live(sim) for sim in self.rungs]
        U = np.stack([e for _, _, _, e in live], axis=1)
        words = rng.stream_words(self.seed, rng.EXCHANGE, self.ladder_ids, n * (K - 1), K - 1)
        log_u = np.log((words + 0.5) * rng.TWO_NEG32)
        acc = np.full((U.shape[0], K - 1), -1, np.int8)
        for k in range(n % 2, K - 1, 2):
            (xp, lo, lo_flags, _), (_, hi, hi_flags, _) = live[k], live[k + 1]
            Tl, Th = self.temperatures[k], self.temperatures[k + 1]
            alive = (lo_flags < 0) & (hi_flags < 0)
            with np.errstate(all="ignore"):
                swap = alive & (log_u[:, k] < (1.0 / Tl - 1.0 / Th) * (U[:, k] - U[:, k + 1]))
            acc[:, k] = np.where(alive, swap, -1)
            if swap.any():
                self._swap(lo, hi, math.sqrt(Th / Tl), xp.asarray(np.flatnonzero(swap)))
            self.walker[swap, k], self.walker[swap, k + 1] = \
                self.walker[swap, k + 1], self.walker[swap, k]
        return {"step": np.int64(self.step), "walker": self.walker.copy(), "accepted": acc,
                "energy": U}

    @staticmethod
    def _swap(lo: dict, hi: dict, ratio: float, idx) -> None:
        """Exchange the configurations of replicas `idx` between the state arrays of rungs lo
        and hi (in place, host or device arrays, `idx` of their array module); momenta
        rescaled by ratio = sqrt(T_hi / T_lo) going up, 1/ratio going down."""
        for key in SWAPPED + RESCALED:
            if key not in lo:
                continue
            a, b = lo[key], hi[key]
            up, down = a[idx].copy(), b[idx].copy()
            if key in RESCALED:
                up, down = up * ratio, down / ratio
            a[idx], b[idx] = down.astype(a.dtype), up.astype(b.dtype)

    # -- running ----------------------------------------------------------------
    def run(self, steps: int, record_every: int = 100, out=None, record_positions: bool = True,
            progress: bool | None = None, overwrite: bool = False, swmr: bool = False,
            compression: str | None = None, flush_seconds: float = 1.0) -> Run:
        """Advance `steps` steps with exchanges every `every`, recording every `record_every`;
        rung k writes `rung_path(out, k)` (out=None: in memory, all in `self.runs`).  Every
        flush checkpoints every rung.  Returns rung 0's Run (the lowest temperature)."""
        steps = check_int("steps", steps, minimum=0)
        record_every = check_int("record_every", record_every)
        _check_write_options(compression, flush_seconds)
        files = [rung_path(out, k) for k in range(len(self.rungs))]
        target = self.step + steps
        self.rungs[0]._check_end(target, f"steps={steps}")
        _warn_unrecorded(target, record_every, "end on a multiple of record_every", stacklevel=3)
        handles, writers, pending = [], [], []
        if not overwrite:
            self._remove_unfinished_start(files)
        for path in files:
            _check_out(path, overwrite)              # at once, not after the first probes
        try:
            for k, (sim, path) in enumerate(zip(self.rungs, files)):
                sim.meta = dict(self.meta, exchange=self.exchange_config(k, files))
                probe = sim.snapshot(record_positions)
                f = _create_file(path, overwrite, swmr)
                handles.append(f)
                if k == 0:      # before the layout, which enters SWMR mode (no new objects)
                    log.create(f, self.ladder_ids, self.temperatures, self.every, self.step,
                               self.walker, target)
                writers.append(sim.create_writer(f, probe, record_every, record_positions, target,
                                                 compression, swmr=swmr))
                pending.append([probe] if self.step % record_every == 0 else [])
            # every rung's first record and initial state committed, then the names, rung 0
            # (the ladder's entry) last: a ladder whose files appear resumes from the start
            self._commit(writers, pending, [], complete=False)
            for writer, path in reversed(list(zip(writers, files))):
                _publish(writer, path, overwrite)
            self._loop(writers, target, record_every, record_positions, pending, progress,
                       flush_seconds)
        except BaseException:
            for f, path in zip(handles, files):
                _close_unpublished(f, path)
            raise
        return self._finish(handles, files)

    def _remove_unfinished_start(self, files: list) -> None:
        """Remove the upper rungs' files of a start of this ladder killed while it published
        its files (rungs K-1 .. 1 take their names before rung 0): rung 0's file absent,
        theirs naming it as their lowest rung and holding nothing past this start's step.
        Without rung 0 they cannot resume, and they made the rerun of the same command
        refuse its paths (`--overwrite`, found by the user)."""
        if files[0] is None or os.path.exists(files[0]):
            return
        left = [p for p in files[1:] if os.path.exists(p)]
        for path in left:
            try:
                with Run(path) as run:
                    ex = run.config.get("meta", {}).get("exchange", {})
                    if (ex.get("lowest") != os.path.basename(files[0])
                            or run.steps_done > self.step):
                        return
            except Exception:       # noqa: BLE001 - not such a file: _check_out refuses it
                return
        for path in left:
            os.remove(path)
        if left:
            warnings.warn(f"removed {', '.join(map(os.path.basename, left))}: a start of this "
                          f"ladder killed before it published {os.path.basename(files[0])} "
                          f"left them (at step {self.step}, nothing to resume)",
                          UnfinishedStartWarning, stacklevel=3)

    def _finish(self, handles, files) -> Run:
        for sim in self.rungs:
            report_divergence(sim.diverged_step, sim.replica_ids)
        if files[0] is None:
            self.runs = [Run(None, file=f) for f in handles]
        else:
            for f in handles:
                f.close()
            self.runs = [Run(p) for p in files]
        return self.runs[0]

    def _loop(self, writers, target: int, record_every: int, record_positions: bool,
              pending: list, progress: bool | None, flush_seconds: float) -> None:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=target - self.step, disable=not show, unit="step", leave=False)
        rows, last_flush, self._stop = [], time.monotonic(), 0
        with _signals_stop(self) as signals:
            try:
                while self.step < target and not self._stop:
                    nxt = min(target, _next(self.step, record_every), _next(self.step, self.every))
                    for sim in self.rungs:
                        sim.advance(nxt - self.step, sync=False)
                    bar.update(nxt - self.step)
                    self.step = nxt
                    if nxt % self.every == 0:
                        rows.append(self.exchange())
                    if nxt % record_every == 0:
                        for sim, p in zip(self.rungs, pending):
                            p.append(sim.snapshot(record_positions))
                    if time.monotonic() - last_flush >= flush_seconds or nxt == target:
                        self._commit(writers, pending, rows, complete=nxt == target)
                        rows, last_flush = [], time.monotonic()
                done = self.step == target   # (a run to its own step, or a resume to one
                #                               reached before a stop, commits only that)
                if (rows or any(pending) or writers[0].commit[F.STEPS_DONE] != self.step
                        or (done and not writers[0].commit[F.COMPLETE])):
                    self._commit(writers, pending, rows, complete=done)
            except KeyboardInterrupt:
                raise RunStopped(self._stopped(writers[0], target, "aborted by a second Ctrl-C"),
                                 128 + signal.SIGINT) from None
            finally:
                bar.close()
            stopped = self._stop    # (a signal after this line finds the run ended)
            if stopped:         # (a second Ctrl-C now has nothing left to abort but the close)
                signals.closing = True
                sig = signal.Signals(self._stop)
                msg = self._stopped(writers[0], target, f"stopped by {sig.name}")
                for w in writers:
                    w.f.close()
        if stopped:
            raise (RunStopped if sig == signal.SIGINT else RunTerminated)(msg, 128 + sig)

    def _commit(self, writers, pending: list, rows: list, complete: bool) -> None:
        """Checkpoint rungs K-1 .. 1, then rung 0 with the exchange rows: rung 0's marker
        commits the whole ladder; rungs 1.. are marked complete only after it."""
        for sim in self.rungs:
            sim.sync()
        state = [(sim.state, sim.step, sim.diverged_step) for sim in self.rungs]
        k = len(self.rungs) - 1
        try:     # k: the rung being written
            for k in range(len(self.rungs) - 1, 0, -1):
                writers[k].write_block(pending[k], *state[k], complete=False)
            k, f0 = 0, writers[0].f
            log.append(f0, rows, log.committed(f0, writers[0].commit[F.STEPS_DONE]))
            writers[0].write_block(pending[0], *state[0], complete=complete)
            if complete:
                for k in range(1, len(self.rungs)):
                    writers[k].write_block([], *state[k], complete=True)
        except (OSError, RuntimeError) as e:    # a full disk: one line (`write_failed`)
            raise write_failed(writers[k], e) from None
        for p in pending:
            p.clear()
        rows.clear()

    def _stopped(self, writer: RunWriter, target: int, why: str) -> str:
        f, c = writer.f, writer.commit
        if f.driver == "core":
            return f"{why} at step {self.step} of {target}; the run was in memory, nothing to resume"
        return (f"{why} at step {self.step} of {target}; the ladder is committed at step "
                f"{int(c[F.STEPS_DONE])} in {writer.path} (and its .rung<k> files); resume with: "
                f"langevin-sim resume {shlex.quote(writer.path)}")


def _live(sim: Simulation) -> tuple:
    """(xp, state, diverged_step, energy) of rung `sim` where its state lives between
    advances: a device backend's arrays (`live_state`: the swaps edit them there, only the
    (M,) flags and energies come to the host), else the host's arrays and U (M,) float64 of
    the positions widened to float64."""
    live = getattr(sim.backend, "live_state", None)
    if live is not None:
        return live(sim)
    with np.errstate(all="ignore"):
        U = np.asarray(sim.potential.energy(sim.state["x"].astype(np.float64)), np.float64)
    return np, sim.state, sim.diverged_step, U


def _next(step: int, every: int) -> int:
    """The first multiple of `every` after `step`."""
    return (step // every + 1) * every


