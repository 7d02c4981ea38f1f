"""The C/C++ tests and a short fuzz run, under AddressSanitizer + UBSan and under ThreadSanitizer.

Builds this repository's CMakeLists with -DPYBRIDGE_TESTS=ON -DPYBRIDGE_SANITIZE=... and runs ctest,
exactly as docs/reliability.md describes for running them by hand.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sanitizers", ["address,undefined", "thread"])
def test_cpp_tests_pass_under_sanitizers(sanitizers: str, tmp_path: Path) -> None:
    build = tmp_path / "build"
    steps = [
        ["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DPYBRIDGE_TESTS=ON",
         "-DPYBRIDGE_EXAMPLES=OFF", f"-DPYBRIDGE_SANITIZE={sanitizers}"],
        ["cmake", "--build", str(build), "--parallel", "2"],
        ["ctest", "--test-dir", str(build), "--output-on-failure"],
    ]  # fmt: skip
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(step)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "100% tests passed" in result.stdout
