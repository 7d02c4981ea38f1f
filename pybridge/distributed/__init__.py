"""Scale-out beyond one machine: simulators resident on the workers of a Dask cluster.

Needs the optional extra: ``pip install "pybridge[dask]"``. Nothing else in pybridge imports Dask.
"""

from __future__ import annotations

from .dask_pool import DaskPool

__all__ = ["DaskPool"]
