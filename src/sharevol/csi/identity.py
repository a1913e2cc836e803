"""CSI Identity: who we are and what we can do. Kept trivial so that Probe never queues
behind slow storage work."""

from __future__ import annotations

import grpc

from sharevol import DRIVER_NAME, __version__
from sharevol.csi._proto import csi_pb2, csi_pb2_grpc

Cap = csi_pb2.PluginCapability


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(
        self, *, controller: bool, node_local_pools: bool, expansion: bool = False
    ) -> None:
        self._controller = controller
        self._node_local_pools = node_local_pools
        self._expansion = expansion

    def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=__version__)

    def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        caps: list[Cap] = []
        if self._controller:
            caps.append(Cap(service=Cap.Service(type=Cap.Service.CONTROLLER_SERVICE)))
        if self._node_local_pools:
            caps.append(Cap(service=Cap.Service(type=Cap.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS)))
        if self._expansion:
            caps.append(Cap(volume_expansion=Cap.VolumeExpansion(type=Cap.VolumeExpansion.ONLINE)))
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=caps)

    def Probe(
        self, request: csi_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ProbeResponse:
        response = csi_pb2.ProbeResponse()
        response.ready.value = True
        return response
