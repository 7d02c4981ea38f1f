"""The progress bar: on when asked (or on a terminal), quiet otherwise, with rate, best cost and latency."""

from __future__ import annotations

import io
import math
import re

import pybridge
from pybridge.optimize import MaxEvaluations
from pybridge.paths import bundled_simulator
from pybridge.record.progress import ProgressBar

ROSENBROCK = [str(bundled_simulator("pybridge-rosenbrock"))]


def _run(progress):
    with pybridge.Simulator(ROSENBROCK, n_params=4) as sim:
        return pybridge.minimize(sim, {"x": [(-2, 2)] * 4}, method="Nelder-Mead", stop=MaxEvaluations(500),
                                 options={"xatol": 0, "fatol": 0},
                                 progress=progress)


def test_the_bar_shows_count_best_cost_and_latency_when_asked(capsys) -> None:
    result = _run(True)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "500/500" in last and "eval/s" in last
    assert f"best={result.fun:.6g}" in last and "latency=" in last


def test_the_latency_shown_splits_off_the_bridges_share(capsys) -> None:
    # The round trip of a fast model is mostly the bridge's; of a slow one, the model's: the bar says which.
    _run(True)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    shown = re.search(r"latency=([\d.]+)(us|ms|s) \(bridge ([\d.]+)(us|ms|s)\)", last)
    assert shown is not None, last
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
    round_trip, bridge = float(shown[1]) * scale[shown[2]], float(shown[3]) * scale[shown[4]]
    assert 0 < bridge <= round_trip < 0.1


def test_a_bar_without_a_measured_share_shows_the_round_trip_alone() -> None:
    stream = io.StringIO()
    bar = ProgressBar(True, total=2, file=stream)
    bar.update(1, 3.0, 0.002, math.nan)  # a simulator whose shim predates the stamps
    bar.close()
    last = stream.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "latency=2.00ms" in last and "bridge" not in last


def test_quiet_when_not_on_a_terminal_or_when_asked(capsys) -> None:
    _run(None)  # pytest's stderr is not a terminal
    _run(False)
    assert capsys.readouterr().err == ""


def test_a_terminal_turns_it_on_by_itself() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert ProgressBar(None, file=Terminal()).enabled and not ProgressBar(None, file=io.StringIO()).enabled
