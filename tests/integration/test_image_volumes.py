"""Image volumes (`type: image`) over real gRPC: a filesystem in a sparse image file on a real
loop device. The image's size is a hard limit even on a plain pool; XFS grows online; ext4
grows offline at the next stage where online resize is not permitted."""

from __future__ import annotations

import copy
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys import imagefile
from sharevol.sys.mounts import top_mount_at
from sharevol.sys.statfs import read_mounts
from tests.support.csi import RWO, RWX, MiB, Stubs, code_of, mount_cap, running_server
from tests.support.loops import CsiVolume, clean_node, loops_backed_under

pytestmark = pytest.mark.root(
    "mkfs.ext4", "mkfs.xfs", "resize2fs", "e2fsck", "dumpe2fs", "xfs_growfs"
)

C = grpc.StatusCode
XFS_MIN = 300 * MiB


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
    """Staging paths and targets; unmounted, with the test's loop devices detached, even when
    the test fails."""
    path = tmp_path / "node"
    path.mkdir()
    yield path
    failures = clean_node(path, tmp_path)
    assert not failures, failures


@pytest.fixture
def stubs(config: ServerConfig, tmp_path: Path, node_dir: Path) -> Iterator[Stubs]:
    with running_server(config, tmp_path / "state") as (_server, stubs):
        yield stubs


def image_volume(
    stubs: Stubs, node_dir: Path, name: str, size: int, fs_type: str = "ext4", **kw: str
) -> CsiVolume:
    params = {"type": "image", "fsType": fs_type, **kw}
    return CsiVolume(stubs, node_dir, name, size, parameters=params)


def fill(path: Path, limit: int) -> tuple[int, int | None]:
    """Write 1 MiB chunks (fsync'd) until an error or `limit` bytes; (written, errno)."""
    chunk = os.urandom(MiB)
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


def may_resize_mounted_ext4() -> bool:
    """EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE (capability 24) in the effective set."""
    status = Path("/proc/self/status").read_text()
    effective = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) & (1 << 24))


def fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def test_an_image_volume_enforces_its_size_on_a_plain_pool(stubs: Stubs, node_dir: Path) -> None:
    volume = image_volume(stubs, node_dir, "db", 32 * MiB, pool="plain")
    assert volume.volume.volume_context["sharevol.csi.io/quota"] == "enforced"
    volume.stage()
    target = volume.publish()
    assert top_mount_at(read_mounts(), target) is not None
    written, error = fill(target / "data", 64 * MiB)
    assert error == errno.ENOSPC
    assert 16 * MiB <= written <= 32 * MiB
    usage = {u.unit: u for u in volume.stats(target).usage}
    assert usage[csi_pb2.VolumeUsage.BYTES].used >= written
    assert usage[csi_pb2.VolumeUsage.INODES].total > 0
    volume.unpublish()
    volume.unstage()
    image = next((node_dir.parent / "plain-pool" / "volumes").iterdir()) / "disk.img"
    assert image.stat().st_size == 32 * MiB


def test_image_data_survives_unstage_and_a_server_restart(
    config: ServerConfig, tmp_path: Path, node_dir: Path
) -> None:
    with running_server(config, tmp_path / "state") as (_server, stubs):
        volume = image_volume(stubs, node_dir, "keep", 32 * MiB)
        volume.stage()
        target = volume.publish()
        (target / "note").write_text("kept")
    with running_server(config, tmp_path / "state") as (_server, stubs):
        volume.stubs = stubs
        volume.stage()  # repeated after the restart: OK
        assert volume.publish() == target
        assert (target / "note").read_text() == "kept"
        volume.unpublish()
        volume.unstage()
        volume.stage()
        assert (volume.publish("again") / "note").read_text() == "kept"
        volume.unpublish("again")
        volume.unstage()
    assert loops_backed_under(tmp_path) == []


def test_xfs_image_grows_online(stubs: Stubs, node_dir: Path) -> None:
    volume = image_volume(stubs, node_dir, "xfs", XFS_MIN, "xfs")
    volume.stage()
    target = volume.publish()
    (target / "before").write_bytes(b"x" * 4096)
    before = fs_bytes(target)
    expanded = volume.expand(XFS_MIN + 64 * MiB)
    assert expanded.node_expansion_required
    assert volume.node_expand(target, XFS_MIN + 64 * MiB).capacity_bytes == XFS_MIN + 64 * MiB
    assert fs_bytes(target) >= before + 60 * MiB
    assert (target / "before").read_bytes() == b"x" * 4096
    assert volume.node_expand(target, XFS_MIN + 64 * MiB).capacity_bytes == XFS_MIN + 64 * MiB
    volume.unpublish()
    volume.unstage()


