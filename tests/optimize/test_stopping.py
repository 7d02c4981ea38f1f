"""Every stopping rule ends any method gracefully, with the best point so far and the rule named;
Ctrl-C does the same, without a traceback from inside SciPy."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pybridge
from pybridge.optimize import MaxEvaluations, NoImprovement, OnSignal, StopFile, TargetCost, WallClock
from pybridge.optimize.calibration import DRAIN_RECORDS
from pybridge.record import Evaluation, read_journal

BOX4 = {"x": [(-2.0, 2.0)] * 4}


def _best(records):
    return min(r.cost for r in records if isinstance(r, Evaluation))


@pytest.mark.parametrize("method", ["Nelder-Mead", "L-BFGS-B", "differential_evolution", "direct"])
def test_max_evaluations_ends_any_method_at_exactly_that_count(rosenbrock, method) -> None:
    records = []
    with pybridge.Simulator(rosenbrock, n_params=4) as sim:
        result = pybridge.minimize(sim, BOX4, method=method, stop=MaxEvaluations(37), callback=records.append,
                                   options={"seed": 3} if method == "differential_evolution" else None)
        assert sim.evaluations == 37
    assert result.stop_rule == "max_evaluations" and not result.success
    assert result.message == "stopped: maximum of 37 evaluations reached"
    assert result.nfev == 37 and result.fun == _best(records)  # the best point so far
    best = min((r for r in records if isinstance(r, Evaluation)), key=lambda r: r.cost)
    assert result.x.tolist() == best.x.tolist() and result.params["x"].tolist() == best.x.tolist()


def test_target_cost_stops_at_the_first_evaluation_that_reaches_it(rosenbrock) -> None:
    records = []
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        result = pybridge.minimize(sim, {"a": (-2, 2), "b": (-2, 2)}, method="Nelder-Mead", stop=TargetCost(1e-3),
                                   callback=records.append)
    costs = [r.cost for r in records if isinstance(r, Evaluation)]
    assert result.stop_rule == "target_cost" and result.success
    assert result.fun <= 1e-3 and costs[-1] <= 1e-3 and min(costs[:-1]) > 1e-3


def test_of_two_targets_the_higher_is_reached_first(rosenbrock) -> None:
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        result = pybridge.minimize(sim, {"a": (-2, 2), "b": (-2, 2)}, method="Nelder-Mead",
                                   stop=[TargetCost(1e-3), TargetCost(1e-1)])
    assert result.stop_rule == "target_cost" and "target cost 0.1 reached" in result.message and result.fun > 1e-3


def test_no_improvement_counts_iterations(rosenbrock) -> None:
    with pybridge.Simulator(rosenbrock, n_params=4) as sim:
        full = pybridge.minimize(sim, BOX4, method="Nelder-Mead")
        result = pybridge.minimize(sim, BOX4, method="Nelder-Mead", stop=NoImprovement(iterations=3, rtol=0.05))
    assert result.stop_rule == "no_improvement" and "last 3 iterations" in result.message
    assert 3 < result.nit < full.nit


def test_wall_clock_budget(python_simulator) -> None:
    command = python_simulator(
        """
        def cost(x):
            time.sleep(0.01)  # the model's own time
            return float(np.sum(x ** 2))
        pybridge.serve(cost, n_params=2)
        """
    )
    with pybridge.Simulator(command) as sim:
        result = pybridge.minimize(sim, {"a": (-1, 1), "b": (-1, 1)}, method="Nelder-Mead", stop=WallClock(0.3),
                                   options={"xatol": 1e-14, "fatol": 0, "maxfev": 10**6})
    assert result.stop_rule == "wall_clock" and "0.3 s" in result.message
    assert 10 <= result.nfev <= 60


def test_a_stop_file_touched_from_outside(rosenbrock, tmp_path) -> None:
    stop_file = tmp_path / "STOP"

    def touch_at_100(record) -> None:
        if isinstance(record, Evaluation) and record.number == 100:
            stop_file.touch()

    with pybridge.Simulator(rosenbrock, n_params=4) as sim:
        result = pybridge.minimize(sim, BOX4, method="Nelder-Mead", stop=StopFile(stop_file, interval=0),
                                   callback=touch_at_100)
    # Callbacks and these rules take the records in batches, in order: the rule fires within one batch.
    assert result.stop_rule == "stop_file" and 100 <= result.nfev <= 100 + DRAIN_RECORDS
    assert str(stop_file) in result.message


def test_a_signal_from_outside(rosenbrock) -> None:
    def signal_at_50(record) -> None:
        if isinstance(record, Evaluation) and record.number == 50:
            os.kill(os.getpid(), signal.SIGUSR1)

    before = signal.getsignal(signal.SIGUSR1)
    with pybridge.Simulator(rosenbrock, n_params=4) as sim:
        result = pybridge.minimize(sim, BOX4, method="Nelder-Mead", stop=OnSignal(), callback=signal_at_50)
    assert result.stop_rule == "signal" and 50 <= result.nfev <= 50 + DRAIN_RECORDS and "SIGUSR1" in result.message
    assert signal.getsignal(signal.SIGUSR1) == before  # the handler is ours only while minimize runs


def test_a_rule_ends_every_start_of_a_multistart_run(rosenbrock) -> None:
    with pybridge.Pool(rosenbrock, workers=2, n_params=4) as pool:
        result = pybridge.minimize(pool, BOX4, method="Nelder-Mead", n_starts=4, stop=MaxEvaluations(200))
    assert sum(start.nfev for start in result.starts) == 200
    assert all(start.stop_rule == "max_evaluations" for start in result.starts)
    assert result.fun == min(start.fun for start in result.starts) and math.isfinite(result.fun)


@pytest.mark.parametrize("starts", [1, 2])
def test_ctrl_c_ends_the_run_with_the_best_point_and_the_journal_intact(rosenbrock, tmp_path, starts) -> None:
    journal = tmp_path / "run.db"
    script = tmp_path / "run.py"
    # The driver interrupts itself at evaluation 300 as a terminal's Ctrl-C would (SIGINT).
    script.write_text(textwrap.dedent(f"""
        import os, signal
        import pybridge
        from pybridge.record import Evaluation

        def interrupt(record):
            if isinstance(record, Evaluation) and record.number == 300:
                os.kill(os.getpid(), signal.SIGINT)

        with pybridge.Pool({rosenbrock!r}, workers=2, n_params=4) as pool:
            result = pybridge.minimize(pool, {{"x": [(-2.0, 2.0)] * 4}}, method="Nelder-Mead", n_starts={starts},
                                       callback=interrupt, journal={str(journal)!r},
                                       options={{"maxfev": 10**6, "xatol": 0, "fatol": 0}})
        print("RESULT", result.stop_rule, result.nfev, repr(result.fun), result.message)
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))
    _, rule, nfev, fun, message = line.split(" ", 4)
    assert rule == "interrupted" and message == "stopped: interrupted (Ctrl-C)"
    contents = pybridge.record.read_journal(journal)
    assert not contents.running and contents.runs[-1]["message"] == message
    assert len(contents.ids) >= 300 and float(fun) == np.nanmin(contents.cost)


