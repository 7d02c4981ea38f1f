"""Calibrate the bundled heat-conduction simulator: named parameters, multi-start on a pool, a
journal that resumes, stopping rules, and a plot.

    python examples/calibrate/calibrate_heat.py --journal heat.db          # run (or resume) it
    pybridge monitor heat.db                                               # watch it from elsewhere
    touch STOP                                                             # stop it early, gracefully
    pybridge plot heat.db && pybridge history heat.db --best 5             # look at it afterwards

The simulator (examples/heat, installed as ``pybridge-heat``) solves a 1-D heat equation and returns
its 50 sensor readings minus the measurements; the measurements here are synthetic: the model at
known coefficients plus 1 % noise, so that the result can be checked.
"""

from __future__ import annotations

import argparse
import subprocess

import numpy as np

import pybridge
from pybridge.optimize import MaxEvaluations, NoImprovement, StopFile
from pybridge.paths import bundled_simulator

TRUE = {"alpha": 0.4, "h": 1.5, "q0": 8.0}

PARAMS = pybridge.Parameters(
    alpha=pybridge.Parameter((0.05, 2.0), unit="m2/s", scale=True),  # diffusivity
    h=pybridge.Parameter((0.1, 5.0), unit="1/s", scale=True),  # surface cooling rate
    q0=pybridge.Parameter((1.0, 20.0), unit="W/m", scale=True),  # heater strength
)


def synthetic_measurements(simulator: str, path: str, noise: float = 0.01, seed: int = 1) -> None:
    readings = subprocess.run([simulator, "--synthesize", *(repr(v) for v in TRUE.values())],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
    clean = np.array(readings.split(), dtype=float)
    rng = np.random.default_rng(seed)
    np.savetxt(path, clean + rng.normal(0.0, noise * np.abs(clean).max(), clean.size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", default="heat.db", help="the calibration's journal (resumed if it exists)")
    parser.add_argument("--workers", type=int, default=2, help="simulators side by side")
    parser.add_argument("--starts", type=int, default=4, help="starting points (Sobol, seeded)")
    parser.add_argument("--measurements", default="measurements.txt")
    parser.add_argument("--plot", action="store_true", help="draw the journal to PNG at the end")
    args = parser.parse_args()

    heat = str(bundled_simulator("pybridge-heat"))
    synthetic_measurements(heat, args.measurements)
    with pybridge.Pool([heat, "--measurements", args.measurements], workers=args.workers) as pool:
        result = pybridge.minimize(
            pool, PARAMS, method="least_squares", n_starts=args.starts, seed=1,
            journal=args.journal, resume=True,
            stop=[MaxEvaluations(5000), NoImprovement(iterations=50), StopFile("STOP")],
        )  # fmt: skip

    print(f"{result.message}; {result.evaluations} evaluations computed, {result.replayed} replayed from "
          f"{args.journal}")  # fmt: skip
    print(f"{'parameter':<10}{'true':>10}{'found':>12}{'unit':>8}")
    for name, value in result.params.items():
        print(f"{name:<10}{TRUE[name]:>10.4f}{value:>12.4f}{PARAMS[name].unit:>8}")
    print(f"best of {len(result.starts)} starts: cost {result.fun:.6g} (the others: "
          + ", ".join(f"{start.fun:.3g}" for start in result.starts if start is not result.starts[result.start])
          + ")")
    if args.plot:
        from pybridge.record.plot import plot_journal

        print(f"plot: {plot_journal(args.journal)}")


if __name__ == "__main__":
    main()
