"""Pool: parallel evaluation on resident simulators, through every parallel hook SciPy has."""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest
import scipy
from scipy.optimize import brute, differential_evolution, least_squares, minimize, shgo
from scipy.optimize._numdiff import approx_derivative  # the reference FiniteDifferences must match

import pybridge
from pybridge import ChannelClosed, EvaluationFailed, FiniteDifferences, Pool, SimulatorCrashed, _native

ROSENBROCK = "pybridge-rosenbrock"
# Python 3.9 gets SciPy 1.13 at most: there, FiniteDifferences is the way to parallel gradients.
SCIPY_WORKERS = pytest.mark.skipif(
    tuple(int(part) for part in scipy.__version__.split(".")[:2]) < (1, 16),
    reason=f"SciPy {scipy.__version__} has no workers= in minimize and least_squares (added in 1.16)",
)


def points(n: int, dim: int, seed: int = 0) -> List[np.ndarray]:
    return list(np.random.default_rng(seed).uniform(-2, 2, size=(n, dim)))


@pytest.fixture(scope="module")
def rosenbrock_pool(bundled: Callable) -> Pool:
    with Pool([bundled(ROSENBROCK)], workers=2, n_params=3) as pool:
        yield pool


@pytest.fixture(scope="module")
def rosenbrock_sim(bundled: Callable) -> pybridge.Simulator:
    with pybridge.Simulator([bundled(ROSENBROCK)], n_params=3) as sim:
        yield sim


# ---- results: bit-identical to serial evaluation, in order ---------------------------------------


def test_results_are_bit_identical_to_serial_and_in_order(rosenbrock_pool: Pool, rosenbrock_sim) -> None:
    xs = points(500, 3)
    assert list(rosenbrock_pool.map(rosenbrock_pool, xs)) == [rosenbrock_sim(x) for x in xs]
    pairs = list(rosenbrock_pool.map(rosenbrock_pool.value_and_grad, xs[:50]))
    for x, (cost, gradient) in zip(xs, pairs):
        serial_cost, serial_gradient = rosenbrock_sim.value_and_grad(x)
        assert cost == serial_cost and np.array_equal(gradient, serial_gradient)
    # Any callable, through the threads; several iterables are zipped; a generator is fine.
    doubled = rosenbrock_pool.map(lambda x, k: k * rosenbrock_pool(x), (x for x in xs[:100]), range(100))
    assert list(doubled) == [k * rosenbrock_sim(x) for k, x in enumerate(xs[:100])]
    assert [rosenbrock_pool(x) for x in xs[:5]] == [rosenbrock_sim(x) for x in xs[:5]]


def test_the_workers_wait_with_the_gil_released(bundled: Callable) -> None:
    """Threads share a pool's workers: a wait that spun with the GIL held let one thread run at a time
    (`pybridge bench`'s row of the pool's threads against its dispatcher read 1.7-2.1, now ~1.0). So
    every worker's port, a restarted one's too, spins with the GIL released; a Simulator's own keeps
    the faster spin with the GIL held."""
    with Pool([bundled(ROSENBROCK)], workers=2, n_params=3) as pool:
        ports = [worker._port for worker in pool._workers if worker is not None]
        assert len(ports) == 2 and not any(port.spin_holding_gil for port in ports)
        pool._replace(0)
        pool(np.zeros(3))
        assert all(not w._port.spin_holding_gil for w in pool._workers if w is not None and w._port is not None)
    with pybridge.Simulator([bundled(ROSENBROCK)], n_params=3) as sim:
        assert sim._port is not None and sim._port.spin_holding_gil


def test_residual_pool_matches_serial(bundled: Callable) -> None:
    xs = [np.array([1.0, 0.5, 0.1]) * (1 + k / 10) for k in range(20)]
    with Pool([bundled("pybridge-decay")], workers=2) as pool, pybridge.Simulator([bundled("pybridge-decay")]) as sim:
        residuals = list(pool.map(pool.residuals, xs))
        assert all(np.array_equal(r, sim.residuals(x)) for r, x in zip(residuals, xs))
        assert list(pool.map(pool, xs)) == [sim(x) for x in xs]


