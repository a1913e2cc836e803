"""sharevol's Admin service: what the CLI needs that CSI has no RPC for (usage of every volume,
lookup by name, the node's publications, pool accounting)."""

from __future__ import annotations

import logging

import grpc

from sharevol.catalog.records import VolumeRecord
from sharevol.csi._proto import admin_pb2, admin_pb2_grpc
from sharevol.errors import InvalidArgument, SharevolError, Unimplemented
from sharevol.service.provisioning import Provisioner
from sharevol.service.publishing import NodePublisher

log = logging.getLogger(__name__)


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, provisioner: Provisioner | None, publisher: NodePublisher | None) -> None:
        self._provisioner = provisioner
        self._publisher = publisher

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
        return admin_pb2.VolumeInfo(
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
