"""What a calibration reports while it runs: one record per evaluation and one per iteration.

Records are plain named tuples (cheap to make: one is made for every evaluation). Observers —
the journal, the progress bar, user callbacks — receive them; none of them imports the optimiser.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Evaluation", "Iteration", "Batch", "STATUSES", "each_record"]

#: ``ok``: computed now; ``replayed``: taken from the journal of an earlier run; ``penalty``: the
#: evaluation failed and the simulator's ``penalty`` stood in; ``failed``: it failed and raised.
STATUSES = ("ok", "replayed", "penalty", "failed")


class Evaluation(NamedTuple):
    """One evaluation of the simulator, as the optimiser saw it."""

    #: 1, 2, ... in the order evaluations finished in this run (replayed ones included).
    number: int
    #: Which start of a multi-start run asked for it (0 for a single start).
    start: int
    #: ``"cost"``, ``"gradient"`` (cost and gradient) or ``"residuals"``.
    kind: str
    #: The physical flat parameter vector (see ``Parameters.labels``).
    x: np.ndarray
    #: The cost handed to the optimiser (for residuals: half their sum of squares); NaN if it failed.
    cost: float
    gradient: Optional[np.ndarray]
    residuals: Optional[np.ndarray]
    #: One of :data:`STATUSES`.
    status: str
    #: The error message of a failed evaluation, else None.
    error: Optional[str]
    #: Wall-clock times (``time.time()``) the request was sent and its reply arrived.
    started: float
    finished: float
    #: Which simulator of a pool answered (0 for a single simulator; -1 when replayed).
    worker: int
    #: The bridge's share of ``elapsed``, in seconds: from the request's send until the simulator
    #: picked it up, and from its reply until the driver saw it (the model's own time lies between).
    #: NaN where not measured: replayed, most failed ones, from a simulator whose shim predates the
    #: stamps, or from an evaluator that does not measure them.
    request_latency: float = math.nan
    reply_latency: float = math.nan

    @property
    def elapsed(self) -> float:
        """Seconds from request to reply: the model's own time plus the bridge's."""
        return self.finished - self.started

    @property
    def grad_norm(self) -> Optional[float]:
        return None if self.gradient is None else float(np.linalg.norm(self.gradient))


class Iteration(NamedTuple):
    """One iteration of the optimiser (as far as the SciPy method reports iterations)."""

    #: 1, 2, ... per start.
    number: int
    start: int
    #: The method's current point (physical, flat).
    x: np.ndarray
    #: The cost at ``x`` if it was evaluated, else NaN.
    cost: float
    #: The lowest cost of the whole calibration so far.
    best_cost: float
    #: Evaluations of the whole calibration so far.
    evaluations: int
    time: float


class Batch:
    """Evaluations of one start that came through the native recorder, with the iterations between
    them, as columns: the journal binds them column by column, and the records (for callbacks and
    rules) are made only when someone asks for them (:attr:`records`)."""

    __slots__ = ("first", "start", "x", "cost", "started", "finished", "request_latency", "reply_latency",
                 "statuses", "iteration_after", "iteration_columns", "iteration_x", "_records")  # fmt: skip

    def __init__(self, first: int, start: int, x: np.ndarray, cost: np.ndarray, started: np.ndarray,
                 finished: np.ndarray, request_latency: np.ndarray, reply_latency: np.ndarray,
                 statuses: Optional[List[str]], iteration_after: List[int], iteration_columns: Tuple[List[Any], ...],
                 iteration_x: np.ndarray) -> None:  # fmt: skip
        #: The number of the first evaluation; the start that made them all.
        self.first, self.start = first, start
        #: The evaluations: x (one row each), and cost, times and latencies as float64 arrays; statuses
        #: None when every one is "ok".
        self.x, self.cost, self.started, self.finished, self.statuses = x, cost, started, finished, statuses
        self.request_latency, self.reply_latency = request_latency, reply_latency
        #: The iterations: how many of the evaluations came before each; number, cost, best cost,
        #: evaluations, time; x.
        self.iteration_after, self.iteration_columns, self.iteration_x = iteration_after, iteration_columns, iteration_x
        self._records: Optional[List[Any]] = None

    @property
    def latency(self) -> float:
        """Request to reply of the last evaluation (NaN if none)."""
        return float(self.finished[-1] - self.started[-1]) if len(self.finished) else math.nan

    @property
    def records(self) -> List[Any]:
        """Evaluation and Iteration records, in the order they happened."""
        if self._records is None:
            new = tuple.__new__  # calling the NamedTuple costs twice as much (a Python frame per record)
            count = len(self.cost)
            statuses = repeat("ok") if self.statuses is None else self.statuses
            records: List[Any] = list(map(new, repeat(Evaluation), zip(
                range(self.first, self.first + count), repeat(self.start), repeat("cost"), list(self.x),
                self.cost.tolist(), repeat(None), repeat(None), statuses, repeat(None), self.started.tolist(),
                self.finished.tolist(), repeat(0), self.request_latency.tolist(), self.reply_latency.tolist(),
            )))  # fmt: skip
            numbers, costs, bests, evaluations, times = self.iteration_columns
            iterations = map(new, repeat(Iteration), zip(numbers, repeat(self.start), list(self.iteration_x), costs,
                                                         bests, evaluations, times))  # fmt: skip
            for shift, (at, iteration) in enumerate(zip(self.iteration_after, iterations)):
                records.insert(at + shift, iteration)
            self._records = records
        return self._records


def each_record(items: Sequence[Any]) -> Iterator[Any]:
    """The records of a stream of records and batches, in order."""
    for item in items:
        if type(item) is Batch:
            yield from item.records
        else:
            yield item
