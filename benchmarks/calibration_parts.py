"""What each part of `pybridge.minimize`'s layer costs inside a real run, beyond plain SciPy.

    python benchmarks/calibration_parts.py [--evaluations 10000] [--rounds 25]

The calibration pair of `pybridge bench` (a Nelder-Mead on the bundled Rosenbrock simulator, n = 4)
taken apart: plain SciPy, then `pybridge.minimize` with records only, with the progress bar, with a
callback, with the journal, and with all three, each run `--rounds` times in alternating order (µs
per evaluation, median and best). Then the journal's own methods, timed inside runs with a journal:
wall and CPU time per run (the close waits on the disk for its checkpoint's syncs). The figures in
docs/performance-log.md ("The calibration layer taken apart in place") come from this script.
"""

from __future__ import annotations

import argparse
import functools
import io
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import scipy.optimize as so

import pybridge
from pybridge.cli.bench.calibration import BOUNDS, N_PARAMS, OPTIONS
from pybridge.paths import bundled_simulator
from pybridge.record.journal import Journal

JOURNAL_STEPS = ("__init__", "add_all", "_flush", "end_run", "close")


def _timed(spent: Dict[str, List[float]], name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name][0] += time.perf_counter() - wall
            spent[name][1] += time.process_time() - cpu

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    options = dict(OPTIONS, maxfev=args.evaluations)
    params, x0 = {"x": BOUNDS}, np.zeros(N_PARAMS)
    with tempfile.TemporaryDirectory(prefix="pybridge-parts-") as folder, pybridge.Simulator(
        [bundled_simulator("pybridge-rosenbrock")], n_params=N_PARAMS
    ) as sim:
        journals = (Path(folder) / f"run{i}.db" for i in range(1_000_000))

        def ours(**keywords: Any) -> Callable[[], Any]:
            keywords.setdefault("progress", False)
            return lambda: pybridge.minimize(sim, params, "Nelder-Mead", x0={"x": x0}, options=options, **keywords)

        variants: Dict[str, Callable[[], Any]] = {
            "scipy.optimize.minimize(sim)": lambda: so.minimize(sim, x0, method="Nelder-Mead", bounds=BOUNDS,
                                                                options=options),
            "records only": ours(),
            "+ progress bar": lambda: ours(progress=io.StringIO())(),
            "+ callback": ours(callback=lambda record: None),
            "+ journal": lambda: ours(journal=next(journals))(),
            "+ journal, progress bar, callback": lambda: ours(journal=next(journals), progress=io.StringIO(),
                                                              callback=lambda record: None)(),
        }  # fmt: skip
        for run in variants.values():  # once each first: the first journal and tqdm's import
            run()
        seconds: Dict[str, List[float]] = {name: [] for name in variants}
        names = list(variants)
        for number in range(args.rounds):
            for name in names if number % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                variants[name]()
                seconds[name].append(time.perf_counter() - started)
        print(f"{args.evaluations} evaluations, {args.rounds} rounds; us per evaluation, median and best")
        for name, times in seconds.items():
            print(f"  {name:36s} {np.median(times) / args.evaluations * 1e6:7.2f} {min(times) / args.evaluations * 1e6:7.2f}")

        spent = {name: [0.0, 0.0] for name in JOURNAL_STEPS}
        originals = {name: getattr(Journal, name) for name in JOURNAL_STEPS}
        for name, method in originals.items():
            setattr(Journal, name, _timed(spent, name, method))
        try:
            for _ in range(args.rounds):
                variants["+ journal"]()
        finally:
            for name, method in originals.items():
                setattr(Journal, name, method)
        print("the journal's methods inside a run, ms per run: wall, CPU (_flush, the transactions, runs within "
              "add_all, end_run and close)")
        for name, (wall, cpu) in spent.items():
            print(f"  {name:36s} {wall / args.rounds * 1e3:7.2f} {cpu / args.rounds * 1e3:7.2f}")


if __name__ == "__main__":
    main()
