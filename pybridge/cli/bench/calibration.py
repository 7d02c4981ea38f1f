"""The calibration front end's figures for `pybridge bench`: what records, the journal and the
progress bar cost on a fast model.

The same 10 000-evaluation Nelder-Mead on the bundled Rosenbrock simulator, run in rounds as plain
``scipy.optimize.minimize(sim, ...)`` and through ``pybridge.minimize`` with records only, with the
journal, and with the journal, the progress bar and a callback, each once first (unmeasured: the first
progress bar of a process imports tqdm); µs per evaluation are the best of :data:`ROUNDS`, the ratio the
median of the rounds' own (the first and the last variant back to back).
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import numpy as np
import scipy.optimize as so

from ...optimize import minimize
from ...optimize.calibration import DRAIN_RECORDS
from ...paths import bundled_simulator
from ...record.journal import Journal
from ...record.records import Batch, Evaluation, Iteration
from ...simulator import Simulator

__all__ = ["measure_calibration"]

N_PARAMS = 4
BOUNDS = [(-2.0, 2.0)] * N_PARAMS
# xatol = fatol = 0: Nelder-Mead runs until maxfev, so every variant makes the same evaluations.
OPTIONS = {"xatol": 0.0, "fatol": 0.0}
BASE = "scipy.optimize.minimize(sim)"
FULL = "pybridge.minimize + journal + progress bar + callback"
#: Rounds of all variants. The ratio is the median of the rounds' own ratios: this host's drift moves a
#: baseline by up to 50 % between rounds, which a ratio of two separate minima takes as the code's. In
#: each round the baseline and the full variant run back to back, first one then the other in turn
#: (A B, then B A): a drift within a round then tilts the ratios of alternate rounds both ways instead
#: of all one way, and the median sits between them. (Five runs of 7 rounds each, alternately, on a
#: noisy hour: medians of 1.43-1.62 with the two other variants between the pair, 1.42-1.47 back to back.)
ROUNDS = 9


def measure_calibration(quick: bool, log: Callable[[str], None] = print) -> Dict[str, Any]:
    log("calibration: journal and monitoring overhead ...")
    evaluations = 2_000 if quick else 10_000
    options = dict(OPTIONS, maxfev=evaluations)
    params = {"x": BOUNDS}
    x0 = np.zeros(N_PARAMS)
    seconds: Dict[str, float] = {}
    counts: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pybridge-bench-") as folder, Simulator(
        [bundled_simulator("pybridge-rosenbrock")], n_params=N_PARAMS
    ) as sim:
        journals = iter(Path(folder) / f"run{i}.db" for i in range(100))
        variants: Dict[str, Callable[[], Any]] = {
            BASE: lambda: so.minimize(sim, x0, method="Nelder-Mead", bounds=BOUNDS, options=options),
            "pybridge.minimize, records only": lambda: minimize(sim, params, "Nelder-Mead", x0={"x": x0},
                                                                options=options, progress=False),
            "pybridge.minimize + journal": lambda: minimize(sim, params, "Nelder-Mead", x0={"x": x0},
                                                            options=options, progress=False, journal=next(journals)),
            FULL: lambda: minimize(
                sim, params, "Nelder-Mead", x0={"x": x0}, options=options, journal=next(journals),
                progress=io.StringIO(), callback=lambda record: None),
        }  # fmt: skip
        # One run of each first, not measured: a process's first journal and first progress bar pay one-time
        # costs (SQLite's first use, tqdm's import: up to 70 ms in a fresh process), 15-90 ms in all against
        # ~0.1 s for a whole run here, once per process and not per calibration. Reported on their own.
        first: Dict[str, float] = {}
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            first[name] = time.perf_counter() - started
        ratios: List[float] = []
        others = [name for name in variants if name not in (BASE, FULL)]
        for number in range(2 if quick else ROUNDS):
            times: Dict[str, float] = {}
            order = [BASE, FULL, *others] if number % 2 == 0 else [FULL, BASE, *others[::-1]]
            for name in order:
                run = variants[name]
                started = time.perf_counter()
                result = run()
                times[name] = time.perf_counter() - started
                seconds[name] = min(seconds.get(name, float("inf")), times[name])
                counts[name] = int(result.nfev)
            ratios.append(times[FULL] / times[BASE])
        # The journal alone, measured directly (a difference of two noisy totals can come out negative): a
        # run's records written to a fresh journal as the calibration hands them over, in batches of columns
        # (opening and closing the file included).
        records: List[Any] = []
        minimize(sim, params, "Nelder-Mead", x0={"x": x0}, options=options, progress=False, callback=records.append)
        batches = list(_as_batches(records, DRAIN_RECORDS))
        writes = []
        for i in range(5):
            started = time.perf_counter()
            journal = Journal(Path(folder) / f"direct{i}.db", {"bench": i}, [f"x[{k}]" for k in range(N_PARAMS)],
                              resume=False)  # fmt: skip
            journal.begin_run("nelder-mead", {}, resumed=False)
            for batch in batches:
                journal.add_all([batch])
            journal.close()
            writes.append(time.perf_counter() - started)
    journal_us = min(writes) / evaluations
    return {
        "evaluations": counts, "seconds": seconds, "ratio": float(np.median(ratios)), "ratios": ratios,
        "first_run_seconds": first,
        "per_evaluation_us": {name: s / counts[name] * 1e6 for name, s in seconds.items()},
        "journal_us_per_evaluation": journal_us * 1e6,
    }  # fmt: skip


def _as_batches(records: List[Any], size: int) -> Iterator[Batch]:
    """Records of one start cut into the batches the native recorder hands the journal."""
    for at in range(0, len(records), size):
        chunk = records[at : at + size]
        evaluations = [r for r in chunk if type(r) is Evaluation]
        iterations = [r for r in chunk if type(r) is Iteration]
        cost, started, finished, request_latency, reply_latency = (
            np.array([getattr(r, field) for r in evaluations], dtype=float)
            for field in ("cost", "started", "finished", "request_latency", "reply_latency"))  # fmt: skip
        yield Batch(
            evaluations[0].number if evaluations else 1, 0, np.array([r.x for r in evaluations]).reshape(-1, N_PARAMS),
            cost, started, finished, request_latency, reply_latency, None,
            [r.evaluations - (evaluations[0].number - 1 if evaluations else 0) for r in iterations],
            tuple([getattr(r, field) for r in iterations] for field in ("number", "cost", "best_cost", "evaluations", "time")),
            np.array([r.x for r in iterations]).reshape(-1, N_PARAMS),
        )  # fmt: skip
