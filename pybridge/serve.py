"""Simulators written in Python, served over the same shim as C and C++ ones.

Meant for tests, prototypes and surrogate models: the protocol, the
handshake and the failure handling are exactly those of a compiled
simulator, because the calls go through the compiled shim.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from . import _native
from .protocol import Capability, RequestKind

__all__ = ["serve"]


def serve(
    function: Callable[[np.ndarray], Any],
    *,
    n_params: int = 0,
    n_residuals: int = 0,
    gradient: bool = False,
    max_batch: int = 0,
    channel: Optional[str] = None,
) -> int:
    """Serves ``function`` on a channel until the driver closes it; returns the number of evaluations.

    ``function(x)`` returns the cost; with ``gradient=True`` it returns
    ``(cost, gradient)`` (SciPy's ``jac=True`` convention); with
    ``n_residuals > 0`` it returns the residual vector. ``x`` is a read-only
    view of the shared parameters. An exception inside ``function`` is
    reported to the driver as a failed evaluation (its message reaches the
    driver's :class:`pybridge.EvaluationFailed`), and serving goes on.

    ``max_batch > 1`` declares a vectorised function: ``x`` then has shape
    ``(count, n_params)`` with ``1 <= count <= max_batch``, and ``function``
    returns ``count`` costs (a NaN fails that one vector), ``(costs,
    gradients)``, or residuals of shape ``(count, n_residuals)``.

    ``n_params=0`` lets the driver choose the dimension. ``channel`` defaults
    to the ``PYBRIDGE_CHANNEL`` environment variable. It runs in the simulator
    process; here a driver starts one:

    >>> import sys, pybridge
    >>> program = "import pybridge; pybridge.serve(lambda x: float(((x - 1.0) ** 2).sum()), n_params=2)"
    >>> with pybridge.Simulator([sys.executable, "-c", program]) as sim:
    ...     sim([3.0, 1.0])
    4.0
    """
    capabilities = Capability.NONE
    if gradient:
        capabilities |= Capability.GRADIENT
    if n_residuals:
        capabilities |= Capability.RESIDUALS
    endpoint = _native.SimulatorChannel(channel, n_params, n_residuals, int(capabilities), max_batch)
    served = 0
    while (request := endpoint.wait()) is not None:
        _, kind, x, gradient_out, residuals_out, costs_out = request
        try:
            if kind == RequestKind.RESIDUALS:
                residuals_out[:] = function(x)
                endpoint.reply_residuals()
            else:
                if gradient:
                    costs_out[:], grad = function(x)
                    if kind == RequestKind.GRADIENT:
                        gradient_out[:] = grad
                else:
                    costs_out[:] = function(x)
                endpoint.reply_batch()  # of any count: the costs are in place
        except Exception as error:  # reported to the driver; KeyboardInterrupt still stops us
            endpoint.reply_error(f"{type(error).__name__}: {error}")
        served += len(costs_out)
    return served
