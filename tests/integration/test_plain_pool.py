"""PlainPool on a real directory: not enforced, usage by a bounded walk, a delete that stays in.

Most of these need no root (a tmp dir is enough); the mount-point ones are marked root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.errors import FailedPrecondition, Internal, NotFound
from sharevol.pools.plain import DELETING_PREFIX, PlainPool
from sharevol.sys.runner import SubprocessRunner

KiB, MiB = 1024, 1024**2
DIR_SLACK = 64 * KiB
"""Besides the file's data blocks a tree holds its directories' own blocks (4 KiB each on
ext4, 0 on tmpfs); 64 KiB covers them for these small trees."""


def write_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.write(os.urandom(size))
        os.fsync(handle.fileno())


def test_create_makes_a_directory_and_is_idempotent(plain_pool: PlainPool) -> None:
    assert plain_pool.create_volume("vol-a", MiB) == {}
    assert plain_pool.create_volume("vol-a", MiB) == {}

    assert plain_pool.volume_path("vol-a").is_dir()
    assert not plain_pool.capabilities.enforces_quota


def test_create_over_a_file_is_refused(plain_pool: PlainPool) -> None:
    plain_pool.volume_path("vol-a").write_bytes(b"")

    with pytest.raises(Internal, match="not a directory"):
        plain_pool.create_volume("vol-a", MiB)


def test_write_past_the_capacity_succeeds_and_usage_says_so(plain_pool: PlainPool) -> None:
    plain_pool.create_volume("vol-a", MiB)
    write_file(plain_pool.volume_path("vol-a") / "big", 4 * MiB)  # no quota: no error

    usage = plain_pool.usage("vol-a", MiB, {})

    assert usage.capacity_bytes == MiB
    assert usage.used_bytes >= 4 * MiB
    assert usage.available_bytes == 0


def test_usage_matches_bytes_written(plain_pool: PlainPool) -> None:
    plain_pool.create_volume("vol-a", 64 * MiB)
    size = 3 * MiB + 100
    write_file(plain_pool.volume_path("vol-a") / "data", size)

    usage = plain_pool.usage("vol-a", 64 * MiB, {})

    assert size <= usage.used_bytes <= size + 4 * KiB + DIR_SLACK
    assert usage.used_inodes == 2
    assert usage.available_bytes == min(64 * MiB - usage.used_bytes, plain_pool.space().free_bytes)
    assert usage.total_inodes == usage.used_inodes + usage.available_inodes


def test_usage_counts_hard_links_once_and_does_not_follow_symlinks(
    plain_pool: PlainPool, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_file(outside / "huge", 8 * MiB)
    plain_pool.create_volume("vol-a", 64 * MiB)
    path = plain_pool.volume_path("vol-a")
    write_file(path / "data", MiB)
    os.link(path / "data", path / "same-data")
    (path / "to-outside").symlink_to(outside)
    (path / "to-huge").symlink_to(outside / "huge")

    usage = plain_pool.usage("vol-a", 64 * MiB, {})

    assert MiB <= usage.used_bytes <= MiB + 4 * KiB + DIR_SLACK
    assert usage.used_inodes == 4  # the volume dir, data (twice linked), two symlinks


def test_usage_walk_that_runs_out_of_time_raises_internal(plain_dir: Path) -> None:
    pool = PlainPool("plain", plain_dir, walk_timeout=0.001)
    pool.start()
    pool.create_volume("vol-a", MiB)
    for i in range(3000):
        (pool.volume_path("vol-a") / f"f{i}").touch()

    with pytest.raises(Internal, match="usage walk"):
        pool.usage("vol-a", MiB, {})


def test_usage_of_a_missing_volume_is_not_found(plain_pool: PlainPool) -> None:
    with pytest.raises(NotFound):
        plain_pool.usage("never-made", MiB, {})


def test_delete_removes_the_tree_and_is_idempotent(plain_pool: PlainPool) -> None:
    plain_pool.create_volume("vol-a", MiB)
    deep = plain_pool.volume_path("vol-a").joinpath(*[f"d{i}" for i in range(50)])
    deep.mkdir(parents=True)
    write_file(deep / "f", 10)
    (deep / "ro").mkdir(mode=0o500)

    plain_pool.delete_volume("vol-a", {})
    plain_pool.delete_volume("vol-a", {})

    assert os.listdir(plain_pool.root / "volumes") == []


def test_delete_never_leaves_the_pool_through_a_symlink(
    plain_pool: PlainPool, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious").write_bytes(b"keep")
    (outside / "sub" / "also-precious").write_bytes(b"keep")
    plain_pool.create_volume("vol-a", MiB)
    path = plain_pool.volume_path("vol-a")
    (path / "link-to-dir").symlink_to(outside)
    (path / "inner").mkdir()
    (path / "inner" / "link-to-sub").symlink_to(outside / "sub")
    (path / "link-to-file").symlink_to(outside / "precious")

    plain_pool.delete_volume("vol-a", {})

    assert not os.path.lexists(path)
    assert (outside / "precious").read_bytes() == b"keep"
    assert (outside / "sub" / "also-precious").read_bytes() == b"keep"


def test_delete_refuses_a_volume_that_is_a_symlink(plain_pool: PlainPool, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep")
    plain_pool.volume_path("vol-a").symlink_to(outside)

    with pytest.raises(FailedPrecondition, match="not a directory"):
        plain_pool.delete_volume("vol-a", {})
    assert (outside / "precious").read_bytes() == b"keep"


def test_delete_refuses_a_volumes_folder_that_leads_out_of_the_pool(
    plain_pool: PlainPool, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "vol-a").mkdir(parents=True)
    (outside / "vol-a" / "precious").write_bytes(b"keep")
    (plain_pool.root / "volumes").rmdir()
    (plain_pool.root / "volumes").symlink_to(outside)

    with pytest.raises(FailedPrecondition, match="leads out of the pool"):
        plain_pool.delete_volume("vol-a", {})
    assert (outside / "vol-a" / "precious").read_bytes() == b"keep"


def test_delete_finishes_a_delete_that_crashed_half_way(plain_pool: PlainPool) -> None:
    trash = plain_pool.root / "volumes" / f"{DELETING_PREFIX}vol-a"
    (trash / "left" / "over").mkdir(parents=True)
    (trash / "left" / "file").write_bytes(b"x")

    plain_pool.delete_volume("vol-a", {})

    assert not os.path.lexists(trash)


def test_archive_keeps_the_data(plain_pool: PlainPool) -> None:
    plain_pool.create_volume("vol-a", MiB)
    (plain_pool.volume_path("vol-a") / "data").write_bytes(b"keep me")

    plain_pool.archive_volume("vol-a", "vol-a-old")
    plain_pool.archive_volume("vol-a", "vol-a-old")

    assert (plain_pool.root / "archive" / "vol-a-old" / "data").read_bytes() == b"keep me"
    assert not os.path.lexists(plain_pool.volume_path("vol-a"))


def test_set_limit_changes_nothing(plain_pool: PlainPool) -> None:
    plain_pool.create_volume("vol-a", MiB)

    plain_pool.set_limit("vol-a", 2 * MiB, {})

    assert plain_pool.usage("vol-a", 2 * MiB, {}).capacity_bytes == 2 * MiB


def test_start_refuses_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="is not a directory"):
        PlainPool("plain", tmp_path / "not-mounted").start()


def test_space_is_the_filesystem_size(plain_pool: PlainPool) -> None:
    st = os.statvfs(plain_pool.root)

    assert plain_pool.space().total_bytes == st.f_blocks * st.f_frsize


@pytest.fixture
def bind_mounted(plain_pool: PlainPool, tmp_path: Path) -> Iterator[Path]:
    """A directory outside the pool bind-mounted inside volume vol-a (unmounted afterwards)."""
    outside = tmp_path / "mounted-source"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep")
    plain_pool.create_volume("vol-a", MiB)
    target = plain_pool.volume_path("vol-a") / "mnt"
    target.mkdir()
    runner = SubprocessRunner()
    runner.run(["mount", "--bind", str(outside), str(target)], timeout=30)
    try:
        yield outside
    finally:
        runner.run(["umount", str(target)], timeout=30)


@pytest.mark.root
def test_delete_refuses_a_volume_with_a_mount_inside(
    plain_pool: PlainPool, bind_mounted: Path
) -> None:
    with pytest.raises(FailedPrecondition, match="unmount them first"):
        plain_pool.delete_volume("vol-a", {})

    assert (bind_mounted / "precious").read_bytes() == b"keep"
    assert plain_pool.volume_path("vol-a").is_dir()


@pytest.mark.root
def test_usage_walk_does_not_enter_mounts(plain_pool: PlainPool, bind_mounted: Path) -> None:
    write_file(bind_mounted / "big", 4 * MiB)

    usage = plain_pool.usage("vol-a", 64 * MiB, {})

    assert usage.used_bytes < MiB
