"""Running a scan's points on Dask: a local cluster of spawned single-threaded workers, or a
running scheduler (an address or a `distributed.Client`).

On the local cluster ``allowed-failures`` is 0 (a point whose worker dies fails at once; the
rerun resumes it) and the workers start with NUMBA/OMP/MKL/OPENBLAS threads = ``threads``.

GPUs.  Points with ``backend=cuda`` (or ``--gpus N``) run one point per GPU at a time: the
local cluster then has one worker per GPU, each pinned to its device with
CUDA_VISIBLE_DEVICES and declaring the Dask resource ``GPU=1``, and every point requests
``resources={"GPU": 1}``.  On an external scheduler the points request the resource when its
workers declare it (``dask worker ... --resources GPU=1``, one worker per GPU).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from ..errors import ConfigError
from ..warmup import usable_cpus
from .point import priming_groups, run_point, warm_numba_cache

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
GPU = "GPU"                # the Dask resource a GPU worker declares and a cuda point requests
# the local clusters' Dask log level: its warnings (tasks cancelled and workers killed on
# Ctrl-C, unmanaged memory) are noise beside the scan's own lines; errors still show
QUIET = logging.ERROR
_requested_gpus: list = [None]   # `--gpus N` of the CLI (see `requested_gpus`)


@contextlib.contextmanager
def _environ_restored(keys) -> Iterator[None]:
    """Put os.environ[keys] back as they were on exit.

    A Dask Nanny writes its pre-spawn environment into this process's os.environ and leaves it
    there; a later Numba compile here would then read NUMBA_NUM_THREADS anew and refuse it
    (the thread pool is already launched with another size)."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def requested_gpus(n: int | None) -> Iterator[None]:
    """While active, `run_on_dask` uses n GPU workers (the CLI's ``--gpus N``; None: one per
    visible GPU when the points use backend=cuda)."""
    if n is not None and int(n) < 1:
        raise ConfigError(f"--gpus must be >= 1, got {n}")
    _requested_gpus.append(None if n is None else int(n))
    try:
        yield
    finally:
        _requested_gpus.pop()


def check_gpus_with(scheduler) -> None:
    """ConfigError for ``--gpus N`` (a local cluster of GPU workers) with a scheduler, whose
    workers are its own: the CPU points went to its GPU workers, its other workers idle."""
    if scheduler is not None and _requested_gpus[-1] is not None:
        raise ConfigError("--gpus N starts a local cluster of GPU workers; with --scheduler the "
                          "workers are the scheduler's: start one per GPU there with "
                          "CUDA_VISIBLE_DEVICES set and `--resources GPU=1` (docs/gpu.md), and "
                          "leave out --gpus")


def uses_gpu(tasks: list[dict]) -> bool:
    """Whether any of the points runs on the cuda backend."""
    return any(t["params"].get("backend") == "cuda" for t in tasks)


def check_local_gpus(params: list[dict]) -> None:
    """Raise `gpu_ids`' one-line error now where a local cluster for points with these
    params would start GPU workers (`--gpus N`, or a point with backend=cuda) that this
    machine does not show: the scan calls it before it writes any file."""
    gpus = _requested_gpus[-1]
    if gpus is not None or any(p.get("backend") == "cuda" for p in params):
        gpu_ids(gpus)