def test_ext4_image_grows_offline_when_staged_again(stubs: Stubs, node_dir: Path) -> None:
    """This kernel refuses online ext4 resize (no CAP_SYS_RESOURCE here): NodeExpandVolume
    answers FAILED_PRECONDITION while mounted; the next stage grows it offline."""
    volume = image_volume(stubs, node_dir, "ext4", 64 * MiB, pool="plain")
    volume.stage()
    target = volume.publish()
    (target / "before").write_text("data")
    before = fs_bytes(target)
    assert volume.expand(128 * MiB).capacity_bytes == 128 * MiB
    code = code_of(lambda: volume.node_expand(target, 128 * MiB))
    if may_resize_mounted_ext4():
        assert code is C.OK
        assert fs_bytes(target) > before + 48 * MiB
    else:
        assert code is C.FAILED_PRECONDITION
        assert fs_bytes(target) == before
    volume.unpublish()
    volume.unstage()
    volume.stage()
    target = volume.publish()
    assert fs_bytes(target) > before + 48 * MiB
    assert (target / "before").read_text() == "data"
    assert volume.node_expand(target, 128 * MiB).capacity_bytes == 128 * MiB  # now: OK
    volume.unpublish()
    volume.unstage()


def test_node_expand_error_codes(stubs: Stubs, node_dir: Path) -> None:
    volume = image_volume(stubs, node_dir, "codes", 32 * MiB)
    volume.stage()
    target = volume.publish()
    node = stubs.node

    def expand(**fields: object) -> grpc.StatusCode:
        request = csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume.volume_id, volume_path=str(target)
        )
        for key, value in fields.items():
            if key == "range":
                assert isinstance(value, tuple)
                request.capacity_range.required_bytes, request.capacity_range.limit_bytes = value
            elif key == "cap":
                assert isinstance(value, csi_pb2.VolumeCapability)
                request.volume_capability.CopyFrom(value)
            else:
                setattr(request, key, value)
        return code_of(lambda: node.NodeExpandVolume(request))

    assert expand() == C.OK
    assert expand(volume_id="") == C.INVALID_ARGUMENT
    assert expand(volume_path="") == C.INVALID_ARGUMENT
    assert expand(volume_id="fast/" + "0" * 32) == C.NOT_FOUND
    assert expand(volume_id="no-such-volume") == C.NOT_FOUND
    assert expand(volume_path=str(node_dir / "elsewhere")) == C.NOT_FOUND
    assert expand(range=(64 * MiB, 0)) == C.OUT_OF_RANGE  # the controller has not grown it
    assert expand(range=(0, 16 * MiB)) == C.OUT_OF_RANGE  # below its size: no shrinking
    assert expand(range=(32 * MiB, 16 * MiB)) == C.OUT_OF_RANGE
    assert expand(cap=mount_cap(RWX)) == C.INVALID_ARGUMENT  # beyond RWO
    assert expand(cap=mount_cap(RWO)) == C.OK
    volume.unpublish()
    volume.unstage()
    assert expand(volume_path=str(volume.staging)) == C.NOT_FOUND  # not staged here now


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_image_stage_is_idempotent_and_refuses_other_parameters(
    stubs: Stubs, node_dir: Path, fs_type: str
) -> None:
    volume = image_volume(stubs, node_dir, f"idem-{fs_type}", XFS_MIN, fs_type)
    volume.stage()
    volume.stage()
    entry = top_mount_at(read_mounts(), volume.staging)
    assert entry is not None and entry.fs_type == fs_type
    assert {"nosuid", "nodev"} <= set(entry.mount_options)  # the image's bytes are the tenant's
    other = copy.copy(volume)
    other.cap = mount_cap(csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY)
    assert code_of(other.stage) == C.ALREADY_EXISTS
    other.cap = mount_cap(RWO, "ext4" if fs_type == "xfs" else "xfs")
    assert code_of(other.stage) == C.FAILED_PRECONDITION
    volume.publish()
    volume.publish()
    assert code_of(volume.unstage) == C.FAILED_PRECONDITION  # still published
    volume.unpublish()
    volume.unstage()
    volume.unstage()


