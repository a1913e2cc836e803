"""Crash-safe JSON records on the pool and the pool's file lock.

Writes are temp file, fsync, rename, fsync of the folder: a crash leaves either the old or the
new record, never a torn one. The pool lock is a `flock` held with a thread lock, so it works
both across processes and across the server's worker threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from sharevol.catalog.records import SnapshotRecord, VolumeRecord
from sharevol.errors import Internal

log = logging.getLogger(__name__)

CATALOG_DIR = ".sharevol"


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers and crashes see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Catalog:
    """The records of one pool, under `<pool root>/.sharevol/catalog`."""

    def __init__(self, pool_root: Path) -> None:
        self.root = pool_root / CATALOG_DIR
        self.volumes_dir = self.root / "catalog" / "volumes"
        self.snapshots_dir = self.root / "catalog" / "snapshots"
        self._lock_path = self.root / "pool.lock"
        self._thread_lock = threading.Lock()

    def ensure(self) -> None:
        """Create the catalog folders (idempotent); called when a pool starts."""
        self.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.snapshots_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def volume_path(self, uuid: str) -> Path:
        return self.volumes_dir / f"{uuid}.json"

    def read_volume(self, uuid: str) -> VolumeRecord | None:
        """The record of one volume, or None when there is none."""
        try:
            raw = self.volume_path(uuid).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return VolumeRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise Internal(f"volume record {self.volume_path(uuid)} is corrupt: {exc}") from exc

    def load_volumes(self) -> list[VolumeRecord]:
        """Every volume record of the pool; a corrupt one is logged and skipped."""
        records: list[VolumeRecord] = []
        if not self.volumes_dir.is_dir():
            return records
        for path in sorted(self.volumes_dir.glob("*.json")):
            try:
                records.append(VolumeRecord.model_validate_json(path.read_bytes()))
            except (ValidationError, json.JSONDecodeError, OSError) as exc:
                log.error("skipping unreadable volume record %s: %s", path, exc)
        return records

    def put_volume(self, record: VolumeRecord) -> None:
        atomic_write(self.volume_path(record.uuid), record.model_dump_json(indent=1).encode())

    def remove_volume(self, uuid: str) -> None:
        """Forget a volume (idempotent)."""
        with contextlib.suppress(FileNotFoundError):
            self.volume_path(uuid).unlink()
            fsync_dir(self.volumes_dir)

    # -- snapshots: the same rules in their own folder (snapshot IDs are their own namespace)

    def snapshot_path(self, uuid: str) -> Path:
        return self.snapshots_dir / f"{uuid}.json"

    def read_snapshot(self, uuid: str) -> SnapshotRecord | None:
        """The record of one snapshot, or None when there is none."""
        try:
            raw = self.snapshot_path(uuid).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return SnapshotRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise Internal(f"snapshot record {self.snapshot_path(uuid)} is corrupt: {exc}") from exc

    def load_snapshots(self) -> list[SnapshotRecord]:
        """Every snapshot record of the pool; a corrupt one is logged and skipped."""
        records: list[SnapshotRecord] = []
        if not self.snapshots_dir.is_dir():
            return records
        for path in sorted(self.snapshots_dir.glob("*.json")):
            try:
                records.append(SnapshotRecord.model_validate_json(path.read_bytes()))
            except (ValidationError, json.JSONDecodeError, OSError) as exc:
                log.error("skipping unreadable snapshot record %s: %s", path, exc)
        return records

    def put_snapshot(self, record: SnapshotRecord) -> None:
        self.snapshots_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.snapshot_path(record.uuid), record.model_dump_json(indent=1).encode())

    def remove_snapshot(self, uuid: str) -> None:
        """Forget a snapshot (idempotent)."""
        with contextlib.suppress(FileNotFoundError):
            self.snapshot_path(uuid).unlink()
            fsync_dir(self.snapshots_dir)

    @contextlib.contextmanager
    def pool_lock(self) -> Iterator[None]:
        """Serialise capacity accounting and ID allocation on this pool, across processes."""
        with self._thread_lock:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)
