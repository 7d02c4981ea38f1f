"""Helpers of the real-use fault tests: scripts run in their own processes, private /dev/shm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import pytest

NOBODY = 65534


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Polls ``condition`` until it holds or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(step)
    return True


class Scripts:
    """Writes Python scripts into a directory every user can read (for runs as `nobody`)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pybridge-test-"))
        self.dir.chmod(0o755)
        self._count = 0

    def write(self, body: str, prelude: str = "import os, sys, time\nimport numpy as np\nimport pybridge\n") -> Path:
        self._count += 1
        path = self.dir / f"script_{self._count}.py"
        path.write_text(prelude + textwrap.dedent(body))
        path.chmod(0o644)
        return path

    def command(self, body: str) -> List[str]:
        return [sys.executable, str(self.write(body))]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def private_shm_available() -> Optional[str]:
    """None if tests can mount a private /dev/shm, else why not."""
    if os.geteuid() != 0:
        return "needs root (unshare -m and a tmpfs mount)"
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return "needs unshare and setpriv (util-linux)"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        return f"cannot mount a private /dev/shm: {probe.stderr.decode(errors='replace').strip()}"
    return None


def interpreter_for(user: int) -> Tuple[Optional[List[str]], str]:
    """A command that runs this Python, with pybridge importable, as ``user``; or None and why not.

    The interpreter must be able to start itself again (multiprocessing's resource tracker does),
    which a Python under root's home (pyenv, here) cannot do as another user. Then the system's
    Python of the same version, with this environment's site-packages, stands in.
    """
    site = sysconfig.get_paths()["purelib"]
    candidates = [[sys.executable]]
    system = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/bin")
    if system:
        candidates.append(["env", f"PYTHONPATH={site}", system])
    probe = "import subprocess, sys, pybridge; subprocess.run([sys.executable, '-c', ''], check=True)"
    for command in candidates:
        result = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command,
                                 "-c", probe], capture_output=True, cwd="/")  # fmt: skip
        if result.returncode == 0:
            return command, ""
    return None, f"no Python with pybridge that user {user} can run (is {sys.executable} under a private home?)"


def run_in_private_shm(script: Path, *, size: str = "64m", setup: str = "", user: Optional[int] = None,
                       args: Sequence[str] = (), timeout: float = 60) -> subprocess.CompletedProcess:  # fmt: skip
    """Runs ``script`` with its own tmpfs on /dev/shm of ``size`` (gone with the namespace).

    ``setup`` is shell run as root inside the namespace first; ``user`` runs the script as that uid
    (the test skips if no interpreter can). A hang fails the caller through ``subprocess.TimeoutExpired``.
    """
    python = [sys.executable]
    as_user = ""
    if user is not None:
        found, why = interpreter_for(user)
        if found is None:
            pytest.skip(why)
        python = found
        as_user = f"setpriv --reuid={user} --regid={user} --clear-groups "
    inner = f"mount -t tmpfs -o size={size},mode=1777 tmpfs /dev/shm && {setup or 'true'} && " \
            f"exec {as_user}{' '.join(python)} {script} \"$@\""  # fmt: skip
    return subprocess.run(["unshare", "-m", "sh", "-c", inner, "sh", *args], capture_output=True, text=True,
                          timeout=timeout, cwd="/")  # fmt: skip


needs_private_shm = pytest.mark.skipif(private_shm_available() is not None, reason=str(private_shm_available()))