def test_image_parameters_are_validated(stubs: Stubs, node_dir: Path) -> None:
    def create(name: str, size: int = 32 * MiB, mode: int = RWO, **params: str) -> C:
        return code_of(lambda: CsiVolume(stubs, node_dir, name, size, mode=mode, parameters=params))

    assert create("fs-without-type", fsType="ext4") == C.INVALID_ARGUMENT
    assert create("bad-fs", type="image", fsType="btrfs") == C.INVALID_ARGUMENT
    assert create("bad-type", type="zfs") == C.INVALID_ARGUMENT
    assert create("rwx-image", mode=RWX, type="image") == C.INVALID_ARGUMENT
    request = csi_pb2.CreateVolumeRequest(
        name="small-xfs",
        capacity_range=csi_pb2.CapacityRange(required_bytes=32 * MiB, limit_bytes=64 * MiB),
        volume_capabilities=[mount_cap(RWO)],
        parameters={"type": "image", "fsType": "xfs"},
    )
    assert code_of(lambda: stubs.controller.CreateVolume(request)) == C.OUT_OF_RANGE
    request.capacity_range.limit_bytes = 0
    created = stubs.controller.CreateVolume(request).volume
    assert created.capacity_bytes == XFS_MIN  # raised to what mkfs.xfs accepts


def test_capability_fs_type_chooses_the_image_filesystem(stubs: Stubs, node_dir: Path) -> None:
    params = {"type": "image"}  # the external-provisioner moves csi.storage.k8s.io/fstype here:
    volume = CsiVolume(stubs, node_dir, "cap-fs", XFS_MIN, parameters=params, fs_type="xfs")
    volume.stage()
    entry = top_mount_at(read_mounts(), volume.staging)
    assert entry is not None and entry.fs_type == "xfs"
    volume.unstage()


def test_a_new_image_on_btrfs_is_sparse_and_nocow(
    stubs: Stubs, node_dir: Path, btrfs_fs: Path
) -> None:
    image_volume(stubs, node_dir, "sparse", 256 * MiB)
    image = next((btrfs_fs / "volumes").iterdir()) / "disk.img"
    assert image.stat().st_size == 256 * MiB
    assert image.stat().st_blocks * 512 < 16 * MiB, "mkfs must keep the image sparse"
    assert imagefile.is_nocow(image)


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_a_larger_restore_of_an_image_snapshot_has_the_data_and_the_larger_filesystem(
    stubs: Stubs, node_dir: Path, fs_type: str
) -> None:
    source = image_volume(stubs, node_dir, f"src-{fs_type}", XFS_MIN, fs_type)
    source.stage()
    target = source.publish()
    (target / "table").write_text("rows")
    source_bytes = fs_bytes(target)
    source.unpublish()
    source.unstage()  # a consistent image: nothing mounted while it is cut
    snapshot = stubs.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=source.volume_id, name=f"snap-{fs_type}")
    ).snapshot
    assert snapshot.ready_to_use
    request = csi_pb2.CreateVolumeRequest(
        name=f"restored-{fs_type}",
        capacity_range=csi_pb2.CapacityRange(required_bytes=XFS_MIN + 128 * MiB),
        volume_capabilities=[source.cap],
        parameters={"type": "image", "fsType": fs_type},
    )
    request.volume_content_source.snapshot.snapshot_id = snapshot.snapshot_id
    restored_volume = stubs.controller.CreateVolume(request).volume
    assert restored_volume.capacity_bytes == XFS_MIN + 128 * MiB
    restored = copy.copy(source)
    restored.volume, restored.volume_id = restored_volume, restored_volume.volume_id
    restored.staging = node_dir / f"restored-{fs_type}-staging"
    restored.staging.mkdir()
    source.stage()  # source and restore on one node: same filesystem UUID (XFS needs nouuid)
    restored.stage()
    target = restored.publish("restored")
    assert (target / "table").read_text() == "rows"
    assert fs_bytes(target) > source_bytes + 96 * MiB  # grown to the restore's size at stage
    restored.unpublish("restored")
    restored.unstage()
    source.unstage()


def test_a_reader_only_image_volume_is_mounted_read_only(stubs: Stubs, node_dir: Path) -> None:
    writer = image_volume(stubs, node_dir, "seed", 32 * MiB)
    writer.stage()
    (writer.publish() / "config").write_text("v1")
    writer.unpublish()
    writer.unstage()
    reader = copy.copy(writer)
    reader.cap = mount_cap(csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY)
    reader.stage()
    target = reader.publish("reader")
    assert (target / "config").read_text() == "v1"
    with pytest.raises(OSError) as caught:
        (target / "other").write_text("no")
    assert caught.value.errno == errno.EROFS
    reader.unpublish("reader")
    reader.unstage()


def test_validate_capabilities_checks_the_image_filesystem(stubs: Stubs, node_dir: Path) -> None:
    volume = image_volume(stubs, node_dir, "validate", 32 * MiB)
    validate = stubs.controller.ValidateVolumeCapabilities

    def confirmed(fs_type: str) -> bool:
        request = csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[mount_cap(RWO, fs_type)]
        )
        return validate(request).HasField("confirmed")

    assert confirmed("") and confirmed("ext4")
    assert not confirmed("xfs")
