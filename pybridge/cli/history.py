"""``pybridge history JOURNAL``: what a journal holds, as a table or as CSV."""

from __future__ import annotations

import csv
import sys
from typing import IO, Iterable, Iterator, List, Optional

from ..record.journal import JournalContents, read_journal

__all__ = ["run", "rows"]

HEADER = ["id", "run", "start", "status", "cost", "elapsed_s", "request_latency_s", "reply_latency_s", "worker"]


def rows(contents: JournalContents) -> Iterator[list]:
    """One row per evaluation read: :data:`HEADER`, then one column per parameter value. Made one at
    a time: a journal of millions of evaluations is written out without holding them all as rows."""
    for i in range(len(contents.ids)):
        cost = contents.cost[i]
        yield [
            int(contents.ids[i]), int(contents.run[i]), int(contents.start[i]), contents.status[i],
            None if cost != cost else float(cost), float(contents.finished[i] - contents.started[i]),
            _or_none(contents.request_latency[i]), _or_none(contents.reply_latency[i]), int(contents.worker[i]),
            *contents.x[i].tolist(),
        ]  # fmt: skip


def run(journal: str, csv_path: Optional[str] = None, last: Optional[int] = None, best: Optional[int] = None,
        out: Optional[IO[str]] = None) -> int:  # fmt: skip
    stream = sys.stdout if out is None else out
    # --last and --best read only what they show (the database sorts and cuts): instant on any journal.
    contents = read_journal(journal, last=last if best is None else None, best=best)
    header = HEADER + contents.labels
    if csv_path is not None:
        if csv_path == "-":
            _write_csv(stream, header, rows(contents))
        else:
            with open(csv_path, "w", newline="") as handle:
                _write_csv(handle, header, rows(contents))
            print(f"{len(contents.ids)} evaluations written to {csv_path}", file=stream)
        return 0
    for run_row in contents.runs:
        state = run_row["message"] if run_row["state"] == "finished" else run_row["state"]
        resumed = " (resumed)" if run_row["resumed"] else ""
        print(f"run {run_row['id']}{resumed}: {run_row['method']} - {state}", file=stream)
    print(f"{contents.total} evaluations; parameters: {', '.join(contents.labels)}\n", file=stream)
    widths = [max(len(h), 12) for h in header]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)), file=stream)
    for row in rows(contents):
        print("  ".join(_cell(value).rjust(w) for value, w in zip(row, widths)), file=stream)
    return 0


def _write_csv(handle: IO[str], header: List[str], table: Iterable[list]) -> None:
    writer = csv.writer(handle)
    writer.writerow(header)
    for row in table:
        # repr keeps every digit: a CSV round trip gives the same doubles.
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


def _or_none(value: float) -> Optional[float]:
    return None if value != value else float(value)  # NaN: not measured, an empty cell


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
