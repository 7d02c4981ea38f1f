"""What a resume replays: the journalled answers of earlier runs, found again by their parameter vector.

Held as columns — the vectors as one array, the costs as another, and the gradients and residuals of
the rows that have any — with an index from the hash of each vector to its rows. A journal of
millions of evaluations then resumes in about 170 bytes per evaluation of 8 values, the vector's 64
included (``tests/record/test_journal.py``); a record each (x an array of its own, and its bytes
again as the index's key) took about 520 by ``tracemalloc``. A record is made only for a vector
asked for again.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from .records import Evaluation

__all__ = ["Replay"]


class Replay:
    """Journalled answers: ``x`` (one row per evaluation), ``kind`` and ``cost`` per row, and the
    ``gradients`` and ``residuals`` of the rows that have them (by row)."""

    def __init__(self, x: np.ndarray, kind: List[str], cost: np.ndarray, gradients: Dict[int, np.ndarray],
                 residuals: Dict[int, np.ndarray]) -> None:  # fmt: skip
        self.x, self.kind, self.cost, self.gradients, self.residuals = x, kind, cost, gradients, residuals
        # The hash of each vector's bytes -> its row, or the list of rows that share the hash (a vector
        # evaluated more than once: a converged simplex asks for the same points again). Keyed by the
        # hash, not the bytes, so that the index does not hold every vector a second time.
        self._rows: Dict[int, Any] = {}
        for row, key in enumerate(map(hash, map(bytes, x))):
            found = self._rows.setdefault(key, row)
            if type(found) is list:
                found.append(row)
            elif found != row:
                self._rows[key] = [found, row]

    def __len__(self) -> int:
        return len(self.cost)

    def find(self, kind: str, x: np.ndarray, tolerance: float = 0.0) -> Optional[Evaluation]:
        """A journalled answer at ``x`` to a request of ``kind`` (a cost request takes any): every bit
        equal, or else within ``tolerance`` relative to max(1, |x|) per value."""
        key = x.tobytes()
        found = self._rows.get(hash(key))
        same = [] if found is None else found if type(found) is list else [found]
        # Every bit equal, not just the hash; the first row that answers (a point evaluated thousands
        # of times is looked at once).
        hit = self._answering(kind, (row for row in same if self.x[row].tobytes() == key))
        if hit is None and tolerance > 0 and len(self):
            close = np.abs(self.x - x) <= tolerance * np.maximum(np.abs(x), 1.0)
            hit = self._answering(kind, np.flatnonzero(close.all(axis=1)).tolist())
        if hit is None:
            return None
        return Evaluation(0, 0, self.kind[hit], self.x[hit].copy(), float(self.cost[hit]), self.gradients.get(hit),
                          self.residuals.get(hit), "ok", None, 0.0, 0.0, -1)  # fmt: skip

    def _answering(self, kind: str, rows: Iterable[int]) -> Optional[int]:
        """The first of ``rows`` that answers a request of ``kind`` (a cost request takes any)."""
        for row in rows:
            if kind == "cost" or row in (self.gradients if kind == "gradient" else self.residuals):
                return row
        return None
