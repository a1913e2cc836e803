"""Long-running children (sharevol.sys.daemon): stopped for sure, exits seen without polling,
and only our own stale daemons killed after a crash. Uses `sh` and `sleep` as the daemons."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from sharevol.sys.daemon import Daemon, kill_stale, wait_pidfd


def test_stop_terminates_the_daemon_and_reaps_it(tmp_path: Path) -> None:
    daemon = Daemon(["sleep", "600"], log_path=tmp_path / "log")
    assert daemon.alive()

    code = daemon.stop(timeout=5)

    assert code == -signal.SIGTERM
    assert not daemon.alive()
    assert not Path(f"/proc/{daemon.pid}").exists()


def test_a_daemon_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    daemon = Daemon(
        ["sh", "-c", f'trap "" TERM; touch {ready}; while :; do sleep 1; done'],
        log_path=tmp_path / "log",
    )
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        wait_pidfd(daemon.pidfd, 0.01)  # the trap must be set before we signal
    started = time.monotonic()

    code = daemon.stop(timeout=0.3)

    assert code == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_the_pidfd_reports_the_exit_without_polling(tmp_path: Path) -> None:
    daemon = Daemon(["sh", "-c", "exit 3"], log_path=tmp_path / "log")

    assert wait_pidfd(daemon.pidfd, 10)
    assert daemon.stop(timeout=1) == 3


def test_output_goes_to_the_log_file(tmp_path: Path) -> None:
    daemon = Daemon(["sh", "-c", "echo hello; echo oops >&2"], log_path=tmp_path / "log")
    wait_pidfd(daemon.pidfd, 10)
    daemon.stop(timeout=1)

    assert (tmp_path / "log").read_text().split() == ["hello", "oops"]


def test_kill_stale_kills_only_a_process_carrying_the_marker(tmp_path: Path) -> None:
    marker = str(tmp_path / "ours.conf")
    ready = tmp_path / "ready"
    ours = Daemon(["sh", "-c", f"touch {ready}; sleep 600; :", marker], log_path=tmp_path / "a")
    other = Daemon(["sleep", "601"], log_path=tmp_path / "b")
    try:
        deadline = time.monotonic() + 10  # past the execs: mid-exec, /proc cmdline reads empty
        while not ready.exists() and time.monotonic() < deadline:
            wait_pidfd(ours.pidfd, 0.01)
        (tmp_path / "ours.pid").write_text(f"{ours.pid}\n")
        (tmp_path / "other.pid").write_text(f"{other.pid}\n")

        assert not kill_stale(tmp_path / "other.pid", marker)
        assert not kill_stale(tmp_path / "missing.pid", marker)
        assert kill_stale(tmp_path / "ours.pid", marker)

        assert wait_pidfd(ours.pidfd, 5)
        assert other.alive()
    finally:
        for daemon in (ours, other):
            daemon.stop(timeout=1)


def test_kill_stale_ignores_a_pid_file_of_a_dead_process(tmp_path: Path) -> None:
    daemon = Daemon(["true"], log_path=tmp_path / "log")
    daemon.stop(timeout=5)
    (tmp_path / "dead.pid").write_text(f"{daemon.pid}\n")

    assert not kill_stale(tmp_path / "dead.pid", "anything")
    assert os.path.exists(tmp_path / "dead.pid")


def test_a_daemon_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """sharevol killed by SIGKILL must not leave Ganesha serving (setpriv --pdeathsig)."""
    pid_file = tmp_path / "daemon.pid"
    parent = Daemon(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from sharevol.sys.daemon import Daemon\n"
            f"d = Daemon(['sleep', '120'], log_path=Path({str(tmp_path / 'child')!r}))\n"
            f"Path({str(pid_file)!r}).write_text(str(d.pid))\n"
            "time.sleep(120)\n",  # both end by themselves if this test is interrupted
        ],
        log_path=tmp_path / "parent",
        die_with_parent=False,
    )
    deadline = time.monotonic() + 30
    while not pid_file.exists() and parent.alive() and time.monotonic() < deadline:
        wait_pidfd(parent.pidfd, 0.02)
    child = int(pid_file.read_text())
    child_fd = os.pidfd_open(child)
    try:
        # Past setpriv's prctl and exec (the real server lives far longer than that).
        cmdline = Path(f"/proc/{child}/cmdline")
        while not cmdline.read_bytes().startswith(b"sleep") and time.monotonic() < deadline:
            wait_pidfd(child_fd, 0.01)
        os.kill(parent.pid, signal.SIGKILL)

        assert wait_pidfd(child_fd, 10), "the daemon outlived the process that started it"
    finally:
        os.close(child_fd)
        parent.stop(timeout=1)
