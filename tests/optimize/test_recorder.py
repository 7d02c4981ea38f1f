"""The native recorder (a single Simulator's cost calls, recorded in C) against the Python path (the
same simulator behind a one-worker Pool): the same records in the same order, the same journal."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pytest

import pybridge
from pybridge import Parameter
from pybridge.optimize import MaxEvaluations, TargetCost
from pybridge.optimize.calibration import Calibration
from pybridge.record.records import Evaluation, Iteration

# One scaled and one plain slot: the recorder does Parameters.from_solver's arithmetic itself.
PARAMS = {"a": Parameter((-2.0, 2.0), scale=True), "b": Parameter((-2.0, 2.0))}


def comparable(record: Any) -> Tuple[Any, ...]:
    # The scalars' types too: the native path keeps columns as arrays, and a record must still hold
    # Python ints and floats (numpy scalars compare equal, but print and serialise differently).
    types = tuple(type(value).__name__ for value in record if not isinstance(value, np.ndarray))
    if type(record) is Evaluation:
        return ("evaluation", record.number, record.start, record.kind, record.x.tobytes(), record.cost, record.status,
                record.error, record.worker, types)  # fmt: skip
    assert type(record) is Iteration
    return ("iteration", record.number, record.start, record.x.tobytes(), record.cost, record.best_cost,
            record.evaluations, types)  # fmt: skip


def journal_rows(path: Path) -> Tuple[List[Any], List[Any]]:
    db = sqlite3.connect(str(path))
    try:
        evaluations = db.execute("SELECT start, kind, status, cost, worker, error, a, b FROM evaluations ORDER BY id")
        iterations = db.execute("SELECT start, iteration, cost, best_cost, evaluations, a, b FROM iterations ORDER BY id")
        return evaluations.fetchall(), iterations.fetchall()
    finally:
        db.close()


def calibrate(evaluator: Any, journal: Path, **options: Any) -> Tuple[Any, List[Any]]:
    records: List[Any] = []
    result = pybridge.minimize(evaluator, PARAMS, method="Nelder-Mead", x0={"a": -1.2, "b": 1.0}, journal=journal,
                               callback=records.append, progress=False, **options)  # fmt: skip
    return result, records


def test_a_single_simulator_is_recorded_natively(rosenbrock) -> None:
    # The premise of the comparisons below: on a Simulator, SciPy calls the native recorder.
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        calibration = Calibration(sim, pybridge.Parameters(**PARAMS))
        assert isinstance(calibration.native_cost(0, lambda z: math.nan), pybridge._native.Recorder)
    with pybridge.Pool(rosenbrock, workers=1, n_params=2) as pool:
        assert Calibration(pool, pybridge.Parameters(**PARAMS)).native_cost(0, lambda z: math.nan) is None


@pytest.mark.parametrize("stop", [None, MaxEvaluations(137), TargetCost(1e-3)])
def test_native_and_python_paths_give_the_same_records_and_journal(rosenbrock, tmp_path, stop) -> None:
    options = {"options": {"maxfev": 400}} if stop is None else {"stop": stop}
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        native, native_records = calibrate(sim, tmp_path / "native.db", **options)
    with pybridge.Pool(rosenbrock, workers=1, n_params=2) as pool:
        python, python_records = calibrate(pool, tmp_path / "python.db", **options)
    assert [comparable(r) for r in native_records] == [comparable(r) for r in python_records]
    assert journal_rows(tmp_path / "native.db") == journal_rows(tmp_path / "python.db")
    assert (native.x.tobytes(), native.fun, native.nfev, native.nit, native.stop_rule, native.message) == (
        python.x.tobytes(), python.fun, python.nfev, python.nit, python.stop_rule, python.message)
    # Every iteration comes after exactly the evaluations it counts.
    seen = 0
    for record in native_records:
        if type(record) is Evaluation:
            seen += 1
        else:
            assert record.evaluations == seen
    assert sum(type(r) is Iteration for r in native_records) > 10
    if stop is not None:
        assert native.stop_rule == stop.name


FAILING = """
def cost(x):
    if x[0] > 0.2:
        raise RuntimeError("no convergence above a = 0.2")
    return float((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)
pybridge.serve(cost, n_params=2)
"""


def test_failed_and_penalised_evaluations_are_recorded_alike(python_simulator, tmp_path) -> None:
    command = python_simulator(FAILING)
    with pybridge.Simulator(command, penalty=1e6) as sim:
        native, native_records = calibrate(sim, tmp_path / "native.db", stop=MaxEvaluations(120))
    with pybridge.Pool(command, workers=1, penalty=1e6) as pool:
        python, python_records = calibrate(pool, tmp_path / "python.db", stop=MaxEvaluations(120))
    statuses = [r.status for r in native_records if type(r) is Evaluation]
    assert "penalty" in statuses and "ok" in statuses
    assert [comparable(r) for r in native_records] == [comparable(r) for r in python_records]
    assert journal_rows(tmp_path / "native.db") == journal_rows(tmp_path / "python.db")

    # Without a penalty the failure ends the run, recorded as the last evaluation, with the same error.
    errors = []
    for evaluator in (pybridge.Simulator(command), pybridge.Pool(command, workers=1)):
        records: List[Any] = []
        with evaluator, pytest.raises(pybridge.EvaluationFailed) as raised:
            pybridge.minimize(evaluator, PARAMS, method="Nelder-Mead", x0={"a": -1.2, "b": 1.0},
                              callback=records.append, progress=False)  # fmt: skip
        errors.append((type(raised.value), [comparable(r) for r in records]))
        failed = [r for r in records if type(r) is Evaluation and r.status == "failed"]
        assert len(failed) == 1 and "no convergence above a = 0.2" in failed[0].error
        assert failed[0].x[0] > 0.2 and np.isnan(failed[0].cost)
    assert errors[0] == errors[1]


def test_concurrent_calls_from_scipys_own_threads_record_their_own_x(rosenbrock) -> None:
    # workers= with a thread pool on a single Simulator: SciPy calls the cost function from two threads
    # at once. Every record must still carry the x its cost was computed at.
    from concurrent.futures import ThreadPoolExecutor

    records: List[Any] = []
    with pybridge.Simulator(rosenbrock, n_params=2) as sim, ThreadPoolExecutor(2) as threads:
        pybridge.minimize(sim, {"a": (-2.0, 2.0), "b": (-2.0, 2.0)}, method="differential_evolution",
                          options={"workers": threads.map, "updating": "deferred", "maxiter": 20, "seed": 3,
                                   "polish": False}, callback=records.append, progress=False)  # fmt: skip
    evaluations = [r for r in records if type(r) is Evaluation]
    assert len(evaluations) > 300
    for record in evaluations:
        a, b = record.x
        assert record.cost == pytest.approx((1 - a) ** 2 + 100 * (b - a * a) ** 2, rel=1e-12, abs=1e-12)


def test_an_evaluation_budget_holds_with_scipys_threads_on_one_simulator(rosenbrock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with pybridge.Simulator(rosenbrock, n_params=2) as sim, ThreadPoolExecutor(2) as threads:
        result = pybridge.minimize(sim, {"a": (-2.0, 2.0), "b": (-2.0, 2.0)}, method="differential_evolution",
                                   options={"workers": threads.map, "updating": "deferred", "seed": 3},
                                   stop=MaxEvaluations(101), progress=False)  # fmt: skip
        assert result.stop_rule == "max_evaluations" and result.nfev == 101 == sim.evaluations


def test_the_budget_holds_while_a_callback_lets_scipys_other_thread_run(rosenbrock) -> None:
    # The recorder's thread that spends the budget delivers the records (callbacks) before it blocks
    # the recorder; a callback that lets go of the GIL lets SciPy's other thread call meanwhile, and
    # that call must not go through.
    import time
    from concurrent.futures import ThreadPoolExecutor

    with pybridge.Simulator(rosenbrock, n_params=2) as sim, ThreadPoolExecutor(2) as threads:
        result = pybridge.minimize(sim, {"a": (-2.0, 2.0), "b": (-2.0, 2.0)}, method="differential_evolution",
                                   options={"workers": threads.map, "updating": "deferred", "seed": 3},
                                   stop=MaxEvaluations(101), progress=False,
                                   callback=lambda record: time.sleep(0.0002))  # fmt: skip
        assert (result.stop_rule, result.nfev, sim.evaluations) == ("max_evaluations", 101, 101)


SLOW = """
import time
def cost(x):
    time.sleep(0.001)
    return float((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)
pybridge.serve(cost, n_params=2)
"""


def test_the_result_counts_what_scipys_other_threads_still_evaluate_when_a_run_stops(python_simulator) -> None:
    # When one of SciPy's threads meets the spent budget, others may still be in an evaluation that the
    # budget admitted (the model takes a millisecond). They count: the run ends after them, and its
    # result, records and simulator agree.
    from concurrent.futures import ThreadPoolExecutor

    records: List[Any] = []
    with pybridge.Simulator(python_simulator(SLOW), n_params=2) as sim, ThreadPoolExecutor(3) as threads:
        result = pybridge.minimize(sim, {"a": (-2.0, 2.0), "b": (-2.0, 2.0)}, method="differential_evolution",
                                   options={"workers": threads.map, "updating": "deferred", "seed": 3},
                                   stop=MaxEvaluations(37), progress=False, callback=records.append)  # fmt: skip
        counted = sum(type(r) is Evaluation for r in records)
        assert (result.nfev, result.evaluations, counted, sim.evaluations) == (37, 37, 37, 37)
