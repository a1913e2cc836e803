"""XFS and ext4 pools on real loop devices on the host, where no quota is on: the refusals, the
`enforce_quota: false` mode, and the real FS_IOC_FSSETXATTR project IDs (XFS keeps them even
without quota). Enforcement itself is proven in the VM tier (tests/vm/test_*_quota.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.errors import FailedPrecondition
from sharevol.pools import factory
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.pools.ext4 import Ext4Pool
from sharevol.pools.plain import PlainPool
from sharevol.pools.xfs import XfsPool
from sharevol.sys import quota
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.support.csi import MiB, mount_cap, running_server

pytestmark = pytest.mark.root("mkfs.xfs", "mkfs.ext4")

TIMEOUT = 60.0
IMAGE_BYTES = 512 * MiB
"""Sparse; mkfs.xfs refuses filesystems under 300 MB."""
MKFS = {"xfs": ["mkfs.xfs", "-q", "-f"], "ext4": ["mkfs.ext4", "-q", "-F"]}


@contextlib.contextmanager
def loop_mounted(fs_type: str, workdir: Path) -> Iterator[Path]:
    """A fresh loop-mounted XFS or ext4 (no quota options) at `workdir/<fs type>`, torn down
    even when the test fails."""
    runner = SubprocessRunner()
    image, mount_point = workdir / f"{fs_type}.img", workdir / fs_type
    mount_point.mkdir()
    with image.open("wb") as handle:
        handle.truncate(IMAGE_BYTES)
    runner.run([*MKFS[fs_type], str(image)], timeout=TIMEOUT)
    loop = runner.run(["losetup", "--find", "--show", str(image)], timeout=TIMEOUT).stdout.strip()
    try:
        runner.run(["mount", loop, str(mount_point)], timeout=TIMEOUT)
        yield mount_point
    finally:
        for target in sorted(mounts_under(mount_point), key=len, reverse=True):
            runner.run(["umount", target], timeout=TIMEOUT)
        runner.run(["losetup", "-d", loop], timeout=TIMEOUT)
        image.unlink()


@pytest.fixture(params=["xfs", "ext4"])
def loop_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(fs type, mount point) of a fresh XFS, then ext4, without quota."""
    with loop_mounted(request.param, tmp_path) as mount_point:
        yield request.param, mount_point


@pytest.fixture
def xfs_fs(tmp_path: Path) -> Iterator[Path]:
    with loop_mounted("xfs", tmp_path) as mount_point:
        yield mount_point


@pytest.fixture
def ext4_fs(tmp_path: Path) -> Iterator[Path]:
    with loop_mounted("ext4", tmp_path) as mount_point:
        yield mount_point


POOLS = {"xfs": XfsPool, "ext4": Ext4Pool}


def test_pool_on_a_filesystem_without_quota_refuses_to_start_saying_what_to_do(
    loop_fs: tuple[str, Path],
) -> None:
    fs_type, mount_point = loop_fs

    with pytest.raises(FailedPrecondition) as caught:
        POOLS[fs_type]("fast", mount_point).start()

    message = str(caught.value)
    assert f'pool "fast" at {mount_point} has quotas off' in message
    assert "-o prjquota" in message
    if fs_type == "ext4":
        assert "mkfs.ext4 -O quota,project -E quotatype=prjquota" in message
    assert not (mount_point / "volumes").exists()


def test_kernel_quota_state_of_a_filesystem_without_quota_is_off(
    loop_fs: tuple[str, Path],
) -> None:
    fs_type, mount_point = loop_fs

    state = quota.open_project_quotas(mount_point, POOLS[fs_type].interface).state()

    assert state == quota.QuotaState(accounting=False, enforced=False, no_quota=True)


def test_auto_on_a_filesystem_without_quota_is_plain_with_the_reason(
    loop_fs: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _fs_type, mount_point = loop_fs

    with caplog.at_level(logging.WARNING, logger="sharevol.pools.factory"):
        pool = factory.make_pool(PoolConfig(name="fast", path=mount_point))

    assert isinstance(pool, PlainPool)
    assert "has quotas off" in caplog.text


def test_xfs_holds_project_ids_without_quota_and_new_files_inherit_them(xfs_fs: Path) -> None:
    pool = XfsPool("fast", xfs_fs, enforce_quota=False)
    pool.start()

    backend = pool.create_volume("vol", 8 * MiB)

    project_id = int(backend["project_id"])
    path = pool.volume_path("vol")
    assert quota.get_project(path) == project_id
    (path / "sub" / "deeper").mkdir(parents=True)
    assert quota.get_project(path / "sub" / "deeper") == project_id  # PROJINHERIT, for real
    assert pool.create_volume("other", MiB)["project_id"] == project_id + 1
    pool.delete_volume("vol", backend)
    assert not path.exists()


def test_ext4_without_the_project_feature_makes_plain_directories_when_not_enforcing(
    ext4_fs: Path,
) -> None:
    pool = Ext4Pool("home", ext4_fs, enforce_quota=False)
    pool.start()

    assert pool.create_volume("vol", 8 * MiB) == {}
    (pool.volume_path("vol") / "data").write_bytes(b"x" * (3 * MiB))
    usage = pool.usage("vol", 8 * MiB, {})
    assert usage.capacity_bytes == 8 * MiB
    assert 3 * MiB <= usage.used_bytes <= 3 * MiB + 64 * 1024  # a tree walk


def test_not_enforcing_pool_serves_volumes_that_say_not_enforced(
    loop_fs: tuple[str, Path], tmp_path: Path
) -> None:
    fs_type, mount_point = loop_fs
    config = ServerConfig(
        pools=(PoolConfig(name="fast", path=mount_point, kind=fs_type, enforce_quota=False),)
    )
    with running_server(config, tmp_path / "state") as (_server, stubs):
        volume = stubs.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name="pvc-1",
                capacity_range=csi_pb2.CapacityRange(required_bytes=16 * MiB),
                volume_capabilities=[mount_cap()],
            )
        ).volume
        assert volume.volume_context["sharevol.csi.io/quota"] == "not enforced"
        stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert list((mount_point / "volumes").iterdir()) == []
