"""An MPI solver under mpirun (examples/mpi): launched by pybridge, or started by the user with one rank
attached. Rank 0 talks to the bridge, every rank computes its share, and the job ends as a whole."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import pytest
from scipy.optimize import minimize

import pybridge
from pybridge._native import process_alive as alive  # True while it runs; a zombie counts as dead
from pybridge.errors import EvaluationTimeout, SimulatorCrashed

RANK_VARIABLES = (b"OMPI_COMM_WORLD_RANK=", b"PMI_RANK=")  # Open MPI, MPICH


@pytest.fixture(scope="module")
def mpi_solver(built_examples: Path, toolchain) -> Path:
    toolchain("mpicc", "libopenmpi-dev openmpi-bin")
    toolchain("mpirun", "openmpi-bin")
    exe = built_examples / "mpi" / "pybridge-mpi-rosenbrock"
    assert exe.exists(), "an MPI is installed, but examples/CMakeLists.txt did not build the MPI example"
    return exe


@pytest.fixture(autouse=True)
def mpi_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:  # Open MPI refuses root unless told twice; CI runs as root
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


def ranks(channel: str) -> Dict[int, int]:
    """{rank: pid} of the processes that carry this channel's name in their environment."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except OSError:
            continue
        if f"PYBRIDGE_CHANNEL={channel}".encode() in variables:
            for variable in variables:
                if variable.startswith(RANK_VARIABLES):
                    found[int(variable.split(b"=")[1])] = int(entry)
    return found


def wait_for_ranks(channel: str, count: int) -> Dict[int, int]:
    deadline = time.monotonic() + 10
    while len(found := ranks(channel)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(found) == count, found
    return found


@pytest.fixture
def no_rank_left_behind() -> Iterator[list]:
    """Collects the ranks a test saw; after it, none may be running."""
    seen: list = []
    yield seen
    left = [pid for pid in seen if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"ranks left running: {left}"


def test_values_and_gradients_equal_the_serial_simulator(mpi_solver: Path, bundled, no_rank_left_behind) -> None:
    points = np.random.default_rng(3).uniform(-2, 2, size=(5, 7))
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=7) as serial:
        expected = [serial.value_and_grad(x) for x in points]
    with pybridge.Simulator(["mpirun", "-n", "2", mpi_solver], n_params=7) as sim:
        no_rank_left_behind.extend(wait_for_ranks(sim.channel_name, 2).values())
        for x, (cost, gradient) in zip(points, expected):
            assert sim(x) == pytest.approx(cost, rel=1e-14)
            value, grad = sim.value_and_grad(x)
            assert value == pytest.approx(cost, rel=1e-14)
            np.testing.assert_allclose(grad, gradient, rtol=1e-13, atol=1e-12)
        result = minimize(sim.value_and_grad, np.zeros(7), jac=True, method="L-BFGS-B")
    np.testing.assert_allclose(result.x, np.ones(7), atol=1e-4)
    assert sim.returncode == 0  # every rank left its loop and finalised: mpirun exited 0


def test_timeout_ends_every_rank(mpi_solver: Path, no_rank_left_behind) -> None:
    with pybridge.Simulator(["mpirun", "-n", "2", mpi_solver, "--work", "5000"], n_params=3, timeout=0.5) as sim:
        no_rank_left_behind.extend(wait_for_ranks(sim.channel_name, 2).values())
        with pytest.raises(EvaluationTimeout):
            sim(np.zeros(3))
        assert not any(alive(pid) for pid in no_rank_left_behind)


@pytest.mark.parametrize("when", ["between evaluations", "during an evaluation"])
def test_the_death_of_a_rank_surfaces_within_a_second(mpi_solver: Path, when: str, no_rank_left_behind) -> None:
    with pybridge.Simulator(["mpirun", "-n", "2", mpi_solver, "--work", "3000"], n_params=3) as sim:
        found = wait_for_ranks(sim.channel_name, 2)
        no_rank_left_behind.extend(found.values())
        killed_at = []

        def kill_rank_1() -> None:
            killed_at.append(time.monotonic())
            os.kill(found[1], signal.SIGKILL)

        killer = threading.Timer(0.0 if when == "between evaluations" else 0.3, kill_rank_1)
        killer.start()
        try:
            with pytest.raises(SimulatorCrashed):
                sim(np.zeros(3))
            elapsed = time.monotonic() - killed_at[0]
        finally:
            killer.join()
        assert elapsed < 1.0, f"{elapsed:.3f} s from the rank's death to SimulatorCrashed"


def test_a_rank_of_an_mpirun_the_user_started_attaches(mpi_solver: Path, no_rank_left_behind) -> None:
    with pybridge.Simulator(None, n_params=4) as sim:
        job = subprocess.Popen(["mpirun", "-n", "2", str(mpi_solver)], env=dict(os.environ, PYBRIDGE_CHANNEL=sim.channel_name),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            sim.connect(timeout=30)
            no_rank_left_behind.extend(wait_for_ranks(sim.channel_name, 2).values())
            assert sim([1.0, 1.0, 1.0, 1.0]) == 0.0 and sim(np.zeros(4)) == 3.0
        except BaseException:
            job.kill()
            raise
    _, err = job.communicate(timeout=30)
    assert job.returncode == 0, err  # closing the channel ended the job cleanly
