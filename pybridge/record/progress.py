"""A tqdm progress bar fed by the calibration's counts: evaluations per second, best cost, latency
(an evaluation's request to reply, and the bridge's share of it where measured).

Refreshed at most every :data:`REFRESH_SECONDS` (a postfix update costs tens of microseconds,
more than an evaluation of a fast model), so it is cheap on fast runs and live on slow ones.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any, Optional

__all__ = ["ProgressBar", "format_duration"]

REFRESH_SECONDS = 0.2


class ProgressBar:
    """Shows a running calibration on ``file`` (default: stderr).

    ``enabled=None`` shows it only when ``file`` is a terminal; ``total`` is the evaluation budget
    if one is known.
    """

    def __init__(self, enabled: Optional[bool] = None, total: Optional[int] = None, file: Optional[IO[str]] = None,
                 description: str = "calibrating") -> None:  # fmt: skip
        stream = sys.stderr if file is None else file
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)())
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=stream, desc=description, unit="eval", dynamic_ncols=True,
                             mininterval=REFRESH_SECONDS)  # fmt: skip
        self._shown = 0
        self._count = 0
        self._best = float("inf")
        self._latency = 0.0
        self._bridge = math.nan
        self._next_refresh = 0.0

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, evaluations: int, best_cost: float, latency: Optional[float] = None,
               bridge: float = math.nan) -> None:  # fmt: skip
        """``evaluations`` so far in all, the best cost, and the latest evaluation's request-to-reply
        time (None: unchanged) with the bridge's share of it, its request and reply latency (NaN: not
        measured). Of a fast model's round trip most is the bridge's; of a slow one's, the model's."""
        if self._bar is None:
            return
        self._count = evaluations
        self._best = best_cost
        if latency is not None:
            self._latency, self._bridge = latency, bridge
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_SECONDS
            self._refresh()

    def _refresh(self) -> None:
        share = f" (bridge {format_duration(self._bridge)})" if self._bridge == self._bridge else ""
        latency = format_duration(self._latency)
        self._bar.set_postfix_str(f"best={self._best:.6g} latency={latency}{share}", refresh=False)
        self._bar.update(self._count - self._shown)
        self._shown = self._count

    def close(self) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.refresh()  # the last figures, even within tqdm's minimum interval
            self._bar.close()
            self._bar = None


def format_duration(seconds: float) -> str:
    """A duration as the progress bar and ``pybridge monitor`` show it: microseconds below 1 ms,
    milliseconds below 1 s, with two decimals below 10, one below 100 ("0.48us", "15.0us", "2.50ms",
    "3.00s"), so that a bar's figure keeps its width; "-" when it is not a number. A fast model's
    round trip is well under a microsecond: in whole ones it read 0.

    >>> format_duration(4.77e-7), format_duration(0.0025)
    ('0.48us', '2.50ms')
    """
    if not math.isfinite(seconds):
        return "-"
    value, unit = seconds * 1e6, "us"
    if abs(value) >= 999.5:  # it would print as 1000 of a unit that should be the next
        value, unit = seconds * 1e3, "ms"
    if abs(value) >= 999.5:
        value, unit = seconds, "s"
    decimals = 2 if abs(value) < 9.995 else 1 if abs(value) < 99.95 else 0
    return f"{value:.{decimals}f}{unit}"
