"""`pybridge bench --quick` runs every transport and reports every figure.

No speed is asserted here (targets are ratios measured by the benchmark itself,
see benchmarks/README.md); this checks that the command works and that every
transport computed the right cost (the benchmark raises otherwise).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_quick_benchmark_produces_the_full_report(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "pybridge", "bench", "--quick", "--json", str(output)],
                         capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert run.returncode in (0, 1), run.stderr  # 1 = a target missed, which a quick run may well do
    results = json.loads(output.read_text())
    assert set(results["latency"]) == {"8", "1000", "100000", "1000000"}
    for figures in results["latency"].values():
        assert len(figures) == 10 and all(f["median_us"] > 0 for f in figures.values())
    assert {run["evaluations"] for run in results["end_to_end"].values()} <= {1000, 35}
    assert len(results["targets"]) == 20  # 17, and the Dask pool's three (Dask is in the test extra)
    dask = results["dask"]
    assert dask["dask_pool_us"] > 0 and dask["bare_client_map_us"] > 0 and dask["throughput"]["speedup"] > 0
    calibration = results["calibration"]
    assert set(calibration["evaluations"].values()) == {2000}  # every variant made the same evaluations
    assert calibration["ratio"] > 0 and calibration["journal_us_per_evaluation"] > 0
    pool = results["pool"]
    assert len(pool["overhead_us"]) == 5 and all(us > 0 for us in pool["overhead_us"].values())
    assert pool["speedup"]["one_s"] > 0 and pool["differential_evolution"]["evaluations"] > 0
    assert "| target | measured | bound | met |" in run.stdout


def test_the_model_time_measurement_runs(tmp_path: Path) -> None:
    """benchmarks/model_time.py (issue 10's measurement): a row per model time and spin_us, with
    added times that are small next to the model's and CPU shares between 0 and 1."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "model_time.py"
    out = subprocess.run([sys.executable, str(script), "--quick", "--spin-us", "500,0"], capture_output=True,
                         text=True, check=True, cwd=tmp_path, timeout=120).stdout  # fmt: skip
    rows = [line.split("|")[1:-1] for line in out.splitlines()[2:]]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (f"{t} ms", s) for t in ("0.2", "1", "5", "50") for s in ("500", "0")
    ]
    for model, _, median, _, _, driver, _ in rows:
        added_us = float(median.split()[0])
        assert -5 < added_us < 0.5 * float(model.split()[0]) * 1000, (model, median)  # the model's time is subtracted
        assert 0 <= float(driver.strip().rstrip("%")) <= 100
