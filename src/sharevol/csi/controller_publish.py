"""CSI ControllerPublishVolume/ControllerUnpublishVolume: a mixin of ControllerServicer.

Offered (PUBLISH_UNPUBLISH_VOLUME, PUBLISH_READONLY) only while the managed NFS server exports
volumes: then publishing puts the node's address on the volume's export client list, and
Kubernetes needs `attachRequired: true` in the CSIDriver. Without it, nothing is advertised and
both RPCs answer UNIMPLEMENTED (`attachRequired: false`). The node's address comes from its node
ID, `name@address` (sharevol.service.nodes).
"""

from __future__ import annotations

import grpc

from sharevol.csi._proto import csi_pb2
from sharevol.csi.convert import capability_from_proto
from sharevol.csi.validation import required
from sharevol.errors import InvalidArgument, Unimplemented
from sharevol.service.publications import ControllerPublisher

RPC = csi_pb2.ControllerServiceCapability.RPC
PUBLISH_CAPABILITIES: tuple[csi_pb2.ControllerServiceCapability.RPC.Type.ValueType, ...] = ()
"""Always advertised: none. The NFS ones depend on the server's config (publish_capabilities)."""
NFS_PUBLISH_CAPABILITIES = (RPC.PUBLISH_UNPUBLISH_VOLUME, RPC.PUBLISH_READONLY)
MAX_NODE_ID_BYTES = 256
"""CSI's limit for node_id (the general 128-byte limit is raised for it)."""


class PublishRpcs:
    _controller_publisher: ControllerPublisher | None = None

    def publish_capabilities(
        self,
    ) -> tuple[csi_pb2.ControllerServiceCapability.RPC.Type.ValueType, ...]:
        """What ControllerGetCapabilities adds for publishing on this server."""
        publisher = self._controller_publisher
        return NFS_PUBLISH_CAPABILITIES if publisher is not None and publisher.offered else ()

    def ControllerPublishVolume(
        self, request: csi_pb2.ControllerPublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerPublishVolumeResponse:
        publisher = self._offered()
        volume_id = required(request.volume_id, "volume_id")
        node_id = _node_id(request.node_id)
        if not request.HasField("volume_capability"):
            raise InvalidArgument("volume_capability is required")
        capability = capability_from_proto(request.volume_capability, allow_block=True)
        publish_context = publisher.publish(volume_id, node_id, capability, request.readonly)
        return csi_pb2.ControllerPublishVolumeResponse(publish_context=publish_context)

    def ControllerUnpublishVolume(
        self, request: csi_pb2.ControllerUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerUnpublishVolumeResponse:
        publisher = self._offered()
        volume_id = required(request.volume_id, "volume_id")
        # node_id is optional here: unset means "from every node" (CSI spec).
        node_id = _node_id(request.node_id) if request.node_id else ""
        publisher.unpublish(volume_id, node_id)
        return csi_pb2.ControllerUnpublishVolumeResponse()

    def _offered(self) -> ControllerPublisher:
        publisher = self._controller_publisher
        if publisher is None or not publisher.offered:
            raise Unimplemented(
                "ControllerPublishVolume is not offered: this server exports no volume over "
                "NFS (attachRequired: false)"
            )
        return publisher


def _node_id(value: str) -> str:
    if not value:
        raise InvalidArgument("node_id is required")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NODE_ID_BYTES or "\0" in value:
        raise InvalidArgument(f"node_id is longer than {MAX_NODE_ID_BYTES} bytes or has a NUL")
    return value
