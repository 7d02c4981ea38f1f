"""Every exception pybridge raises derives from :class:`Error`.

Input mistakes (a wrong-length or non-finite parameter vector) are the
standard :class:`ValueError` / :class:`TypeError`, raised before anything is
sent, as SciPy users expect.
"""

from __future__ import annotations

__all__ = [
    "Error",
    "ShimError",
    "ProtocolError",
    "HandshakeError",
    "SimulatorProcessError",
    "SimulatorStartError",
    "SimulatorCrashed",
    "EvaluationFailed",
    "EvaluationTimeout",
    "ChannelClosed",
    "CapabilityError",
    "InheritedSimulatorError",
    "SharedMemoryFull",
    "ParameterError",
    "JournalError",
]


class Error(Exception):
    """Base class of all pybridge errors."""


class ShimError(Error):
    """A call into the native shim failed; ``code`` is its ``PYBRIDGE_E_*`` status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ProtocolError(Error):
    """The shared segment does not hold what the protocol requires."""


class HandshakeError(Error):
    """The simulator's declaration does not fit what the caller asked for."""


class SimulatorProcessError(Error):
    """The simulator process failed; carries its exit status and the tail of its stderr.

    ``returncode`` is the exit code, or minus the signal number (as in
    :mod:`subprocess`), or ``None`` if the process is still running or is not ours.
    """

    def __init__(self, message: str, *, returncode: int | None = None, stderr_tail: str = "") -> None:
        details = message
        if stderr_tail:
            details += "\n--- last lines of the simulator's stderr ---\n" + stderr_tail
        super().__init__(details)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class SimulatorStartError(SimulatorProcessError):
    """The simulator could not be started (no such executable), or never attached in time."""


class SimulatorCrashed(SimulatorProcessError):
    """The simulator died: during the handshake, during an evaluation or between evaluations."""


class EvaluationFailed(Error):
    """The simulator reported that one evaluation failed; it keeps serving."""


class EvaluationTimeout(Error):
    """An evaluation took longer than the timeout; the simulator was killed."""


class ChannelClosed(Error):
    """The simulator was closed (or has failed) and can no longer evaluate."""


class CapabilityError(Error):
    """The simulator does not compute what was asked (no gradient, no residuals). Nothing was sent."""


class InheritedSimulatorError(Error):
    """A Simulator was used in a process it was inherited by through ``fork()``.

    Its channel and simulator belong to the process that created it; a child
    evaluating through them would steal its parent's replies.
    """


class SharedMemoryFull(Error):
    """``/dev/shm`` has no room for a channel; the message names the size needed and the space free."""


class ParameterError(Error, ValueError):
    """A declaration of named parameters, or a value given for them, is invalid (bounds the wrong way
    round, an unknown name, a wrong shape, a start outside the bounds). Raised before any evaluation."""


class JournalError(Error):
    """A calibration journal cannot be used: not a pybridge journal, from another problem, written by
    an incompatible version, or already holding evaluations when ``resume=True`` was not given."""
