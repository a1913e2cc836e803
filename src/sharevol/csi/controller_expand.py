"""CSI ControllerExpandVolume: a mixin of ControllerServicer (see controller_snapshots.py)."""

from __future__ import annotations

import grpc

from sharevol.csi._proto import csi_pb2
from sharevol.errors import Unimplemented

EXPAND_CAPABILITIES: tuple[csi_pb2.ControllerServiceCapability.RPC.Type.ValueType, ...] = ()


class ExpandRpcs:
    def ControllerExpandVolume(
        self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        raise Unimplemented("volume expansion is not offered yet")
