"""``pybridge monitor JOURNAL``: a running calibration's live figures, from another terminal.

It only reads the journal (read-only SQLite connection, WAL: the writer is never blocked), so it
can be started, stopped and restarted at any time without touching the run. It waits for the
journal to appear and ends when the last run has finished, or was interrupted (nothing writes it any
more: ``writer.py``), or at Ctrl-C.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Optional

import numpy as np

from ..errors import JournalError
from ..record.journal import JournalContents, read_journal

__all__ = ["run", "summary"]


def summary(contents: JournalContents, previous: Optional[JournalContents] = None, seconds: float = 0.0) -> str:
    """The figures of one refresh, as text."""
    if not contents.runs:
        return "no run yet"
    current = contents.runs[-1]
    in_run = contents.run == current["id"]
    count = int(in_run.sum())
    state = {"running": "running", "finished": f"finished: {current['message']}",
             "interrupted": "interrupted: the calibration writing it is gone (killed, or its machine went "
                            "down); run it again with resume=True to continue"}[current["state"]]  # fmt: skip
    lines = [f"run {current['id']}{' (resumed)' if current['resumed'] else ''} - {current['method']} - {state}"]
    rate = ""
    if previous is not None and seconds > 0:
        rate = f", {(len(contents.ids) - len(previous.ids)) / seconds:.1f}/s"
    lines.append(f"evaluations: {len(contents.ids)} in the journal, {count} in this run{rate}")
    failed = sum(status in ("failed", "penalty") for status in contents.status)
    if failed:
        lines.append(f"failed evaluations: {failed}")
    best = contents.best()
    if best is not None:
        values = ", ".join(f"{label}={value:.6g}" for label, value in zip(contents.labels, contents.x[best]))
        lines.append(f"best cost: {contents.cost[best]:.6g} at evaluation {int(contents.ids[best])} ({values})")
    if count:
        elapsed = contents.finished[in_run] - contents.started[in_run]
        lines.append(f"latency: median {_seconds(float(np.median(elapsed)))}, last {_seconds(float(elapsed[-1]))}; "
                     f"last evaluation {time.time() - float(contents.finished[in_run][-1]):.1f} s ago")  # fmt: skip
    iterations = [it for it in contents.iterations if it["run"] == current["id"]]
    if iterations:
        lines.append(f"iterations: {len(iterations)}")
    return "\n".join(lines)


def run(journal: str, interval: float = 1.0, once: bool = False, out: Optional[IO[str]] = None) -> int:
    stream = sys.stdout if out is None else out
    previous: Optional[JournalContents] = None
    last_read = time.monotonic()
    waiting_said = False
    try:
        while True:
            try:
                contents = read_journal(journal)
            except JournalError:
                if once:
                    raise
                if not waiting_said:
                    print(f"waiting for the journal {journal} ...", file=stream, flush=True)
                    waiting_said = True
                time.sleep(interval)  # polling a file that does not exist yet: nothing to wake us sooner
                continue
            now = time.monotonic()
            print(summary(contents, previous, now - last_read) + "\n", file=stream, flush=True)
            previous, last_read = contents, now
            if once or (contents.runs and not contents.running):
                return 0
            time.sleep(interval)  # the refresh period
    except KeyboardInterrupt:
        return 0


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"
