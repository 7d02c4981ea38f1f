"""`Simulator`: an external simulator as an ordinary Python callable.

This layer is the SciPy-facing face: argument checks, the evaluation loop
under the failure policy, and the states a Simulator goes through. The
process session is :mod:`pybridge.core.process`, the OS objects
:mod:`pybridge.core.channel`, the policy :mod:`pybridge.core.policy`; the hot
path is the native base class, which comes here only when it declines.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from . import _native
from .core import cleanup
from .core.channel import Declaration, DriverChannel
from .core.policy import Decision, FailurePolicy
from .core.process import SimulatorProcess, describe_exit, terminate
from .errors import (
    CapabilityError,
    ChannelClosed,
    Error,
    EvaluationFailed,
    EvaluationTimeout,
    HandshakeError,
    InheritedSimulatorError,
    SimulatorCrashed,
    SimulatorStartError,
)
from .protocol import CHANNEL_ENV, Capability, RequestKind

__all__ = ["Simulator", "Outcome", "CapabilityError", "DEFAULT_SPIN_US"]

PathLike = Union[str, "os.PathLike[str]"]
Command = Union[PathLike, Sequence[PathLike]]

_STDERR_TAIL_LINES = 20


def _usable_cpus() -> int:
    """How many CPUs this process may run on: its affinity mask where the platform has one."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Default spin budget. It must cover SciPy's own work between two
