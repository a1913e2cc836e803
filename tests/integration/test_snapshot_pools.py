"""Snapshots, restores and clones at the pool level, on real filesystems: btrfs (subvolume
snapshots), XFS with reflink (FICLONE tree copies) and ext4 (real sparse copies)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sharevol.pools.base import ContentRef, Pool
from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.plain import PlainPool
from sharevol.sys import btrfs
from sharevol.sys.copy_control import CopyControl
from tests.support import trees

pytestmark = pytest.mark.root("mkfs.xfs", "mkfs.ext4")

MiB = 1024 * 1024
KINDS = ["btrfs", "xfs", "ext4"]


@pytest.fixture(params=KINDS)
def pool(request: pytest.FixtureRequest) -> Pool:
    """A started pool of each kind: btrfs, plain on XFS (reflink), plain on ext4 (copy)."""
    fs: Path = request.getfixturevalue(f"{request.param}_fs")
    made: Pool = BtrfsPool("fast", fs) if request.param == "btrfs" else PlainPool("plain", fs)
    made.start()
    return made


@pytest.fixture(params=["xfs", "ext4"])
def tree_pool(request: pytest.FixtureRequest) -> PlainPool:
    """A started plain pool on XFS (reflink) and on ext4 (copy)."""
    made = PlainPool("plain", request.getfixturevalue(f"{request.param}_fs"))
    made.start()
    return made


def make_volume(pool: Pool, directory: str = "vol", capacity: int = 256 * MiB) -> Path:
    pool.create_volume(directory, capacity)
    path = pool.volume_path(directory)
    trees.build_tree(path)
    return path


def test_each_pool_says_how_it_snapshots(pool: Pool) -> None:
    expected = {"btrfs": ("btrfs", True), "xfs": ("reflink", True), "ext4": ("copy", False)}
    kind = "btrfs" if isinstance(pool, BtrfsPool) else pool.root.name  # fixture mount points

    assert (pool.capabilities.snapshot_method, pool.capabilities.instant_snapshot) == (
        expected[kind]
    )


def test_snapshot_keeps_content_and_metadata_of_snapshot_time(pool: Pool) -> None:
    source = make_volume(pool)
    before = trees.describe(source)  # stat only: reading files would move their atimes

    pool.create_snapshot("vol", "snap", 256 * MiB)
    content = trees.contents(source)
    (source / "docs" / "readme.txt").write_text("changed after the snapshot\n")
    (source / "new-file").write_text("new\n")
    os.unlink(source / "empty")

    snapshot = pool.snapshot_path("snap")
    assert trees.differences(trees.describe(snapshot), before) == []
    assert trees.contents(snapshot) == content


def test_sparse_files_stay_sparse(pool: Pool) -> None:
    source = make_volume(pool)

    pool.create_snapshot("vol", "snap", 256 * MiB)
    pool.clone_volume(ContentRef("snapshot", "snap"), "restored", 256 * MiB)

    for copy in (pool.snapshot_path("snap"), pool.volume_path("restored")):
        image = copy / "sparse.img"
        assert image.stat().st_size == trees.SPARSE_SIZE
        assert trees.allocated_bytes(image) <= trees.allocated_bytes(source / "sparse.img")
        assert trees.allocated_bytes(image) < 4 * MiB
        with image.open("rb") as handle:
            handle.seek(trees.SPARSE_DATA_OFFSET)
            assert handle.read(MiB) == trees.SPARSE_DATA


def test_hard_links_stay_links_and_xattrs_survive(pool: Pool) -> None:
    make_volume(pool)

    pool.create_snapshot("vol", "snap", 256 * MiB)
    pool.clone_volume(ContentRef("volume", "vol"), "cloned", 256 * MiB)

    for copy in (pool.snapshot_path("snap"), pool.volume_path("cloned")):
        inode = (copy / "linked").stat().st_ino
        assert (copy / "docs" / "linked-again").stat().st_ino == inode
        assert (copy / "docs" / "deep" / "linked-deep").stat().st_ino == inode
        assert (copy / "linked").stat().st_nlink == 3
        assert os.getxattr(copy / "docs" / "readme.txt", "user.color") == b"blue"
        assert os.getxattr(copy / "docs", "user.team") == b"storage"
        assert os.readlink(copy / "to-readme") == "docs/readme.txt"
        assert os.lstat(copy / "to-readme").st_uid == 4321
        assert (copy / "tool").stat().st_mode & 0o7777 == 0o4755
        readme = (copy / "docs" / "readme.txt").stat()
        assert (readme.st_uid, readme.st_gid, readme.st_mtime_ns) == (1234, 5678, trees.OLD_NS)


def test_restore_and_clone_are_independent_volumes(pool: Pool) -> None:
    source = make_volume(pool)
    pool.create_snapshot("vol", "snap", 256 * MiB)
    snapshot_view = trees.describe(pool.snapshot_path("snap"))
    source_content = trees.contents(source)

    pool.clone_volume(ContentRef("snapshot", "snap"), "restored", 256 * MiB)
    pool.clone_volume(ContentRef("volume", "vol"), "cloned", 256 * MiB)
    restored, cloned = pool.volume_path("restored"), pool.volume_path("cloned")
    assert trees.contents(restored) == trees.contents(cloned) == source_content

    (restored / "docs" / "readme.txt").write_text("restored copy\n")
    (cloned / "docs" / "readme.txt").write_text("cloned copy\n")
    (source / "docs" / "readme.txt").write_text("source\n")
    (restored / "linked").write_text("written through one link\n")

    assert (source / "docs" / "readme.txt").read_text() == "source\n"
    assert (restored / "docs" / "readme.txt").read_text() == "restored copy\n"
    assert (cloned / "docs" / "readme.txt").read_text() == "cloned copy\n"
    assert (cloned / "linked").read_text() == "one inode, three names\n"
    assert (source / "linked").read_text() == "one inode, three names\n"
    assert trees.differences(trees.describe(pool.snapshot_path("snap")), snapshot_view) == []
    assert trees.contents(pool.snapshot_path("snap")) == source_content


def test_snapshot_outlives_its_source_volume(pool: Pool) -> None:
    make_volume(pool)
    content = trees.contents(pool.volume_path("vol"))
    pool.create_snapshot("vol", "snap", 256 * MiB)

    pool.delete_volume("vol", {})
    pool.clone_volume(ContentRef("snapshot", "snap"), "restored", 256 * MiB)

    assert trees.contents(pool.snapshot_path("snap")) == content
    assert trees.contents(pool.volume_path("restored")) == content


def test_delete_snapshot_removes_it_and_is_idempotent(pool: Pool) -> None:
    make_volume(pool)
    pool.create_snapshot("vol", "snap", 256 * MiB)

    pool.delete_snapshot("snap")
    pool.delete_snapshot("snap")

    assert not os.path.lexists(pool.snapshot_path("snap"))
    assert (pool.volume_path("vol") / "docs" / "readme.txt").is_file()


def test_a_retry_replaces_what_a_crashed_copy_left(tree_pool: PlainPool) -> None:
    source = make_volume(tree_pool)
    partial = tree_pool.snapshot_path("snap")  # btrfs snapshots are atomic: nothing partial
    partial.mkdir()
    (partial / "half-copied").write_bytes(b"x" * 100)

    tree_pool.create_snapshot("vol", "snap", 256 * MiB)

    assert trees.contents(partial) == trees.contents(source)


def test_copy_reports_progress_and_stops_when_cancelled(ext4_fs: Path) -> None:
    pool = PlainPool("plain", ext4_fs)
    pool.start()
    make_volume(pool)
    control = CopyControl()

    pool.create_snapshot("vol", "snap", 256 * MiB, control)
    done, total = control.progress
    assert done == total >= trees.SPARSE_DATA_OFFSET // 1024  # data, not holes
    assert total < 4 * MiB

    cancelled = CopyControl()
    cancelled.cancel()
    with pytest.raises(Exception, match="cancelled"):
        pool.clone_volume(ContentRef("snapshot", "snap"), "restored", 256 * MiB, cancelled)


# -- btrfs limits ---------------------------------------------------------------------------


def write_until_full(path: Path, limit_bytes: int) -> tuple[int, OSError | None]:
    chunk = b"\x5a" * MiB
    written = 0
    with path.open("ab") as handle:
        try:
            while written < limit_bytes:
                handle.write(chunk)
                handle.flush()
                written += len(chunk)
            os.fsync(handle.fileno())
        except OSError as exc:
            return written, exc
    return written, None


def test_btrfs_snapshot_has_its_own_qgroup_limited_to_the_source_size(
    btrfs_pool: BtrfsPool,
) -> None:
    btrfs_pool.create_volume("vol", 64 * MiB)
    (btrfs_pool.volume_path("vol") / "data").write_bytes(os.urandom(8 * MiB))

    outcome = btrfs_pool.create_snapshot("vol", "snap", 64 * MiB)

    path = btrfs_pool.snapshot_path("snap")
    snapshot_id = btrfs.subvolume_id(path)
    assert outcome.backend == {"subvolume_id": snapshot_id}
    assert snapshot_id != btrfs.subvolume_id(btrfs_pool.volume_path("vol"))
    group = btrfs.qgroup(btrfs_pool.root, snapshot_id)
    assert group is not None and group.max_referenced == 64 * MiB
    assert group.referenced >= 8 * MiB
    with pytest.raises(OSError) as err:
        (path / "more").write_bytes(b"x")
    assert err.value.errno == errno.EROFS


def test_btrfs_clone_larger_than_its_source_gets_the_larger_limit(btrfs_pool: BtrfsPool) -> None:
    btrfs_pool.create_volume("vol", 32 * MiB)
    (btrfs_pool.volume_path("vol") / "data").write_bytes(os.urandom(8 * MiB))
    btrfs_pool.create_snapshot("vol", "snap", 32 * MiB)

    btrfs_pool.clone_volume(ContentRef("snapshot", "snap"), "bigger", 96 * MiB)

    path = btrfs_pool.volume_path("bigger")
    group = btrfs.qgroup(btrfs_pool.root, btrfs.subvolume_id(path))
    assert group is not None and group.max_referenced == 96 * MiB
    written, error = write_until_full(path / "grow", 128 * MiB)
    assert error is not None and error.errno == errno.EDQUOT, f"wrote {written} bytes"
    assert 48 * MiB <= written <= 96 * MiB  # well past the source's 32 MiB, not past 96 MiB
