"""The CLI's one connection to a running sharevol server: CSI and Admin calls over its unix socket.

Every call carries a deadline, and every failure becomes a `ClientError` whose message is one
line a person can act on, so the commands never show a gRPC traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from sharevol.csi._proto import admin_pb2, admin_pb2_grpc, csi_pb2, csi_pb2_grpc

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT",
    "ClientError",
    "ServerUnavailable",
    "SharevolClient",
    "socket_path",
    "volume_capability",
]

DEFAULT_ENDPOINT = "unix://./.sharevol/csi.sock"
DEFAULT_TIMEOUT = 60.0

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107

_RequestT = TypeVar("_RequestT", bound=Message)
_Response = TypeVar("_Response", bound=Message)


class ClientError(Exception):
    """A call failed; the message is one line, ready to print after `error: `. `code` is the
    gRPC status when the server answered one (ABORTED: a background copy still runs)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class ServerUnavailable(ClientError):
    """Nothing answers on the endpoint (socket missing, or nobody listening on it)."""


def socket_path(endpoint: str) -> str:
    """The absolute socket path of a `unix://PATH`, `unix:PATH` or bare PATH endpoint."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:") :]
    elif "://" in endpoint:
        scheme = endpoint.split("://", 1)[0]
        raise ClientError(
            f"endpoint {endpoint!r} uses {scheme}://: the CLI talks to a local server, "
            "give unix://PATH"
        )
    else:
        path = endpoint
    if not path:
        raise ClientError(f"endpoint {endpoint!r} has no socket path: give unix://PATH")
    return os.path.abspath(path)


def volume_capability(access_mode: str, access_type: str) -> csi_pb2.VolumeCapability:
    """One CSI VolumeCapability from a CSI access mode name and `mount` or `block`."""
    try:
        mode = csi_pb2.VolumeCapability.AccessMode.Mode.Value(access_mode.upper())
    except ValueError:
        mode = csi_pb2.VolumeCapability.AccessMode.UNKNOWN
    if mode == csi_pb2.VolumeCapability.AccessMode.UNKNOWN:
        raise ClientError(f"unknown access mode {access_mode!r}")
    capability = csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode)
    )
    if access_type == "block":
        capability.block.SetInParent()
    elif access_type in ("mount", ""):
        capability.mount.SetInParent()
    else:
        raise ClientError(f"unknown access type {access_type!r}: expected mount or block")
    return capability


class SharevolClient:
    """Typed wrapper over the Controller, Node and Admin stubs; one method per RPC."""

    def __init__(self, endpoint: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = socket_path(endpoint)
        self.endpoint = f"unix://{self.path}"
        self.timeout = timeout
        if len(self.path.encode()) > _MAX_SOCKET_PATH:
            raise ClientError(
                f"socket path {self.path} is longer than {_MAX_SOCKET_PATH} bytes, which unix "
                "sockets cannot address: use a shorter path"
            )
        if not os.path.exists(self.path):
            raise self._unavailable()
        self._channel = grpc.insecure_channel(self.endpoint)
        self._controller = csi_pb2_grpc.ControllerStub(self._channel)
        self._node = csi_pb2_grpc.NodeStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)

    def __enter__(self) -> SharevolClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # CSI Controller

    def create_volume(
        self,
        name: str,
        required_bytes: int,
        capabilities: Sequence[csi_pb2.VolumeCapability],
        parameters: Mapping[str, str],
    ) -> csi_pb2.Volume:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=required_bytes),
            volume_capabilities=list(capabilities),
            parameters=dict(parameters),
        )
        return self._call("CreateVolume", self._controller.CreateVolume, request).volume

    def delete_volume(self, volume_id: str) -> None:
        request = csi_pb2.DeleteVolumeRequest(volume_id=volume_id)
        self._call("DeleteVolume", self._controller.DeleteVolume, request)

    def create_volume_from(self, request: csi_pb2.CreateVolumeRequest) -> csi_pb2.Volume:
        """CreateVolume as built by the caller (a restore or clone names its content source);
        ABORTED (ClientError.code) while the server still copies the data."""
        return self._call("CreateVolume", self._controller.CreateVolume, request).volume

    def create_snapshot(self, name: str, source_volume_id: str) -> csi_pb2.Snapshot:
        request = csi_pb2.CreateSnapshotRequest(name=name, source_volume_id=source_volume_id)
        return self._call("CreateSnapshot", self._controller.CreateSnapshot, request).snapshot

    def delete_snapshot(self, snapshot_id: str) -> None:
        request = csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id)
        self._call("DeleteSnapshot", self._controller.DeleteSnapshot, request)

    def expand_volume(
        self, volume_id: str, required_bytes: int
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        request = csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id,
            capacity_range=csi_pb2.CapacityRange(required_bytes=required_bytes),
        )
        expand = self._controller.ControllerExpandVolume
        return self._call("ControllerExpandVolume", expand, request)

    # CSI Node

    def node_expand_volume(
        self,
        volume_id: str,
        volume_path: str,
        staging_path: str,
        required_bytes: int,
        capability: csi_pb2.VolumeCapability,
    ) -> int:
        request = csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume_id,
            volume_path=volume_path,
            staging_target_path=staging_path,
            capacity_range=csi_pb2.CapacityRange(required_bytes=required_bytes),
            volume_capability=capability,
        )
        return self._call("NodeExpandVolume", self._node.NodeExpandVolume, request).capacity_bytes

    def node_stage_volume(
        self, volume_id: str, staging_path: str, capability: csi_pb2.VolumeCapability
    ) -> None:
        request = csi_pb2.NodeStageVolumeRequest(
            volume_id=volume_id,
            staging_target_path=staging_path,
            volume_capability=capability,
        )
        self._call("NodeStageVolume", self._node.NodeStageVolume, request)

    def node_publish_volume(
        self,
        volume_id: str,
        target_path: str,
        staging_path: str,
        capability: csi_pb2.VolumeCapability,
        readonly: bool,
    ) -> None:
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            staging_target_path=staging_path,
            target_path=target_path,
            volume_capability=capability,
            readonly=readonly,
        )
        self._call("NodePublishVolume", self._node.NodePublishVolume, request)

    def node_unpublish_volume(self, volume_id: str, target_path: str) -> None:
        request = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target_path)
        self._call("NodeUnpublishVolume", self._node.NodeUnpublishVolume, request)

    def node_unstage_volume(self, volume_id: str, staging_path: str) -> None:
        request = csi_pb2.NodeUnstageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging_path
        )
        self._call("NodeUnstageVolume", self._node.NodeUnstageVolume, request)

    # sharevol Admin

    def list_volumes(self) -> list[admin_pb2.VolumeInfo]:
        request = admin_pb2.ListVolumesRequest()
        return list(self._call("ListVolumes", self._admin.ListVolumes, request).volumes)

    def get_volume(self, name: str = "", volume_id: str = "") -> admin_pb2.VolumeInfo:
        """Look a volume up by CSI name or by ID; an empty answer is treated as not found."""
        request = admin_pb2.GetVolumeRequest(name=name, volume_id=volume_id)
        response = self._call("GetVolume", self._admin.GetVolume, request)
        if not response.HasField("volume") or not response.volume.volume_id:
            what = f"named {name!r}" if name else f"with ID {volume_id!r}"
            raise ClientError(f"no volume {what}")
        return response.volume

    def list_pools(self) -> list[admin_pb2.PoolInfo]:
        request = admin_pb2.ListPoolsRequest()
        return list(self._call("ListPools", self._admin.ListPools, request).pools)

    def list_snapshots(self) -> list[admin_pb2.SnapshotInfo]:
        request = admin_pb2.ListSnapshotsRequest()
        return list(self._call("ListSnapshots", self._admin.ListSnapshots, request).snapshots)

    def get_snapshot(self, name: str = "", snapshot_id: str = "") -> admin_pb2.SnapshotInfo:
        """Look a snapshot up by CSI name or by ID (with the progress of its copy)."""
        request = admin_pb2.GetSnapshotRequest(name=name, snapshot_id=snapshot_id)
        response = self._call("GetSnapshot", self._admin.GetSnapshot, request)
        if not response.HasField("snapshot") or not response.snapshot.snapshot_id:
            what = f"named {name!r}" if name else f"with ID {snapshot_id!r}"
            raise ClientError(f"no snapshot {what}")
        return response.snapshot

    def list_publications(self) -> list[admin_pb2.Publication]:
        request = admin_pb2.ListPublicationsRequest()
        response = self._call("ListPublications", self._admin.ListPublications, request)
        return list(response.publications)

    def list_archived(self, pool: str, older_than_seconds: int) -> list[admin_pb2.ArchivedVolume]:
        request = admin_pb2.ListArchivedRequest(pool=pool, older_than_seconds=older_than_seconds)
        return list(self._call("ListArchived", self._admin.ListArchived, request).volumes)

    def purge_archived(
        self, pool: str, older_than_seconds: int, volume_ids: Sequence[str]
    ) -> admin_pb2.PurgeArchivedResponse:
        request = admin_pb2.PurgeArchivedRequest(
            pool=pool, older_than_seconds=older_than_seconds, volume_ids=list(volume_ids)
        )
        return self._call("PurgeArchived", self._admin.PurgeArchived, request)

    # plumbing

    def _call(
        self,
        rpc: str,
        method: grpc.UnaryUnaryMultiCallable[_RequestT, _Response],
        request: _RequestT,
    ) -> _Response:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise self._explain(rpc, error) from None

    def _explain(self, rpc: str, error: grpc.RpcError) -> ClientError:
        try:
            code, details = error.code(), error.details() or ""
        except AttributeError:  # an RpcError that is not a finished call carries no status
            code, details = grpc.StatusCode.UNKNOWN, str(error)
        first_line = details.strip().splitlines()[0] if details.strip() else "no details"
        if code is grpc.StatusCode.UNAVAILABLE and "connect" in details:
            return self._unavailable()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return ClientError(
                f"{rpc}: no answer within {self.timeout:g}s; the server may still finish it, "
                "and running the command again is safe (CSI calls are idempotent)"
            )
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return ClientError(f"{rpc}: the server does not offer this call: {first_line}")
        return ClientError(f"{rpc}: {first_line} ({code.name})", code)

    def _unavailable(self) -> ServerUnavailable:
        return ServerUnavailable(
            f"no sharevol server at {self.endpoint}: start one with `sharevol up`"
        )

