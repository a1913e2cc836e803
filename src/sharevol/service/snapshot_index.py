"""The controller's in-memory view of every snapshot record (by ID and by CSI name).

Like the volume index it only speeds up lookups; the records on the pools stay the truth and
the index is rebuilt from them at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from sharevol.catalog.records import SnapshotRecord


class SnapshotIndex:
    """Thread-safe maps over snapshot records."""

    def __init__(self, records: Iterable[SnapshotRecord] = ()) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, SnapshotRecord] = {}
        self._by_name: dict[str, str] = {}
        for record in records:
            self.put(record)

    def put(self, record: SnapshotRecord) -> None:
        with self._lock:
            old = self._by_id.get(record.snapshot_id)
            if old is not None and self._by_name.get(old.name) == old.snapshot_id:
                del self._by_name[old.name]
            self._by_id[record.snapshot_id] = record
            self._by_name[record.name] = record.snapshot_id

    def remove(self, snapshot_id: str) -> None:
        with self._lock:
            old = self._by_id.pop(snapshot_id, None)
            if old is not None and self._by_name.get(old.name) == snapshot_id:
                del self._by_name[old.name]

    def get(self, snapshot_id: str) -> SnapshotRecord | None:
        with self._lock:
            return self._by_id.get(snapshot_id)

    def by_name(self, name: str) -> SnapshotRecord | None:
        with self._lock:
            snapshot_id = self._by_name.get(name)
            return self._by_id.get(snapshot_id) if snapshot_id else None

    def records(self) -> list[SnapshotRecord]:
        """All records ordered by snapshot ID: the stable order of ListSnapshots."""
        with self._lock:
            chosen = list(self._by_id.values())
        return sorted(chosen, key=lambda r: r.snapshot_id)
