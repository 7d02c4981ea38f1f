"""The SQLite journal: every evaluation written as it happens, readable with sqlite3 (and pandas),
resumed bit for bit after kill -9, and never mixed with another problem's."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing

import numpy as np
import pytest

import pybridge
from pybridge import JournalError
from pybridge.optimize import MaxEvaluations, Parameter, Parameters
from pybridge.paths import bundled_simulator
from pybridge.record import SCHEMA_VERSION, Evaluation, read_journal
from pybridge.record.journal import FLUSH_ROWS, Journal

ROSENBROCK = [str(bundled_simulator("pybridge-rosenbrock"))]
PARAMS = {"x": [(-2.0, 2.0)] * 8}
# Nelder-Mead is deterministic: an uninterrupted run and a resumed one must agree bit for bit. These
# 8-D Rosenbrock takes it well past 1000 evaluations (without revisiting points), so the budget ends it.
NM = {"maxfev": 10**6, "xatol": 1e-8, "fatol": 1e-10}


def _calibrate(journal, resume=False, budget=1000, **extra):
    with pybridge.Simulator(ROSENBROCK, n_params=8) as sim:
        return pybridge.minimize(sim, PARAMS, method="Nelder-Mead", options=NM, stop=MaxEvaluations(budget),
                                 journal=journal, resume=resume, **extra)


def test_every_evaluation_is_a_row_readable_with_sqlite3(tmp_path) -> None:
    path = tmp_path / "run.db"
    with pybridge.Simulator(ROSENBROCK, n_params=2) as sim:
        result = pybridge.minimize(sim, Parameters(a=Parameter((-2, 2), unit="m"), b=(-2, 2)), method="L-BFGS-B",
                                   journal=path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT a, b, cost, grad_norm, kind, status, worker, finished >= started FROM evaluations "
                      "ORDER BY id").fetchall()
    assert len(rows) == result.nfev and all(row[4:] == ("gradient", "ok", 0, 1) for row in rows)
    best = min(rows, key=lambda row: row[2])
    assert (best[0], best[1], best[2]) == (result.x[0], result.x[1], result.fun)  # REAL columns are exact doubles
    # The gradient as float64 bytes; x too, but only for problems too large for a column per value
    x, gradient, norm = db.execute("SELECT x, gradient, grad_norm FROM evaluations ORDER BY cost LIMIT 1").fetchone()
    assert x is None and np.linalg.norm(np.frombuffer(gradient)) == norm
    run = db.execute("SELECT method, finished IS NOT NULL, message, resumed FROM runs").fetchall()
    assert run == [("l-bfgs-b", 1, result.message, 0)]
    assert db.execute("SELECT count(*) FROM iterations").fetchone()[0] == result.nit
    db.close()
    contents = read_journal(path)
    assert contents.labels == ["a", "b"] and contents.x.shape == (result.nfev, 2)
    assert contents.problem["parameters"]["a"]["unit"] == "m"


def test_pandas_reads_it(tmp_path) -> None:
    pandas = pytest.importorskip("pandas")
    path = tmp_path / "run.db"
    _calibrate(path, budget=50)
    with closing(sqlite3.connect(path)) as db:
        frame = pandas.read_sql("SELECT * FROM evaluations", db)
    # The parameters' columns, then the latencies (added by schema version 2, so last in every journal).
    assert len(frame) == 50 and list(frame.columns[-10:]) == [f"x[{i}]" for i in range(8)] + [
        "request_latency", "reply_latency"]  # fmt: skip
    assert (frame["request_latency"] >= 0).all() and (frame["reply_latency"] >= 0).all()
    assert frame["cost"].min() == read_journal(path).cost.min()


def test_a_stopped_run_resumes_to_the_uninterrupted_result_bit_for_bit(tmp_path) -> None:
    whole = _calibrate(tmp_path / "whole.db", budget=10**6)
    first = _calibrate(tmp_path / "resumed.db", budget=400)
    assert first.stop_rule == "max_evaluations" and first.evaluations == 400
    again = _calibrate(tmp_path / "resumed.db", resume=True, budget=10**6)
    assert whole.nfev > 1000 and again.replayed == 400 and again.evaluations == whole.nfev - 400
    assert again.x.tolist() == whole.x.tolist() and again.fun == whole.fun and again.nfev == whole.nfev
    assert again.message == whole.message
    runs = read_journal(tmp_path / "resumed.db").runs
    assert [run["resumed"] for run in runs] == [0, 1]


def test_kill_9_in_the_middle_then_resume_costs_only_what_was_lost(tmp_path) -> None:
    path = tmp_path / "killed.db"
    script = tmp_path / "calibrate.py"
    # The driver kills itself (SIGKILL: no cleanup, no flush) at evaluation 900 of 1000.
    script.write_text(textwrap.dedent(f"""
        import os, signal
        import pybridge
        from pybridge.optimize import MaxEvaluations
        from pybridge.record import Evaluation

        def die(record):
            if isinstance(record, Evaluation) and record.number == 900:
                os.kill(os.getpid(), signal.SIGKILL)

        with pybridge.Simulator({ROSENBROCK!r}, n_params=8) as sim:
            pybridge.minimize(sim, {PARAMS!r}, method="Nelder-Mead", options={NM!r}, stop=MaxEvaluations(1000),
                              journal={str(path)!r}, callback=die)
    """))
    killed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    contents = read_journal(path)
    assert contents.runs[-1]["finished"] is None  # the run never ended ...
    assert contents.interrupted and not contents.running  # ... and nobody writes it: it was interrupted
    assert 900 - FLUSH_ROWS <= len(contents.ids) < 900  # the last small batch died with the driver
    # What a user watching it sees: the monitor says so and ends (it used to wait for the dead run forever).
    monitor = subprocess.run([sys.executable, "-m", "pybridge", "monitor", str(path), "--interval", "0.05"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert monitor.returncode == 0 and "interrupted" in monitor.stdout and "resume=True" in monitor.stdout
    history = subprocess.run([sys.executable, "-m", "pybridge", "history", str(path), "--last", "1"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "run 1: nelder-mead - interrupted" in history.stdout, history.stdout

    resumed = _calibrate(path, resume=True)
    whole = _calibrate(tmp_path / "whole.db")
    assert resumed.replayed == len(contents.ids) and resumed.evaluations == 1000 - len(contents.ids)
    assert resumed.evaluations <= 100 + FLUSH_ROWS
    assert resumed.x.tolist() == whole.x.tolist() and resumed.fun == whole.fun


def test_a_journal_in_use_by_a_running_calibration_is_refused_and_readable(tmp_path) -> None:
    path = tmp_path / "busy.db"
    _calibrate(path, budget=30)
    # Another calibration has it open (a second copy of a job, a requeued batch job): two writers would
    # interleave their runs in one journal, and a monitor could not tell which one it shows.
    first = Journal(path, _problem_of(path), [f"x[{i}]" for i in range(8)], resume=True)
    try:
        with pytest.raises(JournalError, match="being written by another calibration.*choose another path"):
            _calibrate(path, resume=True)
        first.begin_run("nelder-mead", {}, resumed=True)
        contents = read_journal(path)  # a reader is never refused, and sees a live run
        assert contents.running and not contents.interrupted and len(contents.ids) == 30
    finally:
        first.close()
    contents = read_journal(path)
    assert contents.interrupted and not contents.running  # its writer closed without ending the run
    assert _calibrate(path, resume=True, budget=40).replayed == 30  # free again


@pytest.mark.parametrize("method", ["differential_evolution", "dual_annealing"])
def test_a_stochastic_global_method_resumes_bit_for_bit_from_seed(tmp_path, method) -> None:
    # seed= (0 by default) seeds the method's own draws too, unless its options give a seed: without
    # that, a resumed differential evolution drew other vectors, replayed none of the journal, and ended
    # elsewhere than the run it continued.
    params = {"x": [(-2.0, 2.0)] * 3}

    def calibrate(budget, **journal):
        with pybridge.Simulator(ROSENBROCK, n_params=3) as sim:
            return pybridge.minimize(sim, params, method=method, stop=MaxEvaluations(budget), progress=False,
                                     **journal)  # fmt: skip

    whole = calibrate(400)
    calibrate(150, journal=tmp_path / "run.db")
    resumed = calibrate(400, journal=tmp_path / "run.db", resume=True)
    assert resumed.replayed == 150 and resumed.evaluations == 250
    assert resumed.x.tolist() == whole.x.tolist() and resumed.fun == whole.fun
    assert calibrate(400).x.tolist() == whole.x.tolist()  # and so is a run again from the start


def _problem_of(path):
    return read_journal(path).problem


def test_a_resumed_multistart_run_on_a_pool_is_bit_identical(tmp_path) -> None:
    def run(path, budget, resume=False):
        with pybridge.Pool(ROSENBROCK, workers=2, n_params=8) as pool:
            return pybridge.minimize(pool, PARAMS, method="L-BFGS-B", n_starts=3, seed=5, journal=path,
                                     resume=resume, stop=MaxEvaluations(budget))
    whole = run(tmp_path / "whole.db", 10**6)
    run(tmp_path / "part.db", 40)
    again = run(tmp_path / "part.db", 10**6, resume=True)
    assert again.replayed == 40
    assert [s.x.tolist() for s in again.starts] == [s.x.tolist() for s in whole.starts]
    assert again.fun == whole.fun


@pytest.mark.parametrize("name, method, params", [
    ("pybridge-rosenbrock", "L-BFGS-B", {"x": [(-2.0, 2.0)] * 8}),   # costs with the simulator's gradients
    ("pybridge-decay", "least_squares", {"a": (0.1, 5.0), "k": (0.01, 2.0), "c": (-1.0, 1.0)}),  # residuals
])  # fmt: skip
def test_gradients_and_residuals_replay_bit_for_bit(tmp_path, name, method, params) -> None:
    def calibrate(budget, **journal):
        with pybridge.Simulator([str(bundled_simulator(name))], n_params=sum(len(b) if isinstance(b, list) else 1
                                                                          for b in params.values())) as sim:  # fmt: skip
            return pybridge.minimize(sim, params, method=method, stop=MaxEvaluations(budget), progress=False,
                                     **journal)  # fmt: skip

    whole = calibrate(10**6)
    part = calibrate(12, journal=tmp_path / "run.db")
    resumed = calibrate(10**6, journal=tmp_path / "run.db", resume=True)
    assert whole.nfev > 12 and part.nfev == 12 and resumed.replayed == 12
    assert resumed.x.tolist() == whole.x.tolist() and resumed.fun == whole.fun and resumed.nfev == whole.nfev


def test_replay_with_a_tolerance(tmp_path) -> None:
    path = tmp_path / "run.db"
    _calibrate(path, budget=200)
    exact = _calibrate(path, resume=True, budget=200)
    assert exact.replayed == 200 and exact.evaluations == 0
    # A start moved by 1e-13 misses every exact match, but not a match within 1e-9.
    moved = {"x": [1e-13] + [0] * 7}
    assert _calibrate(path, resume=True, budget=50, x0=moved).replayed == 0
    assert _calibrate(path, resume=True, budget=50, x0=moved, replay_tolerance=1e-9).replayed == 50


def test_what_a_resume_holds_of_a_large_journal_is_columns(tmp_path) -> None:
    # A days-long calibration journals millions of evaluations; a resume held each as a record (x as
    # its own array): 856 MB for 10^6 evaluations of 8 values. Now as columns and an index by vector.
    import tracemalloc

    path = tmp_path / "large.db"
    labels = [f"x[{i}]" for i in range(8)]
    journal = Journal(path, {"large": 1}, labels, resume=False)
    journal.begin_run("nelder-mead", {}, resumed=False)
    rows = 20_000
    x = np.random.default_rng(1).uniform(-2, 2, size=(rows, 8))
    journal.add_all([Evaluation(i, 0, "cost", x[i], float(i), None, None, "ok", None, 0.0, 1.0, 0) for i in range(rows)])
    journal.close()
    journal = Journal(path, {"large": 1}, labels, resume=True)
    try:
        tracemalloc.start()
        replay = journal.replayable()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        journal.close()
    # 522 bytes per evaluation as records; x itself is 64 of them.
    assert len(replay) == rows and held / rows < 300, f"{held / rows:.0f} bytes per journalled evaluation"
    hit = replay.find("cost", x[1234].copy())
    assert hit is not None and hit.cost == 1234.0 and hit.x.tolist() == x[1234].tolist()
    assert replay.find("gradient", x[1234].copy()) is None  # journalled without a gradient
    assert replay.find("cost", x[1234] + 1e-12) is None and replay.find("cost", x[1234] + 1e-12, 1e-9) is not None


def _large_journal(path, rows: int) -> np.ndarray:
    """A journal of ``rows`` evaluations of 8 values (costs 0, 1, 2, ... shuffled), written as the
    native recorder hands them over; returns the costs in the order written."""
    from pybridge.record.records import Batch

    rng = np.random.default_rng(2)
    cost = rng.permutation(rows).astype(float)
    journal = Journal(path, {"large": 1}, [f"x[{i}]" for i in range(8)], resume=False)
    journal.begin_run("nelder-mead", {}, resumed=False)
    for at in range(0, rows, 4096):
        end = min(rows, at + 4096)
        times = np.arange(at, end, dtype=float)
        latency = np.full(end - at, 2e-6)
        journal.add_all([Batch(at + 1, 0, rng.uniform(-2, 2, size=(end - at, 8)), cost[at:end], times, times + 0.5,
                               latency, latency, None, [], ([], [], [], [], []), np.empty((0, 8)))])  # fmt: skip
    journal.end_run("done", 0.0)
    journal.close()
    return cost


def test_reading_a_large_journal_holds_columns_not_rows(tmp_path) -> None:
    # `pybridge history`, `plot` and a monitor's first look read whole journals: at 10^6 evaluations
    # that held every row as a Python tuple, 1 GB and 8 s for `history --last 3`.
    import tracemalloc

    path = tmp_path / "large.db"
    rows = 20_000
    cost = _large_journal(path, rows)
    tracemalloc.start()
    contents = read_journal(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(contents.ids) == contents.total == rows and contents.cost.tolist() == cost.tolist()
    # The columns themselves are ~130 bytes per evaluation (x: 64).
    assert peak / rows < 400, f"{peak / rows:.0f} bytes per evaluation at the peak"


def test_the_last_or_best_evaluations_are_read_alone(tmp_path) -> None:
    path = tmp_path / "large.db"
    cost = _large_journal(path, 20_000)
    whole = read_journal(path)
    last = read_journal(path, last=3)
    assert last.ids.tolist() == whole.ids[-3:].tolist() and last.cost.tolist() == cost[-3:].tolist()
    assert last.x.tolist() == whole.x[-3:].tolist() and last.total == 20_000
    best = read_journal(path, best=4)  # lowest first
    assert best.cost.tolist() == [0.0, 1.0, 2.0, 3.0] and best.total == 20_000
    assert best.x.tolist() == whole.x[np.argsort(cost)[:4]].tolist()
    assert read_journal(path, last=0).ids.tolist() == []
    with pytest.raises(ValueError, match="since"):
        read_journal(path, since=whole, last=3)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"params": {"x": [(-2.0, 3.0)] * 8}}, "another problem .*parameters: x differs"),
        ({"params": {"y": [(-2.0, 2.0)] * 8}}, "another problem .*parameters: x, y differ"),
        ({"command": ROSENBROCK + ["--batch", "1"]}, "another problem .*simulator: command differs"),
    ],
)
def test_a_journal_of_another_problem_is_refused(tmp_path, change, message) -> None:
    path = tmp_path / "run.db"
    _calibrate(path, budget=20)
    with pybridge.Simulator(change.get("command", ROSENBROCK), n_params=8) as sim:
        with pytest.raises(JournalError, match=message):
            pybridge.minimize(sim, change.get("params", PARAMS), method="Nelder-Mead", journal=path, resume=True)
        assert sim.evaluations == 0
    assert len(read_journal(path).ids) == 20  # untouched


def test_a_resubmitted_job_under_another_command_resumes_when_the_user_vouches_for_it(tmp_path) -> None:
    # A batch job resubmitted after a crash starts the same model by another command: a job-specific
    # path in it (the scratch folder, mpirun's hostfile under PBS), or the executable rebuilt elsewhere.
    # Refused by default (the journal cannot tell a changed model from a moved one), and the refusal says
    # how to vouch for it; then it replays like any resume, and the other checks still hold.
    commands = []
    for job in ("job-1", "job-2"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "rosenbrock").symlink_to(ROSENBROCK[0])
        commands.append([str(tmp_path / job / "rosenbrock")])
    path = tmp_path / "run.db"

    def calibrate(command, budget, params=PARAMS, **extra):
        with pybridge.Simulator(command, n_params=8) as sim:
            return pybridge.minimize(sim, params, method="Nelder-Mead", options=NM, stop=MaxEvaluations(budget),
                                     journal=path, **extra)

    calibrate(commands[0], 300)
    with pytest.raises(JournalError, match=r"simulator: command differs.*check_command=False"):
        calibrate(commands[1], 1000, resume=True)
    with pytest.raises(JournalError, match="parameters: x differs"):  # still checked
        calibrate(commands[1], 1000, params={"x": [(-2.0, 3.0)] * 8}, resume=True, check_command=False)
    resumed = calibrate(commands[1], 1000, resume=True, check_command=False)
    whole = _calibrate(tmp_path / "whole.db", budget=1000)
    assert resumed.replayed == 300 and resumed.evaluations == 700
    assert resumed.x.tolist() == whole.x.tolist() and resumed.fun == whole.fun
    runs = read_journal(path).runs
    options = [json.loads(run["options"]) for run in runs]
    assert len(runs) == 2 and options[1]["command"] == commands[1]  # what each run was started by
    assert "command" not in options[0]


@pytest.mark.parametrize("existing", [False, True])
def test_the_run_writes_with_synchronous_normal(tmp_path, existing) -> None:
    # A new journal is created without syncs (synchronous=OFF); the run's commits must not inherit that,
    # or an OS crash could corrupt a journal that holds evaluations.
    from pybridge.record.journal import Journal

    path = tmp_path / "run.db"
    if existing:
        Journal(path, {"p": 1}, ["a"], resume=False).close()
    journal = Journal(path, {"p": 1}, ["a"], resume=True)
    try:
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        journal.close()


def test_an_existing_journal_needs_resume_true(tmp_path) -> None:
    path = tmp_path / "run.db"
    _calibrate(path, budget=20)
    with pytest.raises(JournalError, match="already holds 20 evaluations.*resume=True"):
        _calibrate(path)


def test_corrupted_or_foreign_files_are_refused(tmp_path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00not a database at all" * 100)
    with pytest.raises(JournalError, match="not an SQLite file"):
        _calibrate(garbage)
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as db, db:
        db.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(JournalError, match="not a pybridge journal"):
        _calibrate(foreign)
    with pytest.raises(JournalError, match="not a pybridge journal"):
        read_journal(foreign)
    truncated = tmp_path / "truncated.db"
    _calibrate(truncated, budget=300)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2] + b"\xff" * 4096)
    with pytest.raises(JournalError):
        _calibrate(truncated, resume=True)
    with pytest.raises(JournalError):
        read_journal(garbage)


def test_a_path_that_cannot_be_a_journal_says_what_to_do(tmp_path) -> None:
    with pytest.raises(JournalError, match=r"folder .*missing.* does not exist: create it"):
        _calibrate(tmp_path / "missing" / "run.db", budget=5)
    with pytest.raises(JournalError, match="is a folder; give a file name"):
        _calibrate(tmp_path, budget=5)


def test_a_large_problem_keeps_its_vector_as_bytes(tmp_path, monkeypatch) -> None:
    import pybridge.record.journal as journal_module

    monkeypatch.setattr(journal_module, "READABLE_SLOTS", 4)  # so that 8 values count as large
    path = tmp_path / "large.db"
    first = _calibrate(path, budget=100)
    with closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(evaluations)")]
        blobs = [np.frombuffer(row[0]) for row in db.execute("SELECT x FROM evaluations ORDER BY id")]
    assert "x[0]" not in columns and len(blobs) == 100
    assert read_journal(path).x.tolist() == [b.tolist() for b in blobs]
    again = _calibrate(path, budget=100, resume=True)
    assert again.replayed == 100 and again.x.tolist() == first.x.tolist()


@pytest.mark.parametrize("width", [3, 100])  # 100 values: fewer rows per statement (999 bound values at most)
@pytest.mark.parametrize("start", [0, 2])
def test_a_batch_goes_in_by_chunks_and_reads_back_exactly(tmp_path, width, start) -> None:
    from pybridge.record.journal import Journal
    from pybridge.record.records import Batch

    rng = np.random.default_rng(width)
    count, iterations = 70, 5  # 70: whole chunks of several rows, and a remainder of single rows
    x = rng.uniform(-1, 1, (count, width)) / 3  # values with all 53 bits in use
    cost = (rng.uniform(size=count) * 1e-7).tolist()
    started = (1.7e9 + np.arange(count) * 1e-6).tolist()
    finished = [t + 3e-7 for t in started]
    after = [0, 13, 14, 40, 70]  # evaluations of this batch before each iteration
    columns = ([1, 2, 3, 4, 5], [float("nan"), 0.5, 0.25, 0.125, 0.0625], [math.inf, 0.5, 0.25, 0.125, 0.0625],
               [a + 10 for a in after], [1.7e9 + i for i in range(iterations)])  # fmt: skip
    labels = [f"x[{i}]" for i in range(width)]
    journal = Journal(tmp_path / "batch.db", {"test": width}, labels, resume=False)
    journal.begin_run("nelder-mead", {}, resumed=False)
    request_latency = rng.uniform(size=count).tolist()
    reply_latency = [math.nan] * 3 + rng.uniform(size=count - 3).tolist()  # NaN: not measured
    journal.add_all([Batch(11, start, x, *map(np.array, (cost, started, finished, request_latency, reply_latency)),
                           None, after, columns, x[after[:-1] + [69]])])  # fmt: skip
    journal.close()
    with closing(sqlite3.connect(tmp_path / "batch.db")) as db:
        rows = db.execute(f"SELECT typeof(run), run, start, worker, kind, status, cost, started, finished, "
                          f"request_latency, reply_latency, "
                          f"{', '.join(f'{chr(34)}{label}{chr(34)}' for label in labels)} FROM evaluations ORDER BY id").fetchall()  # fmt: skip
        assert [row[:6] for row in rows] == [("integer", 1, start, 0, "cost", "ok")] * count
        assert [row[6] for row in rows] == cost and [row[7] for row in rows] == started
        assert [row[8] for row in rows] == finished and [row[9] for row in rows] == request_latency
        assert [row[10] for row in rows] == [None] * 3 + reply_latency[3:]  # SQLite stores NaN as NULL
        assert [list(row[11:]) for row in rows] == x.tolist()
        kept = db.execute("SELECT typeof(iteration), iteration, start, cost, best_cost, evaluations, time "
                          "FROM iterations ORDER BY id").fetchall()  # fmt: skip
    assert kept == [("integer", n, start, None if c != c else c, b, e, t) for n, c, b, e, t in zip(*columns)]


def test_a_run_that_raised_is_recorded_as_ended_by_its_error(tmp_path) -> None:
    # The error reaches the caller as it was; the journal says the run ended and why, so that
    # `pybridge monitor` and `read_journal(...).running` do not take it for one still going (or killed).
    journal = tmp_path / "run.db"

    def failing(record):
        if record.number == 300:
            raise ValueError("the callback failed")

    with pybridge.Simulator([bundled_simulator("pybridge-rosenbrock")], n_params=2) as sim:
        with pytest.raises(ValueError, match="the callback failed"):
            pybridge.minimize(sim, {"x": [(-2.0, 2.0)] * 2}, method="Nelder-Mead", journal=journal, progress=False,
                              callback=failing, options={"maxfev": 5000, "xatol": 0, "fatol": 0})  # fmt: skip
    contents = read_journal(journal)
    assert not contents.running
    assert contents.runs[-1]["message"] == "failed: ValueError: the callback failed"
    assert contents.runs[-1]["best_cost"] == np.nanmin(contents.cost) and len(contents.ids) >= 300


def test_a_journal_path_may_start_with_the_home_folder(tmp_path, monkeypatch) -> None:
    # journal="~/runs/cal.db" made a folder named "~" the parent, and said "the folder ~/runs does not
    # exist" of a folder that does.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "runs").mkdir()
    result = _calibrate("~/runs/cal.db", budget=20)
    assert result.journal == str(tmp_path / "runs" / "cal.db")
    assert read_journal("~/runs/cal.db").total == 20


def test_a_journal_of_another_schema_version_is_refused_by_both_versions(tmp_path) -> None:
    # The reader said only "not a pybridge journal of schema version N", also of a pybridge journal
    # written by a newer release, which needs an upgrade rather than another file.
    path = tmp_path / "newer.db"
    _calibrate(path, budget=20)
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match=rf"schema version {SCHEMA_VERSION + 1}.*reads versions 1 to {SCHEMA_VERSION}"):
        read_journal(path)
    with pytest.raises(JournalError, match=rf"schema version {SCHEMA_VERSION + 1}.*reads versions 1 to {SCHEMA_VERSION}"):
        _calibrate(path, resume=True)
