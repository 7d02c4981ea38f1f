"""The progress bar: on when asked (or on a terminal), quiet otherwise, with rate, best cost and latency."""

from __future__ import annotations

import io

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


def test_quiet_when_not_on_a_terminal_or_when_asked(capsys) -> None:
    _run(None)  # pytest's stderr is not a terminal
    _run(False)
    assert capsys.readouterr().err == ""


def test_a_terminal_turns_it_on_by_itself() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert ProgressBar(None, file=Terminal()).enabled and not ProgressBar(None, file=io.StringIO()).enabled
