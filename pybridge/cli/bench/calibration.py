"""The calibration front end's figures for `pybridge bench`: what records, the journal and the
progress bar cost on a fast model.

The same 10 000-evaluation Nelder-Mead on the bundled Rosenbrock simulator, run alternately as
plain ``scipy.optimize.minimize(sim, ...)`` and through ``pybridge.minimize`` with records only,
with the journal, and with the journal, the progress bar and a callback. Each is the best of three.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import scipy.optimize as so

from ...optimize import minimize
from ...paths import bundled_simulator
from ...record.journal import Journal
from ...simulator import Simulator

__all__ = ["measure_calibration"]

N_PARAMS = 4
BOUNDS = [(-2.0, 2.0)] * N_PARAMS
# xatol = fatol = 0: Nelder-Mead runs until maxfev, so every variant makes the same evaluations.
OPTIONS = {"xatol": 0.0, "fatol": 0.0}


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
            "scipy.optimize.minimize(sim)": lambda: so.minimize(sim, x0, method="Nelder-Mead", bounds=BOUNDS,
                                                                 options=options),
            "pybridge.minimize, records only": lambda: minimize(sim, params, "Nelder-Mead", x0={"x": x0},
                                                                options=options, progress=False),
            "pybridge.minimize + journal": lambda: minimize(sim, params, "Nelder-Mead", x0={"x": x0},
                                                            options=options, progress=False, journal=next(journals)),
            "pybridge.minimize + journal + progress bar + callback": lambda: minimize(
                sim, params, "Nelder-Mead", x0={"x": x0}, options=options, journal=next(journals),
                progress=io.StringIO(), callback=lambda record: None),
        }  # fmt: skip
        for _ in range(3):
            for name, run in variants.items():  # alternately, so that drift hits all alike
                started = time.perf_counter()
                result = run()
                elapsed = time.perf_counter() - started
                seconds[name] = min(seconds.get(name, float("inf")), elapsed)
                counts[name] = int(result.nfev)
        # The journal alone, measured directly (a difference of two noisy totals can come out negative):
        # a run's records written to a fresh journal.
        records: List[Any] = []
        minimize(sim, params, "Nelder-Mead", x0={"x": x0}, options=options, progress=False, callback=records.append)
        writes = []
        for i in range(3):
            journal = Journal(Path(folder) / f"direct{i}.db", {"bench": i}, [f"x[{k}]" for k in range(N_PARAMS)],
                              resume=False)  # fmt: skip
            journal.begin_run("nelder-mead", {}, resumed=False)
            started = time.perf_counter()
            for at in range(0, len(records), 64):  # as the calibration delivers them
                journal.add_all(records[at : at + 64])
            journal.close()
            writes.append(time.perf_counter() - started)
    base = seconds["scipy.optimize.minimize(sim)"]
    full = seconds["pybridge.minimize + journal + progress bar + callback"]
    journal_us = min(writes) / evaluations
    return {
        "evaluations": counts, "seconds": seconds, "ratio": full / base,
        "per_evaluation_us": {name: s / counts[name] * 1e6 for name, s in seconds.items()},
        "journal_us_per_evaluation": journal_us * 1e6,
    }  # fmt: skip
