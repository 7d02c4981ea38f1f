"""Parallel evaluation: a pool of resident simulators (:class:`Pool`) and the parallel finite
differences built on it (:class:`FiniteDifferences`)."""

from .finite_diff import FiniteDifferences
from .pool import WORKER_ENV, Pool

__all__ = ["Pool", "FiniteDifferences", "WORKER_ENV"]
