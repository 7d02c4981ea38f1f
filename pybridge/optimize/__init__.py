"""The calibration front end: named parameters, ``minimize`` for any SciPy method, multi-start,
stopping rules. Written against the evaluator protocol (``evaluate(xs, kind)``), not a pool."""

from __future__ import annotations

from .params import Parameter, Parameters
from .solve import GLOBAL_METHODS, LOCAL_METHODS, CalibrationResult, minimize
from .stopping import MaxEvaluations, NoImprovement, OnSignal, Progress, Rule, StopFile, TargetCost, WallClock

__all__ = [
    "minimize",
    "CalibrationResult",
    "Parameter",
    "Parameters",
    "Rule",
    "Progress",
    "TargetCost",
    "MaxEvaluations",
    "WallClock",
    "NoImprovement",
    "StopFile",
    "OnSignal",
    "LOCAL_METHODS",
    "GLOBAL_METHODS",
]
