"""One calibration in progress: the layer between SciPy and the evaluator.

SciPy calls an :class:`Objective` (one per start) with its solver vector ``z``. The
:class:`Calibration` they share turns ``z`` into physical parameters, answers from the journal of
an earlier run when it can (a resume), otherwise evaluates through the *evaluator* — anything with
``evaluate(xs, kind) -> [Outcome]`` and ``n_params``/``capabilities`` (a :class:`~pybridge.Simulator`,
a :class:`~pybridge.Pool`, a Dask pool) — and turns every evaluation into a record for the
journal, the progress bar, the user's callbacks and the stopping rules. When a rule fires it
raises :class:`Stopped` through SciPy, which :mod:`pybridge.optimize.solve` catches.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..protocol import Capability, RequestKind
from ..record.journal import Journal
from ..record.progress import ProgressBar
from ..record.records import Evaluation, Iteration
from .params import Parameters
from .stopping import MaxEvaluations, Progress, Rule

__all__ = ["Calibration", "Objective", "Stopped"]

_KIND_NAMES = {RequestKind.COST: "cost", RequestKind.GRADIENT: "gradient", RequestKind.RESIDUALS: "residuals"}
#: Costs of recent points per start, to give an iteration record the cost at the method's point.
_RECENT = 256


class Stopped(Exception):
    """Raised through SciPy to end a method early (a rule fired, Ctrl-C, another start stopped).

    An ``Exception``, not a ``BaseException``: it must travel through a pool's map threads, which keep
    an evaluation's exception in its place."""


