"""The Python view of the shared-memory header agrees with the C header."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import pybridge
from pybridge import _native
from pybridge.protocol import (
    HEADER_DTYPE,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    Capability,
    ReplyStatus,
    RequestKind,
    State,
    Status,
)

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def c_view(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The layout and constants as a C99 compiler sees the *installed* headers."""
    exe = tmp_path_factory.mktemp("c-view") / "header_layout"
    compile_ = [
        "cc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror",
        f"-I{pybridge.paths.include_dir()}", str(HERE / "header_layout.c"), "-o", str(exe),
    ]  # fmt: skip
    subprocess.run(compile_, check=True)
    fields, constants, size = {}, {}, None
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        kind, *rest = line.split()
        if kind == "field":
            fields[rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "constant":
            constants[rest[0]] = int(rest[1])
        else:
            size = int(rest[0])
    return {"fields": fields, "constants": constants, "size": size}


def test_python_header_dtype_matches_c_offsets_and_sizes(c_view: dict) -> None:
    assert c_view["size"] == HEADER_SIZE == HEADER_DTYPE.itemsize == 1024
    python_fields = {name: (HEADER_DTYPE.fields[name][1], HEADER_DTYPE.fields[name][0].itemsize)
                     for name in HEADER_DTYPE.names}  # fmt: skip
    assert python_fields == c_view["fields"]


def test_python_enums_match_c_constants(c_view: dict) -> None:
    c = c_view["constants"]
    assert PROTOCOL_VERSION == c["PYBRIDGE_PROTOCOL_VERSION"]
    for enum, prefix in ((State, "PYBRIDGE_STATE_"), (RequestKind, "PYBRIDGE_REQUEST_"), (ReplyStatus, "PYBRIDGE_REPLY_")):
        assert {m.name: m.value for m in enum} == {k[len(prefix):]: v for k, v in c.items() if k.startswith(prefix)}
    # Every PYBRIDGE_<status> the C compiler knows (a new code added to pybridge.h only fails here if the
    # C test program prints it: header_layout.c lists them next to the enum).
    statuses = {k[len("PYBRIDGE_"):]: v for k, v in c.items() if k in {f"PYBRIDGE_{m.name}" for m in Status}}
    assert {m.name: m.value for m in Status} == statuses
    outcomes = {name: int(value) for name, value in _native.DriverPort.Outcome.__members__.items()}
    assert outcomes == {k[len("PYBRIDGE_OUTCOME_"):]: v for k, v in c.items() if k.startswith("PYBRIDGE_OUTCOME_")}
    assert Capability.GRADIENT == c["PYBRIDGE_CAP_GRADIENT"]
    assert Capability.RESIDUALS == c["PYBRIDGE_CAP_RESIDUALS"]


def test_python_enums_match_the_compiled_module() -> None:
    assert {m.name: m.value for m in State} == _native.STATES
    assert {m.name: m.value for m in RequestKind} == _native.REQUEST_KINDS
    assert {m.name: m.value for m in ReplyStatus} == _native.REPLY_STATUSES
    assert {m.name: m.value for m in Status} == _native.STATUS_CODES
    assert {m.name: m.value for m in Capability if m.value} == _native.CAPABILITIES


def test_magic_spells_pybridge() -> None:
    assert MAGIC.to_bytes(8, "little") == b"PYBRIDGE"


@pytest.mark.parametrize(
    ("n_params", "n_residuals", "capabilities", "max_batch"),
    [
        (1, 0, 0, 1),
        (3, 0, Capability.GRADIENT, 1),
        (3, 50, Capability.RESIDUALS, 1),
        (7, 5, Capability.GRADIENT | Capability.RESIDUALS, 1),
        (3, 0, Capability.GRADIENT, 16),
        (7, 5, Capability.GRADIENT | Capability.RESIDUALS, 3),
    ],
)
def test_layout_places_aligned_disjoint_regions(n_params: int, n_residuals: int, capabilities: int, max_batch: int) -> None:
    layout = _native.layout(n_params, n_residuals, int(capabilities), max_batch)
    regions = [(layout["params_offset"], 8 * n_params * max_batch)]
    if capabilities & Capability.GRADIENT:
        regions.append((layout["gradient_offset"], 8 * n_params * max_batch))
    else:
        assert layout["gradient_offset"] == 0
    if capabilities & Capability.RESIDUALS:
        regions.append((layout["residuals_offset"], 8 * n_residuals * max_batch))
    else:
        assert layout["residuals_offset"] == 0
    if max_batch > 1:  # a batch's costs have a region; a single cost travels in the reply line
        regions.append((layout["costs_offset"], 8 * max_batch))
    else:
        assert layout["costs_offset"] == 0
    end = HEADER_SIZE
    for offset, size in regions:
        assert offset % 64 == 0 and offset >= end
        end = offset + size
    assert end <= layout["segment_size"]


def test_layout_rejects_residuals_without_the_capability() -> None:
    with pytest.raises(ValueError, match="no layout"):
        _native.layout(3, 5, 0)
    with pytest.raises(ValueError):
        _native.layout(3, 0, 0x80)
    with pytest.raises(ValueError, match="batches of 4294967295"):  # a segment beyond 2^60 bytes
        _native.layout(2**32 - 1, 0, 0, 2**32 - 1)


def ready_header(n_params: int = 3, n_residuals: int = 0, capabilities: int = 0, max_batch: int = 1) -> np.ndarray:
    layout = _native.layout(n_params, n_residuals, capabilities, max_batch)
    segment = np.zeros(layout["segment_size"], dtype=np.uint8)
    header = segment[:HEADER_SIZE].view(HEADER_DTYPE)[0:1]
    values = dict(
        magic=MAGIC, version=PROTOCOL_VERSION, header_size=HEADER_SIZE, segment_size=layout["segment_size"],
        state=State.READY, n_params=n_params, n_residuals=n_residuals, capabilities=capabilities,
        params_offset=layout["params_offset"], gradient_offset=layout["gradient_offset"],
        residuals_offset=layout["residuals_offset"], max_batch=max_batch, costs_offset=layout["costs_offset"],
    )  # fmt: skip
    for key, value in values.items():
        header[key] = value
    return segment


def header_of(segment: np.ndarray) -> np.ndarray:
    return segment[:HEADER_SIZE].view(HEADER_DTYPE)


def test_validator_accepts_a_well_formed_ready_header() -> None:
    assert _native.validate_header(ready_header(4, 9, int(Capability.RESIDUALS))) is None
    assert _native.validate_header(ready_header(4, 9, int(Capability.RESIDUALS), max_batch=5)) is None


def test_validator_names_both_versions_on_a_mismatch() -> None:
    segment = ready_header()
    header_of(segment)["version"] = 99
    reason = _native.validate_header(segment)
    assert reason is not None and "version 99" in reason and f"version {PROTOCOL_VERSION}" in reason


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("magic", 12345, "not a pybridge channel"),
        ("header_size", 512, "header size"),
        ("segment_size", 1 << 40, "mapped"),
        ("state", 77, "unknown channel state"),
        ("params_offset", 8, "offsets"),
        ("capabilities", 0x80, "invalid shape"),
        ("n_params", 10_000, "regions need"),
        ("max_batch", 0, "invalid shape"),
        ("max_batch", 2, "offsets"),  # a batch needs a costs region
        ("max_batch", 2**32 - 1, "offsets"),
    ],
)
def test_validator_rejects_corrupt_fields(field: str, value: int, expected: str) -> None:
    segment = ready_header()
    header_of(segment)[field] = value
    reason = _native.validate_header(segment)
    assert reason is not None and expected in reason


def test_validator_rejects_a_buffer_shorter_than_the_header() -> None:
    reason = _native.validate_header(ready_header()[:100])
    assert reason is not None and "smaller than a pybridge header" in reason