def test_the_pool_is_an_executor(rosenbrock_pool: Pool, rosenbrock_sim) -> None:
    assert isinstance(rosenbrock_pool, concurrent.futures.Executor)
    xs = points(20, 3, seed=1)
    futures = [rosenbrock_pool.submit(rosenbrock_pool, x) for x in xs]
    assert [f.result() for f in futures] == [rosenbrock_sim(x) for x in xs]
    done = rosenbrock_pool.submit(lambda a, b=0: a + b, 1, b=2)
    assert done.result() == 3
    assert rosenbrock_pool.size == 2 and rosenbrock_pool.n_params == 3
    with pytest.raises(ValueError, match="timeout=seconds"):
        rosenbrock_pool.map(rosenbrock_pool, xs, timeout=1.0)
    # pool.map(xs), the function left out, took xs for the function, zipped nothing and gave [].
    with pytest.raises(TypeError, match=r"takes the function first.*pool.map\(pool, xs\)"):
        rosenbrock_pool.map(xs)
    with pytest.raises(TypeError, match=r"needs something to map over"):
        rosenbrock_pool.map(rosenbrock_pool)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(rosenbrock_pool)


def test_shutdown_is_final_and_idempotent(bundled: Callable, shm_entries) -> None:
    pool = Pool([bundled(ROSENBROCK)], workers=2, n_params=2)
    pids = pool.pids
    pool.shutdown()
    pool.shutdown()
    assert pool.closed
    assert all(not _alive(pid) for pid in pids)
    with pytest.raises(ChannelClosed, match="shut down"):
        pool(np.zeros(2))
    with pytest.raises(ChannelClosed):
        pool.map(pool, [np.zeros(2)])
    with pytest.raises(ChannelClosed):
        pool.submit(pool, np.zeros(2))


def test_arguments_are_checked(bundled: Callable) -> None:
    for workers in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be"):
            Pool([bundled(ROSENBROCK)], workers=workers)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Pool([bundled(ROSENBROCK)], workers=1, no_such_option=1)


# ---- dispatch does not serialise round trips ------------------------------------------------------

# Each evaluation waits until the other worker has started one too: if the pool sent one request at a
# time, the first would never see the second begin (and reports a failure after 20 s).
RENDEZVOUS = """
import pathlib
here, other = pathlib.Path({dir!r}) / os.environ["PYBRIDGE_WORKER"], pathlib.Path({dir!r}) / str(1 - int(os.environ["PYBRIDGE_WORKER"]))
count = [0]
def cost(x):
    count[0] += 1
    (here.parent / f"{{here.name}}-{{count[0]}}").touch()
    deadline = time.monotonic() + 20
    while not (other.parent / f"{{other.name}}-{{count[0]}}").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the other worker never started: evaluations were serialised")
        time.sleep(0.001)
    return float(x.sum())
pybridge.serve(cost, n_params=2)
"""


@pytest.mark.parametrize("path", ["dispatch", "threads"])
def test_workers_compute_at_the_same_time(python_simulator: Callable, tmp_path: Path, path: str) -> None:
    with Pool(python_simulator(RENDEZVOUS.format(dir=str(tmp_path))), workers=2) as pool:
        xs = [np.array([k, 1.0]) for k in range(6)]
        fn = pool if path == "dispatch" else (lambda x: pool(x))
        assert list(pool.map(fn, xs)) == [k + 1.0 for k in range(6)]


# ---- every parallel hook of SciPy ------------------------------------------------------------------


