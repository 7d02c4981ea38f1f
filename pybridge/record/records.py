"""What a calibration reports while it runs: one record per evaluation and one per iteration.

Records are plain named tuples (cheap to make: one is made for every evaluation). Observers —
the journal, the progress bar, user callbacks — receive them; none of them imports the optimiser.
"""

from __future__ import annotations

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


class Batch(NamedTuple):
    """Evaluations of one start that came through the native recorder, with the iterations between
    them: the same rows twice, as records in order (for callbacks) and as columns (for the journal,
    which binds columns several times faster than it reads records)."""

    #: Evaluation and Iteration records, in the order they happened.
    records: List[Any]
    start: int
    #: The evaluations, column by column (x one row each); ``all_ok`` when every status is "ok".
    x: np.ndarray
    cost: List[float]
    started: List[float]
    finished: List[float]
    all_ok: bool
    #: The iterations, column by column: number, cost, best cost, evaluations, time; and x.
    iteration_columns: Tuple[List[Any], ...]
    iteration_x: np.ndarray


def each_record(items: Sequence[Any]) -> Iterator[Any]:
    """The records of a stream of records and batches, in order."""
    for item in items:
        if type(item) is Batch:
            yield from item.records
        else:
            yield item
