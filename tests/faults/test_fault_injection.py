"""Fault injection: every failure mode, many times, at random moments.

Each scenario runs TRIALS times (PYBRIDGE_FAULT_TRIALS, default 100; fewer for
the scenarios that start a Python interpreter per trial) and counts: faults
surfaced as the right exception with the right exit status, hangs (a trial
that outlives a 10 s watchdog), /dev/shm entries left behind, and wrong values
(an evaluation that returned anything but the exact cost). The table lands in
pytest's terminal summary; docs/reliability.md keeps the latest one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest
from scipy.optimize import minimize

import pybridge
from pybridge import EvaluationFailed, EvaluationTimeout, SimulatorCrashed

TRIALS = int(os.environ.get("PYBRIDGE_FAULT_TRIALS", "100"))
WATCHDOG_SECONDS = 10.0


class Hang(Exception):
    pass


@dataclass
class Trial:
    """What one trial saw."""

    surfaced: bool = False
    wrong: int = 0
    detection: Optional[float] = None  # seconds from the fault to the exception, where known


@dataclass
class Run:
    rng: np.random.Generator
    faulty: Path
    trial: Trial = field(default_factory=Trial)

    def command(self, fault: str = "none", at: int = 0, work_us: int = 0, suicide_us: Optional[int] = None) -> list:
        argv = [str(self.faulty), fault, str(at), str(work_us)]
        return argv + ([str(suicide_us)] if suicide_us is not None else [])

    def evaluate(self, sim: pybridge.Simulator) -> float:
        """One evaluation at a random point, checked against the exact cost."""
        x = self.rng.uniform(-3, 3, 2)
        value = sim(x)
        d0, d1 = x[0] - 1.0, x[1] - 1.0
        if value != 0.0 + d0 * d0 + d1 * d1:
            self.trial.wrong += 1
        return value


def run_scenario(name: str, trials: int, body: Callable[[Run], None], faulty: Path, table: list,
                 shm_entries: Callable[[], set]) -> None:  # fmt: skip
    surfaced = hangs = leaked = wrong = 0
    slowest = 0.0

    def watchdog(signum: int, frame: object) -> None:
        raise Hang

    previous = signal.signal(signal.SIGALRM, watchdog)
    try:
        for index in range(trials):
            run = Run(np.random.default_rng([index, len(name)]), faulty)
            before = shm_entries()
            signal.setitimer(signal.ITIMER_REAL, WATCHDOG_SECONDS)
            try:
                body(run)
            except Hang:
                hangs += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            left = shm_entries() - before
            leaked += len(left)
            for entry in left:  # so that one leak does not count again in later trials
                Path("/dev/shm", entry).unlink(missing_ok=True)
            surfaced += run.trial.surfaced
            wrong += run.trial.wrong
            if run.trial.detection is not None:
                slowest = max(slowest, run.trial.detection)
    finally:
        signal.signal(signal.SIGALRM, previous)
    detection = f"{slowest * 1e3:.0f} ms" if slowest else "n/a"
    table.append([name, str(trials), str(surfaced), str(hangs), str(leaked), str(wrong), detection])
    assert (surfaced, hangs, leaked, wrong) == (trials, 0, 0, 0), table[-1]


def expect_crash(run: Run, sim_factory: Callable[[], pybridge.Simulator], returncode: int,
                 fault_time: Callable[[], Optional[float]] = lambda: None) -> None:  # fmt: skip
    """Evaluates until the simulator's death surfaces; it must be SimulatorCrashed with `returncode`."""
    sim = None
    call_started = time.monotonic()
    try:
        sim = sim_factory()
        for _ in range(1000):
            call_started = time.monotonic()
            run.evaluate(sim)
    except SimulatorCrashed as error:
        raised_at = time.monotonic()
        run.trial.surfaced = error.returncode == returncode
        # Where the moment of the fault is unknown, the failing call's start bounds it.
        started = fault_time()
        run.trial.detection = raised_at - (call_started if started is None else started)
    finally:
        if sim is not None:
            sim.close()


# ---- the scenarios --------------------------------------------------------------------------------


def sigkill_during_handshake(run: Run) -> None:
    # The simulator kills itself 0-2 ms after it starts: while loading, attaching or declaring.
    suicide_us = int(run.rng.integers(0, 2000))
    started = time.monotonic()
    expect_crash(run, lambda: pybridge.Simulator(run.command(work_us=200, suicide_us=suicide_us)), -signal.SIGKILL,
                 lambda: started + suicide_us * 1e-6)  # fmt: skip


def sigkill_during_evaluation(run: Run) -> None:
    sim = pybridge.Simulator(run.command(work_us=3000))
    killed_at: List[float] = []

    def kill_soon() -> None:
        time.sleep(float(run.rng.uniform(0.0002, 0.0025)))  # inside the 3 ms evaluation
        killed_at.append(time.monotonic())
        os.kill(sim.pid, signal.SIGKILL)  # type: ignore[arg-type]

    run.evaluate(sim)
    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        expect_crash(run, lambda: sim, -signal.SIGKILL, lambda: killed_at[0] if killed_at else None)
    finally:
        killer.join()


