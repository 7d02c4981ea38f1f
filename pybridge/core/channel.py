"""The driver's end of one channel: the owner of its OS objects.

A :class:`DriverChannel` creates, owns and alone unlinks the shared segment
(``multiprocessing.shared_memory``) and the two semaphores (``posix_ipc``).
The protocol over them — the header, the handshake, requests, waits and
replies — is the shim's C driver API (``pybridge/driver.h``), reached through
its port, ``_native.DriverPort``. This class knows nothing about processes:
whoever waits passes a ``check_peer`` callback, called at least every
``POLL_PERIOD`` seconds while blocked, that raises if the simulator is gone.
See docs/protocol.md.

Memory is reserved when the segment is created or grown, so that a small or
full ``/dev/shm`` is a :class:`SharedMemoryFull` error, never a SIGBUS.
CPython's resource tracker is kept out of it: ownership is explicit (the
creator unlinks), a simulator removes the channel of a driver that died, and
the tracker would otherwise report every such channel as "leaked".
"""

from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Callable, NoReturn, Optional

import numpy as np
import posix_ipc

from .. import _native
from ..errors import EvaluationFailed, ProtocolError, SharedMemoryFull, ShimError
from ..protocol import (
    HEADER_DTYPE,
    HEADER_SIZE,
    Capability,
    ReplyStatus,
    RequestKind,
    Status,
    new_channel_name,
    semaphore_names,
)

__all__ = ["DriverChannel", "Declaration", "POLL_PERIOD", "SHM_DIR"]

PeerCheck = Callable[[], None]

#: How often a blocked driver checks its simulator. A crash surfaces within
#: this (twice this in a forecast wait, which blocks a period until its spin
#: window and one more after it); waiting costs 1/POLL_PERIOD cheap wakeups a second.
POLL_PERIOD = 0.02
SHM_DIR = "/dev/shm"


def _open_segment(name: str, size: int = 0) -> shared_memory.SharedMemory:
    """Creates (size > 0) or opens a segment, without registering it with the resource tracker."""
    create = size > 0
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, create=create, size=size, track=False)
    segment = shared_memory.SharedMemory(name=name, create=create, size=size)
    # Before 3.13 every SharedMemory, created or merely opened, is registered (python/cpython#82300).
    resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
    return segment


def _out_of_space(what: str, needed: int, error: Exception) -> NoReturn:
    try:
        info = os.statvfs(SHM_DIR)
        free_mib, total_mib = info.f_bavail * info.f_frsize / 2**20, info.f_blocks * info.f_frsize / 2**20
        free = f"{free_mib:.1f} MiB free of {total_mib:.1f} MiB"
    except OSError:
        free = "an unknown amount free"
    raise SharedMemoryFull(
        f"{SHM_DIR} has no room for {what}: it needs {needed / 2**20:.1f} MiB, and {SHM_DIR} has {free}. "
        "Free space there (`pybridge clean` removes channels of drivers that died), use fewer parameters or "
        "residuals, or give the machine or container a larger /dev/shm (docker run --shm-size=2g)"
    ) from error


@dataclass(frozen=True)
class Declaration:
    """What the simulator said it computes (0 = "the driver decides")."""

    n_params: int
    n_residuals: int
    capabilities: Capability
    max_batch: int  # parameter vectors one request may carry; 0 or 1 = one
    simulator_pid: int


