"""Stopping rules: when a calibration ends before its SciPy method would.

A rule looks at the calibration's :class:`Progress` after evaluations and iterations and returns a
message when it fires. ``MaxEvaluations`` and ``TargetCost`` are exact (checked per evaluation);
the others are checked as records are delivered, at most 256 evaluations or 0.1 s apart. The calibration then ends gracefully, with the best point so
far, and the result's ``message`` (and ``stop_rule``) say which rule fired. Rules see the whole
calibration: in a multi-start run every start ends when one rule fires.

>>> from pybridge.optimize import stopping
>>> rules = [stopping.TargetCost(1e-8), stopping.MaxEvaluations(5000), stopping.WallClock(3600),
...          stopping.NoImprovement(iterations=50, rtol=1e-6), stopping.StopFile("STOP")]
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import Any, List, Optional

from ..record.records import Iteration

__all__ = ["Progress", "Rule", "TargetCost", "MaxEvaluations", "WallClock", "NoImprovement", "StopFile", "OnSignal"]


class Progress:
    """What rules see: counts and the best cost of the whole calibration (replayed evaluations included,
    so that a resumed run stops where the uninterrupted one would)."""

    def __init__(self) -> None:
        self.evaluations = 0
        self.iterations = 0
        self.best_cost = math.inf
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Rule:
    """Base class: override :meth:`after_evaluation` and/or :meth:`after_iteration`."""

    #: The name the result reports in ``stop_rule``.
    name = "rule"

    def begin(self) -> None:
        """Called once when the calibration starts (in the thread that called ``minimize``)."""

    def end(self) -> None:
        """Called once when it ends."""

    def after_evaluation(self, progress: Progress) -> Optional[str]:
        """After a batch of evaluations has been recorded."""
        return None

    def after_iteration(self, progress: Progress, iteration: Iteration) -> Optional[str]:
        """After each iteration, in order (``iteration.best_cost`` is the best cost at that point)."""
        return None

    def requested(self) -> Optional[str]:
        """For a rule that answers a request from outside the calibration (a signal, a stop file):
        whether that request is there now. Asked out of turn when an evaluation fails, so that a stop
        asked for before the failure is how the run ends: a batch system's SIGTERM kills the simulator
        as well as asking the driver to stop."""
        return None


class TargetCost(Rule):
    """Stop once an evaluation reaches ``cost <= target``."""

    name = "target_cost"

    def __init__(self, target: float) -> None:
        self.target = float(target)
        if self.target != self.target:  # NaN: no cost is ever <= it, and the run would ignore the target
            raise ValueError(f"TargetCost needs a number, not {target!r}")

    def after_evaluation(self, progress: Progress) -> Optional[str]:
        if progress.best_cost <= self.target:
            return f"target cost {self.target:g} reached (best cost {progress.best_cost:.6g})"
        return None


class MaxEvaluations(Rule):
    """Stop after ``count`` evaluations (of the whole calibration, replayed ones included). Kept exactly:
    evaluations beyond it are never sent, even by concurrent starts or a population sent at once."""

    name = "max_evaluations"

    def __init__(self, count: int) -> None:
        if isinstance(count, bool) or int(count) != count:
            raise ValueError(f"MaxEvaluations needs a whole number of evaluations, not {count!r}")
        if count < 1:
            raise ValueError(f"MaxEvaluations needs a positive count, not {count}")
        self.count = int(count)

    @property
    def message(self) -> str:
        return f"maximum of {self.count} evaluations reached"

    def after_evaluation(self, progress: Progress) -> Optional[str]:
        return self.message if progress.evaluations >= self.count else None


class WallClock(Rule):
    """Stop when the calibration has run ``seconds`` (measured from the call of ``minimize``)."""

    name = "wall_clock"

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"WallClock needs a positive number of seconds, not {seconds}")
        self.seconds = float(seconds)

    def after_evaluation(self, progress: Progress) -> Optional[str]:
        if progress.elapsed >= self.seconds:
            return f"wall-clock budget of {self.seconds:g} s used"
        return None


class NoImprovement(Rule):
    """Stop when the best cost has not improved by more than ``rtol`` (relative) over ``iterations``
    iterations. Counts iterations as the SciPy method reports them (its ``callback``); methods that
    report none (``least_squares`` before SciPy 1.16) never trigger it."""

    name = "no_improvement"

    def __init__(self, iterations: int, rtol: float = 1e-6) -> None:
        if iterations < 1:
            raise ValueError(f"NoImprovement needs a positive number of iterations, not {iterations}")
        self.iterations = int(iterations)
        self.rtol = float(rtol)
        if not self.rtol >= 0:  # negative or NaN: no improvement would ever count, or every one would
            raise ValueError(f"NoImprovement needs rtol >= 0, not {rtol!r}")
        self._best: List[float] = []

    def begin(self) -> None:
        self._best = []

    def after_iteration(self, progress: Progress, iteration: Iteration) -> Optional[str]:
        self._best.append(iteration.best_cost)
        if len(self._best) <= self.iterations:
            return None
        then = self._best[-1 - self.iterations]
        now = self._best[-1]
        if math.isfinite(then) and then - now <= self.rtol * max(abs(then), 1e-300):
            return f"no relative improvement above {self.rtol:g} in the last {self.iterations} iterations"
        return None


class StopFile(Rule):
    """Stop when ``path`` exists (``touch STOP`` from another terminal). Looked for at most every
    ``interval`` seconds, so that it costs nothing per evaluation. The file is left in place."""

    name = "stop_file"

    def __init__(self, path: "str | os.PathLike[str]", interval: float = 0.1) -> None:
        self.path = os.fspath(path)
        if not self.path:
            # No file is ever named "": the rule would be accepted and never fire.
            raise ValueError("StopFile needs the path of a file to watch, e.g. StopFile('STOP'), not ''")
        self.interval = float(interval)
        if not self.interval >= 0:  # 0 looks at every evaluation
            raise ValueError(f"StopFile needs a number of seconds >= 0 between looks, not {interval!r}")
        self._next_look = 0.0

    def begin(self) -> None:
        self._next_look = 0.0

    def after_evaluation(self, progress: Progress) -> Optional[str]:
        now = time.monotonic()
        if now < self._next_look:
            return None
        self._next_look = now + self.interval
        return self.requested()

    def requested(self) -> Optional[str]:
        if os.path.exists(self.path):
            return f"stop file {self.path} found (remove it before the next run)"
        return None


def _signal_named(signum: "int | str") -> signal.Signals:
    """The signal a user means by a number, a ``signal.Signals`` or a name as the shell spells it
    ("SIGTERM", "TERM", "term")."""
    if isinstance(signum, str):
        name = signum.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name not in signal.Signals.__members__:
            raise ValueError(f"there is no signal named {signum!r}: give one such as 'SIGUSR1' or 'SIGTERM'")
        return signal.Signals[name]
    try:
        return signal.Signals(signum)
    except ValueError:
        raise ValueError(f"there is no signal numbered {signum!r}: give one such as signal.SIGUSR1") from None


class OnSignal(Rule):
    """Stop when the process receives ``signum`` (default SIGUSR1: ``kill -USR1 PID``; SIGTERM from a
    batch system's time limit works too), a number or a name ("SIGTERM" or "TERM"). The handler is
    installed only while ``minimize`` runs, and only when it is called from the main thread (Python
    delivers signals there)."""

    name = "signal"

    def __init__(self, signum: "int | str" = signal.SIGUSR1) -> None:
        self.signum = _signal_named(signum)
        if self.signum in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"{self.signum.name} cannot be caught, so it could never stop a run gracefully: "
                             "use SIGUSR1 or SIGTERM")
        self._received = threading.Event()
        self._previous: Any = None

    def begin(self) -> None:
        self._received.clear()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("OnSignal needs minimize to be called from the main thread (signals arrive there)")
        self._previous = signal.signal(self.signum, lambda *_: self._received.set())

    def end(self) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def after_evaluation(self, progress: Progress) -> Optional[str]:
        return self.requested()

    def requested(self) -> Optional[str]:
        if self._received.is_set():
            return f"signal {self.signum.name} received"
        return None