def sigkill_between_evaluations(run: Run) -> None:
    sim = pybridge.Simulator(run.command())
    for _ in range(int(run.rng.integers(1, 5))):
        run.evaluate(sim)
    os.kill(sim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    killed_at = time.monotonic()
    expect_crash(run, lambda: sim, -signal.SIGKILL, lambda: killed_at)


def self_inflicted(fault: str, returncode: int) -> Callable[[Run], None]:
    def scenario(run: Run) -> None:
        at = int(run.rng.integers(1, 6))
        expect_crash(run, lambda: pybridge.Simulator(run.command(fault, at)), returncode)

    return scenario


def exit_with_random_code(run: Run) -> None:
    code = int(run.rng.integers(1, 126))
    at = int(run.rng.integers(1, 6))
    expect_crash(run, lambda: pybridge.Simulator(run.command(f"exit:{code}", at)), code)


def hang_then_timeout(run: Run) -> None:
    at = int(run.rng.integers(1, 4))
    with pybridge.Simulator(run.command("hang", at), timeout=0.05) as sim:
        try:
            for _ in range(at):
                run.evaluate(sim)
        except EvaluationTimeout:
            run.trial.surfaced = sim.returncode == -signal.SIGTERM  # its group terminated, the leader reaped


def reported_failure(fault: str, message: str) -> Callable[[Run], None]:
    def scenario(run: Run) -> None:
        at = int(run.rng.integers(1, 4))
        with pybridge.Simulator(run.command(fault, at)) as sim:
            try:
                for _ in range(at):
                    run.evaluate(sim)
            except EvaluationFailed as error:
                # ...and the simulator goes on serving correct values.
                run.trial.surfaced = message in str(error) and run.evaluate(sim) >= 0 and sim.returncode is None

    return scenario


def driver_sigkill(run: Run) -> None:
    """The driver dies; its simulator must exit within 2 s and the channel must vanish."""
    driver = subprocess.Popen(
        [sys.executable, "-c", "import sys, pybridge, numpy as np\n"
         "sim = pybridge.Simulator(sys.argv[1:])\nprint(sim.pid, sim.channel_name, flush=True)\n"
         "while True: sim(np.zeros(2))\n", *run.command(work_us=int(run.rng.integers(0, 2000)))],
        stdout=subprocess.PIPE, text=True, cwd="/tmp",
    )  # fmt: skip
    assert driver.stdout is not None
    simulator_pid = int(driver.stdout.readline().split()[0])
    time.sleep(float(run.rng.uniform(0, 0.02)))  # die at a random moment of the evaluation loop
    driver.kill()
    killed_at = time.monotonic()
    driver.wait()
    driver.stdout.close()
    while pybridge._native.process_alive(simulator_pid) and time.monotonic() - killed_at < 2.0:
        time.sleep(0.005)
    run.trial.detection = time.monotonic() - killed_at
    run.trial.surfaced = not pybridge._native.process_alive(simulator_pid)


def restart_policy_under_random_kills(run: Run) -> None:
    """Ten SIGKILLs at random moments inside random evaluations; restarts=3 must reproduce the optimum."""
    command = run.command(work_us=1000)

    def optimise(objective: Callable[[np.ndarray], float]):
        return minimize(objective, [-1.5, 2.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14})

    with pybridge.Simulator(command) as sim:
        reference = optimise(sim)
    # Every other call at most, so that each kill meets a fresh process.
    kill_at = set(run.rng.choice(np.arange(4, reference.nfev - 4, 2), 10, replace=False).tolist())
    with pybridge.Simulator(command, restarts=3) as sim:
        calls = 0

        def objective(x: np.ndarray) -> float:
            nonlocal calls
            calls += 1
            if calls not in kill_at:
                return sim(x)
            timer = threading.Timer(float(run.rng.uniform(0, 0.0009)), os.kill, (sim.pid, signal.SIGKILL))
            timer.start()
            try:
                return sim(x)
            finally:
                timer.join()

        result = optimise(objective)
        same = np.array_equal(result.x, reference.x) and result.nfev == reference.nfev
        run.trial.surfaced = same and sim.restart_count == 10


SCENARIOS = [
    ("SIGKILL during the handshake", TRIALS, sigkill_during_handshake),
    ("SIGKILL during an evaluation", TRIALS, sigkill_during_evaluation),
    ("SIGKILL between evaluations", TRIALS, sigkill_between_evaluations),
    ("SIGSEGV in an evaluation", TRIALS, self_inflicted("segv", -signal.SIGSEGV)),
    ("abort() in an evaluation", TRIALS, self_inflicted("abort", -signal.SIGABRT)),
    ("exit(n) in an evaluation", TRIALS, exit_with_random_code),
    ("hang, timeout=0.05 s", TRIALS, hang_then_timeout),
    ("NaN cost", TRIALS, reported_failure("nan", "non-finite cost nan")),
    ("reported failure", TRIALS, reported_failure("fail", "injected failure")),
    ("driver SIGKILL (simulator exits)", max(TRIALS // 5, 1), driver_sigkill),
    ("10 random SIGKILLs, restarts=3 (same optimum)", max(TRIALS // 10, 1), restart_policy_under_random_kills),
]


@pytest.mark.parametrize(("name", "trials", "body"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_fault_scenario(name: str, trials: int, body: Callable[[Run], None], faulty_sim: Path, fault_table: list,
                        shm_entries: Callable[[], set]) -> None:  # fmt: skip
    run_scenario(name, trials, body, faulty_sim, fault_table, shm_entries)
