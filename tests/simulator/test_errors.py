"""Errors, not hangs: bad input, failed starts, mismatches, crashes and failed evaluations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

import numpy as np
import pytest

import pybridge
from pybridge import (
    CapabilityError,
    ChannelClosed,
    EvaluationFailed,
    EvaluationTimeout,
    HandshakeError,
    SimulatorCrashed,
    SimulatorStartError,
)


@pytest.fixture
def rosenbrock(bundled: Callable):
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=3) as sim:
        yield sim


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        ([1.0, 2.0], ValueError, r"expected 3 parameters as a 1-D array, got shape \(2,\)"),
        (np.zeros((3, 1)), ValueError, r"got shape \(3, 1\)"),
        ([1.0, np.nan, 2.0], ValueError, r"x\[1\] = nan"),
        ([1.0, 2.0, np.inf], ValueError, "must be finite"),
        (["a", "b", "c"], TypeError, "real numbers"),
        ([1j, 2, 3], TypeError, "complex"),
        ([object(), 1, 2], TypeError, "object"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_sent(rosenbrock, x, error, message) -> None:
    with pytest.raises(error, match=message):
        rosenbrock(x)
    assert rosenbrock.evaluations == 0
    assert rosenbrock([1.0, 1.0, 1.0]) == 0.0  # and the simulator is still fine


def test_integer_parameters_are_accepted(rosenbrock) -> None:
    assert rosenbrock([1, 1, 1]) == 0.0


def test_missing_executable(tmp_path) -> None:
    with pytest.raises(SimulatorStartError, match="cannot start simulator .*No such file"):
        pybridge.Simulator([tmp_path / "no-such-simulator"])


def test_simulator_exiting_before_the_handshake_reports_code_and_stderr(python_simulator: Callable) -> None:
    command = python_simulator('sys.stderr.write("cannot read mesh file\\n"); sys.exit(7)\n')
    with pytest.raises(SimulatorCrashed, match="exited with code 7 before completing the handshake") as info:
        pybridge.Simulator(command, n_params=2)
    assert info.value.returncode == 7
    assert "cannot read mesh file" in info.value.stderr_tail
    assert "cannot read mesh file" in str(info.value)


def test_a_program_that_ends_without_opening_a_channel_is_named_as_such() -> None:
    # The commonest start-up mistake: the wrong program (a wrapper that forgot "exec", a tool that
    # printed its usage). It exits cleanly, so the message says what to check.
    with pytest.raises(SimulatorCrashed, match="exited with code 0 .* without opening its pybridge channel"):
        pybridge.Simulator(["true"], n_params=2)


def test_simulator_that_never_attaches_times_out(python_simulator: Callable) -> None:
    command = python_simulator("time.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(SimulatorStartError, match="no simulator attached .* within 0.5 s"):
        pybridge.Simulator(command, n_params=2, start_timeout=0.5)
    assert time.monotonic() - started < 5  # includes stopping the process


def test_parameter_count_mismatch_names_both_numbers_and_rejects_the_simulator(bundled: Callable) -> None:
    with pytest.raises(HandshakeError, match="declares 3 parameters but n_params=4 was requested"):
        pybridge.Simulator([bundled("pybridge-decay")], n_params=4)


def test_residual_count_mismatch(bundled: Callable) -> None:
    with pytest.raises(HandshakeError, match="declares 40 residuals but n_residuals=39"):
        pybridge.Simulator([bundled("pybridge-decay")], n_residuals=39)


def test_rejected_simulator_is_told_why(python_simulator: Callable, tmp_path) -> None:
    # Started by hand, so that its own report can be read after the driver rejects it.
    log = tmp_path / "sim.log"
    sim = pybridge.Simulator(None, n_params=5)
    env = dict(os.environ, PYBRIDGE_CHANNEL=sim.channel_name)
    with open(log, "w") as stderr:
        process = subprocess.Popen(python_simulator("pybridge.serve(lambda x: 0.0, n_params=2)\n"), env=env, stderr=stderr)
    try:
        with pytest.raises(HandshakeError, match="declares 2 parameters but n_params=5"):
            sim.connect(timeout=10)
        assert process.wait(10) != 0
        assert "the driver rejected this simulator: the simulator declares 2 parameters" in log.read_text()
    finally:
        sim.close()
        process.kill()
        process.wait()


def test_no_dimension_from_either_side(bundled: Callable) -> None:
    with pytest.raises(HandshakeError, match="does not declare its number of parameters; pass n_params="):
        pybridge.Simulator([bundled("pybridge-rosenbrock")])


def test_residuals_requested_from_a_cost_simulator(bundled: Callable) -> None:
    with pytest.raises(HandshakeError, match="does not return residuals"):
        pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=2, n_residuals=3)


def test_capability_errors_point_to_the_alternative(bundled: Callable, rosenbrock) -> None:
    with pytest.raises(CapabilityError, match="does not return residuals"):
        rosenbrock.residuals([0.0, 0.0, 0.0])
    with pybridge.Simulator([bundled("pybridge-decay")]) as decay:
        with pytest.raises(CapabilityError, match="without jac=True"):
            decay.value_and_grad([1.0, 1.0, 1.0])


@pytest.mark.parametrize("how", ["exit", "sigkill", "sigsegv"])
def test_death_during_an_evaluation_raises_within_a_second(python_simulator: Callable, how: str) -> None:
    die = {"exit": "os._exit(3)", "sigkill": "os.kill(os.getpid(), 9)", "sigsegv": "os.kill(os.getpid(), 11)"}[how]
    command = python_simulator(
        f"""
        def cost(x):
            if x[0] > 0:
                sys.stderr.write("about to die\\n"); sys.stderr.flush()
                {die}
            return 0.0
        pybridge.serve(cost, n_params=1)
        """
    )
    with pybridge.Simulator(command) as sim:
        assert sim([0.0]) == 0.0
        started = time.monotonic()
        with pytest.raises(SimulatorCrashed) as info:
            sim([1.0])
        assert time.monotonic() - started < 1.0
        expected = {"exit": 3, "sigkill": -signal.SIGKILL, "sigsegv": -signal.SIGSEGV}[how]
        assert info.value.returncode == expected
        assert "about to die" in info.value.stderr_tail
        # Afterwards the Simulator says so instead of hanging or pretending.
        with pytest.raises(ChannelClosed, match="failed earlier"):
            sim([0.0])


def test_failed_evaluation_carries_the_simulators_message_and_serving_goes_on(bundled: Callable, tmp_path) -> None:
    readings = subprocess.run([bundled("pybridge-heat"), "--synthesize", "0.4", "1.5", "8"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
    data = tmp_path / "m.txt"
    data.write_text(readings)
    with pybridge.Simulator([bundled("pybridge-heat-c"), "--measurements", data]) as sim:
        with pytest.raises(EvaluationFailed, match=r"alpha \(diffusivity\) must be > 0"):
            sim.residuals([-1.0, 1.5, 8.0])
        assert np.abs(sim.residuals([0.4, 1.5, 8.0])).max() < 1e-12


def test_python_exception_in_a_python_simulator_becomes_evaluation_failed(python_simulator: Callable) -> None:
    command = python_simulator(
        """
        def cost(x):
            if x[0] < 0:
                raise ArithmeticError("negative pressure in cell 17")
            return float(x[0])
        pybridge.serve(cost, n_params=1)
        """
    )
    with pybridge.Simulator(command) as sim:
        with pytest.raises(EvaluationFailed, match="ArithmeticError: negative pressure in cell 17"):
            sim([-1.0])
        assert sim([2.0]) == 2.0


def test_evaluation_timeout_stops_the_simulator(python_simulator: Callable) -> None:
    command = python_simulator(
        """
        def cost(x):
            if x[0] > 0:
                time.sleep(60)
            return 0.0
        pybridge.serve(cost, n_params=1)
        """
    )
    with pybridge.Simulator(command, timeout=0.3) as sim:
        assert sim([0.0]) == 0.0
        started = time.monotonic()
        with pytest.raises(EvaluationTimeout, match="longer than timeout=0.3 s"):
            sim([1.0])
        assert time.monotonic() - started < 3
        assert sim.returncode is not None  # stopped and reaped


def test_attach_to_a_simulator_started_by_the_user(bundled: Callable) -> None:
    with pybridge.Simulator(None, n_params=4) as sim:
        env = dict(os.environ, PYBRIDGE_CHANNEL=sim.channel_name)
        process = subprocess.Popen([bundled("pybridge-rosenbrock")], env=env)
        try:
            sim.connect(timeout=10)
            assert sim.pid == process.pid
            assert sim(np.ones(4)) == 0.0
            assert sim([0.0, 0.0, 0.0, 0.0]) == 3.0
        finally:
            sim.close()
            assert process.wait(10) == 0  # left its loop when the driver closed the channel


def test_user_started_simulator_dying_is_detected(python_simulator: Callable) -> None:
    sim = pybridge.Simulator(None)
    env = dict(os.environ, PYBRIDGE_CHANNEL=sim.channel_name)
    process = subprocess.Popen(
        python_simulator("pybridge.serve(lambda x: os._exit(1) if x[0] else 0.0, n_params=1)\n"), env=env
    )
    try:
        assert sim([0.0]) == 0.0  # the first call connects
        with pytest.raises(SimulatorCrashed, match=f"pid {process.pid}"):
            sim([1.0])
    finally:
        sim.close()
        process.wait(10)


def test_simulator_notices_the_driver_dying_and_removes_its_channel(bundled: Callable, tmp_path) -> None:
    # A driver in a child interpreter, killed with SIGKILL while its simulator waits.
    driver = subprocess.Popen(
        [sys.executable, "-c", "import pybridge, sys, time\n"
         f"sim = pybridge.Simulator([{str(bundled('pybridge-rosenbrock'))!r}], n_params=2)\n"
         "print(sim.pid, sim.channel_name, flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,  # not the source tree
    )  # fmt: skip
    pid_text, channel = driver.stdout.readline().split()
    simulator_pid = int(pid_text)
    entries = [f"/dev/shm/{channel}", f"/dev/shm/sem.{channel}-req", f"/dev/shm/sem.{channel}-rep"]
    try:
        assert all(os.path.exists(entry) for entry in entries)
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and pybridge._native.process_alive(simulator_pid):
            time.sleep(0.02)
        assert not pybridge._native.process_alive(simulator_pid), "simulator still waiting 2 s after its driver died"
        assert not any(os.path.exists(entry) for entry in entries)
    finally:
        driver.stdout.close()
        for entry in entries:  # only if the assertions above failed
            if os.path.exists(entry):
                os.unlink(entry)


def test_a_chatty_simulators_stderr_stays_bounded_and_its_tail_is_still_quoted(python_simulator: Callable,
                                                                               monkeypatch) -> None:
    # The driver keeps a simulator's stderr in an unlinked temporary file, to quote its tail when it
    # fails. A solver that logs to stderr on every evaluation filled /tmp over a long run, through a file
    # nobody could see: 1 500 evaluations here wrote 3 MB and all of it stayed.
    from pybridge.core import process

    monkeypatch.setattr(process, "STDERR_CHECK_SECONDS", 0.01)
    command = python_simulator(
        """
        def cost(x):
            sys.stderr.write(f"evaluation {int(x[0])}: " + "residual 1e-9 " * 140 + "\\n")  # 2 KB
            sys.stderr.flush()
            if x[0] < 0:
                os._exit(3)
            return float(x[0])
        pybridge.serve(cost, n_params=1)
        """
    )
    with pybridge.Simulator(command, n_params=1) as sim:
        for i in range(1_500):
            assert sim([float(i)]) == float(i)
        on_disk = f"/proc/{sim.pid}/fd/2"
        assert _wait_for(lambda: os.stat(on_disk).st_blocks * 512 <= process.STDERR_LIMIT, seconds=10), os.stat(on_disk)
        with pytest.raises(SimulatorCrashed) as info:
            sim([-1.0])
    assert info.value.stderr_tail.splitlines()[-1].startswith("evaluation -1: residual")
    assert "evaluation 1499: residual" in info.value.stderr_tail


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # the janitor runs in another thread: nothing to wait on
    return True
