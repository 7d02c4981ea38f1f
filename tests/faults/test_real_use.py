"""Reliability under real use: the edges real calibrations on shared nodes hit.

Each test reproduces one failure of the reliability issue (numbers in the
section titles follow it): threads, fork, racing simulators, restarts that
fail, misuse, wrapper scripts and process trees, a driver killed mid-run,
Ctrl-C, other users' junk in /dev/shm, a small /dev/shm, and a peer that
scribbles over the header. Where a test needs a private /dev/shm it runs a
script under ``unshare -m`` with its own tmpfs (root only; skipped otherwise).
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import pytest

import pybridge
from pybridge import (
    CapabilityError,
    EvaluationTimeout,
    InheritedSimulatorError,
    SimulatorCrashed,
)
from pybridge._native import process_alive as alive  # True while it runs; a zombie counts as dead

from .helpers import NOBODY, Scripts, needs_private_shm, run_in_private_shm, wait_until


@pytest.fixture
def scripts() -> Iterator[Scripts]:
    made = Scripts()
    yield made
    made.remove()


def exact_cost(x) -> float:
    """faulty_sim's cost, computed in the same order: sum((x_i - 1)^2)."""
    d0, d1 = x[0] - 1.0, x[1] - 1.0
    return 0.0 + d0 * d0 + d1 * d1


def faulty(faulty_sim: Path, fault: str = "none", at: int = 0, work_us: int = 0) -> List[str]:
    return [str(faulty_sim), fault, str(at), str(work_us)]


def record(table: list, scenario: str, trials: int, surfaced: int, *, wrong: int = 0,
           detection: Optional[float] = None) -> None:  # fmt: skip
    """A row of the fault table printed in pytest's summary (hangs and leaks fail the test itself)."""
    shown = "n/a" if detection is None else f"{detection * 1e3:.0f} ms"
    table.append([scenario, str(trials), str(surfaced), "0", "0", str(wrong), shown])


def channel_entries(name: str) -> List[str]:
    return [f"/dev/shm/{name}", f"/dev/shm/sem.{name}-req", f"/dev/shm/sem.{name}-rep"]


# ---- 1. two threads, one Simulator ------------------------------------------------------------------


@pytest.mark.parametrize(("work_us", "calls"), [(0, 20_000), (2000, 300)], ids=["instant", "2ms"])
def test_two_threads_on_one_simulator_never_see_each_others_values(faulty_sim: Path, work_us: int, calls: int,
                                                                     fault_table: list) -> None:  # fmt: skip
    wrong: List[int] = [0, 0]
    errors: List[BaseException] = []
    with pybridge.Simulator(faulty(faulty_sim, work_us=work_us)) as sim:

        def worker(index: int) -> None:
            rng = np.random.default_rng(index)
            try:
                for _ in range(calls):
                    x = rng.uniform(-3, 3, 2)
                    # One thread takes the native fast path (arrays), the other the Python slow path (lists).
                    value = sim(x) if index == 0 else sim(x.tolist())
                    wrong[index] += value != exact_cost(x)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sim.evaluations == 2 * calls
    record(fault_table, f"two threads on one Simulator, {work_us / 1000:g} ms evaluations", 2 * calls,
           2 * calls - sum(wrong), wrong=sum(wrong))  # fmt: skip
    assert not errors, errors
    assert wrong == [0, 0]


def test_close_from_another_thread_ends_an_evaluation_in_flight(scripts: Scripts) -> None:
    # A stop button, a watchdog thread, a Dask worker's teardown: close() waited on the evaluation lock
    # for the evaluation in flight to end, and on a hung simulator without a timeout it never did.
    computing = scripts.dir / "computing"
    command = scripts.command(
        f"""
        def hang(x):
            open({str(computing)!r}, "w").close()
            time.sleep(60)
            return 0.0
        pybridge.serve(hang, n_params=2)
        """
    )
    sim = pybridge.Simulator(command, close_timeout=0.2)
    outcome: List[object] = []
    caller = threading.Thread(target=lambda: outcome.append(_raised(sim, [3.0, 1.0])))
    caller.start()
    assert wait_until(computing.exists, 10.0)  # the evaluation is under way
    started = time.monotonic()
    sim.close()
    closing = time.monotonic() - started
    caller.join(10)
    assert not caller.is_alive() and closing < 0.2 + 1.0 + 2.0  # close_timeout, SIGTERM's grace, a margin
    error = outcome[0]
    assert isinstance(error, pybridge.ChannelClosed) and "closed during this evaluation" in str(error), error
    assert sim.closed


