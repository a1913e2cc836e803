"""CSI Controller: validate, call the Provisioner, build the response. No storage work here."""

from __future__ import annotations

import grpc

from sharevol.catalog.records import VolumeRecord
from sharevol.csi._proto import csi_pb2, csi_pb2_grpc
from sharevol.csi.controller_expand import EXPAND_CAPABILITIES, ExpandRpcs
from sharevol.csi.controller_publish import PUBLISH_CAPABILITIES, PublishRpcs
from sharevol.csi.controller_snapshots import (
    SNAPSHOT_CAPABILITIES,
    SnapshotRpcs,
    content_source_from_proto,
    content_source_to_proto,
)
from sharevol.csi.convert import capabilities_from_proto, topology_to_proto
from sharevol.csi.validation import required
from sharevol.errors import NotFound, Unimplemented
from sharevol.service.capacity import MIN_VOLUME_BYTES
from sharevol.service.provisioning import CreateRequest, Provisioner, volume_context
from sharevol.service.publications import ControllerPublisher
from sharevol.service.snapshots import SnapshotService

RPC = csi_pb2.ControllerServiceCapability.RPC
CONTROLLER_CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME,
    RPC.LIST_VOLUMES,
    RPC.GET_CAPACITY,
    RPC.GET_VOLUME,
    RPC.VOLUME_CONDITION,
    RPC.SINGLE_NODE_MULTI_WRITER,
    *SNAPSHOT_CAPABILITIES,
    *EXPAND_CAPABILITIES,
    *PUBLISH_CAPABILITIES,
)


class ControllerServicer(SnapshotRpcs, ExpandRpcs, PublishRpcs, csi_pb2_grpc.ControllerServicer):
    """Volume RPCs here; snapshots, expansion and publishing come from their own modules."""

    def __init__(
        self,
        provisioner: Provisioner,
        snapshots: SnapshotService | None = None,
        publisher: ControllerPublisher | None = None,
    ) -> None:
        self._provisioner = provisioner
        self._snapshot_service = snapshots
        self._controller_publisher = publisher

    def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        name = required(request.name, "name")
        capabilities = capabilities_from_proto(request.volume_capabilities, allow_block=True)
        content_source = content_source_from_proto(request)
        requisite = tuple(dict(t.segments) for t in request.accessibility_requirements.requisite)
        preferred = tuple(dict(t.segments) for t in request.accessibility_requirements.preferred)
        record = self._provisioner.create_volume(
            CreateRequest(
                name=name,
                capabilities=capabilities,
                required_bytes=request.capacity_range.required_bytes,
                limit_bytes=request.capacity_range.limit_bytes,
                parameters=dict(request.parameters),
                mutable_parameters=dict(request.mutable_parameters),
                requisite_topologies=requisite or preferred,
                content_source=content_source,
            )
        )
        return csi_pb2.CreateVolumeResponse(volume=_volume(record))

    def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteVolumeResponse:
        self._provisioner.delete_volume(required(request.volume_id, "volume_id"))
        return csi_pb2.DeleteVolumeResponse()

    def ValidateVolumeCapabilities(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        volume_id = required(request.volume_id, "volume_id")
        capabilities = capabilities_from_proto(request.volume_capabilities, allow_block=True)
        record = self._provisioner.get(volume_id)
        problem = self._provisioner.confirm_capabilities(
            record, capabilities, dict(request.parameters)
        )
        if problem is not None:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=problem)
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
            mutable_parameters=request.mutable_parameters,
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    def ListVolumes(
        self, request: csi_pb2.ListVolumesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ListVolumesResponse:
        page = self._provisioner.list_page(request.starting_token, request.max_entries)
        entries = [
            csi_pb2.ListVolumesResponse.Entry(volume=_volume(r), status=self._status(r))
            for r in page.records
        ]
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=page.next_token)

    def ControllerGetVolume(
        self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetVolumeResponse:
        record = self._provisioner.get(required(request.volume_id, "volume_id"))
        return csi_pb2.ControllerGetVolumeResponse(
            volume=_volume(record),
            status=csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
                volume_condition=self._condition(record)
            ),
        )

    def GetCapacity(
        self, request: csi_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetCapacityResponse:
        if request.volume_capabilities:
            capabilities_from_proto(request.volume_capabilities, allow_block=True)  # validated only
        topology = (
            dict(request.accessible_topology.segments)
            if request.HasField("accessible_topology")
            else None
        )
        available = self._provisioner.capacity(dict(request.parameters), topology)
        response = csi_pb2.GetCapacityResponse(available_capacity=available)
        response.maximum_volume_size.value = available
        response.minimum_volume_size.value = MIN_VOLUME_BYTES
        return response

    def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.ControllerServiceCapability(
                    rpc=csi_pb2.ControllerServiceCapability.RPC(type=kind)
                )
                for kind in (*CONTROLLER_CAPABILITIES, *self.publish_capabilities())
            ]
        )

    def ControllerModifyVolume(
        self, request: csi_pb2.ControllerModifyVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerModifyVolumeResponse:
        raise Unimplemented("sharevol has no mutable parameters")

    def _status(self, record: VolumeRecord) -> csi_pb2.ListVolumesResponse.VolumeStatus:
        return csi_pb2.ListVolumesResponse.VolumeStatus(volume_condition=self._condition(record))

    def _condition(self, record: VolumeRecord) -> csi_pb2.VolumeCondition:
        path = self._provisioner.pools()[record.pool].pool.volume_path(record.directory)
        if path.is_dir():
            return csi_pb2.VolumeCondition(abnormal=False, message="volume directory present")
        return csi_pb2.VolumeCondition(abnormal=True, message=f"volume directory {path} is gone")


def _volume(record: VolumeRecord) -> csi_pb2.Volume:
    if record.state != "ready":
        raise NotFound(f"volume {record.volume_id} is not ready")
    return csi_pb2.Volume(
        volume_id=record.volume_id,
        capacity_bytes=record.capacity_bytes,
        volume_context=volume_context(record),
        accessible_topology=topology_to_proto(record.accessible_topology),
        content_source=content_source_to_proto(record.content_source),
    )
