"""`Pool`: N resident simulators behind one callable and one ``concurrent.futures.Executor``.

Two ways in, one set of simulators:

- **The pool's own evaluations** — ``pool.map(pool, xs)``, ``pool.map(pool.value_and_grad, xs)``,
  ``pool.map(pool.residuals, xs)``, SciPy's wrapper of the pool, and the finite differences of
  :mod:`pybridge.pool.finite_diff` — are dispatched by the calling thread alone: it sends one
  request to every idle simulator, waits on all of them at once (one doorbell, the GIL
  released), and hands the next vector to whichever simulator answers first.
- **Any other callable** — SciPy passes ``workers`` its *own* wrapper of your function — runs
  on as many threads as the pool has simulators. Each call of the pool inside it (``pool(x)``)
  takes an idle simulator for the length of one evaluation; the wait releases the GIL, so the
  simulators compute side by side.

A worker is a :class:`~pybridge.simulator.Simulator`, so each evaluation runs under the same
failure policy (:mod:`pybridge.core.policy`) as with a single simulator: a crash or a timeout
restarts that worker and retries *that* vector while the others carry on, or answers with the
penalty, or raises — only for that evaluation. A worker left failed is replaced before its
next use, so the pool keeps its size.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .. import _native
from ..core.channel import POLL_PERIOD, DriverChannel
from ..core.doorbell import Doorbell
from ..errors import ChannelClosed
from ..protocol import Capability, RequestKind
from ..simulator import NOT_MEASURED, Command, Failed, Outcome, Simulator, _columns, measuring_latency, values_of

__all__ = ["Pool", "WORKER_ENV", "evaluation_kind"]

#: Set in each worker simulator's environment: its index in the pool (0, 1, ...), e.g. for a
#: scratch directory of its own.
WORKER_ENV = "PYBRIDGE_WORKER"


class _Worker(Simulator):
    """A Simulator whose channels share the pool's doorbell."""

    def __init__(self, command: Command, doorbell: str, index: int, **options: Any) -> None:
        self._doorbell_name = doorbell
        self.index = index
        super().__init__(command, **options)

    def _new_channel(self) -> DriverChannel:
        return DriverChannel(doorbell=self._doorbell_name)

    def _use_port(self, port: Optional[_native.DriverPort]) -> None:
        # Threads share a pool's workers (pool(x) from SciPy's workers= wrapper, the starts of a multi-start
        # run): each wait spins with the GIL released, or a sub-millisecond evaluation held the GIL for
        # all of its spin, and the threads took turns (benchmarks/threads.py).
        if port is not None:
            port.spin_holding_gil = False
        super()._use_port(port)