def _raised(sim: pybridge.Simulator, x: List[float]) -> object:
    try:
        return sim(x)
    except BaseException as error:
        return error


# ---- 2. fork ----------------------------------------------------------------------------------------


def test_forked_child_cannot_evaluate_and_its_exit_leaves_the_parents_channel_alone(faulty_sim: Path,
                                                                                      scripts: Scripts) -> None:  # fmt: skip
    driver = scripts.write(
        f"""
        sim = pybridge.Simulator({faulty(faulty_sim, work_us=2000)!r})
        assert sim([3.0, 1.0]) == 4.0
        child = os.fork()
        if child == 0:  # evaluates in the child: a clear error, nothing sent
            try:
                sim([2.0, 1.0])
            except pybridge.InheritedSimulatorError as error:
                os._exit(0 if "fork" in str(error) else 3)
            except BaseException:
                os._exit(4)
            os._exit(5)
        assert os.waitpid(child, 0)[1] == 0, "child A"
        child = os.fork()
        if child == 0:  # a normal exit runs finalizers: they must not touch the parent's channel
            sys.exit(0)
        assert os.waitpid(child, 0)[1] == 0, "child B"
        assert all(os.path.exists(p) for p in
                   ["/dev/shm/" + sim.channel_name, "/dev/shm/sem." + sim.channel_name + "-req"])
        values = [sim([3.0, 2.0]) for _ in range(20)]
        assert values == [5.0] * 20, values
        sim.close()
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _evaluate_with_the_inherited_simulator(x: List[float]) -> float:
    return _INHERITED(x)  # type: ignore[name-defined]  # noqa: F821 - set in the parent before forking


def test_multiprocessing_fork_pool_sharing_one_simulator_gets_a_clear_error(faulty_sim: Path) -> None:
    import multiprocessing

    global _INHERITED
    with pybridge.Simulator(faulty(faulty_sim)) as sim:
        _INHERITED = sim
        try:
            with multiprocessing.get_context("fork").Pool(2) as pool:
                with pytest.raises(InheritedSimulatorError, match=r"inherited .*fork"):
                    pool.map(_evaluate_with_the_inherited_simulator, [[0.0, 0.0], [1.0, 1.0]])
        finally:
            del _INHERITED
        assert sim.returncode is None  # the simulator is alive and well
        assert sim([3.0, 1.0]) == 4.0
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(sim)


# ---- 3. attach race ---------------------------------------------------------------------------------


def test_exactly_one_of_eight_racing_simulators_attaches(faulty_sim: Path, tmp_path: Path, fault_table: list) -> None:
    double_attach = taken = 0
    for trial in range(30):
        sim = pybridge.Simulator(None, n_params=2)
        env = dict(os.environ, PYBRIDGE_CHANNEL=sim.channel_name)
        logs = [tmp_path / f"{trial}-{i}.log" for i in range(8)]
        racers = []
        for log in logs:
            with open(log, "w") as stderr:
                racers.append(subprocess.Popen(faulty(faulty_sim), env=env, stderr=stderr))
        try:
            sim.connect(timeout=10)
            assert sim([3.0, 1.0]) == 4.0
        finally:
            sim.close()
            codes = [racer.wait(10) for racer in racers]
        served = codes.count(0)
        double_attach += served > 1
        assert served == 1, (trial, codes)
        refused = [log.read_text() for log, code in zip(logs, codes) if code != 0]
        # A racer that lost says so; one that came after close() finds no channel.
        assert all("already taken" in text or "no channel named" in text for text in refused), refused
        taken += sum("already taken" in text for text in refused)
    record(fault_table, "8 simulators race to attach to one channel", 30, 30 - double_attach, wrong=double_attach)
    assert double_attach == 0
    assert taken > 0  # the race was run, not just lost by lateness


# ---- 4. restarts that fail at start-up ---------------------------------------------------------------


def flaky_launches(scripts: Scripts, fail_starts: str) -> List[str]:
    """A simulator that crashes in its first process's first evaluation, and whose start number
    N (1-based) fails at start-up (exit 3, like a licence check-out) when ``N in fail_starts``."""
    counter = scripts.dir / "starts"
    return scripts.command(
        f"""
        with open({str(counter)!r}, "a") as f:
            f.write("x")
        start = os.path.getsize({str(counter)!r})
        if start in {fail_starts}:
            sys.stderr.write("licence server busy\\n")
            sys.exit(3)
        def cost(x):
            if start == 1:
                os.kill(os.getpid(), 9)
            return float(x[0] * 2)
        pybridge.serve(cost, n_params=1)
        """
    )


def test_a_restart_that_fails_at_start_up_is_one_more_attempt(scripts: Scripts) -> None:
    with pybridge.Simulator(flaky_launches(scripts, "{2}"), restarts=3, penalty=1e10) as sim:
        assert sim([1.0]) == 2.0  # start 1 crashes, start 2 fails, start 3 answers
        assert (sim.restart_count, sim.failures, sim.evaluations) == (2, 2, 1)
        assert sim([2.0]) == 4.0


def test_restarts_exhausted_by_failed_launches_give_the_penalty_then_recover(scripts: Scripts) -> None:
    with pybridge.Simulator(flaky_launches(scripts, "{2, 3, 4}"), restarts=2, penalty=1e10) as sim:
        assert sim([1.0]) == 1e10  # crash, two failed launches: penalty, not an exception
        assert not sim.closed and sim.failed is None
        assert sim([1.0]) == 2.0  # start 4 fails again, start 5 answers
        assert sim([3.0]) == 6.0


def test_without_penalty_a_simulator_with_restarts_recovers_at_the_next_call(scripts: Scripts) -> None:
    with pybridge.Simulator(flaky_launches(scripts, "{2}"), restarts=1) as sim:
        with pytest.raises(SimulatorCrashed, match="licence server busy"):
            sim([1.0])  # crash, then the one restart fails at start-up
        assert sim.failed is None  # the policy allows restarts: usable again
        assert sim([1.0]) == 2.0
        assert sim.restart_count == 2


# ---- 5. capabilities are checked before anything is sent ---------------------------------------------


def test_asking_for_a_missing_capability_leaves_the_simulator_usable(faulty_sim: Path, bundled: Callable) -> None:
    with pybridge.Simulator(faulty(faulty_sim)) as sim:
        pid = sim.pid
        for _ in range(2):
            with pytest.raises(CapabilityError, match="does not compute gradients"):
                sim.value_and_grad(np.zeros(2))
            with pytest.raises(CapabilityError, match="does not return residuals"):
                sim.residuals(np.zeros(2))
        assert sim([3.0, 1.0]) == 4.0
        assert (sim.pid, sim.failures, sim.evaluations) == (pid, 0, 1)
    with pybridge.Simulator([bundled("pybridge-decay")]) as decay:
        with pytest.raises(CapabilityError):
            decay.value_and_grad(np.ones(3))
        assert decay.residuals(np.array([1.0, 1.0, 0.0])).shape == (40,)


# ---- 6. arguments and timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("timeout", -1, "timeout must be a positive number of seconds or None"),
        ("timeout", 0, "timeout must be a positive number of seconds or None"),
        ("timeout", math.nan, "timeout must be"),
        ("timeout", math.inf, "timeout must be"),
        ("timeout", "10", "timeout must be"),
        ("start_timeout", -1, "start_timeout must be"),
        ("start_timeout", math.nan, "start_timeout must be"),
        ("close_timeout", -1, "close_timeout must be"),
        ("close_timeout", math.nan, "close_timeout must be"),
        ("penalty", math.nan, "penalty must be a finite number"),
        ("penalty", math.inf, "penalty must be a finite number"),
        ("restarts", -1, "restarts must be"),
        ("restarts", 1.5, "restarts must be"),
        ("restarts", True, "restarts must be"),
        ("spin_us", -1, "spin_us must be"),
        # A missing working folder was reported as the simulator's own path missing ("Check the path").
        ("cwd", "/nonexistent-folder", "cwd '/nonexistent-folder' is not a folder"),
        ("env", {"OMP_NUM_THREADS": 4}, "env values must be strings: OMP_NUM_THREADS=4"),
    ],
)
def test_invalid_arguments_are_refused_before_anything_starts(faulty_sim: Path, keyword: str, value: object,
                                                              message: str) -> None:  # fmt: skip
    with pytest.raises((ValueError, TypeError), match=message):
        pybridge.Simulator(faulty(faulty_sim), **{keyword: value})


def test_a_2ms_timeout_fires_on_a_10ms_evaluation(faulty_sim: Path, fault_table: list) -> None:
    with pybridge.Simulator(faulty(faulty_sim, work_us=10_000), timeout=0.002) as sim:
        started = time.monotonic()
        with pytest.raises(EvaluationTimeout, match="timeout=0.002 s"):
            sim(np.array([3.0, 1.0]))  # the fast path
        record(fault_table, "timeout=2 ms on a 10 ms evaluation (until raised, stop included)", 1, 1,
               detection=time.monotonic() - started)  # fmt: skip
    with pybridge.Simulator(faulty(faulty_sim, work_us=10_000), timeout=0.002) as sim:
        with pytest.raises(EvaluationTimeout):
            sim([3.0, 1.0])  # the slow path


# ---- 7. process groups: wrapper scripts and process trees -------------------------------------------


def tree_members(scripts: Scripts, pids: Path, seconds: float = 60) -> Tuple[Path, Path]:
    """Two scripts: a helper "rank" that sleeps, and the solver, which waits for the rank to be there
    (so that the tree is complete before the simulator attaches). Each records its pid in ``pids``."""
    rank = scripts.write(f"open({str(pids)!r}, 'a').write(f'rank {{os.getpid()}}\\n'); time.sleep(600)\n")
    solver = scripts.write(
        f"""
        while "rank" not in (open({str(pids)!r}).read() if os.path.exists({str(pids)!r}) else ""):
            time.sleep(0.005)
        open({str(pids)!r}, "a").write(f"solver {{os.getpid()}}\\n")
        pybridge.serve(lambda x: time.sleep({seconds}) or float(x[0]) if x[0] > 0 else 0.0, n_params=1)
        """
    )
    return rank, solver


def solver_tree(scripts: Scripts, pids: Path, seconds: float = 60) -> List[str]:
    """``sh run.sh``-style: a shell that starts a helper "rank" in the background and the solver in the
    foreground (not exec'd), so that killing the direct child alone would orphan both."""
    rank, solver = tree_members(scripts, pids, seconds)
    return ["sh", "-c", f"{sys.executable} {rank} & {sys.executable} {solver}; echo wrapper-done"]


def launcher_tree(scripts: Scripts, pids: Path) -> List[str]:
    """``mpirun``-style: a launcher that puts each process it starts in a process group of its own (Open
    MPI does so with its ranks) and passes no signal on, so that signalling the launcher's group reaches
    neither the helper "rank" nor the solver."""
    members = tree_members(scripts, pids)
    launcher = scripts.write(
        f"""
        import subprocess
        for script in {tuple(str(member) for member in members)!r}:
            child = subprocess.Popen([sys.executable, script], preexec_fn=os.setpgrp)
        child.wait()
        """
    )
    return [sys.executable, str(launcher)]


def recorded_pids(pids: Path) -> List[int]:
    return [int(line.split()[1]) for line in pids.read_text().splitlines()] if pids.exists() else []


def test_timeout_terminates_the_whole_process_tree_each_restart(scripts: Scripts, fault_table: list) -> None:
    pids = scripts.dir / "pids"
    with pybridge.Simulator(solver_tree(scripts, pids), timeout=0.3, restarts=2) as sim:
        assert sim([0.0]) == 0.0
        with pytest.raises(EvaluationTimeout):
            sim([1.0])  # times out three times: the first start and two restarts
        started = recorded_pids(pids)
        assert len(started) == 6  # a solver and a rank per start
        assert wait_until(lambda: not any(alive(pid) for pid in started), 5.0), \
            [pid for pid in started if alive(pid)]  # fmt: skip
    record(fault_table, "wrapper script + background rank, timeout, restarts=2 (orphans left)", 3, 3)


def test_close_terminates_the_whole_process_tree(scripts: Scripts) -> None:
    pids = scripts.dir / "pids"
    sim = pybridge.Simulator(solver_tree(scripts, pids, seconds=60), close_timeout=0.2)
    assert sim([0.0]) == 0.0
    sim.close()
    started = recorded_pids(pids)
    assert len(started) == 2
    assert wait_until(lambda: not any(alive(pid) for pid in started), 5.0)


@pytest.mark.parametrize("ending", ["timeout", "close"])
def test_processes_in_groups_of_their_own_are_terminated_too(scripts: Scripts, ending: str) -> None:
    pids = scripts.dir / "pids"
    sim = pybridge.Simulator(launcher_tree(scripts, pids), timeout=0.3, close_timeout=0.2)
    try:
        assert sim([0.0]) == 0.0
        if ending == "timeout":
            with pytest.raises(EvaluationTimeout):
                sim([1.0])
    finally:
        sim.close()
    started = recorded_pids(pids)
    assert len(started) == 2
    try:
        assert wait_until(lambda: not any(alive(pid) for pid in started), 5.0), \
            f"left running: {[pid for pid in started if alive(pid)]}"  # fmt: skip
    finally:
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_ctrl_c_reaches_the_driver_only_and_the_simulator_stays_usable(faulty_sim: Path, scripts: Scripts) -> None:
    driver = scripts.write(
        f"""
        sim = pybridge.Simulator({faulty(faulty_sim, work_us=300_000)!r})
        pid = sim.pid
        print("evaluating", flush=True)
        try:
            sim([5.0, 1.0])
            print("not interrupted", flush=True)
        except KeyboardInterrupt:
            pass
        assert sim.pid == pid and sim.returncode is None, "the simulator was hit by the Ctrl-C"
        values = [sim([3.0, 2.0]) for _ in range(3)]
        assert values == [5.0] * 3, values
        sim.close()
        print("ok", flush=True)
        """
    )
    # Its own session, so that the "terminal's" SIGINT to the foreground group hits nobody else here.
    process = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, cwd="/")  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "evaluating"
    time.sleep(0.05)  # inside the 300 ms evaluation; a later SIGINT fails the test visibly ("not interrupted")
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out.strip() == "ok", err


# ---- 8. the driver dies in the middle of an evaluation -----------------------------------------------


@pytest.mark.parametrize("started_by", ["driver", "user"])
def test_simulator_stops_within_a_second_when_its_driver_dies_mid_evaluation(scripts: Scripts, started_by: str,
                                                                             fault_table: list) -> None:  # fmt: skip
    solver = scripts.write("pybridge.serve(lambda x: time.sleep(600) or 1.0, n_params=1)\n")
    launch = f"[sys.executable, {str(solver)!r}]" if started_by == "driver" else "None"
    driver = scripts.write(
        f"""
        import subprocess
        sim = pybridge.Simulator({launch}, n_params=1)
        if sim.pid is None:  # started by the user, as under a batch system
            subprocess.Popen([sys.executable, {str(solver)!r}], env=dict(os.environ, PYBRIDGE_CHANNEL=sim.channel_name))
            sim.connect(10)
        print(sim.pid, sim.channel_name, flush=True)
        sim([1.0])
        """
    )
    process = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, cwd="/")
    assert process.stdout is not None
    pid_text, channel = process.stdout.readline().split()
    simulator = int(pid_text)
    time.sleep(0.05)  # well inside the evaluation
    process.kill()
    killed = time.monotonic()
    process.wait()
    process.stdout.close()
    try:
        assert wait_until(lambda: not alive(simulator), 3.0), "the simulator outlived its driver"
        stopped = time.monotonic() - killed
        record(fault_table, f"driver SIGKILL mid-evaluation, simulator started by the {started_by}", 1,
               int(stopped < 1.0), detection=stopped)  # fmt: skip
        assert stopped < 1.0
        assert wait_until(lambda: not any(os.path.exists(e) for e in channel_entries(channel)), 1.0)
    finally:
        if alive(simulator):
            os.kill(simulator, signal.SIGKILL)


