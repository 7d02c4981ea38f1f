"""examples/calibrate/calibrate_heat.py: the heat calibration with named parameters and multi-start
on a pool finds the coefficients, and a second run replays its journal instead of computing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "calibrate" / "calibrate_heat.py"


def _run(folder: Path) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--journal", "heat.db", "--plot"], cwd=folder,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_example_calibrates_and_a_rerun_replays(tmp_path: Path) -> None:
    first = _run(tmp_path)
    found = {line.split()[0]: float(line.split()[2]) for line in first.splitlines()[2:5]}
    assert abs(found["alpha"] - 0.4) < 0.02 and abs(found["h"] - 1.5) < 0.05 and abs(found["q0"] - 8.0) < 0.1
    assert "best of 4 starts" in first and (tmp_path / "heat.png").stat().st_size > 10_000
    computed = int(first.split(" evaluations computed")[0].split()[-1])
    assert computed > 20 and ", 0 replayed" in first
    second = _run(tmp_path)
    assert f"0 evaluations computed, {computed} replayed" in second
    assert second.splitlines()[1:] == first.splitlines()[1:]  # the same result, to the last digit printed
