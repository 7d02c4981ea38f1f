"""A driver and its simulator confined together to one CPU (``taskset -c 0``, ``mpirun --bind-to
core``, a batch job's cpuset of one): a side that spins there holds the very core its peer needs to
answer, so every handoff cost the spinner's whole budget (both latencies' 90th percentile ~510 µs with
spin_us=500 on a 200 µs model). The spin's yields (cpp/src/wait.hpp, spin_until) cut that to ~15 µs
mostly, but not always: under the kernel's EEVDF scheduler a yield need not hand over the core, and
CI once read 505 µs again. So the channel settles it at accept, from both processes' affinity masks
(cpp/src/driver.cpp): confined together to one CPU, neither side spins, whatever ``spin_us`` asked.
What each handoff then costs is measured in benchmarks/shared_core.py, not asserted here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Iterator

import numpy as np
import pytest

import pybridge
from pybridge.cli.bench.measure import _program

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")

_SIM = [_program("pybridge-bench-sim"), "--rosenbrock"]


_ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """This process bound to the first CPU it may use (a simulator it launches inherits that)."""
    os.sched_setaffinity(0, {_ALLOWED[0]})
    try:
        yield _ALLOWED[0]
    finally:
        os.sched_setaffinity(0, _ALLOWED)


def spin_in_effect(sim: pybridge.Simulator) -> int:
    """The spin budget both sides read from the channel's header."""
    sim.connect()
    return int(sim._session.channel._header["spin_us"])


def evaluates(sim: pybridge.Simulator) -> None:
    assert sim(np.array([1.0, 1.0, 1.0])) == 0.0
    assert sim(np.zeros(3)) == 2.0


def test_a_simulator_confined_with_the_driver_to_one_cpu_spins_on_neither_side(one_cpu: int) -> None:
    with pybridge.Simulator(_SIM, n_params=3, spin_us=500, restarts=1) as sim:
        assert os.sched_getaffinity(sim.pid) == {one_cpu}
        assert spin_in_effect(sim) == 0
        evaluates(sim)
        first = sim.pid
        os.kill(first, signal.SIGKILL)  # its successor is judged again, as it attaches
        evaluates(sim)
        assert sim.pid != first and sim.failures == 1
        assert spin_in_effect(sim) == 0


@pytest.mark.skipif(len(_ALLOWED) < 2, reason="needs two CPUs")
def test_a_simulator_bound_to_another_cpu_keeps_its_spin(one_cpu: int) -> None:
    """A driver bound to one core and its simulator to another (mpirun --bind-to core) is the
    low-latency set-up that spinning is for. The simulator binds itself before it starts (as taskset
    would)."""
    elsewhere = _ALLOWED[1]
    bind_and_run = f"import os, sys; os.sched_setaffinity(0, {{{elsewhere}}}); os.execv(sys.argv[1], sys.argv[1:])"
    with pybridge.Simulator([sys.executable, "-c", bind_and_run, *_SIM], n_params=3, spin_us=500) as sim:
        sim.connect()
        assert os.sched_getaffinity(sim._session.channel.simulator_pid) == {elsewhere}
        assert spin_in_effect(sim) == 500
        evaluates(sim)


def test_an_unbound_simulator_keeps_its_spin() -> None:
    if len(_ALLOWED) < 2:
        pytest.skip("this process may run on one CPU only")
    with pybridge.Simulator(_SIM, n_params=3) as sim:
        assert spin_in_effect(sim) == pybridge.simulator.DEFAULT_SPIN_US == 500
        evaluates(sim)


def test_a_simulator_confined_with_a_driver_started_by_the_user_spins_on_neither_side(one_cpu: int) -> None:
    """Started by the user (the channel name handed over), the simulator is judged the same way."""
    with pybridge.Simulator(None, n_params=3, spin_us=500) as sim:
        env = dict(os.environ, PYBRIDGE_CHANNEL=sim.channel_name)
        process = subprocess.Popen(_SIM, env=env)
        try:
            assert spin_in_effect(sim) == 0
            evaluates(sim)
        finally:
            sim.close()
            assert process.wait(timeout=30) == 0


def test_a_process_bound_to_one_core_blocks_by_default() -> None:
    """Its simulators inherit the binding, and its own waiting threads (a pool's) would spin against each
    other: the default is then to block, whatever the machine has (os.cpu_count() is the machine's)."""
    bound = subprocess.run([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{_ALLOWED[0]}}}); "
                            "import pybridge.simulator as s; print(s.DEFAULT_SPIN_US)"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert bound.stdout.split() == ["0"], bound
    if len(_ALLOWED) > 1:
        free = subprocess.run([sys.executable, "-c", "import pybridge.simulator as s; print(s.DEFAULT_SPIN_US)"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        assert free.stdout.split() == ["500"], free
