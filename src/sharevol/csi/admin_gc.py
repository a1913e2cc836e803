"""Admin ListArchived / PurgeArchived (`sharevol gc`), a mixin of the Admin servicer.

Served by the controller so that its index, which counts archived volumes in the pools'
provisioned bytes, forgets each purged volume at once (sharevol.service.gc)."""

from __future__ import annotations

import datetime as dt

import grpc

from sharevol.csi._proto import admin_pb2
from sharevol.errors import InvalidArgument
from sharevol.service.gc import ArchiveCollector, ArchivedVolume
from sharevol.service.provisioning import Provisioner


class ArchiveAdmin:
    """The gc RPCs; the Admin servicer provides `_need_controller`."""

    def _need_controller(self) -> Provisioner:
        raise NotImplementedError  # provided by AdminServicer

    def ListArchived(
        self, request: admin_pb2.ListArchivedRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListArchivedResponse:
        collector = ArchiveCollector(self._need_controller())
        volumes = collector.archived(request.pool, _age(request.older_than_seconds))
        return admin_pb2.ListArchivedResponse(volumes=[_info(v) for v in volumes])

    def PurgeArchived(
        self, request: admin_pb2.PurgeArchivedRequest, context: grpc.ServicerContext
    ) -> admin_pb2.PurgeArchivedResponse:
        collector = ArchiveCollector(self._need_controller())
        outcome = collector.purge(
            request.pool, _age(request.older_than_seconds), list(request.volume_ids)
        )
        return admin_pb2.PurgeArchivedResponse(
            purged=[_info(v) for v in outcome.purged],
            failed=[
                admin_pb2.PurgeFailure(volume_id=f.volume_id, message=f.message)
                for f in outcome.failed
            ],
        )


def _age(seconds: int) -> dt.timedelta:
    if seconds < 0:
        raise InvalidArgument("older_than_seconds must not be negative")
    return dt.timedelta(seconds=seconds)


def _info(volume: ArchivedVolume) -> admin_pb2.ArchivedVolume:
    record = volume.record
    deleted = record.deleted_at or record.created_at
    return admin_pb2.ArchivedVolume(
        volume_id=record.volume_id,
        name=record.name,
        pool=record.pool,
        archive_name=record.archive_name or "",
        path=str(volume.path),
        capacity_bytes=record.capacity_bytes,
        used_bytes=volume.used_bytes,
        deleted_unix=int(deleted.timestamp()),
    )
