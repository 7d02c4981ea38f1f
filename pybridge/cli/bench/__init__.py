"""`pybridge bench`: pybridge against every alternative, measured in one run.

Round trips of the same C/C++ cost function (``benchmarks/native/cost.h``)
through pybridge (default spin-then-block wait, and pure blocking) and
through what users otherwise pick — a subprocess with input/output files per
evaluation, a persistent process over a pipe, a Unix socket, TCP loopback —
next to the lower bounds: the same function called in-process through
pybind11, an in-process numpy expression, and two C processes spinning on
shared memory. Then end-to-end SciPy runs, the CPU burned while waiting
for a slow simulator, evaluations of milliseconds (the time the wait adds, its CPU, abrupt changes,
every core busy, the caches after a halt), and the pool: dispatch overhead against the standard
process pools, 2 simulators against 1, differential evolution in parallel. Transports are measured interleaved, in rounds, so
that drift hits all alike; every target is a ratio within this one run.

    pybridge bench [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .calibration import measure_calibration
from .distributed import measure_dask
from .measure import measure_end_to_end, measure_idle_cpu, measure_latency, measure_memcpy_8mb
from .model_time import measure_model_time
from .pool import measure_pool
from .report import evaluate_targets, tables
from .transports import SIZES

__all__ = ["main", "run"]


def run(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")},  # fmt: skip
        "latency": {},
    }
    for n in SIZES:
        log(f"latency, n = {n:,} ...")
        results["latency"][str(n)] = measure_latency(n, quick)
    results["memcpy_8mb_us"] = measure_memcpy_8mb(quick)
    log("end-to-end SciPy runs ...")
    results["end_to_end"] = measure_end_to_end(quick)
    log("CPU while waiting for 50 ms evaluations ...")
    results["idle_cpu"] = measure_idle_cpu(quick)
    results["model_time"] = measure_model_time(quick, log)
    results["pool"] = measure_pool(quick, log)
    results["calibration"] = measure_calibration(quick, log)
    results["dask"] = measure_dask(quick, log)
    results["targets"] = evaluate_targets(results)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pybridge bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples: checks that everything runs")
    parser.add_argument("--json", default="pybridge-bench.json", help="where to write the raw figures")
    args = parser.parse_args(argv)
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        # SciPy's own overhead is 4x larger with threaded BLAS (../shared/MEASURED.md), and the setting
        # counts only before numpy loads: start again with it. From a neutral directory, so that
        # `-m` cannot pick up a source checkout instead of the installed package.
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        again = ["--json", str(Path(args.json).resolve())] + (["--quick"] if args.quick else [])
        return subprocess.call([sys.executable, "-m", "pybridge.cli.bench", *again], env=env, cwd=tempfile.gettempdir())
    results = run(args.quick, log=lambda line: print(line, file=sys.stderr))
    Path(args.json).write_text(json.dumps(results, indent=2))
    print("\n".join(tables(results)))
    print(f"\nraw figures: {args.json}")
    return 0 if all(row["met"] for row in results["targets"]) else 1

