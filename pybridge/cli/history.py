"""``pybridge history JOURNAL``: what a journal holds, as a table or as CSV."""

from __future__ import annotations

import csv
import sys
from typing import IO, List, Optional

from ..record.journal import JournalContents, read_journal

__all__ = ["run", "rows"]

HEADER = ["id", "run", "start", "status", "cost", "elapsed_s", "worker"]


def rows(contents: JournalContents) -> List[list]:
    """One row per evaluation: :data:`HEADER`, then one column per parameter value."""
    out = []
    for i in range(len(contents.ids)):
        cost = contents.cost[i]
        out.append([
            int(contents.ids[i]), int(contents.run[i]), int(contents.start[i]), contents.status[i],
            None if cost != cost else float(cost), float(contents.finished[i] - contents.started[i]),
            int(contents.worker[i]), *contents.x[i].tolist(),
        ])  # fmt: skip
    return out


def run(journal: str, csv_path: Optional[str] = None, last: Optional[int] = None, best: Optional[int] = None,
        out: Optional[IO[str]] = None) -> int:  # fmt: skip
    stream = sys.stdout if out is None else out
    contents = read_journal(journal)
    table = rows(contents)
    if best is not None:
        table = sorted((row for row in table if row[4] is not None), key=lambda row: row[4])[:best]
    elif last is not None:
        table = table[-last:] if last > 0 else []
    header = HEADER + contents.labels
    if csv_path is not None:
        if csv_path == "-":
            _write_csv(stream, header, table)
        else:
            with open(csv_path, "w", newline="") as handle:
                _write_csv(handle, header, table)
            print(f"{len(table)} evaluations written to {csv_path}", file=stream)
        return 0
    for run_row in contents.runs:
        state = run_row["message"] if run_row["state"] == "finished" else run_row["state"]
        resumed = " (resumed)" if run_row["resumed"] else ""
        print(f"run {run_row['id']}{resumed}: {run_row['method']} - {state}", file=stream)
    print(f"{len(contents.ids)} evaluations; parameters: {', '.join(contents.labels)}\n", file=stream)
    widths = [max(len(h), 12) for h in header]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)), file=stream)
    for row in table:
        print("  ".join(_cell(value).rjust(w) for value, w in zip(row, widths)), file=stream)
    return 0


def _write_csv(handle: IO[str], header: List[str], table: List[list]) -> None:
    writer = csv.writer(handle)
    writer.writerow(header)
    for row in table:
        # repr keeps every digit: a CSV round trip gives the same doubles.
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
