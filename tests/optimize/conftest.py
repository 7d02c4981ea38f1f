from __future__ import annotations

from pathlib import Path
from typing import Callable, List

import pytest

from pybridge.paths import bundled_simulator


@pytest.fixture(scope="session")
def rosenbrock() -> List[str]:
    return [str(bundled_simulator("pybridge-rosenbrock"))]


@pytest.fixture
def journal_path(tmp_path: Path) -> Callable[[str], Path]:
    return lambda name="calibration": tmp_path / f"{name}.db"