def test_differential_evolution_with_pool_map_equals_serial(rosenbrock_pool: Pool, rosenbrock_sim) -> None:
    bounds = [(-2.0, 2.0)] * 3
    options = dict(seed=7, maxiter=60, popsize=10, tol=1e-10, polish=False, updating="deferred")
    parallel = differential_evolution(rosenbrock_pool, bounds, workers=rosenbrock_pool.map, **options)
    serial = differential_evolution(rosenbrock_sim, bounds, **options)
    assert np.array_equal(parallel.x, serial.x) and parallel.fun == serial.fun and parallel.nfev == serial.nfev
    polished = differential_evolution(rosenbrock_pool, bounds, workers=rosenbrock_pool.map, seed=7, updating="deferred")
    np.testing.assert_allclose(polished.x, np.ones(3), atol=1e-4)


@SCIPY_WORKERS
@pytest.mark.parametrize(
    "method",
    ["L-BFGS-B", "BFGS", "CG", "SLSQP", "TNC",
     pytest.param("trust-constr", marks=pytest.mark.filterwarnings("ignore:delta_grad == 0.0"))],
)  # fmt: skip
def test_minimize_finite_differences_through_workers(rosenbrock_pool: Pool, rosenbrock_sim, method: str) -> None:
    x0 = np.array([-1.2, 1.0, 0.5])
    options = {"maxiter": 200} if method != "TNC" else {"maxfun": 2000}
    bounds = [(-2.0, 2.0)] * 3 if method in ("L-BFGS-B", "SLSQP", "TNC", "trust-constr") else None
    serial = minimize(rosenbrock_sim, x0, method=method, bounds=bounds, options=options)
    parallel = minimize(rosenbrock_pool, x0, method=method, bounds=bounds,
                        options={**options, "workers": rosenbrock_pool.map})  # fmt: skip
    assert np.array_equal(parallel.x, serial.x) and parallel.fun == serial.fun
    if method in ("L-BFGS-B", "BFGS", "SLSQP"):
        np.testing.assert_allclose(parallel.x, np.ones(3), atol=1e-3)


@SCIPY_WORKERS
def test_least_squares_with_pool_map_equals_serial(bundled: Callable) -> None:
    with Pool([bundled("pybridge-decay")], workers=2) as pool, pybridge.Simulator([bundled("pybridge-decay")]) as sim:
        x0 = np.array([1.0, 1.0, 0.0])
        serial = least_squares(sim.residuals, x0)
        parallel = least_squares(pool.residuals, x0, workers=pool.map)
        assert np.array_equal(parallel.x, serial.x) and parallel.cost == serial.cost


def test_shgo_and_brute_with_pool_map_equal_serial(bundled: Callable) -> None:
    with Pool([bundled(ROSENBROCK)], workers=2, n_params=2) as pool, \
            pybridge.Simulator([bundled(ROSENBROCK)], n_params=2) as sim:  # fmt: skip
        bounds = [(-2.0, 2.0), (-1.0, 3.0)]
        serial = shgo(sim, bounds, sampling_method="sobol")
        parallel = shgo(pool, bounds, sampling_method="sobol", workers=pool.map)
        assert np.array_equal(parallel.x, serial.x)
        np.testing.assert_allclose(parallel.x, np.ones(2), atol=1e-4)
        ranges = (slice(-2, 2, 0.25), slice(-1, 3, 0.25))
        assert np.array_equal(brute(pool, ranges, workers=pool.map, finish=None),
                              brute(sim, ranges, finish=None))  # fmt: skip


# ---- parallel finite differences as jac= -----------------------------------------------------------


