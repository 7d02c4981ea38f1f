"""Driver threads with a Simulator each: a wait that spins must not keep the other threads from running.

A Simulator's wait spins for the reply with the GIL held, because a fast reply costs less than letting
the GIL go. With two driver threads that held the other one back for the whole spin: it could not even
send its own request, and the two took turns (benchmarks/threads.py, 50 and 200 µs models: two threads
0.8-1.0x one thread's time per evaluation where half is ideal). A wait now holds the GIL through its
whole spin only while its thread is the only one in this process waiting on simulators; otherwise for
its first 10 µs only.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

import pybridge

# Long enough that a spin holding the GIL would outlast the first simulator's patience (below).
SPIN_US = 3_000_000


def test_a_wait_lets_another_driver_thread_send_while_it_spins(python_simulator: Callable, tmp_path: Path) -> None:
    """In each round the first simulator answers 1 only if the second one's request arrives while the
    first evaluation is under way (it gives up after 1 s and answers 0). The other driver thread sends
    that request as soon as it sees the first evaluation start, and it needs the GIL to see it and to
    send. (Five rounds: a wait that held the GIL sometimes let it go all the same, when its guard for a
    busy machine happened to read one thread too many and the wait only blocked.)"""
    first = python_simulator(
        f"""
        def cost(x):
            round = int(x[0])
            if round == 0:
                return -1.0  # the warm-up
            open(os.path.join({str(tmp_path)!r}, f"started-{{round}}"), "w").close()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                if os.path.exists(os.path.join({str(tmp_path)!r}, f"arrived-{{round}}")):
                    return 1.0
                time.sleep(0.001)
            return 0.0
        pybridge.serve(cost, n_params=1)
        """
    )
    second = python_simulator(
        f"""
        def cost(x):
            round = int(x[0])
            if round > 0:
                open(os.path.join({str(tmp_path)!r}, f"arrived-{{round}}"), "w").close()
            return 2.0
        pybridge.serve(cost, n_params=1)
        """
    )
    rounds = 5
    # The second simulator blocks at once while it waits for a request (spin_us=0): spinning there too, it
    # would make the machine look oversubscribed to the first wait's guard more often.
    with pybridge.Simulator(first, spin_us=SPIN_US, forecast=False) as a, pybridge.Simulator(second, spin_us=0) as b:
        answers = []

        def other_thread() -> None:
            answers.append(b(np.zeros(1)))  # both threads have called a simulator before the rounds
            for round in range(1, rounds + 1):
                deadline = time.monotonic() + 10.0
                while not (tmp_path / f"started-{round}").exists() and time.monotonic() < deadline:
                    time.sleep(0.001)
                answers.append(b(np.full(1, float(round))))

        assert a(np.zeros(1)) == -1.0
        thread = threading.Thread(target=other_thread)
        thread.start()
        try:
            while not answers:
                time.sleep(0.001)
            seen = [a(np.full(1, float(round))) for round in range(1, rounds + 1)]
        finally:
            thread.join()
    assert answers == [2.0] * (rounds + 1)
    assert seen == [1.0] * rounds, "the other driver thread could not send while this one waited: it spun holding the GIL"


def test_a_lone_driver_thread_keeps_the_gil_through_its_spin() -> None:
    """Which waits spin holding the GIL, decided per thread: a thread that runs Python but waits on no
    simulator (a GUI, a progress bar's monitor) leaves the driver's fast spin as it was; a second driver
    thread makes both let the GIL go, until a second has passed without the other's waits. In a fresh
    process: the rule remembers the driver threads of the whole process, this test session's included."""
    script = """
import threading, time
import numpy as np
import pybridge
from pybridge import _native
from pybridge.paths import bundled_simulator

command = [bundled_simulator("pybridge-rosenbrock")]
with pybridge.Simulator(command, n_params=2) as a, pybridge.Simulator(command, n_params=2) as b:
    assert _native.driver_thread_alone(), "before any wait"
    a(np.zeros(2))
    assert _native.driver_thread_alone(), "after its own waits"
    busy = threading.Thread(target=lambda: sum(range(10**6)))
    busy.start(); busy.join()
    a(np.zeros(2))
    assert _native.driver_thread_alone(), "beside a thread that waits on no simulator"
    seen = []
    def other():
        seen.append(_native.driver_thread_alone())
        b(np.zeros(2))
        seen.append(_native.driver_thread_alone())
    thread = threading.Thread(target=other)
    thread.start(); thread.join()
    assert seen == [False, False], seen
    assert not _native.driver_thread_alone(), "after another thread's wait"
    a(np.zeros(2))
    assert not _native.driver_thread_alone(), "within the second after another thread's wait"
    time.sleep(1.05)  # the rule's own period, not a race
    a(np.zeros(2))
    assert _native.driver_thread_alone(), "a second later"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
