"""``pybridge monitor JOURNAL``: a running calibration's live figures, from another terminal.

It only reads the journal (read-only SQLite connection, WAL: the writer is never blocked), so it
can be started, stopped and restarted at any time without touching the run. Each refresh reads only
the rows added since the one before (a journal of days holds millions), and the figures are kept up
to date from them. It waits for the journal to appear and ends when the last run has finished, or
was interrupted (nothing writes it any more: ``record/writer.py``), or at Ctrl-C.
"""

from __future__ import annotations

import collections
import sys
import time
from typing import IO, Deque, Dict, Optional, Tuple

import numpy as np

from ..errors import JournalError
from ..record.journal import JournalContents, read_journal
from ..record.progress import format_duration

__all__ = ["run", "Figures"]

#: The latency shown is the median of the current run's last this many evaluations: the model's time
#: now, not averaged over days.
RECENT = 1000


class Figures:
    """What the monitor shows, brought up to date by each read's new rows (:meth:`add`)."""

    def __init__(self) -> None:
        self.contents: Optional[JournalContents] = None  # the latest read: the runs, and where to go on
        self.evaluations = 0
        self.by_run: Dict[int, int] = collections.Counter()
        self.iterations_by_run: Dict[int, int] = collections.Counter()
        self.failed = 0
        self.best: Optional[Tuple[float, int, np.ndarray]] = None  # cost, evaluation id, x
        self.recent: Dict[int, Deque[float]] = collections.defaultdict(lambda: collections.deque(maxlen=RECENT))
        # The bridge's share of those: (request, reply) latency of the ones that measured it.
        self.recent_bridge: Dict[int, Deque[Tuple[float, float]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=RECENT))
        self.last_finished: Dict[int, float] = {}
        self.added = 0  # evaluations the latest read added

    def add(self, contents: JournalContents) -> None:
        self.contents, self.added = contents, len(contents.ids)
        self.evaluations += len(contents.ids)
        self.by_run.update(contents.run.tolist())
        self.iterations_by_run.update(iteration["run"] for iteration in contents.iterations)
        self.failed += sum(status in ("failed", "penalty") for status in contents.status)
        best = contents.best()
        if best is not None and (self.best is None or contents.cost[best] < self.best[0]):
            self.best = (float(contents.cost[best]), int(contents.ids[best]), contents.x[best])
        for run_id, started, finished, request, reply in zip(contents.run.tolist(), contents.started,
                                                             contents.finished, contents.request_latency,
                                                             contents.reply_latency):  # fmt: skip
            self.recent[run_id].append(finished - started)
            self.last_finished[run_id] = finished
            if request == request and reply == reply:  # not NaN: measured
                self.recent_bridge[run_id].append((request, reply))

    def replaced_by(self, contents: JournalContents) -> bool:
        """Whether ``contents`` comes from another journal at the same path (deleted and created again
        since the last read): its first run is not the one read before. The figures must then start
        over from a whole read, or they would mix the two."""
        if self.contents is None or not self.contents.runs:
            return False
        first = self.contents.runs[0]
        return not contents.runs or (contents.runs[0]["id"], contents.runs[0]["started"]) != (first["id"], first["started"])

    def text(self, seconds: float = 0.0) -> str:
        """The figures of one refresh; ``seconds`` since the refresh before (for the rate)."""
        contents = self.contents
        if contents is None or not contents.runs:
            return "no run yet"
        current = contents.runs[-1]
        state = {"running": "running", "finished": f"finished: {current['message']}",
                 "interrupted": "interrupted: the calibration writing it is gone (killed, or its machine "
                                "went down); run it again with resume=True to continue"}[current["state"]]  # fmt: skip
        lines = [f"run {current['id']}{' (resumed)' if current['resumed'] else ''} - {current['method']} - {state}"]
        rate = f", {self.added / seconds:.1f}/s" if seconds > 0 else ""
        count = self.by_run[current["id"]]
        lines.append(f"evaluations: {self.evaluations} in the journal, {count} in this run{rate}")
        if self.failed:
            lines.append(f"failed evaluations: {self.failed}")
        if self.best is not None:
            cost, number, x = self.best
            values = ", ".join(f"{label}={value:.6g}" for label, value in zip(contents.labels, x))
            lines.append(f"best cost: {cost:.6g} at evaluation {number} ({values})")
        if count:
            recent = self.recent[current["id"]]
            median, last = format_duration(float(np.median(recent))), format_duration(recent[-1])
            lines.append(f"latency: median {median}, last {last}; "
                         f"last evaluation {time.time() - self.last_finished[current['id']]:.1f} s ago")  # fmt: skip
            bridge = self.recent_bridge[current["id"]]
            if bridge:
                request, reply = (format_duration(float(value)) for value in np.median(np.array(bridge), axis=0))
                lines.append(f"  the bridge's share of it: request {request}, reply {reply} (medians)")
        if self.iterations_by_run[current["id"]]:
            lines.append(f"iterations: {self.iterations_by_run[current['id']]}")
        return "\n".join(lines)


def run(journal: str, interval: float = 1.0, once: bool = False, out: Optional[IO[str]] = None) -> int:
    stream = sys.stdout if out is None else out
    figures = Figures()
    last_read = None
    waiting_said = False
    try:
        while True:
            try:
                contents = read_journal(journal, since=figures.contents)
                if figures.replaced_by(contents):
                    figures, contents = Figures(), read_journal(journal)
            except JournalError:
                if once:
                    raise
                if not waiting_said:
                    print(f"waiting for the journal {journal} ...", file=stream, flush=True)
                    waiting_said = True
                time.sleep(interval)  # polling a file that does not exist yet: nothing to wake us sooner
                continue
            now = time.monotonic()
            figures.add(contents)
            print(figures.text(0.0 if last_read is None else now - last_read) + "\n", file=stream, flush=True)
            last_read = now
            if once or (contents.runs and not contents.running):
                return 0
            time.sleep(interval)  # the refresh period
    except KeyboardInterrupt:
        return 0

