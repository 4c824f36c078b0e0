"""DIR/scan.lock: one scan at a time per directory (a flock; the file names its holder, host:pid)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError


@contextlib.contextmanager
def dir_lock(root: Path) -> Iterator[None]:
    """Hold DIR/scan.lock so two scans never write one directory at once: an exclusive
    `flock` on the file, which holds this process's host:pid for the others' message.  The
    kernel releases the lock of a process that dies, so a killed scan's lock is free without
    anyone judging its owner dead (that judgement, a check and then a removal, let two
    reruns starting together both take it over).  Where the file system has no locks
    (ENOLCK), the file's exclusive creation stands in (`_create_lock`)."""
    lock, me = root / "scan.lock", f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 256).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"another scan ({owner}) is running in {root}; wait for it to "
                              "end") from None
        except OSError:                         # no locks on this file system
            os.close(fd)
            with _create_lock(lock, me, root):
                yield
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:               # released and removed meanwhile: again
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise ConfigError(f"could not take the lock {lock}; delete it if no scan is running")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, me.encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)                     # still ours: removed before it is released
        os.close(fd)


@contextlib.contextmanager
def _create_lock(lock: Path, me: str, root: Path) -> Iterator[None]:
    """DIR/scan.lock created exclusively (host:pid), a dead owner's on this host taken over:
    the lock where the file system has no `flock`."""
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = lock.read_text().strip()
            except FileNotFoundError:
                continue
            host, _, pid = owner.rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock)
                continue
            raise ConfigError(f"another scan ({owner}) is running in {root}; wait for it to end, "
                              f"or delete {lock} if that process is gone") from None
        os.write(fd, me.encode())
        os.close(fd)
        break
    else:
        raise ConfigError(f"could not take the lock {lock}; delete it if no scan is running")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
