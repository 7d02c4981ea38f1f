"""A spinning waiter and the peer it has just woken, on one core: what each handoff costs.

    python benchmarks/shared_core.py [--evaluations 300] [--model-us 2000,10000]

The figures behind docs/performance.md's table of the spin's yields (cpp/src/wait.hpp, spin_until):

- **one core:** driver and simulator bound to one CPU (as ``taskset -c 0`` or ``mpirun --bind-to
  core`` leave them), ``spin_us=500`` asked, a model that sleeps 200 µs: the 90th percentile of the
  request's and the reply's latency, and the mean time the bridge adds to the model's own. Since the
  channel stopped spinning there (both sides confined to one CPU: cpp/src/driver.cpp), this measures
  blocking on one core; before, the spin's yields;
- **unbound:** ``pybridge.minimize`` (Nelder-Mead, with a journal) on a model that sleeps each of
  ``--model-us``: the share of replies the driver saw more than 300 µs late, and the time added (mean,
  p90). A sleeping model keeps neither core busy, so the woken driver may land on the core where the
  simulator spins for its next request.

The added time includes the model's own oversleep (~60 µs here). Run from /tmp, so that the installed
package is measured; compare builds by running it with each, alternately.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile

import numpy as np

import pybridge
from pybridge.cli.bench.measure import _program
from pybridge.optimize import MaxEvaluations


def _command(model_us: int) -> list:
    return [_program("pybridge-bench-sim"), "--rosenbrock", "--sleep-us", str(model_us)]


def one_core(evaluations: int, model_us: int = 200) -> str:
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # the simulator inherits it
    try:
        with pybridge.Simulator(_command(model_us), n_params=3, spin_us=500) as sim:
            outcomes = [sim.evaluate([np.zeros(3)])[0] for _ in range(evaluations + 20)][20:]
    finally:
        os.sched_setaffinity(0, allowed)
    request, reply = (np.array([getattr(o, side) for o in outcomes]) * 1e6 for side in ("request_latency", "reply_latency"))
    added = np.array([o.finished - o.started for o in outcomes]) * 1e6 - model_us
    return (f"one core, {model_us} us model: request / reply latency p90 {np.percentile(request, 90):.0f} / "
            f"{np.percentile(reply, 90):.0f} us; added, mean {added.mean():.0f} us")  # fmt: skip


def unbound(evaluations: int, model_us: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        journal = os.path.join(folder, "run.db")
        with pybridge.Simulator(_command(model_us), n_params=3) as sim:
            pybridge.minimize(sim, {"x": [(-2.0, 2.0)] * 3}, method="Nelder-Mead", journal=journal, progress=False,
                              stop=[MaxEvaluations(evaluations)])  # fmt: skip
        with sqlite3.connect(journal) as db:
            rows = np.array(db.execute("SELECT reply_latency, finished - started FROM evaluations").fetchall())
    reply, added = rows[:, 0] * 1e6, rows[:, 1] * 1e6 - model_us
    return (f"unbound, pybridge.minimize, {model_us} us model: replies later than 300 us {np.mean(reply > 300):.0%}; "
            f"added, mean {added.mean():.0f} us (p90 {np.percentile(added, 90):.0f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--model-us", default="2000,10000")
    args = parser.parse_args()
    print(one_core(args.evaluations))
    for model_us in (int(v) for v in args.model_us.split(",")):
        # The same wall time for each model: ~0.8 s of evaluations.
        print(unbound(max(20, min(args.evaluations * 2, 800_000 // model_us)), model_us))


if __name__ == "__main__":
    main()
