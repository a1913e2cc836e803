"""Stuck records are finished by the very code the controller runs when a CO retries: a
`creating` record by CreateVolume's retry path, a `deleting` one by DeleteVolume, a snapshot
by the snapshot service. So doctor never has its own idea of how a volume is made or removed.

The services are built over doctor's own (started) pools on first use, with the same in-use
check as the server (mounts and loop devices on this machine refuse a delete).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from sharevol.catalog.records import SnapshotRecord, VolumeRecord
from sharevol.pools.config import ServerConfig
from sharevol.service.clones import CloneService
from sharevol.service.copy_jobs import CopyJobs
from sharevol.service.images import ImageFiles
from sharevol.service.inuse import mount_points_of
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.service.snapshots import SnapshotService
from sharevol.sys.mounts import SystemMounter
from sharevol.sys.runner import SubprocessRunner


class ServiceRepairs:
    """RecordRepairs over a Provisioner and a SnapshotService of doctor's pools."""

    def __init__(self, config: ServerConfig, handles: Mapping[str, PoolHandle]) -> None:
        self._config = config
        self._handles = handles
        self._provisioner: Provisioner | None = None
        self._snapshots: SnapshotService | None = None
        self._jobs: CopyJobs | None = None

    def provisioner(self) -> Provisioner:
        if self._provisioner is None:
            runner = SubprocessRunner()
            mounter = SystemMounter(runner)
            images = ImageFiles(runner)

            def mounts_of(record: VolumeRecord) -> list[str]:
                path = self._handles[record.pool].pool.volume_path(record.directory)
                return [*mount_points_of(mounter, path), *images.users(path)]

            provisioner = Provisioner(
                self._handles,
                self._config.default,
                socket.gethostname(),
                mounts_of=mounts_of,
                images=images,
            )
            # Restores and clones as the server makes them (the checks offer only instant ones)
            self._jobs = CopyJobs(workers=1)
            self._snapshots = SnapshotService(provisioner, self._jobs)
            provisioner.content = CloneService(provisioner, self._snapshots, self._jobs)
            self._provisioner = provisioner
        return self._provisioner

    def snapshots(self) -> SnapshotService:
        self.provisioner()
        assert self._snapshots is not None  # noqa: S101 - made with the provisioner
        return self._snapshots

    def finish_create(self, record: VolumeRecord) -> None:
        """CreateVolume again with what the record asked: the retry path makes the volume
        (idempotently) and marks it ready."""
        self.provisioner().create_volume(
            CreateRequest(
                name=record.name,
                capabilities=record.capabilities,
                required_bytes=record.capacity_bytes,
                limit_bytes=record.capacity_bytes,
                parameters=dict(record.parameters),
                mutable_parameters=dict(record.mutable_parameters),
                content_source=record.content_source,
            )
        )

    def finish_delete(self, record: VolumeRecord) -> None:
        """DeleteVolume again: the record's onDelete policy is applied as recorded."""
        self.provisioner().delete_volume(record.volume_id)

    def finish_snapshot(self, record: SnapshotRecord) -> None:
        """DeleteSnapshot again for a `deleting` record; CreateSnapshot again for a `creating`
        one (instant pools only: the check offers nothing for copies)."""
        service = self.snapshots()
        if record.state == "deleting":
            service.delete(record.snapshot_id)
        else:
            service.create(record.name, record.source_volume_id, record.parameters)

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.shutdown()
