"""The forecast wait (cpp/src/wait.hpp): a wrong forecast costs a wake-up, never a wrong value, a hang or a
late timeout. The benchmark simulator computes for x[0] microseconds and answers its own wall time."""

from __future__ import annotations

import builtins
import collections
import os
import signal
import sys
import time

import numpy as np
import pytest

import pybridge
from pybridge.cli.bench.measure import _program
from pybridge.errors import EvaluationTimeout


def simulator(**options: object) -> pybridge.Simulator:
    return pybridge.Simulator([_program("pybridge-bench-sim"), "--burn-x0"], n_params=2, **options)


def oversubscribed() -> bool:
    """Whether the forecast's guard would find more threads runnable than there are cores while an
    evaluation computes (cpp/src/wait.hpp: /proc/loadavg's runnable count, the reading thread included,
    most of several samples). Then every wait only blocks, as it should, and no forecast wait reaches a
    spin window: the tests that need one say so and skip, where they used to fail on a loaded machine.
    Sampled here, between evaluations, the count misses the simulator computing beside the waiter, so it
    is counted in: with one CPU-bound process beside the suite on 2 cores the guard saw 3 and rightly
    blocked throughout, while a check that read 2 let the test fail."""
    busy = 0
    for _ in range(5):
        with open("/proc/loadavg") as loadavg:
            runnable = int(loadavg.read().split()[3].split("/")[0])
        busy += runnable + 1 > (os.cpu_count() or 1)  # + the simulator, computing during a measurement
        time.sleep(0.01)  # the guard samples at most every 10 ms
    return busy > 2


def skip_if_the_guard_blocks(reason: str) -> None:
    if oversubscribed():
        pytest.skip(f"{reason}: the machine is oversubscribed, so the forecast's guard rightly only blocks")


def timed(sim: pybridge.Simulator, model_us: float) -> "tuple[float, float]":
    """(round trip in µs, the model's own wall time in µs)."""
    started = time.perf_counter()
    model = sim(np.array([model_us, 0.0]))
    return (time.perf_counter() - started) * 1e6, model


def test_an_early_reply_wakes_the_waiter_at_once() -> None:
    with simulator() as sim:
        for _ in range(16):
            timed(sim, 20_000)  # the forecast now expects 20 ms
        trip, model = timed(sim, 500)
    assert 500 <= model < 5_000
    assert trip < model + 5_000, f"a {model:.0f} us evaluation took {trip:.0f} us: held until the forecast"


def test_a_reply_later_than_the_window_is_received() -> None:
    with simulator() as sim:
        for _ in range(16):
            timed(sim, 2_000)
        trip, model = timed(sim, 20_000)
        assert model >= 20_000 and model <= trip < model + 5_000
        # ... and it keeps serving: a 2 ms burn each (its wall time: more when the host preempts it, which
        # rounding to whole milliseconds once took for a wrong answer).
        after = [timed(sim, 2_000) for _ in range(3)]
        assert all(2_000 <= model <= trip < model + 5_000 for trip, model in after), after


def test_a_timeout_fires_on_time_while_forecasting() -> None:
    with simulator(timeout=0.05) as sim:
        for _ in range(16):
            timed(sim, 10_000)
        started = time.perf_counter()
        with pytest.raises(EvaluationTimeout):
            timed(sim, 500_000)
        assert time.perf_counter() - started < 0.05 + 0.03


@pytest.mark.parametrize("options", [{}, {"forecast": False}, {"spin_us": 0}])
def test_every_wait_returns_the_same_values(options: dict) -> None:
    """Jittered milliseconds through each wait: each answer is its own evaluation's (the model time the
    simulator measured is close to the one asked for, not a neighbour's), whatever the wait did."""
    rng = np.random.default_rng(1)
    answers = []
    with simulator(**options) as sim:
        assert sim.forecast is options.get("forecast", True)
        for asked in rng.uniform(200, 3_000, 40):
            trip, model = timed(sim, asked)
            assert int(asked) <= model and trip >= model  # it computes whole microseconds
            answers.append((asked, model))
    # Each answer is at least its own model time and at most its round trip: an earlier evaluation's
    # answer fails that in about every other evaluation (it asked less), or returns before its time.
    # The other half, a neighbour that asked more, shows as an answer far above its ask. The simulator
    # burns CPU time and reports wall time, so the host preempting it for milliseconds makes the odd one
    # long (seen: 2861 us asked, 5326 measured); and where more threads are runnable than there are
    # cores, a time slice of ~4 ms lands on many (7 of 40 with two CPU-bound processes beside the
    # suite): there the wall time says nothing of which evaluation answered, and only the first check holds.
    overshot = [(asked, model) for asked, model in answers if model >= asked + 2_000]
    if len(overshot) > 3 and not oversubscribed():
        pytest.fail(f"answers far above their asks, a neighbour's? {overshot}")


