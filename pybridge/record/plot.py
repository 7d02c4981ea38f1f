"""Plots of a calibration journal: convergence and parameter traces, to PNG.

matplotlib is an optional extra (``pip install "pybridge[plot]"``), imported here only. No pyplot:
figures are drawn on an Agg canvas of their own, so nothing global (backend, open figures) changes
in the caller's process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np

from .journal import JournalContents, read_journal

__all__ = ["draw", "plot_journal", "MAX_TRACES", "MAX_POINTS"]

#: Parameter traces drawn at most (the first ones in declaration order); the rest are named in a note.
MAX_TRACES = 8
#: Markers drawn at most per panel: beyond, every k-th evaluation (and the best one) is drawn. A marker
#: per evaluation cost matplotlib 9 s per 10^6 evaluations for a picture no different from a sample's.
MAX_POINTS = 20_000


def draw(contents: JournalContents) -> Any:
    """A matplotlib ``Figure``: cost per evaluation with the best so far, and one trace per parameter."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('plots need matplotlib: pip install "pybridge[plot]" (or pip install matplotlib)') from None

    traces = min(len(contents.labels), MAX_TRACES)
    figure = Figure(figsize=(8, 2.2 * (1 + traces)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1 + traces, 1, sharex=True, squeeze=False)[:, 0]
    cost = contents.cost
    n = len(cost)
    number = np.arange(1, n + 1)
    finite = np.isfinite(cost)
    at_best = int(np.argmin(np.where(finite, cost, np.inf))) if finite.any() else None
    stride = -(-n // MAX_POINTS) if n else 1
    drawn = np.arange(0, n, stride)
    if at_best is not None and at_best % stride:
        drawn = np.sort(np.append(drawn, at_best))
    shown = drawn[finite[drawn]]
    best = np.fmin.accumulate(np.where(finite, cost, np.inf))
    # The best so far exactly, as steps: its first value, each improvement, and the last evaluation.
    steps = np.unique(np.append(np.flatnonzero(np.diff(best, prepend=np.inf) != 0), n - 1)) if n else number
    convergence = axes[0]
    convergence.plot(number[shown], cost[shown], ".", markersize=3, alpha=0.4, label="cost")
    convergence.plot(number[steps], np.where(np.isfinite(best[steps]), best[steps], np.nan), "-",
                     drawstyle="steps-post", linewidth=1.5, label="best so far")  # fmt: skip
    if finite.any() and (cost[finite] > 0).all():
        convergence.set_yscale("log")
    convergence.set_ylabel("cost")
    convergence.legend(loc="upper right")
    runs = len(contents.runs)
    sampled = f" (every {_ordinal(stride)} drawn)" if stride > 1 else ""
    convergence.set_title(f"{n} evaluations in {runs} run{'s' if runs != 1 else ''}{sampled}")
    units = _units(contents)
    for i in range(traces):
        ax = axes[1 + i]
        ax.plot(number[drawn], contents.x[drawn, i], ".", markersize=3, alpha=0.4)
        if at_best is not None:
            ax.axhline(contents.x[at_best, i], linewidth=1, color="black", alpha=0.6)
        label = contents.labels[i] + (f" [{units[i]}]" if units[i] else "")
        ax.set_ylabel(label)
    axes[-1].set_xlabel("evaluation")
    if len(contents.labels) > traces:
        figure.text(0.01, 0.002, f"{len(contents.labels) - traces} more parameters not drawn", fontsize=8)
    return figure


def plot_journal(journal: Union[str, "os.PathLike[str]"], output: Optional[Union[str, "os.PathLike[str]"]] = None,
                 dpi: int = 100) -> Path:  # fmt: skip
    """Draws ``journal`` to a PNG (default: next to it, ``NAME.png``) and returns its path.

    >>> plot_journal("calibration.db")            # doctest: +SKIP
    PosixPath('calibration.png')
    """
    contents = read_journal(journal)
    path = Path(output).expanduser() if output is not None else Path(journal).expanduser().with_suffix(".png")
    draw(contents).savefig(path, dpi=dpi)
    return path


def _units(contents: JournalContents) -> List[str]:
    # The problem is stored as canonical JSON (keys sorted): look each label's parameter up by name.
    described = contents.problem.get("parameters", {})
    return [described.get(label.split("[")[0], {}).get("unit", "") for label in contents.labels]


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"
