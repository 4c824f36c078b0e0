"""numba's CUDA simulator without its busy wait: blocks synchronized by a condition variable.

The simulator runs a block's CUDA threads as Python threads (`BlockThread`), and its
`BlockManager.run` watches them in a loop that never sleeps: it polls every thread's
`syncthreads_blocked` flag and `is_alive()` until all have finished, releasing a barrier when
all live threads are blocked at it.  Under the GIL that loop competes with the threads it
waits for (a running thread keeps the GIL for up to the 5 ms switch interval against it), and
it keeps a core busy even while they run: ~12 million `is_alive` calls, ~24 s of a 29 s
simulated toy-net test.  `use_condition_barriers` replaces three methods with the same
protocol driven by one `threading.Condition` per block: a thread notifies it when it blocks at
a barrier or finishes, and the manager sleeps on it in between.  The barrier semantics are
numba's (a barrier opens when every live thread is blocked at one; an exception in a thread
aborts the others' barriers and is raised by the launch), so kernels compute the same bits.
"""
from __future__ import annotations

import threading

import numpy as np


def _syncthreads(self) -> None:
    """`BlockThread.syncthreads`: mark this thread blocked, wake the manager, wait."""
    if self.abort:
        raise RuntimeError("abort flag set on syncthreads call")
    cond = self._manager.barrier
    with cond:
        self.syncthreads_blocked = True
        cond.notify()
    self.syncthreads_event.wait()
    self.syncthreads_event.clear()
    if self.abort:
        raise RuntimeError("abort flag set on syncthreads clear")


def _thread_run(run):
    def thread_run(self) -> None:
        """`BlockThread.run`, then mark this thread finished and wake the manager."""
        try:
            run(self)
        finally:
            cond = self._manager.barrier
            with cond:
                self.finished = True
                cond.notify()
    return thread_run


def _block_run(self, grid_point, *args) -> None:
    """`BlockManager.run`: start the block's threads, then, woken by each thread that blocks
    or finishes, open the barrier when every live thread is blocked at it; re-raise a
    thread's exception after aborting the others."""
    from numba.cuda.simulator.kernel import BlockThread

    self.barrier = threading.Condition()
    threads = []
    for block_point in np.ndindex(*self._block_dim):
        def target():
            self._f(*args)
        t = BlockThread(target, self, grid_point, block_point, self._debug)
        t.finished = False
        threads.append(t)
    for t in threads:
        t.start()
    with self.barrier:
        while True:
            failed = next((t for t in threads if t.exception), None)
            if failed is not None:
                for t in threads:
                    t.abort = True
                    t.syncthreads_blocked = False
                    t.syncthreads_event.set()
                raise failed.exception[0].with_traceback(failed.exception[1])
            live = [t for t in threads if not t.finished]
            if not live:
                return
            if all(t.syncthreads_blocked for t in live):
                for t in live:
                    t.syncthreads_blocked = False
                    t.syncthreads_event.set()
            self.barrier.wait()


def use_condition_barriers() -> None:
    """Patch numba's CUDA simulator (imported, simulator mode on) to synchronize blocks by a
    condition variable instead of its polling loop; idempotent.  A simulator whose classes
    lack the attributes this relies on is left as it is."""
    from numba.cuda.simulator import kernel

    block, thread = kernel.BlockManager, kernel.BlockThread
    if getattr(block, "condition_barriers", False):
        return
    if not all(hasattr(thread, a) for a in ("syncthreads", "run")) or not hasattr(block, "run"):
        return
    thread.syncthreads = _syncthreads
    thread.run = _thread_run(thread.run)
    block.run = _block_run
    block.condition_barriers = True
