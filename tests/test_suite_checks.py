"""The suite's own checks that nothing of its outlives it (tests/conftest.py): they must see what the
suite left, wherever it went, and nothing that another job on the machine runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Callable, Dict

from pybridge.protocol import CHANNEL_ENV, CHANNEL_PREFIX, new_channel_name

#: Starts `sleep 60` with the given channel in its environment and exits at once, printing its pid: the
#: process is then nobody's child here (reparented), as a wrapper script's background rank is.
DETACHED = """
import os, subprocess, sys
child = subprocess.Popen(["sleep", "60"], env=dict(os.environ, {env}=sys.argv[1]), start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
os._exit(0)
"""


def _detached(channel: str) -> int:
    out = subprocess.run([sys.executable, "-c", DETACHED.format(env=CHANNEL_ENV), channel],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out)


def test_a_process_of_a_channel_this_run_made_counts_wherever_it_went(
        processes: Callable[[], Dict[int, str]]) -> None:  # fmt: skip
    pid = _detached(new_channel_name())
    try:
        assert pid in processes(), "a reparented simulator of ours was not counted"
        assert "sleep 60" in processes()[pid]
    finally:
        os.kill(pid, signal.SIGKILL)


def test_another_jobs_process_is_not_the_suites(processes: Callable[[], Dict[int, str]]) -> None:
    pid = _detached(f"{CHANNEL_PREFIX}1-{'0' * 24}")  # a channel made by a live process that is not ours (init)
    try:
        assert pid not in processes(), "another job's simulator counted as the suite's"
    finally:
        os.kill(pid, signal.SIGKILL)
