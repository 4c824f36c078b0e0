"""Recovering a run file whose SWMR writer was killed, without HDF5's `h5clear` tool.

A file written in SWMR mode carries "file consistency flags" in its superblock (version 2
or 3) while the writer has it open; a writer killed with SIGKILL leaves them set, and HDF5
then refuses to open the file for writing ("file is already open for write").  SWMR's
ordered metadata flushes keep the file itself consistent, so clearing the flags -- what
`h5clear -s -i` does -- is all that recovery needs.  The superblock layout (HDF5 file format
spec, "Version 2 and 3 Superblock"), at byte 0 since run files have no user block:

    0  signature (8)  8 version (1)  9 size of offsets (1)  10 size of lengths (1)
    11 file consistency flags (1)  12 base address (8)  20 superblock extension address (8)
    28 end-of-file address (8)  36 root group object header address (8)  44 checksum (4)

The checksum is Bob Jenkins' lookup3 `hashlittle` of bytes 0..43 with initial value 0.
Like `h5clear -i`, the end-of-file address is raised to the file's size, so that space the
killed writer used after its last superblock write is never handed out again.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import time

from ..errors import RunFileError

SIGNATURE = b"\x89HDF\r\n\x1a\n"
FLAGS_AT, EOA_AT, CHECKSUM_AT = 11, 28, 44
_M = 0xFFFFFFFF

# A writer on another host is taken for dead when the file has not changed for this long
# (live writers flush at least every `flush_seconds`, 1 s by default).
STALE_SECONDS = 120.0


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Jenkins lookup3 `hashlittle` (HDF5's metadata checksum) of `data`, as an int < 2^32."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M
    i = 0
    while n > 12:
        x, y, z = struct.unpack_from("<III", data, i)
        a, b, c = (a + x) & _M, (b + y) & _M, (c + z) & _M
        a = ((a - c) & _M) ^ _rot(c, 4); c = (c + b) & _M
        b = ((b - a) & _M) ^ _rot(a, 6); a = (a + c) & _M
        c = ((c - b) & _M) ^ _rot(b, 8); b = (b + a) & _M
        a = ((a - c) & _M) ^ _rot(c, 16); c = (c + b) & _M
        b = ((b - a) & _M) ^ _rot(a, 19); a = (a + c) & _M
        c = ((c - b) & _M) ^ _rot(b, 4); b = (b + a) & _M
        n, i = n - 12, i + 12
    if n == 0:
        return c
    x, y, z = struct.unpack("<III", data[i:] + bytes(12 - n))
    a, b, c = (a + x) & _M, (b + y) & _M, (c + z) & _M
    c = ((c ^ b) - _rot(b, 14)) & _M
    a = ((a ^ c) - _rot(c, 11)) & _M
    b = ((b ^ a) - _rot(a, 25)) & _M
    c = ((c ^ b) - _rot(b, 16)) & _M
    a = ((a ^ c) - _rot(c, 4)) & _M
    b = ((b ^ a) - _rot(a, 14)) & _M
    c = ((c ^ b) - _rot(b, 24)) & _M
    return c


def _superblock(path: str) -> bytearray:
    with open(path, "rb") as fh:
        sb = bytearray(fh.read(48))
    if len(sb) < 48 or sb[:8] != SIGNATURE or sb[8] not in (2, 3) or sb[9] != 8:
        raise RunFileError(f"{path}: HDF5 superblock is not version 2/3 with 8-byte offsets at "
                           "byte 0; cannot clear its SWMR flags (use HDF5's `h5clear -s -i`)")
    if lookup3(bytes(sb[:CHECKSUM_AT])) != struct.unpack_from("<I", sb, CHECKSUM_AT)[0]:
        raise RunFileError(f"{path}: HDF5 superblock checksum does not match; the file is damaged")
    return sb


def flags_set(path: str) -> bool:
    """Whether the superblock's file consistency flags say a writer has the file open."""
    try:
        return _superblock(path)[FLAGS_AT] != 0
    except RunFileError:
        return False


def writer_info() -> str:
    """JSON naming this process (stored in a run file before it enters SWMR mode)."""
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid()})


def writer_alive(path: str, info: str | None) -> str | None:
    """A description of the process that may still be writing `path`, or None if it is gone.

    `info` is the run file's `writer` attribute (see `writer_info`).  On this host the
    process id decides; on another host a file unchanged for STALE_SECONDS counts as dead.
    """
    w = json.loads(info) if info else {}
    if w.get("host") == socket.gethostname():
        pid = int(w.get("pid", -1))
        if pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return f"process {pid} on this host"
    age = time.time() - os.path.getmtime(path)
    if age > STALE_SECONDS:
        return None
    return (f"a process on host {w.get('host', '?')} (the file changed {age:.0f} s ago; it is "
            f"taken for dead after {STALE_SECONDS:.0f} s without changes)")


EOA_V0_AT = 40   # the end-of-file address in a version 0 superblock (8-byte offsets)


def raise_end_of_file(path: str) -> bool:
    """Raise the superblock's end-of-file address to the file's size where it is lower (what
    `h5clear -i` does), in a version 0 superblock (plain run files) or a version 2/3 one (its
    checksum rewritten).  A writer killed in the middle of a flush can leave objects past the
    address its last superblock write recorded: HDF5 then reads them as "addr overflow", and a
    file opened for writing hands that space out again, over them.  Returns whether it raised
    it; a file that is not HDF5 with 8-byte offsets is left alone."""
    with open(path, "rb") as fh:
        sb = bytearray(fh.read(48))
    if len(sb) < 48 or sb[:8] != SIGNATURE:
        return False
    if sb[8] == 0 and sb[13] == 8:
        at = EOA_V0_AT
    elif sb[8] in (2, 3) and sb[9] == 8:
        sb, at = _superblock(path), EOA_AT
    else:
        return False
    size = os.path.getsize(path)
    if struct.unpack_from("<Q", sb, at)[0] >= size:
        return False
    struct.pack_into("<Q", sb, at, size)
    if at == EOA_AT:
        struct.pack_into("<I", sb, CHECKSUM_AT, lookup3(bytes(sb[:CHECKSUM_AT])))
    with open(path, "r+b") as fh:
        fh.write(sb)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def clear_flags(path: str) -> None:
    """Clear the consistency flags of a killed SWMR writer and raise the end-of-file address
    to the file's size (what `h5clear -s -i` does); rewrites the superblock's checksum."""
    sb = _superblock(path)
    eoa = struct.unpack_from("<Q", sb, EOA_AT)[0]
    sb[FLAGS_AT] = 0
    struct.pack_into("<Q", sb, EOA_AT, max(eoa, os.path.getsize(path)))
    struct.pack_into("<I", sb, CHECKSUM_AT, lookup3(bytes(sb[:CHECKSUM_AT])))
    with open(path, "r+b") as fh:
        fh.write(sb)
        fh.flush()
        os.fsync(fh.fileno())