def gpu_ids(n: int | None) -> list[str]:
    """Device ids for n GPU workers: the first n of this process's CUDA_VISIBLE_DEVICES when
    set, else 0 .. n-1; n None: every visible GPU (at least one)."""
    from ..backends.cuda_runtime import device_count, simulated

    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in vis.split(",") if v.strip() not in ("", "-1")] if vis is not None else None
    if n is None:
        if ids is not None and not ids:
            raise ConfigError(f"the scan's cuda points need a GPU but CUDA_VISIBLE_DEVICES={vis!r} "
                              "lists none: unset it, or list the GPUs to use")
        n = max(1, len(ids) if ids is not None else device_count())
    elif ids is None and not simulated() and n > device_count():
        raise ConfigError(f"--gpus {n} but this machine shows {device_count()} GPU(s) "
                          "(nvidia-smi -L): ask for at most that many")
    elif simulated() and n > max(2, os.cpu_count() or 1):
        # each simulated GPU is a worker process on this machine's CPUs (--gpus 64 on 2 cores
        # started 64 workers that ran nothing for minutes)
        raise ConfigError(f"--gpus {n} under the CUDA simulator: each simulated GPU is a worker "
                          f"process on this machine's {os.cpu_count()} CPU(s); ask for at most "
                          f"{max(2, os.cpu_count() or 1)}")
    if ids is None:
        return [str(i) for i in range(n)]
    if n > len(ids):
        raise ConfigError(f"--gpus {n} but CUDA_VISIBLE_DEVICES={vis!r} lists {len(ids)} device(s)")
    return ids[:n]


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """While the local workers are spawned, SIGINT is ignored here, so they inherit it
    ignored: a terminal's Ctrl-C reaches the whole process group, and a worker took it as a
    KeyboardInterrupt in its event loop and died mid-point (the scheduler's "workers died"
    errors); now only this process stops, and closes the cluster.  (Off the main thread,
    where signal handlers cannot be set, nothing changes.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


class _Terminated(KeyboardInterrupt):
    """SIGTERM while a scan runs (`sigterm_stops`): it stops the scan as
    Ctrl-C does; `exit_code` 128 + SIGTERM."""

    exit_code = 128 + signal.SIGTERM


class _StopGate:
    """The SIGTERM and SIGINT handler of a scan.  Ctrl-C raises KeyboardInterrupt at once;
    SIGTERM, armed, raises `_Terminated` at once, and not armed (while a local cluster
    starts: the Numba cache warmed, workers spawned) only remembers the signal -- raising
    inside Dask's start-up left a half-built cluster and ended the scan without a word and
    with its lock -- and `arm()`, once the scan waits for its points, raises for a signal
    remembered.  Both are remembered (`pending`: the signal, 0 for none) until the scan takes
    them, and while `_collect` waits for the points (`polled`) neither raises: `_collect`
    does, within its 50 ms poll.  (Raised from the handler there, the exception could land
    in a weakref callback of Dask's, where Python prints "Exception ignored" with a traceback
    and drops it: the scan ran its 10^7-step point to the end, or, once it was remembered,
    stopped with that traceback on stderr.)"""

    def __init__(self, armed: bool) -> None:
        self.pending, self.armed, self.polled = 0, armed, False

    def __call__(self, signum, frame) -> None:
        self.pending = signum
        if not self.polled and (signum == signal.SIGINT or self.armed):
            raise self.exception()

    def exception(self) -> KeyboardInterrupt:
        """What the signal pending raises: `_Terminated` for SIGTERM, else KeyboardInterrupt."""
        return _Terminated() if self.pending == signal.SIGTERM else KeyboardInterrupt()

    def arm(self) -> None:
        self.armed = True
        if self.pending:
            raise self.exception()


@contextlib.contextmanager
def sigterm_stops(armed: bool = True) -> Iterator[_StopGate]:
    """While active in the main thread, SIGTERM (a SLURM time limit, `kill`) stops the scan
    as Ctrl-C does, a `_Terminated` (a KeyboardInterrupt, exit status 143), not killed with
    its cluster's workers mid-point; `armed` False defers it to the gate's `arm()`.  Ctrl-C
    goes through the gate too (unless the scan started with it ignored), raised at once and
    remembered (see `_StopGate`).  Off the main thread nothing changes."""
    gate = _StopGate(armed)
    if threading.current_thread() is not threading.main_thread():
        yield gate
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)
              if sig == signal.SIGTERM or signal.getsignal(sig) is not signal.SIG_IGN}
    for sig in before:
        signal.signal(sig, gate)
    try:
        yield gate
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _signals_after_close(gate: _StopGate) -> Iterator[None]:
    """While the scan closes its client and cluster, a Ctrl-C or SIGTERM is remembered and
    raised when they are closed.  Raised inside Dask's close (a second Ctrl-C, "at once"), it
    left the cluster half closed, and Dask's exit hook then waited 10 s on it: the scan
    ended in 11 s instead of 3.  (Off the main thread nothing changes.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    before = signal.getsignal(signal.SIGINT)
    if before is not signal.SIG_IGN:     # (a scan started with Ctrl-C ignored keeps it so)
        signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    armed, gate.armed = gate.armed, False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
    if armed:
        gate.arm()                       # a SIGTERM meanwhile
    if got:
        raise KeyboardInterrupt


def gpu_cluster(ids: list[str], threads: int):
    """A local Dask cluster of one spawned worker per GPU id: CUDA_VISIBLE_DEVICES=id, resource
    GPU=1, `threads` threads (the resource, not the thread count, keeps a GPU to one point)."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    env = {k: str(threads) for k in THREAD_VARS}
    specs = {f"gpu-{i}": {"cls": Nanny, "options": {
        "nthreads": threads, "resources": {GPU: 1}, "silence_logs": QUIET,
        "env": dict(env, CUDA_VISIBLE_DEVICES=i)}} for i in ids}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.worker.multiprocessing-method": "spawn"}), \
            _workers_ignore_sigint():
        return SpecCluster(workers=specs, scheduler={"cls": Scheduler,
                                                     "options": {"dashboard_address": ":0"}},
                           silence_logs=QUIET)


def probe_scheduler(address: str, seconds: float = 10.0) -> None:
    """Ask `address` for its identity before a Client connects: OSError where nothing
    listens (Dask's connect timeout), ConfigError where something answers but not as a Dask
    scheduler within `seconds` (a Client would wait on it for ever: the dashboard's port, a
    worker's, another service).  Run in a thread of its own (a notebook's loop may be running)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.utils import parse_timedelta
    from distributed.comm import connect

    limit = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")

    async def identity():      # (connect's own handshake waits for ever on a silent peer)
        comm = await asyncio.wait_for(connect(address), limit + seconds)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await asyncio.wait_for(comm.read(), seconds)
        finally:
            comm.abort()
    with ThreadPoolExecutor(1) as pool:
        try:
            info = pool.submit(asyncio.run, identity()).result()
        except TimeoutError:      # (an OSError: ours, a peer that accepted and fell silent)
            info = "no answer"
        except OSError:           # Dask's: nothing listens there
            raise
        except Exception as e:    # noqa: BLE001 - silence, garbage: not a scheduler either way
            info = f"{type(e).__name__} {e}".strip()
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        what = info.get("type") if isinstance(info, dict) else info or "no answer"
        raise ConfigError(f"{address} answers, but not as a Dask scheduler ({what} within "
                          f"{seconds:g} s): give the scheduler's own address, tcp://HOST:PORT "
                          "(8786 by default; not the dashboard's 8787 or a worker's port)")


def _workers_declare_gpus(client) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(GPU in (w.get("resources") or {}) for w in workers.values())


def run_on_dask(tasks: list[dict], finished: Callable[[dict, dict], None], scenario: str,
                workers: int | None, scheduler, threads: int, gpus: int | None = None) -> None:
    """Run `tasks` (see `run_point`) on Dask; call `finished(task, result)` as each ends.
    gpus: GPU workers of the local cluster (default: `requested_gpus`, else one per visible
    GPU when a point uses backend=cuda)."""
    if gpus is None:
        gpus = _requested_gpus[-1]
    # (deferred only while a local cluster starts; waiting on an external scheduler's first
    # worker, SIGTERM stops the scan at once)
    with _environ_restored(THREAD_VARS), sigterm_stops(armed=scheduler is not None) as gate:
        _run_on_dask_cluster(tasks, finished, scenario, workers, scheduler, threads, gpus, gate)


def _run_on_dask_cluster(tasks: list[dict], finished: Callable[[dict, dict], None], scenario: str,
                         workers: int | None, scheduler, threads: int,
                         gpus: int | None, gate: _StopGate) -> None:
    import dask
    from distributed import Client, LocalCluster

    cluster, futures = None, {}
    gpu_mode = gpus is not None or uses_gpu(tasks)
    if scheduler is None and gpu_mode:
        ids = gpu_ids(gpus)
        if workers is not None and int(workers) != len(ids):
            print(f"{len(ids)} GPU worker(s) (one per GPU: {','.join(ids)}); --workers {workers} "
                  "does not apply to GPU points", file=sys.stderr)
        cluster = gpu_cluster(ids, threads)
        client = Client(cluster, set_as_default=False)
    elif scheduler is None:
        n = int(workers) if workers is not None else max(1, usable_cpus() // threads)
        env = {k: str(threads) for k in THREAD_VARS}
        # allowed-failures 0: a point whose worker dies is recorded as failed at once (the
        # rerun resumes it) instead of being retried on, and possibly killing, other workers
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.worker.multiprocessing-method": "spawn",
                              "distributed.nanny.pre-spawn-environ":
                                  dict(dask.config.get("distributed.nanny.pre-spawn-environ"), **env)}), \
                _workers_ignore_sigint():
            # one task slot per worker: a point's own Numba/BLAS threads are the `threads`
            # (Dask's nthreads would run that many points at once, each with `threads`)
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=QUIET)
        client = Client(cluster, set_as_default=False)
    elif isinstance(scheduler, str):
        try:
            probe_scheduler(scheduler)
            client = Client(scheduler, set_as_default=False)
        except OSError as e:            # (TimeoutError too): refused, unknown host, no answer
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} ({e}): start it "
                              "(`dask scheduler`, or the SLURM job of docs/scans.md) or leave "
                              "out --scheduler for a local cluster; the scan's points stay "
                              "pending, a rerun takes them") from None
    else:
        client = scheduler
    try:
        if cluster is not None:
            from .worker_logs import QuietHeartbeatLoss

            client.register_plugin(QuietHeartbeatLoss())
        announce(client)
        resources = None
        if cluster is None and not gpu_mode and not client.scheduler_info().get("workers"):
            print("no worker has joined the scheduler yet: the points wait for the first "
                  "(dask worker ADDRESS, or the SLURM jobs of docs/scans.md)", file=sys.stderr)
        if gpu_mode:
            if cluster is None and not client.scheduler_info().get("workers"):
                # (dask-jobqueue: the jobs may still be queued) whether the workers declare GPU=1
                # is known once one is there; deciding on none would let a GPU run many points
                print("waiting for the scheduler's first worker (whether its workers declare the "
                      "GPU resource)", file=sys.stderr)
                client.wait_for_workers(1)
            if cluster is not None or _workers_declare_gpus(client):
                resources = {GPU: 1}
            else:
                print("the scheduler's workers declare no GPU resource, so cuda points may share "
                      "a GPU; start one worker per GPU with `--resources GPU=1` (docs/gpu.md)",
                      file=sys.stderr)
        if not gpu_mode:
            # warm the (shared) Numba cache on the workers before fanning out, a task per
            # group of points with kernels of their own (a dtype, a backend), so the groups
            # compile at once (and an external cluster's nodes compile for their own CPU)
            try:
                for f in [client.submit(warm_numba_cache, scenario, group, pure=False, retries=0)
                          for group in priming_groups(tasks)]:
                    f.result()
            except Exception as e:
                print(f"warming the Numba cache on a worker failed ({type(e).__name__}: {e}); "
                      "workers compile on their own", file=sys.stderr)
        for t in tasks:
            key = f"point-{t['scan']['id']}-{os.urandom(4).hex()}"
            futures[client.submit(run_point, t, key=key, pure=False, retries=0,
                                  resources=resources)] = t
        try:
            gate.arm()
            _collect(futures, finished, gate)
        except KeyboardInterrupt as e:
            if cluster is None or not futures:   # an external cluster's workers are not ours
                raise
            term = isinstance(e, _Terminated)
            gate.pending = 0                     # (taken: a second signal stops at once)
            print("langevin-sim: stopping: the points running stop at their next record, "
                  f"with a checkpoint ({'SIGTERM' if term else 'Ctrl-C'} again: at once)",
                  file=sys.stderr)
            from ..simulation import stop_runs

            sig = signal.SIGTERM if term else signal.SIGINT
            client.run(stop_runs, sig, True)
            _collect(futures, finished, gate)
            raise
    finally:
        with _signals_after_close(gate):
            for fut in list(futures):
                fut.cancel()
            if client is not scheduler:
                client.close()
            if cluster is not None:
                cluster.close()