class Calibration:
    """The state one call of :func:`pybridge.minimize` shares between its starts (thread-safe)."""

    def __init__(
        self,
        evaluator: Any,
        params: Parameters,
        *,
        rules: Sequence[Rule] = (),
        callbacks: Sequence[Callable[[Any], Any]] = (),
        journal: Optional[Journal] = None,
        replay: Sequence[Evaluation] = (),
        replay_tolerance: float = 0.0,
        progress: Optional[ProgressBar] = None,
    ) -> None:
        self.evaluator = evaluator
        self.params = params
        self.rules = list(rules)
        self.callbacks = list(callbacks)
        self.journal = journal
        self.progress_bar = progress
        self.progress = Progress()
        self.replay_tolerance = float(replay_tolerance)
        capabilities = Capability(getattr(evaluator, "capabilities", Capability.NONE))
        # A residual simulator answers cost requests with its residuals (cost = half their sum of squares).
        self._cost_kind = RequestKind.RESIDUALS if capabilities & Capability.RESIDUALS else RequestKind.COST
        self.penalty: Optional[float] = getattr(evaluator, "penalty", None)
        self._lock = threading.Lock()
        self._index = 0
        self.computed = 0
        self.replayed = 0
        self.stop_message: Optional[str] = None
        self.stop_rule: Optional[str] = None
        self.best: Dict[int, Tuple[float, Optional[np.ndarray]]] = {}
        self.evaluations_by_start: Dict[int, int] = {}
        self._iterations: Dict[int, int] = {}
        self._recent: Dict[int, Dict[bytes, float]] = {}
        self._replay: Dict[bytes, List[Evaluation]] = {}
        for evaluation in replay:
            self._replay.setdefault(evaluation.x.tobytes(), []).append(evaluation)
        self._replay_x: Optional[np.ndarray] = None
        self._replay_rows: List[Evaluation] = list(replay)
        budgets = [rule for rule in self.rules if isinstance(rule, MaxEvaluations)]
        self._budget = min(budgets, key=lambda rule: rule.count) if budgets else None
        self._in_flight = 0

    @property
    def concurrency(self) -> int:
        return int(getattr(self.evaluator, "size", 1))

    # ---- stopping ----------------------------------------------------------------------

    def stop(self, message: str, rule: Optional[str] = None) -> None:
        """Ends every start at its next evaluation (the first reason given is kept)."""
        with self._lock:
            self._stop(message, rule)

    def _stop(self, message: str, rule: Optional[str]) -> None:
        if self.stop_message is None:
            self.stop_message, self.stop_rule = message, rule

    def check_stopped(self) -> None:
        if self.stop_message is not None:
            raise Stopped(self.stop_message)

    # ---- evaluations ---------------------------------------------------------------------

    def evaluate(self, kind: RequestKind, zs: Sequence[Any], start: int) -> List[Any]:
        """The values SciPy asked for at the solver vectors ``zs`` (in SciPy's space: a gradient is
        scaled by dx/dz). Raises the first error of an evaluation that failed (after recording all of
        them), or :class:`Stopped` when a rule fired on one of them."""
        self.check_stopped()
        asked = self._cost_kind if kind == RequestKind.COST else kind
        xs = [self.params.from_solver(np.asarray(z, dtype=float)) for z in zs]
        with self._lock:
            # An evaluation budget is kept exactly, also by concurrent starts and by a population sent at
            # once: what lies beyond it is never sent.
            if self._budget is not None:
                xs = xs[: max(0, self._budget.count - self.progress.evaluations - self._in_flight)]
            self._in_flight += len(xs)
        try:
            answers = self._answers(asked, xs, start)
        finally:
            with self._lock:
                self._in_flight -= len(xs)
        if len(xs) < len(zs):
            assert self._budget is not None
            self.stop(self._budget.message, self._budget.name)
        self.check_stopped()
        return [self._for_solver(kind, answer) for answer in answers]

    def _answers(self, asked: RequestKind, xs: List[np.ndarray], start: int) -> List[Evaluation]:
        answers: List[Any] = [None] * len(xs)
        todo: List[int] = []
        for i, x in enumerate(xs):
            hit = self._replayed(asked, x) if self._replay_rows else None
            if hit is None:
                todo.append(i)
            else:
                answers[i] = hit
        outcomes = iter(self.evaluator.evaluate([xs[i] for i in todo], asked) if todo else ())
        error: Optional[BaseException] = None
        with self._lock:  # recorded in the order SciPy asked, so that a resume counts alike
            for i, x in enumerate(xs):
                hit = answers[i]
                if hit is not None:
                    answers[i] = self._record_replayed(hit, x, start)
                    continue
                outcome = next(outcomes)
                answers[i] = self._record_outcome(asked, x, outcome, start)
                if outcome.error is not None and error is None:
                    error = outcome.error
        if error is not None:
            raise error
        return answers

    def _replayed(self, kind: RequestKind, x: np.ndarray) -> Optional[Evaluation]:
        """A journalled evaluation at ``x`` that answers ``kind`` (exactly, or within the tolerance)."""
        candidates = self._replay.get(x.tobytes(), [])
        if not candidates and self.replay_tolerance > 0:
            if self._replay_x is None:
                self._replay_x = np.array([e.x for e in self._replay_rows])
            close = np.abs(self._replay_x - x) <= self.replay_tolerance * np.maximum(np.abs(x), 1.0)
            candidates = [self._replay_rows[i] for i in np.flatnonzero(close.all(axis=1))]
        for evaluation in candidates:
            if kind == RequestKind.COST or (kind == RequestKind.GRADIENT and evaluation.gradient is not None) or (
                kind == RequestKind.RESIDUALS and evaluation.residuals is not None
            ):
                return evaluation
        return None

    def _record_outcome(self, kind: RequestKind, x: np.ndarray, outcome: Any, start: int) -> Any:
        gradient = residuals = None
        if outcome.error is not None:
            cost, status, message = math.nan, "failed", f"{type(outcome.error).__name__}: {outcome.error}"
        else:
            value = outcome.value
            if kind == RequestKind.GRADIENT:
                cost, gradient = float(value[0]), np.asarray(value[1], dtype=float)
            elif kind == RequestKind.RESIDUALS:
                residuals = np.asarray(value, dtype=float)
                cost = 0.5 * float(np.dot(residuals, residuals))
            else:
                cost = float(value)
            message = None
            penalised = self.penalty is not None and (
                bool(np.all(residuals == self.penalty)) if residuals is not None else cost == self.penalty
            )
            status = "penalty" if penalised else "ok"
        self.computed += 1
        record = self._record(
            start, _KIND_NAMES[kind], x, cost, gradient, residuals, status, message, outcome.started, outcome.finished,
            outcome.worker,
        )  # fmt: skip
        return record

    def _record_replayed(self, hit: Evaluation, x: np.ndarray, start: int) -> Evaluation:
        self.replayed += 1
        now = time.time()
        return self._record(start, hit.kind, x, hit.cost, hit.gradient, hit.residuals, "replayed", None, now, now, -1)

    def _record(
        self,
        start: int,
        kind: str,
        x: np.ndarray,
        cost: float,
        gradient: Optional[np.ndarray],
        residuals: Optional[np.ndarray],
        status: str,
        error: Optional[str],
        started: float,
        finished: float,
        worker: int,
    ) -> Evaluation:
        self._index += 1
        progress = self.progress
        progress.evaluations += 1
        self.evaluations_by_start[start] = self.evaluations_by_start.get(start, 0) + 1
        record = Evaluation(self._index, start, kind, x, cost, gradient, residuals, status, error, started, finished,
                            worker)  # fmt: skip
        if cost == cost:  # not NaN
            if cost < progress.best_cost:
                progress.best_cost = cost
            if cost < self.best.get(start, (math.inf, None))[0]:
                self.best[start] = (cost, x)
            recent = self._recent.setdefault(start, {})
            if len(recent) >= _RECENT:
                recent.clear()
            recent[x.tobytes()] = cost
        if self.journal is not None and status != "replayed":
            self.journal.add(record)
        if self.progress_bar is not None:
            self.progress_bar.update(record, progress.best_cost)
        for callback in self.callbacks:
            callback(record)
        for rule in self.rules:
            message = rule.after_evaluation(progress)
            if message is not None:
                self._stop(message, rule.name)
        return record

    def _for_solver(self, kind: RequestKind, record: Evaluation) -> Any:
        """A record's value as SciPy wants it: a cost, (cost, gradient in z), or residuals."""
        if kind == RequestKind.GRADIENT:
            assert record.gradient is not None
            return record.cost, record.gradient * self.params.solver_scale
        if kind == RequestKind.RESIDUALS:
            assert record.residuals is not None
            return record.residuals.copy()
        return record.cost

    # ---- iterations ----------------------------------------------------------------------

    def iteration(self, start: int, z: Any) -> None:
        """The SciPy method finished an iteration at ``z`` (its callback)."""
        x = self.params.from_solver(np.asarray(z, dtype=float))
        with self._lock:
            index = self._iterations[start] = self._iterations.get(start, 0) + 1
            self.progress.iterations += 1
            cost = self._recent.get(start, {}).get(x.tobytes(), math.nan)
            record = Iteration(index, start, x, cost, self.progress.best_cost, self.progress.evaluations, time.time())
            if self.journal is not None:
                self.journal.add_iteration(record)
            for callback in self.callbacks:
                callback(record)
            for rule in self.rules:
                message = rule.after_iteration(self.progress)
                if message is not None:
                    self._stop(message, rule.name)
        self.check_stopped()

    def iterations_of(self, start: int) -> int:
        return self._iterations.get(start, 0)


