"""From the repository's root, the source tree (which has no compiled module) defers to the installed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pybridge

REPO = Path(__file__).resolve().parents[2]


def test_python_m_pybridge_from_the_repository_root_finds_the_installed_package() -> None:
    result = subprocess.run([sys.executable, "-m", "pybridge", "--cmakedir"], cwd=REPO, capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert Path(result.stdout.strip()) == pybridge.cmake_dir()
    assert (Path(result.stdout.strip()) / "pybridgeConfig.cmake").is_file()


def test_python_m_pytest_from_the_repository_root_runs_tests() -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/protocol/test_docs.py"],
                            cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