def warm_ups_during(sim: pybridge.Simulator, model_us: float, count: int) -> int:
    """How many times the interpreter ran the binding's warm-up in `count` evaluations of `model_us`."""
    calls = []

    def profile(frame: object, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "pybridge_warm_up":  # type: ignore[attr-defined]
            calls.append(frame)

    sys.setprofile(profile)
    try:
        for _ in range(count):
            timed(sim, model_us)
    finally:
        sys.setprofile(None)
    return len(calls)


def test_a_forecast_wait_runs_the_interpreter_once_before_each_reply() -> None:
    """Milliseconds into the run, the wait returns to the interpreter where its spin window opens (what runs
    after the reply then finds it warm): once per evaluation, and only for a forecast wait."""
    with simulator() as sim:
        for _ in range(16):
            timed(sim, 5_000)
        warm_ups = warm_ups_during(sim, 5_000, 10)
    if warm_ups == 0:
        skip_if_the_guard_blocks("no wait reached its window")
    # A reply that comes before the window opens (the waiter woke late) skips it: about one in four here.
    assert 1 <= warm_ups <= 10, warm_ups
    for options in ({"forecast": False}, {"spin_us": 0}):
        with simulator(**options) as sim:
            for _ in range(16):
                timed(sim, 2_000)
            assert warm_ups_during(sim, 2_000, 5) == 0, options


def test_ctrl_c_in_the_warm_up_leaves_the_simulator_usable() -> None:
    """Running Python code runs any signal handler due: Ctrl-C landing there interrupts the evaluation as it
    would in any wait, and the next evaluation gets its own answer, not the interrupted one's."""

    def interrupt(frame: object, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "pybridge_warm_up":  # type: ignore[attr-defined]
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)

    with simulator() as sim:
        for _ in range(16):
            timed(sim, 5_000)
        sys.setprofile(interrupt)
        try:
            for _ in range(40):  # until one wait reaches its window before the reply
                timed(sim, 5_000)
        except KeyboardInterrupt:
            pass
        else:
            skip_if_the_guard_blocks("no wait reached its window in 40 evaluations")
            pytest.fail("no wait reached its window in 40 evaluations: Ctrl-C never landed in the warm-up")
        finally:
            sys.setprofile(None)
        # Each answer is this evaluation's: not the interrupted one's (5 000) nor the one before (3 000
        # before 1 000, below 2 000's floor). The model reports its wall time, which the host has
        # stretched by up to ~1 ms; 1.5 x + 0.5 ms leaves room for that and still tells them apart.
        for asked in (3_000, 1_000, 2_000):
            model = timed(sim, asked)[1]
            assert asked <= model < 1.5 * asked + 500, (asked, model)


def test_the_warm_up_reads_any_caller_and_keeps_no_reference() -> None:
    """After its empty function the warm-up reads through the calling frame's globals, builtins and bytecode
    (what the caller's next lines need). From large globals, and from builtins that are not a dict, the values
    are right, and the reads leave every reference count as it was."""
    code = compile("values = [sim(np.array([m, 0.0])) for m in models]", "<caller>", "exec")
    with simulator() as sim:
        for _ in range(16):
            timed(sim, 5_000)
        large = {f"name{i}": float(i) for i in range(5_000)}
        callers = (dict(large, sim=sim, np=np, models=[5_000.0] * 12),
                   {"__builtins__": collections.UserDict(vars(builtins)), "sim": sim, "np": np,
                    "models": [5_000.0] * 12})  # fmt: skip
        warm_ups = []

        def profile(frame: object, event: str, arg: object) -> None:  # made first: a function holds the builtins
            if event == "call" and frame.f_code.co_name == "pybridge_warm_up":  # type: ignore[attr-defined]
                warm_ups.append(1)

        def run(scope: dict) -> None:
            sys.setprofile(profile)
            try:
                exec(code, scope)
            finally:
                sys.setprofile(None)

        for scope in callers:
            # Once first, so that whatever a run creates and keeps exists already (Python 3.9's profiler
            # gives this frame a locals dict that refers to scope).
            run(scope)
            for _ in range(5):  # the reads need a warm-up: a busy minute can keep 12 waits from their window
                warm_ups.clear()
                counts = (sys.getrefcount(scope), sys.getrefcount(scope["__builtins__"]), sys.getrefcount(code.co_code))
                run(scope)
                # Counted before any assertion: pytest's rewritten asserts keep temporaries of their own.
                after = (sys.getrefcount(scope), sys.getrefcount(scope["__builtins__"]), sys.getrefcount(code.co_code))
                if warm_ups:
                    break
            if not warm_ups:
                skip_if_the_guard_blocks("no wait reached its window in five tries")
            assert warm_ups, "no forecast wait reached its window in five tries: nothing was read"
            # The model computes 5 ms of CPU time and answers its wall time, which the host may stretch.
            assert all(5_000 <= value < 50_000 for value in scope["values"]), scope["values"]
            assert after == counts
