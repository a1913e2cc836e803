"""Long-running child processes (NFS-Ganesha, its private dbus-daemon): the runner's rules for
processes that do not finish.

Each daemon gets its own session (so a stop kills its whole process group), its output goes to a
log file (a pipe nobody reads would fill up and block it), and a pidfd lets a supervisor wait for
its exit without polling. Stop is SIGTERM, then SIGKILL after a deadline, then reap: nothing is
left behind, even when the daemon ignores SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from sharevol.errors import CommandFailed

log = logging.getLogger(__name__)


class Daemon:
    """One started daemon; `stop()` is idempotent."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        merged = dict(os.environ, LC_ALL="C", **(env or {}))
        command = self.argv
        if die_with_parent and shutil.which("setpriv"):
            # SIGKILL when sharevol dies, even by SIGKILL: its own session would keep it alive.
            # setpriv (util-linux) sets PR_SET_PDEATHSIG and execs; preexec_fn is not
            # thread-safe. The signal follows the spawning thread, which lives until stop().
            command = ["setpriv", "--pdeathsig", "KILL", "--", *self.argv]
        with log_path.open("ab") as output:
            try:
                self._proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=merged,
                )
            except OSError as exc:
                raise CommandFailed(self.argv, None, f"{self.argv[0]}: {exc}") from exc
        self.pidfd = os.pidfd_open(self._proc.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exit_code(self) -> int | None:
        """The exit status once the daemon has ended (negative: killed by that signal)."""
        return self._proc.poll()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout: float) -> int:
        """SIGTERM the daemon's process group, SIGKILL it after `timeout`, reap; the exit code."""
        if self._proc.poll() is None:
            _signal_group(self._proc.pid, signal.SIGTERM)
            if not wait_pidfd(self.pidfd, timeout):
                log.warning("%s did not stop within %.1fs: killing it", self.argv[0], timeout)
            # Helpers the leader started in its session must not outlive it. The leader is not
            # reaped yet (a zombie at most), so its pid, the group's ID, cannot name anyone
            # else. Once reaped (poll() above), the pid may belong to a stranger: no signal.
            _signal_group(self._proc.pid, signal.SIGKILL)
        code = self._proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        self.pidfd = -1
        return code


def wait_pidfd(pidfd: int, timeout: float) -> bool:
    """Wait until the process behind `pidfd` exits; False when `timeout` passed first."""
    if pidfd < 0:
        return True
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def kill_stale(pid_file: Path, marker: str, timeout: float = 10.0) -> bool:
    """Kill the process named in `pid_file` if it is still running and its command line holds
    `marker` (our config path), so a daemon orphaned by a crash of sharevol never keeps the port
    or the exports, and an unrelated process that reused the pid is never touched."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if marker not in cmdline:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        log.warning("killing stale daemon %d (%s) left by an earlier run", pid, cmdline.strip())
        _signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_pidfd(pidfd, timeout)
    finally:
        os.close(pidfd)
    return True


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
