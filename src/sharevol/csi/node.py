"""CSI Node: validate, call the NodePublisher, build the response. No mount work here."""

from __future__ import annotations

from pathlib import Path

import grpc

from sharevol.catalog.records import Capability
from sharevol.csi._proto import csi_pb2, csi_pb2_grpc
from sharevol.csi.convert import capability_from_proto, topology_to_proto
from sharevol.csi.validation import node_volume_path, required, required_path
from sharevol.errors import FailedPrecondition, InvalidArgument
from sharevol.service.node_expand import NodeExpandRequest, expand_on_node
from sharevol.service.nodes import node_name
from sharevol.service.provisioning import TOPOLOGY_KEY
from sharevol.service.publishing import NodePublisher

RPC = csi_pb2.NodeServiceCapability.RPC
NODE_CAPABILITIES = (
    RPC.STAGE_UNSTAGE_VOLUME,
    RPC.EXPAND_VOLUME,
    RPC.GET_VOLUME_STATS,
    RPC.VOLUME_CONDITION,
    RPC.SINGLE_NODE_MULTI_WRITER,
)


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(self, publisher: NodePublisher, node_id: str, node_local_pools: bool) -> None:
        self._publisher = publisher
        self._node_id = node_id
        self._node_local_pools = node_local_pools

    def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeStageVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        staging_path = required_path(request.staging_target_path, "staging_target_path")
        capability = _capability(request)
        self._publisher.stage(
            volume_id, Path(staging_path), capability, dict(request.volume_context)
        )
        return csi_pb2.NodeStageVolumeResponse()

    def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        staging_path = required_path(request.staging_target_path, "staging_target_path")
        self._publisher.unstage(volume_id, Path(staging_path))
        return csi_pb2.NodeUnstageVolumeResponse()

    def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        target_path = required_path(request.target_path, "target_path")
        capability = _capability(request)
        if not request.staging_target_path:
            # CSI: STAGE_UNSTAGE is advertised, so a publish without a staging path is a CO bug.
            raise FailedPrecondition("staging_target_path is required: the volume must be staged")
        staging_path = required_path(request.staging_target_path, "staging_target_path")
        self._publisher.publish(
            volume_id,
            Path(staging_path),
            Path(target_path),
            capability,
            request.readonly,
            dict(request.volume_context),
        )
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        target_path = required_path(request.target_path, "target_path")
        self._publisher.unpublish(volume_id, Path(target_path))
        return csi_pb2.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        volume_id = required(request.volume_id, "volume_id")
        volume_path = node_volume_path(request.volume_path, "volume_path")
        usage, abnormal, message = self._publisher.stats(volume_id, Path(volume_path))
        Unit = csi_pb2.VolumeUsage
        if self._publisher.is_block(volume_id):
            # A raw device: its size is known, what is used inside it is not (CSI: BYTES with
            # only `total` set; no inodes).
            return csi_pb2.NodeGetVolumeStatsResponse(
                usage=[Unit(unit=Unit.BYTES, total=usage.capacity_bytes)],
                volume_condition=csi_pb2.VolumeCondition(abnormal=abnormal, message=message),
            )
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                Unit(
                    unit=Unit.BYTES,
                    total=usage.capacity_bytes,
                    used=usage.used_bytes,
                    available=usage.available_bytes,
                ),
                Unit(
                    unit=Unit.INODES,
                    total=usage.total_inodes,
                    used=usage.used_inodes,
                    available=usage.available_inodes,
                ),
            ],
            volume_condition=csi_pb2.VolumeCondition(abnormal=abnormal, message=message),
        )

    def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeExpandVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        volume_path = node_volume_path(request.volume_path, "volume_path")
        staging_path = ""
        if request.staging_target_path:
            staging_path = required_path(request.staging_target_path, "staging_target_path")
        capability = None
        if request.HasField("volume_capability"):
            capability = capability_from_proto(request.volume_capability, allow_block=True)
        capacity = expand_on_node(
            self._publisher.images,
            NodeExpandRequest(
                volume_id=volume_id,
                volume_path=volume_path,
                staging_path=staging_path,
                required_bytes=request.capacity_range.required_bytes,
                limit_bytes=request.capacity_range.limit_bytes,
                capability=capability,
            ),
        )
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=capacity)

    def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.NodeServiceCapability(rpc=csi_pb2.NodeServiceCapability.RPC(type=kind))
                for kind in NODE_CAPABILITIES
            ]
        )

    def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetInfoResponse:
        # A label value cannot hold the "@address" of a "name@address" node ID: the name only.
        topology = {TOPOLOGY_KEY: node_name(self._node_id)} if self._node_local_pools else {}
        response = csi_pb2.NodeGetInfoResponse(node_id=self._node_id, max_volumes_per_node=0)
        for item in topology_to_proto(topology):
            response.accessible_topology.CopyFrom(item)
        return response


def _capability(
    request: csi_pb2.NodeStageVolumeRequest | csi_pb2.NodePublishVolumeRequest,
) -> Capability:
    if not request.HasField("volume_capability"):
        raise InvalidArgument("volume_capability is required")
    return capability_from_proto(request.volume_capability, allow_block=True)
