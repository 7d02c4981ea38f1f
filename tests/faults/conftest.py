"""Fixtures of the fault-injection suite; its table is printed in pytest's summary."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

import pytest

from pybridge import paths

ROWS = pytest.StashKey[List[List[str]]]()
COLUMNS = ["scenario", "trials", "surfaced correctly", "hangs", "leaked /dev/shm entries", "wrong values",
           "slowest detection"]  # fmt: skip


@pytest.fixture(scope="session")
def fault_table(request: pytest.FixtureRequest) -> List[List[str]]:
    return request.config.stash.setdefault(ROWS, [])


@pytest.fixture(scope="session")
def faulty_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/faults/faulty_sim.c, built against the installed shim."""
    exe = tmp_path_factory.mktemp("faulty") / "faulty_sim"
    subprocess.run(
        ["cc", "-std=c99", "-O2", str(Path(__file__).with_name("faulty_sim.c")), "-o", str(exe),
         f"-I{paths.include_dir()}", f"-L{paths.lib_dir()}", f"-Wl,-rpath,{paths.lib_dir()}", "-lpybridge",
         "-lpthread", "-lm"],
        check=True,
    )  # fmt: skip
    return exe


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write_line("| " + " | ".join(COLUMNS) + " |")
    terminalreporter.write_line("|" + "---|" * len(COLUMNS))
    for row in rows:
        terminalreporter.write_line("| " + " | ".join(row) + " |")
