"""A doorbell: several channels, one reply semaphore, one thread waiting on all of them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest

from pybridge import _native
from pybridge.core import cleanup
from pybridge.core.channel import DriverChannel
from pybridge.core.doorbell import DOORBELL_PREFIX, Doorbell, wait_any
from pybridge.protocol import Capability, RequestKind, name_owner


def serve_times(name: str, factor: float, hold: Optional[threading.Event] = None) -> None:
    """A simulator thread: replies factor * x[0] (once ``hold`` is set, if given) until the channel closes."""
    endpoint = _native.SimulatorChannel(name, 1, 0, 0)
    while (request := endpoint.wait()) is not None:
        if hold is not None:
            hold.wait()
        endpoint.reply(factor * float(request[2][0]))


def test_one_thread_waits_on_three_channels_through_one_doorbell() -> None:
    with Doorbell() as bell:
        channels = [DriverChannel(doorbell=bell.name) for _ in range(3)]
        threads = [threading.Thread(target=serve_times, args=(c.name, 10.0 ** i)) for i, c in enumerate(channels)]
        try:
            for thread in threads:
                thread.start()
            for channel in channels:
                channel.wait_for_declaration(10, lambda: None)
                channel.accept(1, 0, Capability.NONE)
            for round_ in range(1, 101):
                seqs = [c.request(np.array([float(round_)]), RequestKind.COST) for c in channels]
                pending = set(range(3))
                answers = {}
                while pending:
                    ready = wait_any([channels[i] for i in sorted(pending)], 5.0)
                    assert ready is not None, "no reply within 5 s"
                    index = sorted(pending)[ready]
                    answers[index] = channels[index].wait_reply(seqs[index], 1.0, lambda: None)
                    pending.discard(index)
                assert answers == {i: round_ * 10.0 ** i for i in range(3)}
        finally:
            for channel in channels:
                channel.close()
            for thread in threads:
                thread.join()
        assert os.path.exists(f"/dev/shm/sem.{bell.name}")  # the channels never remove the doorbell
    assert not os.path.exists(f"/dev/shm/sem.{bell.name}")


def test_two_threads_each_waiting_on_several_channels_of_one_doorbell_never_take_each_others_ring() -> None:
    # The starts of a multi-start run on a pool: each thread waits on its own channels of the pool's one
    # doorbell. Thread A's replies are held back, so A sits on the doorbell and wakes at every ring;
    # thread B asks two channels at once, round after round. A ring of B's taken by A, and B's second
    # ring taken by A too before B could, left B asleep until its timeout (2-7 of 200 rounds).
    timeout, rounds = 1.0, 300
    with Doorbell() as bell:
        hold, stop = threading.Event(), threading.Event()
        channels = [DriverChannel(doorbell=bell.name) for _ in range(4)]
        held, quick = channels[:2], channels[2:]
        simulators = [threading.Thread(target=serve_times, args=(c.name, 1.0, hold if c in held else None))
                      for c in channels]  # fmt: skip
        waited: List[float] = []

        def wait_on_held() -> None:
            for channel in held:
                channel.request(np.array([1.0]), RequestKind.COST)
            while not stop.is_set():
                assert wait_any(held, 0.05) is None

        other = threading.Thread(target=wait_on_held)
        try:
            for thread in simulators:
                thread.start()
            for channel in channels:
                channel.wait_for_declaration(10, lambda: None)
                channel.accept(1, 0, Capability.NONE, spin_us=0)  # no spin: every wait blocks on the doorbell
            other.start()
            for round_ in range(rounds):
                seqs = [c.request(np.array([float(round_)]), RequestKind.COST) for c in quick]
                pending = [0, 1]
                while pending:
                    started = time.monotonic()
                    ready = wait_any([quick[i] for i in pending], timeout)
                    waited.append(time.monotonic() - started)
                    assert ready is not None, "no reply within the timeout"
                    index = pending.pop(ready)
                    assert quick[index].wait_reply(seqs[index], 1.0, lambda: None) == float(round_)
        finally:
            stop.set()
            if other.is_alive():
                other.join()
            hold.set()
            for channel in channels:
                channel.close()
            for thread in simulators:
                thread.join()
    # Each reply comes within microseconds; a wait that slept out its timeout missed its ring.
    slept_out = [w for w in waited if w > timeout / 2]
    assert not slept_out, f"{len(slept_out)} of {len(waited)} waits slept out their timeout"


def test_a_doorbell_names_its_owner_and_cleanup_judges_by_it(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = f"/dev/shm/sem.{DOORBELL_PREFIX}{dead.pid}-0123456789abcdef"
    Path(orphan).write_bytes(b"\0" * 32)  # what a killed pool leaves behind
    with Doorbell() as bell:
        assert name_owner(bell.name) == name_owner(f"sem.{bell.name}") == os.getpid()
        stale = {str(entry.path) for entry in cleanup.clean()}
        assert orphan in stale and not os.path.exists(orphan)
        assert not any(bell.name in path for path in stale)  # a live owner's doorbell is never touched
        assert os.path.exists(f"/dev/shm/sem.{bell.name}")


def test_wait_any_refuses_channels_that_do_not_share_a_doorbell() -> None:
    channels: List[DriverChannel] = [DriverChannel(), DriverChannel()]
    try:
        with pytest.raises(Exception, match="does not share a doorbell"):
            wait_any(channels, 0.01)
    finally:
        for channel in channels:
            channel.close()
