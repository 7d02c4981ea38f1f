"""The examples in the public docstrings run, and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "pybridge", "pybridge.simulator", "pybridge.serve", "pybridge.core.cleanup", "pybridge.paths",
    "pybridge.pool.pool", "pybridge.pool.finite_diff", "pybridge.optimize.params", "pybridge.optimize.solve",
    "pybridge.optimize.stopping", "pybridge.record.progress",
]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # child interpreters must not import the source tree
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name != "pybridge":
        assert result.attempted > 0
