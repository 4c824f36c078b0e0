"""One scan point, run where it lands (a Dask worker or this process), and the Numba warm-up.

`run_point` never raises for a failing point: it returns how the attempt ended, and the
status it reports is the run file's own (``done`` only when the file is complete).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError, LangevinSimWarning, RunStopped, RunTerminated
from ..io import Run
from ..io.reader import RunFileLocked, refuse_if_written
from ..scenario import load_scenario, resolve_params
from ..simulation import resume, stopping
from .manifest import inspect_run


class _Shared:
    """A process-wide context (warning filters, BLAS thread limits) that the scan points
    running in threads of one process share: the first point to come in enters it, the last
    to leave exits it.  Entered and left per point instead, A, B in and A, B out leaves the
    process as A had set it (an external `dask worker` with several threads runs points at
    once in one process)."""

    def __init__(self) -> None:
        self.lock, self.users, self.stack = threading.Lock(), 0, contextlib.ExitStack()

    @contextlib.contextmanager
    def __call__(self, enter) -> Iterator[None]:
        """While active: `enter()`'s context (a context manager), unless another point's is."""
        with self.lock:
            if self.users == 0:
                self.stack.enter_context(enter())
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    self.stack.close()


_blas_limits, _routing = _Shared(), _Shared()


@contextlib.contextmanager
def _thread_limits(threads: int | None) -> Iterator[None]:
    """Cap Numba parallel threads (this thread) and BLAS/OpenMP threads (the process; points
    running at once in one process share the first's limit) at `threads`."""
    if threads is None:
        yield
        return
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        with _blas_limits(lambda: threadpool_limits(limits=int(threads))):
            yield
    finally:
        numba.set_num_threads(before)


_sink = threading.local()


@contextlib.contextmanager
def _routed() -> Iterator[None]:
    """UserWarning and RuntimeWarning (the package's own) shown every time, and every
    warning shown into the list of the point running in the raising thread (`_sink`), else
    where the process showed it before."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.simplefilter("always", RuntimeWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            into = getattr(_sink, "into", None)
            if into is None:
                shown(message, category, filename, lineno, file, line)
            else:
                into.append(f"{category.__name__}: {message}")
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def point_warnings(into: list) -> Iterator[None]:
    """Collect as "Category: message" into `into` the warnings this thread raises meanwhile
    (UserWarning and RuntimeWarning every time; others as filtered).  Thread-safe: points
    in other threads collect their own, and the last to leave restores the process's
    filters and `showwarning`."""
    with _routing(_routed):
        _sink.into = into
        try:
            yield
        finally:
            _sink.into = None


def run_point(task: dict) -> dict:
    """Run one scan point (on a worker or in-process); never raises for a failing point.

    task: scenario (path), params (full, JSON), out (run-file path), scan (meta stored in
    the file), threads, flush_seconds.  An incomplete file (a killed worker's, or one at its
    target step but not marked complete) is resumed from its checkpoint when its parameters
    match, else replaced.  Returns {id, status: done | diverged | failed | stopped, wall_s,
    error, traceback, resumed_from, worker, warnings}; a file still incomplete afterwards is
    ``failed``; `warnings` holds the distinct "Category: message" lines the point raised (a
    worker's own stderr would show them raw, once per process, without the point).  In a
    process told to stop (`simulation.stop_runs(later=True)`: a stopping scan's worker) a
    point is ``stopped``: not begun, or stopped at a record with a checkpoint.
    """
    t0 = time.perf_counter()
    pid, out = task["scan"]["id"], Path(task["out"])
    res = {"id": pid, "resumed_from": None, "error": "", "traceback": "",
           "worker": f"{socket.gethostname()}:{os.getpid()}", "warnings": [], "status": "stopped"}
    if stopping():
        res["wall_s"] = 0.0
        return res
    caught: list[str] = []
    with point_warnings(caught):
        _run_point(task, out, res)
    res["warnings"] = list(dict.fromkeys(caught))
    res["wall_s"] = round(time.perf_counter() - t0, 6)
    return res


WAIT_POLL_S = 2.0   # how often a point polls a run file another process is writing


def _wait_while_written(out: Path) -> float:
    """Wait while another process writes the point's run file: another copy of this point,
    still running (an external scheduler's worker that retires, `--lifetime`, runs its point
    to the end while the scheduler sends it elsewhere; a rerun right after a stopped scan
    finds the old attempt still writing).  Its end leaves the file complete (this attempt
    then reports it done) or resumable; replacing it under that run failed the point
    (RunFileLocked).  Returns the seconds waited; RunStopped if this process is told to stop
    meanwhile."""
    t0 = time.monotonic()
    while True:
        try:
            refuse_if_written(os.fspath(out))
            return time.monotonic() - t0
        except RunFileLocked:
            if stopping():
                raise RunStopped(f"stopped while another process was writing {out}") from None
            time.sleep(WAIT_POLL_S)


def _run_point(task: dict, out: Path, res: dict) -> None:
    """`run_point`'s attempt: status, error, traceback and resumed_from into `res`."""
    try:
        waited = _wait_while_written(out)
        if waited > 0.5:
            warnings.warn(f"waited {waited:.0f} s for another process writing {out} (another "
                          "copy of this point) to finish", LangevinSimWarning, stacklevel=2)
        with _thread_limits(task["threads"]):
            run = None
            info = inspect_run(out)
            if info["state"] in ("complete", "incomplete") and info["params"] == task["params"]:
                if info["state"] == "complete":
                    run = Run(out)
                elif info["checkpoint_step"] is not None:
                    try:
                        run = resume(out, progress=False, flush_seconds=task["flush_seconds"])
                        res["resumed_from"] = info["checkpoint_step"]
                    except Exception:  # a damaged file: start again below
                        run = None
            if run is None:
                run = _fresh_run(task)
            with run:
                div = run.diverged_step
                if not run.complete:
                    res.update(status="failed", error=f"run file still incomplete at step "
                                                      f"{run.steps_done} of {run.config['steps_target']}")
                elif div.size and (div >= 0).all():
                    res.update(status="diverged", error=f"all {div.size} replicas diverged "
                                                        f"(first at step {int(div.min())})")
                else:
                    res["status"] = "done"
    except (RunStopped, RunTerminated) as e:
        if not stopping():          # this process's own Ctrl-C / SIGTERM: the scan stops
            raise
        res.update(status="stopped", error=str(e))
    except Exception as e:
        res.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())


def _fresh_run(task: dict) -> Run:
    mod = load_scenario(task["scenario"])
    p = resolve_params(mod.Params, sets=task["params"])
    sim = mod.build(p)
    sim.meta.update(scenario=os.path.basename(task["scenario"]), params=dataclasses.asdict(p),
                    scan=task["scan"])
    out = Path(task["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    return sim.run(p.steps, p.record_every, out=out, record_positions=p.record_positions,
                   overwrite=True, progress=False, flush_seconds=task["flush_seconds"])


def check_builds(scenario: str, points: list) -> None:
    """Refuse, before any file is written, a scan whose points the scenario's `build` refuses
    (a ConfigError: a negative temperature, a step its dynamics rejects): each distinct
    point is built on the numpy backend with 2 replicas (again with its own number where that
    fails), so a bad --grid value is one line now, not a failed point per value at the end.
    Other errors (a backend missing here, not where the points run) are left to the points."""
    mod = load_scenario(scenario)
    bad, seen = [], set()
    for pt in points:
        key = json.dumps({k: v for k, v in pt.params.items() if k != "seed"}, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        p = dataclasses.replace(resolve_params(mod.Params, sets=pt.params), backend="numpy")
        for replicas in dict.fromkeys((min(p.replicas, 2), p.replicas)):
            try:
                mod.build(dataclasses.replace(p, replicas=replicas))
                break
            except ConfigError as e:
                error = e
            except Exception:       # noqa: BLE001 -- the point's own run reports it
                break
        else:
            bad.append((pt.coords, error))
    if bad:
        first = " ".join(f"[{', '.join(f'{k}={v}' for k, v in c.items()) or 'every point'}] "
                         f"{e}." for c, e in bad[:3])
        raise ConfigError(f"the scenario refuses {len(bad)} of {len(seen)} scan points; change "
                          "those --grid/--zip/--set values (nothing was run or written): "
                          + first + (f" [and {len(bad) - 3} more]" if len(bad) > 3 else ""))


def priming_groups(tasks: list[dict]) -> list[list[dict]]:
    """The pending points grouped by their str/bool coordinates (a backend, a dtype, a model
    switch: what can change the kernels; numbers only change their arguments), in order."""
    groups: dict = {}
    for t in tasks:
        key = tuple((k, v) for k, v in sorted(t["scan"]["coords"].items()) if isinstance(v, (str, bool)))
        groups.setdefault(key, []).append(t)
    return list(groups.values())


def warm_numba_cache(scenario: str, tasks: list[dict], tries: int = 3) -> None:
    """Compile the Numba kernels of the pending points into the on-disk cache, in this
    process, before the points fan out: for each of their `priming_groups`, build the first
    buildable point with 2 replicas and take one step.  A point whose build fails is skipped
    here; its own run reports why."""
    mod = load_scenario(scenario)
    for group in priming_groups(tasks):
        for task in group[:tries]:
            try:
                p = resolve_params(mod.Params, sets=task["params"])
                built = mod.build(dataclasses.replace(p, replicas=min(p.replicas, 2)))
                # a ladder (`ReplicaExchange`): its rungs differ only in temperature, so one
                # rung compiles the kernels of all
                (built.rungs[0] if hasattr(built, "rungs") else built).advance(1)
                break
            except Exception:
                continue
