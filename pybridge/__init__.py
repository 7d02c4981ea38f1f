"""pybridge: drive external simulators from SciPy through shared memory.

>>> import pybridge
>>> with pybridge.Simulator(["./my_simulator"]) as sim:      # doctest: +SKIP
...     scipy.optimize.minimize(sim, x0)
"""

from __future__ import annotations

try:
    from . import _native
except ImportError as error:  # pragma: no cover - depends on how pybridge was (not) installed
    raise ImportError(
        f"pybridge's compiled module is missing ({error}). If you are running from the source tree, "
        "run from another directory so that the installed pybridge is imported, or install it with "
        "`pip install .`"
    ) from error

from .errors import (
    CapabilityError,
    ChannelClosed,
    Error,
    EvaluationFailed,
    EvaluationTimeout,
    HandshakeError,
    InheritedSimulatorError,
    ProtocolError,
    SharedMemoryFull,
    ShimError,
    SimulatorCrashed,
    SimulatorProcessError,
    SimulatorStartError,
)
from .paths import cmake_dir
from .protocol import Capability
from .python_simulator import serve
from .simulator import Simulator

__version__: str = _native.__version__

__all__ = [
    "Simulator",
    "serve",
    "Capability",
    "cmake_dir",
    "Error",
    "CapabilityError",
    "ChannelClosed",
    "EvaluationFailed",
    "EvaluationTimeout",
    "HandshakeError",
    "InheritedSimulatorError",
    "ProtocolError",
    "SharedMemoryFull",
    "ShimError",
    "SimulatorCrashed",
    "SimulatorProcessError",
    "SimulatorStartError",
    "__version__",
]
