"""The transports `pybridge bench` compares: each opens a call(x) -> cost of the same C++ function."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, List

import numpy as np

from ...paths import bundled_simulator
from ...simulator import DEFAULT_SPIN_US, Simulator

Call = Callable[[np.ndarray], float]
SIZES = (8, 1_000, 100_000, 1_000_000)



def _program(name: str) -> str:
    return str(bundled_simulator(name))


# ---- transports: each yields a call(x) -> cost ---------------------------------------------------


class _Transport:
    name = ""

    def open(self, n: int, stack: ExitStack) -> Call:  # pragma: no cover - interface
        raise NotImplementedError


class _Pybridge(_Transport):
    def __init__(self, spin_us: int, name: str, in_place: bool = False) -> None:
        self.spin_us, self.name, self.in_place = spin_us, name, in_place

    def open(self, n: int, stack: ExitStack) -> Call:
        sim = stack.enter_context(Simulator([_program("pybridge-bench-sim")], n_params=n, spin_us=self.spin_us))
        if not self.in_place:
            return sim
        params = sim.params_view

        def call(x: np.ndarray) -> float:
            # A user who builds x in the shared region: here it is written once in advance, since the
            # benchmark's x never changes; each call then sends it without a copy.
            return sim(params)

        params[:] = np.full(n, 0.5)
        return call


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise RuntimeError("the benchmark server closed its end")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Pipe(_Transport):
    name = "pipe (persistent process)"

    def open(self, n: int, stack: ExitStack) -> Call:
        process = subprocess.Popen([_program("pybridge-bench-stream"), str(n), "pipe"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, bufsize=0)  # fmt: skip
        stack.callback(_stop, process)
        assert process.stdin is not None and process.stdout is not None
        write_fd, read_fd = process.stdin.fileno(), process.stdout.fileno()

        def call(x: np.ndarray) -> float:
            view = x.data.cast("B")
            while view:
                view = view[os.write(write_fd, view) :]
            return float(np.frombuffer(_read_exactly(read_fd, 8))[0])

        return call


class _Socket(_Transport):
    def __init__(self, family: str) -> None:
        self.family = family
        self.name = "Unix socket" if family == "unix" else "TCP loopback"

    def open(self, n: int, stack: ExitStack) -> Call:
        if self.family == "unix":
            path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "bench.sock")
            argv = [_program("pybridge-bench-stream"), str(n), "unix", path]
        else:
            argv = [_program("pybridge-bench-stream"), str(n), "tcp"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        stack.callback(_stop, process)
        assert process.stdout is not None
        announced = process.stdout.readline().strip()
        if self.family == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
        else:
            sock = socket.create_connection(("127.0.0.1", int(announced)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stack.callback(sock.close)
        reply = bytearray(8)

        def call(x: np.ndarray) -> float:
            sock.sendall(x.data.cast("B"))
            got = 0
            while got < 8:
                got += sock.recv_into(memoryview(reply)[got:])
            return float(np.frombuffer(reply)[0])

        return call


class _FileAndSubprocess(_Transport):
    name = "files + subprocess per call"

    def open(self, n: int, stack: ExitStack) -> Call:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        request, reply = folder / "x.bin", folder / "cost.bin"
        argv = [_program("pybridge-bench-stream"), str(n), "file", str(request), str(reply)]

        def call(x: np.ndarray) -> float:
            x.tofile(request)
            subprocess.run(argv, check=True)
            return float(np.fromfile(reply)[0])

        return call


class _InProcess(_Transport):
    def __init__(self, name: str, function: Call) -> None:
        self.name, self.function = name, function

    def open(self, n: int, stack: ExitStack) -> Call:
        return self.function


def _stop(process: subprocess.Popen) -> None:
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    try:
        process.wait(2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def all_transports() -> List[_Transport]:
    from ... import _bench  # type: ignore[attr-defined]  # built with the package; no stubs

    return [
        _Pybridge(DEFAULT_SPIN_US, f"pybridge (spin {DEFAULT_SPIN_US} us, then block)"),
        _Pybridge(0, "pybridge (pure blocking)"),
        _Pybridge(DEFAULT_SPIN_US, "pybridge, x written in place (no copy)", in_place=True),
        _Pipe(),
        _Socket("unix"),
        _Socket("tcp"),
        _FileAndSubprocess(),
        _InProcess("in-process C++ via pybind11", _bench.sum_squares),
        _InProcess("in-process numpy expression", lambda x: float(((x - 1.0) ** 2).sum())),
    ]