def test_a_long_computation_can_ask_whether_its_driver_is_still_there(scripts: Scripts) -> None:
    log = scripts.dir / "noticed"
    solver = scripts.write(
        f"""
        from pybridge import _native
        channel = _native.SimulatorChannel(None, 1, 0, 0)
        request = channel.wait()
        while channel.driver_alive():   # the long computation, in slices
            time.sleep(0.01)
        open({str(log)!r}, "w").write("noticed")
        """
    )
    driver = scripts.write(
        f"""
        sim = pybridge.Simulator([sys.executable, {str(solver)!r}], n_params=1,
                                 env=dict(os.environ, PYBRIDGE_WATCHDOG="0"))
        print(sim.pid, flush=True)
        sim([1.0])
        """
    )
    process = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, cwd="/")
    assert process.stdout is not None
    simulator = int(process.stdout.readline())
    time.sleep(0.05)
    process.kill()
    process.wait()
    process.stdout.close()
    try:
        assert wait_until(log.exists, 3.0), "driver_alive() never said the driver was gone"
        assert wait_until(lambda: not alive(simulator), 3.0)
    finally:
        if alive(simulator):
            os.kill(simulator, signal.SIGKILL)


# ---- 9. a second Ctrl-C while close() waits ---------------------------------------------------------------