#: evaluations with room to spare — 8-55 us on a quiet machine (see
#: ../shared/MEASURED.md), measured at 100 us (p99 140 us) for L-BFGS-B at
#: n = 1000 when the host is busy — or the simulator sleeps and every
#: evaluation pays a 60-90 us wake-up. Not much more either: after each long
#: evaluation the simulator spins while the driver's vCPU wakes up. Waits that keep
#: outlasting it drop to budget/16 spins by themselves (SpinPolicy in cpp/src/wait.hpp).
#: A process that may run on one CPU only blocks by default (read once, at import: a job bound to
#: one core by taskset, ``mpirun --bind-to core`` or a cpuset): its simulators inherit the binding,
#: and its own waiting threads (a pool's) would spin against each other. Asked for explicitly, a spin
#: there serves a simulator bound to another CPU; with one confined to the same CPU neither side
#: spins whatever was asked, which the channel decides as it accepts each simulator process
#: (cpp/src/driver.cpp).
DEFAULT_SPIN_US = 500 if _usable_cpus() > 1 else 0
_NOT_SENT, _PENDING = _native.DriverPort.Outcome.NOT_SENT, _native.DriverPort.Outcome.PENDING


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
        is involved). It runs in a session of its own, so that a
        wrapper (``mpirun``, ``sh run.sh``) is stopped together with
        everything it started. ``None`` creates the channel without starting
        anything: start the simulator yourself (under ``mpirun``, a debugger,
        a batch system) with ``PYBRIDGE_CHANNEL`` set to :attr:`channel_name`,
        then call :meth:`connect` (the first evaluation also does).
    n_params, n_residuals:
        The vector lengths, if the simulator does not declare them itself. When
        both sides give a number they must agree, or :class:`HandshakeError`.
    timeout:
        Seconds one evaluation may take (None: no limit). On expiry the
        simulator's whole session is terminated and :class:`EvaluationTimeout`
        is raised. The wait ends within about a millisecond of the deadline.
    start_timeout:
        Seconds the simulator may take to attach to the channel.
    restarts:
        How many times one evaluation may start a fresh simulator after a
        crash, a timeout or a launch that failed, and try again (needs
        ``command``). Launches that fail are retried after a back-off (0.1 s,
        doubling). 0: raise at once.
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
    max_batch:
        The most parameter vectors to send in one request to a simulator that
        declares batches (a vectorised or GPU code, ``max_batch`` in its
        declaration); None takes what it declares. :meth:`vectorized` and a
        pool's ``map`` pack requests to match. A simulator without batches
        takes one vector per request whatever this says.
    spin_us:
        How long each side spins on the shared sequence numbers before it
        blocks on a semaphore, in microseconds. Spinning makes a round trip
        take about a microsecond instead of 60-90 us (a sleeping vCPU wakes
        slowly), at the price of up to this much CPU per wait; waits that
        keep outlasting it fall back to short spins by themselves. 0 blocks
        at once (lowest CPU use, slowest round trips). The default is 500,
        or 0 for a process that may run on one CPU only (a job bound to one
        core). A driver and simulator that may both run on one and the same
        CPU only never spin, whatever this says: there a spin only delays
        the peer.
    forecast:
        For evaluations of milliseconds: wait for a reply by blocking until
        shortly before the time recent replies suggest, then spinning through
        it (a few per cent of a core instead of a wake-up per evaluation; see
        docs/performance.md). False keeps plain spin-then-block. No effect
        with ``spin_us=0``.
    cwd, env:
        Working directory and environment of the launched process (default:
        ours). ``PYBRIDGE_CHANNEL`` is added to ``env``, and
        ``OMPI_MCA_odls_base_sigkill_timeout=0`` unless ``env`` sets it (an
        Open MPI job then ends at once when one of its ranks dies, instead of
        a second later).
    close_timeout:
        Seconds :meth:`close` waits for the simulator to leave its loop before
        its session is terminated.

    Threads may share a Simulator: evaluations take turns (each holds it from
    request to reply). It cannot be used in a child process it was inherited
    by through ``fork()`` (:class:`InheritedSimulatorError`), nor pickled.
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
        max_batch: Optional[int] = None,
        spin_us: int = DEFAULT_SPIN_US,
        forecast: bool = True,
        cwd: Optional[PathLike] = None,
        env: Optional[Mapping[str, str]] = None,
        close_timeout: float = 5.0,
    ) -> None:
        # Everything is checked before anything is created or started.
        self._requested_params = _optional_count("n_params", n_params)
        self._requested_residuals = _optional_count("n_residuals", n_residuals)
        self._requested_batch = _optional_count("max_batch", max_batch)
        self.timeout = _seconds("timeout", timeout, none_ok=True)
        self.start_timeout = _seconds("start_timeout", start_timeout)
        close_timeout = _seconds("close_timeout", close_timeout, zero_ok=True)
        self._policy = FailurePolicy(restarts, penalty, bool(allow_nonfinite))
        if restarts and command is None:
            raise ValueError("restarts need a command to start the simulator again")
        if isinstance(spin_us, bool) or not isinstance(spin_us, (int, np.integer)) or not 0 <= spin_us < 2**32:
            raise ValueError(f"spin_us must be a whole number of microseconds >= 0, not {spin_us!r}")
        self.spin_us = int(spin_us)
        self.forecast = bool(forecast)
        self._argv = None if command is None else _argv(command)
        if cwd is not None and not os.path.isdir(cwd):
            raise ValueError(f"cwd {os.fspath(cwd)!r} is not a folder: the simulator would be started there")
        if env is not None:
            for key, value in env.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError(f"env values must be strings: {key}={value!r}")
        self._cwd = cwd
        self._env = env
        self._owner_pid = os.getpid()
        self._answered_by_old_ports = 0  # fast-path answers of sessions that have ended
        self._port: Optional[_native.DriverPort] = None
        self._evaluations = 0  # answered by the slow path
        #: Evaluation attempts that failed (crash, timeout, failed launch, reported failure, non-finite value).
        self.failures = 0
        #: Times a fresh simulator was started after a crash, a timeout or a failed launch.
        self.restart_count = 0
        self._failed: Optional[Error] = None
        self._restart_pending = False
        # Set by close(): an evaluation in flight in another thread ends at its next look at the
        # simulator (every POLL_PERIOD) instead of holding the evaluation lock until it is answered.
        self._closing = False
        # (n_params, n_residuals, capabilities, max_batch) agreed at the first handshake; every later
        # simulator process of this Simulator must agree to the same.
        self._agreed: Optional[Tuple[int, int, Capability, int]] = None
        self._set_fallbacks(Simulator._cost_slow, Simulator._value_and_grad_slow, Simulator._residuals_slow)
        cleanup.clean_once()  # channels of drivers that died earlier; never a live one, never an error
        self._slot = _SessionSlot(_Session(self._new_channel()), close_timeout, self._owner_pid)
        # Runs at close(), at garbage collection or at interpreter exit,
        # whichever comes first: a forgotten Simulator leaks nothing.
        self._finalizer = weakref.finalize(self, self._slot.release)
        _LIVE.add(self)
        if self._argv is not None:
            try:
                self._start_with_retries()
            except BaseException:
                self.close()
                raise

    # ---- lifecycle -----------------------------------------------------------

    @property
    def command(self) -> Optional[List[str]]:
        """The simulator's argument vector (None when you start it yourself)."""
        return None if self._argv is None else list(self._argv)

    @property
    def channel_name(self) -> str:
        """The name to hand a simulator you start yourself (as PYBRIDGE_CHANNEL)."""
        return self._session.channel.name

    @property
    def pid(self) -> Optional[int]:
        """The simulator's process id: the launched process (the leader of its group), or the pid a
        simulator you started declared when it attached; None before that."""
        session = self._session
        if session.process is not None:
            return session.process.pid
        return session.channel.simulator_pid or None

    @property
    def returncode(self) -> Optional[int]:
        """The launched simulator's exit status (None while it runs, or if it is not ours)."""
        process = self._session.process
        return None if process is None else process.exit_status()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or the Simulator was garbage-collected)."""
        return not self._finalizer.alive

    @property
    def failed(self) -> Optional[Error]:
        """The error that left this Simulator unusable, or None.

        Set only when an evaluation failed under the default policy (no
        ``restarts``, no ``penalty``), or when the handshake was refused: every
        later call then raises :class:`ChannelClosed`. Under a policy that
        recovers, an error is raised for the evaluation that failed and the
        next call starts a fresh simulator.
        """
        return self._failed

    def connect(self, timeout: Optional[float] = None) -> None:
        """Waits (up to ``timeout`` seconds, None = forever) for the simulator's handshake.

        Needed only for a simulator you started yourself; idempotent.
        """
        self._locked(lambda: self._connect(timeout))

    def close(self) -> None:
        """Stops the simulator and removes every segment and semaphore of the channel.

        The channel's objects are removed first, so an interrupt (Ctrl-C) while
        waiting for the simulator to leave its loop cannot leave them behind;
        the simulator's session is then terminated whatever happens. An evaluation
        another thread has in flight ends with :class:`ChannelClosed` (within a poll
        period) rather than keep close() waiting for its answer: on a hung simulator
        without a timeout it would never come.
        """
        self._closing = True
        self._locked(self._finalizer)

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(
            "a pybridge.Simulator cannot be pickled: it owns a simulator process and shared memory of this "
            "process. Send parameter vectors to your workers and create a Simulator in each of them"
        )

    # ---- what it computes ------------------------------------------------------

    @property
    def n_params(self) -> int:
        return self._shape()[0]

    @property
    def n_residuals(self) -> int:
        return self._shape()[1]

    @property
    def capabilities(self) -> Capability:
        return self._shape()[2]

    @property
    def max_batch(self) -> int:
        """Parameter vectors one request carries at most: 1, unless the simulator declared batches."""
        return self._shape()[3]

    def _shape(self) -> Tuple[int, int, Capability, int]:
        if self._agreed is None:
            self._locked(self._ensure_connected)
        assert self._agreed is not None
        return self._agreed

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
        return _read_only(self._session_region("gradient", Capability.GRADIENT))

    @property
    def residuals_view(self) -> np.ndarray:
        """The shared residual region, read-only: the last evaluation's residuals, **overwritten by the
        next evaluation** (``residuals`` returns a copy instead)."""
        return _read_only(self._session_region("residuals", Capability.RESIDUALS))

    def _session_region(self, name: str, capability: Capability) -> np.ndarray:
        if not self.capabilities & capability:
            raise CapabilityError(f"this simulator has no {name} region (it did not declare {capability!r})")
        region = getattr(self._session.channel, name)
        assert region is not None
        return region

    # ---- evaluations --------------------------------------------------------------

    if TYPE_CHECKING:  # served by the native base class (_native.FastCall); typed here for checkers

        def __call__(self, x: "np.typing.ArrayLike") -> float:
            """The cost at ``x`` (for a residual simulator, ``0.5 * sum(residuals**2)``)."""

        def value_and_grad(self, x: "np.typing.ArrayLike") -> Tuple[float, np.ndarray]:
            """``(cost, gradient)`` at ``x``, for ``minimize(..., jac=True)``; the gradient is a fresh array."""

        def residuals(self, x: "np.typing.ArrayLike") -> np.ndarray:
            """The residual vector at ``x``, for ``least_squares``; a fresh array."""

    # sim(x), value_and_grad(x) and residuals(x) are served by the native base
    # class: it holds the evaluation lock, tries the port, and calls the
    # *_slow function registered for the call when the port declines (a list
    # instead of an array, a slow or failed or non-finite reply, no connection
    # yet). The slow path runs under the same lock.

    @property
    def evaluations(self) -> int:
        """Evaluations answered (with a value, or with the penalty)."""
        port = self._port
        return self._evaluations + self._answered_by_old_ports + (port.answers if port is not None else 0)

    def _cost_slow(self, x: "np.typing.ArrayLike") -> float:
        """The cost at ``x``. For a residual simulator, ``0.5 * sum(residuals**2)``."""
        self._check_usable()
        cost = self._evaluate(x, RequestKind.COST)
        return self._penalty() if cost is None else float(cost)

    def _value_and_grad_slow(self, x: "np.typing.ArrayLike") -> Tuple[float, np.ndarray]:
        self._check_usable()
        cost = self._evaluate(x, RequestKind.GRADIENT)
        if cost is None:
            return self._penalty(), np.zeros(self.n_params)  # known: a penalty follows a handshake
        gradient = self._session.channel.gradient
        assert gradient is not None
        return float(cost), gradient.copy()

    def _residuals_slow(self, x: "np.typing.ArrayLike") -> np.ndarray:
        self._check_usable()
        residuals = self._evaluate(x, RequestKind.RESIDUALS)
        if residuals is None:
            return np.full(self.n_residuals, self._penalty())
        return residuals.copy()

    def _evaluate(self, x: "np.typing.ArrayLike", kind: RequestKind):  # -> float | ndarray | None
        """One evaluation under the failure policy; None means "failed, use the penalty".

        The first attempt takes over where the fast path stopped (it may have
        sent the request already, or even have its reply); retries start anew.
        """
        return self._under_policy(lambda resume: self._round_trip(x, kind, resume), 1)

    def _under_policy(self, round_trip: Callable[[bool], Any], count: int, resume: bool = True) -> Any:
        """``round_trip(resume)`` — one request of ``count`` evaluations — under the failure policy:
        its result, None for "failed, use the penalty", or the error raised. The first attempt resumes
        the request in flight unless ``resume`` is False; retries start anew."""
        retries_left = self._policy.restarts
        failed_launches = 0
        while True:
            starting = True
            try:
                self._ensure_connected()
                starting = False
                result = round_trip(resume)
                self._evaluations += count
                return result
            except (SimulatorCrashed, EvaluationTimeout, SimulatorStartError) as error:
                self.failures += count
                resume = False
                self._drop_session()
                decision = self._policy.decide(error, retries_left, can_restart=self._argv is not None)
                if decision is Decision.RESTART:
                    retries_left -= 1
                    failed_launches = failed_launches + 1 if starting else 0
                    time.sleep(self._policy.backoff(failed_launches))
                    continue
                if decision is Decision.PENALTY:
                    self._evaluations += count
                    return None
                if not (self._policy.recovers and self._argv is not None):
                    self._failed = error
                raise
            except EvaluationFailed as error:
                self.failures += count
                if self._policy.decide(error, retries_left, self._argv is not None) is Decision.PENALTY:
                    self._evaluations += count
                    return None
                raise

    def _round_trip(self, x: "np.typing.ArrayLike", kind: RequestKind, resume: bool):  # -> float | ndarray
        self._check_capability(kind)
        session = self._session
        channel = session.channel
        port = channel.port
        assert port is not None
        # The cost of a residual simulator is 0.5 * sum(r**2) of its residuals.
        cost_of_residuals = kind == RequestKind.COST and bool(channel.capabilities & Capability.RESIDUALS)
        wire_kind = RequestKind.RESIDUALS if cost_of_residuals else kind
        if resume and port.outcome != _NOT_SENT:
            seq = port.seq
            if port.outcome == _PENDING:
                # The fast path has waited one poll period already: look at the peer before waiting more.
                self._check_running(session, seq)
        else:
            seq = channel.request(_as_params(x), wire_kind)
        cost = self._wait_reply(seq)
        if wire_kind == RequestKind.RESIDUALS:
            assert channel.residuals is not None
            self._check_finite("residual", channel.residuals, seq)
            if not cost_of_residuals:
                return channel.residuals
            cost = _native.residual_cost(channel.residuals)  # the fast path's own arithmetic
        self._check_finite("cost", cost, seq)
        if kind == RequestKind.GRADIENT:
            assert channel.gradient is not None
            self._check_finite("gradient", channel.gradient, seq)
        return cost

    def _wait_reply(self, seq: int) -> float:
        """The cost of the reply to request ``seq`` (the latest), within the timeout: else the simulator
        is stopped and :class:`EvaluationTimeout` raised."""
        session = self._session
        try:
            return session.channel.wait_reply(seq, self.timeout, lambda: self._check_running(session, seq))
        except TimeoutError:
            session.stop()
            advice = self._policy.how_to_carry_on()
            raise EvaluationTimeout(
                f"evaluation {seq} took longer than timeout={self.timeout} s; the simulator was stopped"
                + (f". Raise the timeout, or {advice}" if advice else "")
            ) from None

    def _check_capability(self, kind: RequestKind) -> None:
        capabilities = self._session.channel.capabilities
        if kind == RequestKind.GRADIENT and not capabilities & Capability.GRADIENT:
            raise CapabilityError(
                "this simulator does not compute gradients (it did not declare PYBRIDGE_CAP_GRADIENT); "
                "call minimize(sim, x0) without jac=True to let SciPy use finite differences"
            )
        if kind == RequestKind.RESIDUALS and not capabilities & Capability.RESIDUALS:
            raise CapabilityError(
                "this simulator does not return residuals (it did not declare PYBRIDGE_CAP_RESIDUALS); "
                "minimize its scalar cost instead"
            )

    def _check_finite(self, what: str, values: "float | np.ndarray", seq: int, vector: Optional[int] = None) -> None:
        if self._policy.allow_nonfinite:
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
        where = f"evaluation {seq}" if vector is None else f"vector {vector} of request {seq}"
        raise EvaluationFailed(
            f"the simulator returned a non-finite {what} {shown} in {where}; pass penalty= to replace "
            "such values, or allow_nonfinite=True to hand them to the optimiser"
        )

    def _penalty(self) -> float:
        assert self._policy.penalty is not None
        return self._policy.penalty

    # ---- sessions: one simulator process and its channel ---------------------------

    def _new_channel(self) -> DriverChannel:
        """A fresh channel for the next session (a pool's workers share a doorbell)."""
        return DriverChannel()

    # ---- one request in flight: how a pool drives several simulators from one thread ----

    def _start_request(self, x: "np.typing.ArrayLike", kind: RequestKind) -> bool:
        """Sends the request behind ``sim(x)`` / ``value_and_grad`` / ``residuals`` without waiting;
        False when the fast path cannot (then evaluate with :meth:`_evaluate_now`). The caller
        owns this Simulator exclusively until :meth:`_finish_request`."""
        port = self._port
        return port is not None and port.start(x, int(kind))

    def _finish_request(self, x: "np.typing.ArrayLike", kind: RequestKind) -> Any:
        """The value of the request :meth:`_start_request` sent, under the failure policy (a crash
        or timeout may restart the simulator and retry ``x`` here, synchronously)."""
        port = self._port
        if port is not None:
            value = port.finish(int(kind))
            if value is not None:
                return value
        return self._evaluate_now(x, kind)

    def _evaluate_now(self, x: "np.typing.ArrayLike", kind: RequestKind) -> Any:
        """One whole evaluation through the slow path (it resumes a request already in flight)."""
        slow = {RequestKind.COST: self._cost_slow, RequestKind.GRADIENT: self._value_and_grad_slow,
                RequestKind.RESIDUALS: self._residuals_slow}[kind]  # fmt: skip
        return self._locked(lambda: slow(x))

    def _stalled(self) -> bool:
        """Whether the request in flight can no longer be answered in time: the simulator died, or the
        timeout passed (the slow path then stops it and applies the policy)."""
        port = self._port
        if port is None or port.outcome != _PENDING:
            return False
        if self.timeout is not None and port.elapsed >= self.timeout:
            return True
        try:
            self._check_running(self._session, port.seq)
        except (SimulatorCrashed, ChannelClosed):
            return True
        return False

    # ---- batches: several parameter vectors in one request ------------------------------

    def vectorized(self, xs: "np.typing.ArrayLike") -> np.ndarray:
        """The costs of the columns of ``xs`` (shape ``(n_params, S)``), as an array of shape ``(S,)``:
        SciPy's convention for ``differential_evolution(sim.vectorized, bounds, vectorized=True)``.

        The columns travel ``max_batch`` to a request. An evaluation that fails under the policy
        raises, after the others of its request have been judged; no further request is sent.
        """
        rows = _columns(xs, self.n_params)
        outcomes: List[Any] = []
        for start in range(0, len(rows), self.max_batch):
            batch = self._evaluate_batch(rows[start : start + self.max_batch], RequestKind.COST, resume=False)
            outcomes += batch
            if any(isinstance(outcome, Failed) for outcome in batch):
                break
        return np.array(list(values_of(outcomes)), dtype=np.float64)

    def evaluate(self, xs: Sequence["np.typing.ArrayLike"], kind: RequestKind = RequestKind.COST) -> List["Outcome"]:
        """Every ``x`` evaluated in turn, each as an :class:`Outcome` (value or error, where and when).

        The *evaluator protocol*: what :func:`pybridge.minimize` needs from a Simulator, a Pool or
        another executor of evaluations. An error under the failure policy is kept in its outcome;
        the rest are still evaluated.

        >>> from pybridge.paths import bundled_simulator
        >>> with Simulator([bundled_simulator("pybridge-rosenbrock")], n_params=2) as sim:
        ...     [outcome.value for outcome in sim.evaluate([[0.0, 0.0], [1.0, 1.0]])]
        [1.0, 0.0]
        """
        # A pool evaluates each single vector here, so this is paid per evaluation: the method looked
        # up by name, and measuring_latency() written out (the context manager cost 1 µs a call).
        method = _METHOD_OF_KIND.get(kind)
        if method is None:
            raise ValueError(f"kind must be a RequestKind (COST, GRADIENT or RESIDUALS), not {kind!r}")
        evaluate = getattr(self, method)
        outcomes = []
        take_latency, now = _native.take_latency, time.time
        was = _native.measure_latency(True)
        try:
            for x in xs:
                take_latency()  # an evaluation that measures nothing must not report an earlier one's
                started = now()
                try:
                    value = evaluate(x)
                except Exception as error:
                    outcomes.append(Outcome(None, error, 0, started, now()))
                else:
                    outcomes.append(Outcome(value, None, 0, started, now(), *take_latency()))
        finally:
            _native.measure_latency(was)
        return outcomes

    def _start_batch(self, rows: np.ndarray, kind: RequestKind) -> bool:
        """As :meth:`_start_request`, for the rows of ``rows`` (shape (count, n_params)) in one request."""
        port = self._port
        return port is not None and port.start_batch(rows, int(kind))

    def _finish_batch(self, rows: np.ndarray, kind: RequestKind) -> List[Any]:
        """The outcomes of the batch :meth:`_start_batch` sent: one per row, a value or a :class:`Failed`."""
        port = self._port
        if port is not None:
            values = port.finish_batch(int(kind))
            if values is not None:
                self._evaluations += len(rows)
                return self._judge_batch(values, kind, port.seq)
        return self._evaluate_batch(rows, kind)

    def _evaluate_batch(self, rows: np.ndarray, kind: RequestKind, resume: bool = True) -> List[Any]:
        """One request of ``len(rows)`` vectors under the failure policy — resuming the request
        :meth:`_start_batch` sent, unless ``resume`` is False: a crash, a timeout or a reported failure
        concerns the whole request; a non-finite value only its vector. One outcome per row: a value or
        a :class:`Failed`."""

        def round_trip(resume: bool) -> Tuple[Any, int]:
            self._check_capability(kind)
            channel = self._session.channel
            port = channel.port
            assert port is not None
            if resume and port.outcome != _NOT_SENT:
                seq = port.seq
                if port.outcome == _PENDING:
                    self._check_running(self._session, seq)
            else:
                seq = channel.request_batch(rows, kind)
            self._wait_reply(seq)
            return port.batch_values(int(kind)), seq

        def evaluate() -> List[Any]:
            self._check_usable()
            answer = self._under_policy(round_trip, len(rows), resume)
            if answer is None:
                return [self._penalty_for(kind) for _ in rows]
            return self._judge_batch(answer[0], kind, answer[1])

        try:
            return self._locked(evaluate)
        except Exception as error:  # this request's verdict; KeyboardInterrupt still stops the caller
            return [Failed(error)] * len(rows)

    def _judge_batch(self, values: Any, kind: RequestKind, seq: int) -> List[Any]:
        """A batch's values, one outcome per vector under the policy: a non-finite one fails alone."""
        answers: List[Any]
        if kind == RequestKind.GRADIENT:
            costs, gradients = values
            answers = list(zip(costs.tolist(), gradients))
            finite = np.isfinite(costs).all() and np.isfinite(gradients).all()
        else:
            answers = values.tolist() if kind == RequestKind.COST else list(values)
            finite = np.isfinite(values).all()
        if finite or self._policy.allow_nonfinite:  # the common case, one look at the whole batch
            return answers
        outcomes: List[Any] = []
        for i, answer in enumerate(answers):
            try:
                if kind == RequestKind.GRADIENT:
                    self._check_finite("cost", answer[0], seq, i)
                    self._check_finite("gradient", answer[1], seq, i)
                else:
                    self._check_finite("cost" if kind == RequestKind.COST else "residual", answer, seq, i)
                outcomes.append(answer)
            except EvaluationFailed as error:
                self.failures += 1
                if self._policy.penalty is None:
                    self._evaluations -= 1  # answered, but not with a value
                    outcomes.append(Failed(error))
                else:
                    outcomes.append(self._penalty_for(kind))
        return outcomes

    def _penalty_for(self, kind: RequestKind) -> Any:
        """What a failed evaluation of this kind answers under the penalty."""
        if kind == RequestKind.GRADIENT:
            return self._penalty(), np.zeros(self.n_params)
        if kind == RequestKind.RESIDUALS:
            return np.full(self.n_residuals, self._penalty())
        return self._penalty()

    @property
    def _session(self) -> "_Session":
        return self._slot.session

    @property
    def penalty(self) -> Optional[float]:
        return self._policy.penalty

    @property
    def restarts(self) -> int:
        return self._policy.restarts

    @property
    def allow_nonfinite(self) -> bool:
        return self._policy.allow_nonfinite

    def stderr_tail(self, lines: int = _STDERR_TAIL_LINES) -> str:
        """The last ``lines`` lines the launched simulator wrote to stderr."""
        process = self._session.process
        return "" if process is None else process.stderr_tail(lines)

    def _start_with_retries(self) -> None:
        """The first launch, retried within ``restarts`` (with back-off) if it fails."""
        for attempt in range(self._policy.restarts + 1):
            try:
                if attempt:
                    self._slot.replace(_Session(self._new_channel()))
                self._launch()
                self._connect(self.start_timeout)
                return
            except (SimulatorCrashed, SimulatorStartError):
                self.failures += 1
                if attempt == self._policy.restarts:
                    raise
                time.sleep(self._policy.backoff(attempt + 1))

    def _launch(self) -> None:
        assert self._argv is not None
        environment = dict(os.environ if self._env is None else self._env)
        environment[CHANNEL_ENV] = self.channel_name
        self._session.process = SimulatorProcess(self._argv, self._cwd, environment)

    def _connect(self, timeout: Optional[float]) -> None:
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
                stderr_tail=self.stderr_tail(),
            ) from None
        n_params, n_residuals, max_batch = self._reconcile(declaration)
        session.channel.accept(n_params, n_residuals, declaration.capabilities, self.spin_us, max_batch, self.forecast)
        if self._agreed is None:
            self._agreed = (n_params, n_residuals, declaration.capabilities, max_batch)
            # A restarted simulator must take the same shape, whoever named it first.
            self._requested_params, self._requested_residuals = n_params, n_residuals
        port = session.channel.port
        assert port is not None
        port.allow_nonfinite = self._policy.allow_nonfinite
        port.timeout = self.timeout or 0.0
        session.connected = True
        self._use_port(port)

    def _use_port(self, port: Optional[_native.DriverPort]) -> None:
        if self._port is not None:
            self._answered_by_old_ports += self._port.answers
        self._port = port
        self._use_fast_port(port)

    def _drop_session(self) -> None:
        """The current simulator crashed, hung or never started: stop using it; the next
        evaluation (or retry) starts a fresh one."""
        self._use_port(None)
        self._restart_pending = True

    def _restart(self) -> None:
        """Replaces a dead or hung simulator by a fresh one on a fresh channel."""
        self._use_port(None)
        self._restart_pending = False
        self._slot.replace(_Session(self._new_channel()))
        self.restart_count += 1
        self._launch()
        self._connect(self.start_timeout)

    def _reconcile(self, declaration: Declaration) -> Tuple[int, int, int]:
        """The agreed vector lengths and batch size; rejects the simulator (and raises) on a mismatch."""
        max_batch = max(declaration.max_batch, 1)
        if self._requested_batch:
            max_batch = min(max_batch, self._requested_batch)
        try:
            if self._agreed is not None and declaration.capabilities != self._agreed[2]:
                raise HandshakeError(
                    f"the restarted simulator declares capabilities {declaration.capabilities!r}, its "
                    f"predecessor declared {self._agreed[2]!r}"
                )
            if self._agreed is not None and max_batch != self._agreed[3]:
                raise HandshakeError(
                    f"the restarted simulator takes batches of {max_batch} vectors, its predecessor took "
                    f"{self._agreed[3]}"
                )
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
            self._failed = error
            raise
        return n_params, n_residuals, max_batch

    def _check_started(self, session: "_Session") -> None:
        returncode = None if session.process is None else session.process.exit_status()
        if returncode is not None:
            # A clean exit this early is rarely a crash: the wrong program ran (a tool that printed its
            # usage, a job script whose solver line is commented out) and never opened a channel.
            hint = (" without opening its pybridge channel: check that the command runs your simulator "
                    "and that it opens the channel (pybridge_channel_open, or pybridge::Channel::open) before its loop"
                    if returncode == 0 else "")  # fmt: skip
            raise SimulatorCrashed(
                f"the simulator {describe_exit(returncode)} before completing the handshake{hint}",
                returncode=returncode,
                stderr_tail=session.stderr_tail(),
            )

    def _check_running(self, session: "_Session", seq: int) -> None:
        if self._closing:
            raise ChannelClosed(f"this Simulator was closed during this evaluation ({seq}), from another thread")
        if session.process is not None:
            returncode = session.process.exit_status()
            if returncode is None:
                return
            advice = self._policy.how_to_carry_on()
            raise SimulatorCrashed(
                f"the simulator {describe_exit(returncode)} during evaluation {seq}"
                + (f". {advice[:1].upper()}{advice[1:]}" if advice else ""),
                returncode=returncode,
                stderr_tail=session.stderr_tail(),
            )
        pid = session.channel.simulator_pid
        if not _native.process_alive(pid):
            raise SimulatorCrashed(f"the simulator (pid {pid}) died during evaluation {seq}")

    def _check_usable(self) -> None:
        if os.getpid() != self._owner_pid:
            raise InheritedSimulatorError(
                f"this Simulator belongs to process {self._owner_pid} and was inherited by process {os.getpid()} "
                "through fork(); it cannot evaluate here (the parent's replies would be taken). Create a "
                "Simulator in each worker process instead"
            )
        if self.closed:
            raise ChannelClosed("this Simulator is closed; create a new one")
        if self._failed is not None:
            raise ChannelClosed(
                f"this Simulator failed earlier ({type(self._failed).__name__}: {self._failed}) and has no "
                "failure policy to recover with; create a new one (or pass restarts= or penalty=)"
            ) from self._failed

    def _ensure_connected(self) -> None:
        self._check_usable()
        if self._restart_pending:
            self._restart()
        elif not self._session.connected:
            self._connect(self.start_timeout)


