"""Shared fixtures. Every test runs against the *installed* pybridge."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

import pybridge
from pybridge.paths import bundled_simulator
from pybridge.protocol import CHANNEL_PREFIX, name_owner

REPO = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")

# A shell starts a background job (`.ci/run &`, `nohup`) with SIGINT ignored, and every process the
# suite starts inherits that: the tests of Ctrl-C then sent theirs into the void and failed (six in a
# backgrounded run). Python's own handler restores what a terminal gives; children started from here
# get SIGINT's default back at exec, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


def our_processes() -> Dict[int, str]:
    """{pid: command line} of the live processes this test run started: those that descend from this
    process, and those whose environment names a channel this run made (a simulator, an MPI rank or a
    wrapper script's background job, reparented once its parent ended). The interpreter's own helpers
    (multiprocessing's resource tracker and fork server) end with it and are left out."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if not pybridge._native.process_alive(pid):
            continue  # ended (a zombie too: its parent has yet to reap it)
        try:
            ours = _descends_from_us(pid) or _made_by_this_run(_channel_of(pid))
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone while we looked, or not ours to read
        if ours and not any(helper in command for helper in _INTERPRETER_HELPERS):
            found[pid] = command
    return found


_INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _channel_of(pid: int) -> str:
    """The channel named in the environment of process ``pid`` ("" if none)."""
    prefix = f"{pybridge.protocol.CHANNEL_ENV}=".encode()
    for variable in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if variable.startswith(prefix):
            return variable[len(prefix) :].decode(errors="replace")
    return ""


def _made_by_this_run(name: str) -> bool:
    maker = name_owner(name)
    return maker is not None and (not pybridge._native.process_alive(maker) or _descends_from_us(maker))


@pytest.fixture(scope="session", autouse=True)
def nothing_left_after_the_suite() -> Iterator[None]:
    """After the whole suite, nothing of ours remains under /dev/shm, and no process it started lives
    on (it is given a few seconds: a simulator notices its driver's end within ~0.1 s, and Dask's
    workers take their time to shut down)."""
    before = our_shm_entries()
    running_before = set(our_processes())
    yield
    left = our_shm_entries() - before
    assert not left, f"the test suite left {sorted(left)} in /dev/shm"
    deadline = time.monotonic() + 10.0
    while True:
        stray = {pid: command for pid, command in our_processes().items() if pid not in running_before}
        if not stray or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not stray, f"processes the test suite started still run: {stray}"


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
def processes() -> Callable[[], Dict[int, str]]:
    return our_processes


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