@pytest.mark.parametrize("method", ["2-point", "3-point"])
def test_finite_differences_are_scipys_bit_for_bit(rosenbrock_pool: Pool, method: str) -> None:
    bounds = [(-1.0, 1.0), (0.0, 2.0), (-5.0, 5.0)]
    lower, upper = np.array(bounds).T
    gradient = pybridge.FiniteDifferences(rosenbrock_pool, method=method, bounds=bounds)
    # Inside, on a bound, and a hair from one (one-sided and shortened steps).
    for x in (np.array([0.3, 1.0, -0.7]), np.array([1.0, 0.0, 5.0]), np.array([-1.0 + 1e-9, 2.0 - 1e-6, 0.0])):
        expected = approx_derivative(rosenbrock_pool, x, method=method, bounds=(lower, upper))
        assert np.array_equal(gradient(x), expected)
    unbounded = pybridge.FiniteDifferences(rosenbrock_pool, method=method, rel_step=1e-6)
    x = np.array([0.3, 0.0, -0.7])
    assert np.array_equal(unbounded(x), approx_derivative(rosenbrock_pool, x, method=method, rel_step=1e-6))
    absolute = pybridge.FiniteDifferences(rosenbrock_pool, method=method, abs_step=1e-7, bounds=bounds)
    x = np.array([1.0, 0.5, -0.7])
    expected = approx_derivative(rosenbrock_pool, x, method=method, abs_step=1e-7, bounds=(lower, upper))
    assert np.array_equal(absolute(x), expected)
    with pytest.raises(ValueError, match="outside the bounds"):
        gradient(np.array([2.0, 1.0, 0.0]))


def test_l_bfgs_b_with_parallel_jac_reaches_the_serial_result(rosenbrock_pool: Pool, rosenbrock_sim) -> None:
    bounds = [(-2.0, 2.0)] * 3
    x0 = np.array([-1.2, 1.0, 0.5])
    serial = minimize(rosenbrock_sim, x0, method="L-BFGS-B", bounds=bounds)
    jac = pybridge.FiniteDifferences(rosenbrock_pool, bounds=bounds, abs_step=1e-8)  # L-BFGS-B's own eps
    parallel = minimize(rosenbrock_pool, x0, method="L-BFGS-B", jac=jac, bounds=bounds)
    assert np.array_equal(parallel.x, serial.x)
    np.testing.assert_allclose(parallel.x, np.ones(3), atol=1e-3)
    assert jac.nfev == parallel.njev * 4


# ---- batches: simulators that evaluate several vectors per request ----------------------------------

# A vectorised Python simulator that logs the size of every request it serves, one file per worker.
LOGGING_BATCH = """
log = open({dir!r} + "/sizes-" + os.environ.get("PYBRIDGE_WORKER", "solo"), "a")
def cost(xs):
    log.write(f"{{len(xs)}}\\n"); log.flush()
    costs = ((xs - 1.0) ** 2).sum(axis=1)
    costs[xs[:, 0] == 13.0] = float("nan")  # that one vector fails
    if (xs[:, 0] == 99.0).any():
        raise ValueError("the solver diverged")  # the whole request fails
    return costs
pybridge.serve(cost, n_params=2, max_batch=8)
"""


def request_sizes(directory: Path) -> List[int]:
    return [int(line) for log in sorted(directory.glob("sizes-*")) for line in log.read_text().split()]


def test_map_packs_requests_to_the_declared_batch_size(python_simulator: Callable, tmp_path: Path) -> None:
    with Pool(python_simulator(LOGGING_BATCH.format(dir=str(tmp_path))), workers=2) as pool:
        assert pool.max_batch == 8
        xs = points(40, 2)
        assert list(pool.map(pool, xs)) == [float(((x - 1.0) ** 2).sum()) for x in xs]
        # 40 vectors over 2 simulators taking 8 at a time: five full requests, shared by both.
        assert request_sizes(tmp_path) == [8] * 5 and len(list(tmp_path.glob("sizes-*"))) == 2
        # A small map is spread evenly rather than filling one request.
        for log in tmp_path.glob("sizes-*"):
            log.write_text("")  # the simulators append (O_APPEND): they go on at the new end
        assert len(list(pool.map(pool, xs[:6]))) == 6
        assert sorted(request_sizes(tmp_path)) == [3, 3]
        assert pool.evaluations == 46


