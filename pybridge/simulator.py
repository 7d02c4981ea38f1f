"""`Simulator`: an external simulator as an ordinary Python callable.

This layer owns the simulator *process* (launch, liveness, stderr, shutdown)
and the SciPy-facing calls; the shared memory and semaphores belong to
:class:`pybridge.channel.Channel`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import weakref
from typing import IO, Mapping, NoReturn, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from .channel import Channel, Declaration
from .errors import (
    ChannelClosed,
    Error,
    EvaluationTimeout,
    HandshakeError,
    SimulatorCrashed,
    SimulatorStartError,
)
from .protocol import CHANNEL_ENV, Capability, RequestKind

__all__ = ["Simulator", "CapabilityError"]

PathLike = Union[str, "os.PathLike[str]"]
Command = Union[PathLike, Sequence[PathLike]]

_STDERR_TAIL_LINES = 20


class CapabilityError(Error):
    """The simulator does not compute what was asked (no gradient, no residuals)."""


class Simulator:
    """An external simulator, evaluated through a shared-memory channel.

    ``Simulator(command)`` creates a channel, starts ``command`` with
    ``PYBRIDGE_CHANNEL`` set in its environment and waits for the handshake.
    The result is usable wherever SciPy wants a function::

        from scipy.optimize import minimize
        import pybridge

        with pybridge.Simulator(["./rosenbrock"], n_params=4) as sim:
            result = minimize(sim, [0.5] * 4, method="Nelder-Mead")
            result = minimize(sim.value_and_grad, [0.5] * 4, jac=True)   # if it computes gradients

    Parameters
    ----------
    command:
        The executable (a path), or its argument vector (a sequence: no shell
        is involved). ``None`` creates the channel without starting anything:
        start the simulator yourself (under ``mpirun``, a debugger, a batch
        system) with ``PYBRIDGE_CHANNEL`` set to :attr:`channel_name`, then
        call :meth:`connect` (the first evaluation also does).
    n_params, n_residuals:
        The vector lengths, if the simulator does not declare them itself. When
        both sides give a number they must agree, or :class:`HandshakeError`.
    timeout:
        Seconds one evaluation may take (None: no limit). On expiry the
        simulator is stopped and :class:`EvaluationTimeout` is raised.
    start_timeout:
        Seconds the simulator may take to attach to the channel.
    cwd, env:
        Working directory and environment of the launched process (default:
        ours). ``PYBRIDGE_CHANNEL`` is added to ``env``.
    close_timeout:
        Seconds :meth:`close` waits for the simulator to leave its loop before
        it is terminated.

    Only one thread may evaluate a given Simulator at a time.
    """

    def __init__(
        self,
        command: Optional[Command] = None,
        *,
        n_params: Optional[int] = None,
        n_residuals: Optional[int] = None,
        timeout: Optional[float] = None,
        start_timeout: float = 30.0,
        cwd: Optional[PathLike] = None,
        env: Optional[Mapping[str, str]] = None,
        close_timeout: float = 5.0,
    ) -> None:
        self._requested_params = _optional_count("n_params", n_params)
        self._requested_residuals = _optional_count("n_residuals", n_residuals)
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.evaluations = 0
        self._failure: Optional[Error] = None
        self._connected = False
        self._resources = _Resources(Channel(), close_timeout)
        # Runs at close(), at garbage collection or at interpreter exit,
        # whichever comes first: a forgotten Simulator leaks nothing.
        self._finalizer = weakref.finalize(self, self._resources.release)
        if command is not None:
            try:
                self._launch(command, cwd, env)
                self.connect(start_timeout)
            except BaseException:
                self.close()
                raise

    # ---- lifecycle -----------------------------------------------------------

    @property
    def channel_name(self) -> str:
        """The name to hand a simulator you start yourself (as PYBRIDGE_CHANNEL)."""
        return self._resources.channel.name

    @property
    def pid(self) -> Optional[int]:
        """The simulator's process id, once it has attached."""
        if self._resources.process is not None:
            return self._resources.process.pid
        return self._resources.channel.simulator_pid if self._connected else None

    @property
    def returncode(self) -> Optional[int]:
        """The launched simulator's exit status (None while it runs, or if it is not ours)."""
        process = self._resources.process
        return None if process is None else process.poll()

    def connect(self, timeout: Optional[float] = None) -> None:
        """Waits (up to ``timeout`` seconds, None = forever) for the simulator's handshake.

        Needed only for a simulator you started yourself; idempotent.
        """
        if self._connected:
            return
        self._check_usable()
        channel = self._resources.channel
        try:
            declaration = channel.wait_for_declaration(timeout, self._check_started)
        except TimeoutError:
            raise SimulatorStartError(
                f"no simulator attached to channel {channel.name!r} within {timeout} s. Does it call "
                "pybridge_channel_open (or pybridge::Channel::open), and does it see PYBRIDGE_CHANNEL?",
                stderr_tail=self.stderr_tail(),
            ) from None
        n_params, n_residuals = self._reconcile(declaration)
        channel.accept(n_params, n_residuals, declaration.capabilities)
        self._connected = True

    def close(self) -> None:
        """Stops the simulator and removes every segment and semaphore of the channel."""
        self._finalizer()

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    # ---- what it computes ------------------------------------------------------

    @property
    def n_params(self) -> int:
        self._ensure_connected()
        return self._resources.channel.n_params

    @property
    def n_residuals(self) -> int:
        self._ensure_connected()
        return self._resources.channel.n_residuals

    @property
    def capabilities(self) -> Capability:
        self._ensure_connected()
        return self._resources.channel.capabilities

    # ---- evaluations --------------------------------------------------------------

    def __call__(self, x: "np.typing.ArrayLike") -> float:
        """The cost at ``x``. For a residual simulator, ``0.5 * sum(residuals**2)``."""
        if self.capabilities & Capability.RESIDUALS:
            residuals = self._evaluate_residuals(x)
            return 0.5 * float(residuals @ residuals)
        return self._evaluate(x, RequestKind.COST)

    def value_and_grad(self, x: "np.typing.ArrayLike") -> Tuple[float, np.ndarray]:
        """``(cost, gradient)`` at ``x``, for ``scipy.optimize.minimize(..., jac=True)``.

        The gradient is a fresh array: the next evaluation does not overwrite it.
        """
        if not self.capabilities & Capability.GRADIENT:
            raise CapabilityError(
                "this simulator does not compute gradients (it did not declare PYBRIDGE_CAP_GRADIENT); "
                "call minimize(sim, x0) without jac=True to let SciPy use finite differences"
            )
        cost = self._evaluate(x, RequestKind.GRADIENT)
        gradient = self._resources.channel.gradient
        assert gradient is not None
        return cost, gradient.copy()

    def residuals(self, x: "np.typing.ArrayLike") -> np.ndarray:
        """The residual vector at ``x``, for ``scipy.optimize.least_squares``. A fresh array."""
        return self._evaluate_residuals(x).copy()

    def _evaluate_residuals(self, x: "np.typing.ArrayLike") -> np.ndarray:
        if not self.capabilities & Capability.RESIDUALS:
            raise CapabilityError(
                "this simulator does not return residuals (it did not declare PYBRIDGE_CAP_RESIDUALS); "
                "minimize its scalar cost instead"
            )
        self._evaluate(x, RequestKind.RESIDUALS)
        residuals = self._resources.channel.residuals
        assert residuals is not None
        return residuals

    def _evaluate(self, x: "np.typing.ArrayLike", kind: RequestKind) -> float:
        self._ensure_connected()
        channel = self._resources.channel
        np.copyto(channel.params, self._checked_params(x))
        seq = channel.request(kind)
        try:
            cost = channel.wait_reply(seq, self.timeout, lambda: self._check_running(seq))
        except TimeoutError:
            self._resources.stop_process()
            self._fail(
                EvaluationTimeout(
                    f"evaluation {seq} took longer than timeout={self.timeout} s; the simulator was stopped. "
                    "Raise the timeout, or create a new Simulator to continue."
                )
            )
        self.evaluations += 1
        return cost

    def _checked_params(self, x: "np.typing.ArrayLike") -> np.ndarray:
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"parameters must be real numbers, not an array of dtype {array.dtype}")
        n_params = self._resources.channel.n_params
        if array.shape != (n_params,):
            raise ValueError(f"expected {n_params} parameters as a 1-D array, got shape {array.shape}")
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(f"parameters must be finite; x[{bad[0]}] = {array[bad[0]]} ({bad.size} non-finite)")
        return array

    # ---- process management -------------------------------------------------------

    def stderr_tail(self, lines: int = _STDERR_TAIL_LINES) -> str:
        """The last ``lines`` lines the launched simulator wrote to stderr."""
        return self._resources.stderr_tail(lines)

    def _launch(self, command: Command, cwd: Optional[PathLike], env: Optional[Mapping[str, str]]) -> None:
        if isinstance(command, (str, os.PathLike)):
            argv = [os.fspath(command)]
        else:
            argv = [os.fspath(part) for part in command]
            if not argv:
                raise ValueError("command is an empty sequence")
        environment = dict(os.environ if env is None else env)
        environment[CHANNEL_ENV] = self.channel_name
        self._resources.launch(argv, cwd, environment)

    def _reconcile(self, declaration: Declaration) -> Tuple[int, int]:
        """The agreed vector lengths; rejects the simulator (and raises) on a mismatch."""
        channel = self._resources.channel
        try:
            n_params = _agree("parameters", "n_params", declaration.n_params, self._requested_params)
            n_residuals = 0
            if declaration.capabilities & Capability.RESIDUALS:
                n_residuals = _agree("residuals", "n_residuals", declaration.n_residuals, self._requested_residuals)
            elif self._requested_residuals:
                raise HandshakeError(
                    f"n_residuals={self._requested_residuals} was requested but the simulator does not "
                    "return residuals (it did not declare PYBRIDGE_CAP_RESIDUALS)"
                )
        except HandshakeError as error:
            channel.reject(str(error))
            self._fail(error)
        return n_params, n_residuals

    def _check_started(self) -> None:
        returncode = self._resources.poll()
        if returncode is not None:
            raise SimulatorStartError(
                f"the simulator {_describe_exit(returncode)} before completing the handshake",
                returncode=returncode,
                stderr_tail=self.stderr_tail(),
            )

    def _check_running(self, seq: int) -> None:
        resources = self._resources
        if resources.process is not None:
            returncode = resources.poll()
            if returncode is None:
                return
            self._fail(
                SimulatorCrashed(
                    f"the simulator {_describe_exit(returncode)} during evaluation {seq}",
                    returncode=returncode,
                    stderr_tail=self.stderr_tail(),
                )
            )
        pid = resources.channel.simulator_pid
        if not _native.process_alive(pid):
            self._fail(SimulatorCrashed(f"the simulator (pid {pid}) died during evaluation {seq}"))

    def _fail(self, error: Error) -> NoReturn:
        self._failure = error
        raise error

    def _check_usable(self) -> None:
        if self.closed:
            raise ChannelClosed("this Simulator is closed; create a new one")
        if self._failure is not None:
            raise ChannelClosed(
                f"this Simulator failed earlier ({type(self._failure).__name__}); create a new one"
            ) from self._failure

    def _ensure_connected(self) -> None:
        self._check_usable()
        if not self._connected:
            self.connect(self.start_timeout)