class _Session:
    """One simulator (its session of processes, if we launched it) with its channel."""

    def __init__(self, channel: DriverChannel) -> None:
        self.channel = channel
        self.connected = False
        self.process: Optional[SimulatorProcess] = None

    def stderr_tail(self) -> str:
        return "" if self.process is None else self.process.stderr_tail(_STDERR_TAIL_LINES)

    def stop(self) -> None:
        """Terminates the simulator (a hung one: SIGTERM, then SIGKILL after TERM_GRACE)."""
        if self.process is not None:
            self.process.stop()
            return
        if self.channel.simulator_pid:  # started by the user: not ours to reap, but ours to stop
            terminate(self.channel.simulator_pid)

    def release(self, close_timeout: float) -> None:
        # The objects go first: removing them must not depend on the wait
        # below (which a Ctrl-C may cut short). A simulator that attached
        # keeps its mapping and sees CLOSED; one still starting cannot attach.
        attached = self.channel.claimed
        try:
            self.channel.close()
        finally:
            if self.process is not None:
                try:
                    # Only a simulator that attached can see the shutdown and leave its loop.
                    self.process.wait_exit(close_timeout if attached else 0.0)
                finally:
                    self.process.close()


class _SessionSlot:
    """The current session. Kept apart from :class:`Simulator` so that
    ``weakref.finalize`` can release it without keeping the Simulator alive."""

    def __init__(self, session: _Session, close_timeout: float, owner_pid: int) -> None:
        self.session = session
        self.close_timeout = close_timeout
        self.owner_pid = owner_pid

    def replace(self, session: _Session) -> None:
        old, self.session = self.session, session
        old.release(0.0)  # it crashed, hung or never started: no grace period

    def release(self) -> None:
        if os.getpid() != self.owner_pid:
            return  # a fork() child exiting: the channel and the simulator are its parent's
        self.session.release(self.close_timeout)