def _collect(futures: dict, finished: Callable[[dict, dict], None],
             gate: _StopGate | None = None) -> None:
    """Hand each point's result to `finished` as its future completes (popped from
    `futures`: {future: task}); a future's error becomes a ``failed`` result.  Polls
    `done()` between short sleeps, not `distributed.as_completed`: a Ctrl-C raised inside its
    Condition could leave that lock held, and the client's event loop, blocked on it, never
    delivered another result (a stopped scan hung in 1 of ~12 tries).  A SIGTERM or Ctrl-C
    the `gate` took meanwhile is raised here, between polls (see `_StopGate`)."""
    if gate is not None:
        gate.polled = True
    try:
        while futures:
            if gate is not None and gate.pending:
                raise gate.exception()
            done = [f for f in futures if f.done()]
            if not done:
                time.sleep(0.05)
                continue
            for fut in done:
                _finish(futures, fut, finished)
    finally:
        if gate is not None:
            gate.polled = False


def _finish(futures: dict, fut, finished: Callable[[dict, dict], None]) -> None:
    """`finished(task, result)` of one completed future, popped from `futures`."""
    t = futures.pop(fut)
    if fut.status == "finished":
        res = fut.result()
    else:
        res = {"id": t["scan"]["id"], "status": "failed", "error": _failure(fut), "traceback": "",
               "wall_s": None, "resumed_from": None, "worker": "", "warnings": []}
    fut.release()
    finished(t, res)


def _failure(fut) -> str:
    """The error line of a future that did not finish: its exception, or (cancelled or lost,
    no exception: the client lost its scheduler) what became of it."""
    exc = fut.exception() if fut.status == "error" else None
    if exc is None:
        return (f"the point's Dask task was {fut.status} before it reported (the scheduler "
                "died, or the scan lost it); a rerun takes the point up")
    msg = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "KilledWorker":
        msg += " (the worker process died: killed, out of memory, or crashed)"
    return msg


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def announce(client) -> None:
    """Print the scheduler address and, where the scheduler can serve it, the dashboard."""
    info = client.scheduler_info()
    where = f"dask scheduler {info['address']} ({len(info['workers'])} workers)"
    if "dashboard" in info.get("services", {}) and client.run_on_scheduler(_has_bokeh):
        print(f"{where}, dashboard {client.dashboard_link}", file=sys.stderr)
    else:
        print(f"{where}; no dashboard: it needs `pip install bokeh` where the scheduler runs",
              file=sys.stderr)
