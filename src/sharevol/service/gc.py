"""`sharevol gc`: purge archived volumes older than an age, data first, then the record.

It runs inside the controller (Admin ListArchived/PurgeArchived) because the controller's index
counts archived volumes in each pool's provisioned bytes: a purge behind its back would keep
that space promised until a restart. Only `archived` records are ever purged; `retained` ones
are the admin's to remove, never gc's. A purge is idempotent: a crash between removing the data
and the record leaves an archived record whose data is gone, and the next purge finishes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sharevol.catalog.records import VolumeRecord
from sharevol.errors import Aborted, InvalidArgument, NotFound, SharevolError, Unimplemented
from sharevol.pools.base import ARCHIVE_DIR, ArchivePool, safe_child
from sharevol.service.provisioning import Provisioner

log = logging.getLogger(__name__)

UNKNOWN_BYTES = -1


@dataclass(frozen=True)
class ArchivedVolume:
    """An archived volume as gc sees it: its record, where its data is, and how much."""

    record: VolumeRecord
    path: Path
    used_bytes: int
    """Bytes its data holds; -1 when the pool cannot tell (or the data is already gone)."""


@dataclass(frozen=True)
class PurgeFailure:
    volume_id: str
    message: str


@dataclass(frozen=True)
class PurgeOutcome:
    purged: list[ArchivedVolume]
    failed: list[PurgeFailure]


class ArchiveCollector:
    """Lists and purges the archived volumes of the controller's pools."""

    _running = threading.Lock()
    """One purge at a time in the process: a second `sharevol gc --yes` gets ABORTED."""

    def __init__(self, provisioner: Provisioner) -> None:
        self._provisioner = provisioner

    def archived(
        self,
        pool: str = "",
        older_than: dt.timedelta = dt.timedelta(0),
        now: dt.datetime | None = None,
    ) -> list[ArchivedVolume]:
        """Archived volumes (of one pool, or all) deleted at least `older_than` ago, oldest
        first, each with the bytes its data holds."""
        return [self._describe(r) for r in self._candidates(pool, older_than, now)]

    def purge(
        self,
        pool: str = "",
        older_than: dt.timedelta = dt.timedelta(0),
        volume_ids: Iterable[str] = (),
        now: dt.datetime | None = None,
    ) -> PurgeOutcome:
        """Purge the archived volumes that match (only those of `volume_ids` when given); a
        failure on one is reported and the others go on."""
        if not self._running.acquire(blocking=False):
            raise Aborted("another gc purge is running; retry when it is done")
        try:
            wanted = set(volume_ids)
            purged: list[ArchivedVolume] = []
            failed: list[PurgeFailure] = []
            for record in self._candidates(pool, older_than, now):
                if wanted and record.volume_id not in wanted:
                    continue
                try:
                    purged.append(self._purge(record))
                except SharevolError as exc:
                    log.error("gc: cannot purge volume %s: %s", record.volume_id, exc)
                    failed.append(PurgeFailure(record.volume_id, str(exc)))
            return PurgeOutcome(purged, failed)
        finally:
            self._running.release()

    def _candidates(
        self, pool: str, older_than: dt.timedelta, now: dt.datetime | None
    ) -> list[VolumeRecord]:
        if older_than < dt.timedelta(0):
            raise InvalidArgument("the age must not be negative")
        pools = self._provisioner.pools()
        if pool and pool not in pools:
            raise InvalidArgument(f"unknown pool {pool!r} (pools: {', '.join(pools)})")
        cutoff = (now or dt.datetime.now(dt.UTC)) - older_than
        chosen = [
            record
            for record in self._provisioner.index.records(pool or None)
            if record.state == "archived"
            and record.archive_name is not None
            and record.deleted_at is not None
            and record.deleted_at <= cutoff
        ]
        return sorted(chosen, key=lambda r: (r.deleted_at or cutoff, r.volume_id))

    def _archive_pool(self, record: VolumeRecord) -> ArchivePool:
        pool = self._provisioner.pools()[record.pool].pool
        if not isinstance(pool, ArchivePool):
            raise Unimplemented(
                f"pool {record.pool!r} ({pool.kind}) cannot purge archives yet; remove "
                f"archive/{record.archive_name} by hand"
            )
        return pool

    def _describe(self, record: VolumeRecord) -> ArchivedVolume:
        pool = self._provisioner.pools()[record.pool].pool
        path = safe_child(pool.root / ARCHIVE_DIR, record.archive_name or "")
        used = UNKNOWN_BYTES
        if isinstance(pool, ArchivePool):
            try:
                used = pool.archive_usage(record.archive_name or "")
            except NotFound:
                used = 0  # the data went already (a purge cut short): the record remains
            except SharevolError as exc:
                log.warning("gc: cannot measure %s: %s", path, exc)
        return ArchivedVolume(record, path, used)

    def _purge(self, record: VolumeRecord) -> ArchivedVolume:
        """Data first, then the record: a crash in between is finished by the next purge."""
        described = self._describe(record)
        handle = self._provisioner.pools()[record.pool]
        self._archive_pool(record).purge_archive(record.archive_name or "")
        handle.catalog.remove_volume(record.uuid)
        self._provisioner.index.remove(record.volume_id)
        log.info(
            "gc: purged archived volume %s (%s) from %s",
            record.volume_id,
            record.name,
            described.path,
        )
        return described
