"""CSI Controller snapshot RPCs (CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot) and
the conversion of CreateVolume's volume_content_source.

A mixin of ControllerServicer, kept in its own module so each topic of the controller stays
small; it contributes its capabilities through SNAPSHOT_CAPABILITIES. Storage work happens in
sharevol.service.snapshots and sharevol.service.clones."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sharevol.catalog.records import ContentSource
from sharevol.csi._proto import csi_pb2
from sharevol.csi.validation import required
from sharevol.errors import InvalidArgument, Unimplemented
from sharevol.service.snapshots import SnapshotService, SnapshotView

_RPC = csi_pb2.ControllerServiceCapability.RPC
SNAPSHOT_CAPABILITIES: tuple[csi_pb2.ControllerServiceCapability.RPC.Type.ValueType, ...] = (
    _RPC.CREATE_DELETE_SNAPSHOT,
    _RPC.LIST_SNAPSHOTS,
    _RPC.GET_SNAPSHOT,
    _RPC.CLONE_VOLUME,
)


class SnapshotRpcs:
    _snapshot_service: SnapshotService | None = None

    def _snapshots(self) -> SnapshotService:
        if self._snapshot_service is None:
            raise Unimplemented("this server offers no snapshots")
        return self._snapshot_service

    def CreateSnapshot(
        self, request: csi_pb2.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateSnapshotResponse:
        name = required(request.name, "name")
        source = required(request.source_volume_id, "source_volume_id")
        view = self._snapshots().create(name, source, dict(request.parameters))
        return csi_pb2.CreateSnapshotResponse(snapshot=snapshot_to_proto(view))

    def DeleteSnapshot(
        self, request: csi_pb2.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteSnapshotResponse:
        self._snapshots().delete(required(request.snapshot_id, "snapshot_id"))
        return csi_pb2.DeleteSnapshotResponse()

    def ListSnapshots(
        self, request: csi_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ListSnapshotsResponse:
        page = self._snapshots().list_page(
            request.starting_token,
            request.max_entries,
            snapshot_id=request.snapshot_id,
            source_volume_id=request.source_volume_id,
        )
        return csi_pb2.ListSnapshotsResponse(
            entries=[
                csi_pb2.ListSnapshotsResponse.Entry(snapshot=snapshot_to_proto(view))
                for view in page.snapshots
            ],
            next_token=page.next_token,
        )

    def GetSnapshot(
        self, request: csi_pb2.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetSnapshotResponse:
        view = self._snapshots().get(required(request.snapshot_id, "snapshot_id"))
        return csi_pb2.GetSnapshotResponse(snapshot=snapshot_to_proto(view))


def snapshot_to_proto(view: SnapshotView) -> csi_pb2.Snapshot:
    """CSI size_bytes is the source's capacity: the smallest volume a restore may have."""
    record = view.record
    created = Timestamp()
    created.FromDatetime(record.created_at)
    return csi_pb2.Snapshot(
        size_bytes=record.size_bytes,
        snapshot_id=record.snapshot_id,
        source_volume_id=record.source_volume_id,
        creation_time=created,
        ready_to_use=view.ready_to_use,
    )


def content_source_from_proto(request: csi_pb2.CreateVolumeRequest) -> ContentSource | None:
    """CreateVolume's volume_content_source in domain form (None when there is none)."""
    if not request.HasField("volume_content_source"):
        return None
    source = request.volume_content_source
    kind = source.WhichOneof("type")
    if kind == "snapshot":
        snapshot_id = required(source.snapshot.snapshot_id, "volume_content_source.snapshot_id")
        return ContentSource(kind="snapshot", source_id=snapshot_id)
    if kind == "volume":
        volume_id = required(source.volume.volume_id, "volume_content_source.volume_id")
        return ContentSource(kind="volume", source_id=volume_id)
    raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")


def content_source_to_proto(source: ContentSource | None) -> csi_pb2.VolumeContentSource | None:
    if source is None:
        return None
    if source.kind == "snapshot":
        return csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=source.source_id)
        )
    return csi_pb2.VolumeContentSource(
        volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source.source_id)
    )
