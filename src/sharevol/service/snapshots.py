"""Snapshot lifecycle: create (idempotent by name), delete, list with pagination, get.

A snapshot lives in its source volume's pool and never depends on the volume afterwards. btrfs
and reflink pools cut it before CreateSnapshot returns; other pools copy in the background:
CreateSnapshot answers `ready_to_use=false` at once and later calls answer true. The record is
written first (state `creating`), so a retry or a restart resumes from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from sharevol.catalog.records import SnapshotRecord, VolumeRecord
from sharevol.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SharevolError,
)
from sharevol.pools.base import CopyOutcome
from sharevol.service.copy_jobs import CopyJobs
from sharevol.service.ids import check_id_length, new_volume_ref, parse_volume_id
from sharevol.service.locate import PoolHandle
from sharevol.service.params import parse_model
from sharevol.service.provisioning import Provisioner
from sharevol.service.snapshot_index import SnapshotIndex
from sharevol.sys.copy_control import CopyCancelled, CopyControl
from sharevol.units import format_size

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "csi.storage.k8s.io/volumesnapshot/name"
SNAPSHOT_NAMESPACE = "csi.storage.k8s.io/volumesnapshot/namespace"
SNAPSHOT_CONTENT_NAME = "csi.storage.k8s.io/volumesnapshotcontent/name"


class SnapshotParameters(BaseModel):
    """VolumeSnapshotClass parameters: only what the external-snapshotter adds with
    `--extra-create-metadata`; anything else is INVALID_ARGUMENT (a typo must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    snapshot_name: str | None = Field(default=None, alias=SNAPSHOT_NAME, max_length=253)
    snapshot_namespace: str | None = Field(default=None, alias=SNAPSHOT_NAMESPACE, max_length=63)
    content_name: str | None = Field(default=None, alias=SNAPSHOT_CONTENT_NAME, max_length=253)


def parse_snapshot_parameters(values: Mapping[str, str]) -> SnapshotParameters:
    """Validate VolumeSnapshotClass parameters (the snapshotter's metadata keys only)."""
    return parse_model(SnapshotParameters, values)


@dataclass(frozen=True)
class SnapshotView:
    """A snapshot record with the live progress of its copy (when one runs)."""

    record: SnapshotRecord
    done_bytes: int = 0
    total_bytes: int = 0

    @property
    def ready_to_use(self) -> bool:
        return self.record.state == "ready"


@dataclass(frozen=True)
class SnapshotPage:
    snapshots: list[SnapshotView]
    next_token: str


def snapshot_job_key(snapshot_id: str) -> str:
    return f"snapshot:{snapshot_id}"


def volume_source_key(volume_id: str) -> str:
    return f"volume:{volume_id}"


class SnapshotService:
    """The snapshots of every pool this controller serves."""

    def __init__(self, provisioner: Provisioner, jobs: CopyJobs) -> None:
        self._provisioner = provisioner
        self._pools = provisioner.pools()
        self._jobs = jobs
        self.state_lock = threading.RLock()
        """Serialises record state changes with the checks that depend on them (a clone
        starting to read a snapshot vs. its deletion)."""
        self.index = SnapshotIndex(
            record for handle in self._pools.values() for record in handle.catalog.load_snapshots()
        )

    def resume(self) -> None:
        """After a (re)start: finish interrupted deletes, start interrupted copies again."""
        for record in self.index.records():
            try:
                if record.state == "deleting":
                    self._remove(record)
                elif record.state == "copying":
                    self._submit_copy(record)
            except SharevolError as exc:
                log.error("cannot resume snapshot %s (%s): %s", record.snapshot_id, record.name,
                          exc)  # fmt: skip

    # -- create ---------------------------------------------------------------------------

    def create(
        self, name: str, source_volume_id: str, parameters: Mapping[str, str]
    ) -> SnapshotView:
        """CreateSnapshot: the named snapshot, cut now or being copied; idempotent by name."""
        parse_snapshot_parameters(parameters)
        check_id_length(source_volume_id, "source_volume_id")
        existing = self.index.by_name(name)
        if existing is not None:
            if existing.source_volume_id != source_volume_id:
                raise AlreadyExists(
                    f"snapshot {name!r} already exists for volume {existing.source_volume_id}, "
                    f"not {source_volume_id}"
                )
            return self._continue(existing)
        source = self._provisioner.get(source_volume_id)
        handle = self._pools[source.pool]
        capabilities = handle.pool.capabilities
        if not capabilities.instant_snapshot:
            self._check_space(handle, source)
        ref = new_volume_ref(source.pool)
        record = SnapshotRecord(
            snapshot_id=ref.volume_id,
            name=name,
            pool=source.pool,
            uuid=ref.uuid,
            directory=ref.uuid,
            source_volume_id=source.volume_id,
            size_bytes=source.capacity_bytes,
            source_kind=source.kind,
            source_fs_type=source.fs_type,
            method=capabilities.snapshot_method,
            parameters=dict(parameters),
        )
        self._save(record)
        if capabilities.instant_snapshot:
            return self._cut(record, source)
        return self._start_copy(record)

    def _continue(self, record: SnapshotRecord) -> SnapshotView:
        """A retry of CreateSnapshot for a snapshot that has a record."""
        if record.state == "ready":
            return SnapshotView(record)
        if record.state == "deleting":
            raise Aborted(f"snapshot {record.name!r} is being deleted; retry later")
        if record.state == "creating":
            if self._pools[record.pool].pool.capabilities.instant_snapshot:
                return self._cut(record, self._source_of(record))
            return self._start_copy(record)
        job = self._jobs.get(snapshot_job_key(record.snapshot_id))
        if job is None:
            return self._start_copy(record)
        if job.running:
            return self.view(record)
        error = job.error()
        self._jobs.forget(job.key)
        current = self.index.get(record.snapshot_id) or record
        if error is None:
            return SnapshotView(current)
        if isinstance(error, CopyCancelled):  # the server was stopping: copy again
            return self._start_copy(current)
        self._discard(current)
        if isinstance(error, SharevolError):
            raise error
        raise Internal(f"copying snapshot {record.name!r} failed: {error}")

    def _source_of(self, record: SnapshotRecord) -> VolumeRecord:
        source = self._provisioner.index.get(record.source_volume_id)
        if source is None or source.state != "ready":
            self._discard(record)
            raise NotFound(f"volume {record.source_volume_id!r} not found")
        return source

    def _cut(self, record: SnapshotRecord, source: VolumeRecord) -> SnapshotView:
        """Make an instant snapshot (btrfs, reflink) and mark it ready."""
        handle = self._pools[record.pool]
        try:
            with self._jobs.reading(volume_source_key(source.volume_id)):
                outcome = handle.pool.create_snapshot(
                    source.directory, record.directory, record.size_bytes
                )
        except SharevolError:
            log.exception("snapshot %s of %s failed; removing it", record.name, source.name)
            self._discard(record)
            raise
        return SnapshotView(self._mark_ready(record, outcome))

    def _start_copy(self, record: SnapshotRecord) -> SnapshotView:
        with self.state_lock:
            current = self.index.get(record.snapshot_id)
            if current is None or current.state == "deleting":
                raise Aborted(f"snapshot {record.name!r} is being deleted; retry later")
            copying = current.model_copy(update={"state": "copying", "progress": 0.0})
            self._save(copying)
            self._submit_copy(copying)
        return self.view(copying)

    def _submit_copy(self, record: SnapshotRecord) -> None:
        source = self._source_of(record)
        handle = self._pools[record.pool]

        def work(control: CopyControl) -> CopyOutcome:
            outcome = handle.pool.create_snapshot(
                source.directory, record.directory, record.size_bytes, control
            )
            self._mark_ready(record, outcome)
            return outcome

        self._jobs.submit(
            snapshot_job_key(record.snapshot_id), work, reads=(volume_source_key(source.volume_id),)
        )

    def _mark_ready(self, record: SnapshotRecord, outcome: CopyOutcome) -> SnapshotRecord:
        with self.state_lock:
            current = self.index.get(record.snapshot_id)
            if current is None or current.state == "deleting":
                return record  # deleted meanwhile: the delete removes the data
            ready = current.model_copy(
                update={
                    "state": "ready",
                    "progress": 1.0,
                    "backend": outcome.backend,
                    "data_bytes": outcome.data_bytes,
                }
            )
            self._save(ready)
        log.info("snapshot %s (%s) of %s ready: %s by %s", ready.snapshot_id, ready.name,
                 ready.source_volume_id, format_size(ready.data_bytes), ready.method)  # fmt: skip
        return ready

    def _check_space(self, handle: PoolHandle, source: VolumeRecord) -> None:
        """A copy needs room for the source's data; refuse up front rather than fill the pool."""
        used = handle.pool.usage(source.directory, source.capacity_bytes, source.backend)
        free = handle.pool.space().free_bytes
        if used.used_bytes > free:
            raise ResourceExhausted(
                f"pool {handle.pool.name!r} has {format_size(free)} free; a copy of volume "
                f"{source.name!r} needs {format_size(used.used_bytes)}"
            )

    # -- delete ---------------------------------------------------------------------------

    def delete(self, snapshot_id: str) -> None:
        """DeleteSnapshot: unknown is OK; FAILED_PRECONDITION while a clone copies from it."""
        check_id_length(snapshot_id, "snapshot_id")
        ref = parse_volume_id(snapshot_id)
        if ref is None or ref.pool not in self._pools:
            return
        record = self.index.get(snapshot_id)
        if record is None:
            return
        with self.state_lock:
            readers = self._jobs.readers_of(snapshot_job_key(snapshot_id))
            if readers:
                raise FailedPrecondition(
                    f"snapshot {record.name!r} is in use: {', '.join(readers)} still copies "
                    "from it; retry when that copy is done"
                )
            record = self.index.get(snapshot_id) or record
            deleting = record.model_copy(update={"state": "deleting"})
            self._save(deleting)
        # Marked first, cancelled second (outside the lock: the copy's last step takes it): a
        # CreateSnapshot retry now sees `deleting` and cannot start the copy again.
        self._jobs.cancel(snapshot_job_key(snapshot_id))
        self._remove(deleting)

    def _remove(self, record: SnapshotRecord) -> None:
        handle = self._pools[record.pool]
        handle.pool.delete_snapshot(record.directory)
        handle.catalog.remove_snapshot(record.uuid)
        self.index.remove(record.snapshot_id)
        log.info("deleted snapshot %s (%s)", record.snapshot_id, record.name)

    def _discard(self, record: SnapshotRecord) -> None:
        """Remove a snapshot that never became ready (failed copy, vanished source)."""
        try:
            self._pools[record.pool].pool.delete_snapshot(record.directory)
        except SharevolError as exc:
            log.error("cannot remove the partial snapshot %s: %s", record.directory, exc)
            return
        self._pools[record.pool].catalog.remove_snapshot(record.uuid)
        self.index.remove(record.snapshot_id)

    # -- queries --------------------------------------------------------------------------

    def get(self, snapshot_id: str) -> SnapshotView:
        """GetSnapshot: a snapshot (ready or being copied), or NotFound."""
        check_id_length(snapshot_id, "snapshot_id")
        record = self.index.get(snapshot_id) if parse_volume_id(snapshot_id) else None
        if record is None or record.state == "deleting":
            raise NotFound(f"snapshot {snapshot_id!r} not found")
        return self.view(record)

    def get_by_name(self, name: str) -> SnapshotView:
        record = self.index.by_name(name)
        if record is None or record.state == "deleting":
            raise NotFound(f"no snapshot named {name!r}")
        return self.view(record)

    def list_page(
        self,
        starting_token: str,
        max_entries: int,
        snapshot_id: str = "",
        source_volume_id: str = "",
    ) -> SnapshotPage:
        """ListSnapshots in snapshot-ID order; the token is the last ID of the previous page
        (a token that cannot be one is ABORTED). Filters that match nothing give an empty page."""
        if max_entries < 0:
            raise InvalidArgument("max_entries must not be negative")
        if starting_token and parse_volume_id(starting_token) is None:
            raise Aborted(f"invalid starting_token {starting_token[:64]!r}")
        records = [
            r
            for r in self.index.records()
            if r.state != "deleting"
            and (not snapshot_id or r.snapshot_id == snapshot_id)
            and (not source_volume_id or r.source_volume_id == source_volume_id)
            and (not starting_token or r.snapshot_id > starting_token)
        ]
        next_token = ""
        if max_entries and len(records) > max_entries:
            records = records[:max_entries]
            next_token = records[-1].snapshot_id
        return SnapshotPage([self.view(r) for r in records], next_token)

    def view(self, record: SnapshotRecord) -> SnapshotView:
        if record.state == "ready":
            return SnapshotView(record, record.data_bytes, record.data_bytes)
        job = self._jobs.get(snapshot_job_key(record.snapshot_id))
        done, total = job.progress if job is not None else (0, 0)
        return SnapshotView(record, done, total)

    def _save(self, record: SnapshotRecord) -> None:
        self._pools[record.pool].catalog.put_snapshot(record)
        self.index.put(record)