# Every Simulator of this process, so that a fork() child can disown them.
_LIVE: "weakref.WeakSet[Simulator]" = weakref.WeakSet()


def _after_fork() -> None:
    for simulator in list(_LIVE):
        simulator._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)


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


def _seconds(name: str, value: Optional[float], *, none_ok: bool = False, zero_ok: bool = False) -> Any:
    """A duration argument, checked: finite, > 0 (or >= 0), or None where that means "no limit"."""
    if value is None and none_ok:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))
    if ok:
        value = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(value) and (value > 0 or (zero_ok and value == 0))
    if not ok:
        allowed = "a number of seconds >= 0" if zero_ok else "a positive number of seconds"
        raise ValueError(f"{name} must be {allowed}{' or None' if none_ok else ''}, not {value!r}")
    return value


def _agree(what: str, keyword: str, declared: int, requested: int) -> int:
    if declared and requested and declared != requested:
        raise HandshakeError(f"the simulator declares {declared} {what} but {keyword}={requested} was requested")
    if not declared and not requested:
        raise HandshakeError(f"the simulator does not declare its number of {what}; pass {keyword}= to Simulator")
    return declared or requested


def _as_params(x: "np.typing.ArrayLike") -> np.ndarray:
    """``x`` as a contiguous float64 array, as the fast path takes it; its length and finiteness are
    checked where the fast path checks them (the native port)."""
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"parameters must be real numbers, not an array of dtype {array.dtype}")
    # Aligned too: the native port takes only aligned memory (a vector from np.frombuffer at an odd
    # offset, or handed over by a serializer, is copied here instead of refused).
    return np.require(array, dtype=np.float64, requirements=["C", "A"])


