"""`Simulator`: an external simulator as an ordinary Python callable.

This layer owns the simulator *process* (launch, liveness, stderr, restart,
shutdown), the failure policy, and the SciPy-facing calls; the shared memory
and semaphores belong to :class:`pybridge.channel.Channel`.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import tempfile
import weakref
from typing import IO, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native, cleanup
from .channel import Channel, Declaration
from .errors import (
    ChannelClosed,
    Error,
    EvaluationFailed,
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
#: Default spin budget. It must cover SciPy's own work between two
#: evaluations with room to spare — 8-55 us on a quiet machine (see
#: ../shared/MEASURED.md), measured at 100 us (p99 140 us) for L-BFGS-B at
#: n = 1000 when the host is busy — or the simulator sleeps and every
#: evaluation pays a 60-90 us wake-up. Not much more either: after each long
#: evaluation the simulator spins while the driver's vCPU wakes up. Waits that keep outlasting it drop to budget/16 spins by
#: themselves (SpinPolicy in cpp/src/wait.hpp). On one CPU a spinning waiter
#: only delays its peer, so there the default is to block.
DEFAULT_SPIN_US = 500 if (os.cpu_count() or 1) > 1 else 0
_NOT_SENT, _PENDING = 0, 1  # DriverPort.outcome


class _Unconnected:
    """Stands in for the native port while no READY channel is at hand: every fast call falls through."""

    answers = 0

    @staticmethod
    def _none(x: object) -> None:
        return None

    def fast_calls(self) -> tuple:
        return self._none, self._none


_UNCONNECTED = _Unconnected()


class CapabilityError(Error):
    """The simulator does not compute what was asked (no gradient, no residuals)."""


class Simulator(_native.FastCall):
    """An external simulator, evaluated through a shared-memory channel.

    ``Simulator(command)`` creates a channel, starts ``command`` with
    ``PYBRIDGE_CHANNEL`` set in its environment and waits for the handshake.
    The result is usable wherever SciPy wants a function. With the bundled
    Rosenbrock simulator (examples/rosenbrock), which computes gradients:

    >>> import numpy as np
    >>> from scipy.optimize import minimize
    >>> import pybridge
    >>> from pybridge.paths import bundled_simulator
    >>> with pybridge.Simulator([bundled_simulator("pybridge-rosenbrock")], n_params=4) as sim:
    ...     print(sim(np.ones(4)), sim([0.0, 0.0, 0.0, 0.0]))
    ...     result = minimize(sim.value_and_grad, np.zeros(4), jac=True, method="L-BFGS-B")
    0.0 3.0
    >>> np.round(result.x, 4)
    array([1., 1., 1., 1.])

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
        simulator is killed and :class:`EvaluationTimeout` is raised.
    start_timeout:
        Seconds the simulator may take to attach to the channel.
    restarts:
        How many times one evaluation may restart a simulator that crashed or
        timed out and try again (needs ``command``). 0: raise at once.
    penalty:
        If given, an evaluation that still fails (the simulator reported a
        failure, crashed or timed out beyond ``restarts``) returns this cost
        instead of raising: ``value_and_grad`` returns ``(penalty, zeros)`` and
        ``residuals`` a vector filled with ``penalty``. A dead simulator is
        restarted before the next evaluation.
    allow_nonfinite:
        By default a NaN or infinite cost, gradient or residual counts as a
        failed evaluation (:class:`EvaluationFailed`, or the penalty). True
        hands such values to the optimiser unchanged.
    spin_us:
        How long each side spins on the shared sequence numbers before it
        blocks on a semaphore, in microseconds. Spinning makes a round trip
        take about a microsecond instead of 60-90 us (a sleeping vCPU wakes
        slowly), at the price of up to this much CPU per wait; waits that
        keep outlasting it fall back to short spins by themselves. 0 blocks
        at once (lowest CPU use, slowest round trips).
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
        restarts: int = 0,
        penalty: Optional[float] = None,
        allow_nonfinite: bool = False,
        spin_us: int = DEFAULT_SPIN_US,
        cwd: Optional[PathLike] = None,
        env: Optional[Mapping[str, str]] = None,
        close_timeout: float = 5.0,
    ) -> None:
        self._requested_params = _optional_count("n_params", n_params)
        self._requested_residuals = _optional_count("n_residuals", n_residuals)
        if restarts < 0:
            raise ValueError(f"restarts must be >= 0, not {restarts}")
        if restarts and command is None:
            raise ValueError("restarts need a command to start the simulator again")
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.restarts = restarts
        self.penalty = None if penalty is None else float(penalty)
        self.allow_nonfinite = allow_nonfinite
        if not 0 <= spin_us < 2**32:
            raise ValueError(f"spin_us must be >= 0, not {spin_us}")
        self.spin_us = int(spin_us)
        # The native hot path of the current session, or a stand-in that
        # sends every call down the slow path; see _use_port.
        self._port: "_native.DriverPort | _Unconnected" = _UNCONNECTED
        self._fast_value_and_grad, self._fast_residuals = _UNCONNECTED.fast_calls()
        self._evaluations = 0  # answered by the slow path, or by ports of earlier sessions
        #: Evaluation attempts that failed (crash, timeout, reported failure, non-finite value).
        self.failures = 0
        #: Times the simulator was started again after a crash or timeout.
        self.restart_count = 0
        self._argv = None if command is None else _argv(command)
        self._cwd = cwd
        self._env = env
        self._broken: Optional[Error] = None  # why this Simulator can no longer evaluate
        self._restart_pending = False
        cleanup.clean()  # channels of drivers that died earlier; never a live one
        self._slot = _SessionSlot(_Session(Channel()), close_timeout)
        # Runs at close(), at garbage collection or at interpreter exit,
        # whichever comes first: a forgotten Simulator leaks nothing.
        self._finalizer = weakref.finalize(self, self._slot.release)
        if self._argv is not None:
            try:
                self._launch()
                self.connect(start_timeout)
            except BaseException:
                self.close()
                raise

    # ---- lifecycle -----------------------------------------------------------

    @property
    def channel_name(self) -> str:
        """The name to hand a simulator you start yourself (as PYBRIDGE_CHANNEL)."""
        return self._session.channel.name

    @property
    def pid(self) -> Optional[int]:
        """The simulator's process id, once it has attached (or once launched)."""
        session = self._session
        if session.process is not None:
            return session.process.pid
        return session.channel.simulator_pid or None

    @property
    def returncode(self) -> Optional[int]:
        """The launched simulator's exit status (None while it runs, or if it is not ours)."""
        return self._session.poll()

    def connect(self, timeout: Optional[float] = None) -> None:
        """Waits (up to ``timeout`` seconds, None = forever) for the simulator's handshake.

        Needed only for a simulator you started yourself; idempotent.
        """
        self._check_usable()
        session = self._session
        if session.connected:
            return
        try:
            declaration = session.channel.wait_for_declaration(timeout, lambda: self._check_started(session))
        except TimeoutError:
            raise SimulatorStartError(
                f"no simulator attached to channel {session.channel.name!r} within {timeout} s. Does it call "
                "pybridge_channel_open (or pybridge::Channel::open), and does it see PYBRIDGE_CHANNEL?",
                stderr_tail=session.stderr_tail(_STDERR_TAIL_LINES),
            ) from None
        n_params, n_residuals = self._reconcile(declaration)
        session.channel.accept(n_params, n_residuals, declaration.capabilities, self.spin_us)
        port = session.channel.port
        assert port is not None
        port.allow_nonfinite = self.allow_nonfinite
        session.connected = True
        self._use_port(port)

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
        return self._session.channel.n_params

    @property
    def n_residuals(self) -> int:
        self._ensure_connected()
        return self._session.channel.n_residuals

    @property
    def capabilities(self) -> Capability:
        self._ensure_connected()
        return self._session.channel.capabilities

    # ---- zero-copy views -------------------------------------------------------------

    @property
    def params_view(self) -> np.ndarray:
        """The shared parameter region itself, writable: fill it and call ``sim(sim.params_view)``
        to skip the one copy an evaluation otherwise makes (8 MB at 10^6 parameters).

        Belongs to the current simulator process: after a restart, fetch it again.
        """
        self._ensure_connected()
        return self._session.channel.params

    @property
    def gradient_view(self) -> np.ndarray:
        """The shared gradient region, read-only: the last evaluation's gradient, **overwritten by the
        next evaluation** (``value_and_grad`` returns a copy instead)."""
        return self._read_only(self._session_region("gradient", Capability.GRADIENT))

    @property
    def residuals_view(self) -> np.ndarray:
        """The shared residual region, read-only: the last evaluation's residuals, **overwritten by the
        next evaluation** (``residuals`` returns a copy instead)."""
        return self._read_only(self._session_region("residuals", Capability.RESIDUALS))

    def _session_region(self, name: str, capability: Capability) -> np.ndarray:
        if not self.capabilities & capability:
            raise CapabilityError(f"this simulator has no {name} region (it did not declare {capability!r})")
        region = getattr(self._session.channel, name)
        assert region is not None
        return region

    @staticmethod
    def _read_only(array: np.ndarray) -> np.ndarray:
        view = array.view()
        view.flags.writeable = False
        return view

    # ---- evaluations --------------------------------------------------------------

    # Each public call first tries the native fast path (one call into C++);
    # anything unusual (a list instead of an array, a slow or failed or
    # non-finite reply, no connection yet) continues on the Python slow path.

    @property
    def evaluations(self) -> int:
        """Evaluations answered (with a value, or with the penalty)."""
        return self._evaluations + self._port.answers

    def _use_port(self, port: "_native.DriverPort | _Unconnected") -> None:
        self._evaluations += self._port.answers
        self._port = port
        self._fast_value_and_grad, self._fast_residuals = port.fast_calls()
        self._use_fast_port(port if isinstance(port, _native.DriverPort) else None)

    # sim(x), "the cost at x", is served by the native base class: it calls
    # the port directly and comes here only when the port returns None.

    def _call_slow(self, x: "np.typing.ArrayLike") -> float:
        """The cost at ``x``. For a residual simulator, ``0.5 * sum(residuals**2)``."""
        if self.capabilities & Capability.RESIDUALS:
            residuals = self._evaluate(x, RequestKind.RESIDUALS)
            return self._penalty() if residuals is None else 0.5 * float(residuals @ residuals)
        cost = self._evaluate(x, RequestKind.COST)
        return self._penalty() if cost is None else float(cost)

    def value_and_grad(self, x: "np.typing.ArrayLike") -> Tuple[float, np.ndarray]:
        """``(cost, gradient)`` at ``x``, for ``scipy.optimize.minimize(..., jac=True)``.

        The gradient is a fresh array: the next evaluation does not overwrite it.
        """
        fast = self._fast_value_and_grad(x)
        if fast is not None:
            return fast
        if not self.capabilities & Capability.GRADIENT:
            raise CapabilityError(
                "this simulator does not compute gradients (it did not declare PYBRIDGE_CAP_GRADIENT); "
                "call minimize(sim, x0) without jac=True to let SciPy use finite differences"
            )
        cost = self._evaluate(x, RequestKind.GRADIENT)
        if cost is None:
            return self._penalty(), np.zeros(self.n_params)
        gradient = self._session.channel.gradient
        assert gradient is not None
        return float(cost), gradient.copy()

    def residuals(self, x: "np.typing.ArrayLike") -> np.ndarray:
        """The residual vector at ``x``, for ``scipy.optimize.least_squares``. A fresh array."""
        fast = self._fast_residuals(x)
        if fast is not None:
            return fast
        if not self.capabilities & Capability.RESIDUALS:
            raise CapabilityError(
                "this simulator does not return residuals (it did not declare PYBRIDGE_CAP_RESIDUALS); "
                "minimize its scalar cost instead"
            )
        residuals = self._evaluate(x, RequestKind.RESIDUALS)
        if residuals is None:
            return np.full(self.n_residuals, self._penalty())
        return residuals.copy()

    def _evaluate(self, x: "np.typing.ArrayLike", kind: RequestKind):  # -> float | ndarray | None
        """One evaluation under the failure policy; None means "failed, use the penalty".

        The first attempt takes over where the fast path stopped (it may have
        sent the request already, or even have its reply); retries start anew.
        """
        retries_left = self.restarts
        resume = True
        while True:
            try:
                result = self._round_trip(x, kind, resume)
                self._evaluations += 1
                return result
            except (SimulatorCrashed, EvaluationTimeout) as error:
                self.failures += 1
                resume = False
                self._use_port(_UNCONNECTED)
                if retries_left > 0:
                    retries_left -= 1
                    self._restart()
                    continue
                if self.penalty is not None and self._argv is not None:
                    self._restart_pending = True
                    self._evaluations += 1
                    return None
                self._broken = error
                raise
            except EvaluationFailed:
                self.failures += 1
                if self.penalty is not None:
                    self._evaluations += 1
                    return None
                raise

    def _round_trip(self, x: "np.typing.ArrayLike", kind: RequestKind, resume: bool):  # -> float | ndarray
        self._ensure_connected()
        session = self._session
        channel = session.channel
        port = channel.port
        assert port is not None
        if resume and port.outcome != _NOT_SENT:
            seq = port.seq
            if port.outcome == _PENDING:
                # The fast path has waited one poll period already: look at the peer before waiting more.
                self._check_running(session, seq)
        else:
            np.copyto(channel.params, self._checked_params(x))
            seq = channel.request(kind)
        try:
            cost = channel.wait_reply(seq, self.timeout, lambda: self._check_running(session, seq))
        except TimeoutError:
            session.kill()
            raise EvaluationTimeout(
                f"evaluation {seq} took longer than timeout={self.timeout} s; the simulator was killed"
                + ("" if self.restarts or self.penalty is not None else ". Raise the timeout, or pass restarts= "
                   "or penalty= to carry on past such evaluations")
            ) from None
        if kind == RequestKind.RESIDUALS:
            assert channel.residuals is not None
            self._check_finite("residual", channel.residuals, seq)
            return channel.residuals
        self._check_finite("cost", cost, seq)
        if kind == RequestKind.GRADIENT:
            assert channel.gradient is not None
            self._check_finite("gradient", channel.gradient, seq)
        return cost

    def _check_finite(self, what: str, values: "float | np.ndarray", seq: int) -> None:
        if self.allow_nonfinite:
            return
        if isinstance(values, float):
            if math.isfinite(values):
                return
            shown = repr(values)
        else:
            finite = np.isfinite(values)
            if finite.all():
                return
            bad = int(np.flatnonzero(~finite)[0])
            shown = f"[{bad}] = {values[bad]}"
        raise EvaluationFailed(
            f"the simulator returned a non-finite {what} {shown} in evaluation {seq}; pass penalty= to replace "
            "such values, or allow_nonfinite=True to hand them to the optimiser"
        )

    def _penalty(self) -> float:
        assert self.penalty is not None
        return self.penalty

    def _checked_params(self, x: "np.typing.ArrayLike") -> np.ndarray:
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"parameters must be real numbers, not an array of dtype {array.dtype}")
        n_params = self._session.channel.n_params
        if array.shape != (n_params,):
            raise ValueError(f"expected {n_params} parameters as a 1-D array, got shape {array.shape}")
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(f"parameters must be finite; x[{bad[0]}] = {array[bad[0]]} ({bad.size} non-finite)")
        return array

    # ---- process management -------------------------------------------------------

    @property
    def _session(self) -> "_Session":
        return self._slot.session

    def stderr_tail(self, lines: int = _STDERR_TAIL_LINES) -> str:
        """The last ``lines`` lines the launched simulator wrote to stderr."""
        return self._session.stderr_tail(lines)

    def _launch(self) -> None:
        assert self._argv is not None
        environment = dict(os.environ if self._env is None else self._env)
        environment[CHANNEL_ENV] = self.channel_name
        self._session.launch(self._argv, self._cwd, environment)

    def _restart(self) -> None:
        """Replaces a dead or hung simulator by a fresh one on a fresh channel."""
        self._use_port(_UNCONNECTED)
        self._slot.replace(_Session(Channel()))
        self.restart_count += 1
        self._launch()
        self.connect(self.start_timeout)

    def _reconcile(self, declaration: Declaration) -> Tuple[int, int]:
        """The agreed vector lengths; rejects the simulator (and raises) on a mismatch."""
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
            self._session.channel.reject(str(error))
            self._broken = error
            raise
        return n_params, n_residuals

    def _check_started(self, session: "_Session") -> None:
        returncode = session.poll()
        if returncode is not None:
            raise SimulatorCrashed(
                f"the simulator {_describe_exit(returncode)} before completing the handshake",
                returncode=returncode,
                stderr_tail=session.stderr_tail(_STDERR_TAIL_LINES),
            )

    def _check_running(self, session: "_Session", seq: int) -> None:
        if session.process is not None:
            returncode = session.poll()
            if returncode is None:
                return
            raise SimulatorCrashed(
                f"the simulator {_describe_exit(returncode)} during evaluation {seq}",
                returncode=returncode,
                stderr_tail=session.stderr_tail(_STDERR_TAIL_LINES),
            )
        pid = session.channel.simulator_pid
        if not _native.process_alive(pid):
            raise SimulatorCrashed(f"the simulator (pid {pid}) died during evaluation {seq}")

    def _check_usable(self) -> None:
        if self.closed:
            raise ChannelClosed("this Simulator is closed; create a new one")
        if self._broken is not None:
            raise ChannelClosed(
                f"this Simulator failed earlier ({type(self._broken).__name__}: {self._broken}); create a new one"
            ) from self._broken

    def _ensure_connected(self) -> None:
        self._check_usable()
        if self._restart_pending:
            self._restart_pending = False
            self._restart()
        elif not self._session.connected:
            self.connect(self.start_timeout)


