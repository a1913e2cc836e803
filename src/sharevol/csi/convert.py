"""Protobuf <-> domain conversions, so nothing below the csi layer sees a protobuf message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sharevol.catalog.records import AccessMode, Capability
from sharevol.csi._proto import csi_pb2
from sharevol.errors import InvalidArgument

_MODES: dict[int, AccessMode] = {
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER: AccessMode.SINGLE_NODE_WRITER,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY: AccessMode.SINGLE_NODE_READER_ONLY,
    csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY: AccessMode.MULTI_NODE_READER_ONLY,
    csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_SINGLE_WRITER: (
        AccessMode.MULTI_NODE_SINGLE_WRITER
    ),
    csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER: AccessMode.MULTI_NODE_MULTI_WRITER,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER: (
        AccessMode.SINGLE_NODE_SINGLE_WRITER
    ),
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER: (
        AccessMode.SINGLE_NODE_MULTI_WRITER
    ),
}
_MODE_NUMBERS = {mode: number for number, mode in _MODES.items()}


def capability_from_proto(cap: csi_pb2.VolumeCapability, *, allow_block: bool) -> Capability:
    """A validated domain Capability; INVALID_ARGUMENT for anything missing or unsupported."""
    if not cap.HasField("access_mode"):
        raise InvalidArgument("volume capability has no access_mode")
    mode = _MODES.get(cap.access_mode.mode)
    if mode is None:
        raise InvalidArgument(f"unknown or unset access mode {cap.access_mode.mode}")
    kind = cap.WhichOneof("access_type")
    if kind == "mount":
        flags = tuple(cap.mount.mount_flags)
        for flag in flags:
            if not flag or "\0" in flag or len(flag) > 256:
                raise InvalidArgument(f"invalid mount flag {flag[:64]!r}")
        return Capability(
            access_mode=mode, access_type="mount", fs_type=cap.mount.fs_type, mount_flags=flags
        )
    if kind == "block":
        if not allow_block:
            raise InvalidArgument(
                "block access type is not supported yet: sharevol serves filesystem volumes"
            )
        return Capability(access_mode=mode, access_type="block")
    raise InvalidArgument("volume capability has no access_type (mount or block)")


def capabilities_from_proto(
    caps: Iterable[csi_pb2.VolumeCapability], *, allow_block: bool = False
) -> tuple[Capability, ...]:
    """All capabilities of a request; CSI requires at least one."""
    result = tuple(capability_from_proto(c, allow_block=allow_block) for c in caps)
    if not result:
        raise InvalidArgument("volume_capabilities must not be empty")
    return result


def capability_to_proto(cap: Capability) -> csi_pb2.VolumeCapability:
    message = csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=_MODE_NUMBERS[cap.access_mode])  # type: ignore[arg-type]
    )
    if cap.access_type == "block":
        message.block.SetInParent()
    else:
        message.mount.fs_type = cap.fs_type
        message.mount.mount_flags.extend(cap.mount_flags)
    return message


def topology_to_proto(segments: Mapping[str, str]) -> list[csi_pb2.Topology]:
    return [csi_pb2.Topology(segments=dict(segments))] if segments else []
