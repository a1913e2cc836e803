"""Following a background copy: call until the server says it is done, with a progress bar.

A snapshot or restore on a pool without btrfs or reflink is a real copy that the server runs in
the background; the CLI re-makes the same idempotent call (as a CO would) and shows the bytes
copied so far on stderr. Ctrl-C stops only the waiting: the copy goes on in the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sharevol.cli.common import CliError

__all__ = ["POLL_SECONDS", "CopyState", "follow_copy"]

T = TypeVar("T")

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class CopyState(Generic[T]):
    """One look at a copy: its result once done, else the bytes copied so far and in all."""

    result: T | None = None
    done_bytes: int = 0
    total_bytes: int = 0


def follow_copy(
    description: str,
    step: Callable[[], CopyState[T]],
    rerun_hint: str,
    *,
    poll_seconds: float = POLL_SECONDS,
    console: Console | None = None,
) -> T:
    """Call `step` until it returns a result, drawing a progress bar meanwhile (on a terminal;
    nothing is drawn when stderr is a file or a pipe)."""
    state = step()
    if state.result is not None:
        return state.result
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    console = console or Console(stderr=True)
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(description, total=state.total_bytes or None)
            while True:
                progress.update(task, completed=state.done_bytes, total=state.total_bytes or None)
                time.sleep(poll_seconds)
                state = step()
                if state.result is not None:
                    return state.result
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; the copy goes on in the server: {rerun_hint}") from None