class _Session:
    """One simulator process (if we launched it) with its channel and stderr file."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.connected = False
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.stderr: Optional[IO[bytes]] = None

    def launch(self, argv: Sequence[str], cwd: Optional[PathLike], env: Mapping[str, str]) -> None:
        # stderr goes to a file rather than a pipe: nobody has to drain it,
        # and its tail is there to quote when the simulator fails.
        self.stderr = tempfile.TemporaryFile(prefix="pybridge-stderr-")
        try:
            self.process = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stderr=self.stderr)
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

    def kill(self) -> None:
        """Kills (SIGKILL: a hung simulator may ignore gentler signals) and reaps the simulator."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            return
        pid = self.channel.simulator_pid  # started by the user: not ours to reap
        if pid and _native.process_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def release(self, close_timeout: float) -> None:
        # Only a simulator that attached can see the shutdown and leave its
        # loop; one that never did gets no grace period.
        attached = self.channel.simulator_pid != 0
        self.channel.shutdown()
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.wait(close_timeout if attached else 0)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(1.0)
                except subprocess.TimeoutExpired:
                    self.kill()
        self.channel.close()
        if self.stderr is not None:
            self.stderr.close()


class _SessionSlot:
    """The current session. Kept apart from :class:`Simulator` so that
    ``weakref.finalize`` can release it without keeping the Simulator alive."""

    def __init__(self, session: _Session, close_timeout: float) -> None:
        self.session = session
        self.close_timeout = close_timeout

    def replace(self, session: _Session) -> None:
        old, self.session = self.session, session
        old.kill()  # it crashed or hung: no grace period
        old.release(0)

    def release(self) -> None:
        self.session.release(self.close_timeout)


def _argv(command: Command) -> List[str]:
    if isinstance(command, (str, os.PathLike)):
        return [os.fspath(command)]
    argv = [os.fspath(part) for part in command]
    if not argv:
        raise ValueError("command is an empty sequence")
    return argv


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
        raise HandshakeError(f"the simulator does not declare its number of {what}; pass {keyword}= to Simulator")
    return declared or requested


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
