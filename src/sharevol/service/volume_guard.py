"""One operation at a time on a volume inside the service, whatever RPC it came from.

The CSI layer's lock keys come from each request alone: CreateVolume locks its name and
DeleteVolume its volume ID, so a CreateVolume retry that resumes a half-made volume (a restore
still copying, say) and a DeleteVolume of that volume could run at once, and the copy could be
started again after the delete removed its folder. The service knows both are the same volume;
this guard makes the second one ABORTED so that the CO retries it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sharevol.errors import Aborted


class VolumeGuard:
    """Try-locks by volume ID."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy: set[str] = set()

    @contextmanager
    def hold(self, volume_id: str) -> Iterator[None]:
        with self._mutex:
            if volume_id in self._busy:
                raise Aborted(f"volume {volume_id} is being created or deleted right now; retry")
            self._busy.add(volume_id)
        try:
            yield
        finally:
            with self._mutex:
                self._busy.discard(volume_id)
