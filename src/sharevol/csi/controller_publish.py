"""CSI ControllerPublishVolume/ControllerUnpublishVolume: a mixin of ControllerServicer.

Not offered for local and plain pools (`attachRequired: false`)."""

from __future__ import annotations

import grpc

from sharevol.csi._proto import csi_pb2
from sharevol.errors import Unimplemented

PUBLISH_CAPABILITIES: tuple[csi_pb2.ControllerServiceCapability.RPC.Type.ValueType, ...] = ()


class PublishRpcs:
    def ControllerPublishVolume(
        self, request: csi_pb2.ControllerPublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerPublishVolumeResponse:
        raise Unimplemented("ControllerPublishVolume is not offered (attachRequired: false)")

    def ControllerUnpublishVolume(
        self, request: csi_pb2.ControllerUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerUnpublishVolumeResponse:
        raise Unimplemented("ControllerUnpublishVolume is not offered (attachRequired: false)")
