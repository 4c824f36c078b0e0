"""DIR/scan.lock: one scan at a time per directory (host:pid; a dead owner's lock is taken over)."""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError


@contextlib.contextmanager
def dir_lock(root: Path) -> Iterator[None]:
    """Hold DIR/scan.lock (host:pid) so two scans never write one directory at once."""
    lock, me = root / "scan.lock", f"{socket.gethostname()}:{os.getpid()}"
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
