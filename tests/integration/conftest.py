"""Real pools for integration tests: a fresh loop-mounted btrfs per test, plain directories.

Every fixture undoes what it did even when the test fails: mounts below the filesystem first,
then the filesystem, then the loop device and the image. Teardown problems fail the test
(loudly) rather than leaking loop devices into the next run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.plain import PlainPool
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.support.loopfs import loop_filesystem

BTRFS_IMAGE_BYTES = 2 * 1024**3
"""Sparse: costs a few MiB of real disk; big enough that tests hit quotas, not ENOSPC."""
TIMEOUT = 60.0


def make_btrfs(workdir: Path) -> tuple[Path, str]:
    """Make a sparse btrfs image in `workdir`, attach it to a loop device and mount it with
    quotas on; returns (mount point, loop device). The caller must `destroy_btrfs` it."""
    runner = SubprocessRunner()
    image, mount_point = workdir / "btrfs.img", workdir / "btrfs"
    mount_point.mkdir()
    with image.open("wb") as handle:
        handle.truncate(BTRFS_IMAGE_BYTES)
    runner.run(["mkfs.btrfs", "-q", "-f", str(image)], timeout=TIMEOUT)
    loop = runner.run(["losetup", "--find", "--show", str(image)], timeout=TIMEOUT).stdout.strip()
    try:
        runner.run(["mount", loop, str(mount_point)], timeout=TIMEOUT)
        runner.run(["btrfs", "quota", "enable", str(mount_point)], timeout=TIMEOUT)
    except BaseException:
        destroy_btrfs(mount_point, loop)
        raise
    return mount_point, loop


def destroy_btrfs(mount_point: Path, loop: str) -> None:
    """Unmount everything at and below `mount_point`, detach `loop`, delete the image; every
    step is tried, and the first failure is raised at the end."""
    runner = SubprocessRunner()
    failures: list[str] = []
    for target in sorted(mounts_under(mount_point), key=len, reverse=True):
        result = runner.run(["umount", target], timeout=TIMEOUT, check=False)
        if result.returncode != 0:
            failures.append(f"umount {target}: {result.stderr.strip()}")
            runner.run(["umount", "--lazy", target], timeout=TIMEOUT, check=False)
    result = runner.run(["losetup", "-d", loop], timeout=TIMEOUT, check=False)
    if result.returncode != 0:
        failures.append(f"losetup -d {loop}: {result.stderr.strip()}")
    (mount_point.parent / "btrfs.img").unlink(missing_ok=True)
    if failures:
        raise AssertionError("btrfs fixture teardown: " + "; ".join(failures))


@pytest.fixture
def btrfs_fs(tmp_path: Path) -> Iterator[Path]:
    """Path of a freshly made, loop-mounted 2 GiB (sparse) btrfs with `btrfs quota enable`
    done; unmounted and its loop device detached afterwards, even when the test fails."""
    workdir = tmp_path / "btrfs-fixture"
    workdir.mkdir()
    mount_point, loop = make_btrfs(workdir)
    try:
        yield mount_point
    finally:
        destroy_btrfs(mount_point, loop)


@pytest.fixture
def btrfs_pool(btrfs_fs: Path) -> BtrfsPool:
    """A started BtrfsPool named "fast" at the root of `btrfs_fs`."""
    pool = BtrfsPool("fast", btrfs_fs)
    pool.start()
    return pool


@pytest.fixture
def plain_dir(tmp_path: Path) -> Path:
    """An empty directory on the host filesystem (wherever pytest's tmp_path lives)."""
    path = tmp_path / "plain-pool"
    path.mkdir()
    return path


@pytest.fixture
def plain_pool(plain_dir: Path) -> PlainPool:
    """A started PlainPool named "plain" on `plain_dir`."""
    pool = PlainPool("plain", plain_dir)
    pool.start()
    return pool


@pytest.fixture
def xfs_fs(tmp_path: Path) -> Iterator[Path]:
    """A freshly made, loop-mounted 1 GiB (sparse) XFS with reflink on (a reflink-capable
    filesystem for plain pools); mark tests `@pytest.mark.root("mkfs.xfs")`."""
    workdir = tmp_path / "xfs-fixture"
    workdir.mkdir()
    with loop_filesystem(workdir, "xfs", 1024**3) as mount_point:
        yield mount_point


@pytest.fixture
def ext4_fs(tmp_path: Path) -> Iterator[Path]:
    """A freshly made, loop-mounted 512 MiB (sparse) ext4: no reflink, so plain pools on it copy
    for real; mark tests `@pytest.mark.root("mkfs.ext4")`."""
    workdir = tmp_path / "ext4-fixture"
    workdir.mkdir()
    with loop_filesystem(workdir, "ext4", 512 * 1024**2) as mount_point:
        yield mount_point