class Pool(Executor):
    """``workers`` copies of a simulator, evaluated in parallel through shared memory.

    ``Pool(command, workers=N, **options)`` starts N simulator processes, each on a channel
    of its own; ``options`` are those of :class:`~pybridge.Simulator` (``n_params``,
    ``timeout``, ``restarts``, ``penalty``, ...) and apply to each worker. Each simulator
    sees its index in ``PYBRIDGE_WORKER``. The pool is:

    - **callable like a Simulator**: ``pool(x)``, ``pool.value_and_grad(x)``,
      ``pool.residuals(x)`` — each takes an idle simulator for one evaluation, so threads can
      share the pool;
    - **a map for SciPy's ``workers=``**: ``differential_evolution(pool, bounds,
      workers=pool.map, updating="deferred")``; results come back in order;
    - **a ``concurrent.futures.Executor``**: ``submit``, ``map``, ``shutdown``, and a context
      manager.

    With the bundled Rosenbrock simulator:

    >>> import numpy as np
    >>> import pybridge
    >>> from pybridge.paths import bundled_simulator
    >>> with pybridge.Pool([bundled_simulator("pybridge-rosenbrock")], workers=2, n_params=2) as pool:
    ...     costs = list(pool.map(pool, [np.zeros(2), np.ones(2), np.array([2.0, 4.0])]))
    ...     future = pool.submit(pool.value_and_grad, np.zeros(2))
    ...     print(costs, future.result()[0])
    [1.0, 0.0, 1.0] 1.0

    ``map``'s ``chunksize`` is accepted and ignored: every vector goes to the next idle
    simulator. Its ``timeout`` is not supported: bound each evaluation with ``timeout=``.
    """

    def __init__(self, command: Command, workers: Optional[int] = None, **options: Any) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be a positive whole number, not {workers!r}")
        if command is None:
            raise ValueError("a Pool starts its simulators itself: pass the command")
        self._command = command
        self._options = dict(options)
        self._size = int(workers)
        self._cond = threading.Condition()
        self._closed = False
        self._doorbell = Doorbell()
        self._workers: List[Optional[_Worker]] = [None] * self._size
        self._idle: List[int] = []
        self._threads: Optional[ThreadPoolExecutor] = None  # for submit()
        self._gang: Optional[_Gang] = None  # for map() of other callables
        self._retired = _Counts()  # counters of workers that were replaced
        # A forgotten pool leaks nothing: its workers have finalizers of their own; the doorbell
        # is removed here (its owner only).
        self._finalizer = weakref.finalize(self, self._doorbell.close)
        try:
            # In parallel: a launch waits for the handshake with the GIL released.
            with ThreadPoolExecutor(max_workers=self._size) as starter:
                started = [starter.submit(self._new_worker, index) for index in range(self._size)]
            errors = []
            for index, future in enumerate(started):
                if future.exception() is None:
                    self._workers[index] = future.result()
                    self._idle.append(index)
                else:
                    errors.append(future.exception())
            if errors:
                raise errors[0]  # type: ignore[misc]
        except BaseException:
            self.shutdown()
            raise

    # ---- what it computes -------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of simulators."""
        return self._size

    @property
    def command(self) -> List[str]:
        """The simulators' argument vector."""
        return self._any_worker().command or []

    @property
    def penalty(self) -> Optional[float]:
        return self._any_worker().penalty

    @property
    def n_params(self) -> int:
        return self._any_worker().n_params

    @property
    def n_residuals(self) -> int:
        return self._any_worker().n_residuals

    @property
    def capabilities(self) -> Capability:
        return self._any_worker().capabilities

    @property
    def max_batch(self) -> int:
        """Parameter vectors one request carries at most (1 unless the simulator declared batches)."""
        return self._any_worker().max_batch

    @property
    def evaluations(self) -> int:
        """Evaluations answered (with a value or with the penalty), by all workers so far."""
        return self._retired.evaluations + sum(w.evaluations for w in self._workers if w is not None)

    @property
    def failures(self) -> int:
        """Evaluation attempts that failed, in any worker."""
        return self._retired.failures + sum(w.failures for w in self._workers if w is not None)

    @property
    def restart_count(self) -> int:
        """Fresh simulators started after a crash, a timeout or a failed launch (replacements included)."""
        return self._retired.restarts + sum(w.restart_count for w in self._workers if w is not None)

    @property
    def pids(self) -> List[Optional[int]]:
        """The process ids of the current simulators."""
        return [None if w is None else w.pid for w in self._workers]

    def __call__(self, x: "np.typing.ArrayLike") -> float:
        """The cost at ``x``, on whichever simulator is idle."""
        return self._on_idle_worker(lambda worker: worker(x))

    def value_and_grad(self, x: "np.typing.ArrayLike") -> Tuple[float, np.ndarray]:
        """``(cost, gradient)`` at ``x``, for ``minimize(..., jac=True)``."""
        return self._on_idle_worker(lambda worker: worker.value_and_grad(x))

    def residuals(self, x: "np.typing.ArrayLike") -> np.ndarray:
        """The residual vector at ``x``, for ``least_squares``."""
        return self._on_idle_worker(lambda worker: worker.residuals(x))

    def vectorized(self, xs: "np.typing.ArrayLike") -> np.ndarray:
        """The costs of the columns of ``xs`` (shape ``(n_params, S)``), shape ``(S,)``, evaluated across
        the simulators (``max_batch`` to a request): ``differential_evolution(pool.vectorized, bounds,
        vectorized=True)``. An evaluation that fails under the policy raises, after the rest are in."""
        self._check_open()
        return np.array(list(values_of(self._dispatch(RequestKind.COST, list(_columns(xs, self.n_params))))))

    def evaluate(self, xs: Sequence["np.typing.ArrayLike"], kind: RequestKind = RequestKind.COST) -> List[Outcome]:
        """Every ``x`` evaluated across the simulators, as :class:`~pybridge.simulator.Outcome` s in
        order (the evaluator protocol :func:`pybridge.minimize` uses). Unlike :meth:`map`, an
        error does not stop the others from being sent: each outcome carries its own."""
        self._check_open()
        if len(xs) == 1:
            # One vector (each start of a multi-start run, a sequential method): the simulator's own
            # timed evaluation on an idle one, without the dispatcher's bookkeeping for many
            # (~10 µs of Python per evaluation).
            return self._on_idle_worker(
                lambda worker: [outcome._replace(worker=worker.index) for outcome in worker.evaluate(xs, kind)])
        trace: List[Any] = [None] * len(xs)
        with measuring_latency():
            outcomes = self._dispatch(RequestKind(kind), list(xs), trace, stop_on_failure=False)
        return [
            Outcome(None, outcome.error, *where) if isinstance(outcome, Failed) else Outcome(outcome, None, *where)
            for outcome, where in zip(outcomes, trace)
        ]

    # ---- Executor ----------------------------------------------------------------------

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None, chunksize: int = 1
    ) -> Iterator[Any]:
        """``fn`` applied to every element (of several iterables: zipped), in parallel; the results
        in order. An evaluation that raised raises when its turn comes in the iteration, after
        every other evaluation has finished.

        ``fn`` may be the pool or its ``value_and_grad``/``residuals`` (dispatched from this
        thread, without a thread per evaluation), or any callable that evaluates through the pool
        (run on one thread per simulator).
        """
        arguments = map_arguments("Pool", fn, iterables, timeout)
        self._check_open()
        kind = evaluation_kind(self, fn) if len(iterables) == 1 else None
        if kind is not None:
            outcomes = self._dispatch(kind, [args[0] for args in arguments])
        else:
            outcomes = self._gang_for_map().run(fn, arguments)
        return values_of(outcomes)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "Future[Any]":
        """Runs ``fn(*args, **kwargs)`` on a thread of the pool; evaluations in it take an idle
        simulator each (``pool.submit(pool, x)`` evaluates ``x``)."""
        with self._cond:
            self._check_open()
            if self._threads is None:
                self._threads = ThreadPoolExecutor(max_workers=self._size, thread_name_prefix="pybridge-pool")
            return self._threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops every simulator and removes every channel and the doorbell. Idempotent.

        Submitted work still running is waited for first (``wait=True``) or abandoned, its
        evaluations failing with :class:`ChannelClosed`; ``cancel_futures=True`` cancels what
        has not started.
        """
        with self._cond:
            self._closed = True
            threads, self._threads = self._threads, None
            gang, self._gang = self._gang, None
            self._cond.notify_all()
        try:
            if threads is not None:
                threads.shutdown(wait=wait, cancel_futures=cancel_futures)
            if gang is not None:
                gang.stop()
        finally:
            try:
                for worker in self._workers:
                    if worker is not None:
                        worker.close()
            finally:
                self._finalizer()

    close = shutdown

    @property
    def closed(self) -> bool:
        return self._closed

    def __reduce__(self) -> Any:
        raise TypeError(
            "a pybridge.Pool cannot be pickled: it owns simulator processes and shared memory of this process. "
            "Pass pool.map as SciPy's workers= (it runs in this process) instead of the pool itself"
        )

    # ---- workers -----------------------------------------------------------------------

    def _new_worker(self, index: int) -> _Worker:
        options = dict(self._options)
        environment = dict(os.environ if options.get("env") is None else options["env"])
        environment[WORKER_ENV] = str(index)
        options["env"] = environment
        return _Worker(self._command, self._doorbell.name, index, **options)

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelClosed("this Pool is shut down; create a new one")

    def _any_worker(self) -> _Worker:
        for worker in self._workers:
            if worker is not None:
                return worker
        raise ChannelClosed("this Pool has no simulator")

    def _take(self, at_most: int = 1) -> List[int]:
        """Indices of 1 to ``at_most`` idle workers, now ours alone; blocks until one is idle.
        A worker that was left failed is replaced first, so the pool keeps its size."""
        with self._cond:
            while not self._idle:
                self._check_open()
                self._cond.wait()
            self._check_open()
            taken = [self._idle.pop() for _ in range(min(at_most, len(self._idle)))]
        try:
            for index in taken:
                worker = self._workers[index]
                if worker is None or worker.failed is not None or worker.closed:
                    self._replace(index)
        except BaseException:
            self._give(taken)
            raise
        return taken

    def _give(self, indices: Sequence[int]) -> None:
        with self._cond:
            self._idle.extend(indices)
            self._cond.notify(len(indices))

    def _replace(self, index: int) -> None:
        old = self._workers[index]
        self._workers[index] = None
        if old is not None:
            self._retired.add(old)
            old.close()
        self._workers[index] = self._new_worker(index)
        self._retired.restarts += 1

    def _on_idle_worker(self, evaluate: Callable[[_Worker], Any]) -> Any:
        (index,) = self._take()
        try:
            worker = self._workers[index]
            assert worker is not None
            return evaluate(worker)
        finally:
            self._give((index,))

    # ---- dispatch: one thread, every simulator busy --------------------------------------

    def _dispatch(
        self, kind: RequestKind, xs: Sequence[Any], trace: Optional[List[Any]] = None, stop_on_failure: bool = True
    ) -> List[Any]:
        """Every ``x`` evaluated, in order (a :class:`Failed` where one raised). One request per idle
        simulator — of one vector, or of several for simulators that take batches, so that the map is
        spread evenly — and the next request goes to whichever answers first. After a failure that
        raises, nothing new is sent (unless not ``stop_on_failure``), but every request in flight is
        still collected. ``trace``, if given, receives ``(worker index, sent, answered, request latency,
        reply latency)`` per vector."""
        outcomes: List[Any] = [None] * len(xs)
        if not xs:
            return outcomes
        taken = self._take(at_most=len(xs))
        workers = [self._workers[index] for index in taken]
        free: List[_Worker] = [w for w in workers if w is not None]
        share = -(-len(xs) // len(free))  # a batch simulator's share of the map, if its batches are that large
        request_size = {worker: min(worker.max_batch, share) for worker in free}
        # In flight, in sending order: (simulator, index of its first vector, its rows — None for one
        # vector, and if traced when it was sent, by which port, as which request).
        busy: List[Tuple[_Worker, int, Optional[np.ndarray], Optional[_Sent]]] = []
        sent = 0
        stop = False
        try:
            while True:
                while free and not stop and sent < len(xs):
                    worker = free.pop()
                    first = sent
                    started = time.time() if trace is not None else 0.0
                    if request_size[worker] == 1:  # the common case, kept lean: it is paid per evaluation
                        sent += 1
                        if worker._start_request(xs[first], kind):
                            busy.append((worker, first, None, _sent(started, worker) if trace is not None else None))
                            continue
                        ahead = _sent(started, worker, 1) if trace is not None else None
                        outcome = outcomes[first] = _evaluated(worker._evaluate_now, xs[first], kind)
                        stop = isinstance(outcome, Failed) and stop_on_failure
                    else:
                        sent = min(first + request_size[worker], len(xs))
                        rows = _rows(xs[first:sent], worker.n_params)
                        if rows is not None and worker._start_batch(rows, kind):
                            busy.append((worker, first, rows, _sent(started, worker) if trace is not None else None))
                            continue
                        ahead = _sent(started, worker, 1) if trace is not None else None
                        if rows is not None:
                            batch = worker._evaluate_batch(rows, kind)
                        else:  # not a batch of finite vectors: one by one, each with its own error
                            batch = [_evaluated(worker._evaluate_now, x, kind) for x in xs[first:sent]]
                        stop = _put(outcomes, first, batch) and stop_on_failure
                    if trace is not None and ahead is not None:
                        _mark(trace, first, sent, worker, ahead)
                    free.append(worker)
                if not busy:
                    break
                ports = [entry[0]._port for entry in busy]
                ready = _native.wait_any(ports, self._slice(busy))  # type: ignore[arg-type]
                finished = [ready] if ready is not None else [j for j, entry in enumerate(busy) if entry[0]._stalled()]
                for j in sorted(finished, reverse=True):
                    worker, first, rows, when = busy.pop(j)
                    # A stalled request goes to the slow path at once: it stops the simulator, applies the policy.
                    if rows is None:
                        evaluate = worker._finish_request if ready is not None else worker._evaluate_now
                        outcome = outcomes[first] = _evaluated(evaluate, xs[first], kind)
                        stop = stop or (isinstance(outcome, Failed) and stop_on_failure)
                        last = first + 1
                    else:
                        finish = worker._finish_batch if ready is not None else worker._evaluate_batch
                        stop = (_put(outcomes, first, finish(rows, kind)) and stop_on_failure) or stop
                        last = first + len(rows)
                    if trace is not None and when is not None:
                        _mark(trace, first, last, worker, when)
                    free.append(worker)
        finally:
            # Interrupted (Ctrl-C): requests still in flight are abandoned; sequence numbers make
            # their late replies harmless, and the next request to these simulators is served after.
            self._give(taken)
        return outcomes

    @staticmethod
    def _slice(busy: Sequence[Tuple[Any, ...]]) -> float:
        """How long the next wait may block: a poll period, or less when a timeout falls due sooner."""
        slice_ = POLL_PERIOD
        for entry in busy:
            worker = entry[0]
            if worker.timeout is not None and worker._port is not None:
                slice_ = min(slice_, max(worker.timeout - worker._port.elapsed, 0.0))
        return slice_

    def _gang_for_map(self) -> "_Gang":
        with self._cond:
            self._check_open()
            if self._gang is None:
                self._gang = _Gang(self._size)
            return self._gang


def map_arguments(owner: str, fn: Any, iterables: Tuple[Iterable[Any], ...],
                  timeout: Optional[float]) -> List[Tuple[Any, ...]]:  # fmt: skip
    """The argument tuples of ``owner.map(fn, *iterables)``, after the checks every pool's map makes:
    ``pool.map(xs)``, the function left out, took ``xs`` for it, zipped nothing and returned no values."""
    if timeout is not None:
        raise ValueError(f"{owner}.map does not take a timeout: bound each evaluation with "
                         f"{owner}(..., timeout=seconds)")  # fmt: skip
    if not callable(fn):
        raise TypeError(f"{owner}.map takes the function first, as Executor.map does: pool.map(pool, xs) evaluates "
                        f"xs; {type(fn).__name__} is not a function")  # fmt: skip
    if not iterables:
        raise TypeError(f"{owner}.map needs something to map over: pool.map(pool, xs)")
    return list(zip(*iterables))


def evaluation_kind(pool: Any, fn: Callable[..., Any]) -> Optional[RequestKind]:
    """The request behind ``fn`` if it is one of ``pool``'s own evaluations — the pool (its call), its
    ``value_and_grad`` or ``residuals``, or SciPy's plain wrapper of one of them — else None. Such a map
    can be dispatched as requests instead of calling ``fn`` once per element."""
    if type(fn).__name__ == "_FunctionWrapper" and type(fn).__module__.startswith("scipy."):
        if not getattr(fn, "args", None):  # SciPy's wrapper(x) is f(x, *args): with no args, f(x)
            fn = getattr(fn, "f", fn)
    if fn is pool or fn == pool.__call__:
        return RequestKind.COST
    if fn == pool.value_and_grad:
        return RequestKind.GRADIENT
    if fn == pool.residuals:
        return RequestKind.RESIDUALS
    return None


def _evaluated(evaluate: Callable[..., Any], *args: Any) -> Any:
    try:
        return evaluate(*args)
    except Exception as error:
        return Failed(error)


#: When a traced request was sent, by which port (None: measure no latency) and as which request.
_Sent = Tuple[float, Optional[_native.DriverPort], int]


def _sent(started: float, worker: _Worker, ahead: int = 0) -> _Sent:
    """The request just sent (``ahead`` 0), or the one request the slow path is about to send (1)."""
    port = worker._port
    return started, port, port.seq + ahead if port is not None else 0


def _mark(trace: List[Any], first: int, last: int, worker: _Worker, sent: _Sent) -> None:
    answered = time.time()
    started, port, seq = sent
    latency = NOT_MEASURED
    # The port's latency is this request's only while the port still answers it: the slow path may
    # have restarted the simulator (a new port), sent the request again, or sent several (a batch
    # evaluated vector by vector).
    if port is not None and port is worker._port and port.seq == seq:
        latency = port.latency
    for i in range(first, last):
        trace[i] = (worker.index, started, answered, *latency)


def _put(outcomes: List[Any], first: int, batch: List[Any]) -> bool:
    """Puts a request's outcomes in place from ``first``; says whether one of them failed."""
    outcomes[first : first + len(batch)] = batch
    return any(isinstance(outcome, Failed) for outcome in batch)


