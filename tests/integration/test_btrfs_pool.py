"""BtrfsPool on a real loop-mounted btrfs with qgroups: limits, usage, idempotency, cleanup."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from sharevol.errors import FailedPrecondition, Internal, NotFound
from sharevol.pools.btrfs import BtrfsPool
from sharevol.sys import btrfs
from sharevol.sys.runner import SubprocessRunner

pytestmark = pytest.mark.root

KiB, MiB, GiB = 1024, 1024**2, 1024**3
CHUNK = b"\xa5" * MiB
METADATA_SLACK = 64 * KiB
"""qgroup `referenced` counts the subvolume's metadata as well as data: its tree's 16 KiB
nodes (one at first, more as inode and extent items pile up). 64 KiB covers a few nodes."""


def write_until_full(path: Path, limit_bytes: int) -> tuple[int, OSError | None]:
    """Write 1 MiB chunks up to `limit_bytes`; (bytes written, the error that stopped it)."""
    written = 0
    with path.open("ab") as handle:
        try:
            while written < limit_bytes:
                handle.write(CHUNK)
                handle.flush()
                written += len(CHUNK)
            os.fsync(handle.fileno())
        except OSError as exc:
            return written, exc
    return written, None


def write_file(path: Path, size: int) -> None:
    """Write `size` bytes and fsync them."""
    with path.open("wb") as handle:
        for _ in range(size // MiB):
            handle.write(CHUNK)
        handle.write(CHUNK[: size % MiB])
        os.fsync(handle.fileno())


def live_subvolumes(fs: Path) -> set[int]:
    """Ids of subvolumes not deleted (a delete shows in the root tree after the commit)."""
    btrfs.sync(fs)
    return {sub.subvolume_id for sub in btrfs.list_subvolumes(fs) if not sub.deleted}


def test_create_sets_a_qgroup_limit_equal_to_the_capacity(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 64 * MiB)

    path = btrfs_pool.volume_path("vol-a")
    assert btrfs.is_subvolume(path)
    assert backend == {"subvolume_id": btrfs.subvolume_id(path)}
    group = btrfs.qgroup(btrfs_pool.root, btrfs.subvolume_id(path))
    assert group is not None
    assert group.max_referenced == 64 * MiB


def test_write_past_the_capacity_fails_with_edquot(btrfs_pool: BtrfsPool) -> None:
    btrfs_pool.create_volume("vol-a", 16 * MiB)

    written, error = write_until_full(btrfs_pool.volume_path("vol-a") / "big", 32 * MiB)

    assert error is not None, f"wrote {written} bytes past a 16 MiB limit"
    assert error.errno == errno.EDQUOT == 122
    assert written <= 16 * MiB


def test_usage_after_writing_matches_the_bytes_written(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 256 * MiB)
    size = 10 * MiB + 12345
    write_file(btrfs_pool.volume_path("vol-a") / "data", size)
    btrfs.sync(btrfs_pool.root)  # qgroup numbers move at transaction commit

    usage = btrfs_pool.usage("vol-a", 256 * MiB, backend)

    assert size <= usage.used_bytes <= size + 4 * KiB + METADATA_SLACK
    assert usage.capacity_bytes == 256 * MiB
    assert usage.available_bytes == 256 * MiB - usage.used_bytes
    assert usage.used_inodes == 2  # the subvolume's root directory and the file
    assert usage.available_inodes == usage.available_bytes // 4096
    assert usage.total_inodes == usage.used_inodes + usage.available_inodes


def test_usage_counts_every_inode_of_the_subvolume(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 64 * MiB)
    path = btrfs_pool.volume_path("vol-a")
    for i in range(50):
        (path / f"f{i}").write_bytes(b"x")
    (path / "sub").mkdir()
    os.link(path / "f0", path / "sub" / "hardlink")  # same inode: counted once
    (path / "sub" / "symlink").symlink_to("/etc")

    usage = btrfs_pool.usage("vol-a", 64 * MiB, backend)

    assert usage.used_inodes == 1 + 50 + 1 + 1


def test_raising_the_limit_lets_writes_resume(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 16 * MiB)
    data = btrfs_pool.volume_path("vol-a") / "data"
    _, error = write_until_full(data, 32 * MiB)
    assert error is not None and error.errno == errno.EDQUOT

    btrfs_pool.set_limit("vol-a", 64 * MiB, backend)  # while over quota: must still work
    written, error = write_until_full(data, 16 * MiB)

    assert error is None
    assert written == 16 * MiB
    btrfs.sync(btrfs_pool.root)
    assert btrfs_pool.usage("vol-a", 64 * MiB, backend).capacity_bytes == 64 * MiB


def test_create_twice_gives_the_same_subvolume_and_only_one(btrfs_pool: BtrfsPool) -> None:
    before = live_subvolumes(btrfs_pool.root)

    first = btrfs_pool.create_volume("vol-a", 16 * MiB)
    second = btrfs_pool.create_volume("vol-a", 16 * MiB)

    assert first == second
    assert live_subvolumes(btrfs_pool.root) - before == {first["subvolume_id"]}


def test_create_retry_with_another_capacity_converges_to_it(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 16 * MiB)
    btrfs_pool.create_volume("vol-a", 48 * MiB)

    group = btrfs.qgroup(btrfs_pool.root, int(backend["subvolume_id"]))
    assert group is not None and group.max_referenced == 48 * MiB


def test_create_over_a_plain_directory_is_refused(btrfs_pool: BtrfsPool) -> None:
    btrfs_pool.volume_path("vol-a").mkdir()

    with pytest.raises(Internal, match="not a btrfs subvolume"):
        btrfs_pool.create_volume("vol-a", 16 * MiB)


def test_delete_is_idempotent_and_leaves_no_subvolume_nor_qgroup(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 64 * MiB)
    subvolume_id = int(backend["subvolume_id"])
    write_file(btrfs_pool.volume_path("vol-a") / "data", 4 * MiB)

    btrfs_pool.delete_volume("vol-a", backend)
    btrfs_pool.delete_volume("vol-a", backend)

    assert not os.path.lexists(btrfs_pool.volume_path("vol-a"))
    btrfs.sync(btrfs_pool.root)  # commits and wakes the cleaner; else it waits up to 30 s
    SubprocessRunner().run(["btrfs", "subvolume", "sync", str(btrfs_pool.root)], timeout=60)
    btrfs_pool.start()  # drops the qgroup where the kernel keeps it (Debian's 6.1)
    assert subvolume_id not in {sub.subvolume_id for sub in btrfs.list_subvolumes(btrfs_pool.root)}
    assert subvolume_id not in {g.subvolume_id for g in btrfs.list_qgroups(btrfs_pool.root)}


def test_delete_of_a_volume_never_created_is_fine(btrfs_pool: BtrfsPool) -> None:
    btrfs_pool.delete_volume("never-made", {})


def test_delete_removes_subvolumes_a_tenant_nested_inside(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 64 * MiB)
    path = btrfs_pool.volume_path("vol-a")
    (path / "a" / "b").mkdir(parents=True)
    btrfs.create_subvolume(path / "a" / "b", "nested")
    btrfs.create_subvolume(path, "n2")
    btrfs.create_subvolume(path / "n2", "deeper")
    before = live_subvolumes(btrfs_pool.root)

    btrfs_pool.delete_volume("vol-a", backend)

    assert not os.path.lexists(path)
    assert len(before - live_subvolumes(btrfs_pool.root)) == 4


def test_delete_refuses_a_plain_directory_in_place_of_the_subvolume(
    btrfs_pool: BtrfsPool,
) -> None:
    (btrfs_pool.volume_path("vol-a") / "keep").mkdir(parents=True)

    with pytest.raises(Internal, match="not a btrfs subvolume"):
        btrfs_pool.delete_volume("vol-a", {})
    assert (btrfs_pool.volume_path("vol-a") / "keep").is_dir()


def test_archive_keeps_the_data_and_the_limit(btrfs_pool: BtrfsPool) -> None:
    backend = btrfs_pool.create_volume("vol-a", 32 * MiB)
    (btrfs_pool.volume_path("vol-a") / "data").write_bytes(b"keep me")

    btrfs_pool.archive_volume("vol-a", "vol-a-20250101")
    btrfs_pool.archive_volume("vol-a", "vol-a-20250101")  # retry after the move: no-op

    archived = btrfs_pool.root / "archive" / "vol-a-20250101"
    assert (archived / "data").read_bytes() == b"keep me"
    assert not os.path.lexists(btrfs_pool.volume_path("vol-a"))
    assert btrfs.subvolume_id(archived) == backend["subvolume_id"]
    group = btrfs.qgroup(btrfs_pool.root, int(backend["subvolume_id"]))
    assert group is not None and group.max_referenced == 32 * MiB


def test_archive_of_a_missing_volume_is_not_found(btrfs_pool: BtrfsPool) -> None:
    with pytest.raises(NotFound):
        btrfs_pool.archive_volume("never-made", "x")


def test_usage_and_set_limit_of_a_missing_volume_are_not_found(btrfs_pool: BtrfsPool) -> None:
    with pytest.raises(NotFound):
        btrfs_pool.usage("never-made", MiB, {})
    with pytest.raises(NotFound):
        btrfs_pool.set_limit("never-made", MiB, {})


def test_start_refuses_btrfs_with_quotas_off_saying_how_to_fix(btrfs_fs: Path) -> None:
    SubprocessRunner().run(["btrfs", "quota", "disable", str(btrfs_fs)], timeout=60)

    with pytest.raises(FailedPrecondition) as caught:
        BtrfsPool("fast", btrfs_fs).start()

    assert f"run `btrfs quota enable {btrfs_fs}`" in str(caught.value)
    assert not (btrfs_fs / "volumes").exists()


def test_pool_on_a_folder_of_a_btrfs_works(btrfs_fs: Path) -> None:
    (btrfs_fs / "pools" / "fast").mkdir(parents=True)
    pool = BtrfsPool("fast", btrfs_fs / "pools" / "fast")
    pool.start()

    backend = pool.create_volume("vol-a", 8 * MiB)
    _, error = write_until_full(pool.volume_path("vol-a") / "f", 16 * MiB)

    assert error is not None and error.errno == errno.EDQUOT
    pool.delete_volume("vol-a", backend)


def test_space_is_the_filesystem_size(btrfs_pool: BtrfsPool) -> None:
    space = btrfs_pool.space()

    assert 1 * GiB < space.total_bytes <= 2 * GiB
    assert 0 < space.free_bytes <= space.total_bytes


def test_snapshot_is_a_copy_of_the_data(btrfs_pool: BtrfsPool) -> None:
    btrfs_pool.create_volume("vol-a", 32 * MiB)
    (btrfs_pool.volume_path("vol-a") / "data").write_bytes(b"v1")

    source = btrfs_pool.volume_path("vol-a")
    btrfs.snapshot_subvolume(source, btrfs_pool.root, "snap", readonly=True)
    (btrfs_pool.volume_path("vol-a") / "data").write_bytes(b"v2")

    assert (btrfs_pool.root / "snap" / "data").read_bytes() == b"v1"
    with pytest.raises(OSError) as caught:
        (btrfs_pool.root / "snap" / "data").write_bytes(b"x")
    assert caught.value.errno == errno.EROFS


def test_create_with_limit_runs_at_thousands_per_second(btrfs_pool: BtrfsPool) -> None:
    """Measured here: ~10,000-16,000 volumes/s (the btrfs CLI manages ~375/s). The floor is
    loose for noisy CI machines but still far above one process per volume."""
    count = 300
    started = time.monotonic()
    for i in range(count):
        btrfs_pool.create_volume(f"rate-{i}", GiB)
    rate = count / (time.monotonic() - started)

    print(f"btrfs subvolume create + qgroup limit: {rate:,.0f} volumes/s")
    assert rate > 1000
