"""Finding and removing channels left behind by drivers that died.

A driver that exits normally removes its channel; one killed with SIGKILL
cannot. Its simulator removes the channel when it notices (within about
0.1 s); this module catches whatever is still left, for example when the
simulator was killed too. A channel is stale only when its driver process is
gone, so a live channel is never touched.

``/dev/shm`` is shared by every user of a node, sticky, and may hold
anything: other users' entries, directories, FIFOs (opening one blocks for
ever), symlinks. So an entry is considered only if ``lstat`` says it is a
regular file owned by the current user, it is opened with ``O_NONBLOCK |
O_NOFOLLOW``, and no error about any one entry stops the scan. Root is no
exception: it judges only its own entries.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from .. import _native
from ..protocol import CHANNEL_PREFIX, HEADER_DTYPE, HEADER_SIZE, MAGIC, name_owner, semaphore_names
from .doorbell import DOORBELL_PREFIX

__all__ = ["StaleEntry", "find_stale", "clean", "clean_once"]

SHM_DIR = Path("/dev/shm")
#: A segment younger than this whose header is not written yet may be being created.
CREATION_GRACE = 5.0

log = logging.getLogger("pybridge")

_cleaned = False
_cleaned_lock = threading.Lock()


@dataclass(frozen=True)
class StaleEntry:
    path: Path
    reason: str


def find_stale() -> List[StaleEntry]:
    """Every segment and semaphore of ours (this user's) in /dev/shm whose driver is gone."""
    try:
        names = set(os.listdir(SHM_DIR))
    except OSError:
        return []
    mine = {name for name in names if name.startswith((CHANNEL_PREFIX, "sem." + CHANNEL_PREFIX)) and _owned(name)}
    stale: List[StaleEntry] = []
    live = set()
    for name in sorted(n for n in mine if n.startswith(CHANNEL_PREFIX)):
        reason = _why_stale(SHM_DIR / name)
        if reason is None:
            live.add(name)
            continue
        stale.append(StaleEntry(SHM_DIR / name, reason))
    for name in sorted(n for n in mine if n.startswith("sem.")):
        owner_pid = name_owner(name) if name.startswith("sem." + DOORBELL_PREFIX) else None
        if owner_pid is not None:  # a doorbell: stale once the process named in it is gone
            if not _native.process_alive(owner_pid):
                stale.append(StaleEntry(SHM_DIR / name, f"doorbell of a dead driver (pid {owner_pid})"))
            continue
        channel = name[len("sem.") :].rsplit("-", 1)[0]
        if channel in live:
            continue
        # Created after its segment and removed after it: a semaphore without a
        # live segment belongs to a dead driver (or to one closing right now).
        owner = "a dead driver" if channel in names else "a channel whose segment is gone"
        if f"/{name[len('sem.'):]}" in semaphore_names(channel):
            stale.append(StaleEntry(SHM_DIR / name, f"semaphore of {owner}"))
    return stale


def clean(*, dry_run: bool = False) -> List[StaleEntry]:
    """Removes (or with ``dry_run``, only lists) what :func:`find_stale` finds.

    >>> from pybridge.core.cleanup import clean
    >>> [entry.reason for entry in clean(dry_run=True)]  # nothing stale on a clean machine
    []
    """
    stale = find_stale()
    if not dry_run:
        for entry in stale:
            try:
                entry.path.unlink()
                log.info("removed stale %s (%s)", entry.path, entry.reason)
            except FileNotFoundError:
                pass  # its simulator or another cleaner got there first
            except OSError as error:
                log.warning("could not remove stale %s: %s", entry.path, error)
    return stale


def clean_once() -> None:
    """:func:`clean`, the first time it is called in this process; never raises.

    Every ``Simulator()`` calls it: a pool of 64 simulators scans ``/dev/shm``
    once, and nothing found there can stop a simulator from starting.
    """
    global _cleaned
    with _cleaned_lock:
        if _cleaned:
            return
        _cleaned = True
    try:
        clean()
    except Exception as error:  # pragma: no cover - find_stale already skips what it cannot judge
        log.warning("pybridge could not clean stale channels in %s: %s", SHM_DIR, error)


def _owned(name: str) -> bool:
    """A regular file (not a link, directory or FIFO) that belongs to the current user."""
    try:
        info = os.lstat(SHM_DIR / name)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _why_stale(path: Path) -> Optional[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # gone, replaced by a link, or not readable: not ours to judge
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None  # swapped between lstat and open
        raw = os.read(fd, HEADER_SIZE)
    except OSError:
        return None
    finally:
        os.close(fd)
    age = time.time() - info.st_mtime
    if len(raw) < HEADER_SIZE or int.from_bytes(raw[:8], "little") != MAGIC:
        return None if age < CREATION_GRACE else "not a valid pybridge segment"
    pid = int(np.frombuffer(raw, dtype=HEADER_DTYPE, count=1)[0]["driver_pid"])
    if _native.process_alive(pid):
        return None
    return f"its driver (pid {pid}) is gone"