class Failed:
    """An evaluation's exception, kept in its place among the outcomes of a batch or a map."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


#: The (request, reply) latency of an evaluation that measured none.
NOT_MEASURED = (math.nan, math.nan)
#: The Simulator's method that answers each kind of request (keys are IntEnum members: plain ints match).
_METHOD_OF_KIND = {RequestKind.COST: "__call__", RequestKind.GRADIENT: "value_and_grad",
                   RequestKind.RESIDUALS: "residuals"}  # fmt: skip


@contextlib.contextmanager
def measuring_latency() -> Iterator[None]:
    """The calling thread's requests are timed inside (the simulator stamps their replies: two clock
    reads on each round trip, which a plain ``sim(x)`` outside does not pay); as it was after."""
    was = _native.measure_latency(True)
    try:
        yield
    finally:
        _native.measure_latency(was)


class Outcome(NamedTuple):
    """One evaluation's result in :meth:`Simulator.evaluate` (and a pool's): its value (a cost, a
    ``(cost, gradient)`` pair or residuals) or the error it raised, which simulator of a pool
    answered (0 for a single simulator), the wall-clock times of request and reply, and the bridge's
    latency on the way there and back in seconds (NaN where not measured; see
    :class:`pybridge.record.Evaluation`)."""

    value: Any
    error: Optional[BaseException]
    worker: int
    started: float
    finished: float
    request_latency: float = math.nan
    reply_latency: float = math.nan


def values_of(outcomes: Iterable[Any]) -> Iterator[Any]:
    """The values among ``outcomes``, in order; a :class:`Failed` raises its error when its turn comes."""
    for outcome in outcomes:
        if isinstance(outcome, Failed):
            raise outcome.error
        yield outcome


def _columns(xs: "np.typing.ArrayLike", n_params: int) -> np.ndarray:
    """The columns of ``xs`` (shape (n_params, S)) as finite rows, C-contiguous float64 (shape (S, n_params))."""
    array = np.asarray(xs)
    if array.ndim != 2 or array.shape[0] != n_params:
        raise ValueError(
            f"expected an array of shape ({n_params}, S) — one parameter vector per column, as "
            f"differential_evolution(vectorized=True) passes them — not shape {array.shape}"
        )
    rows = _as_params(array.T)
    finite = np.isfinite(rows)
    if not finite.all():
        column, index = (int(k) for k in np.argwhere(~finite)[0])
        raise ValueError(f"parameters must be finite; column {column} has x[{index}] = {rows[column, index]}")
    return rows


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
