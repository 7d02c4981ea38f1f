"""What looking at a long run's journal costs: read whole, its last or best rows, and a plot.

    python benchmarks/journal_reads.py [--evaluations 1000000]

Writes a journal of N evaluations of 8 values (as the native recorder hands them over), then times
each way of reading it and takes its peak of Python allocations (tracemalloc, which also slows what
it watches: the times are taken in a separate, untraced pass). The figures in docs/journal.md
("Reading it") come from this script at 10^6 evaluations.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

from pybridge.record.journal import Journal, read_journal
from pybridge.record.records import Batch


def write(path: Path, evaluations: int) -> None:
    rng = np.random.default_rng(0)
    journal = Journal(path, {"benchmark": evaluations}, [f"x[{i}]" for i in range(8)], resume=False)
    journal.begin_run("nelder-mead", {}, resumed=False)
    for at in range(0, evaluations, 4096):
        n = min(4096, evaluations - at)
        times = np.arange(at, at + n, dtype=float)
        latencies = rng.uniform(1e-7, 2e-7, size=(2, n))  # request and reply latency, as measured
        journal.add_all([Batch(at + 1, 0, rng.uniform(size=(n, 8)), rng.uniform(size=n), times, times + 1e-6,
                               *latencies, None, [], ([], [], [], [], []), np.empty((0, 8)))])  # fmt: skip
    journal.end_run("done", 0.0)
    journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=1_000_000)
    evaluations = parser.parse_args().evaluations
    with tempfile.TemporaryDirectory(prefix="pybridge-journal-") as folder:
        path = Path(folder) / "run.db"
        write(path, evaluations)
        ways: Dict[str, Callable[[], Any]] = {
            "read_journal (whole)": lambda: read_journal(path),
            "read_journal(last=3)": lambda: read_journal(path, last=3),
            "read_journal(best=3)": lambda: read_journal(path, best=3),
        }
        try:
            import matplotlib  # noqa: F401  (the optional extra)

            from pybridge.record.plot import plot_journal

            ways["plot_journal"] = lambda: plot_journal(path, Path(folder) / "run.png")
        except ImportError:
            print("(plot left out: matplotlib is not installed)")
        print(f"{evaluations} evaluations of 8 values")
        for name, way in ways.items():
            started = time.perf_counter()
            way()
            seconds = time.perf_counter() - started
            tracemalloc.start()
            way()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{name:24s} {seconds:8.3f} s   peak {peak / 2**20:8.1f} MiB ({peak / evaluations:6.1f} bytes per evaluation)")


if __name__ == "__main__":
    main()