class DriverChannel:
    """The driver's end of one channel: the shared segment and its request and reply semaphores,
    created, owned and (alone) unlinked by the driver. The simulator's end is the shim's
    ``pybridge_channel`` (``_native.SimulatorChannel`` in Python)."""

    def __init__(self, name: Optional[str] = None, doorbell: Optional[str] = None) -> None:
        """``doorbell``: the name of a reply semaphore shared with other channels (see
        :mod:`pybridge.core.doorbell`), or None for the channel's own."""
        self.name = name or new_channel_name()
        request_name, reply_name = semaphore_names(self.name)
        self._request_sem: Optional[posix_ipc.Semaphore] = None
        self._reply_sem: Optional[posix_ipc.Semaphore] = None
        self.n_params = 0
        self.n_residuals = 0
        self.capabilities = Capability.NONE
        self.max_batch = 1
        self.params: np.ndarray = np.empty(0)
        self.gradient: Optional[np.ndarray] = None
        self.residuals: Optional[np.ndarray] = None
        #: The protocol's driver end (pybridge_driver); the hot path once READY.
        self.port: Optional[_native.DriverPort] = None
        #: The pid the simulator declared (0 before): recorded once, never re-read from shared memory.
        self.simulator_pid = 0
        # Created before the semaphores so that a failure half-way leaves
        # nothing behind: close() removes whatever exists.
        self._segment: Optional[shared_memory.SharedMemory] = _open_segment(self.name, HEADER_SIZE)
        try:
            try:
                os.posix_fallocate(self._segment._fd, 0, HEADER_SIZE)  # type: ignore[attr-defined]
                self._request_sem = posix_ipc.Semaphore(request_name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
                self._reply_sem = posix_ipc.Semaphore(reply_name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    _out_of_space("a new channel", HEADER_SIZE + 2 * 4096, error)
                raise
            # A doorbell belongs to whoever made it (a Doorbell): only opened here.
            self.port = _native.DriverPort(self.name, doorbell, POLL_PERIOD)  # writes the header
        except BaseException:
            self.close()
            raise

    # ---- handshake -------------------------------------------------------

    def wait_for_declaration(self, timeout: Optional[float], check_peer: PeerCheck) -> Declaration:
        """Blocks until a simulator has attached and declared itself.

        Raises :class:`TimeoutError` after ``timeout`` seconds (None = no limit).
        """
        port = self._port()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            period = POLL_PERIOD if deadline is None else min(POLL_PERIOD, max(deadline - time.monotonic(), 0.0))
            try:
                declared = port.wait_declaration(period)
            except ShimError as error:
                raise ProtocolError(str(error)) from None
            if declared is not None:
                break
            check_peer()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
        n_params, n_residuals, capabilities, max_batch, self.simulator_pid = declared
        return Declaration(n_params, n_residuals, Capability(capabilities), max_batch, self.simulator_pid)

    def accept(
        self,
        n_params: int,
        n_residuals: int,
        capabilities: Capability,
        spin_us: int = 0,
        max_batch: int = 1,
        forecast: bool = True,
    ) -> None:
        """Fixes the layout for this shape, grows the segment and lets requests flow.

        ``spin_us``: how long each side spins before blocking (0 = block at once). ``max_batch``:
        parameter vectors one request may carry (at most what the simulator declared).
        ``forecast``: the driver's waits for replies of milliseconds block until shortly before the
        forecast reply and spin through it (cpp/src/wait.hpp); False keeps plain spin-then-block.
        """
        layout = _native.layout(n_params, n_residuals, int(capabilities), max_batch)
        try:
            self._port().accept(n_params, n_residuals, int(capabilities), max_batch, spin_us, forecast)
        except ShimError as error:
            if error.code == Status.E_NO_SPACE:
                shape = f"{n_params} parameters" + (f", {n_residuals} residuals" if n_residuals else "")
                _out_of_space(f"a channel of {shape}", layout["segment_size"], error)
            raise
        # multiprocessing's mapping has the size of the object when it was
        # opened; after growing it, open it again for the zero-copy views.
        assert self._segment is not None
        old, self._segment = self._segment, _open_segment(self.name)
        old.close()
        self.n_params, self.n_residuals, self.capabilities = n_params, n_residuals, capabilities
        self.max_batch = max_batch
        # The views show the first vector of each region (all there is without batches).
        self.params = self._region(layout["params_offset"], n_params)
        if capabilities & Capability.GRADIENT:
            self.gradient = self._region(layout["gradient_offset"], n_params)
        if capabilities & Capability.RESIDUALS:
            self.residuals = self._region(layout["residuals_offset"], n_residuals)

    def reject(self, reason: str) -> None:
        """Tells the simulator why its declaration is refused; it gets PYBRIDGE_E_REJECTED."""
        self._port().reject(reason)

    # ---- requests ----------------------------------------------------------

    def request(self, params: np.ndarray, kind: RequestKind) -> int:
        """Copies ``params`` (a float64 vector, or :attr:`params` itself) into the segment and sends a
        request; returns its sequence number.

        Whether the vector is acceptable (its length, every value finite) is decided in one place, the
        C driver API, for the fast path and this one alike; here only the reason is put into words.
        """
        port = self._port()
        if not port.send(params, kind):
            if params.shape != (self.n_params,):  # refused before the C API looked at it
                raise ValueError(f"expected {self.n_params} parameters as a 1-D array, got shape {params.shape}")
            raise ValueError(port.last_error)  # the C API's verdict, naming the first bad value
        return port.seq

    def request_batch(self, rows: np.ndarray, kind: RequestKind) -> int:
        """As :meth:`request`, for the rows of ``rows`` (shape (count, n_params), 1 <= count <= max_batch)
        in one request."""
        port = self._port()
        if not port.start_batch(rows, kind):
            if rows.ndim != 2 or rows.shape[1] != self.n_params or not 1 <= rows.shape[0] <= self.max_batch:
                raise ValueError(
                    f"expected 1 to {self.max_batch} vectors of {self.n_params} parameters, got shape {rows.shape}"
                )
            raise ValueError(port.last_error)
        return port.seq

    def wait_reply(self, seq: int, timeout: Optional[float], check_peer: PeerCheck) -> float:
        """Waits for the reply to the latest request, ``seq``, and returns its cost.

        A reply to an older request is never taken for this one. Raises
        :class:`EvaluationFailed` if the simulator reported a failure and
        :class:`TimeoutError` once ``timeout`` seconds have passed since the request.
        """
        port = self._port()
        assert seq == port.seq, "only the latest request can be waited for"
        while not port.wait():
            check_peer()
            if timeout is not None and port.elapsed >= timeout:
                raise TimeoutError
        status, cost, error = port.reply()
        if status != ReplyStatus.OK:
            raise EvaluationFailed(f"the simulator reported a failed evaluation: {error}")
        return float(cost)

    # ---- lifecycle -----------------------------------------------------------

    def shutdown(self) -> None:
        """Asks the simulator to leave its loop (its wait returns PYBRIDGE_CLOSED)."""
        if self.port is not None:
            try:
                self.port.shutdown()
            except ShimError:
                pass  # truncated by a buggy simulator: nothing to tell it

    def close(self) -> None:
        """Shuts down and removes the segment and both semaphores. Idempotent."""
        self.shutdown()
        if self.port is not None:
            self.port.release()
            self.port = None
        self.params = np.empty(0)
        self.gradient = self.residuals = None
        if self._segment is not None:
            segment, self._segment = self._segment, None
            try:
                segment.close()
            except BufferError:
                pass  # a caller still holds a view; the mapping goes when it does
            # Not segment.unlink(): before 3.13 it also tells the resource
            # tracker, which never heard of this segment (see _open_segment).
            _native.unlink_segment(self.name)
        for attr in ("_request_sem", "_reply_sem"):
            sem = getattr(self, attr)
            if sem is not None:
                setattr(self, attr, None)
                try:
                    sem.unlink()
                except posix_ipc.ExistentialError:
                    pass
                sem.close()

    @property
    def closed(self) -> bool:
        return self._segment is None

    @property
    def claimed(self) -> bool:
        """Whether a simulator has claimed the channel (it may not have declared itself yet)."""
        return self.simulator_pid != 0 or (self._segment is not None and int(self._header["simulator_pid"]) != 0)

    @property
    def _header(self) -> np.ndarray:
        """The header as a 0-d structured array over the segment, for reading (and for tests that play
        a buggy driver); the protocol itself goes through the port."""
        assert self._segment is not None and self._segment.buf is not None
        return np.ndarray((), dtype=HEADER_DTYPE, buffer=self._segment.buf)

    # ---- internals -------------------------------------------------------------

    def _port(self) -> _native.DriverPort:
        if self.port is None:
            raise ProtocolError(f"channel {self.name!r} is closed")
        return self.port

    def _region(self, offset: int, count: int) -> np.ndarray:
        assert self._segment is not None and self._segment.buf is not None
        return np.ndarray((count,), dtype=np.float64, buffer=self._segment.buf, offset=offset)