def test_batches_are_bit_identical_to_serial(bundled: Callable, rosenbrock_sim) -> None:
    xs = points(300, 3, seed=4)
    with Pool([bundled(ROSENBROCK), "--batch", "16"], workers=2, n_params=3) as pool:
        assert pool.max_batch == 16
        assert list(pool.map(pool, xs)) == [rosenbrock_sim(x) for x in xs]
        for x, (cost, gradient) in zip(xs, pool.map(pool.value_and_grad, xs[:40])):
            serial_cost, serial_gradient = rosenbrock_sim.value_and_grad(x)
            assert cost == serial_cost and np.array_equal(gradient, serial_gradient)
        assert np.array_equal(pool.vectorized(np.array(xs).T), [rosenbrock_sim(x) for x in xs])
        # Parallel finite differences pack their points too, and stay SciPy's bit for bit.
        x0 = np.array([0.3, -0.2, 0.5])
        assert np.array_equal(
            FiniteDifferences(pool)(x0), approx_derivative(rosenbrock_sim, x0, method="2-point")
        )
    with pybridge.Simulator([bundled(ROSENBROCK), "--batch", "16"], n_params=3, max_batch=4) as sim:
        assert sim.max_batch == 4  # the driver may take fewer than declared
        assert np.array_equal(sim.vectorized(np.array(xs[:10]).T), [rosenbrock_sim(x) for x in xs[:10]])
        assert sim(xs[0]) == rosenbrock_sim(xs[0])  # single requests on a batch channel


def test_residual_batches_give_each_vector_its_residuals_and_cost(python_simulator: Callable) -> None:
    command = python_simulator(
        """
        def residuals(xs):
            return np.stack([xs[:, 0] - 1.0, 2.0 * xs[:, 1], xs.sum(axis=1)], axis=1)
        pybridge.serve(residuals, n_params=2, n_residuals=3, max_batch=4)
        """
    )
    xs = points(10, 2, seed=5)
    expected = [np.array([x[0] - 1.0, 2.0 * x[1], x.sum()]) for x in xs]
    with Pool(command, workers=2) as pool:
        assert pool.max_batch == 4
        for got, want in zip(pool.map(pool.residuals, xs), expected):
            assert np.array_equal(got, want)
        costs = [_native.residual_cost(want) for want in expected]  # the single path's own arithmetic
        assert list(pool.map(pool, xs)) == costs
        assert pool.vectorized(np.array(xs).T).tolist() == costs


def test_differential_evolution_vectorized_equals_serial(bundled: Callable, rosenbrock_sim) -> None:
    bounds = [(-2.0, 2.0)] * 3
    options = dict(updating="deferred", seed=7, maxiter=60, tol=1e-10, polish=False)
    serial = differential_evolution(rosenbrock_sim, bounds, **options)
    with Pool([bundled(ROSENBROCK), "--batch", "64"], workers=2, n_params=3) as pool:
        batched = differential_evolution(pool.vectorized, bounds, vectorized=True, **options)
        assert pool.evaluations == serial.nfev  # with vectorized=True SciPy counts calls in nfev, not points
    assert np.array_equal(batched.x, serial.x) and batched.fun == serial.fun
    with pybridge.Simulator([bundled(ROSENBROCK), "--batch", "64"], n_params=3) as sim:
        alone = differential_evolution(sim.vectorized, bounds, vectorized=True, **options)
    assert np.array_equal(alone.x, serial.x)


