"""A doorbell: several channels, one reply semaphore, one thread waiting on all of them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import numpy as np
import pytest

from pybridge import _native
from pybridge.core import cleanup
from pybridge.core.channel import DriverChannel
from pybridge.core.doorbell import DOORBELL_PREFIX, Doorbell, doorbell_owner, wait_any
from pybridge.protocol import Capability, RequestKind


def serve_times(name: str, factor: float) -> None:
    """A simulator thread: replies factor * x[0] until the channel closes."""
    endpoint = _native.SimulatorChannel(name, 1, 0, 0)
    while (request := endpoint.wait()) is not None:
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


def test_a_doorbell_names_its_owner_and_cleanup_judges_by_it(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = f"/dev/shm/sem.{DOORBELL_PREFIX}{dead.pid}-0123456789abcdef"
    Path(orphan).write_bytes(b"\0" * 32)  # what a killed pool leaves behind
    with Doorbell() as bell:
        assert doorbell_owner(bell.name) == os.getpid()
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
