"""One writer per output: an exclusive lock that a command holds while it writes an output and its partial files.

The lock is ``fcntl.flock`` on a hidden file beside the output (:func:`lock_path`); the kernel releases it when
its process ends, however it ends, so a lock left by a killed run never blocks a later one. The file holds the
holder's PID and host name, for the message a second writer gets, and is removed when the lock is released.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iqp_plugin.errors import InvalidInputError


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``: ``.<name>.lock`` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _holder(fd: int) -> str:
    """' (pid N on HOST)' from a lock file another process holds; '' if it has not written it within 1 s."""
    for _ in range(100):  # the holder writes it just after taking the lock
        try:
            pid, host = os.pread(fd, 300, 0).decode(errors="replace").split()[:2]
        except ValueError:
            time.sleep(0.01)
            continue
        return f" (pid {pid} on {host})"
    return ""


def _acquire(path: Path) -> tuple[int | None, str]:
    """(descriptor holding the lock, '') or (None, who holds it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            return None, holder
        except OSError as err:  # a file system without locks: run unprotected rather than not at all
            os.close(fd)
            warnings.warn(f"cannot lock {path} ({err}): a second run writing the same output at the same time "
                          "would not be stopped", stacklevel=3)
            return -1, ""
        try:  # the holder may have released and removed the file between our open and our lock: lock the new one
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd, ""
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def exclusive(output: str | Path, what: str, fix: str) -> Iterator[None]:
    """Hold the lock of ``output`` (see :func:`lock_path`) for the block; when another process holds it, an
    InvalidInputError naming ``what`` (e.g. ``-o scores.csv``), the holder and ``fix``."""
    path = lock_path(output)
    fd, holder = _acquire(path)
    if fd is None:
        raise InvalidInputError(f"{what} is being written by another run{holder}: {fix}")
    if fd < 0:
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a process waiting on this file then retries a new one
        os.close(fd)
