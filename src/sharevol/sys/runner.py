"""Every external command goes through one `CommandRunner.run()`: argv list, no shell, a timeout.

On timeout the whole process group is killed (SIGKILL) and reaped, so a hung `mount` of a dead
NFS server never leaves a process behind or wedges a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sharevol.errors import CommandFailed

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
REAP_TIMEOUT = 5.0
"""Seconds to wait for a killed command to exit before giving its worker back."""


@dataclass(frozen=True)
class CommandResult:
    """What a finished command printed and returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandRunner(Protocol):
    """Runs one external command; the fake in sharevol.sys.fake implements the same protocol."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        stdin: str | None = None,
    ) -> CommandResult:
        """Run argv; raise CommandFailed on timeout, or on a non-zero exit when check is set."""
        ...


class SubprocessRunner:
    """The real runner: a new session per command so that a timeout kills the whole group."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        stdin: str | None = None,
    ) -> CommandResult:
        args = [str(a) for a in argv]
        started = time.monotonic()
        env = dict(os.environ, LC_ALL="C")
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                env=env,
            )
        except FileNotFoundError as exc:
            raise CommandFailed(args, None, f"{args[0]}: command not found") from exc
        try:
            stdout, stderr = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            try:
                stdout, stderr = proc.communicate(timeout=REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # Unkillable (D state on a dead NFS server): give the worker back; the
                # Popen object is reaped later by the subprocess module.
                log.error("command still alive %.0fs after SIGKILL: %s", REAP_TIMEOUT, args[0])
                stderr = ""
            log.warning("command timed out after %.1fs: %s", timeout, " ".join(args))
            raise CommandFailed(args, None, stderr, timed_out=True) from None
        seconds = time.monotonic() - started
        result = CommandResult(tuple(args), proc.returncode, stdout, stderr, seconds)
        if check and proc.returncode != 0:
            raise CommandFailed(args, proc.returncode, stderr or stdout)
        return result


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the command and everything it started; it was put in its own session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
