"""A driver and its simulator bound to one core (``taskset -c 0``, ``mpirun --bind-to core``, a batch
job's cpuset of one): the side that has just woken its peer must not keep the core spinning for the
request or reply that only the peer, waiting for that core, can send (cpp/src/wait.hpp, spin_until).
Before, every handoff there cost the spinner's whole budget: the 90th percentile of both latencies was
~510 µs on a 200 µs model (the default spin_us=500), where it is now ~15 µs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import pybridge
from pybridge.cli.bench.measure import _program

from .test_forecast_wait import skip_if_the_guard_blocks

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")


def test_a_simulator_sharing_the_drivers_core_is_not_kept_waiting() -> None:
    skip_if_the_guard_blocks("on a loaded machine other work takes the core too")
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # the simulator inherits it
    try:
        with pybridge.Simulator([_program("pybridge-bench-sim"), "--rosenbrock", "--sleep-us", "200"],
                                n_params=3, spin_us=500) as sim:  # fmt: skip
            assert os.sched_getaffinity(sim.pid) == {min(allowed)}
            outcomes = [sim.evaluate([np.zeros(3)])[0] for _ in range(300)]
    finally:
        os.sched_setaffinity(0, allowed)
    late = {}
    for side in ("request_latency", "reply_latency"):
        seconds = np.array([getattr(outcome, side) for outcome in outcomes[20:]])  # after the spin policy settled
        assert np.isfinite(seconds).all()
        late[side] = float(np.percentile(seconds, 90)) * 1e6
    assert max(late.values()) < 200, f"90th percentiles of the latencies, us: {late}"


def test_a_process_bound_to_one_core_blocks_by_default() -> None:
    """Spinning on one core only delays the peer that needs it: the default is then to block, whatever
    the machine has (os.cpu_count() is the machine's)."""
    one = min(os.sched_getaffinity(0))
    bound = subprocess.run([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{one}}}); "
                            "import pybridge.simulator as s; print(s.DEFAULT_SPIN_US)"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert bound.stdout.split() == ["0"], bound
    if len(os.sched_getaffinity(0)) > 1:
        free = subprocess.run([sys.executable, "-c", "import pybridge.simulator as s; print(s.DEFAULT_SPIN_US)"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        assert free.stdout.split() == ["500"], free
