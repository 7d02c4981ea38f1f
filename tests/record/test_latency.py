"""Every evaluation's record carries the bridge's two legs apart: the request's (sent until the
simulator picked it up) and the reply's (the simulator replied until the driver saw it). The model's
own time is what lies between them; a leg that cannot be measured is NaN, never a guess."""

from __future__ import annotations

import math
import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest

import pybridge
from pybridge import _native
from pybridge.optimize import MaxEvaluations
from pybridge.paths import bundled_simulator
from pybridge.record import SCHEMA_VERSION, Evaluation, read_journal

ROSENBROCK = [str(bundled_simulator("pybridge-rosenbrock"))]
V1_JOURNAL = Path(__file__).parent / "data" / "journal-v1.db"  # written by pybridge before the legs existed
MODEL_SECONDS = 0.02


#: How finely ``started`` and ``finished`` can tell times apart: they are ``time.time()`` floats, whose
#: step near today's epoch seconds is 0.24 µs, while the legs are whole nanoseconds. A fast round trip's
#: legs fill nearly all of it (1.54 + 1.10 µs of a 2.62 µs ``elapsed`` once), so its elapsed time may
#: read up to two steps short.
WALL_CLOCK_STEP = 2 * math.ulp(2.0e9)


def _legs_fit(request: float, reply: float, elapsed: float, model: float = 0.0) -> bool:
    """Both legs measured, and together with the model's time within the elapsed time the caller saw."""
    return 0.0 <= request and 0.0 <= reply and request + reply + model <= elapsed + WALL_CLOCK_STEP


def test_outcomes_split_the_elapsed_time_into_request_model_and_reply(python_simulator: Callable) -> None:
    command = python_simulator(f"pybridge.serve(lambda x: time.sleep({MODEL_SECONDS}) or float(x[0]), n_params=1)\n")
    with pybridge.Simulator(command) as sim:
        outcomes = sim.evaluate([[1.0], [2.0], [3.0]])
    for outcome in outcomes:
        elapsed = outcome.finished - outcome.started
        assert _legs_fit(outcome.request_latency, outcome.reply_latency, elapsed, MODEL_SECONDS), outcome
        # The legs are the bridge's: far below the model's 20 ms on an idle machine.
        assert outcome.request_latency + outcome.reply_latency < MODEL_SECONDS


def test_a_plain_call_is_not_timed(bundled: Callable) -> None:
    # The stamps put two clock reads on the round trip: only the evaluator protocol and the
    # calibration ask for them, never a plain sim(x) (nor one after them: the setting is restored).
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=2) as sim:
        sim([0.5, 0.5])
        assert all(math.isnan(leg) for leg in sim._port.latency)
        assert sim.evaluate([[0.5, 0.5]])[0].request_latency >= 0
        sim([0.5, 0.5])
        assert all(math.isnan(leg) for leg in sim._port.latency)
        assert all(math.isnan(leg) for leg in _native.take_latency())


def test_pool_outcomes_carry_each_simulators_legs(bundled: Callable) -> None:
    xs = list(np.random.default_rng(3).uniform(-2, 2, size=(40, 3)))
    with pybridge.Pool([bundled("pybridge-rosenbrock")], workers=2, n_params=3) as pool:
        outcomes = pool.evaluate(xs)
    assert {outcome.worker for outcome in outcomes} == {0, 1}
    for outcome in outcomes:
        assert _legs_fit(outcome.request_latency, outcome.reply_latency, outcome.finished - outcome.started), outcome


def test_a_single_vector_on_a_pool_is_timed_on_its_simulator_and_keeps_its_error(bundled: Callable) -> None:
    # One vector at a time (each start of a multi-start run) takes its own path through the pool.
    with pybridge.Pool([bundled("pybridge-rosenbrock")], workers=2, n_params=3) as pool:
        busy = pool._take()  # one simulator taken: the vector must go to the other
        try:
            (outcome,) = pool.evaluate([np.ones(3)])
        finally:
            pool._give(busy)
        (failed,) = pool.evaluate([np.array([np.nan, 1.0, 1.0])])
    assert outcome.value == 0.0 and outcome.error is None and outcome.worker == 1 - busy[0]
    assert _legs_fit(outcome.request_latency, outcome.reply_latency, outcome.finished - outcome.started), outcome
    assert failed.value is None and isinstance(failed.error, ValueError) and failed.started <= failed.finished


def _unaligned(x: np.ndarray) -> np.ndarray:
    """x in memory that is not 8-byte aligned, as a deserialised array can be (Dask's first one was)."""
    raw = np.zeros(x.nbytes + 1, dtype=np.uint8)[1:]
    view = raw.view(np.float64)
    view[:] = x
    assert not view.flags.aligned
    return view


