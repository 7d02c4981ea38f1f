"""A launched simulator as a session of processes: start, liveness, stop.

The simulator runs in a session (and so a process group) of its own, for two
reasons. The command is often a wrapper — ``mpirun``, ``srun``, ``sh run.sh``
— and killing its direct child alone would leave the solver running; a
session can be terminated as a whole. And Ctrl-C in a terminal signals the
whole foreground group: in a session of its own the simulator is not hit, and
the driver decides what happens to it.

Signals go to the session, not only to the leader's process group: launchers
put what they start in groups of their own (Open MPI does so with every rank),
and a launcher killed before it has stopped its ranks would leave them running.
A process leaves the session only by calling setsid() itself (a daemon): such
a process is not ours to find.

The leader is not reaped until the session has been killed: while it is a
zombie its pid, and so the session and group id, cannot be reused, so a
signal can never reach an unrelated process through them.

The session's stderr goes to an unlinked temporary file: nobody has to drain
it, and its tail is there to quote when the simulator fails. A solver that logs
on every evaluation would fill /tmp over a long run through a file nobody can
see, so a janitor thread frees all but the last :data:`STDERR_KEEP` bytes of
every such file holding more than :data:`STDERR_LIMIT`. It punches a hole
(``fallocate(FALLOC_FL_PUNCH_HOLE)``): nothing moves, so what the simulator
writes meanwhile lands after what it wrote before, and the last lines quoted
in an error are the last it wrote. (Cutting the file and writing its tail back
put a line written during the cut before the older ones.)
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from typing import IO, List, Mapping, Optional, Sequence, Union

from .._native import process_alive  # zombie-aware: a dead child that is not reaped counts as dead
from ..errors import SimulatorStartError

__all__ = ["LAUNCH_DEFAULTS", "SimulatorProcess", "TERM_GRACE", "describe_exit", "terminate"]

PathLike = Union[str, "os.PathLike[str]"]

#: Seconds a terminated simulator gets between SIGTERM (to its whole session) and SIGKILL.
TERM_GRACE = 1.0
#: Seconds stop() waits, after SIGKILL, for the session's members to die (a process stuck in the
#: kernel, state D, can outlast it; that is the only case).
KILL_WAIT = 2.0
#: Added to a launched simulator's environment unless the caller's environment sets them. When one rank
#: of an Open MPI job dies, mpirun waits odls_base_sigkill_timeout (1 s) before it kills the others, and
#: only then does rank 0, the one attached, disappear: measured here, SimulatorCrashed came 1.02-1.04 s
#: after the rank's death with the wait and 10-20 ms without. The job is lost either way; the wait
#: only delays the restart.
LAUNCH_DEFAULTS = {"OMPI_MCA_odls_base_sigkill_timeout": "0"}
_POLL = 0.002  # waiting for an exit without reaping has no blocking call: poll
#: A simulator's stderr file holding more than this has all but its last STDERR_KEEP bytes freed.
STDERR_LIMIT = 1 << 20
STDERR_KEEP = 64 << 10
#: Seconds between the janitor's looks (read at each look).
STDERR_CHECK_SECONDS = 5.0
_BLOCK = 4096  # holes are punched in whole blocks
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (linux/falloc.h)


class SimulatorProcess:
    """One launched simulator, the leader of its own session."""

    def __init__(self, argv: Sequence[str], cwd: Optional[PathLike], env: Mapping[str, str]) -> None:
        # stderr goes to a file rather than a pipe: nobody has to drain it, and its tail is there to
        # quote when the simulator fails.
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="pybridge-stderr-")
        self._stderr_lock = threading.Lock()  # the janitor against a reader of the tail and close()
        self._stderr_freed = 0  # bytes at the start of the file already given back (a hole)
        try:
            self._popen = subprocess.Popen(
                list(argv), cwd=cwd, env={**LAUNCH_DEFAULTS, **env}, stdin=subprocess.DEVNULL, stderr=self._stderr,
                start_new_session=True,
            )  # fmt: skip
        except OSError as error:
            self._stderr.close()
            if cwd is not None and error.filename is not None and os.fspath(error.filename) == os.fspath(cwd):
                raise SimulatorStartError(f"cannot start simulator {argv[0]!r} in {os.fspath(cwd)!r}: "
                                          f"{error.strerror or error} (the working folder)") from error  # fmt: skip
            raise SimulatorStartError(
                f"cannot start simulator {argv[0]!r}: {error.strerror or error}. "
                "Check the path and that the file is executable."
            ) from error
        self.pid: int = self._popen.pid
        _Janitor.watch(self)
        self._returncode: Optional[int] = None  # set once reaped

    def exit_status(self) -> Optional[int]:
        """The leader's exit status (``-signal`` if killed), or None while it runs. Does not reap it."""
        if self._returncode is not None:
            return self._returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back (a SIGCHLD handler of the application's)
            return self._popen.returncode if self._popen.returncode is not None else -signal.SIGKILL
        if info is None or info.si_pid == 0:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait_exit(self, timeout: float) -> Optional[int]:
        """Waits up to ``timeout`` seconds for the leader to exit; its status, or None. Does not reap it."""
        deadline = time.monotonic() + timeout
        while (status := self.exit_status()) is None and time.monotonic() < deadline:
            time.sleep(_POLL)
        return status

    def stop(self, grace: float = TERM_GRACE) -> int:
        """Terminates the whole session — SIGTERM, then SIGKILL after ``grace`` seconds — and reaps the
        leader. Returns its exit status. Idempotent; an interrupt (Ctrl-C) while it waits skips
        straight to SIGKILL, so the session never outlives this call."""
        if self._returncode is not None:
            return self._returncode
        try:
            if self.exit_status() is None:
                self._signal_session(signal.SIGTERM)
                self.wait_exit(grace)
        finally:
            # Whatever is left of the session (the solver under a wrapper that
            # already exited, MPI ranks) goes now; the zombie leader still holds the session id.
            self._signal_session(signal.SIGKILL)
            self._returncode = self._popen.wait()
            # SIGKILL is delivered, not done: a rank may still be running for a moment after its launcher
            # is reaped (seen under mpirun). Wait until every member has died (exited, or a zombie).
            deadline = time.monotonic() + KILL_WAIT
            while _session_members(self.pid, running_only=True) and time.monotonic() < deadline:
                time.sleep(_POLL)
        return self._returncode

    def stderr_tail(self, lines: int) -> str:
        """The last ``lines`` lines the simulator wrote to stderr."""
        with self._stderr_lock:
            if self._stderr.closed:
                return ""
            fd = self._stderr.fileno()
            size = os.fstat(fd).st_size
            text = os.pread(fd, 8192, max(0, size - 8192)).decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def trim_stderr(self) -> None:
        """Frees all but the last STDERR_KEEP bytes of the stderr file once it holds more than
        STDERR_LIMIT (a hole: its size and every offset stay; a file system without holes keeps all)."""
        with self._stderr_lock:
            if self._stderr.closed or _fallocate is None:
                return
            fd = self._stderr.fileno()
            end = (os.fstat(fd).st_size - STDERR_KEEP) // _BLOCK * _BLOCK
            if end - self._stderr_freed <= STDERR_LIMIT - STDERR_KEEP:
                return
            if _fallocate(fd, _PUNCH_HOLE, self._stderr_freed, end - self._stderr_freed) == 0:
                self._stderr_freed = end

    def close(self) -> None:
        """Stops the session if it still runs and lets go of the stderr file."""
        try:
            self.stop(0.0 if self.exit_status() is not None else TERM_GRACE)
        finally:
            with self._stderr_lock:
                self._stderr.close()

    def _signal_session(self, signum: int) -> None:
        """Signals the leader's process group and every other process of its session."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # nobody left in the group (PermissionError: only a setuid member, not ours to kill)
        for pid in _session_members(self.pid):
            _signal_if_in_session(pid, self.pid, signum)


def _session_of(pid: int, running_only: bool = False) -> Optional[int]:
    """The session id of ``pid`` (field 6 of /proc/PID/stat), or None if it is gone (``running_only``:
    or dead, a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if running_only and fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[3])
    except (IndexError, ValueError):
        return None


def _session_members(session: int, running_only: bool = False) -> List[int]:
    """The processes of ``session`` other than its leader, read from /proc (``running_only``: not
    those that have died and wait to be reaped)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != session and _session_of(int(entry), running_only) == session:
            members.append(int(entry))
    return members


def _signal_if_in_session(pid: int, session: int, signum: int) -> None:
    """Signals ``pid`` if it is (still) in ``session``. Through a pidfd where the kernel has them: the
    pid is checked and signalled as one and the same process, never a newcomer that reused the number."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        handle = None  # no pidfd (Linux < 5.3): a pid reused between the scan and here is the risk left
    try:
        if _session_of(pid) != session:
            return
        if handle is None:
            os.kill(pid, signum)
        else:
            signal.pidfd_send_signal(handle, signum)
    except (ProcessLookupError, PermissionError):
        pass  # gone meanwhile, or a setuid member
    finally:
        if handle is not None:
            os.close(handle)


def terminate(pid: int, grace: float = TERM_GRACE) -> None:
    """Stops a simulator that is not our child (the user started it): SIGTERM, then SIGKILL after
    ``grace`` seconds. Not ours to reap, so no group and no exit status."""
    if not process_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(_POLL)
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)


class _Janitor:
    """One daemon thread per process that keeps every launched simulator's stderr file small."""

    _lock = threading.Lock()
    _watched: "weakref.WeakSet[SimulatorProcess]" = weakref.WeakSet()
    _thread: Optional[threading.Thread] = None

    @classmethod
    def watch(cls, process: "SimulatorProcess") -> None:
        with cls._lock:
            cls._watched.add(process)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="pybridge-stderr-janitor", daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            time.sleep(STDERR_CHECK_SECONDS)  # a period, not a wait for anything
            with cls._lock:
                processes = list(cls._watched)
            for process in processes:
                try:
                    process.trim_stderr()
                except OSError:
                    pass  # a file system error on /tmp: the next look tries again

    @classmethod
    def forget(cls) -> None:
        """In a forked child: the thread did not come along, and the processes are the parent's."""
        cls._lock = threading.Lock()
        cls._watched = weakref.WeakSet()
        cls._thread = None


os.register_at_fork(after_in_child=_Janitor.forget)


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'was killed by SIGKILL', for messages."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