def test_ctrl_c_twice_during_close_still_removes_everything(faulty_sim: Path, scripts: Scripts) -> None:
    driver = scripts.write(
        f"""
        sim = pybridge.Simulator({faulty(faulty_sim, work_us=30_000_000)!r}, close_timeout=60)
        print(sim.pid, sim.channel_name, flush=True)
        try:
            sim([2.0, 2.0])   # 30 s; the test interrupts it
        except KeyboardInterrupt:
            pass
        print("closing", flush=True)
        for _ in range(2):
            try:
                sim.close()   # waits for the busy simulator to leave its loop: interrupted again
                break
            except KeyboardInterrupt:
                pass
        print("closed", sim.closed, flush=True)
        time.sleep(600)       # stays alive: the test looks at /dev/shm meanwhile
        """
    )
    process = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True,
                               start_new_session=True, cwd="/")  # fmt: skip
    assert process.stdout is not None
    try:
        pid_text, channel = process.stdout.readline().split()
        simulator = int(pid_text)
        time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        assert process.stdout.readline().strip() == "closing"
        for _ in range(2):
            time.sleep(0.1)
            os.killpg(process.pid, signal.SIGINT)
        assert process.stdout.readline().strip() == "closed True"
        assert process.poll() is None  # the driver lives on...
        assert not any(os.path.exists(e) for e in channel_entries(channel))  # ...and nothing is left
        assert wait_until(lambda: not alive(simulator), 3.0)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


