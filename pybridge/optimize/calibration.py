"""One calibration in progress: the layer between SciPy and the evaluator.

SciPy calls an :class:`Objective` (one per start) with its solver vector ``z``. The
:class:`Calibration` they share turns ``z`` into physical parameters, answers from the journal of
an earlier run when it can (a resume), otherwise evaluates through the *evaluator* — anything with
``evaluate(xs, kind) -> [Outcome]`` and ``n_params``/``capabilities`` (a :class:`~pybridge.Simulator`,
a :class:`~pybridge.Pool`, a Dask pool) — and turns every evaluation into a record for the
journal, the progress bar, the user's callbacks and the stopping rules. When a rule fires it
raises :class:`Stopped` through SciPy, which :mod:`pybridge.optimize.solve` catches.

Records are delivered in small batches (:data:`DRAIN_RECORDS` records or :data:`DRAIN_SECONDS`,
whichever comes first): on a fast model the per-evaluation bookkeeping is what a calibration costs
beyond SciPy, so only what must be exact happens per evaluation — the count, the best point, the
evaluation budget and the target cost — and the journal, the progress bar, callbacks and the other
rules take the records a batch at a time, in order.

On a single :class:`~pybridge.Simulator` SciPy's cost calls go to a native recorder
(``_native.Recorder``, cpp/python/recorder.cpp) instead: it evaluates and appends x, cost and times
to columns in C, and calls back here (:meth:`Calibration._due`) only when a batch is due, the budget
is spent, the target is reached or a stop was asked. The columns become the same records, in the
same order (:meth:`Calibration._absorb`); the journal cannot tell the two paths apart.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, cast

import numpy as np

from .. import _native
from ..pool.pool import evaluation_kind
from ..protocol import Capability, RequestKind
from ..record.journal import Journal
from ..record.progress import ProgressBar
from ..record.records import Batch, Evaluation, Iteration, each_record
from ..record.replay import Replay
from ..simulator import NOT_MEASURED, Simulator
from .params import Parameters
from .stopping import MaxEvaluations, Progress, Rule, TargetCost

__all__ = ["Calibration", "Objective", "Stopped"]

# Kinds of evaluation travel as their record names ("cost", "gradient", "residuals"): cheaper to
# compare and hash than the enum, on a path paid per evaluation. The enum is for the evaluator.
_now = time.time
_REQUEST = {"cost": RequestKind.COST, "gradient": RequestKind.GRADIENT, "residuals": RequestKind.RESIDUALS}
_KIND_OF = {request: kind for kind, request in _REQUEST.items()}
DRAIN_RECORDS = 256
DRAIN_SECONDS = 0.1
#: How often the end of a run looks whether the evaluations still under way have ended.
SETTLE_POLL_SECONDS = 0.001


def _latency(items: Sequence[Any]) -> Tuple[Optional[float], float]:
    """Request to reply of the last evaluation computed among these records and batches, and the
    bridge's share of it (request and reply latency; NaN where not measured). (None, NaN): none."""
    for item in reversed(items):
        if type(item) is Batch and len(item.cost):
            return item.latency, float(item.request_latency[-1] + item.reply_latency[-1])
        if type(item) is Evaluation and item.status != "replayed":
            return item.elapsed, item.request_latency + item.reply_latency
    return None, math.nan


