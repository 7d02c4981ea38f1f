"""The shim as a CMake dependency the way fmt is one: vendored with add_subdirectory, or found in a build tree."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

import pybridge

REPO = Path(__file__).resolve().parents[2]
CONSUMERS = Path(__file__).parent / "consumers"


def run(steps: List[List[str]]) -> None:
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(step)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def round_trip(executable: Path) -> None:
    with pybridge.Simulator([executable]) as sim:
        assert sim([1.0, 2.0, 3.0]) == 14.0


def test_add_subdirectory_consumer(tmp_path: Path) -> None:
    build = tmp_path / "build"
    run([
        ["cmake", "-S", str(CONSUMERS / "add_subdirectory"), "-B", str(build), f"-DPYBRIDGE_SOURCE_DIR={REPO}",
         "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", str(build), "--parallel", "2"],
    ])  # fmt: skip
    # Not the top project: pybridge's examples, tests and Python module are not built.
    assert not (build / "pybridge" / "examples").exists()
    assert not list((build / "pybridge").glob("_native*"))
    round_trip(build / "consumer_sim")


def test_build_tree_is_a_package(tmp_path: Path) -> None:
    pybridge_build, build = tmp_path / "pybridge-build", tmp_path / "build"
    run([
        ["cmake", "-S", str(REPO), "-B", str(pybridge_build), "-DCMAKE_BUILD_TYPE=Release", "-DPYBRIDGE_EXAMPLES=OFF"],
        ["cmake", "--build", str(pybridge_build), "--parallel", "2"],
        ["cmake", "-S", str(CONSUMERS / "build_tree"), "-B", str(build), f"-Dpybridge_DIR={pybridge_build}"],
        ["cmake", "--build", str(build), "--parallel", "2"],
    ])  # fmt: skip
    round_trip(build / "consumer_sim")