def test_a_failed_vector_fails_alone_and_a_failed_request_fails_whole(
    python_simulator: Callable, tmp_path: Path
) -> None:
    command = python_simulator(LOGGING_BATCH.format(dir=str(tmp_path)))
    xs = [np.array([float(k), 1.0]) for k in range(10, 18)]
    expected = [float((k - 1.0) ** 2) for k in range(10, 18)]
    with Pool(command, workers=2, penalty=1e6) as pool:
        assert list(pool.map(pool, xs)) == [1e6 if k == 13 else e for k, e in zip(range(10, 18), expected)]
        assert pool.failures == 1
        diverged = [np.array([99.0, 1.0])] + xs[:3]  # one request with the others: all of it fails
        assert list(pool.map(pool, diverged)) == [1e6, 1e6, expected[1], expected[2]]  # requests of 2 and 2
    with Pool(command, workers=2) as pool:
        results = pool.map(pool, xs)
        assert [next(results) for _ in range(3)] == expected[:3]
        with pytest.raises(EvaluationFailed, match="non-finite cost nan in vector 3 of request"):
            next(results)
        with pybridge.Simulator(command) as sim:
            with pytest.raises(EvaluationFailed, match="the solver diverged"):
                sim.vectorized(np.array([[1.0, 99.0], [1.0, 1.0]]))
            with pytest.raises(ValueError, match=r"shape \(2, S\)"):
                sim.vectorized(np.zeros(2))
            with pytest.raises(ValueError, match=r"column 1 has x\[0\] = nan"):
                sim.vectorized(np.array([[0.0, np.nan], [0.0, 0.0]]))


CRASH_IN_A_BATCH = """
def cost(xs):
    if len(xs) > 1:
        try:  # exactly one simulator wins the marker, however the two race
            os.close(os.open({dir!r} + "/crashed", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), 9)
    return (xs ** 2).sum(axis=1)
pybridge.serve(cost, n_params=2, max_batch=4)
"""


def test_a_crash_in_a_batch_restarts_and_retries_the_whole_request(python_simulator: Callable, tmp_path: Path) -> None:
    xs = points(24, 2)
    with Pool(python_simulator(CRASH_IN_A_BATCH.format(dir=str(tmp_path))), workers=2, restarts=1) as pool:
        assert list(pool.map(pool, xs)) == [float((x**2).sum()) for x in xs]
        assert pool.restart_count == 1 and pool.failures == 4 and pool.evaluations == 24


# ---- faults in a pool ------------------------------------------------------------------------------

# Crashes once per worker, at its third evaluation (a marker file per worker says it did).
CRASH_ONCE = """
count = [0]
def cost(x):
    count[0] += 1
    marker = {dir!r} + "/crashed-" + os.environ["PYBRIDGE_WORKER"]
    if count[0] == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    return float((x ** 2).sum())
pybridge.serve(cost, n_params=2)
"""


def test_a_crashed_worker_is_restarted_and_loses_no_result(python_simulator: Callable, tmp_path: Path) -> None:
    xs = points(40, 2)
    with Pool(python_simulator(CRASH_ONCE.format(dir=str(tmp_path))), workers=2, restarts=1) as pool:
        assert list(pool.map(pool, xs)) == [float((x**2).sum()) for x in xs]
        assert pool.failures == 2 and pool.restart_count == 2 and pool.size == 2
        assert pool.evaluations == 40
        assert all(_alive(pid) for pid in pool.pids)


def test_without_a_policy_the_failure_is_raised_in_its_place(python_simulator: Callable, tmp_path: Path) -> None:
    command = python_simulator("pybridge.serve(lambda x: os._exit(3) if x[0] == 13 else float(x[0]), n_params=1)\n")
    with Pool(command, workers=2) as pool:
        xs = [np.array([float(k)]) for k in range(30)]
        results = pool.map(pool, xs)
        assert [next(results) for _ in range(13)] == [float(k) for k in range(13)]
        with pytest.raises(SimulatorCrashed, match="exited with code 3"):
            next(results)
        # The failed worker is replaced: the pool keeps its size and goes on.
        assert list(pool.map(pool, xs[:5] + xs[14:20])) == [float(k) for k in list(range(5)) + list(range(14, 20))]
        assert pool.size == 2 and all(_alive(pid) for pid in pool.pids)


