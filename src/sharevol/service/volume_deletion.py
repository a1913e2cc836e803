"""DeleteVolume of the controller: delete, retain or archive a volume as recorded at create
time. A mixin of Provisioner (sharevol.service.provisioning), which owns the state it uses.

Crash safety (DESIGN.md): the record is first marked `deleting` (with the archive name decided
once), then the volume's hooks and data are dealt with, then the record is forgotten or
re-labelled; a retry after a crash at any point converges.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping

from sharevol.catalog.records import OnDelete, VolumeRecord
from sharevol.errors import FailedPrecondition
from sharevol.service.content import ContentHook
from sharevol.service.hooks import VolumeHook
from sharevol.service.ids import check_id_length, parse_volume_id
from sharevol.service.index import VolumeIndex
from sharevol.service.locate import PoolHandle
from sharevol.service.volume_guard import VolumeGuard

# Under Provisioner's module name: the flow's log lines keep the logger name they always had.
log = logging.getLogger("sharevol.service.provisioning")

MountsOf = Callable[[VolumeRecord], list[str]]
"""Where a volume's directory is mounted on this machine (empty when nowhere)."""


class VolumeDeletion:
    """Provisioner.delete_volume; the attributes below are set by Provisioner.__init__."""

    _pools: Mapping[str, PoolHandle]
    _mounts_of: MountsOf
    index: VolumeIndex
    content: ContentHook | None
    hooks: list[VolumeHook]
    guard: VolumeGuard

    def delete_volume(self, volume_id: str) -> None:
        """Delete, retain or archive a volume as recorded at create time; unknown IDs are OK."""
        check_id_length(volume_id, "volume_id")
        ref = parse_volume_id(volume_id)
        if ref is None or ref.pool not in self._pools:
            return
        with self.guard.hold(volume_id):  # never while a CreateVolume retry resumes it
            self._delete(volume_id)

    def _delete(self, volume_id: str) -> None:
        record = self.index.get(volume_id)
        if record is None or not record.live:
            return
        mounts = self._mounts_of(record) if record.state == "ready" else []
        if mounts:
            raise FailedPrecondition(
                f"volume {record.name!r} is in use: mounted at {', '.join(sorted(mounts))}"
            )
        if self.content is not None:
            self.content.before_delete(record)  # a copy still reading it, or into it
        handle = self._pools[record.pool]
        now = dt.datetime.now(dt.UTC)
        # The archive name is decided once and recorded before anything moves, so a retry after
        # a crash looks for the archive where the first attempt put it.
        # The uuid part keeps two volumes that had the same directory (a subDir template)
        # archived in the same second from ever sharing an archive; the directory part is cut
        # so that the name stays one valid component (at most 128 characters).
        archive_name = record.archive_name or (
            f"{record.directory[:96]}-{now:%Y%m%dT%H%M%SZ}-{record.uuid[:8]}"
        )
        deleting = record.model_copy(update={"state": "deleting", "archive_name": archive_name})
        # Under the pool lock: `sharevol doctor --fix` re-adds a lost export under it after
        # checking the record is ready, so it either finishes before this mark (and retire
        # below removes what it added) or sees `deleting` and leaves the volume alone.
        with handle.catalog.pool_lock():
            handle.catalog.put_volume(deleting)
            self.index.put(deleting)
        for hook in reversed(self.hooks):  # the NFS export goes before the data
            hook.retire(deleting)
        if record.on_delete is OnDelete.DELETE:
            handle.pool.delete_volume(record.directory, record.backend)
            handle.catalog.remove_volume(record.uuid)
            self.index.remove(volume_id)
        elif record.on_delete is OnDelete.RETAIN:
            self._relabel(
                handle, deleting.model_copy(update={"state": "retained", "deleted_at": now})
            )
        else:
            handle.pool.archive_volume(record.directory, archive_name)
            self._relabel(
                handle,
                deleting.model_copy(
                    update={"state": "archived", "deleted_at": now, "archive_name": archive_name}
                ),
            )
        log.info("deleted volume %s (%s): %s", volume_id, record.name, record.on_delete.value)

    def _relabel(self, handle: PoolHandle, record: VolumeRecord) -> None:
        handle.catalog.put_volume(record)
        self.index.put(record)
