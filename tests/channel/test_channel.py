"""The driver's end of a channel: what it creates, and that it removes it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybridge.core.channel import DriverChannel
from pybridge.protocol import CHANNEL_PREFIX, HEADER_DTYPE, MAGIC, State, semaphore_names


def channel_files(channel: DriverChannel) -> list[Path]:
    request, reply = semaphore_names(channel.name)
    return [Path("/dev/shm") / channel.name, Path("/dev/shm") / ("sem." + request[1:]), Path("/dev/shm") / ("sem." + reply[1:])]


def test_creates_a_private_segment_and_semaphores_with_unguessable_names() -> None:
    channel = DriverChannel()
    try:
        assert channel.name.startswith(CHANNEL_PREFIX)
        maker, _, token = channel.name[len(CHANNEL_PREFIX):].partition("-")
        assert int(maker) == os.getpid()  # whose it is: ls /dev/shm says, and the suite's leak checks read it
        assert len(token) * 4 >= 64 and int(token, 16) >= 0  # >= 64 random bits, hex
        for path in channel_files(channel):
            assert path.exists(), path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        channel.close()


def test_names_differ_between_channels() -> None:
    channels = [DriverChannel() for _ in range(20)]
    try:
        assert len({c.name for c in channels}) == 20
    finally:
        for c in channels:
            c.close()


def test_header_is_initialised_for_the_simulator() -> None:
    channel = DriverChannel()
    try:
        raw = Path("/dev/shm", channel.name).read_bytes()
        header = __import__("numpy").frombuffer(raw[: HEADER_DTYPE.itemsize], dtype=HEADER_DTYPE)[0]
        assert header["magic"] == MAGIC
        assert header["state"] == State.CREATED
        assert header["driver_pid"] == os.getpid()
        assert header["segment_size"] == len(raw)
    finally:
        channel.close()


def test_close_removes_everything_and_is_idempotent() -> None:
    channel = DriverChannel()
    files = channel_files(channel)
    channel.close()
    channel.close()
    assert channel.closed
    assert not any(path.exists() for path in files)


def test_declaration_wait_times_out_without_a_simulator() -> None:
    channel = DriverChannel()
    try:
        with pytest.raises(TimeoutError):
            channel.wait_for_declaration(0.2, lambda: None)
    finally:
        channel.close()


def test_peer_check_runs_while_waiting() -> None:
    class Gone(Exception):
        pass

    def check() -> None:
        raise Gone

    channel = DriverChannel()
    try:
        with pytest.raises(Gone):
            channel.wait_for_declaration(None, check)
    finally:
        channel.close()


def test_a_corrupted_declaration_is_refused() -> None:
    """Whatever the peer wrote is validated before the driver acts on it."""
    from multiprocessing import shared_memory

    import numpy as np
    import posix_ipc

    from pybridge.errors import ProtocolError

    channel = DriverChannel()
    peer = shared_memory.SharedMemory(name=channel.name)  # a hostile "simulator"
    try:
        header = np.ndarray((), dtype=HEADER_DTYPE, buffer=peer.buf)
        header["declared_n_params"] = 2
        header["version"] = 999
        header["state"] = State.DECLARED
        del header
        reply = posix_ipc.Semaphore(semaphore_names(channel.name)[1])
        reply.release()
        reply.close()
        with pytest.raises(ProtocolError, match="version 999"):
            channel.wait_for_declaration(5.0, lambda: None)
    finally:
        peer.close()
        channel.close()
