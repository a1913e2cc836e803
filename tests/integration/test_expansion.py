"""ControllerExpandVolume over real gRPC on real pools: the btrfs limit rises online (writes
past the old limit succeed, past the new one fail with EDQUOT), plain pools record the size,
and every idempotency and error-code rule of the CSI checklist holds."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys import btrfs
from tests.support.csi import RWO, GiB, MiB, Stubs, block_cap, code_of, mount_cap, running_server
from tests.support.loops import CsiVolume, clean_node

pytestmark = pytest.mark.root

C = grpc.StatusCode
Cap = csi_pb2.PluginCapability


@pytest.fixture
def config(btrfs_fs: Path, plain_dir: Path) -> ServerConfig:
    return ServerConfig(
        pools=(
            PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),
            PoolConfig(name="plain", path=plain_dir, kind="plain"),
        )
    )


@pytest.fixture
def node_dir(tmp_path: Path, config: ServerConfig) -> Iterator[Path]:
    path = tmp_path / "node"
    path.mkdir()
    yield path
    failures = clean_node(path, tmp_path)
    assert not failures, failures


@pytest.fixture
def stubs(config: ServerConfig, tmp_path: Path, node_dir: Path) -> Iterator[Stubs]:
    with running_server(config, tmp_path / "state") as (_server, stubs):
        yield stubs


def write_until_error(path: Path, limit: int) -> tuple[int, int | None]:
    """Append 1 MiB chunks (fsync'd) until an error or `limit` more bytes; (written, errno)."""
    chunk = b"\x5a" * MiB
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while written < limit:
            try:
                written += os.write(fd, chunk)
                os.fsync(fd)
            except OSError as exc:
                return written, exc.errno
    finally:
        os.close(fd)
    return written, None


def expand_request(
    volume_id: str, required: int, limit: int = 0
) -> csi_pb2.ControllerExpandVolumeRequest:
    return csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume_id,
        capacity_range=csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit),
    )


def test_expansion_is_advertised_online(stubs: Stubs) -> None:
    plugin = stubs.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    kinds = [c.volume_expansion.type for c in plugin.capabilities if c.HasField("volume_expansion")]
    assert kinds == [Cap.VolumeExpansion.ONLINE]
    controller = stubs.controller.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest()
    )
    rpc = csi_pb2.ControllerServiceCapability.RPC
    assert rpc.EXPAND_VOLUME in [c.rpc.type for c in controller.capabilities]
    node = stubs.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    assert csi_pb2.NodeServiceCapability.RPC.EXPAND_VOLUME in [
        c.rpc.type for c in node.capabilities
    ]


def test_btrfs_limit_rises_online_writes_pass_the_old_limit_and_stop_at_the_new(
    stubs: Stubs, node_dir: Path
) -> None:
    volume = CsiVolume(stubs, node_dir, "grow", 32 * MiB)
    volume.stage()
    target = volume.publish()
    written, error = write_until_error(target / "data", 64 * MiB)
    assert error == errno.EDQUOT and written <= 32 * MiB

    expanded = volume.expand(96 * MiB)
    assert expanded.capacity_bytes == 96 * MiB
    assert not expanded.node_expansion_required
    more, error = write_until_error(target / "data", 48 * MiB)
    assert error is None and more == 48 * MiB, "writes beyond the old limit must succeed"
    rest, error = write_until_error(target / "data", 64 * MiB)
    assert error == errno.EDQUOT
    assert written + more + rest <= 96 * MiB
    stats = {u.unit: u for u in volume.stats(target).usage}
    assert stats[csi_pb2.VolumeUsage.BYTES].total == 96 * MiB
    volume.unpublish()
    volume.unstage()


def test_expand_is_idempotent_and_never_shrinks(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "idem", 64 * MiB)
    controller = stubs.controller
    assert volume.expand(128 * MiB).capacity_bytes == 128 * MiB
    assert volume.expand(128 * MiB).capacity_bytes == 128 * MiB  # the same again: OK
    smaller = controller.ControllerExpandVolume(expand_request(volume.volume_id, 100 * MiB))
    assert smaller.capacity_bytes == 128 * MiB  # already >= the target: OK with the real size
    assert (
        code_of(
            lambda: controller.ControllerExpandVolume(
                expand_request(volume.volume_id, 0, 100 * MiB)
            )
        )
        == C.OUT_OF_RANGE
    )  # the range lies wholly below the volume: that would be a shrink
    odd = controller.ControllerExpandVolume(expand_request(volume.volume_id, 129 * MiB + 1))
    assert odd.capacity_bytes == 129 * MiB + 4096  # rounded up to 4 KiB
    listed = controller.ControllerGetVolume(
        csi_pb2.ControllerGetVolumeRequest(volume_id=volume.volume_id)
    )
    assert listed.volume.capacity_bytes == 129 * MiB + 4096


