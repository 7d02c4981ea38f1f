"""The pool's figures for `pybridge bench`: dispatch overhead against the standard process pools,
the speed-up of 2 simulators over 1, differential evolution end to end, ``pybridge.minimize`` on a
pool (multi-start side by side, and one start's cost per evaluation), and threads: the pool's own
against its dispatcher, and threads with a Simulator each against one.

Every alternative evaluates the same C++ function (``benchmarks/native/cost.h``): the process
pools call it in their worker processes through pybind11 (``pybridge._bench``), the Pool through
its resident simulators.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from scipy.optimize import differential_evolution
from scipy.optimize import minimize as scipy_minimize

from ...pool import Pool
from ...simulator import Simulator
from .measure import _program

__all__ = ["measure_pool"]

WORKERS = 2
BATCH = 64  # vectors per request for a simulator that declares batches


def measure_pool(quick: bool, log: Callable[[str], None] = print) -> Dict[str, Any]:
    log("pool: dispatch overhead ...")
    overhead = _dispatch_overhead(2_000 if quick else 10_000)
    log("pool: speed-up on 2 ms evaluations ...")
    speedup = _speedup(40 if quick else 200, burn_us=2000)
    log("pool: differential evolution ...")
    de = _differential_evolution(quick, burn_us=1000)
    log("pool: its threads against its dispatcher, and threads with a Simulator each ...")
    threads = _threads_against_dispatcher(100 if quick else 400, sleep_us=200)
    evaluations = 50 if quick else 200
    threads["one_simulator_us"] = min(_simulator_each(200, 1, evaluations) for _ in range(3))
    threads["simulator_each_us"] = min(_simulator_each(200, 2, evaluations) for _ in range(3))
    log("pool: pybridge.minimize, multi-start ...")
    return {"overhead_us": overhead, "speedup": speedup, "differential_evolution": de, "threads": threads,
            "minimize": _minimize_on_a_pool(quick, burn_us=1000)}  # fmt: skip


def _dispatch_overhead(count: int) -> Dict[str, float]:
    """Microseconds per trivial evaluation (n = 8), 2 workers, best of 3 (the evaluation itself takes
    ~10 ns, so this is all dispatch)."""
    from ... import _bench  # type: ignore[attr-defined]  # built with the package; no stubs

    xs: List[np.ndarray] = list(np.random.default_rng(0).uniform(-2, 2, size=(count, 8)))
    results: Dict[str, float] = {}
    with Pool([_program("pybridge-bench-sim")], workers=WORKERS, n_params=8) as pool:
        results["pybridge Pool.map(pool, xs)"] = _best(lambda: list(pool.map(pool, xs))) / count * 1e6
        wrapper = _Wrapper(pool)  # what SciPy hands workers=: a callable that is not the pool
        results["pybridge Pool.map(any callable, xs) (threads)"] = _best(lambda: list(pool.map(wrapper, xs))) / count * 1e6
    with Pool([_program("pybridge-bench-sim"), "--batch", str(BATCH)], workers=WORKERS, n_params=8) as pool:
        results[f"pybridge Pool.map(pool, xs), batches of {BATCH}"] = (
            _best(lambda: list(pool.map(pool, xs))) / count * 1e6
        )
    with ProcessPoolExecutor(WORKERS) as executor:
        list(executor.map(_bench.sum_squares, xs[:100]))  # workers started and warm
        results["ProcessPoolExecutor.map"] = _best(lambda: list(executor.map(_bench.sum_squares, xs))) / count * 1e6
    with multiprocessing.get_context("forkserver").Pool(WORKERS) as mp_pool:
        mp_pool.map(_bench.sum_squares, xs[:100], chunksize=1)
        results["multiprocessing.Pool.map, chunksize=1"] = (
            _best(lambda: mp_pool.map(_bench.sum_squares, xs, chunksize=1)) / count * 1e6
        )
    return results


def _speedup(count: int, burn_us: int) -> Dict[str, float]:
    """Wall time of ``count`` evaluations that compute for ``burn_us`` each, on 1 and on 2 simulators."""
    xs = list(np.random.default_rng(1).uniform(-2, 2, size=(count, 8)))
    walls = {}
    for workers in (1, WORKERS):
        with Pool([_program("pybridge-bench-sim"), "--burn-us", str(burn_us)], workers=workers, n_params=8) as pool:
            list(pool.map(pool, xs[:4]))
            walls[workers] = _best(lambda: list(pool.map(pool, xs)), repeats=2)  # noqa: B023
    ideal = count * burn_us * 1e-6
    return {
        "evaluations": count, "model_ms": burn_us / 1000, "ideal_1_s": ideal, "one_s": walls[1],
        "two_s": walls[WORKERS], "speedup": walls[1] / walls[WORKERS], "ideal_speedup": float(WORKERS),
    }  # fmt: skip


def _threads_against_dispatcher(count: int, sleep_us: int) -> Dict[str, float]:
    """µs per evaluation of a model that sleeps ``sleep_us`` (sleeping, so that two of them never
    compete for this machine's 2 cores), on 2 simulators: ``pool.map`` of the pool itself (one thread
    dispatches) and of any other callable (one thread per simulator, as SciPy's finite differences run).
    The threads must overlap as the dispatcher's requests do; a wait that spun with the GIL held made
    them take turns (1.7-2.1x the dispatcher's time)."""
    xs = list(np.random.default_rng(2).uniform(-2, 2, size=(count, 8)))
    with Pool([_program("pybridge-bench-sim"), "--sleep-us", str(sleep_us)], workers=WORKERS, n_params=8) as pool:
        list(pool.map(pool, xs[:20]))
        wrapper = _Wrapper(pool)
        dispatcher = _best(lambda: list(pool.map(pool, xs))) / count * 1e6
        threads = _best(lambda: list(pool.map(wrapper, xs))) / count * 1e6
    return {"model_ms": sleep_us / 1000, "dispatcher_us": dispatcher, "threads_us": threads}


def _simulator_each(sleep_us: int, count: int, evaluations: int) -> float:
    """µs of wall time per evaluation of ``count`` threads, each with a Simulator of its own and doing
    ``evaluations`` of a model that sleeps ``sleep_us``, all at once (for 2 threads the ideal is half of
    one thread's). A wait that spun with the GIL held through its whole budget made them take turns
    (0.9x one thread's time at 0.2 ms); since 34a190e only a lone driver thread's does."""
    command = [_program("pybridge-bench-sim"), "--rosenbrock", "--sleep-us", str(sleep_us)]
    sims = [Simulator(command, n_params=3) for _ in range(count)]
    # Each thread times its own evaluations: a clock read in the main thread once the threads are let go
    # started late whenever a lone driver thread kept the GIL through its waits (by design), up to after
    # most of them.
    spans: List[Tuple[float, float]] = []
    try:
        together = threading.Barrier(count)

        def run(sim: Simulator) -> None:
            x = np.zeros(3)
            try:
                for _ in range(10):
                    sim(x)
            except BaseException:
                together.abort()  # the other threads stop waiting for this one
                raise
            together.wait()
            begun = time.perf_counter()
            for _ in range(evaluations):
                sim(x)
            spans.append((begun, time.perf_counter()))

        workers = [threading.Thread(target=run, args=(sim,)) for sim in sims]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        for sim in sims:
            sim.close()
    if len(spans) < count:
        raise RuntimeError("a thread of the threads benchmark failed (its traceback is above)")
    seconds = max(end for _, end in spans) - min(begun for begun, _ in spans)
    return seconds / (count * evaluations) * 1e6


def _differential_evolution(quick: bool, burn_us: int) -> Dict[str, float]:
    """The same seeded differential evolution, serial on one Simulator and with workers=pool.map."""
    command = [_program("pybridge-bench-sim"), "--rosenbrock", "--burn-us", str(burn_us)]
    bounds = [(-2.0, 2.0)] * 4
    options = dict(seed=3, maxiter=5 if quick else 25, popsize=10, polish=False, updating="deferred", tol=0)
    with Simulator(command, n_params=4) as sim:
        started = time.perf_counter()
        serial = differential_evolution(sim, bounds, **options)
        serial_s = time.perf_counter() - started
    with Pool(command, workers=WORKERS, n_params=4) as pool:
        started = time.perf_counter()
        parallel = differential_evolution(pool, bounds, workers=pool.map, **options)
        parallel_s = time.perf_counter() - started
    if not (np.array_equal(serial.x, parallel.x) and serial.nfev == parallel.nfev):
        raise AssertionError("differential evolution through the pool did not repeat the serial run")
    return {"evaluations": serial.nfev, "model_ms": burn_us / 1000, "serial_s": serial_s, "pool_s": parallel_s,
            "speedup": serial_s / parallel_s}  # fmt: skip


def _minimize_on_a_pool(quick: bool, burn_us: int) -> Dict[str, float]:
    """``pybridge.minimize`` on a pool: 4 Nelder-Mead starts side by side on 2 simulators of a model that
    computes ``burn_us`` (the wall time against the evaluations' model time over 2), and one start on the
    fastest model against SciPy on the same pool (µs per evaluation)."""
    from ...optimize import minimize

    eight = [(-2.0, 2.0)] * 8
    with Pool([_program("pybridge-bench-sim"), "--burn-us", str(burn_us)], workers=WORKERS, n_params=8) as pool:
        walls = []
        # The best of two: the first run also imports scipy.stats for the starting points (0.3 s, against
        # 0.45 s for the run itself) and meets new simulators' untrained waits (5-10 % slower).
        for _ in range(2):
            started = time.perf_counter()
            result = minimize(pool, {"x": eight}, "Nelder-Mead", n_starts=4, seed=1,
                              options={"maxfev": 50 if quick else 200}, progress=False)  # fmt: skip
            walls.append(time.perf_counter() - started)
        wall = min(walls)
    count = 2_000 if quick else 10_000
    four = [(-2.0, 2.0)] * 4
    options = {"xatol": 0.0, "fatol": 0.0, "maxfev": count}  # runs to maxfev: the same evaluations in both
    with Pool([_program("pybridge-bench-sim"), "--rosenbrock"], workers=WORKERS, n_params=4) as pool:
        scipy_s = _best(lambda: scipy_minimize(pool, np.zeros(4), method="Nelder-Mead", bounds=four, options=options))
        ours_s = _best(lambda: minimize(pool, {"x": four}, "Nelder-Mead", x0={"x": np.zeros(4)}, options=options,
                                        progress=False))  # fmt: skip
    return {"starts": 4, "evaluations": result.evaluations, "model_ms": burn_us / 1000, "wall_s": wall,
            "ideal_s": result.evaluations * burn_us * 1e-6 / WORKERS, "scipy_us": scipy_s / count * 1e6,
            "minimize_us": ours_s / count * 1e6}  # fmt: skip


class _Wrapper:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def __call__(self, x: np.ndarray) -> float:
        return self.pool(x)


def _best(run: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best