def test_ctrl_c_while_the_starts_are_being_started_ends_the_run(rosenbrock, tmp_path) -> None:
    # On a loaded machine starting a start's thread can take long enough for the first start to make
    # 300 evaluations: a Ctrl-C then landed in the main thread while it was still starting them, outside
    # the code that ends the run, and the first start ran on to its end (maxfev 10**6) while the thread
    # pool waited for it (3 hangs in 8 runs of the test above with three CPU-bound processes beside it).
    # Here the Ctrl-C lands exactly there, as the second start is being started.
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import concurrent.futures
        import pybridge
        from pybridge.optimize import solve

        class Interrupted(concurrent.futures.ThreadPoolExecutor):
            submitted = 0
            def submit(self, *args, **kwargs):
                Interrupted.submitted += 1
                if Interrupted.submitted == 2:
                    raise KeyboardInterrupt
                return super().submit(*args, **kwargs)

        solve.ThreadPoolExecutor = Interrupted
        with pybridge.Pool({rosenbrock!r}, workers=2, n_params=4) as pool:
            result = pybridge.minimize(pool, {{"x": [(-2.0, 2.0)] * 4}}, method="Nelder-Mead", n_starts=2,
                                       options={{"maxfev": 10**6, "xatol": 0, "fatol": 0}})
        print("RESULT", result.stop_rule, len(result.starts), result.message)
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "RESULT interrupted 2 stopped: interrupted (Ctrl-C)" in run.stdout, run.stdout


def test_ctrl_c_in_a_simulator_call_outside_the_native_recorder_ends_the_run(tmp_path, python_simulator) -> None:
    # A gradient method calls the Simulator from Python (the native recorder takes costs only); Ctrl-C
    # arriving while that call waits raises KeyboardInterrupt out of it, and the run must still end
    # (it once waited forever for that evaluation to come back) with the best point so far.
    model = tmp_path / "model.py"
    model.write_text(textwrap.dedent("""
        import time
        import numpy as np
        def cost_and_gradient(x):  # Rosenbrock: L-BFGS-B takes dozens of evaluations, 5 ms each
            time.sleep(0.005)
            a, b = x
            cost = (1 - a) ** 2 + 100 * (b - a * a) ** 2
            return float(cost), np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
        pybridge.serve(cost_and_gradient, n_params=2, gradient=True)
    """))
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, threading
        import pybridge
        from pybridge.record import Evaluation

        def interrupt(record):  # records come 0.1 s apart; a moment later the next evaluation runs
            if isinstance(record, Evaluation) and record.number == 5:
                threading.Timer(0.001, os.kill, (os.getpid(), signal.SIGINT)).start()

        with pybridge.Simulator({python_simulator(model.read_text())!r}, n_params=2) as sim:
            result = pybridge.minimize(sim, {{"x": [(-2.0, 3.0)] * 2}}, method="L-BFGS-B", x0={{"x": [-1.5, 2.5]}},
                                       callback=interrupt, options={{"maxfun": 10**6, "ftol": 0, "gtol": 0}})
        print("RESULT", result.stop_rule, result.nfev, repr(result.fun))
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))
    _, rule, nfev, fun = line.split(" ")
    assert rule == "interrupted" and int(nfev) >= 5 and float(fun) < 10.0