class _Resources:
    """Everything that must be released: the channel, the process, its stderr file.

    Kept apart from :class:`Simulator` so that ``weakref.finalize`` can
    release it without keeping the Simulator alive.
    """

    def __init__(self, channel: Channel, close_timeout: float) -> None:
        self.channel = channel
        self.close_timeout = close_timeout
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.stderr: Optional[IO[bytes]] = None

    def launch(self, argv: Sequence[str], cwd: Optional[PathLike], env: Mapping[str, str]) -> None:
        # stderr goes to a file rather than a pipe: nobody has to drain it,
        # and its tail is there to quote when the simulator fails.
        self.stderr = tempfile.TemporaryFile(prefix="pybridge-stderr-")
        try:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stderr=self.stderr
            )
        except OSError as error:
            raise SimulatorStartError(
                f"cannot start simulator {argv[0]!r}: {error.strerror or error}. "
                "Check the path and that the file is executable."
            ) from error

    def poll(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def stderr_tail(self, lines: int) -> str:
        if self.stderr is None or self.stderr.closed:
            return ""
        self.stderr.flush()
        size = self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, size - 8192))
        text = self.stderr.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop_process(self) -> None:
        """Terminates, then kills, and always reaps the simulator."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def release(self) -> None:
        # Only a simulator that attached can see the shutdown and leave its
        # loop; one that never did gets no grace period.
        attached = self.channel.simulator_pid != 0
        self.channel.shutdown()
        if self.process is not None:
            try:
                self.process.wait(self.close_timeout if attached else 0)
            except subprocess.TimeoutExpired:
                self.stop_process()
        self.channel.close()
        if self.stderr is not None:
            self.stderr.close()


def _optional_count(name: str, value: Optional[int]) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return int(value)


def _agree(what: str, keyword: str, declared: int, requested: int) -> int:
    if declared and requested and declared != requested:
        raise HandshakeError(f"the simulator declares {declared} {what} but {keyword}={requested} was requested")
    if not declared and not requested:
        raise HandshakeError(
            f"the simulator does not declare its number of {what}; pass {keyword}= to Simulator"
        )
    return declared or requested


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
