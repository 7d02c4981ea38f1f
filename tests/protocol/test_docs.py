"""docs/protocol.md describes the header that the C compiler actually lays out."""

from __future__ import annotations

import re
from pathlib import Path

from pybridge.protocol import HEADER_DTYPE

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_layout_table_matches_the_header() -> None:
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`(\w+)`\s*\|", DOC.read_text(), re.MULTILINE)
    documented = {name: int(offset) for offset, name in rows}
    actual = {name: HEADER_DTYPE.fields[name][1] for name in HEADER_DTYPE.names}
    assert documented == actual
