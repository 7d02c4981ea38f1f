"""What `pybridge bench` measures: latency per transport, end-to-end SciPy runs, CPU while waiting."""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import ExitStack
from typing import Dict, List, Sequence

import numpy as np

from ...simulator import DEFAULT_SPIN_US, Simulator
from .transports import _FileAndSubprocess, _program, _Transport, all_transports


def _samples(n: int, transport: _Transport, quick: bool) -> int:
    if quick:
        return 20
    slow = isinstance(transport, _FileAndSubprocess)
    return {8: 300 if slow else 20_000, 1_000: 300 if slow else 20_000, 100_000: 100 if slow else 2_000,
            1_000_000: 30 if slow else 300}[n]  # fmt: skip


def measure_latency(n: int, quick: bool, rounds: int = 10) -> Dict[str, Dict[str, float]]:
    """Median and p99 round trip (µs) per transport; rounds interleave the transports."""
    x = np.full(n, 0.5)
    expected = 0.25 * n
    transports = all_transports()
    samples: Dict[str, List[int]] = {t.name: [] for t in transports}
    clock = time.perf_counter_ns
    with ExitStack() as stack:
        calls = [(t, t.open(n, stack)) for t in transports]
        for transport, call in calls:  # warm up, and check that every transport computes the same
            for _ in range(3 if isinstance(transport, _FileAndSubprocess) else 200):
                value = call(x)
            if abs(value - expected) > 1e-9 * max(1.0, expected):
                raise RuntimeError(f"{transport.name} returned {value}, expected {expected}")
        for _ in range(rounds):
            for transport, call in calls:
                bucket = samples[transport.name]
                for _ in range(max(1, _samples(n, transport, quick) // rounds)):
                    started = clock()
                    call(x)
                    bucket.append(clock() - started)
    result = {name: _stats(times) for name, times in samples.items()}
    iterations = 2_000 if quick else {8: 100_000, 1_000: 100_000, 100_000: 2_000, 1_000_000: 300}[n]
    spin = json.loads(subprocess.run([_program("pybridge-bench-spin"), str(n), str(iterations)],
                                     capture_output=True, text=True, check=True).stdout)  # fmt: skip
    result["C <-> C spin on shared memory"] = {"median_us": spin["median_ns"] / 1e3, "p99_us": spin["p99_ns"] / 1e3}
    return result


def _stats(times_ns: Sequence[int]) -> Dict[str, float]:
    values = np.asarray(times_ns, dtype=float) / 1e3
    return {"median_us": float(np.median(values)), "p99_us": float(np.percentile(values, 99)), "samples": len(values)}


def measure_memcpy_8mb(quick: bool) -> float:
    """Median µs of copying 8 MB (10^6 doubles) with np.copyto, which runs at memcpy speed."""
    source, target = np.random.default_rng(0).random(1_000_000), np.empty(1_000_000)
    times = []
    for _ in range(20 if quick else 200):
        started = time.perf_counter_ns()
        np.copyto(target, source)
        times.append(time.perf_counter_ns() - started)
    return float(np.median(times)) / 1e3


def measure_end_to_end(quick: bool) -> Dict[str, Dict[str, float]]:
    from scipy.optimize import minimize

    from ... import _bench  # type: ignore[attr-defined]  # built with the package; no stubs

    nm_evals = 1_000 if quick else 10_000
    # Negative tolerances: Nelder-Mead never deems itself converged and makes exactly nm_evals evaluations.
    runs = {
        "Nelder-Mead, 8-D Rosenbrock": (
            8, False, lambda f: minimize(f, np.full(8, -1.2), method="Nelder-Mead",
                                         options={"maxfev": nm_evals, "maxiter": nm_evals, "xatol": -1, "fatol": -1}),
        ),
        "L-BFGS-B jac=True, 1000-D Rosenbrock": (
            1000, True, lambda f: minimize(f, np.full(1000, -1.2), jac=True, method="L-BFGS-B",
                                           options={"maxiter": 30 if quick else 300, "maxfun": 10**6}),
        ),
    }  # fmt: skip
    results = {}
    for name, (n, gradient, optimise) in runs.items():
        in_process = _bench.rosenbrock_value_and_grad if gradient else _bench.rosenbrock
        times: Dict[str, List[float]] = {"pybridge": [], "in-process": []}
        evaluations = {}
        with Simulator([_program("pybridge-bench-sim"), "--rosenbrock"], n_params=n) as sim:
            bridged = sim.value_and_grad if gradient else sim
            contenders = (("pybridge", bridged), ("in-process", in_process))
            for _, function in contenders:  # warm-up, not counted: first-call costs, spin policies settling
                optimise(function)
            for _ in range(1 if quick else 15):  # interleaved, so that machine drift hits both alike
                for label, function in contenders:
                    started = time.perf_counter()
                    result = optimise(function)
                    times[label].append(time.perf_counter() - started)
                    evaluations[label] = int(result.nfev)
        if evaluations["pybridge"] != evaluations["in-process"]:
            raise RuntimeError(f"{name}: {evaluations} evaluations differ between the runs")
        pybridge_s, in_process_s = float(np.median(times["pybridge"])), float(np.median(times["in-process"]))
        results[name] = {"evaluations": evaluations["pybridge"], "pybridge_s": pybridge_s,
                         "in_process_s": in_process_s, "ratio": pybridge_s / in_process_s}  # fmt: skip
    return results


def measure_idle_cpu(quick: bool) -> Dict[str, Dict[str, float]]:
    """Percent of a core each side burns while a 50 ms evaluation runs."""
    evaluations = 4 if quick else 40
    results = {}
    for label, spin_us in ((f"spin {DEFAULT_SPIN_US} us, then block", DEFAULT_SPIN_US), ("pure blocking", 0)):
        with Simulator([_program("pybridge-bench-sim"), "--sleep-us", "50000"], n_params=8, spin_us=spin_us) as sim:
            x = np.zeros(8)
            sim(x)
            assert sim.pid is not None
            wall, cpu, peer = time.perf_counter(), time.process_time(), _cpu_seconds(sim.pid)
            for _ in range(evaluations):
                sim(x)
            wall = time.perf_counter() - wall
            results[label] = {
                "driver_percent": 100 * (time.process_time() - cpu) / wall,
                "simulator_percent": 100 * (_cpu_seconds(sim.pid) - peer) / wall,
            }
    return results


def _cpu_seconds(pid: int) -> float:
    # schedstat counts nanoseconds on a CPU; /proc/PID/stat only clock ticks (10 ms).
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9
