"""Soak test: a million evaluations with flat memory and file-descriptor counts on both sides.

    python benchmarks/soak.py [--evaluations 1000000] [--every 100000]

Drives the bundled C++ Rosenbrock simulator (8 parameters, alternating cost and
cost+gradient requests) and samples the resident set size (VmRSS) and open file
descriptors of the driver and of the simulator. Exits non-zero if either grows
after the warm-up sample: more than 1 MiB of RSS, or any descriptor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import pybridge
from pybridge.paths import bundled_simulator


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    points = rng.uniform(-2, 2, (1024, 8))
    samples = []
    with pybridge.Simulator([bundled_simulator("pybridge-rosenbrock")], n_params=8) as sim:
        me, peer = os.getpid(), sim.pid
        assert peer is not None
        started = time.perf_counter()
        print(f"{'evaluations':>12} {'driver RSS':>11} {'driver fds':>10} {'sim RSS':>9} {'sim fds':>8} {'µs/eval':>8}")
        for done in range(0, args.evaluations + 1, args.every):
            if done:
                t0 = time.perf_counter()
                for i in range(args.every):
                    x = points[i & 1023]
                    if i & 1:
                        sim.value_and_grad(x)
                    else:
                        sim(x)
                per_eval = (time.perf_counter() - t0) / args.every * 1e6
            else:
                per_eval = float("nan")
            sample = (done, rss_kib(me), fds(me), rss_kib(peer), fds(peer))
            samples.append(sample)
            print(f"{sample[0]:>12} {sample[1]:>8} KiB {sample[2]:>10} {sample[3]:>5} KiB {sample[4]:>8} {per_eval:>8.1f}")
        total = time.perf_counter() - started
        assert sim.evaluations == args.evaluations

    warm = samples[1] if len(samples) > 1 else samples[0]
    last = samples[-1]
    growth = {
        "driver RSS (KiB)": last[1] - warm[1],
        "driver fds": last[2] - warm[2],
        "simulator RSS (KiB)": last[3] - warm[3],
        "simulator fds": last[4] - warm[4],
    }
    print(f"\n{args.evaluations} evaluations in {total:.1f} s; growth after the first sample: {growth}")
    flat = growth["driver RSS (KiB)"] <= 1024 and growth["simulator RSS (KiB)"] <= 1024
    flat = flat and growth["driver fds"] == 0 and growth["simulator fds"] == 0
    print("flat" if flat else "NOT FLAT")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
