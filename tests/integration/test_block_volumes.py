"""Raw block volumes over real gRPC: a sparse image attached to a real loop device, published as a
device file; data survives unpublish/publish and a server restart; growth reaches the device."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys import btrfs
from tests.support.csi import ROX, RWO, RWOP, RWX, MiB, Stubs, code_of, running_server
from tests.support.loops import CsiVolume, clean_node, loops_backed_under

pytestmark = pytest.mark.root

C = grpc.StatusCode
BLKGETSIZE64 = 0x80081272


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
    """Where staging paths and targets go; everything there is unmounted and every loop
    device of the test's images detached afterwards, even when the test fails."""
    path = tmp_path / "node"
    path.mkdir()
    yield path
    failures = clean_node(path, tmp_path)
    assert not failures, failures


@pytest.fixture
def stubs(config: ServerConfig, tmp_path: Path, node_dir: Path) -> Iterator[Stubs]:
    with running_server(config, tmp_path / "state") as (_server, stubs):
        yield stubs


def device_size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, BLKGETSIZE64, buf)
        return int(struct.unpack("=Q", buf)[0])
    finally:
        os.close(fd)


def write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_at(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


@pytest.mark.parametrize("pool", ["fast", "plain"])
def test_published_block_device_is_writable_and_keeps_data_across_publications(
    stubs: Stubs, node_dir: Path, pool: str
) -> None:
    volume = CsiVolume(
        stubs, node_dir, f"raw-{pool}", 64 * MiB, block=True, parameters={"pool": pool}
    )
    volume.stage()
    target = volume.publish()
    assert stat.S_ISBLK(os.stat(target).st_mode)
    assert device_size(target) == 64 * MiB
    payload = os.urandom(8192)
    write_at(target, 5 * MiB, payload)
    write_at(target, 64 * MiB - 4096, payload[:4096])
    assert read_at(target, 5 * MiB, 8192) == payload

    volume.unpublish()
    assert not os.path.lexists(target), "unpublish must delete the file publish created"
    target = volume.publish("second-pod")
    assert read_at(target, 5 * MiB, 8192) == payload
    assert read_at(target, 64 * MiB - 4096, 4096) == payload[:4096]
    volume.unpublish("second-pod")
    volume.unstage()
    assert loops_backed_under(node_dir.parent) == []


def test_block_data_survives_a_server_restart(
    config: ServerConfig, tmp_path: Path, node_dir: Path
) -> None:
    payload = os.urandom(4096)
    with running_server(config, tmp_path / "state") as (_server, stubs):
        volume = CsiVolume(stubs, node_dir, "persist", 32 * MiB, block=True)
        volume.stage()
        target = volume.publish()
        write_at(target, 12345 * 512, payload)
    with running_server(config, tmp_path / "state") as (_server, stubs):
        volume.stubs = stubs
        # Kubelet repeats stage and publish after a restart: both must be OK, same device.
        volume.stage()
        assert volume.publish() == target
        assert read_at(target, 12345 * 512, 4096) == payload
        volume.unpublish()
        volume.unstage()
        volume.stage()
        target = volume.publish("after-restage")
        assert read_at(target, 12345 * 512, 4096) == payload
        volume.unpublish("after-restage")
        volume.unstage()


def test_block_publish_idempotency_follows_the_csi_table(stubs: Stubs, node_dir: Path) -> None:
    single = CsiVolume(stubs, node_dir, "single", 16 * MiB, block=True, mode=RWOP)
    shared = CsiVolume(stubs, node_dir, "shared", 16 * MiB, block=True, mode=RWX)
    for volume in (single, shared):
        volume.stage()
        volume.stage()  # same again: OK
        volume.publish()
        volume.publish()  # same target, same parameters: OK
    node = stubs.node
    assert code_of(lambda: node.NodePublishVolume(single.publish_request("pod", True))) == (
        C.ALREADY_EXISTS
    )
    assert code_of(lambda: node.NodePublishVolume(single.publish_request("other"))) == (
        C.FAILED_PRECONDITION
    )
    assert code_of(lambda: node.NodePublishVolume(shared.publish_request("other"))) == C.OK
    # Unstaging while published would pull the device from under the pod.
    assert code_of(single.unstage) == C.FAILED_PRECONDITION
    shared.unpublish("other")
    for volume in (single, shared):
        volume.unpublish()
        volume.unpublish()  # gone already: OK
        volume.unstage()
        volume.unstage()  # not staged: OK


def test_read_only_block_publication_refuses_writes(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "ro", 16 * MiB, block=True)
    volume.stage()
    writable = volume.publish("writer")
    write_at(writable, 0, b"w" * 4096)
    target = volume.publish(readonly=True)
    assert read_at(target, 0, 4096) == b"w" * 4096
    # The kernel opens a read-only block device for writing; the writes fail (EPERM).
    with pytest.raises(OSError) as caught:
        write_at(target, 0, b"r" * 4096)
    assert caught.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    assert read_at(writable, 0, 4096) == b"w" * 4096
    volume.publish(readonly=True)  # same again: OK
    volume.unpublish()
    volume.unpublish("writer")
    volume.unstage()


def test_block_volume_grows_online_and_keeps_data(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "grow", 32 * MiB, block=True)
    volume.stage()
    target = volume.publish()
    payload = os.urandom(4096)
    write_at(target, 0, payload)
    with pytest.raises(OSError) as past_end:
        write_at(target, 32 * MiB, payload)
    assert past_end.value.errno == errno.ENOSPC

    expanded = volume.expand(48 * MiB)
    assert expanded.capacity_bytes == 48 * MiB
    assert expanded.node_expansion_required
    assert volume.node_expand(target, 48 * MiB).capacity_bytes == 48 * MiB
    assert device_size(target) == 48 * MiB
    write_at(target, 40 * MiB, payload)
    assert read_at(target, 0, 4096) == payload
    assert read_at(target, 40 * MiB, 4096) == payload
    assert volume.node_expand(target, 48 * MiB).capacity_bytes == 48 * MiB  # again: OK
    volume.unpublish()
    volume.unstage()


def test_block_stats_report_the_device_size_only(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "stats", 24 * MiB, block=True)
    volume.stage()
    target = volume.publish()
    usage = volume.stats(target).usage
    assert [(u.unit, u.total) for u in usage] == [(csi_pb2.VolumeUsage.BYTES, 24 * MiB)]
    volume.unpublish()
    volume.unstage()
    assert code_of(lambda: volume.stats(target)) == C.NOT_FOUND


def test_a_block_image_on_btrfs_can_be_filled_and_rewritten_after_a_snapshot(
    stubs: Stubs, node_dir: Path, btrfs_fs: Path
) -> None:
    """The qgroup limit of an image volume leaves room for file metadata and for extents a
    rewrite after a snapshot keeps referenced: filling and rewriting never hit EDQUOT."""
    size = 64 * MiB
    volume = CsiVolume(stubs, node_dir, "full", size, block=True)
    volume.stage()
    target = volume.publish()
    chunk = os.urandom(MiB)
    for offset in range(0, size, MiB):
        write_at(target, offset, chunk)
    volume_dir = next((btrfs_fs / "volumes").iterdir())
    btrfs.snapshot_subvolume(volume_dir, btrfs_fs, "held-snapshot", readonly=True)
    try:
        block = os.urandom(4096)
        fd = os.open(target, os.O_RDWR)
        try:
            for index in range(0, size // 4096, 2):  # every other 4 KiB block
                os.pwrite(fd, block, index * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert read_at(target, 2 * 4096, 4096) == block
    finally:
        btrfs.destroy_subvolume(btrfs_fs, "held-snapshot")
    volume.unpublish()
    volume.unstage()


def test_block_capabilities_are_restricted(stubs: Stubs, node_dir: Path) -> None:
    mode = csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_SINGLE_WRITER
    code = code_of(lambda: CsiVolume(stubs, node_dir, "msw", 16 * MiB, block=True, mode=mode))
    assert code == C.INVALID_ARGUMENT
    params = {"type": "image"}
    code = code_of(
        lambda: CsiVolume(stubs, node_dir, "mix", 16 * MiB, block=True, parameters=params)
    )
    assert code == C.INVALID_ARGUMENT


def test_deleting_a_staged_block_volume_is_refused(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "busy", 16 * MiB, block=True)
    volume.stage()
    delete = csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id)
    assert code_of(lambda: stubs.controller.DeleteVolume(delete)) == C.FAILED_PRECONDITION
    volume.unstage()
    stubs.controller.DeleteVolume(delete)
    assert code_of(volume.stage) == C.NOT_FOUND


def test_a_mount_capability_on_a_block_volume_is_refused(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "kind", 16 * MiB, block=True)
    volume.cap = csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=RWO),
        mount=csi_pb2.VolumeCapability.MountVolume(),
    )
    assert code_of(volume.stage) == C.FAILED_PRECONDITION


def test_a_reader_only_block_volume_is_attached_read_only(stubs: Stubs, node_dir: Path) -> None:
    volume = CsiVolume(stubs, node_dir, "rox", 16 * MiB, block=True, mode=ROX)
    volume.stage()
    target = volume.publish()
    assert read_at(target, 0, 4096) == b"\0" * 4096
    with pytest.raises(OSError) as caught:
        write_at(target, 0, b"r" * 4096)
    assert caught.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    volume.unpublish()
    volume.unstage()
