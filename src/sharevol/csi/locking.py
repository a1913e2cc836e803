"""Per-key try-locks: a second operation on the same volume answers ABORTED at once.

Blocking would hold a worker thread while the sidecar times out and retries (prior-art notes);
the CSI spec allows ABORTED for "an operation is already pending for this volume". Keys come
from one table per RPC, so no handler takes locks ad hoc.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sharevol.errors import Aborted

KeyFunction = Callable[[Any], list[str]]

LOCK_KEYS: dict[str, KeyFunction] = {
    "/csi.v1.Controller/CreateVolume": lambda r: [f"name:{r.name}", *_content_source_keys(r)],
    "/csi.v1.Controller/DeleteVolume": lambda r: [f"volume:{r.volume_id}"],
    "/csi.v1.Controller/ControllerExpandVolume": lambda r: [f"volume:{r.volume_id}"],
    # Publish rewrites the volume's record (its client list): same key as every other writer.
    "/csi.v1.Controller/ControllerPublishVolume": lambda r: [f"volume:{r.volume_id}"],
    "/csi.v1.Controller/ControllerUnpublishVolume": lambda r: [f"volume:{r.volume_id}"],
    "/csi.v1.Controller/CreateSnapshot": lambda r: [
        f"snapshot-name:{r.name}",
        f"volume:{r.source_volume_id}",
    ],
    "/csi.v1.Controller/DeleteSnapshot": lambda r: [f"snapshot:{r.snapshot_id}"],
    "/csi.v1.Node/NodeStageVolume": lambda r: [f"stage:{r.volume_id}"],
    "/csi.v1.Node/NodeUnstageVolume": lambda r: [f"stage:{r.volume_id}"],
    # Publish also holds the stage key: an unstage between publish's check of the staging
    # mount and its bind would leave the target bound to the empty staging directory.
    "/csi.v1.Node/NodePublishVolume": lambda r: [f"publish:{r.volume_id}", f"stage:{r.volume_id}"],
    "/csi.v1.Node/NodeUnpublishVolume": lambda r: [f"publish:{r.volume_id}"],
    "/csi.v1.Node/NodeExpandVolume": lambda r: [f"stage:{r.volume_id}"],
}
"""NodePublish/Unpublish lock the volume, not volume+target: the single-writer checks compare
the volume's other targets, which must not change underneath."""


def _content_source_keys(request: Any) -> list[str]:
    """A restore or clone also holds its source's key, so the source cannot be deleted while
    the new volume starts reading it (a background copy then registers as a reader)."""
    if not request.HasField("volume_content_source"):
        return []
    source = request.volume_content_source
    if source.HasField("snapshot"):
        return [f"snapshot:{source.snapshot.snapshot_id}"]
    if source.HasField("volume"):
        return [f"volume:{source.volume.volume_id}"]
    return []


class KeyLocks:
    """A set of held keys; acquiring any held key fails immediately with Aborted."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: set[str] = set()
        self.aborted_total = 0

    @contextmanager
    def hold(self, keys: list[str]) -> Iterator[None]:
        with self._mutex:
            busy = [k for k in keys if k in self._held]
            if busy:
                self.aborted_total += 1
                raise Aborted(f"an operation on {busy[0]} is already in progress; retry")
            self._held.update(keys)
        try:
            yield
        finally:
            with self._mutex:
                self._held.difference_update(keys)
