"""pybridge: drive external simulators from SciPy through shared memory.

>>> import pybridge
>>> with pybridge.Simulator(["./my_simulator"]) as sim:      # doctest: +SKIP
...     scipy.optimize.minimize(sim, x0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


def _installed_elsewhere() -> "str | None":
    """The installed package's directory, when this one is the source tree (no compiled module).

    From the repository's root, ``python -m pybridge`` and ``python -m pytest`` put the source tree
    first on ``sys.path``; the installed package further down has what the source tree lacks.
    """
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        candidate = os.path.join(os.path.abspath(entry or os.curdir), "pybridge")
        if candidate != here and os.path.isdir(candidate) and any(
            name.startswith("_native.") for name in os.listdir(candidate)
        ):
            return candidate
    return None


try:
    from . import _native
except ImportError as error:  # pragma: no cover - depends on how pybridge was (not) installed
    _elsewhere = _installed_elsewhere()
    if _elsewhere is None:
        raise ImportError(
            f"pybridge's compiled module is missing ({error}). Install the package with `pip install .` "
            "(the source tree alone has no compiled module)"
        ) from error
    # Running from the source tree: take every submodule from the installed package.
    __path__[:] = [_elsewhere]
    from . import _native

from .errors import (
    CapabilityError,
    ChannelClosed,
    Error,
    EvaluationFailed,
    EvaluationTimeout,
    HandshakeError,
    InheritedSimulatorError,
    JournalError,
    ParameterError,
    ProtocolError,
    SharedMemoryFull,
    ShimError,
    SimulatorCrashed,
    SimulatorProcessError,
    SimulatorStartError,
)
from .errors import ShimError as _ShimError
from .paths import cmake_dir
from .pool import FiniteDifferences, Pool
from .protocol import Capability
from .serve import serve
from .simulator import Simulator

__version__: str = _native.__version__

# The calibration front end imports SciPy (a few hundred ms): only when first used.
_FRONT_END = ("minimize", "Parameter", "Parameters", "CalibrationResult")


if TYPE_CHECKING:
    from .optimize.params import Parameter, Parameters  # noqa: F401
    from .optimize.solve import CalibrationResult, minimize  # noqa: F401
else:

    def __getattr__(name: str) -> Any:
        if name in _FRONT_END:
            from . import optimize

            return getattr(optimize, name)
        raise AttributeError(f"module 'pybridge' has no attribute {name!r}")
_native._set_shim_error(_ShimError)

__all__ = [
    "Simulator",
    "Pool",
    "FiniteDifferences",
    "minimize",
    "Parameter",
    "Parameters",
    "CalibrationResult",
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
    "JournalError",
    "ParameterError",
    "ProtocolError",
    "SharedMemoryFull",
    "ShimError",
    "SimulatorCrashed",
    "SimulatorProcessError",
    "SimulatorStartError",
    "__version__",
]
