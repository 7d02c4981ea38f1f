"""The driver's end of one channel: the shared segment and its two semaphores.

A :class:`Channel` creates and owns (and alone unlinks) the POSIX objects,
performs the driver's half of the handshake and moves requests and replies.
It knows nothing about processes: whoever waits passes a ``check_peer``
callback, called at least every ``POLL_PERIOD`` seconds while blocked,
that raises if the simulator is gone. See docs/protocol.md.

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
from ..errors import EvaluationFailed, ProtocolError, SharedMemoryFull
from ..protocol import (
    ERROR_TEXT_SIZE,
    HEADER_DTYPE,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    Capability,
    ReplyStatus,
    RequestKind,
    State,
    new_channel_name,
    semaphore_names,
)

__all__ = ["DriverChannel", "Declaration", "POLL_PERIOD", "SHM_DIR"]

PeerCheck = Callable[[], None]

#: How often a blocked driver checks its simulator. A crash surfaces within
#: this; waiting costs 1/POLL_PERIOD cheap wakeups a second.
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


def _refusal(params: np.ndarray, n_params: int) -> str:
    """Why the port refused a parameter vector, for the ValueError."""
    if params.shape != (n_params,):
        return f"expected {n_params} parameters as a 1-D array, got shape {params.shape}"
    bad = np.flatnonzero(~np.isfinite(params))
    if bad.size:
        return f"parameters must be finite; x[{bad[0]}] = {params[bad[0]]} ({bad.size} non-finite)"
    return f"the parameters were refused (dtype {params.dtype}, flags {params.flags})"  # pragma: no cover


def _out_of_space(what: str, needed: int, error: OSError) -> NoReturn:
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
    simulator_pid: int


class DriverChannel:
    """The driver's end of one channel: the shared segment and its request and reply semaphores,
    created, owned and (alone) unlinked by the driver. The simulator's end is the shim's
    ``pybridge_channel`` (``_native.SimulatorChannel`` in Python)."""

    # The header as a 0-d structured array over the segment; None only once closed.
    _header: np.ndarray

    def __init__(self, name: Optional[str] = None) -> None:
        self.name = name or new_channel_name()
        request_name, reply_name = semaphore_names(self.name)
        self._request_sem: Optional[posix_ipc.Semaphore] = None
        self._reply_sem: Optional[posix_ipc.Semaphore] = None
        self._header = None  # type: ignore[assignment]
        self.n_params = 0
        self.n_residuals = 0
        self.capabilities = Capability.NONE
        self.params: np.ndarray = np.empty(0)
        self.gradient: Optional[np.ndarray] = None
        self.residuals: Optional[np.ndarray] = None
        #: The hot path, once the channel is READY (see _native.DriverPort).
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
        except BaseException:
            self.close()
            raise
        self._map_header()
        header = self._header
        header["magic"] = MAGIC
        header["version"] = PROTOCOL_VERSION
        header["header_size"] = HEADER_SIZE
        header["segment_size"] = HEADER_SIZE
        header["driver_pid"] = os.getpid()
        header["reply_semaphore"] = reply_name[1:].encode()
        header["state"] = State.CREATED

    # ---- handshake -------------------------------------------------------

    def wait_for_declaration(self, timeout: Optional[float], check_peer: PeerCheck) -> Declaration:
        """Blocks until a simulator has attached and declared itself.

        Raises :class:`TimeoutError` after ``timeout`` seconds (None = no limit).
        """
        self._wait(self._reply_sem, lambda: self._state() == State.DECLARED, timeout, check_peer)
        # The simulator has written into the header: trust nothing before checking it.
        reason = _native.validate_header(self._segment_buffer())
        header = self._header
        if reason is None and int(header["declared_capabilities"]) & ~int(Capability.GRADIENT | Capability.RESIDUALS):
            reason = f"unknown capability flags 0x{int(header['declared_capabilities']):x}"
        if reason is not None:
            self.reject(reason)
            raise ProtocolError(f"the simulator corrupted channel {self.name!r} during the handshake: {reason}")
        self.simulator_pid = int(header["simulator_pid"])
        return Declaration(
            n_params=int(header["declared_n_params"]),
            n_residuals=int(header["declared_n_residuals"]),
            capabilities=Capability(int(header["declared_capabilities"])),
            simulator_pid=self.simulator_pid,
        )

    def accept(self, n_params: int, n_residuals: int, capabilities: Capability, spin_us: int = 0) -> None:
        """Fixes the layout for this shape, grows the segment and lets requests flow.

        ``spin_us``: how long each side spins before blocking (0 = block at once).
        """
        layout = _native.layout(n_params, n_residuals, int(capabilities))
        try:
            _native.resize_segment(self.name, layout["segment_size"])
        except OSError as error:
            if error.errno == errno.ENOSPC:
                shape = f"{n_params} parameters" + (f", {n_residuals} residuals" if n_residuals else "")
                self.reject(f"the driver's /dev/shm has no room for {shape}")
                _out_of_space(f"a channel of {shape}", layout["segment_size"], error)
            raise
        self._remap()
        header = self._header
        header["n_params"] = n_params
        header["n_residuals"] = n_residuals
        header["capabilities"] = int(capabilities)
        header["params_offset"] = layout["params_offset"]
        header["gradient_offset"] = layout["gradient_offset"]
        header["residuals_offset"] = layout["residuals_offset"]
        header["segment_size"] = layout["segment_size"]
        header["spin_us"] = spin_us
        reason = _native.validate_header(self._segment_buffer())
        if reason is not None:  # only a bug in pybridge itself gets here
            raise ProtocolError(f"pybridge wrote an invalid header: {reason}")
        self.n_params, self.n_residuals, self.capabilities = n_params, n_residuals, capabilities
        self.params = self._region(layout["params_offset"], n_params)
        if capabilities & Capability.GRADIENT:
            self.gradient = self._region(layout["gradient_offset"], n_params)
        if capabilities & Capability.RESIDUALS:
            self.residuals = self._region(layout["residuals_offset"], n_residuals)
        self._set_state(State.READY)
        request_name, reply_name = semaphore_names(self.name)
        self.port = _native.DriverPort(self._segment_buffer(), request_name[1:], reply_name[1:], spin_us, POLL_PERIOD)

    def reject(self, reason: str) -> None:
        """Tells the simulator why its declaration is refused; it gets PYBRIDGE_E_REJECTED."""
        self._write_error(reason)
        self._set_state(State.REJECTED)

    # ---- requests ----------------------------------------------------------

    def request(self, params: np.ndarray, kind: RequestKind) -> int:
        """Copies ``params`` (a float64 vector, or :attr:`params` itself) into the segment and sends a
        request; returns its sequence number.

        Whether the vector is acceptable (its length, every value finite) is decided in one place, the
        native port, for the fast path and this one alike; here only the reason is put into words.
        """
        assert self.port is not None, "accept() first"
        if not self.port.send(params, kind):
            raise ValueError(_refusal(params, self.n_params))
        return self.port.seq

    def wait_reply(self, seq: int, timeout: Optional[float], check_peer: PeerCheck) -> float:
        """Waits for the reply to the latest request, ``seq``, and returns its cost.

        A reply to an older request is never taken for this one. Raises
        :class:`EvaluationFailed` if the simulator reported a failure and
        :class:`TimeoutError` once ``timeout`` seconds have passed since the request.
        """
        port = self.port
        assert port is not None and seq == port.seq, "only the latest request can be waited for"
        while not port.wait():
            check_peer()
            if timeout is not None and port.elapsed >= timeout:
                raise TimeoutError
        header = self._header
        if int(header["reply_status"]) != ReplyStatus.OK:
            raise EvaluationFailed(f"the simulator reported a failed evaluation: {self.error_text()}")
        return float(header["cost"])

    # ---- lifecycle -----------------------------------------------------------

    def shutdown(self) -> None:
        """Asks the simulator to leave its loop (its wait returns PYBRIDGE_CLOSED)."""
        if self._segment is not None and self._request_sem is not None and self._header is not None:
            # A buggy peer may have truncated the segment: writing past its end would be SIGBUS.
            if os.fstat(self._segment._fd).st_size >= HEADER_SIZE:  # type: ignore[attr-defined]
                self._set_state(State.CLOSED)

    def close(self) -> None:
        """Shuts down and removes the segment and both semaphores. Idempotent."""
        self.shutdown()
        if self.port is not None:
            self.port.release()  # drops its view of the segment, so that it can be unmapped
            self.port = None
        self.params = np.empty(0)
        self.gradient = self.residuals = None
        self._header = None  # type: ignore[assignment]
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
        return self.simulator_pid != 0 or (self._header is not None and int(self._header["simulator_pid"]) != 0)

    # ---- internals -------------------------------------------------------------

    def _wait(
        self,
        sem: Optional[posix_ipc.Semaphore],
        ready: Callable[[], bool],
        timeout: Optional[float],
        check_peer: PeerCheck,
    ) -> None:
        # Take a post first, then look: a reply that came before we waited has
        # left its post, and a stale post (of a request given up on) costs one
        # extra turn, never a wrong answer.
        assert sem is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            period = POLL_PERIOD
            if deadline is not None:
                period = min(period, max(deadline - time.monotonic(), 0.0))
            try:
                sem.acquire(period)
            except posix_ipc.BusyError:
                pass
            except posix_ipc.SignalError:
                pass  # a signal handler ran; a KeyboardInterrupt surfaces on its own
            if ready():
                return
            check_peer()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError

    def _state(self) -> int:
        return int(self._header["state"])

    def _set_state(self, state: State) -> None:
        self._header["state"] = state
        assert self._request_sem is not None
        self._request_sem.release()  # wake the simulator to look

    def _write_error(self, text: str) -> None:
        raw = text.encode("utf-8", "replace")[: ERROR_TEXT_SIZE - 1]
        self._header["error"] = raw

    def error_text(self) -> str:
        """The message in the header's error field (a failed evaluation's, or a rejection's)."""
        return bytes(self._header["error"]).split(b"\0", 1)[0].decode("utf-8", "replace")

    def _segment_buffer(self) -> memoryview:
        assert self._segment is not None and self._segment.buf is not None
        return self._segment.buf

    def _map_header(self) -> None:
        self._header = np.ndarray((), dtype=HEADER_DTYPE, buffer=self._segment_buffer())

    def _remap(self) -> None:
        # multiprocessing's mapping has the size of the object when it was
        # opened; after growing it, open it again. Views must go first.
        self._header = None  # type: ignore[assignment]
        assert self._segment is not None
        old, self._segment = self._segment, _open_segment(self.name)
        old.close()
        self._map_header()

    def _region(self, offset: int, count: int) -> np.ndarray:
        return np.ndarray((count,), dtype=np.float64, buffer=self._segment_buffer(), offset=offset)
