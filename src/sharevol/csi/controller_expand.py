"""CSI ControllerExpandVolume: a mixin of ControllerServicer (see controller_snapshots.py).

Expansion is ONLINE (the plugin capability): a published volume grows in place."""

from __future__ import annotations

import grpc

from sharevol.csi._proto import csi_pb2
from sharevol.csi.convert import capability_from_proto
from sharevol.csi.validation import required
from sharevol.errors import InvalidArgument
from sharevol.service.expansion import VolumeExpander
from sharevol.service.provisioning import Provisioner
from sharevol.service.publishing import capability_covered

EXPAND_CAPABILITIES: tuple[csi_pb2.ControllerServiceCapability.RPC.Type.ValueType, ...] = (
    csi_pb2.ControllerServiceCapability.RPC.EXPAND_VOLUME,
)


class ExpandRpcs:
    _provisioner: Provisioner

    def ControllerExpandVolume(
        self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        if not request.HasField("capacity_range"):
            raise InvalidArgument("capacity_range is required: it holds the new size")
        record = self._provisioner.get(volume_id)
        if request.HasField("volume_capability"):
            capability = capability_from_proto(request.volume_capability, allow_block=True)
            if not capability_covered(capability, record.capabilities):
                raise InvalidArgument(
                    f"volume {volume_id} was not created for "
                    f"{capability.access_type}/{capability.access_mode.value}"
                )
        expanded = VolumeExpander(self._provisioner).expand(
            volume_id, request.capacity_range.required_bytes, request.capacity_range.limit_bytes
        )
        return csi_pb2.ControllerExpandVolumeResponse(
            capacity_bytes=expanded.capacity_bytes,
            node_expansion_required=expanded.node_expansion_required,
        )
