"""The Dask pool's figures for `pybridge bench` (skipped, with a note, when Dask is not installed):
its cost per evaluation against bare Dask on the same LocalCluster, and 2 workers against 1.

Bare ``client.map`` runs one task per evaluation, the way Dask is used without pybridge; the
DaskPool cuts a map into chunks and keeps its simulators resident, so the comparison also shows
what chunking buys. The same chunks through bare Dask are the fair floor of the transport.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List

import numpy as np

from .transports import _program

__all__ = ["measure_dask"]

_QUIET = logging.CRITICAL


def measure_dask(quick: bool, log: Callable[[str], None] = print) -> Dict[str, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        return {"skipped": 'Dask is not installed (pip install "pybridge[dask]")'}
    from ... import _bench  # type: ignore[attr-defined]  # built with the package; no stubs
    from ...distributed import DaskPool

    log("dask: per-evaluation cost against bare Dask ...")
    # Dask's own ERROR logs are left out of the report: a worker's heartbeat that meets the scheduler
    # closing when a cluster shuts down logs a traceback (seen once in .ci/matrix), which is no figure
    # of ours. A failure of the measurement itself raises as before.
    count = 200 if quick else 1000
    xs: List[np.ndarray] = list(np.random.default_rng(0).uniform(-2, 2, size=(count, 8)))
    results: Dict[str, Any] = {"evaluations": count}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=_QUIET) as cluster, Client(
        cluster
    ) as client:
        client.gather(client.map(_bench.sum_squares, xs[:20], pure=False))  # warm
        client.gather(client.map(_sum_squares_of_rows, np.array_split(np.array(xs[:20]), 4), pure=False))
        started = time.perf_counter()
        bare = client.gather(client.map(_bench.sum_squares, xs, pure=False))
        results["bare_client_map_us"] = (time.perf_counter() - started) / count * 1e6
        chunks = np.array_split(np.array(xs), 4)
        started = time.perf_counter()
        client.gather(client.map(_sum_squares_of_rows, chunks, pure=False))
        results["bare_chunks_us"] = (time.perf_counter() - started) / count * 1e6
        with DaskPool(client, [_program("pybridge-bench-sim")], n_params=8) as pool:
            list(pool.map(pool, xs[:20]))
            started = time.perf_counter()
            ours = list(pool.map(pool, xs))
            results["dask_pool_us"] = (time.perf_counter() - started) / count * 1e6
        if not np.allclose(ours, bare, rtol=1e-12):
            raise AssertionError("the DaskPool and bare Dask disagree on the same function")
    log("dask: 2 workers against 1 on 20 ms evaluations ...")
    slow = xs[: 20 if quick else 120]
    walls = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                          silence_logs=_QUIET) as cluster, Client(cluster) as client:  # fmt: skip
            # A new cluster's workers may not have registered yet, and the DaskPool waits for the first
            # one only: 2 against 1 needs both.
            client.wait_for_workers(workers)
            with DaskPool(client, [_program("pybridge-bench-sim"), "--burn-us", "20000"], n_params=8) as pool:
                list(pool.map(pool, slow[:2]))
                started = time.perf_counter()
                list(pool.map(pool, slow))
                walls[workers] = time.perf_counter() - started
    results["throughput"] = {"evaluations": len(slow), "model_ms": 20.0, "one_s": walls[1], "two_s": walls[2],
                             "speedup": walls[1] / walls[2]}  # fmt: skip
    return results


def _sum_squares_of_rows(rows: np.ndarray) -> List[float]:
    """Bare Dask with the DaskPool's chunking: one task, the same C++ function on every row."""
    from ... import _bench  # type: ignore[attr-defined]  # built with the package; no stubs

    return [_bench.sum_squares(row) for row in rows]
