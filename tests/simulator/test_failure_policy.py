"""Failure policies: raise (default), restart and retry, penalty; non-finite values."""

from __future__ import annotations

import os
import random
import signal
from typing import Callable

import numpy as np
import pytest
from scipy.optimize import minimize

import pybridge
from pybridge import EvaluationFailed, EvaluationTimeout, SimulatorCrashed


def crash_once(python_simulator: Callable, tmp_path) -> list:
    """A simulator whose first process dies in its first evaluation; later ones work."""
    marker = tmp_path / "crashed-once"
    return python_simulator(
        f"""
        def cost(x):
            if not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                os.kill(os.getpid(), 9)
            return float(x[0] * 2)
        pybridge.serve(cost, n_params=1)
        """
    )


def test_restart_retries_the_same_evaluation(python_simulator: Callable, tmp_path) -> None:
    with pybridge.Simulator(crash_once(python_simulator, tmp_path), restarts=1) as sim:
        first_pid = sim.pid
        assert sim([21.0]) == 42.0
        assert (sim.restart_count, sim.failures, sim.evaluations) == (1, 1, 1)
        assert sim.pid != first_pid
        assert sim([1.0]) == 2.0


def test_restarts_exhausted_raise_the_crash(python_simulator: Callable) -> None:
    command = python_simulator("pybridge.serve(lambda x: os._exit(4) if x[0] else 0.0, n_params=1)\n")
    with pybridge.Simulator(command, restarts=2) as sim:
        with pytest.raises(SimulatorCrashed, match="exited with code 4") as info:
            sim([1.0])
        assert info.value.returncode == 4
        assert (sim.restart_count, sim.failures) == (2, 3)
        assert "restarts=" not in str(info.value)  # it had them


def test_a_crash_under_the_default_policy_says_how_to_carry_on(python_simulator: Callable, tmp_path) -> None:
    with pybridge.Simulator(crash_once(python_simulator, tmp_path)) as sim:
        with pytest.raises(SimulatorCrashed, match=r"during evaluation 1\. Pass restarts= .*or penalty="):
            sim([1.0])


def test_default_policy_raises_and_the_simulator_stays_failed(python_simulator: Callable, tmp_path) -> None:
    with pybridge.Simulator(crash_once(python_simulator, tmp_path)) as sim:
        with pytest.raises(SimulatorCrashed):
            sim([1.0])
        with pytest.raises(pybridge.ChannelClosed, match="failed earlier"):
            sim([1.0])


def test_penalty_for_a_reported_failure_keeps_the_same_process(python_simulator: Callable) -> None:
    command = python_simulator(
        """
        def cost(x):
            if x[0] < 0:
                raise ValueError("mesh inverted")
            return float(x[0])
        pybridge.serve(cost, n_params=1)
        """
    )
    with pybridge.Simulator(command, penalty=1e6) as sim:
        pid = sim.pid
        assert sim([-1.0]) == 1e6
        assert sim([3.0]) == 3.0
        assert (sim.pid, sim.failures, sim.evaluations, sim.restart_count) == (pid, 1, 2, 0)


def test_penalty_for_a_crash_restarts_before_the_next_evaluation(python_simulator: Callable, tmp_path) -> None:
    with pybridge.Simulator(crash_once(python_simulator, tmp_path), penalty=99.0) as sim:
        assert sim([5.0]) == 99.0
        assert sim([5.0]) == 10.0
        assert sim.restart_count == 1


def test_penalty_shapes_for_gradients_and_residuals(python_simulator: Callable) -> None:
    gradient = python_simulator("pybridge.serve(lambda x: (float('nan'), x), n_params=3, gradient=True)\n")
    with pybridge.Simulator(gradient, penalty=7.0) as sim:
        cost, grad = sim.value_and_grad(np.ones(3))
        assert cost == 7.0 and grad.tolist() == [0.0, 0.0, 0.0]
    residual = python_simulator("pybridge.serve(lambda x: [1.0, float('inf')], n_params=1, n_residuals=2)\n")
    with pybridge.Simulator(residual, penalty=5.0) as sim:
        assert sim.residuals([0.0]).tolist() == [5.0, 5.0]
        assert sim([0.0]) == 5.0


def test_timeout_with_penalty_kills_and_carries_on(python_simulator: Callable) -> None:
    command = python_simulator("pybridge.serve(lambda x: time.sleep(60) if x[0] else 1.0, n_params=1)\n")
    with pybridge.Simulator(command, timeout=0.3, penalty=-1.0) as sim:
        first = sim.pid
        assert sim([1.0]) == -1.0
        assert sim([0.0]) == 1.0
        assert sim.pid != first and sim.restart_count == 1
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)  # killed and reaped


def test_timeout_without_policy_raises(python_simulator: Callable) -> None:
    command = python_simulator("pybridge.serve(lambda x: time.sleep(60), n_params=1)\n")
    with pybridge.Simulator(command, timeout=0.2) as sim:
        with pytest.raises(EvaluationTimeout, match="was stopped"):
            sim([0.0])
        assert sim.returncode == -signal.SIGTERM  # SIGTERM first; SIGKILL only after TERM_GRACE


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nonfinite_cost_is_a_failed_evaluation_by_default(python_simulator: Callable, value: str) -> None:
    command = python_simulator(f"pybridge.serve(lambda x: float({value!r}), n_params=1)\n")
    with pybridge.Simulator(command) as sim:
        with pytest.raises(EvaluationFailed, match=f"non-finite cost {float(value)!r} in evaluation 1"):
            sim([0.0])
        with pytest.raises(EvaluationFailed, match="in evaluation 2"):  # still serving, not broken
            sim([0.0])
    with pybridge.Simulator(command, allow_nonfinite=True) as sim:
        result = sim([0.0])
        assert np.isnan(result) if value == "nan" else result == float(value)


def test_nonfinite_residual_names_its_index(python_simulator: Callable) -> None:
    command = python_simulator("pybridge.serve(lambda x: [0.0, 1.0, float('nan')], n_params=1, n_residuals=3)\n")
    with pybridge.Simulator(command) as sim:
        with pytest.raises(EvaluationFailed, match=r"non-finite residual \[2\] = nan"):
            sim.residuals([0.0])


def nelder_mead(objective: Callable[[np.ndarray], float]):
    return minimize(objective, np.array([-1.0, 1.2, 0.5, -0.3]), method="Nelder-Mead",
                    options={"maxfev": 3000, "xatol": 1e-10, "fatol": 1e-14})  # fmt: skip


def test_calibration_killed_ten_times_at_random_gives_the_uninterrupted_result(bundled: Callable) -> None:
    command = [bundled("pybridge-rosenbrock")]
    with pybridge.Simulator(command, n_params=4) as sim:
        reference = nelder_mead(sim)

    kill_before = set(random.Random(2026).sample(range(50, reference.nfev - 50), 10))
    with pybridge.Simulator(command, n_params=4, restarts=3) as sim:
        calls, killed = 0, []

        def objective(x: np.ndarray) -> float:
            nonlocal calls
            calls += 1
            if calls in kill_before:  # the simulator dies while it waits for this request
                killed.append(sim.pid)
                os.kill(sim.pid, signal.SIGKILL)  # type: ignore[arg-type]
            return sim(x)

        result = nelder_mead(objective)
        assert len(set(killed)) == 10 and sim.restart_count == 10

    np.testing.assert_array_equal(result.x, reference.x)
    assert (result.fun, result.nfev, result.nit) == (reference.fun, reference.nfev, reference.nit)
