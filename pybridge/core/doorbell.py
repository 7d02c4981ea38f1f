"""A reply semaphore that several channels share, so that one thread can wait on all of them.

Every simulator posts the semaphore its channel's header names when it
replies to a driver that sleeps. Channels created with the same doorbell all
post that one, and :func:`wait_any` blocks on it once for all of them (with
the GIL released): the many-channel wait a pool of simulators needs. Several
threads may call it at once, each for channels of its own (the starts of a
multi-start run): the C library lets one of them block on the doorbell and
wake the others as their replies come, so none takes another's post. The
threads must be of one process: a doorbell is never shared across processes.

The doorbell's name records its owner — ``pybridge-bell-<pid>-<random>``
(:func:`pybridge.protocol.name_owner`) — so that ``pybridge clean`` removes
it once that process is gone, and never while it lives. Only its owner unlinks it.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import posix_ipc

from .. import _native
from ..protocol import CHANNEL_PREFIX, DOORBELL_KIND
from .channel import POLL_PERIOD, DriverChannel

__all__ = ["Doorbell", "wait_any", "DOORBELL_PREFIX"]

DOORBELL_PREFIX = CHANNEL_PREFIX + DOORBELL_KIND


class Doorbell:
    """A reply semaphore for several channels (pass ``doorbell=`` to :class:`DriverChannel`)."""

    def __init__(self) -> None:
        self.name = _native.new_name(DOORBELL_KIND)
        self._owner = os.getpid()
        self._sem: Optional[posix_ipc.Semaphore] = posix_ipc.Semaphore(
            "/" + self.name, posix_ipc.O_CREX, mode=0o600, initial_value=0
        )

    def close(self) -> None:
        """Removes the semaphore (its owner only; a fork() child leaves it alone). Idempotent."""
        sem, self._sem = self._sem, None
        if sem is None:
            return
        if os.getpid() == self._owner:
            try:
                sem.unlink()
            except posix_ipc.ExistentialError:
                pass
        sem.close()

    def __enter__(self) -> "Doorbell":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_any(channels: Sequence[DriverChannel], timeout: float = POLL_PERIOD) -> Optional[int]:
    """Waits up to ``timeout`` seconds until any of ``channels`` (which share one doorbell) has the reply
    to its latest request; returns the index of the first such channel, or None. The GIL is released
    while it blocks. Read the reply with that channel's ``wait_reply`` (it returns at once)."""
    ports = []
    for channel in channels:
        if channel.port is None:
            raise ValueError(f"wait_any needs open channels; {channel.name!r} is closed")
        ports.append(channel.port)
    return _native.wait_any(ports, timeout)
