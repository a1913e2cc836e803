"""CSI Controller snapshot RPCs (CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot).

A mixin of ControllerServicer, kept in its own module so each topic of the controller stays
small; it contributes its capabilities through SNAPSHOT_CAPABILITIES."""

from __future__ import annotations

import grpc

from sharevol.csi._proto import csi_pb2
from sharevol.errors import Unimplemented

SNAPSHOT_CAPABILITIES: tuple[csi_pb2.ControllerServiceCapability.RPC.Type.ValueType, ...] = ()


class SnapshotRpcs:
    def CreateSnapshot(
        self, request: csi_pb2.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateSnapshotResponse:
        raise Unimplemented("snapshots are not offered yet")

    def DeleteSnapshot(
        self, request: csi_pb2.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteSnapshotResponse:
        raise Unimplemented("snapshots are not offered yet")

    def ListSnapshots(
        self, request: csi_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ListSnapshotsResponse:
        raise Unimplemented("snapshots are not offered yet")

    def GetSnapshot(
        self, request: csi_pb2.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetSnapshotResponse:
        raise Unimplemented("snapshots are not offered yet")
