"""The calibration journal: every evaluation appended to a SQLite file as it happens.

One file per calibration problem. Schema version 2 (``PRAGMA user_version``), documented in
``docs/journal.md``:

- ``meta(key, value)``: ``problem`` (JSON: parameters, bounds, simulator), ``labels`` (JSON list),
  ``created``, ``pybridge_version``.
- ``runs``: one row per call of ``pybridge.minimize`` on this journal (the first and each resume).
- ``evaluations``: one row per evaluation computed (replayed ones are not written twice). For
  problems of up to :data:`READABLE_SLOTS` values the parameter vector is one REAL column per value,
  named by its label (``alpha``, ``k[0]``), so that ``SELECT alpha, cost FROM evaluations`` reads
  naturally; for larger ones it is ``x``, little-endian float64 bytes. Both are exact.
- ``iterations``: one row per iteration the SciPy method reported.

Writes go through WAL, in small transactions (:data:`FLUSH_ROWS` rows or :data:`FLUSH_SECONDS`,
whichever comes first): a reader (``pybridge monitor``) never blocks the run, and a run killed
with -9 loses at most the last unflushed evaluations (a tenth of a second of work, or 256
evaluations of a fast model), which a resume recomputes. The common row (a cost, status ok) binds only
what it must, and a fast model's rows (a :class:`~pybridge.record.records.Batch`) go in by
:data:`ROWS_PER_INSERT` per statement: a row costs SQLite about 0.7 µs, and the ``sqlite3`` module adds
about 0.3 µs per statement it steps, which the batch pays once per chunk (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import JournalError
from . import writer
from .records import Batch, Iteration
from .replay import Replay

__all__ = ["Journal", "JournalContents", "read_journal", "SCHEMA_VERSION", "READABLE_SLOTS"]

SCHEMA_VERSION = 2
#: Older versions this release reads, and migrates when it resumes one: 1 lacks the evaluations'
#: ``request_latency`` and ``reply_latency`` (read as NaN).
OLDEST_SCHEMA_VERSION = 1
#: Problems with at most this many parameter values get one readable column per value.
READABLE_SLOTS = 100
FLUSH_ROWS = 256
FLUSH_SECONDS = 0.1
#: Rows of a batch per INSERT statement (fewer for wide rows: SQLite before 3.32 binds at most 999 values).
ROWS_PER_INSERT = 32
_MAX_BOUND_VALUES = 999
#: SQLite files start with these bytes; anything else is not a journal.
_SQLITE_MAGIC = b"SQLite format 3\x00"

PathLike = Union[str, "os.PathLike[str]"]


class Journal:
    """Appends the records of one calibration to ``path`` (created if missing).

    ``problem`` describes the calibration (parameters, bounds, simulator); an existing journal of
    another problem is refused, as is one that holds evaluations when ``resume`` is False. With
    ``check_command=False`` the simulator's command (``problem["simulator"]["command"]``) may differ
    from the journal's: the user vouches that it starts the same model. Thread-safe: the starts of a
    multi-start run share one journal.
    """

    def __init__(self, path: PathLike, problem: Dict[str, Any], labels: Sequence[str], *, resume: bool,
                 check_command: bool = True) -> None:  # fmt: skip
        self.path = Path(path).expanduser()  # "~/runs/cal.db" as a shell would read it
        self._lock = threading.Lock()
        # Rows waiting for the next transaction, per table as runs that share one INSERT statement (of
        # one row, or of several: then each item binds the values of all its rows).
        self._pending_evaluations: List[Tuple[str, List[Sequence[Any]]]] = []
        self._pending_count = 0
        self._pending_iterations: List[Tuple[str, List[Sequence[Any]]]] = []
        self._multi_row: Dict[Tuple[str, int], str] = {}  # (one-row statement, rows) -> its many-row form
        self._last_flush = time.monotonic()
        self._run: Optional[int] = None
        self._readable = list(labels) if len(labels) <= READABLE_SLOTS else []
        self._size = len(labels)
        if self.path.is_dir():
            raise JournalError(f"{self.path} is a folder; give a file name for the journal, such as {self.path / 'run.db'}")
        if not self.path.parent.is_dir():
            raise JournalError(f"the folder {self.path.parent} does not exist: create it, or choose another path for the journal")
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            _check_is_sqlite(self.path)
        # One writer at a time, held until close(); readers test it to tell a live run from a dead one.
        self._writer = writer.hold(self.path)
        try:
            self._open(existed, problem, labels, resume, check_command)
        except BaseException:
            writer.release(self._writer)
            raise
        self._insert_cost = self._insert_cost0 = self._insert_iteration = self._insert_any = ""  # begin_run's

    def _statements(self, run: int) -> None:
        """The INSERT statements of this run. The run's id is written into them, not bound: the common
        row binds every value it carries, at about 0.23 µs each (docs/journal.md)."""
        readable = "".join(f", {_quoted(label)}" for label in self._readable)
        marks = ", ?" * len(self._readable)
        # The common rows: a cost computed without trouble (kind and status take their defaults), and
        # the same from the first start on a single simulator (start and worker too).
        self._insert_cost = ("INSERT INTO evaluations (run, start, cost, started, finished, request_latency, "
                             f"reply_latency, worker{readable}) VALUES ({run}, ?, ?, ?, ?, ?, ?, ?{marks})")  # fmt: skip
        self._insert_cost0 = ("INSERT INTO evaluations (run, cost, started, finished, request_latency, "
                              f"reply_latency{readable}) VALUES ({run}, ?, ?, ?, ?, ?{marks})")  # fmt: skip
        self._insert_iteration = (
            f"INSERT INTO iterations (run, start, iteration, cost, best_cost, evaluations, time{readable or ', x'}) "
            f"VALUES ({run}, ?, ?, ?, ?, ?, ?{marks or ', ?'})"
        )
        self._insert_any = (
            "INSERT INTO evaluations (run, start, cost, started, finished, request_latency, reply_latency, worker, "
            f"kind, status, grad_norm, error, x, gradient, residuals{readable}) "
            f"VALUES ({run}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{marks})"
        )

    # ---- the file --------------------------------------------------------------------

    def _open(self, existed: bool, problem: Dict[str, Any], labels: Sequence[str], resume: bool,
              check_command: bool) -> None:  # fmt: skip
        """Connects, in WAL mode, to a journal of this problem (created if new)."""
        try:
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        except sqlite3.Error as error:
            raise JournalError(f"cannot open the journal {self.path}: {error}") from None
        self._db = db
        try:
            # NORMAL in WAL mode: a commit survives a crash of this process (it is in the WAL file); only
            # an OS crash may lose the last commits, which a resume then recomputes. A new journal is
            # created with OFF: the switch to WAL goes through a rollback journal, and its three syncs made
            # an opening 2.4 ms instead of 1.0 (strace, docs/performance-log.md), and an OS crash in that moment can
            # only spoil a journal that holds nothing yet, which the next open then refuses by name.
            db.execute("PRAGMA synchronous=NORMAL" if existed else "PRAGMA synchronous=OFF")
            db.execute("PRAGMA journal_mode=WAL")
            if existed:
                self._check_problem(problem, labels, resume, check_command)
            else:
                self._create(problem, labels)
                db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as error:
            db.close()
            raise JournalError(f"{self.path} is not a usable pybridge journal ({error}); choose another path") from None
        except BaseException:
            db.close()
            raise

    def _create(self, problem: Dict[str, Any], labels: Sequence[str]) -> None:
        from .. import __version__

        readable = "".join(f", {_quoted(label)} REAL" for label in self._readable)
        # All or nothing: a journal is never left half created. (executescript would commit an open
        # transaction first, so the script opens it itself.)
        try:
            self._db.executescript(
                f"""
                BEGIN;
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE runs (
                    id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL, method TEXT NOT NULL,
                    options TEXT NOT NULL, resumed INTEGER NOT NULL, message TEXT, best_cost REAL);
                CREATE TABLE evaluations (
                    id INTEGER PRIMARY KEY, run INTEGER NOT NULL REFERENCES runs(id),
                    start INTEGER NOT NULL DEFAULT 0, kind TEXT NOT NULL DEFAULT 'cost',
                    status TEXT NOT NULL DEFAULT 'ok', cost REAL, grad_norm REAL, error TEXT,
                    started REAL NOT NULL, finished REAL NOT NULL, worker INTEGER NOT NULL DEFAULT 0,
                    x BLOB, gradient BLOB, residuals BLOB{readable}, request_latency REAL, reply_latency REAL);
                CREATE TABLE iterations (
                    id INTEGER PRIMARY KEY, run INTEGER NOT NULL REFERENCES runs(id), start INTEGER NOT NULL,
                    iteration INTEGER NOT NULL, cost REAL, best_cost REAL, evaluations INTEGER NOT NULL,
                    time REAL NOT NULL, x BLOB{readable});
                PRAGMA user_version = {SCHEMA_VERSION};
                """
            )
            self._db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("problem", _canonical(problem)), ("labels", json.dumps(list(labels))),
                 ("created", repr(time.time())), ("pybridge_version", __version__)],
            )  # fmt: skip
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _check_problem(self, problem: Dict[str, Any], labels: Sequence[str], resume: bool,
                       check_command: bool) -> None:  # fmt: skip
        version = _require_schema(self._db, self.path)
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        old, new = json.loads(stored.get("problem", "{}")), json.loads(_canonical(problem))
        if not check_command and isinstance(old.get("simulator"), dict) and isinstance(new.get("simulator"), dict):
            new["simulator"]["command"] = old["simulator"].get("command")
        if old != new:
            differences = _differences(old, new)
            hint = ""
            if differences == "simulator: command differs":
                hint = (". If the new command starts the same model (a job-specific path in it, the executable "
                        "moved or rebuilt from the same source), resume with check_command=False")
            raise JournalError(
                f"{self.path} is the journal of another problem ({differences}); its evaluations are not "
                f"mixed into this one. Pass a new journal path, or restore the original problem to resume it{hint}"
            )
        count = self._db.execute("SELECT count(*) FROM evaluations").fetchone()[0]
        if count and not resume:
            raise JournalError(
                f"{self.path} already holds {count} evaluations of this problem: pass resume=True to replay "
                "them (a crashed or stopped run carries on), or choose a new journal path"
            )
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Brings a journal of an older schema version to this one, in one transaction (only once it
        is known to be this problem's: another problem's journal is left as it was)."""
        with _transaction(self._db):
            if version < 2:  # NULL latencies for the rows written before they were measured
                self._db.execute("ALTER TABLE evaluations ADD COLUMN request_latency REAL")
                self._db.execute("ALTER TABLE evaluations ADD COLUMN reply_latency REAL")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ---- writing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """SQLite's failure to write (a full disk, a file made read-only, a lock another program holds
        too long) as an error that says what is kept and what to do."""
        try:
            yield
        except sqlite3.Error as error:
            raise JournalError(
                f"cannot write to the journal {self.path}: {error}. Every evaluation committed before is "
                "kept: free space (or remove what stops the write), then run the same call again with "
                "resume=True to carry on"
            ) from error

    def begin_run(self, method: str, options: Dict[str, Any], resumed: bool) -> int:
        with self._lock, self._writing():
            cursor = self._db.execute(
                "INSERT INTO runs (started, method, options, resumed) VALUES (?, ?, ?, ?)",
                (time.time(), method, _canonical(options), int(resumed)),
            )
            self._run = int(cursor.lastrowid or 0)
            self._statements(self._run)
            return self._run

    def add_all(self, records: Sequence[Any]) -> None:
        """Queues evaluation and iteration records (replayed evaluations are skipped: they are here
        already); written with the next small transaction."""
        lean, lean0, full = self._insert_cost, self._insert_cost0, self._insert_any
        readable = bool(self._readable)
        groups: List[Tuple[str, List[Sequence[Any]]]] = []  # (statement, rows) in order
        iterations: List[Tuple[str, List[Sequence[Any]]]] = []
        count = 0
        for record in _records_and_columns(records, readable):
            if type(record) is Batch:  # the common rows of a fast model, bound column by column
                n = len(record.cost)
                if record.start == 0:
                    statement = lean0
                    columns: Tuple[Any, ...] = (record.cost, record.started, record.finished, record.request_latency,
                                                record.reply_latency)  # fmt: skip
                else:
                    statement = lean
                    columns = (np.full(n, record.start), record.cost, record.started, record.finished,
                               record.request_latency, record.reply_latency, np.zeros(n))  # fmt: skip
                count += n
                self._add_rows(groups, statement, np.column_stack((*columns, record.x)))
                m = len(record.iteration_after)
                if m:
                    self._add_rows(iterations, self._insert_iteration, np.column_stack(
                        (np.full(m, record.start), *record.iteration_columns, record.iteration_x)))
                continue
            if type(record) is Iteration:
                cost, best_cost = record.cost, record.best_cost
                head = (record.start, record.number, None if cost != cost else cost,
                        None if best_cost != best_cost else best_cost, record.evaluations, record.time)
                _queue(iterations, self._insert_iteration,
                       [(*head, *record.x.tolist()) if readable else (*head, _blob(record.x))])  # fmt: skip
                continue
            status = record.status
            if status == "replayed":
                continue
            if record.kind == "cost" and status == "ok" and readable:
                if record.start == 0 and record.worker == 0:
                    statement = lean0
                    row: tuple = (record.cost, record.started, record.finished, record.request_latency,
                                  record.reply_latency, *record.x.tolist())  # fmt: skip
                else:
                    statement = lean
                    row = (record.start, record.cost, record.started, record.finished, record.request_latency,
                           record.reply_latency, record.worker, *record.x.tolist())  # fmt: skip
            else:
                statement = full
                cost = record.cost
                row = (
                    record.start, None if cost != cost else cost, record.started, record.finished,
                    record.request_latency, record.reply_latency, record.worker, record.kind, status,
                    record.grad_norm, record.error,
                    None if readable else _blob(record.x), _blob(record.gradient), _blob(record.residuals),
                    *(record.x.tolist() if readable else ()),
                )  # fmt: skip
            count += 1
            _queue(groups, statement, [row])
        with self._lock:
            for pending, added in ((self._pending_evaluations, groups), (self._pending_iterations, iterations)):
                for statement, rows in added:
                    _queue(pending, statement, rows)
            self._pending_count += count
            if self._pending_count >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                self._flush()

    def _flush(self) -> None:
        # Taken out first: a Ctrl-C inside the transaction rolls it back and loses these rows (a resume
        # recomputes them); it never writes them twice.
        evaluations, self._pending_evaluations = self._pending_evaluations, []
        iterations, self._pending_iterations = self._pending_iterations, []
        self._pending_count = 0
        self._last_flush = time.monotonic()
        if not evaluations and not iterations:
            return
        with self._writing(), _transaction(self._db):
            for statement, rows in evaluations + iterations:
                self._db.executemany(statement, rows)

    def _add_rows(self, groups: List[Tuple[str, List[Sequence[Any]]]], statement: str, rows: np.ndarray) -> None:
        """Queues ``rows`` (one per row of the array, the values of ``statement`` in its order) in chunks
        of one multi-row statement, the rest one by one. Every value goes in as a float: SQLite stores a
        whole float as an INTEGER in an INTEGER column, so ``run`` and ``start`` read back as before."""
        count, width = rows.shape
        per = max(1, min(ROWS_PER_INSERT, _MAX_BOUND_VALUES // width))
        whole = count - count % per
        if whole:
            many = self._multi_row.get((statement, per))
            if many is None:
                head, values = statement.split(" VALUES ")
                many = self._multi_row[statement, per] = f"{head} VALUES {', '.join([values] * per)}"
            _queue(groups, many, rows[:whole].reshape(-1, per * width).tolist())
        if whole < count:
            _queue(groups, statement, rows[whole:].tolist())

    def end_run(self, message: str, best_cost: float) -> None:
        with self._lock:
            self._flush()
            with self._writing():
                self._db.execute(
                    "UPDATE runs SET finished = ?, message = ?, best_cost = ? WHERE id = ?",
                    (time.time(), message, _or_none(best_cost), self._run),
                )

    def close(self) -> None:
        with self._lock:
            try:
                self._flush()
            finally:
                self._db.close()
                writer.release(self._writer)

    # ---- reading back (for a resume) -----------------------------------------------------

    def replayable(self) -> Replay:
        """The evaluations of earlier runs that answered with a value (computed, or the penalty), as
        columns read in chunks: a journal of millions of rows never exists as Python rows all at once."""
        where = "FROM evaluations WHERE status IN ('ok', 'penalty')"
        with self._lock:
            count = self._db.execute(f"SELECT count(*) {where}").fetchone()[0]
            x = np.empty((count, self._size))
            cost = np.empty(count)
            kind: List[str] = []
            gradients: Dict[int, np.ndarray] = {}
            residuals: Dict[int, np.ndarray] = {}
            cursor = self._db.execute(f"SELECT kind, cost, gradient, residuals, {self._x_columns} {where} ORDER BY id")
            same: Dict[str, str] = {}  # one string object per kind, not one per row
            read = 0
            for at, read, chunk in _chunks(cursor):
                kind.extend([same.setdefault(item[0], item[0]) for item in chunk])
                cost[at:read] = [item[1] for item in chunk]
                x[at:read] = _vectors([item[4:] for item in chunk], self._size)
                for row, item in enumerate(chunk, at):
                    for blob, into in ((item[2], gradients), (item[3], residuals)):
                        if blob is not None:
                            into[row] = _vector(blob)
        return Replay(x[:read], kind, cost[:read], gradients, residuals)

    @property
    def _x_columns(self) -> str:
        return ", ".join(_quoted(label) for label in self._readable) if self._readable else "x"


def _queue(groups: List[Tuple[str, List[Sequence[Any]]]], statement: str, rows: List[Any]) -> None:
    """Adds ``rows`` of ``statement`` to the runs in ``groups``: to the last run when it has the same
    statement (one ``executemany`` for both), else as a run of its own (``rows`` itself, not a copy)."""
    if groups and groups[-1][0] is statement:
        groups[-1][1].extend(rows)
    else:
        groups.append((statement, rows))


def _records_and_columns(items: Sequence[Any], readable: bool) -> Iterator[Any]:
    """Records as they are, and each batch as its columns when they fit the common row, or else as its
    records."""
    for item in items:
        if type(item) is not Batch:
            yield item
        elif item.statuses is None and readable:
            yield item
        else:
            yield from item.records


class JournalContents(NamedTuple):
    """What :func:`read_journal` returns: the problem, the runs, and the evaluations as arrays."""

    labels: List[str]
    problem: Dict[str, Any]
    #: One dict per run: the columns of ``runs``, and ``state``: ``"finished"``, ``"running"`` (a
    #: calibration has the journal open) or ``"interrupted"`` (it never ended, and nothing writes it).
    runs: List[Dict[str, Any]]
    #: Evaluations in the order written: ids, run, start, status, cost (NaN if none), times, workers,
    #: and the request and reply latency in seconds (NaN where not measured).
    ids: np.ndarray
    run: np.ndarray
    start: np.ndarray
    status: List[str]
    cost: np.ndarray
    started: np.ndarray
    finished: np.ndarray
    worker: np.ndarray
    request_latency: np.ndarray
    reply_latency: np.ndarray
    #: Shape (evaluations, parameters): the physical parameter vectors.
    x: np.ndarray
    iterations: List[Dict[str, Any]]
    #: The ids of the last evaluation and the last iteration read: where ``read_journal(since=...)``
    #: goes on from.
    read_up_to: Tuple[int, int] = (0, 0)
    #: Evaluations in the journal, those not read (``since``, ``last``, ``best``) included.
    total: int = 0

    @property
    def running(self) -> bool:
        """Whether the last run is still going (a calibration has the journal open)."""
        return bool(self.runs) and self.runs[-1]["state"] == "running"

    @property
    def interrupted(self) -> bool:
        """Whether the last run never ended and nothing writes it any more (killed, or its machine went
        down): ``resume=True`` continues it."""
        return bool(self.runs) and self.runs[-1]["state"] == "interrupted"

    def best(self) -> Optional[int]:
        """The row of the lowest cost, or None."""
        finite = np.isfinite(self.cost)
        return int(np.flatnonzero(finite)[np.argmin(self.cost[finite])]) if finite.any() else None


def read_journal(path: PathLike, since: Optional[JournalContents] = None, *, last: Optional[int] = None,
                 best: Optional[int] = None) -> JournalContents:  # fmt: skip
    """Everything a journal holds, opened read-only: safe while a calibration writes to it. One
    snapshot: a commit that lands while it reads is in it whole or not at all.

    With ``since`` (an earlier whole read of the same journal, or one with ``since``), only the
    evaluations and iterations written after it are read and returned (the problem and the runs always
    whole): a monitor's refresh costs what was added, not what the journal holds. ``last=N`` reads the
    last N evaluations only, ``best=N`` the N of lowest cost (lowest first); both read no iterations,
    and cost what they return, not what the journal holds. ``total`` counts every evaluation.

    >>> contents = read_journal("calibration.db")          # doctest: +SKIP
    >>> contents.x[contents.best()]                         # doctest: +SKIP
    >>> added = read_journal("calibration.db", since=contents)          # doctest: +SKIP
    >>> read_journal("calibration.db", best=5).cost         # doctest: +SKIP
    """
    if since is not None and (last is not None or best is not None):
        raise ValueError("read_journal: since reads what was added; it does not combine with last or best")
    path = Path(path).expanduser()
    if not path.is_file():
        raise JournalError(f"no journal at {path}")
    _check_is_sqlite(path)
    # Whether a calibration writes it, asked before and after reading: a run read as unfinished is
    # interrupted only if nobody held the journal at either moment (it may have ended in between, or a
    # new one begun).
    held_before = writer.is_held(path)
    db = _open_to_read(path, held_before)
    after_evaluation, after_iteration = (0, 0) if since is None else since.read_up_to
    try:
        latency = "request_latency, reply_latency" if _require_schema(db, path) >= 2 else "NULL, NULL"
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        runs = [dict(zip(("id", "started", "finished", "method", "options", "resumed", "message", "best_cost"), row))
                for row in db.execute("SELECT id, started, finished, method, options, resumed, message, best_cost "
                                      "FROM runs ORDER BY id")]  # fmt: skip
        labels = json.loads(meta.get("labels", "[]"))
        x_columns = ", ".join(_quoted(label) for label in labels) if len(labels) <= READABLE_SLOTS else "x"
        select = f"SELECT id, run, start, status, cost, started, finished, worker, {latency}, {x_columns} FROM evaluations"
        # Counted first (the same snapshot), so that the columns are filled in place.
        if last is not None:  # the newest first, turned round below
            total = db.execute("SELECT count(*) FROM evaluations").fetchone()[0]
            count = min(total, max(0, last))
            cursor = db.execute(f"{select} ORDER BY id DESC LIMIT ?", (count,))
        elif best is not None:
            total = db.execute("SELECT count(*) FROM evaluations").fetchone()[0]
            count = db.execute("SELECT count(*) FROM (SELECT 1 FROM evaluations WHERE cost IS NOT NULL LIMIT ?)",
                               (max(0, best),)).fetchone()[0]  # fmt: skip
            cursor = db.execute(f"{select} WHERE cost IS NOT NULL ORDER BY cost, id LIMIT ?", (count,))
        else:
            count = db.execute("SELECT count(*) FROM evaluations WHERE id > ?", (after_evaluation,)).fetchone()[0]
            cursor = db.execute(f"{select} WHERE id > ? ORDER BY id", (after_evaluation,))
        columns = _evaluation_columns(cursor, count, len(labels))
        if last is not None:
            columns = [column[::-1] for column in columns]
        if last is None and best is None:
            total = count + (0 if since is None else since.total)
            iterations = [
                dict(zip(("id", "run", "start", "iteration", "cost", "best_cost", "evaluations", "time"), row))
                for row in db.execute(
                    "SELECT id, run, start, iteration, cost, best_cost, evaluations, time FROM iterations "
                    "WHERE id > ? ORDER BY id", (after_iteration,)
                )
            ]  # fmt: skip
        else:
            iterations = []
    except sqlite3.DatabaseError as error:
        raise JournalError(f"{path} is not a usable pybridge journal ({error})") from None
    finally:
        db.close()
    held_after = writer.is_held(path)
    in_use = None if held_before is None or held_after is None else held_before or held_after
    for run in runs:
        if run["finished"] is not None:
            run["state"] = "finished"
        else:  # only the last run can still be going: one calibration writes at a time
            run["state"] = "running" if run is runs[-1] and in_use is not False else "interrupted"
    ids, run_of, start, status, cost, started, finished, worker, request_latency, reply_latency, x = columns
    return JournalContents(
        labels=labels, problem=json.loads(meta.get("problem", "{}")), runs=runs, ids=ids, run=run_of, start=start,
        status=status, cost=cost, started=started, finished=finished, worker=worker, request_latency=request_latency,
        reply_latency=reply_latency, x=x, iterations=iterations,
        read_up_to=(int(ids.max()) if len(ids) else after_evaluation,
                    int(iterations[-1]["id"]) if iterations else after_iteration),
        total=total,
    )  # fmt: skip


def _chunks(cursor: sqlite3.Cursor, size: int = 2_000) -> Iterator[Tuple[int, int, List[Any]]]:
    """A query's rows a chunk at a time, with where each chunk starts and ends among them."""
    at = 0
    while True:
        rows = cursor.fetchmany(size)
        if not rows:
            return
        yield at, at + len(rows), rows
        at += len(rows)


def _evaluation_columns(cursor: sqlite3.Cursor, count: int, size: int) -> List[Any]:
    """The ``count`` rows of ``SELECT id, run, start, status, cost, started, finished, worker,
    request_latency, reply_latency, <x>`` as
    columns, filled a chunk at a time: a journal of millions of evaluations never exists as Python rows
    all at once (they took ~920 bytes each; the columns take ~130 for 8 values)."""
    ids, run, start, worker = (np.empty(count, dtype=np.int64) for _ in range(4))
    cost, started, finished, request_latency, reply_latency = (np.empty(count) for _ in range(5))
    x = np.empty((count, size))
    status: List[str] = []
    same: Dict[str, str] = {}  # one string object per distinct status, not one per row
    for at, end, rows in _chunks(cursor):
        values = list(zip(*rows))
        for column, into in ((0, ids), (1, run), (2, start), (4, cost), (5, started), (6, finished), (7, worker),
                             (8, request_latency), (9, reply_latency)):
            into[at:end] = values[column]  # a NULL cost or latency becomes NaN
        status.extend([same.setdefault(text, text) for text in values[3]])
        x[at:end] = _vectors([row[10:] for row in rows], size)
    return [ids, run, start, status, cost, started, finished, worker, request_latency, reply_latency, x]


def _open_to_read(path: Path, held: Optional[bool]) -> sqlite3.Connection:
    """A read-only connection to ``path`` in one read transaction (every SELECT sees the same commits).

    SQLite reads a WAL database through its ``-shm`` index, which it creates beside the file if it
    is missing. A reader who cannot write there (a colleague's folder, an archive, a read-only mount)
    is refused with "attempt to write a readonly database", although a closed journal holds everything
    in its one file: then, when no WAL is left and nobody writes the journal, it is read as immutable.
    """
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        try:
            db.execute("BEGIN")
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the file and its WAL
            return db
        except sqlite3.OperationalError as error:
            db.close()
            closed = not held and not Path(f"{path}-wal").exists()
            if "readonly" not in str(error) or not closed:
                raise
        db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        db.execute("BEGIN")
        return db
    except sqlite3.DatabaseError as error:
        raise JournalError(f"cannot read the journal {path}: {error}") from None


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One explicit transaction (the connection is in autocommit mode): all of it, or none of it."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _require_schema(db: sqlite3.Connection, path: Path) -> int:
    """The schema version of a pybridge journal; refuses, for writer and readers alike, an SQLite
    file that is not one, or one of a version this release does not read."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meta", "runs", "evaluations", "iterations"} <= tables:
        raise JournalError(f"{path} is an SQLite file but not a pybridge journal; choose another path")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if not OLDEST_SCHEMA_VERSION <= version <= SCHEMA_VERSION:
        raise JournalError(f"{path} is a journal of schema version {version}; this pybridge reads versions "
                           f"{OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION}. Use the pybridge that wrote it, or start "
                           "a new journal")  # fmt: skip
    return int(version)


def _check_is_sqlite(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise JournalError(f"cannot read the journal {path}: {error}") from None
    if head != _SQLITE_MAGIC:
        raise JournalError(f"{path} is not a pybridge journal (not an SQLite file); choose another path")


def _canonical(value: Dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    changed = [key for key in keys if old.get(key) != new.get(key)]
    details = []
    for key in changed:
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            inner = sorted(k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k))
            details.append(f"{key}: {', '.join(inner)} {'differs' if len(inner) == 1 else 'differ'}")
        else:
            details.append(f"{key} differs")
    return "; ".join(details) or "different description"


def _quoted(label: str) -> str:
    return '"' + label.replace('"', '""') + '"'


def _vectors(rows: Sequence[Sequence[Any]], size: int) -> np.ndarray:
    """The parameter vectors of journal rows, shape (rows, size): each row's readable columns, or its
    one ``x`` blob (little-endian float64)."""
    if rows and len(rows[0]) == 1 and isinstance(rows[0][0], bytes):
        return np.frombuffer(bytearray(b"".join(row[0] for row in rows)), dtype="<f8").reshape(len(rows), size)
    return np.array(rows, dtype=float).reshape(len(rows), size)


def _blob(values: Optional[np.ndarray]) -> Optional[bytes]:
    return None if values is None else np.asarray(values, dtype="<f8").tobytes()


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f8").copy()


def _or_none(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else value