def _rows(xs: Sequence[Any], n_params: int) -> Optional[np.ndarray]:
    """``xs`` as the rows of one batch (C-contiguous float64), or None when one of them is not a finite
    vector of ``n_params`` reals: those are then evaluated one by one, each with its own error."""
    try:
        rows = np.array(xs, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if rows.shape != (len(xs), n_params) or not np.isfinite(rows).all():
        return None
    return rows


class _Counts:
    """Counters of workers that were replaced, so that the pool's totals never go back."""

    def __init__(self) -> None:
        self.evaluations = self.failures = self.restarts = 0

    def add(self, worker: Simulator) -> None:
        self.evaluations += worker.evaluations
        self.failures += worker.failures
        self.restarts += worker.restart_count


class _Gang:
    """``size`` threads (the caller and ``size - 1`` helpers) that share one map at a time.

    Lighter than a futures executor per element: each thread takes the next index from a shared
    counter and writes its result in place; the caller waits for the last one.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()  # one map at a time
        self._wake = threading.Condition()
        self._job: Optional[_Job] = None
        self._generation = 0
        self._stopped = False
        self._helpers = [
            threading.Thread(target=self._serve, name=f"pybridge-map-{i}", daemon=True) for i in range(size - 1)
        ]
        for helper in self._helpers:
            helper.start()

    def run(self, fn: Callable[..., Any], arguments: List[Tuple[Any, ...]]) -> List[Any]:
        job = _Job(fn, arguments)
        with self._lock:
            with self._wake:
                self._job = job
                self._generation += 1
                self._wake.notify_all()
            try:
                job.work()
                job.done.wait()
            except BaseException:
                job.cancel()  # Ctrl-C: helpers take no further element
                raise
            finally:
                with self._wake:
                    self._job = None
        return job.outcomes

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        for helper in self._helpers:
            if helper is not threading.current_thread():
                helper.join()

    def _serve(self) -> None:
        seen = 0
        while True:
            with self._wake:
                while not self._stopped and (self._job is None or self._generation == seen):
                    self._wake.wait()
                if self._stopped:
                    return
                job, seen = self._job, self._generation
            assert job is not None
            job.work()


class _Job:
    def __init__(self, fn: Callable[..., Any], arguments: List[Tuple[Any, ...]]) -> None:
        self.fn = fn
        self.arguments = arguments
        self.outcomes: List[Any] = [None] * len(arguments)
        self._next = itertools.count()
        self._left = len(arguments)
        self._lock = threading.Lock()
        self._cancelled = False
        self.done = threading.Event()
        if not arguments:
            self.done.set()

    def work(self) -> None:
        while not self._cancelled:
            i = next(self._next)  # atomic under the GIL
            if i >= len(self.arguments):
                return
            try:
                self.outcomes[i] = self.fn(*self.arguments[i])
            except Exception as error:
                self.outcomes[i] = Failed(error)
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self.done.set()

    def cancel(self) -> None:
        self._cancelled = True
