"""The bundled calibration: recover three coefficients of a heat-conduction model.

The simulator (examples/heat, installed as ``pybridge-heat``) solves a 1-D
heat equation with diffusivity ``alpha``, surface cooling rate ``h`` and
heater strength ``q0``, and returns its 50 sensor readings minus the
measurements as a residual vector. This script makes synthetic measurements
at known coefficients, adds noise, and lets ``scipy.optimize.least_squares``
find the coefficients again through the bridge. Run it with ``pybridge demo``.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from scipy.optimize import least_squares

from ..paths import bundled_simulator
from ..simulator import Simulator

__all__ = ["NAMES", "TRUE_COEFFICIENTS", "START", "Calibration", "measure", "calibrate"]

NAMES = ("alpha", "h", "q0")
TRUE_COEFFICIENTS = np.array([0.4, 1.5, 8.0])
START = np.array([1.0, 0.5, 3.0])


@dataclass
class Calibration:
    true: np.ndarray
    recovered: np.ndarray
    evaluations: int
    seconds: float
    cost: float


def measure(simulator: Path, coefficients: np.ndarray, *, noise: float, seed: int) -> np.ndarray:
    """Synthetic measurements: the model at ``coefficients`` plus Gaussian noise."""
    output = subprocess.run(
        [str(simulator), "--synthesize", *(repr(float(c)) for c in coefficients)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    clean = np.array(output.split(), dtype=float)
    rng = np.random.default_rng(seed)
    return clean + rng.normal(0.0, noise * np.abs(clean).max(), clean.size)


def calibrate(
    simulator: Optional[Union[str, Path]] = None,
    *,
    noise: float = 0.01,
    seed: int = 1,
    report: Callable[[str], None] = print,
) -> Calibration:
    """Runs the calibration and reports a table of true against recovered coefficients."""
    path = Path(simulator) if simulator is not None else bundled_simulator("pybridge-heat")
    measurements = measure(path, TRUE_COEFFICIENTS, noise=noise, seed=seed)
    with tempfile.TemporaryDirectory(prefix="pybridge-demo-") as folder:
        data = Path(folder) / "measurements.txt"
        np.savetxt(data, measurements)
        with Simulator([path, "--measurements", data]) as sim:
            started = time.perf_counter()
            fit = least_squares(sim.residuals, START, bounds=(1e-9, np.inf), x_scale="jac")
            seconds = time.perf_counter() - started
            evaluations = sim.evaluations

    result = Calibration(TRUE_COEFFICIENTS.copy(), fit.x, evaluations, seconds, float(fit.cost))
    report(f"pybridge demo: calibrating {path.name} (1-D heat conduction, {measurements.size} sensor readings,")
    report(f"noise {noise:.1%} of the peak reading) with scipy.optimize.least_squares through shared memory\n")
    report(f"{'coefficient':<12}{'true':>10}{'start':>10}{'recovered':>12}{'error':>9}")
    for name, true, start, found in zip(NAMES, result.true, START, result.recovered):
        report(f"{name:<12}{true:>10.4f}{start:>10.4f}{found:>12.4f}{(found - true) / true:>+9.2%}")
    report(
        f"\n{evaluations} simulator evaluations in {seconds * 1e3:.1f} ms "
        f"({seconds / max(evaluations, 1) * 1e6:.0f} µs each, model and SciPy included); final cost {fit.cost:.3g}"
    )
    return result


if __name__ == "__main__":
    calibrate()