class Objective:
    """What SciPy calls for one start: ``cost``, ``value_and_grad``, ``residuals`` of the solver vector,
    and ``map`` for SciPy's ``workers=``. Callable (the cost), so that it also serves as the "pool" of
    :class:`~pybridge.FiniteDifferences`."""

    def __init__(self, calibration: Calibration, start: int) -> None:
        self.calibration = calibration
        self.start = start

    def __call__(self, z: Any) -> float:
        return float(self.calibration.evaluate(RequestKind.COST, [z], self.start)[0])

    cost = __call__

    def value_and_grad(self, z: Any) -> Tuple[float, np.ndarray]:
        return self.calibration.evaluate(RequestKind.GRADIENT, [z], self.start)[0]

    def residuals(self, z: Any) -> np.ndarray:
        return self.calibration.evaluate(RequestKind.RESIDUALS, [z], self.start)[0]

    def map(self, fn: Callable[..., Any], iterable: Any) -> List[Any]:
        """For ``workers=``: our own cost, gradient or residuals go to the evaluator as one batch; any
        other function (SciPy's private wrappers) runs on the evaluator's map, or serially."""
        own = fn
        if type(fn).__name__ == "_FunctionWrapper" and type(fn).__module__.startswith("scipy."):
            if not getattr(fn, "args", None):
                own = getattr(fn, "f", fn)
        points = list(iterable)
        if own == self.cost or own is self:
            return [float(v) for v in self.calibration.evaluate(RequestKind.COST, points, self.start)]
        if own == self.value_and_grad:
            return self.calibration.evaluate(RequestKind.GRADIENT, points, self.start)
        if own == self.residuals:
            return self.calibration.evaluate(RequestKind.RESIDUALS, points, self.start)
        mapper = getattr(self.calibration.evaluator, "map", None)
        return list(mapper(fn, points) if mapper is not None else map(fn, points))

    def callback(self, *args: Any, **kwargs: Any) -> None:
        """SciPy's per-iteration callback, whatever its convention: the point comes first."""
        point = args[0] if args else kwargs.get("intermediate_result", kwargs.get("x"))
        self.calibration.iteration(self.start, getattr(point, "x", point))
