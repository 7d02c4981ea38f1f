"""The consumer matrix: simulators in C, C++, Fortran and Python, built every way the README offers
(find_package, pkg-config with a plain Makefile, add_subdirectory, FetchContent, the static shim) and each driven
from Python through one round trip. Like preCICE's solver dummies: a consumer that builds but does not
talk is a failure too.

A missing compiler skips its cells with the reason; .ci/run installs gfortran (and an MPI, for
tests/mpi) from Debian's packages when it may, so that CI runs every cell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable, List

import pytest

import pybridge
from pybridge import paths

REPO = Path(__file__).resolve().parents[2]
CONSUMERS = Path(__file__).parent / "consumers"
LANGUAGES = {"c": "C", "cxx": "CXX", "fortran": "Fortran"}
COMPILERS = {"c": ("cc", "gcc"), "cxx": ("c++", "g++"), "fortran": ("gfortran", "gfortran")}


@pytest.fixture
def needs(toolchain) -> Callable[[str], None]:
    return lambda language: toolchain(*COMPILERS[language]) and None


def run(steps: List[List[str]], env: "dict[str, str] | None" = None) -> None:
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, env=env)
        assert result.returncode == 0, f"{' '.join(step)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def round_trip(command: List[str]) -> None:
    with pybridge.Simulator(command) as sim:
        assert sim([1.0, 2.0, 3.0]) == 14.0
    assert sim.returncode == 0


def cmake_build(source: Path, build: Path, *definitions: str) -> Path:
    run([
        ["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *definitions],
        ["cmake", "--build", str(build), "--parallel", "2"],
    ])  # fmt: skip
    return build / "consumer_sim"


def linked_libraries(executable: Path) -> str:
    return subprocess.run(["ldd", str(executable)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("static", [False, True], ids=["shared", "static"])
def test_find_package(needs: Callable[[str], None], language: str, static: bool, tmp_path: Path) -> None:
    needs(language)
    exe = cmake_build(CONSUMERS / "find_package", tmp_path / "build", f"-DCONSUMER_LANG={LANGUAGES[language]}",
                      f"-Dpybridge_DIR={pybridge.cmake_dir()}", f"-DSTATIC={'ON' if static else 'OFF'}")  # fmt: skip
    assert ("libpybridge" in linked_libraries(exe)) is not static
    round_trip([str(exe)])


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("package", ["pybridge", "pybridge-static"])
def test_pkg_config_and_a_makefile(needs: Callable[[str], None], toolchain, language: str, package: str,
                                   tmp_path: Path) -> None:
    needs(language)
    toolchain("pkg-config", "pkg-config")
    toolchain("make", "make")
    env = dict(os.environ, PKG_CONFIG_PATH=str(paths.pkgconfig_dir()))
    run([["make", "-f", str(CONSUMERS / "Makefile"), f"LANGUAGE={language}", f"PC={package}", f"OUT={tmp_path}"]],
        env=env)  # fmt: skip
    exe = tmp_path / "consumer_sim"
    assert ("libpybridge" in linked_libraries(exe)) is (package == "pybridge")
    round_trip([str(exe)])


@pytest.mark.parametrize("language", LANGUAGES)
def test_add_subdirectory(needs: Callable[[str], None], language: str, tmp_path: Path) -> None:
    needs(language)
    build = tmp_path / "build"
    exe = cmake_build(CONSUMERS / "add_subdirectory", build, f"-DCONSUMER_LANG={LANGUAGES[language]}",
                      f"-DPYBRIDGE_SOURCE_DIR={REPO}")  # fmt: skip
    # Not the top project: pybridge's examples, tests and Python module are not built.
    assert not (build / "pybridge" / "examples").exists()
    assert not list((build / "pybridge").glob("_native*"))
    round_trip([str(exe)])


@pytest.mark.parametrize("language", LANGUAGES)
def test_fetch_content(needs: Callable[[str], None], language: str, tmp_path: Path) -> None:
    """FetchContent from a source archive (what a release tarball holds of the C/C++ side), static shim."""
    needs(language)
    archive = tmp_path / "pybridge-src.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for part in ("CMakeLists.txt", "pyproject.toml", "cmake", "cpp"):
            tar.add(REPO / part, arcname=f"pybridge-src/{part}")
    exe = cmake_build(CONSUMERS / "fetch_content", tmp_path / "build", f"-DCONSUMER_LANG={LANGUAGES[language]}",
                      f"-DPYBRIDGE_ARCHIVE={archive}")  # fmt: skip
    assert "libpybridge" not in linked_libraries(exe)
    round_trip([str(exe)])


def test_python_simulator() -> None:
    """The Python row of the matrix: pybridge.serve, nothing to build."""
    round_trip([sys.executable, str(CONSUMERS / "sim.py")])


def test_build_tree_is_a_package(tmp_path: Path) -> None:
    pybridge_build = tmp_path / "pybridge-build"
    run([
        ["cmake", "-S", str(REPO), "-B", str(pybridge_build), "-DCMAKE_BUILD_TYPE=Release", "-DPYBRIDGE_EXAMPLES=OFF"],
        ["cmake", "--build", str(pybridge_build), "--parallel", "2"],
    ])  # fmt: skip
    round_trip([str(cmake_build(CONSUMERS / "build_tree", tmp_path / "build", f"-Dpybridge_DIR={pybridge_build}"))])


@pytest.mark.parametrize("standard", ["c89", "c99", "c11", "c++98", "c++11", "c++17"])
def test_the_c_headers_compile_as(standard: str, tmp_path: Path) -> None:
    """pybridge.h and driver.h in strict C89/C99/C11 and as C++, warnings as errors."""
    source = tmp_path / ("check.cpp" if "++" in standard else "check.c")
    source.write_text("#include <pybridge/pybridge.h>\n#include <pybridge/driver.h>\n"
                      "int main(void) { return pybridge_version() == 0; }\n")  # fmt: skip
    compiler = "c++" if "++" in standard else "cc"
    run([[compiler, f"-std={standard}", "-pedantic-errors", "-Wall", "-Wextra", "-Werror", f"-I{paths.include_dir()}",
          "-c", str(source), "-o", str(tmp_path / "check.o")]])  # fmt: skip
