"""What an evaluation does when it fails: the failure policy, in one place.

Pure and synchronous: it decides, the caller acts. A :class:`Simulator`
consults it for each failed attempt; a pool will consult the same policy
per worker.

The rules:

- A **crash**, a **timeout** or a **launch that failed** (the simulator died
  or never attached while starting) costs one attempt. While attempts remain
  (``restarts``), a fresh simulator is started and the *same* parameters are
  tried again; a launch that failed is retried after a back-off that doubles
  (0.1 s, 0.2 s, ... up to 10 s), since licence servers and MPI start-up tend
  to fail in bursts. When none remain: the penalty if one is set, else the
  error is raised.
- A **reported failure** or a **non-finite value** is the simulator's verdict
  on these parameters: retrying would give the same. Penalty if set, else raise.
- After an error is raised, a policy that ``recovers`` (restarts or a
  penalty) starts a fresh simulator at the next call; without either the
  Simulator stays failed, since the user asked to hear about every failure.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Optional

from ..errors import (
    ChannelClosed,
    EvaluationFailed,
    EvaluationTimeout,
    HandshakeError,
    SimulatorCrashed,
    SimulatorProcessError,
    SimulatorStartError,
)

__all__ = ["Decision", "FailurePolicy", "EVALUATION_ERRORS", "RESTART_BACKOFF", "MAX_BACKOFF"]

#: What an evaluation raises when the simulator could not answer it: it crashed, timed out, reported a
#: failure, could not be started again, or was left failed or closed. (Not a bug of the caller's.)
EVALUATION_ERRORS = (SimulatorProcessError, HandshakeError, EvaluationFailed, EvaluationTimeout, ChannelClosed)

#: Seconds before relaunching after the first launch that failed; doubled for each further one.
RESTART_BACKOFF = 0.1
MAX_BACKOFF = 10.0


class Decision(enum.Enum):
    RESTART = "restart"  # start a fresh simulator, try the same parameters again
    PENALTY = "penalty"  # answer with the penalty value
    RAISE = "raise"


@dataclass(frozen=True)
class FailurePolicy:
    restarts: int = 0
    penalty: Optional[float] = None
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 0:
            raise ValueError(f"restarts must be a whole number >= 0, not {self.restarts!r}")
        if self.penalty is not None:
            if isinstance(self.penalty, bool) or not isinstance(self.penalty, (int, float)) \
                    or not math.isfinite(self.penalty):  # fmt: skip
                raise ValueError(
                    f"penalty must be a finite number or None, not {self.penalty!r}: SciPy's optimisers "
                    "cannot rank NaN or infinite costs"
                )
            object.__setattr__(self, "penalty", float(self.penalty))

    @property
    def recovers(self) -> bool:
        """Whether a Simulator under this policy starts afresh at the next call after an error."""
        return self.restarts > 0 or self.penalty is not None

    def how_to_carry_on(self) -> str:
        """What an error this policy lets through (a crash, a timeout) should tell the user to do: how
        the next one would be recovered from; nothing when this policy recovers already."""
        if self.recovers:
            return ""
        return ("pass restarts= to start a fresh simulator and try the same parameters again, or penalty= to "
                "carry on past such evaluations")

    def decide(self, error: Exception, retries_left: int, can_restart: bool) -> Decision:
        """What to do after ``error`` with ``retries_left`` restarts left for this evaluation."""
        if isinstance(error, EvaluationFailed):
            return Decision.PENALTY if self.penalty is not None else Decision.RAISE
        if not isinstance(error, (SimulatorCrashed, EvaluationTimeout, SimulatorStartError)):
            return Decision.RAISE
        if not can_restart:  # a simulator the user started: nothing to restart, nothing to evaluate next
            return Decision.RAISE
        if retries_left > 0:
            return Decision.RESTART
        return Decision.PENALTY if self.penalty is not None else Decision.RAISE

    @staticmethod
    def backoff(failed_launches: int) -> float:
        """Seconds to wait before the next launch after this many launches that failed in a row."""
        if failed_launches <= 0:
            return 0.0
        return min(RESTART_BACKOFF * 2 ** (failed_launches - 1), MAX_BACKOFF)
