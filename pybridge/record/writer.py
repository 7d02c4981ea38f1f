"""Who writes a journal: one calibration at a time, and a reader can tell whether it still lives.

While a calibration has a journal open it holds a write lock on the journal's first byte. The lock is
an open-file-description lock (``F_OFD_SETLK``, Linux ≥ 3.15), so the kernel drops it when the
process ends, however it ends (``kill -9`` included). A second calibration on the same file is
refused. A reader (``pybridge monitor``, ``history``) *tests* the lock (``F_OFD_GETLK``) and never
takes it, so it can tell a run still going from one whose process is gone, and never stands in a
writer's way.

Why this lock and not another:

- SQLite's own locks do not say it: a WAL writer holds nothing between its transactions.
- Classic POSIX locks (``F_SETLK``) belong to the process and are all dropped when *any* descriptor of
  the file is closed in it, SQLite's own included.
- ``flock`` is emulated with a whole-file byte-range lock on NFS, where it would block SQLite's
  readers.
- An OFD lock on byte 0 has neither problem: SQLite locks bytes at 1 GiB (its lock-byte page) and in
  the ``-shm`` file, never byte 0.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path
from typing import Optional

from ..errors import JournalError

__all__ = ["hold", "release", "is_held"]

# struct flock on 64-bit Linux: l_type, l_whence (shorts), l_start, l_len (off_t), l_pid (pid_t, 0 for
# OFD locks), padded to 32 bytes.
_FLOCK = "hhqqi4x"
# Errors that mean "this file system cannot lock", not "someone holds it": then nobody can tell.
_CANNOT_LOCK = (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _request(kind: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 1, 0)


def hold(path: Path) -> int:
    """Opens ``path`` (created if missing) and takes its writer lock; returns the descriptor, which
    holds the lock until :func:`release`. Raises :class:`JournalError` if another calibration holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise JournalError(f"cannot open the journal {path} for writing: {error.strerror}") from None
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _request(fcntl.F_WRLCK))
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise JournalError(
                f"the journal {path} is being written by another calibration that is still running (a "
                "second copy of this job?); wait for it to end or stop it (StopFile, OnSignal, Ctrl-C), or "
                "choose another path"
            ) from None
        if error.errno not in _CANNOT_LOCK:
            os.close(fd)
            raise
        # A file system without locks: the journal works, but a second writer cannot be refused and a
        # reader cannot tell a live run from a dead one (it then shows both as running).
    return fd


def release(fd: int) -> None:
    os.close(fd)  # the last descriptor of the open file description: the kernel drops the lock


def is_held(path: Path) -> Optional[bool]:
    """Whether a calibration holds the writer lock of ``path`` now (None: this file system cannot tell)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _request(fcntl.F_RDLCK))
    except OSError as error:
        if error.errno in _CANNOT_LOCK:
            return None
        raise
    finally:
        os.close(fd)
    return struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK
