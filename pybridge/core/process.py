"""A launched simulator as a process group: start, liveness, stop.

The simulator runs in a session (and so a process group) of its own, for two
reasons. The command is often a wrapper — ``mpirun``, ``srun``, ``sh run.sh``
— and killing its direct child alone would leave the solver running; a group
can be terminated as a whole. And Ctrl-C in a terminal signals the whole
foreground group: in a group of its own the simulator is not hit, and the
driver decides what happens to it.

The leader is not reaped until the group has been killed: while it is a
zombie its pid, and so the group id, cannot be reused, so a signal to the
group can never reach an unrelated process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import IO, Mapping, Optional, Sequence, Union

from .._native import process_alive  # zombie-aware: a dead child that is not reaped counts as dead
from ..errors import SimulatorStartError

__all__ = ["SimulatorProcess", "TERM_GRACE", "describe_exit", "terminate"]

PathLike = Union[str, "os.PathLike[str]"]

#: Seconds a terminated simulator gets between SIGTERM (to the whole group) and SIGKILL.
TERM_GRACE = 1.0
_POLL = 0.002  # waiting for an exit without reaping has no blocking call: poll


class SimulatorProcess:
    """One launched simulator, the leader of its own process group."""

    def __init__(self, argv: Sequence[str], cwd: Optional[PathLike], env: Mapping[str, str]) -> None:
        # stderr goes to a file rather than a pipe: nobody has to drain it,
        # and its tail is there to quote when the simulator fails.
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="pybridge-stderr-")
        try:
            self._popen = subprocess.Popen(
                list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stderr=self._stderr,
                start_new_session=True,
            )  # fmt: skip
        except OSError as error:
            self._stderr.close()
            raise SimulatorStartError(
                f"cannot start simulator {argv[0]!r}: {error.strerror or error}. "
                "Check the path and that the file is executable."
            ) from error
        self.pid: int = self._popen.pid
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
        """Terminates the whole group — SIGTERM, then SIGKILL after ``grace`` seconds — and reaps the
        leader. Returns its exit status. Idempotent; an interrupt (Ctrl-C) while it waits skips
        straight to SIGKILL, so the group never outlives this call."""
        if self._returncode is not None:
            return self._returncode
        try:
            if self.exit_status() is None:
                self._signal_group(signal.SIGTERM)
                self.wait_exit(grace)
        finally:
            # Whatever is left of the group (the solver under a wrapper that
            # already exited, MPI ranks) goes now; the zombie leader still holds the group id.
            self._signal_group(signal.SIGKILL)
            self._returncode = self._popen.wait()
        return self._returncode

    def stderr_tail(self, lines: int) -> str:
        """The last ``lines`` lines the simulator wrote to stderr."""
        if self._stderr.closed:
            return ""
        self._stderr.flush()
        size = self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, size - 8192))
        text = self._stderr.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stops the group if it still runs and lets go of the stderr file."""
        try:
            self.stop(0.0 if self.exit_status() is not None else TERM_GRACE)
        finally:
            self._stderr.close()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # nobody left in the group (PermissionError: only a setuid member, not ours to kill)


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


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'was killed by SIGKILL', for messages."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