def test_evaluations_through_the_slow_path_are_measured_too(bundled: Callable) -> None:
    # An unaligned vector is not the fast path's: the pool evaluates it through the slow path, whose
    # one request on the same simulator is still this evaluation's.
    xs = [_unaligned(x) for x in np.random.default_rng(4).uniform(-2, 2, size=(6, 3))]
    with pybridge.Pool([bundled("pybridge-rosenbrock")], workers=2, n_params=3) as pool:
        outcomes = pool.evaluate(xs)
    for outcome in outcomes:
        assert _legs_fit(outcome.request_latency, outcome.reply_latency, outcome.finished - outcome.started), outcome


def _calibrate(evaluator, method: str, journal: Path, records: List[Evaluation], **extra):
    return pybridge.minimize(evaluator, {"a": (-2, 2), "b": (-2, 2)}, method=method, journal=journal,
                             stop=MaxEvaluations(60), progress=False, x0=[-1.2, 1.0],
                             callback=lambda record: records.append(record) if type(record) is Evaluation else None,
                             **extra)  # fmt: skip


@pytest.mark.parametrize("method", ["Nelder-Mead", "L-BFGS-B"])  # the native recorder, and gradients in Python
def test_calibration_records_and_journal_rows_carry_the_legs(tmp_path: Path, method: str) -> None:
    records: List[Evaluation] = []
    with pybridge.Simulator(ROSENBROCK, n_params=2) as sim:
        result = _calibrate(sim, method, tmp_path / "run.db", records)
    assert len(records) == result.nfev >= 40
    for record in records:
        assert _legs_fit(record.request_latency, record.reply_latency, record.elapsed), record
    with closing(sqlite3.connect(tmp_path / "run.db")) as db:
        rows = db.execute("SELECT request_latency, reply_latency FROM evaluations ORDER BY id").fetchall()
    assert rows == [(record.request_latency, record.reply_latency) for record in records]  # exact doubles
    contents = read_journal(tmp_path / "run.db")
    np.testing.assert_array_equal(contents.request_latency, [record.request_latency for record in records])
    np.testing.assert_array_equal(contents.reply_latency, [record.reply_latency for record in records])


def test_calibration_on_a_pool_records_the_legs(tmp_path: Path, bundled: Callable) -> None:
    records: List[Evaluation] = []
    with pybridge.Pool([bundled("pybridge-rosenbrock")], workers=2, n_params=2) as pool:
        _calibrate(pool, "L-BFGS-B", tmp_path / "run.db", records)
    assert records and all(_legs_fit(r.request_latency, r.reply_latency, r.elapsed) for r in records)


def test_threads_sharing_a_simulator_each_get_their_own_legs(python_simulator: Callable) -> None:
    # One thread's evaluations take 30 ms, the other's none: a leg read from the other thread's
    # evaluation, or from the shared channel after the other thread's reply, would not fit.
    command = python_simulator("pybridge.serve(lambda x: time.sleep(x[0]) or float(x[0]), n_params=1)\n")
    seen: dict = {}
    with pybridge.Simulator(command) as sim:

        def run(model: float) -> None:
            seen[model] = sim.evaluate([[model]] * 15)

        threads = [threading.Thread(target=run, args=(model,)) for model in (0.03, 0.0)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for model, outcomes in seen.items():
        for outcome in outcomes:
            elapsed = outcome.finished - outcome.started
            assert _legs_fit(outcome.request_latency, outcome.reply_latency, elapsed, model), (model, outcome)


def test_a_journal_written_before_the_legs_is_read_and_resumed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(V1_JOURNAL, path)
    old = read_journal(path)
    assert old.total == 40 and np.isnan(old.request_latency).all() and np.isnan(old.reply_latency).all()
    records: List[Evaluation] = []
    with pybridge.Simulator(ROSENBROCK, n_params=2) as sim:
        # Written by another installation: its simulator's path differs from this one's.
        result = pybridge.minimize(sim, {"a": (-2, 2), "b": (-2, 2)}, method="Nelder-Mead", x0=[-1.2, 1.0],
                                   journal=path, resume=True, check_command=False, stop=MaxEvaluations(60),
                                   progress=False, callback=records.append)  # fmt: skip
    assert result.nfev == 60
    evaluations = [r for r in records if type(r) is Evaluation]
    assert [r.status for r in evaluations] == ["replayed"] * 40 + ["ok"] * 20
    assert all(math.isnan(r.request_latency) for r in evaluations[:40])  # the old rows never measured them
    contents = read_journal(path)
    assert contents.total == 60 and np.isnan(contents.request_latency[:40]).all()
    assert (contents.request_latency[40:] >= 0).all() and (contents.reply_latency[40:] >= 0).all()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
