"""Channels of dead drivers are found and removed; live ones never are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, Set

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


def test_another_jobs_live_channel_is_not_the_suites(shm_entries: Callable[[], Set[str]]) -> None:
    """Another job of this user runs a calibration on the machine while the suite runs (a process that
    does not descend from this one). The suite's leak checks must not count its channel as a leak of
    a test, and the fault-injection scenarios, which remove what a trial leaked, must not remove it:
    both happened while every "pybridge-" entry counted as the suite's (3 entries "leaked" by the
    scenario of random SIGKILLs once, while a benchmark ran beside .ci/run)."""
    job = subprocess.Popen([sys.executable, "-c", OTHER_JOB], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True, start_new_session=True)  # fmt: skip
    assert job.stdin is not None and job.stdout is not None
    try:
        name = job.stdout.readline().strip()
        assert name, "the other job did not start its Simulator"
        theirs = {name, f"sem.{name}-req", f"sem.{name}-rep"}
        assert all(Path("/dev/shm", entry).exists() for entry in theirs)
        assert not theirs & shm_entries(), "another job's live channel counted as the suite's"
    finally:
        job.stdin.close()  # the other job closes its Simulator and exits
        with job.stdout:
            assert job.stdout.read() == "done\n"
        job.wait()
    assert not any(Path("/dev/shm", entry).exists() for entry in theirs)


#: A driver outside this process tree: forks, and the child (reparented once its parent exits) runs
#: a Simulator until its stdin closes.
OTHER_JOB = """
import os, sys
if os.fork():
    os._exit(0)
from pybridge import Simulator
from pybridge.paths import bundled_simulator
with Simulator([bundled_simulator("pybridge-rosenbrock")], n_params=2) as sim:
    print(sim.channel_name, flush=True)
    sys.stdin.read()
print("done", flush=True)
"""
