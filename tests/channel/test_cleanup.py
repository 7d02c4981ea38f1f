"""Channels of dead drivers are found and removed; live ones never are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from pybridge.cli import main as cli
from pybridge.core import cleanup
from pybridge.core.channel import DriverChannel
from pybridge.protocol import HEADER_DTYPE


def orphan_channel() -> DriverChannel:
    """A channel whose header names a driver process that has exited."""
    channel = DriverChannel()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    header = np.ndarray((), dtype=HEADER_DTYPE, buffer=channel._segment.buf)  # type: ignore[union-attr]
    header["driver_pid"] = dead.pid
    return channel


def entries_of(channel: DriverChannel) -> set[Path]:
    return {Path("/dev/shm", channel.name), Path(f"/dev/shm/sem.{channel.name}-req"), Path(f"/dev/shm/sem.{channel.name}-rep")}


def test_finds_only_channels_whose_driver_is_gone() -> None:
    live, orphan = DriverChannel(), orphan_channel()
    try:
        stale = {entry.path for entry in cleanup.find_stale()}
        assert entries_of(orphan) <= stale
        assert not entries_of(live) & stale
        reasons = {entry.reason for entry in cleanup.find_stale() if entry.path == Path("/dev/shm", orphan.name)}
        assert reasons and "is gone" in reasons.pop()
    finally:
        live.close()
        orphan.close()


def test_clean_removes_the_orphan_and_keeps_the_live_channel(capsys) -> None:
    live, orphan = DriverChannel(), orphan_channel()
    try:
        assert cli(["clean", "--dry-run"]) == 0
        assert all(path.exists() for path in entries_of(orphan))  # a dry run removes nothing
        assert f"would remove /dev/shm/{orphan.name}" in capsys.readouterr().out

        assert cli(["clean"]) == 0
        out = capsys.readouterr().out
        for path in entries_of(orphan):
            assert not path.exists()
            assert f"removed {path}" in out
        assert all(path.exists() for path in entries_of(live))
    finally:
        live.close()
        orphan.close()  # its files are gone already; closing must still work


def test_semaphores_without_their_segment_are_orphans() -> None:
    channel = DriverChannel()
    try:
        Path("/dev/shm", channel.name).unlink()  # as CPython's resource tracker does after SIGKILL
        stale = {entry.path: entry.reason for entry in cleanup.find_stale()}
        assert stale[Path(f"/dev/shm/sem.{channel.name}-req")] == "semaphore of a channel whose segment is gone"
        cleanup.clean()
        assert not any(path.exists() for path in entries_of(channel))
    finally:
        channel.close()
