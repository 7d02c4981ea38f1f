"""Finding and removing channels left behind by drivers that died.

A driver that exits normally removes its channel; one killed with SIGKILL
cannot. Its simulator removes the channel when it notices (within about
0.1 s), and CPython's resource tracker removes the segment; this module
catches whatever is still left, for example when the simulator was killed
too. A channel is stale only when its driver process is gone, so a live
channel is never touched.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np

from . import _native
from .protocol import CHANNEL_PREFIX, HEADER_DTYPE, HEADER_SIZE, MAGIC, semaphore_names

__all__ = ["StaleEntry", "find_stale", "clean"]

SHM_DIR = Path("/dev/shm")
#: A segment younger than this whose header is not written yet may be being created.
CREATION_GRACE = 5.0

log = logging.getLogger("pybridge")


@dataclass(frozen=True)
class StaleEntry:
    path: Path
    reason: str


def find_stale() -> List[StaleEntry]:
    """Every segment and semaphore of ours in /dev/shm whose driver is gone."""
    try:
        names = set(os.listdir(SHM_DIR))
    except OSError:
        return []
    stale: List[StaleEntry] = []
    live = set()
    for name in sorted(n for n in names if n.startswith(CHANNEL_PREFIX)):
        reason = _why_stale(SHM_DIR / name)
        if reason is None:
            live.add(name)
            continue
        stale.append(StaleEntry(SHM_DIR / name, reason))
    for name in sorted(n for n in names if n.startswith("sem." + CHANNEL_PREFIX)):
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

    >>> from pybridge.cleanup import clean
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
    return stale


def _why_stale(path: Path) -> str | None:
    try:
        with open(path, "rb") as segment:
            raw = segment.read(HEADER_SIZE)
            age = time.time() - os.fstat(segment.fileno()).st_mtime
    except PermissionError:
        return None  # another user's: not ours to judge
    except FileNotFoundError:
        return None
    if len(raw) < HEADER_SIZE or int.from_bytes(raw[:8], "little") != MAGIC:
        return None if age < CREATION_GRACE else "not a valid pybridge segment"
    pid = int(np.frombuffer(raw, dtype=HEADER_DTYPE, count=1)[0]["driver_pid"])
    if _native.process_alive(pid):
        return None
    return f"its driver (pid {pid}) is gone"
