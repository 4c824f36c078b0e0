"""Running a scan's points on Dask: a local cluster of spawned single-threaded workers, or a
running scheduler (an address or a `distributed.Client`).

On the local cluster ``allowed-failures`` is 0 (a point whose worker dies fails at once; the
rerun resumes it) and the workers start with NUMBA/OMP/MKL/OPENBLAS threads = ``threads``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from .point import run_point, warm_numba_cache

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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


def run_on_dask(tasks: list[dict], finished: Callable[[dict, dict], None], scenario: str,
                workers: int | None, scheduler, threads: int) -> None:
    """Run `tasks` (see `run_point`) on Dask; call `finished(task, result)` as each ends."""
    with _environ_restored(THREAD_VARS):
        _run_on_dask_cluster(tasks, finished, scenario, workers, scheduler, threads)


def _run_on_dask_cluster(tasks: list[dict], finished: Callable[[dict, dict], None], scenario: str,
                         workers: int | None, scheduler, threads: int) -> None:
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster, futures = None, {}
    if scheduler is None:
        n = int(workers) if workers is not None else max(1, len(os.sched_getaffinity(0)) // threads)
        warm_numba_cache(scenario, tasks)
        env = {k: str(threads) for k in THREAD_VARS}
        # allowed-failures 0: a point whose worker dies is recorded as failed at once (the
        # rerun resumes it) instead of being retried on, and possibly killing, other workers
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.worker.multiprocessing-method": "spawn",
                              "distributed.nanny.pre-spawn-environ":
                                  dict(dask.config.get("distributed.nanny.pre-spawn-environ"), **env)}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                                   dashboard_address=":0")
        client = Client(cluster, set_as_default=False)
    elif isinstance(scheduler, str):
        client = Client(scheduler, set_as_default=False)
    else:
        client = scheduler
    try:
        announce(client)
        if cluster is None:
            # an external cluster's nodes may have another CPU than this machine: warm the
            # (shared) Numba cache on one of its workers, before fanning out
            try:
                client.submit(warm_numba_cache, scenario, tasks, pure=False, retries=0).result()
            except Exception as e:
                print(f"warming the Numba cache on a worker failed ({type(e).__name__}: {e}); "
                      "workers compile on their own", file=sys.stderr)
        for t in tasks:
            key = f"point-{t['scan']['id']}-{os.urandom(4).hex()}"
            futures[client.submit(run_point, t, key=key, pure=False, retries=0)] = t
        for fut in as_completed(futures, loop=client.loop):
            t = futures.pop(fut)
            if fut.status == "finished":
                res = fut.result()
            else:
                exc = fut.exception()
                name = type(exc).__name__
                msg = f"{name}: {exc}"
                if name == "KilledWorker":
                    msg += " (the worker process died: killed, out of memory, or crashed)"
                res = {"id": t["scan"]["id"], "status": "failed", "error": msg,
                       "traceback": "", "wall_s": None, "resumed_from": None, "worker": ""}
            fut.release()
            finished(t, res)
    finally:
        for fut in list(futures):
            fut.cancel()
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()


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
