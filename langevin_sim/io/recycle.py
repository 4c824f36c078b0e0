"""Buffers for the copies a run hands to its writer thread, taken back once written.

Each record copies the positions and computes the energies into new arrays, and each
checkpoint copies the state: for W1 (2^20 replicas) 4-8 MB per array.  Fresh large arrays
come from new pages (glibc maps every allocation above its mmap threshold and unmaps it when
freed); on a VM that takes freed pages back, as this machine class does, each first touch
costs 15-35 us a page, a fifth of W1's run time at ten records (design_changes 26).  The
`Recycler` hands out arrays it keeps: the writer thread gives each one back after the call
that wrote it, and the next record or checkpoint of the same shape fills it again.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

MIN_BYTES = 128 << 10   # glibc's first mmap threshold: smaller blocks come from its free lists
KEEP = 8                # spare buffers kept per (shape, dtype)


class Recycler:
    """Arrays of at least `min_bytes` handed out by `empty` / `copy` and returned by `give`
    (from any thread) once nothing reads them any more; smaller ones are plain new arrays.
    Only arrays this Recycler handed out are taken back, each at most once per handing.
    `allocated` counts the large arrays it had to create; all come from `alloc(shape, dtype)`
    (a device backend's page-locked host memory, the target of its asynchronous copies)."""

    def __init__(self, min_bytes: int = MIN_BYTES, keep: int = KEEP, alloc=np.empty):
        self.min_bytes, self.keep, self.alloc = min_bytes, keep, alloc
        self.allocated = 0
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._out: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialized C-contiguous array of `shape` and `dtype`, recycled if one is free
        (the one given back longest ago: with last-in first-out, a writer that keeps up gave
        the same buffer back before each record and the other kept ones idled, so whether a
        second run reused them depended on the writer thread's timing)."""
        dtype = np.dtype(dtype)
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(n) for n in shape)
        if int(np.prod(shape)) * dtype.itemsize < self.min_bytes:
            return self.alloc(shape, dtype)
        with self._lock:
            free = self._free.get((shape, dtype.str))   # the longest free first: a run
            a = free.pop(0) if free else None           # cycles through every kept buffer
        if a is None:
            a = self.alloc(shape, dtype)
            self.allocated += 1
        with self._lock:
            self._out[id(a)] = a
        return a

    def copy(self, a: np.ndarray) -> np.ndarray:
        """A copy of `a` (C-contiguous, same dtype) in a recycled buffer where one is free."""
        out = self.empty(a.shape, a.dtype)
        np.copyto(out, a)
        return out

    def give(self, obj) -> None:
        """Take back every handed-out array in obj (an array, or dicts, lists and tuples of
        them, nested): the caller no longer reads or writes them."""
        if isinstance(obj, np.ndarray):
            with self._lock:
                if self._out.get(id(obj)) is not obj:
                    return
                del self._out[id(obj)]
                free = self._free.setdefault((obj.shape, obj.dtype.str), [])
                if len(free) < self.keep:
                    free.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                self.give(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                self.give(v)

    def trim(self, keep: int) -> None:
        """Drop free buffers beyond `keep` per (shape, dtype) (what to hold between runs)."""
        with self._lock:
            for free in self._free.values():
                del free[keep:]