# ---- 10. other users' entries, directories, FIFOs, symlinks in /dev/shm -------------------------------

JUNK = (
    # another user's stale semaphore and segment (an OOM-killed job), unreadable to us
    "printf x > /dev/shm/sem.pybridge-0123456789abcdef01234567-req && "
    "printf x > /dev/shm/pybridge-0123456789abcdef01234567 && "
    "chown 12345:12345 /dev/shm/sem.pybridge-0123456789abcdef01234567-req /dev/shm/pybridge-0123456789abcdef01234567 && "
    "chmod 600 /dev/shm/sem.pybridge-0123456789abcdef01234567-req /dev/shm/pybridge-0123456789abcdef01234567 && "
    # a directory, a FIFO and a symlink to the FIFO with our prefix
    "mkdir /dev/shm/pybridge-dir && mkfifo -m 666 /dev/shm/pybridge-fifo && "
    "ln -s /dev/shm/pybridge-fifo /dev/shm/pybridge-link && ln -s /dev/shm/pybridge-fifo /dev/shm/sem.pybridge-link-req"
)


@needs_private_shm
@pytest.mark.parametrize("user", [NOBODY, None], ids=["as-a-user", "as-root"])
def test_junk_in_dev_shm_stops_nobody(scripts: Scripts, bundled: Callable, user) -> None:
    script = scripts.write(
        f"""
        from pybridge.core import cleanup
        stale = cleanup.clean()
        with pybridge.Simulator([{str(bundled("pybridge-rosenbrock"))!r}], n_params=2) as sim:
            assert sim([1.0, 1.0]) == 0.0
        left = sorted(os.listdir("/dev/shm"))
        print(len(stale), " ".join(left))
        """
    )
    result = run_in_private_shm(script, setup=JUNK, user=user, timeout=60)
    assert result.returncode == 0, result.stderr
    removed, left = result.stdout.split(" ", 1)
    assert removed == "0"  # nothing of ours was stale; nobody else's is ours to judge
    assert left.split() == sorted(["pybridge-0123456789abcdef01234567", "pybridge-dir", "pybridge-fifo",
                                   "pybridge-link", "sem.pybridge-0123456789abcdef01234567-req",
                                   "sem.pybridge-link-req"])  # fmt: skip