def test_expand_error_codes(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "codes", 64 * MiB)
    expand = stubs.controller.ControllerExpandVolume
    volume_id = volume.volume_id
    no_range = csi_pb2.ControllerExpandVolumeRequest(volume_id=volume_id)
    assert code_of(lambda: expand(no_range)) == C.INVALID_ARGUMENT
    empty_range = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume_id, capacity_range=csi_pb2.CapacityRange()
    )
    assert code_of(lambda: expand(empty_range)) == C.INVALID_ARGUMENT
    assert code_of(lambda: expand(expand_request("", MiB))) == C.INVALID_ARGUMENT
    assert code_of(lambda: expand(expand_request("fast/" + "0" * 32, GiB))) == C.NOT_FOUND
    assert code_of(lambda: expand(expand_request("not-an-id", GiB))) == C.NOT_FOUND
    assert code_of(lambda: expand(expand_request(volume_id, 2 * GiB, GiB))) == C.OUT_OF_RANGE
    assert code_of(lambda: expand(expand_request(volume_id, -1))) == C.INVALID_ARGUMENT
    wrong_cap = expand_request(volume_id, 128 * MiB)
    wrong_cap.volume_capability.CopyFrom(block_cap())
    assert code_of(lambda: expand(wrong_cap)) == C.INVALID_ARGUMENT
    right_cap = expand_request(volume_id, 128 * MiB)
    right_cap.volume_capability.CopyFrom(mount_cap(RWO))
    assert expand(right_cap).capacity_bytes == 128 * MiB


def test_expand_beyond_the_pool_budget(stubs: Stubs, node_dir: Path, btrfs_fs: Path) -> None:
    """The btrfs pool holds 2 GiB: growth that does not fit now is RESOURCE_EXHAUSTED (space
    may be freed), a size beyond the whole pool is OUT_OF_RANGE (it never fits)."""
    small = CsiVolume(stubs, node_dir, "small", 256 * MiB)
    CsiVolume(stubs, node_dir, "big", GiB)
    expand = stubs.controller.ControllerExpandVolume
    assert code_of(lambda: expand(expand_request(small.volume_id, 1536 * MiB))) == (
        C.RESOURCE_EXHAUSTED
    )
    assert code_of(lambda: expand(expand_request(small.volume_id, 4 * GiB))) == C.OUT_OF_RANGE
    get = csi_pb2.ControllerGetVolumeRequest(volume_id=small.volume_id)
    assert stubs.controller.ControllerGetVolume(get).volume.capacity_bytes == 256 * MiB
    subvolume = next(p for p in (btrfs_fs / "volumes").iterdir())
    group = btrfs.qgroup(btrfs_fs, btrfs.subvolume_id(subvolume))
    assert group is not None and group.max_referenced in (256 * MiB, GiB)  # untouched


def test_plain_pool_records_the_new_size(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "plain", 64 * MiB, parameters={"pool": "plain"})
    expanded = volume.expand(256 * MiB)
    assert expanded.capacity_bytes == 256 * MiB and not expanded.node_expansion_required
    info = stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(volume_id=volume.volume_id)).volume
    assert info.capacity_bytes == 256 * MiB
    assert not info.quota_enforced


def test_expansion_survives_a_restart(config: ServerConfig, tmp_path: Path, node_dir: Path) -> None:
    with running_server(config, tmp_path / "state") as (_server, stubs):
        volume = CsiVolume(stubs, node_dir, "restart", 32 * MiB)
        volume.expand(80 * MiB)
    with running_server(config, tmp_path / "state") as (_server, stubs):
        get = csi_pb2.ControllerGetVolumeRequest(volume_id=volume.volume_id)
        assert stubs.controller.ControllerGetVolume(get).volume.capacity_bytes == 80 * MiB
        volume.stubs = stubs
        volume.stage()
        target = volume.publish()
        written, error = write_until_error(target / "data", 128 * MiB)
        assert error == errno.EDQUOT and 64 * MiB < written <= 80 * MiB
        volume.unpublish()
        volume.unstage()


def test_node_expand_of_a_directory_volume_is_a_no_op(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "dir", 32 * MiB)
    volume.stage()
    target = volume.publish()
    volume.expand(64 * MiB)
    assert volume.node_expand(target, 64 * MiB).capacity_bytes == 64 * MiB
    assert code_of(lambda: volume.node_expand(target, 65 * MiB)) == C.OUT_OF_RANGE
    volume.unpublish()
    volume.unstage()