def test_a_batch_systems_sigterm_that_also_kills_the_simulator_ends_the_run_by_the_rule(tmp_path,
                                                                                       python_simulator) -> None:
    # At a time limit SLURM sends SIGTERM to every process of the job: the driver, which asked for
    # OnSignal(SIGTERM), and the simulator, which dies of it. The crash reached the driver before the
    # rule's next check, and the run ended in a SimulatorCrashed traceback instead of its best point.
    simulator = python_simulator("""
        import signal
        calls = 0
        def cost(x):
            global calls
            calls += 1
            if calls == 30:  # as a batch system does: the driver and the simulator, in the same moment
                os.kill(os.getppid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.002)
            return float(np.sum((x - 0.3) ** 2))
        pybridge.serve(cost, n_params=2)
    """)
    journal = tmp_path / "run.db"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import signal
        import pybridge
        from pybridge.optimize import OnSignal

        with pybridge.Simulator({simulator!r}) as sim:
            result = pybridge.minimize(sim, {{"a": (-1, 1), "b": (-1, 1)}}, method="Nelder-Mead",
                                       stop=OnSignal(signal.SIGTERM), journal={str(journal)!r}, progress=False)
        print("RESULT", result.stop_rule, result.nfev, repr(result.fun))
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    _, rule, nfev, fun = next(line for line in run.stdout.splitlines() if line.startswith("RESULT")).split(" ")
    assert rule == "signal" and int(nfev) == 30  # the 30th evaluation failed, and counts
    contents = read_journal(journal)
    assert contents.runs[-1]["message"] == "stopped: signal SIGTERM received"
    assert contents.status.count("failed") == 1 and float(fun) == np.nanmin(contents.cost)


def test_a_stop_requested_never_hides_an_error_of_the_users_own(rosenbrock, tmp_path) -> None:
    # Only a failed evaluation gives way to a stop requested from outside; a callback's bug is raised.
    stop_file = tmp_path / "STOP"
    stop_file.touch()

    def broken(record) -> None:
        raise ValueError("a bug in the callback")

    with pybridge.Simulator(rosenbrock, n_params=4) as sim, pytest.raises(ValueError, match="a bug in the callback"):
        pybridge.minimize(sim, BOX4, method="Nelder-Mead", stop=StopFile(stop_file), callback=broken)


@pytest.mark.parametrize("make, message", [
    (lambda: TargetCost(float("nan")), "TargetCost needs a number"),
    (lambda: MaxEvaluations(0), "positive count"),
    (lambda: MaxEvaluations(2.5), "whole number"),
    (lambda: WallClock(float("nan")), "positive number of seconds"),
    (lambda: NoImprovement(0), "positive number of iterations"),
    (lambda: NoImprovement(5, rtol=-1e-3), "rtol"),
    (lambda: NoImprovement(5, rtol=float("nan")), "rtol"),
    (lambda: StopFile(""), "StopFile needs the path of a file"),
    (lambda: StopFile("STOP", interval=-1), "seconds >= 0"),
    (lambda: StopFile("STOP", interval=float("nan")), "seconds >= 0"),
    (lambda: OnSignal("SIGNOPE"), "no signal named 'SIGNOPE'"),
    (lambda: OnSignal(0), "no signal numbered 0"),
    (lambda: OnSignal("KILL"), "SIGKILL cannot be caught"),
])  # fmt: skip
def test_a_rule_that_could_never_fire_or_fires_at_once_is_refused(make, message) -> None:
    # TargetCost(nan) was accepted and never fired: the run went on as if no target had been set;
    # StopFile("") too (no file is ever named "").
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", ["SIGTERM", "TERM", "sigterm", signal.SIGTERM, int(signal.SIGTERM)])
def test_a_signal_may_be_named_as_the_shell_names_it(name) -> None:
    # OnSignal("SIGTERM") raised "'SIGTERM' is not a valid Signals", which tells a user nothing.
    assert OnSignal(name).signum is signal.SIGTERM