@needs_private_shm
def test_pybridge_clean_command_does_not_hang_on_a_fifo(scripts: Scripts) -> None:
    script = scripts.write("from pybridge.cli import main\nsys.exit(main(['clean']))\n")
    result = run_in_private_shm(script, setup=JUNK, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "0 stale entries removed" in result.stdout


# ---- 11. small or full /dev/shm --------------------------------------------------------------------------


@needs_private_shm
def test_a_channel_larger_than_dev_shm_is_a_clear_error(scripts: Scripts, bundled: Callable) -> None:
    script = scripts.write(
        f"""
        try:
            pybridge.Simulator([{str(bundled("pybridge-rosenbrock"))!r}], n_params=50_000_000)
        except pybridge.SharedMemoryFull as error:
            print(error)
        print(sorted(os.listdir("/dev/shm")))
        """
    )
    result = run_in_private_shm(script, size="64m")
    assert result.returncode == 0, result.stderr  # a SIGBUS would kill it (-7)
    message, left = result.stdout.strip().splitlines()
    assert "needs 762.9 MiB" in message and "64.0 MiB free" in message, message
    assert "--shm-size" in message
    assert left == "[]"


@needs_private_shm
def test_a_full_dev_shm_is_a_clear_error(scripts: Scripts, bundled: Callable) -> None:
    script = scripts.write(
        f"""
        try:
            pybridge.Simulator([{str(bundled("pybridge-rosenbrock"))!r}], n_params=2)
        except pybridge.SharedMemoryFull as error:
            print(type(error).__name__, error)
        os.unlink("/dev/shm/filler")
        print(sorted(os.listdir("/dev/shm")))
        """
    )
    result = run_in_private_shm(script, size="8m", setup="fallocate -l 8m /dev/shm/filler")
    assert result.returncode == 0, result.stderr
    message, left = result.stdout.strip().splitlines()
    assert message.startswith("SharedMemoryFull") and "free" in message, message
    assert left == "[]"


@needs_private_shm
def test_a_journal_whose_disk_fills_up_is_a_clear_error_and_keeps_what_it_committed(scripts: Scripts,
                                                                                     bundled: Callable) -> None:
    # A calibration of days fills the disk under its journal: it used to end in sqlite3's bare
    # "database or disk is full", raised from inside SciPy, without saying what was kept or what to do.
    script = scripts.write(
        f"""
        from pybridge.record import read_journal
        try:
            with pybridge.Simulator([{str(bundled("pybridge-rosenbrock"))!r}], n_params=8) as sim:
                pybridge.minimize(sim, {{"x": [(-2, 2)] * 8}}, "Nelder-Mead", x0={{"x": np.zeros(8)}},
                                  options={{"maxfev": 10**6, "xatol": 0, "fatol": 0}}, journal="/dev/shm/run.db",
                                  progress=False)
        except pybridge.JournalError as error:
            print(type(error).__name__, error)
        contents = read_journal("/dev/shm/run.db")
        print(len(contents.ids), len(set(contents.ids.tolist())), contents.runs[-1]["state"],
              contents.runs[-1]["message"])
        """
    )
    result = run_in_private_shm(script, size="2m")
    assert result.returncode == 0, result.stderr
    message, kept = result.stdout.strip().splitlines()
    assert message.startswith("JournalError cannot write to the journal /dev/shm/run.db: database or disk is full")
    assert "resume=True" in message
    count, distinct, state, ended = kept.split(" ", 3)
    assert int(count) > 1000 and int(distinct) == int(count)
    # The run's end usually fits where the failed rows were (the journal then says how it ended); if not,
    # the run reads as interrupted. Never as running.
    assert (state, ended.startswith("failed: JournalError: cannot write to the journal")) in (
        ("finished", True), ("interrupted", False))


@needs_private_shm
def test_a_colleague_reads_a_journal_in_a_folder_they_cannot_write(scripts: Scripts, bundled: Callable) -> None:
    # SQLite opens a WAL journal by creating its -shm beside it; in a folder the reader cannot write
    # (a colleague's results, an archive, a read-only mount) every read of a closed journal failed with
    # "attempt to write a readonly database", which pybridge reported as "not a usable pybridge journal".
    journal = scripts.dir / "calibration.db"
    with pybridge.Simulator([str(bundled("pybridge-rosenbrock"))], n_params=2) as sim:
        expected = pybridge.minimize(sim, {"a": (-2, 2), "b": (-2, 2)}, method="Nelder-Mead", journal=journal,
                                     progress=False)  # fmt: skip
    journal.chmod(0o644)
    script = scripts.write(
        f"""
        from pybridge.record import read_journal
        from pybridge.cli import main
        contents = read_journal({str(journal)!r})
        print(len(contents.ids), repr(float(contents.cost.min())), contents.runs[-1]["state"])
        sys.exit(main(["history", {str(journal)!r}, "--best", "1"]))
        """
    )
    result = run_in_private_shm(script, user=NOBODY, timeout=60)
    assert result.returncode == 0, result.stderr
    count, best, state = result.stdout.splitlines()[0].split()
    assert int(count) == expected.nfev and float(best) == expected.fun and state == "finished"
    assert sorted(path.name for path in scripts.dir.iterdir() if path.name.startswith("calibration")) == [
        "calibration.db"]  # the reader left nothing beside it


# ---- 12. a peer that writes header fields after the handshake ---------------------------------------------


def test_a_simulator_scribbling_over_the_layout_cannot_crash_the_driver(scripts: Scripts) -> None:
    command = scripts.command(
        """
        import mmap
        from pybridge.protocol import HEADER_DTYPE
        calls = 0
        def cost(x):
            global calls
            calls += 1
            if calls == 2:  # rewrite the layout the driver fixed: sizes and offsets far out of the mapping
                name = os.environ["PYBRIDGE_CHANNEL"]
                with open("/dev/shm/" + name, "r+b") as f:
                    m = mmap.mmap(f.fileno(), 0)
                    h = np.ndarray((), dtype=HEADER_DTYPE, buffer=m)
                    for field in ("params_offset", "gradient_offset", "residuals_offset", "segment_size"):
                        h[field] = 1 << 40
                    h["n_params"] = 1 << 30
                    h["n_residuals"] = 1 << 30
                    del h
                    m.close()
            return float(x[0] + x[1])
        pybridge.serve(cost, n_params=2)
        """
    )
    with pybridge.Simulator(command) as sim:
        values = [sim(np.array([float(i), 1.0])) for i in range(10)] + [sim([2.0, 2.0])]
        assert values == [i + 1.0 for i in range(10)] + [4.0]


def test_a_driver_scribbling_over_the_layout_cannot_crash_the_simulator(faulty_sim: Path) -> None:
    with pybridge.Simulator(faulty(faulty_sim)) as sim:
        assert sim([3.0, 1.0]) == 4.0
        header = sim._session.channel._header  # a buggy driver
        for field in ("params_offset", "gradient_offset", "residuals_offset", "segment_size"):
            header[field] = 1 << 40
        header["n_params"] = 1 << 30
        header["capabilities"] = 3
        values = [sim([3.0, 2.0]) for _ in range(10)]
        assert values == [5.0] * 10 and sim.returncode is None


# ---- 13. what the user is told ----------------------------------------------------------------------------


def test_a_killed_driver_leaves_no_leak_warning_in_the_log(faulty_sim: Path, scripts: Scripts) -> None:
    driver = scripts.write(
        f"""
        sim = pybridge.Simulator({faulty(faulty_sim)!r})
        sim([1.0, 1.0])
        print(sim.pid, sim.channel_name, flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd="/")  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    pid_text, channel = process.stdout.readline().split()
    process.kill()
    process.wait()
    # Read stderr to its end: every process that inherited it (a resource tracker too) has exited.
    log = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    assert wait_until(lambda: not alive(int(pid_text)), 3.0)
    assert wait_until(lambda: not any(os.path.exists(e) for e in channel_entries(channel)), 3.0)
    assert "leaked" not in log, log
