"""The tools a contributor expects pass on the tree: ruff, mypy, and stubs of the compiled module that are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(command: list, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def test_ruff_passes() -> None:
    result = run([sys.executable, "-m", "ruff", "check", "pybridge", "tests", "benchmarks"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy 2 needs Python >= 3.10 (the test extra installs it there)")
    result = run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr


def normalised(stub: str) -> str:
    """The stub as it reads on any Python: before 3.12 stubgen spells the buffer protocol typing_extensions.Buffer."""
    stub = stub.replace("typing_extensions.Buffer", "collections.abc.Buffer")
    return "\n".join(line for line in stub.splitlines() if line != "import typing_extensions")


def test_stubs_of_the_compiled_module_are_current(tmp_path: Path) -> None:
    """pybridge/_native.pyi is generated: regenerate it (this command) whenever the bindings change."""
    pytest.importorskip("pybind11_stubgen", reason="pybind11-stubgen 3 needs Python >= 3.10")
    result = run([sys.executable, "-m", "pybind11_stubgen", "pybridge._native", "-o", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    generated = normalised((tmp_path / "pybridge" / "_native.pyi").read_text())
    assert generated == normalised((REPO / "pybridge" / "_native.pyi").read_text()), (
        "pybridge/_native.pyi is out of date: run `pybind11-stubgen pybridge._native -o .` from outside the "
        "source tree and copy pybridge/_native.pyi here"
    )