class NativeRecorder(Protocol):
    """The interface of ``_native.Recorder`` (cpp/python/recorder.cpp); its attributes are C getters and
    setters, which stubs of the compiled module do not list."""

    pending: int
    busy: bool
    blocked: bool
    remaining: int  # read-only: set by grant()
    next_drain: float
    target: float

    def __call__(self, z: Any) -> float: ...
    def grant(self, left: Optional[int], batch: int, wanted: int) -> int: ...
    def iteration(self, z: Any, cost: float) -> None: ...
    def callback(self, intermediate_result: Any) -> None: ...
    def take(self) -> Tuple[np.ndarray, ...]: ...


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
        replay: Optional[Replay] = None,
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
        self._cost_kind = "residuals" if capabilities & Capability.RESIDUALS else "cost"
        self.penalty: Optional[float] = getattr(evaluator, "penalty", None)
        self._lock = threading.Lock()
        # The end of a start or run waits on it for the evaluations still in flight, looking again every
        # SETTLE_POLL_SECONDS: the native recorder's end of a call notifies nobody.
        self._settled = threading.Condition(self._lock)
        self._index = 0
        self.computed = 0
        self.replayed = 0
        self.stop_message: Optional[str] = None
        self.stop_rule: Optional[str] = None
        #: The best cost and point of each start.
        self.best: Dict[int, Tuple[float, Optional[np.ndarray]]] = {}
        self.evaluations_by_start: Dict[int, int] = {}
        self._iterations: Dict[int, int] = {}
        # Journalled answers to replay (a resume); None when there are none, so that the fast paths
        # below test one attribute.
        self._replay = replay if replay is not None and len(replay) else None
        budgets = [rule for rule in self.rules if isinstance(rule, MaxEvaluations)]
        self._budget = min(budgets, key=lambda rule: rule.count) if budgets else None
        self._in_flight = 0  # admitted, not yet recorded: all starts', and each start's
        self._in_flight_of: Dict[int, int] = {}
        self._scaled = bool(params.scaled.any())
        # A single Simulator's costs go to a native recorder (see the module's doc).
        self._single = isinstance(evaluator, Simulator)
        if progress is not None and not progress.enabled:
            self.progress_bar = None
        # Of several targets the highest is reached first.
        targets = [rule for rule in self.rules if isinstance(rule, TargetCost)]
        self._target = max(targets, key=lambda rule: rule.target, default=None)
        # Rules checked per batch of records: all but the two kept exact per evaluation.
        self._batch_rules = [rule for rule in self.rules if not isinstance(rule, (MaxEvaluations, TargetCost))]
        self._pending: List[Any] = []  # records not yet delivered, in order
        self._next_drain = 0.0
        # The native recorder of the start running now, and which start that is (see the module's doc).
        self._native: Optional[NativeRecorder] = None
        self._native_start = 0

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
        if self._native is not None:
            self._native.blocked = True

    def stopping(self) -> bool:
        """Whether the calibration is stopping: a rule fired, or a request from outside (a signal, a
        stop file) is there now, asked out of turn. Asked when an evaluation failed: a stop requested
        before the failure reached the driver is how the run ends (see ``Rule.requested``)."""
        with self._lock:
            for rule in self.rules:
                message = rule.requested()
                if message is not None:
                    self._stop(message, rule.name)
            return self.stop_message is not None

    def check_stopped(self) -> None:
        if self.stop_message is not None:
            raise Stopped(self.stop_message)

    # ---- evaluations ---------------------------------------------------------------------

    def evaluate_one(self, kind: str, z: Any, start: int) -> Any:
        """:meth:`evaluate` of a single vector, kept lean: a fast model pays it per evaluation
        (measured in ``pybridge bench``: records and journal against plain SciPy)."""
        if self._replay is not None:
            return self.evaluate(kind, [z], start)[0]
        if self.stop_message is not None:
            raise Stopped(self.stop_message)
        x = self._x_of(z)
        asked = self._cost_kind if kind == "cost" else kind
        with self._lock:
            if not self._admit(1, start):
                assert self._budget is not None
                self._stop(self._budget.message, self._budget.name)
                raise Stopped(self._budget.message)
        try:
            (outcome,) = self.evaluator.evaluate([x], _REQUEST[asked])
        except BaseException:  # Ctrl-C in the call: out of flight, or the run's end would wait for it
            with self._lock:
                self._landed(1, start)
            raise
        error = outcome.error
        with self._lock:
            self._landed(1, start)
            record = self._record_outcome(asked, x, outcome.value, error, outcome.worker, outcome.started,
                                          outcome.finished, start, (outcome.request_latency, outcome.reply_latency))
        if error is not None:
            raise error
        if self.stop_message is not None:
            raise Stopped(self.stop_message)
        return self._for_solver(kind, record)

    def _admit(self, wanted: int, start: int) -> int:
        """How many of ``wanted`` evaluations the budget lets go; they count as in flight until recorded
        (lock held). An evaluation budget is kept exactly, also by concurrent starts, by a population
        sent at once and by SciPy's own threads on one Simulator: what lies beyond it is never sent."""
        native = self._native
        if native is not None:
            self._absorb()  # its finished evaluations count
        if self._budget is None:
            admitted = wanted
        elif native is not None:
            # What the recorder started is subtracted, and its countdown shrunk to the rest, in one call.
            admitted = native.grant(self._unclaimed(), DRAIN_RECORDS, wanted)
        else:
            admitted = max(0, min(wanted, self._budget_left()))
        self._in_flight += admitted
        self._in_flight_of[start] = self._in_flight_of.get(start, 0) + admitted
        return admitted

    def _landed(self, count: int, start: int) -> None:
        """``count`` admitted evaluations of ``start`` are out of flight (lock held)."""
        self._in_flight -= count
        self._in_flight_of[start] -= count

    def _unclaimed(self) -> Optional[int]:
        """Evaluations the budget allows beyond those recorded and Python's in flight; None without a
        budget (lock held). The native recorder's own are subtracted by its grant()."""
        if self._budget is None:
            return None
        return self._budget.count - self.progress.evaluations - self._in_flight

    def _budget_left(self) -> int:
        """Evaluations the budget still allows beyond those recorded and those in flight: Python's, and
        the native recorder's call under way in another thread (lock held; a budget is set)."""
        unclaimed = self._unclaimed()
        assert unclaimed is not None
        native = self._native
        return unclaimed - (1 if native is not None and native.busy else 0)

    def _x_of(self, z: Any) -> np.ndarray:
        # Always a copy: SciPy may change its array in place after the call, and records keep x.
        return self.params.from_solver(z) if self._scaled else np.array(z, dtype=float)

    def evaluate(self, kind: str, zs: Sequence[Any], start: int) -> List[Any]:
        """The values SciPy asked for at the solver vectors ``zs`` (in SciPy's space: a gradient is
        scaled by dx/dz). Raises the first error of an evaluation that failed (after recording all of
        them), or :class:`Stopped` when a rule fired on one of them."""
        self.check_stopped()
        asked = self._cost_kind if kind == "cost" else kind
        xs = [self._x_of(z) for z in zs]
        with self._lock:
            xs = xs[: self._admit(len(xs), start)]
        answers = self._answers(asked, xs, start)  # takes them out of flight
        if len(xs) < len(zs):
            assert self._budget is not None
            self.stop(self._budget.message, self._budget.name)
        self.check_stopped()
        return [self._for_solver(kind, answer) for answer in answers]

    def _answers(self, asked: str, xs: List[np.ndarray], start: int) -> List[Evaluation]:
        answers: List[Any] = [None] * len(xs)
        todo: List[int] = []
        for i, x in enumerate(xs):
            hit = None if self._replay is None else self._replay.find(asked, x, self.replay_tolerance)
            if hit is None:
                todo.append(i)
            else:
                answers[i] = hit
        try:
            outcomes = iter(self.evaluator.evaluate([xs[i] for i in todo], _REQUEST[asked]) if todo else ())
        except BaseException:
            with self._lock:
                self._landed(len(xs), start)
            raise
        error: Optional[BaseException] = None
        with self._lock:  # recorded in the order SciPy asked, so that a resume counts alike
            self._landed(len(xs), start)  # in the same section as their records: never counted twice
            for i, x in enumerate(xs):
                hit = answers[i]
                if hit is not None:
                    answers[i] = self._record_replayed(hit, x, start)
                    continue
                outcome = next(outcomes)
                answers[i] = self._record_outcome(asked, x, outcome.value, outcome.error, outcome.worker,
                                                  outcome.started, outcome.finished, start,
                                                  (outcome.request_latency, outcome.reply_latency))  # fmt: skip
                if outcome.error is not None and error is None:
                    error = outcome.error
        if error is not None:
            raise error
        return answers

    def _record_outcome(self, kind: str, x: np.ndarray, value: Any, error: Optional[BaseException], worker: int,
                        started: float, finished: float, start: int,
                        latency: Tuple[float, float] = NOT_MEASURED) -> Evaluation:  # fmt: skip
        gradient = residuals = None
        message = None
        if error is not None:
            cost, status, message = math.nan, "failed", f"{type(error).__name__}: {error}"
        else:
            if kind == "cost":
                cost = float(value)
            elif kind == "gradient":
                cost, gradient = float(value[0]), np.asarray(value[1], dtype=float)
            else:
                residuals = np.asarray(value, dtype=float)
                cost = 0.5 * float(np.dot(residuals, residuals))
            status = "ok"
            if self.penalty is not None and (
                bool(np.all(residuals == self.penalty)) if residuals is not None else cost == self.penalty
            ):
                status = "penalty"
        self.computed += 1
        return self._record(start, kind, x, cost, gradient, residuals, status, message, started, finished,
                            worker, latency)  # fmt: skip

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
        latency: Tuple[float, float] = NOT_MEASURED,
    ) -> Evaluation:
        native = self._native
        if native is not None and native.pending:
            self._absorb()  # the native rows came first
        self._index += 1
        progress = self.progress
        progress.evaluations += 1
        self.evaluations_by_start[start] = self.evaluations_by_start.get(start, 0) + 1
        record = Evaluation(self._index, start, kind, x, cost, gradient, residuals, status, error, started, finished,
                            worker, *latency)  # fmt: skip
        if cost < progress.best_cost:  # False for NaN
            progress.best_cost = cost
            if self._target is not None and cost <= self._target.target:
                self._stop(self._target.after_evaluation(progress) or "", self._target.name)
        best = self.best.get(start)
        if best is None or cost < best[0]:
            self.best[start] = (cost, x) if cost == cost else (math.inf, None)
        self._pending.append(record)
        if len(self._pending) >= DRAIN_RECORDS or finished >= self._next_drain:
            self._drain()
        if native is not None and self._budget is not None:
            self._arm()  # this evaluation counts against the native countdown's budget too
        return record

    def _drain(self) -> None:
        """Delivers the pending records, in order: journal, progress bar, callbacks, rules (under the lock)."""
        items, self._pending = self._pending, []
        self._next_drain = time.time() + DRAIN_SECONDS
        if not items:
            return
        if self.journal is not None:
            self.journal.add_all(items)
        if self.progress_bar is not None:
            self.progress_bar.update(self.progress.evaluations, self.progress.best_cost, *_latency(items))
        if not self.callbacks and not self._batch_rules:
            return  # nobody wants records: a batch's are never made
        # One batch (a fast model's common case) is its own list of records.
        records = items[0].records if len(items) == 1 and type(items[0]) is Batch else list(each_record(items))
        for callback in self.callbacks:
            for record in records:
                callback(record)
        for rule in self._batch_rules:
            for record in records:
                if type(record) is Iteration:
                    message = rule.after_iteration(self.progress, record)
                    if message is not None:
                        self._stop(message, rule.name)
            if any(type(record) is Evaluation for record in records):
                message = rule.after_evaluation(self.progress)
                if message is not None:
                    self._stop(message, rule.name)

    def flush(self) -> None:
        """Delivers every pending record (at the end of a run), once the evaluations still under way
        have ended: SciPy's own worker threads may still be in one when the run ends (another thread's
        call raised Stopped), and it is recorded, journalled and counted in the result like the rest."""
        with self._lock:
            while self._in_flight > 0 or (self._native is not None and self._native.busy):
                self._settled.wait(SETTLE_POLL_SECONDS)
            self._absorb()
            self._drain()

    # ---- the native recorder ------------------------------------------------------------

    def native_cost(self, start: int, fallback: Callable[[Any], float]) -> Optional[NativeRecorder]:
        """The cost function for SciPy in ``start`` when a native recorder can serve it: a single
        Simulator answering costs, and no journal to replay. ``fallback`` evaluates what it does not take."""
        if not self._single or self._cost_kind != "cost" or self._replay is not None:
            return None
        params = self.params
        with self._lock:
            self._absorb()  # what the previous start left
            self._native = native = cast(NativeRecorder, _native.Recorder(
                self.evaluator, params.size, params.solver_offset, params.solver_scale, params.lower, params.upper,
                params.scaled, self._due, self._native_failed, fallback,
            ))  # fmt: skip
            self._native_start = start
            self._arm()
            return native

    def end_start(self, start: int) -> None:
        """A start ended: its native rows become records (its counts and best point are then final)."""
        with self._lock:
            if self._native is not None and self._native_start == start:
                while self._native.busy:  # another of SciPy's threads is still in it: its row counts
                    self._settled.wait(SETTLE_POLL_SECONDS)
                self._absorb()
                self._native = None
            # SciPy's worker threads may still be in this start's evaluations when another's call raised
            # Stopped: they count, and may hold its best point.
            while self._in_flight_of.get(start, 0) > 0:
                self._settled.wait(SETTLE_POLL_SECONDS)

    def _arm(self) -> None:
        """Tells the native recorder when to call back: after the rest of this batch, at the next timed
        drain, at the target cost; before any evaluation once stopped or out of budget."""
        native = self._native
        assert native is not None
        native.grant(self._unclaimed(), DRAIN_RECORDS, 0)
        native.blocked = self.stop_message is not None
        native.next_drain = self._next_drain
        native.target = self._target.target if self._target is not None else -math.inf

    def _due(self, before: bool) -> None:
        """The native recorder's call: before an evaluation when blocked (raise :class:`Stopped`, or let
        it go ahead), else after one when a batch is due (records delivered, rules checked)."""
        with self._lock:
            self._absorb()
            if before and self._budget is not None and self._budget_left() <= 0:
                self._stop(self._budget.message, self._budget.name)
            if not before:
                self._drain()
            self._arm()
        self.check_stopped()

    def _native_failed(self, x: np.ndarray, started: float, finished: float, error: BaseException) -> None:
        """The native recorder's call when the simulator raised: recorded like any failed evaluation."""
        with self._lock:
            self._record_outcome("cost", x, None, error, 0, started, finished, self._native_start)
            self._arm()

    def _absorb(self) -> None:
        """The native recorder's rows as one :class:`Batch`: counts, best point and target kept exact
        here, records made only if someone asks (lock held)."""
        native = self._native
        if native is None or not native.pending:
            return
        (x, cost, started, finished, request_latency, reply_latency, after, iteration_x, iteration_cost,
         iteration_time) = native.take()  # fmt: skip
        start = self._native_start
        progress = self.progress
        count = len(cost)
        costs = cost.tolist()
        penalty = self.penalty
        iteration_columns: Tuple[List[Any], ...] = ([], [], [], [], [])
        if len(iteration_cost):
            # An iteration after `at` evaluations of this batch saw the best cost of those and all before.
            best_then = np.fmin.accumulate(np.concatenate(([progress.best_cost], cost)))[after].tolist()
            number = self._iterations.get(start, 0)
            iteration_columns = (list(range(number + 1, number + len(iteration_cost) + 1)), iteration_cost.tolist(),
                                 best_then, (after + progress.evaluations).tolist(), iteration_time.tolist())
            self._iterations[start] = number + len(iteration_cost)
            progress.iterations += len(iteration_cost)
        statuses = None
        if penalty is not None and penalty in costs:
            statuses = ["penalty" if c == penalty else "ok" for c in costs]
        # The columns stay arrays: the journal stacks them as they are, and records (made only for
        # callbacks and rules) turn them into floats then.
        batch = Batch(self._index + 1, start, x, cost, started, finished, request_latency, reply_latency, statuses,
                      after.tolist(), iteration_columns, iteration_x)  # fmt: skip
        if count:
            self._index += count
            self.computed += count
            progress.evaluations += count
            self.evaluations_by_start[start] = self.evaluations_by_start.get(start, 0) + count
            best = self.best.get(start)
            least = min((c for c in costs if c == c), default=math.nan)  # NaN only if all are
            if least != least:
                if best is None:
                    self.best[start] = (math.inf, None)
            else:
                if least < progress.best_cost:
                    progress.best_cost = least
                    if self._target is not None and least <= self._target.target:
                        self._stop(self._target.after_evaluation(progress) or "", self._target.name)
                if best is None or least < best[0]:
                    # The first of equals, as one-by-one comparison keeps (and -0.0 == 0.0 there too).
                    self.best[start] = (least, x[costs.index(least)])
        self._pending.append(batch)

    def _for_solver(self, kind: str, record: Evaluation) -> Any:
        """A record's value as SciPy wants it: a cost, (cost, gradient in z), or residuals."""
        if kind == "cost":
            return record.cost
        if kind == "gradient":
            assert record.gradient is not None
            return record.cost, record.gradient * self.params.solver_scale
        assert record.residuals is not None
        return record.residuals.copy()

    # ---- iterations ----------------------------------------------------------------------

    def iteration(self, start: int, z: Any, cost: float = math.nan) -> None:
        """The SciPy method finished an iteration at ``z``, of ``cost`` if it says (its callback)."""
        native = self._native
        if native is not None and start == self._native_start:
            native.iteration(z, cost)  # in order with its evaluations; raises Stopped when stopped
            return
        x = self._x_of(z)
        with self._lock:
            index = self._iterations[start] = self._iterations.get(start, 0) + 1
            self.progress.iterations += 1
            record = Iteration(index, start, x, cost, self.progress.best_cost, self.progress.evaluations, time.time())
            self._pending.append(record)
            if len(self._pending) >= DRAIN_RECORDS or record.time >= self._next_drain:
                self._drain()
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
        native = calibration.native_cost(start, self.__call__)
        #: What SciPy calls for a cost: the native recorder where it serves, else this object itself.
        self.cost: Callable[[Any], float] = native or self.__call__
        #: SciPy's per-iteration callback: :meth:`callback`, or the native recorder's (the same conventions).
        self.iteration_callback: Callable[[Any], None] = self.callback if native is None else native.callback

    def __call__(self, z: Any) -> float:
        return self.calibration.evaluate_one("cost", z, self.start)

    def value_and_grad(self, z: Any) -> Tuple[float, np.ndarray]:
        return self.calibration.evaluate_one("gradient", z, self.start)

    def residuals(self, z: Any) -> np.ndarray:
        return self.calibration.evaluate_one("residuals", z, self.start)

    def map(self, fn: Callable[..., Any], iterable: Any) -> List[Any]:
        """For ``workers=``: our own cost, gradient or residuals go to the evaluator as one batch; any
        other function (SciPy's private wrappers) runs on the evaluator's map, or serially."""
        points = list(iterable)
        kind = evaluation_kind(self, fn)
        if kind is not None:
            return self.calibration.evaluate(_KIND_OF[kind], points, self.start)
        mapper = getattr(self.calibration.evaluator, "map", None)
        return list(mapper(fn, points) if mapper is not None else map(fn, points))

    def callback(self, intermediate_result: Any) -> None:
        """SciPy's per-iteration callback. By this parameter name ``minimize`` and differential evolution
        pass an ``OptimizeResult`` (with the cost); shgo, direct, TNC and COBYLA pass the point alone."""
        point = intermediate_result
        if not isinstance(point, dict):  # a point (an array, or a list from direct), not an OptimizeResult
            self.calibration.iteration(self.start, point)
            return
        cost = point.get("fun", math.nan)
        if type(cost) is not float and np.ndim(cost):  # least_squares: fun is the residual vector
            cost = point.get("cost", math.nan)
        self.calibration.iteration(self.start, point["x"], float(cost))

    def annealing_callback(self, x: Any, f: float, context: int) -> None:
        """dual_annealing's callback convention."""
        self.calibration.iteration(self.start, x, float(f))
