"""The shim's simulator end, reached through the Python binding (the same C code a C simulator runs)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pybridge import ShimError, _native
from pybridge.core.channel import DriverChannel
from pybridge.protocol import Capability, RequestKind

CODES = _native.STATUS_CODES


def test_open_without_a_channel_name_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYBRIDGE_CHANNEL", raising=False)
    with pytest.raises(ShimError, match="PYBRIDGE_CHANNEL is not set") as info:
        _native.SimulatorChannel()
    assert info.value.code == CODES["E_NO_CHANNEL"]


def test_open_of_a_missing_channel() -> None:
    with pytest.raises(ShimError, match="no channel named") as info:
        _native.SimulatorChannel("pybridge-does-not-exist")
    assert info.value.code == CODES["E_NO_CHANNEL"]


@pytest.mark.parametrize("name", ["", "a/b", "x" * 300, "bad name"])
def test_open_rejects_invalid_names(name: str) -> None:
    with pytest.raises(ShimError, match="invalid channel name") as info:
        _native.SimulatorChannel(name)
    assert info.value.code == CODES["E_INVALID_ARGUMENT"]


def test_open_rejects_residuals_without_the_capability() -> None:
    driver = DriverChannel()
    try:
        with pytest.raises(ShimError, match="PYBRIDGE_CAP_RESIDUALS") as info:
            _native.SimulatorChannel(driver.name, 2, 5, 0)
        assert info.value.code == CODES["E_INVALID_ARGUMENT"]
    finally:
        driver.close()


class Handshake:
    """Drives the driver side by hand while a thread runs the simulator side."""

    def __init__(self, n_params: int, n_residuals: int = 0, capabilities: Capability = Capability.NONE) -> None:
        self.shape = (n_params, n_residuals, capabilities)
        self.driver = DriverChannel()
        self.endpoint: object = None
        self.error: BaseException | None = None

        def attach() -> None:
            try:
                self.endpoint = _native.SimulatorChannel(self.driver.name, n_params, n_residuals, int(capabilities))
            except BaseException as error:  # handed to the test thread
                self.error = error

        self.thread = threading.Thread(target=attach)
        self.thread.start()
        self.declaration = self.driver.wait_for_declaration(5.0, lambda: None)

    def finish(self) -> None:
        self.thread.join(5.0)
        assert not self.thread.is_alive()

    def accept(self):  # -> the simulator's endpoint
        self.driver.accept(*self.shape)
        self.finish()
        assert self.error is None
        return self.endpoint


def test_handshake_declaration_reaches_the_driver_and_requests_flow() -> None:
    hs = Handshake(3, 4, Capability.RESIDUALS)
    try:
        assert (hs.declaration.n_params, hs.declaration.n_residuals) == (3, 4)
        assert hs.declaration.capabilities == Capability.RESIDUALS
        endpoint = hs.accept()

        hs.driver.params[:] = [1.0, 2.0, 3.0]
        seq = hs.driver.request(hs.driver.params, RequestKind.RESIDUALS)
        got_seq, kind, x, gradient, residuals, _ = endpoint.wait()  # type: ignore[attr-defined]
        assert (got_seq, kind, gradient) == (seq, RequestKind.RESIDUALS, None)
        assert x.tolist() == [1.0, 2.0, 3.0] and not x.flags.writeable
        residuals[:] = np.arange(4.0)
        endpoint.reply_residuals()  # type: ignore[attr-defined]
        hs.driver.wait_reply(seq, 5.0, lambda: None)
        assert hs.driver.residuals is not None and hs.driver.residuals.tolist() == [0.0, 1.0, 2.0, 3.0]

        hs.driver.shutdown()
        assert endpoint.wait() is None  # type: ignore[attr-defined]
    finally:
        hs.driver.close()


def test_rejection_reaches_the_simulator_with_the_reason() -> None:
    hs = Handshake(3)
    try:
        hs.driver.reject("the caller wants 4 parameters")
        hs.finish()
        assert isinstance(hs.error, ShimError)
        assert hs.error.code == CODES["E_REJECTED"]
        assert "the caller wants 4 parameters" in str(hs.error)
    finally:
        hs.driver.close()


def test_reply_without_a_request_is_an_error_not_a_crash() -> None:
    hs = Handshake(2)
    try:
        endpoint = hs.accept()
        with pytest.raises(ShimError, match="no request to reply to") as info:
            endpoint.reply(1.0)  # type: ignore[attr-defined]
        assert info.value.code == CODES["E_INVALID_ARGUMENT"]
    finally:
        hs.driver.close()


def test_a_second_simulator_cannot_take_a_channel_in_use() -> None:
    hs = Handshake(2)
    try:
        hs.accept()
        with pytest.raises(ShimError, match="already taken"):
            _native.SimulatorChannel(hs.driver.name, 2)
    finally:
        hs.driver.close()


def test_a_late_reply_is_never_taken_for_a_newer_request() -> None:
    hs = Handshake(1)
    try:
        endpoint = hs.accept()
        hs.driver.params[:] = [1.0]
        first = hs.driver.request(hs.driver.params, RequestKind.COST)
        assert endpoint.wait()[0] == first  # type: ignore[attr-defined]
        # The driver gives up on `first` and asks again before the simulator answers it.
        hs.driver.params[:] = [2.0]
        second = hs.driver.request(hs.driver.params, RequestKind.COST)
        endpoint.reply(10.0)  # type: ignore[attr-defined]  # the late answer to `first`
        with pytest.raises(TimeoutError):
            hs.driver.wait_reply(second, 0.3, lambda: None)
        seq, _, x, _, _, _ = endpoint.wait()  # type: ignore[attr-defined]
        assert (seq, x[0]) == (second, 2.0)
        endpoint.reply(20.0)  # type: ignore[attr-defined]
        assert hs.driver.wait_reply(second, 5.0, lambda: None) == 20.0
    finally:
        hs.driver.close()
