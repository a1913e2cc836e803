"""Progress, pause and cancellation of long copies, shared by the copying thread and readers.

A copy checks in at every file and every chunk (`checkpoint`): it stops there once cancelled,
and waits there while its gate is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sharevol.errors import Aborted


class CopyCancelled(Aborted):
    """The copy was cancelled (DeleteSnapshot of a snapshot being copied, server stop)."""


class Gate:
    """Lets copies run, or holds them at their next checkpoint until opened again.

    Shared by every copy of a job runner; tests close it to keep a copy "in progress"
    deterministically instead of racing a fast copy."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True

    def close(self) -> None:
        with self._cond:
            self._open = False

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake waiters so they can notice a cancellation."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, cancelled: Callable[[], bool]) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._open or cancelled())


class CopyControl:
    """Progress and cancellation of one long copy, shared by the copying thread and readers."""

    def __init__(self, gate: Gate | None = None) -> None:
        self._gate = gate or Gate()
        self._lock = threading.Lock()
        self._cancelled = False
        self._done = 0
        self._total = 0

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
        self._gate.wake()

    @property
    def cancelled(self) -> bool:
        with self._lock:
            return self._cancelled

    def checkpoint(self) -> None:
        """Wait while the gate is closed; raise CopyCancelled once cancelled."""
        self._gate.wait(lambda: self.cancelled)
        if self.cancelled:
            raise CopyCancelled("the copy was cancelled")

    def set_total(self, total_bytes: int) -> None:
        with self._lock:
            self._total = total_bytes

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes

    @property
    def progress(self) -> tuple[int, int]:
        """(bytes done, bytes in all); done never exceeds the total."""
        with self._lock:
            return min(self._done, self._total), self._total
