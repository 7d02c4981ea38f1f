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

__all__ = ["draw", "plot_journal", "MAX_TRACES"]

#: Parameter traces drawn at most (the first ones in declaration order); the rest are named in a note.
MAX_TRACES = 8


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
    number = np.arange(1, len(contents.cost) + 1)
    cost = contents.cost
    finite = np.isfinite(cost)
    best = np.fmin.accumulate(np.where(finite, cost, np.inf)) if len(cost) else cost
    convergence = axes[0]
    convergence.plot(number[finite], cost[finite], ".", markersize=3, alpha=0.4, label="cost")
    convergence.plot(number, np.where(np.isfinite(best), best, np.nan), "-", linewidth=1.5, label="best so far")
    if finite.any() and (cost[finite] > 0).all():
        convergence.set_yscale("log")
    convergence.set_ylabel("cost")
    convergence.legend(loc="upper right")
    runs = len(contents.runs)
    convergence.set_title(f"{len(cost)} evaluations in {runs} run{'s' if runs != 1 else ''}")
    units = _units(contents)
    for i in range(traces):
        ax = axes[1 + i]
        ax.plot(number, contents.x[:, i], ".", markersize=3, alpha=0.4)
        at_best = contents.x[np.argmin(np.where(finite, cost, np.inf)), i] if finite.any() else None
        if at_best is not None:
            ax.axhline(at_best, linewidth=1, color="black", alpha=0.6)
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
    path = Path(output) if output is not None else Path(journal).with_suffix(".png")
    draw(contents).savefig(path, dpi=dpi)
    return path


def _units(contents: JournalContents) -> List[str]:
    # The problem is stored as canonical JSON (keys sorted): look each label's parameter up by name.
    described = contents.problem.get("parameters", {})
    return [described.get(label.split("[")[0], {}).get("unit", "") for label in contents.labels]
