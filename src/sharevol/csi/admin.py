"""sharevol's Admin service: what the CLI needs that CSI has no RPC for (usage of every volume,
lookup by name, the node's publications, pool accounting)."""

from __future__ import annotations

import logging

import grpc

from sharevol.catalog.records import VolumeRecord
from sharevol.csi._proto import admin_pb2, admin_pb2_grpc
from sharevol.csi.admin_gc import ArchiveAdmin
from sharevol.errors import InvalidArgument, SharevolError, Unimplemented
from sharevol.service.clones import CloneService
from sharevol.service.provisioning import Provisioner
from sharevol.service.publishing import NodePublisher
from sharevol.service.snapshots import SnapshotService, SnapshotView

log = logging.getLogger(__name__)


class AdminServicer(ArchiveAdmin, admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        provisioner: Provisioner | None,
        publisher: NodePublisher | None,
        snapshots: SnapshotService | None = None,
        clones: CloneService | None = None,
    ) -> None:
        self._provisioner = provisioner
        self._publisher = publisher
        self._snapshots = snapshots
        self._clones = clones

    def ListVolumes(
        self, request: admin_pb2.ListVolumesRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListVolumesResponse:
        provisioner = self._need_controller()
        targets = self._targets()
        return admin_pb2.ListVolumesResponse(
            volumes=[self._info(r, targets) for r in provisioner.index.records() if r.live]
        )

    def GetVolume(
        self, request: admin_pb2.GetVolumeRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetVolumeResponse:
        provisioner = self._need_controller()
        if request.volume_id:
            record = provisioner.get(request.volume_id)
        elif request.name:
            record = provisioner.get_by_name(request.name)
        else:
            raise InvalidArgument("give a volume name or a volume_id")
        return admin_pb2.GetVolumeResponse(volume=self._info(record, self._targets()))

    def ListPools(
        self, request: admin_pb2.ListPoolsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListPoolsResponse:
        provisioner = self._need_controller()
        pools = []
        for name, handle in provisioner.pools().items():
            space = handle.pool.space()
            records = provisioner.index.records(name)
            pools.append(
                admin_pb2.PoolInfo(
                    name=name,
                    kind=handle.pool.kind,
                    path=str(handle.pool.root),
                    total_bytes=space.total_bytes,
                    free_bytes=space.free_bytes,
                    provisioned_bytes=provisioner.index.provisioned_bytes(name),
                    available_bytes=provisioner.available_bytes(name),
                    quota_enforced=handle.pool.capabilities.enforces_quota,
                    node_local=handle.pool.capabilities.node_local,
                    volume_count=sum(1 for r in records if r.live),
                )
            )
        return admin_pb2.ListPoolsResponse(pools=pools)

    def ListPublications(
        self, request: admin_pb2.ListPublicationsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListPublicationsResponse:
        if self._publisher is None:
            raise Unimplemented("this server runs no node service")
        return admin_pb2.ListPublicationsResponse(
            publications=[
                admin_pb2.Publication(
                    volume_id=p.volume_id,
                    target_path=str(p.target_path),
                    staging_path=str(p.staging_path),
                    readonly=p.readonly,
                )
                for p in self._publisher.publications()
            ]
        )

    def ListSnapshots(
        self, request: admin_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListSnapshotsResponse:
        snapshots = self._need_snapshots()
        page = snapshots.list_page("", 0)
        return admin_pb2.ListSnapshotsResponse(
            snapshots=[self._snapshot_info(view) for view in page.snapshots]
        )

    def GetSnapshot(
        self, request: admin_pb2.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetSnapshotResponse:
        snapshots = self._need_snapshots()
        if request.snapshot_id:
            view = snapshots.get(request.snapshot_id)
        elif request.name:
            view = snapshots.get_by_name(request.name)
        else:
            raise InvalidArgument("give a snapshot name or a snapshot_id")
        return admin_pb2.GetSnapshotResponse(snapshot=self._snapshot_info(view))

    def _need_snapshots(self) -> SnapshotService:
        if self._snapshots is None:
            raise Unimplemented("this server runs no controller service")
        return self._snapshots

    def _snapshot_info(self, view: SnapshotView) -> admin_pb2.SnapshotInfo:
        record = view.record
        provisioner = self._need_controller()
        source = provisioner.index.get(record.source_volume_id)
        path = provisioner.pools()[record.pool].pool.snapshot_path(record.directory)
        return admin_pb2.SnapshotInfo(
            snapshot_id=record.snapshot_id,
            name=record.name,
            pool=record.pool,
            source_volume_id=record.source_volume_id,
            source_volume_name=source.name if source is not None and source.live else "",
            size_bytes=record.size_bytes,
            data_bytes=record.data_bytes,
            method=record.method,
            state=record.state,
            ready_to_use=view.ready_to_use,
            copied_bytes=view.done_bytes,
            copy_total_bytes=view.total_bytes,
            created_unix=int(record.created_at.timestamp()),
            path=str(path),
        )

    def _need_controller(self) -> Provisioner:
        if self._provisioner is None:
            raise Unimplemented("this server runs no controller service")
        return self._provisioner

    def _targets(self) -> dict[str, list[str]]:
        targets: dict[str, list[str]] = {}
        if self._publisher is not None:
            for publication in self._publisher.publications():
                targets.setdefault(publication.volume_id, []).append(str(publication.target_path))
        return targets

    def _info(self, record: VolumeRecord, targets: dict[str, list[str]]) -> admin_pb2.VolumeInfo:
        provisioner = self._need_controller()
        used_bytes = used_inodes = 0
        if record.state == "ready":
            try:
                usage = provisioner.usage(record)
                used_bytes, used_inodes = usage.used_bytes, usage.used_inodes
            except SharevolError as exc:
                log.warning("cannot read usage of %s: %s", record.volume_id, exc)
        path = provisioner.pools()[record.pool].pool.volume_path(record.directory)
        info = admin_pb2.VolumeInfo(
            volume_id=record.volume_id,
            name=record.name,
            pool=record.pool,
            capacity_bytes=record.capacity_bytes,
            used_bytes=used_bytes,
            quota_enforced=record.quota_enforced,
            access_modes=[c.access_mode.value for c in record.capabilities],
            access_type=record.access_type,
            on_delete=record.on_delete.value,
            state=record.state,
            created_unix=int(record.created_at.timestamp()),
            path=str(path),
            used_inodes=used_inodes,
            published_targets=targets.get(record.volume_id, []),
            parameters=record.parameters,
        )
        self._add_content_source(info, record)
        return info

    def _add_content_source(self, info: admin_pb2.VolumeInfo, record: VolumeRecord) -> None:
        """Where a restore or clone came from, and the progress of its copy while one runs."""
        if record.content_source is None:
            return
        info.content_source_kind = record.content_source.kind
        info.content_source_id = record.content_source.source_id
        progress = self._clones.progress(record.volume_id) if self._clones else None
        if progress is not None:
            info.copied_bytes, info.copy_total_bytes = progress
