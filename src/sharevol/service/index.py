"""The controller's in-memory view of every record, rebuilt from the pools at start-up.

It only speeds up lookups (by name, by directory) and capacity sums; the records on the pools
stay the truth, so a restart loses nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from sharevol.catalog.records import VolumeRecord


class VolumeIndex:
    """Thread-safe maps over volume records: by volume ID, by CSI name, by pool directory."""

    def __init__(self, records: Iterable[VolumeRecord] = ()) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, VolumeRecord] = {}
        self._by_name: dict[str, str] = {}
        for record in records:
            self.put(record)

    def put(self, record: VolumeRecord) -> None:
        with self._lock:
            old = self._by_id.get(record.volume_id)
            if old is not None and self._by_name.get(old.name) == old.volume_id:
                del self._by_name[old.name]
            self._by_id[record.volume_id] = record
            if record.live:
                self._by_name[record.name] = record.volume_id

    def remove(self, volume_id: str) -> None:
        with self._lock:
            old = self._by_id.pop(volume_id, None)
            if old is not None and self._by_name.get(old.name) == volume_id:
                del self._by_name[old.name]

    def get(self, volume_id: str) -> VolumeRecord | None:
        with self._lock:
            return self._by_id.get(volume_id)

    def by_name(self, name: str) -> VolumeRecord | None:
        with self._lock:
            volume_id = self._by_name.get(name)
            return self._by_id.get(volume_id) if volume_id else None

    def directory_owner(self, pool: str, directory: str) -> VolumeRecord | None:
        """The record (live or retained) whose data sits in that directory of that pool."""
        with self._lock:
            for record in self._by_id.values():
                if (
                    record.pool == pool
                    and record.directory == directory
                    and (record.live or record.state == "retained")
                ):
                    return record
            return None

    def records(self, pool: str | None = None) -> list[VolumeRecord]:
        """All records (of one pool), ordered by volume ID: the stable order of ListVolumes."""
        with self._lock:
            chosen = [r for r in self._by_id.values() if pool is None or r.pool == pool]
        return sorted(chosen, key=lambda r: r.volume_id)

    def provisioned_bytes(self, pool: str) -> int:
        """Sum of the sizes that still hold space in the pool (live, retained and archived)."""
        with self._lock:
            return sum(r.capacity_bytes for r in self._by_id.values() if r.pool == pool)
