"""Request field checks (required strings and paths) and capability conversions."""

from __future__ import annotations

import pytest

from sharevol.catalog.records import AccessMode, Capability
from sharevol.csi._proto import csi_pb2
from sharevol.csi.convert import (
    capabilities_from_proto,
    capability_from_proto,
    capability_to_proto,
    topology_to_proto,
)
from sharevol.csi.validation import MAX_PATH_BYTES, required, required_path
from sharevol.errors import InvalidArgument

ProtoMode = csi_pb2.VolumeCapability.AccessMode


def mount_cap(
    mode: int, fs_type: str = "", flags: tuple[str, ...] = ()
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        access_mode=ProtoMode(mode=mode),  # type: ignore[arg-type]
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
    )


def block_cap(mode: int) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        access_mode=ProtoMode(mode=mode),  # type: ignore[arg-type]
        block=csi_pb2.VolumeCapability.BlockVolume(),
    )


# -- required() ---------------------------------------------------------------------------


def test_required_returns_a_good_value() -> None:
    assert required("pvc-1234", "name") == "pvc-1234"


def test_required_refuses_an_empty_value_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^name is required$"):
        required("", "name")


def test_required_accepts_128_bytes_and_refuses_129() -> None:
    assert required("a" * 128, "volume_id") == "a" * 128
    with pytest.raises(InvalidArgument, match="volume_id is longer than 128 bytes"):
        required("a" * 129, "volume_id")


def test_required_counts_bytes_not_characters() -> None:
    assert required("é" * 64, "name") == "é" * 64
    with pytest.raises(InvalidArgument, match="longer than 128 bytes"):
        required("é" * 64 + "a", "name")


def test_required_refuses_a_nul_byte() -> None:
    with pytest.raises(InvalidArgument, match="name contains a NUL byte"):
        required("pvc\0x", "name")


# -- required_path() ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/var/lib/kubelet/pods/p/mount", "/a", "/a/b/", "/a/b.c/..d", "/a/" + "x" * 200]
)
def test_required_path_accepts_absolute_normalised_paths(path: str) -> None:
    assert required_path(path, "target_path") == path


def test_required_path_refuses_an_empty_value() -> None:
    with pytest.raises(InvalidArgument, match=r"^target_path is required$"):
        required_path("", "target_path")


@pytest.mark.parametrize(
    "path", ["relative/path", "./a", "/a/../b", "/a/..", "/../etc", "/a/./b", "/a//b", "a"]
)
def test_required_path_refuses_relative_or_unnormalised_paths(path: str) -> None:
    with pytest.raises(InvalidArgument, match="must be an absolute, normalised path"):
        required_path(path, "target_path")


def test_required_path_refuses_a_nul_byte() -> None:
    with pytest.raises(InvalidArgument, match="target_path is not a valid path"):
        required_path("/a/b\0c", "target_path")


def test_required_path_bounds_the_length_in_bytes() -> None:
    longest = "/" + "a" * (MAX_PATH_BYTES - 1)
    assert required_path(longest, "target_path") == longest
    with pytest.raises(InvalidArgument, match="not a valid path"):
        required_path(longest + "a", "target_path")


def test_required_path_can_be_longer_than_128_bytes() -> None:
    path = "/var/lib/kubelet/pods/" + "p" * 200 + "/mount"

    assert required_path(path, "target_path") == path


# -- capability_from_proto ------------------------------------------------------------------


def test_a_mount_capability_converts_with_its_fs_type_and_flags() -> None:
    cap = capability_from_proto(
        mount_cap(ProtoMode.MULTI_NODE_MULTI_WRITER, "xfs", ("noatime", "nodev")),
        allow_block=False,
    )

    assert cap == Capability(
        access_mode=AccessMode.MULTI_NODE_MULTI_WRITER,
        access_type="mount",
        fs_type="xfs",
        mount_flags=("noatime", "nodev"),
    )


def test_a_capability_without_access_mode_is_refused() -> None:
    message = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume())

    with pytest.raises(InvalidArgument, match="no access_mode"):
        capability_from_proto(message, allow_block=True)


