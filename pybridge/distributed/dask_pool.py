"""`DaskPool`: resident simulators on every worker of a Dask cluster, behind the local pool's interface.

Each Dask worker keeps a local :class:`~pybridge.Pool` of ``simulators_per_worker`` simulators,
started once by a worker plugin (also on workers that join later) and stopped when the plugin is
removed or the worker goes away. An evaluation task carries parameter vectors to a worker and
results back; between the worker and its simulators everything goes through shared memory as on
one machine. A map is cut into chunks (a few per worker) so that one task carries many vectors:
Dask's per-task cost (milliseconds) is paid per chunk, not per evaluation.

Failures: a simulator that crashes or times out follows the pool's policy on its worker (restart
and retry, penalty, or the error in its place among the results). A worker that dies takes its
simulators with it (the shim's watchdog stops a simulator whose driver — the worker process — is
gone, and removes its channel); Dask reruns the chunks it held on another worker. A client that
dies without closing its pool has it closed for it: a scheduler plugin removes the worker plugin
when that client leaves.

Dask is an optional extra (``pip install "pybridge[dask]"``); only this module imports it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ChannelClosed
from ..pool.pool import Pool, evaluation_kind, map_arguments
from ..protocol import Capability, RequestKind
from ..simulator import Command, Failed, Outcome, Simulator, values_of

try:
    from distributed import Client, get_worker
    from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin
except ImportError as error:  # pragma: no cover - depends on the extra
    raise ImportError('pybridge.distributed needs Dask: pip install "pybridge[dask]"') from error

__all__ = ["DaskPool"]

#: Chunks of a map per simulator: more than one, so that a slow worker does not hold the last chunk alone.
CHUNKS_PER_SIMULATOR = 2
#: Seconds a pool outlives its client's disconnection: a client that reconnects within them (a network
#: blip) keeps its simulators; after them a dead driver's simulators stop.
CLIENT_GRACE_SECONDS = 30.0
#: Seconds a new pool waits for the cluster's first worker: a script that starts a cluster (or scales one
#: up) and makes the pool at once meets workers that are still starting, not a cluster without any.
WORKER_WAIT_SECONDS = 30.0


class _ResidentSimulators(WorkerPlugin):
    """Starts a local Pool on each worker (setup) and stops it (teardown)."""

    idempotent = True

    def __init__(self, command: Command, simulators: int, options: Dict[str, Any]) -> None:
        self.command = command
        self.simulators = simulators
        self.options = options
        self.pool: Optional[Pool] = None

    def setup(self, worker: Any) -> None:
        self.pool = Pool(self.command, workers=self.simulators, **self.options)

    def teardown(self, worker: Any) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown()


class _StopWithItsClient(SchedulerPlugin):
    """On the scheduler: removes a pool's worker plugin, and so stops its simulators on every worker,
    when the client that made the pool has left without closing it (killed, or its machine gone) and
    not come back within ``grace`` seconds (a network blip: Dask's client reconnects under the same
    id). A cluster often outlives its driver (a scheduler started on its own, batch jobs with hours
    left), and the simulators would stay resident, idle, holding memory and licences."""

    def __init__(self, client: str, pool: str, grace: float) -> None:
        self.client, self.pool, self.grace = client, pool, grace
        self._removing: Optional["asyncio.Future[Any]"] = None  # kept: a task nobody holds may be collected

    def remove_client(self, scheduler: Any, client: str) -> None:
        if client == self.client:  # called in the scheduler's event loop
            self._removing = asyncio.ensure_future(self._remove_unless_back(scheduler))

    async def _remove_unless_back(self, scheduler: Any) -> None:
        await asyncio.sleep(self.grace)
        if self.client in scheduler.clients:
            return  # it reconnected: its pool goes on
        scheduler.plugins.pop(_owner_watch(self.pool), None)
        if self.pool in scheduler.worker_plugins:
            await scheduler.unregister_worker_plugin(None, self.pool)


def _owner_watch(pool: str) -> str:
    return f"{pool}-owner"


def _local_pool(name: str) -> Pool:
    plugin = get_worker().plugins.get(name)
    if not isinstance(plugin, _ResidentSimulators) or plugin.pool is None:
        raise ChannelClosed("this DaskPool is closed (its simulators on this worker are gone)")
    return plugin.pool


def _describe(name: str, dask_worker: Any = None) -> Tuple[int, int, int, int, int, Optional[float], List[str]]:
    pool = dask_worker.plugins[name].pool
    return (pool.n_params, pool.n_residuals, int(pool.capabilities), pool.max_batch, pool.size, pool.penalty,
            pool.command)  # fmt: skip


def _evaluate_chunk(name: str, kind: int, xs: List[np.ndarray]) -> Tuple[str, List[Outcome]]:
    """Runs on a worker: the chunk on its resident simulators. A deserialised vector may lie at an
    address that is not 8-byte aligned (the first of a chunk often did), which the fast path declines:
    such a vector is copied first."""
    xs = [x if x.flags.aligned else x.copy() for x in xs]
    return get_worker().address, _local_pool(name).evaluate(xs, RequestKind(kind))


class DaskPool(Executor):
    """Simulators resident on the workers of a Dask cluster, with the interface of :class:`~pybridge.Pool`.

    ``DaskPool(client, command, simulators_per_worker=k, **options)``: ``options`` are those of
    :class:`~pybridge.Simulator` (``timeout``, ``restarts``, ``penalty``, ...) for every simulator.
    Like the local pool it is callable (``pool(x)``, ``pool.value_and_grad(x)``, ``pool.residuals(x)``),
    a map for SciPy's ``workers=``, a ``concurrent.futures.Executor``, and an evaluator for
    :func:`pybridge.minimize`.

    >>> from distributed import Client, LocalCluster                       # doctest: +SKIP
    >>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
    ...     with DaskPool(client, ["./my_simulator"]) as pool:
    ...         differential_evolution(pool, bounds, workers=pool.map, updating="deferred")
    """

    def __init__(self, client: Client, command: Command, simulators_per_worker: int = 1, **options: Any) -> None:
        if isinstance(simulators_per_worker, bool) or not isinstance(simulators_per_worker, int) or (
            simulators_per_worker < 1
        ):
            raise ValueError(f"simulators_per_worker must be a positive whole number, not {simulators_per_worker!r}")
        _check_options(command, options)
        _wait_for_a_worker(client)
        self._client = client
        self._name = f"pybridge-{uuid.uuid4().hex[:12]}"
        self._closed = False
        self._lock = threading.Lock()
        self._threads: Optional[ThreadPoolExecutor] = None
        self._simulators_per_worker = simulators_per_worker
        # Each worker starts its simulators now (and every worker that joins later).
        try:
            client.register_plugin(_StopWithItsClient(client.id, self._name, CLIENT_GRACE_SECONDS),
                                   name=_owner_watch(self._name))  # fmt: skip
        except Exception as error:  # a scheduler that cannot import pybridge: the pool works without it
            warnings.warn(f"the Dask scheduler could not load pybridge's plugin ({type(error).__name__}: {error}): "
                          "if this process dies without closing the DaskPool, its simulators stay on the workers "
                          "until they end. Install pybridge where the scheduler runs", RuntimeWarning, stacklevel=2)
        client.register_plugin(_ResidentSimulators(command, simulators_per_worker, dict(options)), name=self._name)
        try:
            described = client.run(_describe, self._name)
            first = next(iter(described.values()))
            self._n_params, self._n_residuals, capabilities, self._max_batch, _, self._penalty, self._command = first
            self._capabilities = Capability(capabilities)
        except BaseException:
            self.shutdown()
            raise

    # ---- what it computes ------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Simulators across the cluster now (workers x simulators_per_worker)."""
        return max(1, len(self._client.scheduler_info().get("workers", {}))) * self._simulators_per_worker

    @property
    def n_params(self) -> int:
        return self._n_params

    @property
    def n_residuals(self) -> int:
        return self._n_residuals

    @property
    def capabilities(self) -> Capability:
        return self._capabilities

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def penalty(self) -> Optional[float]:
        return self._penalty

    @property
    def command(self) -> List[str]:
        return list(self._command)

    def __call__(self, x: "np.typing.ArrayLike") -> float:
        return self._one(x, RequestKind.COST)

    def value_and_grad(self, x: "np.typing.ArrayLike") -> Tuple[float, np.ndarray]:
        return self._one(x, RequestKind.GRADIENT)

    def residuals(self, x: "np.typing.ArrayLike") -> np.ndarray:
        return self._one(x, RequestKind.RESIDUALS)

    def evaluate(self, xs: Sequence["np.typing.ArrayLike"], kind: RequestKind = RequestKind.COST) -> List[Outcome]:
        """Every ``x`` evaluated on the cluster, as outcomes in order (the evaluator protocol); the
        ``worker`` of an outcome numbers the simulators across the cluster."""
        self._check_open()
        vectors = [np.asarray(x, dtype=float) for x in xs]
        if not vectors:
            return []
        chunks = _chunks(len(vectors), self.size * CHUNKS_PER_SIMULATOR)
        futures = [
            self._client.submit(_evaluate_chunk, self._name, int(kind), vectors[a:b], pure=False)
            for a, b in chunks
        ]
        outcomes: List[Outcome] = []
        workers = self._worker_numbers()
        for future in futures:
            address, chunk = future.result()
            offset = workers.get(address, 0) * self._simulators_per_worker
            outcomes += [outcome._replace(worker=offset + outcome.worker) for outcome in chunk]
        return outcomes

    # ---- Executor ------------------------------------------------------------------------

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None, chunksize: int = 1
    ) -> Iterator[Any]:
        """``fn`` over the iterables, results in order. The pool's own evaluations (the pool, its
        ``value_and_grad``/``residuals``, or SciPy's plain wrapper of one) go to the cluster in chunks;
        any other callable runs on local threads, one per simulator, its evaluations each a task."""
        arguments = map_arguments("DaskPool", fn, iterables, timeout)
        self._check_open()
        kind = evaluation_kind(self, fn) if len(iterables) == 1 else None
        if kind is not None:
            outcomes: List[Any] = [
                Failed(o.error) if o.error is not None else o.value
                for o in self.evaluate([a[0] for a in arguments], kind)
            ]
            return values_of(outcomes)
        futures = [self.submit(fn, *args) for args in arguments]
        return iter([future.result() for future in futures])

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "Future[Any]":
        """Runs ``fn(*args, **kwargs)`` on a local thread; evaluations in it run on the cluster."""
        with self._lock:
            self._check_open()
            if self._threads is None:
                self._threads = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="pybridge-dask")
            return self._threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops every simulator on every worker (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        for unregister, name in ((self._client.unregister_worker_plugin, self._name),
                                 (self._client.unregister_scheduler_plugin, _owner_watch(self._name))):  # fmt: skip
            try:
                unregister(name)
            except Exception:  # a cluster already gone has no simulators left to stop
                pass

    close = shutdown

    @property
    def closed(self) -> bool:
        return self._closed

    def __reduce__(self) -> Any:
        raise TypeError("a DaskPool cannot be pickled: pass pool.map as SciPy's workers= (it runs in this process)")

    # ---- helpers -------------------------------------------------------------------------

    def _one(self, x: "np.typing.ArrayLike", kind: RequestKind) -> Any:
        (outcome,) = self.evaluate([x], kind)
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def _worker_numbers(self) -> Dict[str, int]:
        return {address: i for i, address in enumerate(sorted(self._client.scheduler_info().get("workers", {})))}

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelClosed("this DaskPool is shut down; create a new one")


def _check_options(command: Command, options: Dict[str, Any]) -> None:
    """A misspelt option refused here, not by every worker's plugin (each would log a traceback)."""
    if "workers" in options:
        raise TypeError("DaskPool takes simulators_per_worker (simulators on each Dask worker), not workers")
    signature = inspect.signature(Simulator)
    try:
        signature.bind(command, **options)
    except TypeError as error:
        names = [name for name in signature.parameters if name != "command"]
        raise TypeError(f"DaskPool: {error}; its options are those of pybridge.Simulator: {', '.join(names)}") from None


def _wait_for_a_worker(client: Client) -> None:
    if client.scheduler_info().get("workers"):
        return
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except (TimeoutError, asyncio.TimeoutError):  # the same class from Python 3.11 on
        raise ChannelClosed(
            f"the Dask cluster has no worker registered within {WORKER_WAIT_SECONDS:g} s: start workers (for "
            "example `dask worker SCHEDULER_ADDRESS`, or LocalCluster(n_workers=...)) before the DaskPool"
        ) from None


def _chunks(count: int, pieces: int) -> List[Tuple[int, int]]:
    """``count`` items cut into at most ``pieces`` contiguous, nearly equal chunks."""
    pieces = max(1, min(pieces, count))
    size, extra = divmod(count, pieces)
    bounds, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds

