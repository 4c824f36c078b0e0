"""The first run after install: a one-line notice while Numba compiles, and `warmup`, which
compiles every fused numba kernel ahead (`langevin-sim warmup`) so that runs start at once.

Numba caches compiled kernels on disk (in a folder named by a digest of the kernels' sources,
under NUMBA_CACHE_DIR or the package's __pycache__: `numba_cache`); an empty cache costs 1-60 s
per kernel and dtype on the first call.  `compile_notice` tells the user
why a run is silent meanwhile: it listens for Numba's "numba:compile" events, which fire only
for real compilations (not for cache loads).  Numba compiles on one core; while a cold run
compiles its step kernel, `compile_aside` compiles in a helper process on another core what
the run will need later: its kernel's shared callees (a generic driver's: the main process
compiles the family's blocks first) and the kernels of its records; they then load from the
cache.
"""
from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
from numba.core import event

DTYPES = ("float32", "float64")
_said: set = set()      # the pairs (and dtypes) this process has announced or seen loaded
_lock = threading.Lock()
_quiet = False          # set while `warmup` runs: it prints its own lines


class _Notice(event.Listener):
    """Prints the notice for `what` at the first compilation it hears of, and calls `then`."""

    def __init__(self, what: str, then=None):
        self.what, self.then = what, then

    def on_start(self, ev) -> None:
        with _lock:
            if self.what in _said or _quiet:
                return
            _said.add(self.what)
        print(f"langevin-sim: compiling numba kernels for {self.what}, first run only; cached "
              "afterwards (`langevin-sim warmup` compiles them all ahead)", file=sys.stderr,
              flush=True)
        if self.then is not None:
            self.then()

    def on_end(self, ev) -> None:
        pass


@contextmanager
def compile_notice(what: str, then=None):
    """Within the block, the first Numba compilation prints one line to stderr naming `what`
    (e.g. "DoubleWell x OverdampedLangevin (float32)"), once per `what` per process, and then
    calls `then()` (if given).  After the first block for `what` it costs nothing: its
    kernels are then loaded or compiled."""
    if what in _said:
        yield
        return
    with event.install_listener("numba:compile", _Notice(what, then)):
        yield
    _said.add(what)


# ---------------------------------------------------------------- compiled aside

ASIDE_ENV = "LANGEVIN_SIM_COMPILE_ASIDE"   # "0": no helper process; everything compiles in place
ASIDE_WAIT_S = 60.0    # the longest a first record waits for the helper (its compile: ~1-5 s)
_aside: dict = {}       # (potential class, dtype) -> the helper process, or None once awaited


