"""Waiting for SIGINT/SIGTERM in the main thread, shared by `sharevol up` and `sharevol serve`."""

from __future__ import annotations

import os
import select
import signal
from types import FrameType, TracebackType
from typing import Any


class StopSignals:
    """Waits for SIGINT or SIGTERM without a race: the handler only records the signal, and the
    wakeup fd wakes the select() even when the signal arrived before the wait began."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._received: list[int] = []
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._old_wakeup_fd = -1
        self._old_handlers: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd)
        for signum in self._SIGNALS:
            self._old_handlers[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)

    def wait(self) -> int:
        while not self._received:
            select.select([self._read_fd], [], [])
            os.read(self._read_fd, 512)
        return self._received[0]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)
