"""Resuming a replica-exchange run from its files: all rungs back to rung 0's commit.

Every flush checkpoints every rung, rungs K-1 .. 1 first and rung 0 (with the exchange log)
last, so rung 0's marker is the ladder's commit S.  A kill between them leaves a rung whose
valid checkpoint is the next flush's step S' > S; its other slot still holds S (each rung
wrote its previous checkpoint at S, and the slots alternate), so resume points the rung's
marker back at that slot and drops its records after S.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from ..dynamics.base import Dynamics
from ..errors import ConfigError, RunFileError
from ..io import Run, RunWriter
from ..io import format as F
from ..io.machine import record_machine
from ..io.reader import lengthen
from ..io.swmr import writer_info
from ..simulation import (Simulation, _close_unpublished, _record_resume, _resume_swmr,
                          _warn_unrecorded)
from . import log
from .ladder import ReplicaExchange, rung_path


def lowest_rung(path) -> str:
    """The rung-0 file of the ladder that run file `path` belongs to."""
    path = os.fspath(path)
    with Run(path) as run:
        ex = run.config.get("meta", {}).get("exchange")
    if ex is None:
        raise RunFileError(f"{path} is not part of a replica-exchange run")
    if ex["rung"] == 0:
        return path
    k = ex["rung"]
    m = re.fullmatch(rf"(.+)\.rung{k}(\.[^.]*)", os.path.basename(path))
    if m is None:
        raise RunFileError(f"{path} is rung {k} of a replica-exchange run but is not named "
                           f"<stem>.rung{k}<ext> beside its rung 0 file <stem><ext>: the files "
                           "of a ladder find each other by name; rename them so")
    # (rung_path's inverse: rung 0 keeps the extension it was written with, if any)
    lowest = os.path.join(os.path.dirname(path), m[1] + os.path.splitext(ex["lowest"])[1])
    if not os.path.exists(lowest):
        raise RunFileError(f"{path} is rung {ex['rung']} of a replica-exchange run whose rung 0 "
                           f"file {lowest} is missing: without it the ladder cannot resume (a "
                           "start killed before it published rung 0 left only step 0: run the "
                           "command that started it again, which replaces these files)")
    return lowest


def ladder_files(path) -> list[str]:
    """The run files (K,) of the ladder that run file `path` (any rung's) belongs to, rung 0
    first, named after rung 0's file as it is now (`rung_path`), not as it was written: a
    ladder copied or renamed as a whole is read and resumed there, never in its original."""
    path = lowest_rung(path)
    with Run(path) as run:
        ex = run.config["meta"]["exchange"]
    files = [rung_path(path, k) for k in range(len(ex["temperatures"]))]
    for k, p in enumerate(files[1:], 1):
        theirs = None
        if os.path.exists(p):
            with Run(p) as run:
                theirs = run.config.get("meta", {}).get("exchange", {})
        if theirs is None or theirs.get("rung") != k or theirs.get("lowest") != ex["files"][0]:
            raise RunFileError(f"{path} is rung 0 of a replica-exchange run whose rung {k} file "
                               f"{p} is {'missing' if theirs is None else 'of another ladder'}"
                               ": the files of a ladder find each other by name (<stem>.rung<k>"
                               "<ext> beside <stem><ext>); rename or copy them together")
    return files


def resume(path, steps: int | None = None, backend: str | None = None,
           progress: bool | None = None, flush_seconds: float = 1.0,
           swmr: bool | None = None) -> Run:
    """Continue the replica-exchange run that `path` (any rung's file) belongs to until
    `steps` total steps (default: its planned total), bit for bit as if uninterrupted;
    returns rung 0's Run (`resumed_from`: the step it continued from, None if complete).
    swmr: write every rung in SWMR mode (default: as the ladder was started).  Every rung's
    config records the new target and backend as a plain resume's does (`_record_resume`)."""
    files = ladder_files(path)
    path = files[0]
    with Run(path) as run:
        ex = run.config["meta"]["exchange"]
    for p in files:
        lengthen(p)
    started = any(_started_swmr(p) for p in files)   # (rung 0 recorded False in older files)
    swmr = _resume_swmr(path, started, swmr)
    runs = [Run(p, mode="r+", latest=swmr) for p in files]
    try:
        c0 = runs[0].commit
        if c0[F.CKPT_SLOT] < 0:
            raise RunFileError(f"{path} holds no checkpoint yet (the ladder was stopped before "
                               "its first commit): start the run again with --overwrite "
                               "(overwrite=True), which replaces its files")
        S = int(c0[F.CKPT_STEP])
        cfg0 = runs[0].config
        target = int(cfg0["steps_target"] if steps is None else steps)
        if target < S:
            raise ConfigError(f"steps={target} (--steps {target}) is before the checkpoint at "
                              f"step {S}; give a total step count >= {S}")
        for run in runs[1:]:
            _roll_back(run, S)
        if c0[F.COMPLETE] and target == S:
            ladder = _ladder(runs, ex, backend, S)
            if not all(r.complete for r in runs):  # killed while marking rungs 1.. complete
                ladder._commit([RunWriter(r.f) for r in runs], [[] for _ in runs], [], True)
            return _done(ladder, runs, files, None)
        ladder = _ladder(runs, ex, backend, S)
        ladder.rungs[0]._check_end(target, f"steps={target} (--steps {target})")
        if target > S:
            _warn_unrecorded(target, cfg0["record_every"],
                             "resume to a multiple of it (--steps)", stacklevel=4)
        for k, (run, sim) in enumerate(zip(runs, ladder.rungs)):
            cfg = run.config
            repair = cfg.get("swmr", False) != started
            cfg["swmr"] = started
            if _record_resume(cfg, S, target, sim.backend_name) or repair:
                run.f["config"].attrs["json"] = json.dumps(cfg, default=F.json_default)
            run.f.attrs["writer"] = writer_info()
            record_machine(run.f, S, run.path, warn=k == 0,   # the rungs ran together
                           device=getattr(sim.backend, "provenance", None))
        writers = [RunWriter(r.f) for r in runs]
        for w in writers:
            w.truncate_to_checkpoint()
        log.truncate(runs[0].f, log.committed(runs[0].f, S))
        if swmr:
            for w in writers:
                w.f.flush()
                w.f.swmr_mode = True
        ladder._loop(writers, target, cfg0["record_every"], cfg0["record_positions"],
                     [[] for _ in runs], progress, flush_seconds)
    except BaseException:
        for r in runs:
            _close_unpublished(r.f, r.path)
        raise
    return _done(ladder, runs, files, S)


def _started_swmr(path: str) -> bool:
    """Whether rung file `path` says its ladder was started in SWMR mode."""
    with Run(path) as run:
        return bool(run.config.get("swmr", False))


def _roll_back(run: Run, S: int) -> None:
    """Point a rung whose valid checkpoint is past the ladder's commit S at its other slot."""
    c = run.commit
    if int(c[F.CKPT_STEP]) == S:
        return
    if c[F.CKPT_SLOT] < 0 or int(c[F.CKPT_STEP]) < S or c[F.COMPLETE]:
        raise RunFileError(f"{run.path}: checkpoint at step {int(c[F.CKPT_STEP])} does not fit "
                           f"the ladder's commit at step {S}; the files are not one run")
    c = c.copy()
    c[F.CKPT_SLOT], c[F.CKPT_STEP], c[F.STEPS_DONE] = 1 - c[F.CKPT_SLOT], S, S
    RunWriter(run.f)._commit(c)


def _ladder(runs: list[Run], ex: dict, backend: str | None, S: int) -> ReplicaExchange:
    """The ladder at its commit S: one Simulation per rung from its checkpoint, the walker
    permutation from the last committed exchange."""
    ladder = ReplicaExchange.__new__(ReplicaExchange)
    ladder.temperatures, ladder.every, ladder.seed = ex["temperatures"], ex["every"], ex["seed"]
    ladder.rungs = [_rung(run, backend) for run in runs]
    ladder.meta = dict(ladder.rungs[0].meta)
    ladder.meta.pop("exchange", None)
    n = log.committed(runs[0].f, S)
    ladder.walker = (runs[0].f[log.GROUP]["walker"][n - 1].copy() if n else
                     log.walker_start(runs[0].f))
    ladder.step, ladder._stop, ladder.runs = S, 0, []
    return ladder


def _rung(run: Run, backend: str | None) -> Simulation:
    """A rung's Simulation at its (valid) checkpoint."""
    cfg = run.config
    step, state, dstep = run.checkpoint()
    sim = Simulation(run.potential, Dynamics.from_dict(cfg["dynamics"]), cfg["replicas"],
                     backend=backend or cfg["backend"], dtype=cfg["dtype"], seed=cfg["seed"],
                     init=state["x"], first_replica=cfg["first_replica"],
                     divergence_bound=cfg["divergence_bound"], meta=cfg.get("meta"))
    sim.state = {k: np.ascontiguousarray(v) for k, v in state.items()}
    sim.diverged_step, sim.step = dstep.astype(np.int64), step
    return sim


def _done(ladder: ReplicaExchange, runs: list[Run], files: list, resumed_from) -> Run:
    for r in runs:
        r.f.close()
    ladder.runs = [Run(p) for p in files]
    ladder.runs[0].resumed_from = resumed_from
    return ladder.runs[0]
