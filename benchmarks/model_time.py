"""What the bridge adds to evaluations of milliseconds, and what the waiting costs in CPU.

    python benchmarks/model_time.py [--spin-us 500,0] [--jitter 0.1] [--quick]

Drives the benchmark simulator with `--burn-x0`: each evaluation computes (burns CPU) for x[0]
microseconds, drawn around the model time with uniform ±jitter, and replies with its own wall time,
which is subtracted from the round trip measured here: what remains is the time the bridge added.
Prints, per model time (0.2, 1, 5, 50 ms) and per `spin_us`: the median, p10 and p90 added time, the
driver's CPU as a share of wall time, and the simulator's CPU beyond its model time (read from
/proc in ticks of 10 ms: a --quick run reads it only to a few per cent).

The groundwork of issue 10 (a wait that forecasts the reply): the targets there are medians against
today's default and pure blocking in one run, which is what this prints. Not part of `pybridge bench`
yet; docs/performance.md ("Evaluations of milliseconds") has the figures and the prototype's.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import List, Tuple

import numpy as np

import pybridge
from pybridge.cli.bench.measure import _program

MODEL_TIMES_US = ((200, 2000), (1000, 1000), (5000, 300), (50000, 40))  # (model time, evaluations)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(model_us: float, evaluations: int, spin_us: int, jitter: float) -> Tuple[List[float], float, float]:
    """(added µs per evaluation, driver CPU share, simulator CPU share beyond the model)."""
    rng = np.random.default_rng(0)
    with pybridge.Simulator([_program("pybridge-bench-sim"), "--burn-x0"], n_params=2, spin_us=spin_us) as sim:
        x = np.zeros(2)
        x[0] = model_us
        for _ in range(20):  # warm-up: adaptive waits settle
            sim(x)
        added: List[float] = []
        model_seconds = 0.0
        cpu, simulator_cpu, wall = time.process_time(), cpu_seconds(sim.pid), time.perf_counter()
        for _ in range(evaluations):
            x[0] = model_us * (1 + jitter * rng.uniform(-1, 1))
            started = time.perf_counter_ns()
            model = sim(x)  # the model's own wall time, in µs
            added.append((time.perf_counter_ns() - started) / 1e3 - model)
            model_seconds += model / 1e6
        wall = time.perf_counter() - wall
        driver_share = (time.process_time() - cpu) / wall
        simulator_share = (cpu_seconds(sim.pid) - simulator_cpu - model_seconds) / wall
    return added, driver_share, simulator_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spin-us", default="500,0", help="spin_us values to compare, comma-separated")
    parser.add_argument("--jitter", type=float, default=0.1, help="uniform relative jitter of the model time")
    parser.add_argument("--quick", action="store_true", help="a tenth of the evaluations: only checks that it runs")
    args = parser.parse_args()
    print("| model time | spin_us | added: median | p10 | p90 | driver CPU | simulator CPU beyond the model |")
    print("|---|---|---|---|---|---|---|")
    for model_us, evaluations in MODEL_TIMES_US:
        for spin_us in map(int, args.spin_us.split(",")):
            count = max(4, evaluations // 10) if args.quick else evaluations
            added, driver, simulator = measure(model_us, count, spin_us, args.jitter)
            p10, median, p90 = np.percentile(added, [10, 50, 90])
            print(f"| {model_us / 1000:g} ms | {spin_us} | {median:.1f} µs | {p10:.1f} | {p90:.1f} | "
                  f"{driver:.1%} | {simulator:.1%} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