def usable_cpus() -> int:
    """The cores this process may run on (its affinity where the OS says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def compile_aside(potential, x: np.ndarray, records: bool, shared: tuple = ()) -> None:
    """In a helper process, once per potential class and dtype per process, compile into
    Numba's on-disk cache first the kernel's callees `shared` (`drivers.shared_callees`,
    compiled by `drivers.compile_shared` for x's dtype), then, if `records`, `potential`'s record-time
    energy and observables (`_record_kernels` on x's first rows); `await_records_aside` waits
    for it.  Called at a cold run's first compilation, so both processes compile at once;
    not on a machine with one core, where they would only take turns."""
    key = (type(potential), x.dtype.str)
    if os.environ.get(ASIDE_ENV, "1") == "0" or usable_cpus() < 2:
        return
    with _lock:
        if key in _aside:
            return
        _aside[key] = None
    # this package where it was imported from, also when that is not on the default path
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from langevin_sim.warmup import _aside_main; _aside_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=path))
    except Exception:   # nothing gained, nothing lost: everything compiles in place
        return
    job = (potential if records else None, np.ascontiguousarray(x[:4]), tuple(shared))
    threading.Thread(target=_feed, args=(proc, job), daemon=True).start()
    _aside[key] = proc


@atexit.register
def _stop_asides() -> None:
    """At exit: a helper still compiling what this process never took stops."""
    for proc in _aside.values():
        if proc is not None and proc.poll() is None:
            proc.kill()


def _feed(proc: subprocess.Popen, obj) -> None:
    """Pickle obj into the helper's stdin (a potential that does not pickle: the helper
    exits, and everything compiles in place)."""
    try:
        with proc.stdin:
            pickle.dump(obj, proc.stdin, protocol=5)
    except Exception:
        pass


def await_records_aside(potential, dtype) -> None:
    """Wait (at most ASIDE_WAIT_S) for the helper compiling `potential`'s record kernels in
    `dtype`, if one was started: its kernels then load from the cache."""
    key = (type(potential), np.dtype(dtype).str)
    proc = _aside.get(key)
    if proc is None:
        return
    try:
        proc.wait(timeout=ASIDE_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
    _aside[key] = None


def _aside_main() -> None:
    """The helper process of `compile_aside`: (potential or None, rows, shared) pickled on
    stdin."""
    global _quiet
    _quiet = True
    potential, x, shared = pickle.load(sys.stdin.buffer)
    if shared:
        from .kernels import drivers

        drivers.compile_shared(x.dtype, shared)
    if potential is not None:
        _record_kernels(potential, x)


def small_instances() -> tuple[dict, dict]:
    """Class name -> factory of small instances, for potentials and dynamics whose defaults
    need arguments or are large (other classes are built with their defaults).  Both list
    variants that compile kernels of their own (DoubleWell: d = 1 and d > 1 noise paths;
    dynamics: minibatch and full batch): a pair runs each one its potential accepts."""
    from .dynamics import SGD, AdamW
    from .potentials import (ClassifierMLP, DoubleWell, ModularArithmeticMLP, MultiWell,
                             Quadratic, ShiftedMultiWell, SphericalPSpin, TeacherStudentMLP)

    pots = {"DoubleWell": lambda: [DoubleWell(d=1), DoubleWell(d=2)],
            "Quadratic": lambda: Quadratic(spectrum=[0.5, 1.0, 2.0], seed=1),
            "MultiWell": lambda: MultiWell(centers=[[-1.0, 0.0], [1.0, 0.5]],
                                           spectra=[[1.0, 1.0], [4.0, 4.0]]),
            "ShiftedMultiWell": lambda: ShiftedMultiWell([[-1.0, 0.0], [1.0, 0.5]],
                                                         0.1 * np.eye(4, 2) - 0.025,
                                                         spectra=[[1.0, 1.0], [4.0, 4.0]]),
            "SphericalPSpin": lambda: SphericalPSpin(8, 3, seed=1),
            "TeacherStudentMLP": lambda: TeacherStudentMLP(n=16, d_in=3, hidden=4,
                                                           teacher_hidden=2, seed=1),
            "ModularArithmeticMLP": lambda: ModularArithmeticMLP(p=5, hidden=3, seed=1),
            "ClassifierMLP": lambda: ClassifierMLP("arrays", hidden=3, inputs=np.eye(6, 4),
                                                   labels=np.arange(6) % 3,
                                                   test_inputs=np.eye(3, 4),
                                                   test_labels=np.arange(3))}
    dyns = {"SGD": lambda: [SGD(1e-2, 4, momentum=0.5), SGD(1e-2, None, momentum=0.5)],
            "AdamW": lambda: [AdamW(1e-3, 4, weight_decay=0.0), AdamW(1e-3, None, weight_decay=0.0)]}
    return pots, dyns


def _record_kernels(pot, x: np.ndarray) -> None:
    """Compile the family's record-time energy and observables for x's dtype, if it has them."""
    from .kernels import drivers

    energy, observe = drivers.energy_kernel(pot), drivers.observables_kernel(pot)
    if energy is not None:
        e = energy(x)
        if observe is not None:
            observe(x, e)


def _variants(pcls: type, dcls: type) -> tuple:
    """([(potential, dynamics)] of the variants that go together, the refusal when none does)."""
    pots, dyns = small_instances()
    made = pots[pcls.__name__]() if pcls.__name__ in pots else pcls()
    ok, why = [], None
    for pot in made if isinstance(made, list) else [made]:
        for dyn in (dyns[dcls.__name__]() if dcls.__name__ in dyns else [dcls()]):
            try:
                dyn.check_potential(pot)
            except Exception as e:
                why = why or e
            else:
                ok.append((pot, dyn))
    return ok, why


def warmup(dtypes=DTYPES, only: list[str] | None = None, out=sys.stdout,
           jobs: int = 1) -> list[tuple]:
    """Run a tiny simulation (3 replicas, 2 steps and a record; the compiled record-time
    energy and observables of the family too) of every pair with a numba kernel
    (`registry.pairs("numba")`), or of the pairs named "Potential,Dynamics" in `only`, for
    each dtype, so that Numba's on-disk cache holds them before the first real run.  `jobs`
    spawned processes compile pairs at once (Numba compiles on one core; `langevin-sim
    warmup` takes `usable_cpus()`; from a script, call it under `if __name__ == "__main__":`,
    as multiprocessing's spawned processes import the script again; a Jupyter notebook needs
    no guard); 1: in this process, one pair after the other.  Prints one line per pair and
    dtype to `out` as it is done: the seconds it took, or why it failed.  Returns [(pair
    name, dtype, seconds or the error)] in the pairs' order."""
    from .backends import numba_backend  # noqa: F401  (fills the registry)
    from .backends.registry import pairs
    from .errors import ConfigError, check_int
    from .simulation import DTYPES as SIM_DTYPES

    bad = [d for d in dtypes if d not in SIM_DTYPES]
    if bad:
        raise ConfigError(f"unknown dtype {bad[0]!r}; choose from {', '.join(SIM_DTYPES)}")
    todo = {f"{p.__name__},{d.__name__}": (p, d) for p, d in pairs("numba")}
    for name in only or ():
        if name.replace(" ", "") not in todo:
            pot = name.split(",")[0].strip()
            mine = sorted(k for k in todo if k.startswith(pot + ","))
            if "," not in name:
                raise ConfigError(f"--only takes POTENTIAL,DYNAMICS pairs (e.g. "
                                  f"DoubleWell,OverdampedLangevin), got {name!r}"
                                  + (f"; {pot}'s pairs: {' '.join(mine)}" if mine else ""))
            raise ConfigError(f"no numba kernel for {name!r}; "
                              + (f"{pot}'s pairs: {' '.join(mine)}" if mine else
                                 f"the pairs are: {' '.join(sorted(todo))}"))
    if only:
        todo = {k: v for k, v in todo.items() if k in {n.replace(" ", "") for n in only}}
    tasks = [(name, dtype) for name in todo for dtype in dtypes]
    jobs = min(len(tasks), check_int("jobs", jobs))
    done: dict = {}

    def said(task, label, res):
        _said.add(label)
        done[task] = (label, task[1], res)
        print(f"{label}: " + (f"{res:.1f} s" if isinstance(res, float) else res), file=out,
              flush=True)

    if jobs <= 1:
        for task in tasks:
            said(task, *_warm_pair(*task))
        return [done[t] for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawned, not forked: a fork of a process whose Numba threads run is not safe
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_warm_pair, *task): task for task in tasks}
        for f in as_completed(futures):
            task = futures[f]
            try:
                said(task, *f.result())
            except Exception as e:   # its process died (a crash in a compiler, killed)
                said(task, _label(*task), f"failed: {type(e).__name__}: {e}")
    except KeyboardInterrupt:   # a compilation does not stop at Ctrl-C: its process does
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [done[t] for t in tasks]


