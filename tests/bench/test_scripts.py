"""The scripts in benchmarks/ still run against the package as it is now, on a small size.

They are run by hand (docs cite their figures), so nothing else would notice when a change to the
package breaks one; no speed is asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str, cwd: Path) -> str:
    run = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                         cwd=cwd, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run.stdout


def test_journal_reads_writes_a_journal_and_times_each_way_of_reading_it(tmp_path: Path) -> None:
    out = _run("journal_reads.py", "--evaluations", "20000", cwd=tmp_path)
    assert "20000 evaluations of 8 values" in out
    for way in ("read_journal (whole)", "read_journal(last=3)", "read_journal(best=3)"):
        line = next(line for line in out.splitlines() if line.startswith(way))
        figures = re.search(r"(\d+\.\d+) s   peak +(\d+\.\d+) MiB", line)
        assert figures and float(figures[1]) > 0, line


def test_soak_stays_flat_on_a_short_run(tmp_path: Path) -> None:
    out = _run("soak.py", "--evaluations", "40000", "--every", "10000", cwd=tmp_path)
    assert "40000 evaluations" in out and out.rstrip().endswith("flat")


def test_calibration_parts_times_every_variant_and_the_journals_steps(tmp_path: Path) -> None:
    out = _run("calibration_parts.py", "--evaluations", "500", "--rounds", "1", cwd=tmp_path)
    variants, steps = out.split("the journal's methods")
    times = {line.strip().rsplit(None, 2)[0]: [float(v) for v in line.split()[-2:]]
             for line in variants.splitlines() if line.startswith("  ")}  # fmt: skip
    assert len(times) == 6 and "+ journal, progress bar, callback" in times
    assert all(median >= best > 0 for median, best in times.values()), times  # µs per evaluation
    spent = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in steps.splitlines() if line.startswith("  ")}
    assert set(spent) == {"__init__", "add_all", "_flush", "end_run", "close"}
    assert all(wall > 0 and cpu >= 0 for wall, cpu in spent.values()), spent  # ms per run


def test_threads_times_one_and_two_threads_and_the_pool(tmp_path: Path) -> None:
    out = _run("threads.py", "--evaluations", "20", "--model-us", "100", "--rounds", "1", cwd=tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("  100 us"))
    one, two, ratio, dispatcher, gang = (float(v) for v in row.split()[2:])
    assert one > 100 and min(two, ratio, dispatcher, gang) > 0, row  # µs per evaluation (one: above the model's own)


def test_shared_core_times_both_cases(tmp_path: Path) -> None:
    out = _run("shared_core.py", "--evaluations", "40", "--model-us", "1000", cwd=tmp_path)
    one, unbound = out.splitlines()
    assert one.startswith("one core, 200 us model:") and unbound.startswith("unbound, pybridge.minimize, 1000 us")
    assert re.search(r"p90 \d+ / \d+ us; added, mean -?\d+ us$", one), one
    assert re.search(r"later than 300 us \d+%; added, mean -?\d+ us \(p90 -?\d+\)$", unbound), unbound