def test_timeouts_and_reported_failures_take_the_penalty(python_simulator: Callable) -> None:
    command = python_simulator(
        """
        def cost(x):
            if x[0] == 2: time.sleep(30)
            if x[0] == 5: raise ValueError("no convergence")
            return float(x[0])
        pybridge.serve(cost, n_params=1)
        """
    )
    with Pool(command, workers=2, timeout=0.5, penalty=1e6) as pool:
        xs = [np.array([float(k)]) for k in range(8)]
        assert list(pool.map(pool, xs)) == [0.0, 1.0, 1e6, 3.0, 4.0, 1e6, 6.0, 7.0]
        assert pool.failures == 2
    with Pool(command, workers=2, timeout=0.5) as pool:
        with pytest.raises(EvaluationFailed, match="no convergence"):
            list(pool.map(lambda x: pool(x), [np.array([5.0]), np.array([1.0])]))


def test_shutdown_after_a_worker_was_killed_leaves_nothing(bundled: Callable, python_simulator: Callable) -> None:
    with Pool([bundled(ROSENBROCK)], workers=2, n_params=2, restarts=1) as pool:
        victim = pool.pids[0]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        xs = points(10, 2)
        assert len(list(pool.map(pool, xs))) == 10
        pids = pool.pids
    assert all(not _alive(pid) for pid in pids + [victim])


def test_ctrl_c_during_map_then_shutdown_leaves_nothing(python_simulator: Callable) -> None:
    # The third evaluation interrupts the driver, as Ctrl-C in its terminal would.
    command = python_simulator(
        """
        driver = os.getppid()
        def cost(x):
            if x[0] == 3: os.kill(driver, signal.SIGINT)
            time.sleep(0.01)
            return float(x[0])
        import signal
        pybridge.serve(cost, n_params=1)
        """
    )
    for path in ("dispatch", "threads"):
        pool = Pool(command, workers=2)
        pids = pool.pids
        fn = pool if path == "dispatch" else pool.__call__  # the bound method: not the pool, so on threads
        with pytest.raises(KeyboardInterrupt):
            list(pool.map(fn, [np.array([float(k)]) for k in range(200)]))
        pool.shutdown()
        assert all(not _alive(pid) for pid in pids)


def _alive(pid: "int | None") -> bool:
    return pid is not None and pybridge._native.process_alive(pid)  # a zombie counts as dead


SLEEPS_X0 = """
def cost(x):
    time.sleep(float(x[0]))  # x[0] seconds of model time, without taking a core
    return float(x[0])
pybridge.serve(cost, n_params=2)
"""


@pytest.mark.parametrize("vectors", [1, 2], ids=["one-each", "two-each"])
def test_threads_mapping_at_once_each_hear_their_own_reply(python_simulator: Callable, monkeypatch,
                                                          vectors: int) -> None:  # fmt: skip
    # Two threads (two starts of a multi-start run) each wait on the simulators they took; one's
    # evaluations take 1 ms, the other's 3 ms. All of a pool's channels ring one doorbell: a thread
    # waiting on it could take the other's ring and leave it asleep until its poll ran out (20 ms;
    # here 1 s, so that a missed reply cannot hide).
    monkeypatch.setattr("pybridge.core.channel.POLL_PERIOD", 1.0)
    monkeypatch.setattr("pybridge.pool.pool.POLL_PERIOD", 1.0)
    slowest: List[float] = []
    with Pool(python_simulator(SLEEPS_X0), workers=2 * vectors) as pool:
        def maps(model_seconds: float) -> None:
            for _ in range(20):
                started = time.monotonic()
                assert list(pool.map(pool, [np.array([model_seconds, 0.0])] * vectors)) == [model_seconds] * vectors
                slowest.append(time.monotonic() - started)

        threads = [threading.Thread(target=maps, args=(seconds,)) for seconds in (0.001, 0.003)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(slowest) == 40 and max(slowest) < 0.5, sorted(slowest)[-3:]  # 1 or 3 ms each; a missed reply: 1 s
