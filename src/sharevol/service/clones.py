"""Restores and clones: CreateVolume with a `volume_content_source` (a snapshot or a volume).

The Provisioner makes the reservation as for any volume and calls `populate` instead of making
an empty volume. btrfs and reflink pools populate at once; other pools copy in the background
and CreateVolume answers ABORTED with the progress until the copy is done (as ceph-csi does;
the CSI spec allows it and the external-provisioner retries), then the same CreateVolume
returns the volume. A source that a copy still reads cannot be deleted meanwhile.
"""

from __future__ import annotations

import contextlib
import logging

from sharevol.catalog.records import ContentSource, VolumeRecord
from sharevol.errors import Aborted, FailedPrecondition, Internal, NotFound, SharevolError
from sharevol.pools.base import ContentRef, CopyOutcome
from sharevol.service.content import Origin
from sharevol.service.copy_jobs import CopyJobs
from sharevol.service.ids import check_id_length, parse_volume_id
from sharevol.service.provisioning import Provisioner
from sharevol.service.snapshots import SnapshotService, snapshot_job_key, volume_source_key
from sharevol.sys.copy_control import CopyCancelled, CopyControl

log = logging.getLogger(__name__)


def clone_job_key(volume_id: str) -> str:
    return f"clone:{volume_id}"


class CloneService:
    """The Provisioner's content hook (see Provisioner.content)."""

    def __init__(
        self, provisioner: Provisioner, snapshots: SnapshotService, jobs: CopyJobs
    ) -> None:
        self._provisioner = provisioner
        self._snapshots = snapshots
        self._jobs = jobs

    def resolve(self, source: ContentSource) -> Origin:
        """The ready snapshot or volume a request names: NotFound if there is none, Aborted
        while a snapshot is still being copied."""
        check_id_length(source.source_id, f"{source.kind} id")
        missing = NotFound(f"source {source.kind} {source.source_id!r} not found")
        if parse_volume_id(source.source_id) is None:
            raise missing
        if source.kind == "snapshot":
            snapshot = self._snapshots.index.get(source.source_id)
            if snapshot is None or snapshot.state == "deleting":
                raise missing
            if snapshot.state != "ready":
                view = self._snapshots.view(snapshot)
                copied = _percent(view.done_bytes, view.total_bytes)
                raise Aborted(f"snapshot {snapshot.name!r} is not ready yet ({copied}); retry")
            return Origin(
                snapshot.pool,
                snapshot.size_bytes,
                ContentRef("snapshot", snapshot.directory),
                snapshot_job_key(snapshot.snapshot_id),
                snapshot.source_kind,
                snapshot.source_fs_type,
            )
        volume = self._provisioner.index.get(source.source_id)
        if volume is None or volume.state != "ready":
            raise missing
        return Origin(
            volume.pool,
            volume.capacity_bytes,
            ContentRef("volume", volume.directory),
            volume_source_key(volume.volume_id),
            volume.kind,
            volume.fs_type,
        )

    def populate(self, record: VolumeRecord) -> dict[str, int | str]:
        """Fill the reserved volume from its source; returns the pool facts to record, or
        raises Aborted while a background copy runs."""
        source = _source_of(record)
        pool = self._provisioner.pools()[record.pool].pool
        if pool.capabilities.instant_snapshot:
            with contextlib.ExitStack() as stack:
                with self._snapshots.state_lock:
                    origin = self.resolve(source)
                    stack.enter_context(self._jobs.reading(origin.reader_key))
                outcome = pool.clone_volume(origin.ref, record.directory, record.capacity_bytes)
            return outcome.backend
        key = clone_job_key(record.volume_id)
        job = self._jobs.get(key)
        if job is None:
            self._start(record)
            raise Aborted(f"volume {record.name!r}: copying from its source started; retry")
        if job.running:
            done, total = job.progress
            raise Aborted(
                f"volume {record.name!r} is being copied from its source "
                f"({_percent(done, total)}); retry"
            )
        error = job.error()
        self._jobs.forget(key)
        if isinstance(error, CopyCancelled):  # the server was stopping: copy again
            self._start(record)
            raise Aborted(f"volume {record.name!r}: copying from its source restarted; retry")
        if isinstance(error, SharevolError):
            raise error
        if error is not None:
            raise Internal(f"copying into volume {record.name!r} failed: {error}")
        result = job.future.result()
        if not isinstance(result, CopyOutcome):
            raise Internal(f"copy into volume {record.name!r} returned {result!r}")
        return result.backend

    def _start(self, record: VolumeRecord) -> None:
        source = _source_of(record)
        pool = self._provisioner.pools()[record.pool].pool

        def work(control: CopyControl) -> CopyOutcome:
            return pool.clone_volume(origin.ref, record.directory, record.capacity_bytes, control)

        with self._snapshots.state_lock:
            origin = self.resolve(source)
            self._jobs.submit(clone_job_key(record.volume_id), work, reads=(origin.reader_key,))
        log.info("volume %s (%s): copying from %s %s in the background", record.volume_id,
                 record.name, source.kind, source.source_id)  # fmt: skip

    def before_delete(self, record: VolumeRecord) -> None:
        """Refuse to delete a volume that a copy still reads; stop a copy into the volume."""
        readers = self._jobs.readers_of(volume_source_key(record.volume_id))
        if readers:
            raise FailedPrecondition(
                f"volume {record.name!r} is in use: {', '.join(readers)} still copies from it; "
                "retry when that copy is done"
            )
        self._jobs.cancel(clone_job_key(record.volume_id))

    def progress(self, volume_id: str) -> tuple[int, int] | None:
        """(bytes done, bytes in all) of a background copy into the volume, if one runs."""
        job = self._jobs.get(clone_job_key(volume_id))
        return job.progress if job is not None and job.running else None

    def resume(self) -> None:
        """After a (re)start: copy again into volumes whose copy was interrupted."""
        for record in self._provisioner.index.records():
            if record.state != "creating" or record.content_source is None:
                continue
            handle = self._provisioner.pools().get(record.pool)
            if handle is None or handle.pool.capabilities.instant_snapshot:
                continue
            try:
                self._start(record)
            except SharevolError as exc:
                log.error("cannot resume the copy into volume %s: %s", record.volume_id, exc)


def _source_of(record: VolumeRecord) -> ContentSource:
    if record.content_source is None:
        raise Internal(f"volume {record.volume_id} has no content source to copy from")
    return record.content_source


def _percent(done: int, total: int) -> str:
    return f"{100 * done // total}%" if total else "0%"
