"""Shared fixtures. Every test runs against the *installed* pybridge."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

import pybridge
from pybridge.paths import bundled_simulator
from pybridge.protocol import CHANNEL_PREFIX, name_owner

REPO = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")


def our_shm_entries() -> set[str]:
    """Segments and semaphores of pybridge (glibc keeps named semaphores as sem.NAME) that this test
    run made or may have made: their names record a maker that is this process or descends from it,
    or one that is gone, or none (a name a test wrote, or an older pybridge's). Another job's live
    channels on the machine are not the suite's: it neither counts them as leaks nor removes them."""
    entries = set()
    for path in SHM.iterdir():
        if path.name.startswith((CHANNEL_PREFIX, "sem." + CHANNEL_PREFIX)):
            maker = name_owner(path.name)
            if maker is None or not pybridge._native.process_alive(maker) or _descends_from_us(maker):
                entries.add(path.name)
    return entries


def _descends_from_us(pid: int) -> bool:
    """Whether process ``pid`` is this one or descends from it (a simulator, a driver script, a Dask
    worker that a test started); a process that ends while we look counts as ours."""
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid, after the (command) that may hold spaces
    return False


@pytest.fixture(scope="session", autouse=True)
def nothing_left_after_the_suite() -> Iterator[None]:
    """After the whole suite, nothing of ours remains under /dev/shm."""
    before = our_shm_entries()
    yield
    left = our_shm_entries() - before
    assert not left, f"the test suite left {sorted(left)} in /dev/shm"


@pytest.fixture(autouse=True)
def no_leaked_channels() -> Iterator[None]:
    """Fails the test that leaves a segment or semaphore of ours behind."""
    before = our_shm_entries()
    yield
    leaked = our_shm_entries() - before
    assert not leaked, f"this test leaked {sorted(leaked)} in /dev/shm"


@pytest.fixture(scope="session")
def toolchain() -> Callable[[str, str], str]:
    """``toolchain(program, debian_packages)``: the program's path, or a skip that says what to install.

    .ci/run installs the compilers and sets PYBRIDGE_REQUIRE_TOOLCHAINS=1, under which a missing
    program fails the test instead: CI must show the Fortran, MPI and Makefile tests run."""

    def find(program: str, packages: str) -> str:
        path = shutil.which(program)
        if path is None:
            message = f"no {program} on this machine (Debian: apt-get install {packages}; .ci/run installs it)"
            if os.environ.get("PYBRIDGE_REQUIRE_TOOLCHAINS") == "1":
                pytest.fail(message)
            pytest.skip(message)
        return path

    return find


@pytest.fixture(scope="session")
def shm_entries() -> Callable[[], set[str]]:
    return our_shm_entries


@pytest.fixture(scope="session")
def bundled() -> Callable[[str], Path]:
    return bundled_simulator


@pytest.fixture
def python_simulator(tmp_path: Path) -> Callable[[str], List[str]]:
    """Writes a simulator script in Python and returns its command line."""

    def make(body: str) -> List[str]:
        script = tmp_path / f"simulator_{len(list(tmp_path.iterdir()))}.py"
        script.write_text("import os, sys, time\nimport numpy as np\nimport pybridge\n" + textwrap.dedent(body))
        return [sys.executable, str(script)]

    return make


@pytest.fixture(scope="session")
def built_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/ built as a standalone project that finds the *installed* CMake package."""
    build = tmp_path_factory.mktemp("examples-build")
    configure = [
        "cmake",
        "-S",
        str(REPO / "examples"),
        "-B",
        str(build),
        f"-Dpybridge_DIR={pybridge.cmake_dir()}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    for command in (configure, ["cmake", "--build", str(build), "--parallel", "2"]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return build