def test_an_unknown_access_mode_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown or unset access mode 0"):
        capability_from_proto(mount_cap(ProtoMode.UNKNOWN), allow_block=True)


def test_an_access_mode_number_outside_the_enum_is_refused() -> None:
    message = csi_pb2.VolumeCapability()
    message.access_mode.mode = 99  # type: ignore[assignment]  # an open enum: any int arrives
    message.mount.SetInParent()

    with pytest.raises(InvalidArgument, match="unknown or unset access mode 99"):
        capability_from_proto(message, allow_block=True)


def test_a_capability_without_access_type_is_refused() -> None:
    message = csi_pb2.VolumeCapability(
        access_mode=ProtoMode(mode=ProtoMode.SINGLE_NODE_WRITER)
    )

    with pytest.raises(InvalidArgument, match="no access_type"):
        capability_from_proto(message, allow_block=True)


def test_block_is_refused_when_not_allowed() -> None:
    with pytest.raises(InvalidArgument, match="block access type is not supported"):
        capability_from_proto(block_cap(ProtoMode.SINGLE_NODE_WRITER), allow_block=False)


def test_block_converts_when_allowed() -> None:
    cap = capability_from_proto(block_cap(ProtoMode.SINGLE_NODE_WRITER), allow_block=True)

    assert cap == Capability(access_mode=AccessMode.SINGLE_NODE_WRITER, access_type="block")


@pytest.mark.parametrize("flag", ["", "a\0b", "x" * 257])
def test_bad_mount_flags_are_refused(flag: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid mount flag"):
        capability_from_proto(
            mount_cap(ProtoMode.SINGLE_NODE_WRITER, flags=("ro", flag)), allow_block=False
        )


def test_capabilities_from_proto_refuses_an_empty_list() -> None:
    with pytest.raises(InvalidArgument, match="volume_capabilities must not be empty"):
        capabilities_from_proto([])


def test_capabilities_from_proto_refuses_block_by_default() -> None:
    with pytest.raises(InvalidArgument, match="block"):
        capabilities_from_proto([mount_cap(ProtoMode.SINGLE_NODE_WRITER), block_cap(1)])


def test_capabilities_from_proto_converts_each_in_order() -> None:
    caps = capabilities_from_proto(
        [mount_cap(ProtoMode.MULTI_NODE_READER_ONLY), mount_cap(ProtoMode.SINGLE_NODE_WRITER)]
    )

    assert [c.access_mode for c in caps] == [
        AccessMode.MULTI_NODE_READER_ONLY,
        AccessMode.SINGLE_NODE_WRITER,
    ]


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(AccessMode), ids=lambda mode: mode.value)
def test_every_access_mode_round_trips_through_proto(mode: AccessMode) -> None:
    cap = Capability(access_mode=mode, fs_type="ext4", mount_flags=("noatime",))

    assert capability_from_proto(capability_to_proto(cap), allow_block=False) == cap


@pytest.mark.parametrize("mode", list(AccessMode), ids=lambda mode: mode.value)
def test_every_access_mode_has_the_proto_number_of_its_name(mode: AccessMode) -> None:
    message = capability_to_proto(Capability(access_mode=mode))

    assert ProtoMode.Mode.Name(message.access_mode.mode) == mode.value


def test_a_block_capability_round_trips_through_proto() -> None:
    cap = Capability(access_mode=AccessMode.SINGLE_NODE_SINGLE_WRITER, access_type="block")

    message = capability_to_proto(cap)

    assert message.WhichOneof("access_type") == "block"
    assert capability_from_proto(message, allow_block=True) == cap


def test_a_proto_capability_round_trips_through_the_domain() -> None:
    message = mount_cap(ProtoMode.SINGLE_NODE_MULTI_WRITER, "btrfs", ("noatime", "nosuid"))

    again = capability_to_proto(capability_from_proto(message, allow_block=False))

    assert again == message


def test_topology_to_proto_is_empty_for_no_segments() -> None:
    assert topology_to_proto({}) == []


def test_topology_to_proto_is_one_topology_with_the_segments() -> None:
    segments = {"topology.sharevol.csi.io/node": "node-1"}

    assert topology_to_proto(segments) == [csi_pb2.Topology(segments=segments)]
