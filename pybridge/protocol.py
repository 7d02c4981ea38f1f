"""The Python view of ``cpp/include/pybridge/protocol.h``.

The header's field offsets and types come from the compiled module, which
takes them from the C header; the small enums below are mirrored by hand
for readability and typing, and ``tests/protocol`` checks them against the
C definitions.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

import numpy as np

from . import _native

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "HEADER_SIZE",
    "HEADER_DTYPE",
    "CHANNEL_ENV",
    "CHANNEL_PREFIX",
    "State",
    "Capability",
    "RequestKind",
    "ReplyStatus",
    "Status",
    "new_channel_name",
    "name_owner",
    "DOORBELL_KIND",
    "semaphore_names",
]

MAGIC: int = _native.MAGIC
PROTOCOL_VERSION: int = _native.PROTOCOL_VERSION
HEADER_SIZE: int = _native.HEADER_SIZE
ERROR_TEXT_SIZE: int = _native.ERROR_TEXT_SIZE
CHANNEL_ENV: str = _native.CHANNEL_ENV
#: Every name we create starts with this, so `pybridge clean` can find ours.
CHANNEL_PREFIX: str = _native.NAME_PREFIX
#: What follows the prefix in a doorbell's name (:mod:`pybridge.core.doorbell`).
DOORBELL_KIND = "bell-"

#: The header as a numpy structured type, built from the C struct's offsets.
_HEADER_FIELDS: Any = {  # numpy types the dict form as a TypedDict: built at run time here
    "names": [name for name, _, _ in _native.header_fields()],
    "offsets": [offset for _, offset, _ in _native.header_fields()],
    "formats": [fmt for _, _, fmt in _native.header_fields()],
    "itemsize": HEADER_SIZE,
}
HEADER_DTYPE = np.dtype(_HEADER_FIELDS)


class State(enum.IntEnum):
    """Channel lifecycle (``pybridge_header.state``)."""

    CREATED = 1
    DECLARED = 2
    READY = 3
    REJECTED = 4
    CLOSED = 5


class Capability(enum.IntFlag):
    """What a simulator computes besides the cost."""

    NONE = 0
    GRADIENT = 1
    RESIDUALS = 2


class RequestKind(enum.IntEnum):
    COST = 1
    GRADIENT = 2
    RESIDUALS = 3


class ReplyStatus(enum.IntEnum):
    OK = 0
    FAILED = 1


class Status(enum.IntEnum):
    """The shim's status codes (``enum pybridge_status``); :attr:`pybridge.ShimError.code` is one."""

    OK = 0
    CLOSED = 1
    TIMEOUT = 2
    E_INVALID_ARGUMENT = -1
    E_NO_CHANNEL = -2
    E_SYSTEM = -3
    E_PROTOCOL = -4
    E_REJECTED = -5
    E_DRIVER_GONE = -6
    E_TAKEN = -7
    E_NO_SPACE = -8


def new_channel_name() -> str:
    """A fresh channel name: ``pybridge-<pid>-<24 hex digits>``. The pid says which process made it
    (whose it is, and whether that process still lives); the 96 random bits make it unguessable and
    collision-free. The rule is the C library's (``PYBRIDGE_NAME_PREFIX`` in protocol.h)."""
    return _native.new_name("")


def name_owner(name: str) -> Optional[int]:
    """The pid of the process that made ``name`` — a channel, one of its semaphores (``sem.`` and a
    suffix included) or a doorbell — or None for a name not made so (another program's, or older)."""
    if name.startswith("sem."):
        name = name[len("sem.") :]
    if not name.startswith(CHANNEL_PREFIX):
        return None
    rest = name[len(CHANNEL_PREFIX) :]
    if rest.startswith(DOORBELL_KIND):
        rest = rest[len(DOORBELL_KIND) :]
    # A pid has at most 7 digits on Linux (PID_MAX_LIMIT); allowing 10, the 24 hex digits of a name made
    # before names recorded their maker are still never taken for one.
    pid, _, token = rest.partition("-")
    return int(pid) if pid.isdigit() and len(pid) <= 10 and token else None


def semaphore_names(channel: str) -> tuple[str, str]:
    """The (request, reply) semaphore names of a channel, as posix_ipc wants them."""
    return (
        "/" + channel + _native.REQUEST_SEM_SUFFIX,
        "/" + channel + _native.REPLY_SEM_SUFFIX,
    )