def _label(name: str, dtype: str) -> str:
    return f"{name.replace(',', ' x ')} ({dtype})"


def _warm_pair(name: str, dtype: str) -> tuple[str, float | str]:
    """(label, seconds or why it failed) of warming the pair "Potential,Dynamics" in dtype:
    its small variants' tiny simulations and their record kernels, without the compile
    notice or a helper process (also in `warmup`'s worker processes)."""
    global _quiet
    from .backends.registry import pairs
    from .simulation import Simulation

    pcls, dcls = next((p, d) for p, d in pairs("numba") if f"{p.__name__},{d.__name__}" == name)
    t = time.perf_counter()
    quiet, _quiet = _quiet, True
    try:
        variants, why = _variants(pcls, dcls)
        states = {}
        for pot, dyn in variants:
            sim = Simulation(pot, dyn, 3, backend="numba", dtype=dtype, seed=0)
            sim.advance(2)
            sim.snapshot()
            states[id(pot)] = (pot, sim.state["x"])
        for pot, x in states.values():   # what records of large states use
            _record_kernels(pot, x)
        res = time.perf_counter() - t if variants else f"skipped: no small instance ({why})"
    except Exception as e:  # one pair's failure must not stop the others
        res = f"failed: {type(e).__name__}: {e}"
    finally:
        _quiet = quiet
    return _label(name, dtype), res
