"""Record rows and checkpoints written past the page cache: O_DIRECT writes of whole, aligned
chunks and contiguous datasets.

A record row of a large series (energies, positions: one row a chunk, `writer._row_is_chunk`)
is written straight from an aligned buffer into its chunk's place in the file, which HDF5
allocates when the dataset is extended (allocation time EARLY, no fill writes) at an address
aligned to `ALIGNMENT` (the file's alignment property, `ALIGN`).  Written the plain way, each
row first fills new page-cache pages; on VMs whose host backs guest memory lazily (free page
reporting) a new page costs 15-35 us of the writer's CPU, so a 12 MB record took ~115 ms of CPU
(~100 MB/s) against ~2 ms (a copy) and ~9 ms of wall time this way (docs/design_changes.md
24).  The file stays a plain HDF5 file: HDF5 owns the chunk's address, the bytes are what
`write_direct_chunk` would write.  Large checkpoint arrays (contiguous, allocated when the
file is laid out) go the same way (`write_whole`).  Where O_DIRECT is unavailable (not Linux,
tmpfs, a refused write) the caller writes through HDF5 as before.
"""
from __future__ import annotations

import mmap
import os
import weakref

import h5py
import numpy as np

from . import format as F

ALIGNMENT = 4096       # bytes: file offsets, lengths and buffers of O_DIRECT writes
PIECE = 8 << 20        # bytes written per O_DIRECT call at most (the buffer's size)
# the file-access alignment for every object of at least half a chunk (h5py.File keywords)
ALIGN = {"alignment_threshold": F.CHUNK_BYTES // 2, "alignment_interval": ALIGNMENT}


def early_allocation() -> dict:
    """`create_dataset` keywords for storage that `DirectRows` can write: allocated when the
    dataset is created or extended (allocation time EARLY), with no fill values written."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return {"dcpl": dcpl, "fill_time": "never"}


class DirectRows:
    """O_DIRECT writer of whole chunk rows into the open sec2 HDF5 file `f`."""

    def __init__(self, f: h5py.File):
        self.fd = os.open(f.filename, os.O_WRONLY | os.O_DIRECT)
        weakref.finalize(self, os.close, self.fd)
        self.f = f
        self._buf: mmap.mmap | None = None
        self._refused = False     # a write was refused: HDF5 writes everything from then on

    @classmethod
    def open(cls, f: h5py.File) -> "DirectRows | None":
        """The direct writer of `f`, or None where O_DIRECT cannot serve it."""
        if not hasattr(os, "O_DIRECT") or f.driver != "sec2":
            return None
        try:
            return cls(f)
        except OSError:       # e.g. EINVAL: a file system without O_DIRECT (tmpfs)
            return None

    def write(self, ds: h5py.Dataset, i: int, row: np.ndarray) -> bool:
        """Write `row` as row i (one whole chunk) of `ds`, already extended past i.  Returns
        False, having written nothing, if the chunk is not an aligned, allocated, unfiltered
        one (a dataset laid out otherwise, e.g. by an older version)."""
        if ds.id.get_create_plist().get_alloc_time() != h5py.h5d.ALLOC_TIME_EARLY:
            return False
        info = ds.id.get_chunk_info_by_coord((i,) + (0,) * (ds.ndim - 1))
        if info.byte_offset is None or info.size != row.size * ds.dtype.itemsize \
                or info.filter_mask:
            return False
        return self._put(info.byte_offset, row, ds.dtype)

    def write_whole(self, ds: h5py.Dataset, value: np.ndarray) -> bool:
        """Write `value` as the whole of the contiguous dataset `ds` (a checkpoint array,
        allocated at creation, `early_allocation`).  False, having written nothing, where
        `ds` has no aligned contiguous storage."""
        if ds.chunks is not None or value.shape != ds.shape or \
                ds.id.get_create_plist().get_alloc_time() != h5py.h5d.ALLOC_TIME_EARLY:
            return False
        offset = ds.id.get_offset()
        return offset is not None and self._put(offset, value, ds.dtype)

    def _put(self, offset: int, value: np.ndarray, dtype: np.dtype) -> bool:
        """Copy `value` as `dtype` into the aligned buffer and write it at file `offset`, in
        pieces of at most PIECE bytes (one buffer of that size serves any array: no new
        pages), aligned heads with O_DIRECT, an unaligned tail through HDF5's descriptor;
        False if the offset is unaligned or the first write is refused (then nothing was
        written).  A later refusal writes the rest through HDF5's descriptor."""
        if offset % ALIGNMENT or self._refused:
            return False
        flat = np.ascontiguousarray(value).reshape(-1)
        per = PIECE // dtype.itemsize
        fd = self.fd
        for a in range(0, flat.size, per):
            part = flat[a:a + per]
            n = part.size * dtype.itemsize
            buf = self._buffer(n)
            np.copyto(np.frombuffer(buf, dtype, part.size), part, casting="same_kind")
            head = n - n % ALIGNMENT if fd == self.fd else 0
            view = memoryview(buf)
            at = offset + a * dtype.itemsize
            if head:
                try:
                    os.pwrite(fd, view[:head], at)
                except OSError:   # refused (e.g. EINVAL: a larger logical block): HDF5 writes
                    self._refused = True
                    if a == 0:
                        return False
                    fd, head = self.f.id.get_vfd_handle(), 0
            if head < n:   # an unaligned tail (or all, after a refusal) through HDF5's descriptor
                os.pwrite(self.f.id.get_vfd_handle(), view[head:n], at + head)
        return True

    def _buffer(self, n: int) -> mmap.mmap:
        """A page-aligned buffer of at least n bytes, kept between rows (reused memory: no
        new pages)."""
        if self._buf is None or len(self._buf) < n:
            self._buf = mmap.mmap(-1, -(-n // ALIGNMENT) * ALIGNMENT)
        return self._buf
