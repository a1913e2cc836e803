"""The XFS and ext4 pools over the fake quota layer (no root, no quota-capable kernel needed):
refusals, project ID allocation (with real Catalog locks), limits, usage, delete, clones.

The real kernel calls are proven in tests/vm (XFS and ext4 in a VM) and tests/integration."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from pathlib import Path

import pytest

from sharevol.catalog.records import (
    AccessMode,
    Capability,
    SnapshotRecord,
    VolumeRecord,
)
from sharevol.catalog.store import Catalog
from sharevol.errors import FailedPrecondition, InvalidArgument, NotFound
from sharevol.pools._project import ProjectQuotaPool
from sharevol.pools._project_ids import FIRST_PROJECT_ID
from sharevol.pools.base import ArchivePool, ContentRef
from sharevol.pools.ext4 import Ext4Pool
from sharevol.pools.xfs import XfsPool
from sharevol.sys.fake_quota import FakeProjectQuotas
from sharevol.sys.quota import QuotaState

MiB = 1024 * 1024
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)


def xfs_pool(root: Path, quotas: FakeProjectQuotas | None = None, **kwargs: bool) -> XfsPool:
    root.mkdir(exist_ok=True)
    pool = XfsPool("fast", root, quotas=quotas or FakeProjectQuotas(), **kwargs)
    pool.start()
    return pool


def fake_of(pool: ProjectQuotaPool) -> FakeProjectQuotas:
    assert isinstance(pool.quotas, FakeProjectQuotas)
    return pool.quotas


def record_with(
    pool: str, directory: str, backend: dict[str, int | str], **extra: str
) -> VolumeRecord:
    uuid = os.urandom(16).hex()
    return VolumeRecord(
        volume_id=f"{pool}/{uuid}", name=f"pvc-{uuid[:6]}", pool=pool, uuid=uuid,
        directory=directory, capacity_bytes=MiB, capabilities=(RWX,), backend=backend,
        state=extra.get("state", "ready"),
    )  # fmt: skip


# -- start --------------------------------------------------------------------------------


def test_xfs_pool_with_quotas_off_refuses_to_start_saying_mount_with_prjquota(
    tmp_path: Path,
) -> None:
    quotas = FakeProjectQuotas(quota_state=QuotaState(False, False, no_quota=True))

    with pytest.raises(FailedPrecondition) as caught:
        xfs_pool(tmp_path / "pool", quotas)

    assert f'pool "fast" at {tmp_path / "pool"} has quotas off: mount it with -o prjquota' in str(
        caught.value
    )
    assert not (tmp_path / "pool" / "volumes").exists()


def test_xfs_pool_accounting_without_enforcement_says_remount_with_prjquota(
    tmp_path: Path,
) -> None:
    quotas = FakeProjectQuotas(quota_state=QuotaState(True, False))

    with pytest.raises(FailedPrecondition, match="remount it with -o prjquota"):
        xfs_pool(tmp_path / "pool", quotas)


def test_ext4_pool_without_the_quota_feature_names_the_mkfs_and_mount_options(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pool"
    root.mkdir()
    quotas = FakeProjectQuotas(fs_type="ext4", quota_state=QuotaState(False, False, True))

    with pytest.raises(FailedPrecondition) as caught:
        Ext4Pool("home", root, quotas=quotas).start()

    message = str(caught.value)
    assert 'pool "home"' in message and "has quotas off" in message
    assert "mkfs.ext4 -O quota,project -E quotatype=prjquota" in message
    assert "-o prjquota" in message


def test_pool_on_another_filesystem_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"is on ext4, not xfs"):
        xfs_pool(tmp_path / "pool", FakeProjectQuotas(fs_type="ext4"))


def test_enforce_quota_false_starts_with_quotas_off_and_reports_not_enforced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quotas = FakeProjectQuotas(quota_state=QuotaState(False, False, no_quota=True))

    with caplog.at_level(logging.WARNING):
        pool = xfs_pool(tmp_path / "pool", quotas, enforce_quota=False)

    assert not pool.capabilities.enforces_quota
    assert not pool.capabilities.reports_usage
    assert "has quotas off" in caplog.text and "NOT enforced" in caplog.text


def test_enforcing_pool_reports_enforced_and_quota_usage(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")

    assert pool.capabilities.enforces_quota
    assert pool.capabilities.reports_usage
    assert pool.kind == "xfs"


def test_pool_folders_inside_another_project_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    (root / "volumes").mkdir(parents=True)
    quotas = FakeProjectQuotas()
    quotas.set_project(root / "volumes", 42)

    with pytest.raises(FailedPrecondition, match="belongs to project 42"):
        xfs_pool(root, quotas)


# -- create and project IDs ---------------------------------------------------------------


def test_create_gives_the_directory_its_own_project_and_a_hard_limit(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")

    backend = pool.create_volume("vol-a", 64 * MiB)

    path = tmp_path / "pool" / "volumes" / "vol-a"
    assert path.is_dir()
    assert backend == {"project_id": FIRST_PROJECT_ID}
    assert fake_of(pool).get_project(path) == FIRST_PROJECT_ID
    assert fake_of(pool).get(FIRST_PROJECT_ID).block_limit_bytes == 64 * MiB


def test_each_volume_gets_a_new_project_id(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")

    ids = [pool.create_volume(f"vol-{n}", MiB)["project_id"] for n in range(5)]

    assert ids == list(range(FIRST_PROJECT_ID, FIRST_PROJECT_ID + 5))


def test_a_retried_create_keeps_the_project_id_it_set(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    first = pool.create_volume("vol-a", MiB)

    again = pool.create_volume("vol-a", 2 * MiB)

    assert again == first
    assert fake_of(pool).calls.count(("set_project", FIRST_PROJECT_ID)) == 1
    assert fake_of(pool).get(FIRST_PROJECT_ID).block_limit_bytes == 2 * MiB


def test_allocation_skips_ids_the_filesystem_still_charges_or_limits(tmp_path: Path) -> None:
    quotas = FakeProjectQuotas()
    quotas.charge(FIRST_PROJECT_ID, used_inodes=3)  # e.g. another pool on the same filesystem
    quotas.set_limits(FIRST_PROJECT_ID + 1, block_bytes=MiB)  # an admin's project, still empty
    pool = xfs_pool(tmp_path / "pool", quotas)

    assert pool.create_volume("vol-a", MiB) == {"project_id": FIRST_PROJECT_ID + 2}


def test_a_restarted_pool_allocates_above_every_recorded_id(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    root.mkdir()
    catalog = Catalog(root)
    catalog.ensure()
    catalog.put_volume(record_with("fast", "old-a", {"project_id": FIRST_PROJECT_ID + 40}))
    archived = record_with("fast", "old-b", {"project_id": FIRST_PROJECT_ID + 90})
    catalog.put_volume(archived.model_copy(update={"state": "archived"}))
    catalog.put_volume(record_with("other", "old-c", {"project_id": FIRST_PROJECT_ID + 500}))
    catalog.put_snapshot(
        SnapshotRecord(
            snapshot_id="fast/" + "ab" * 16, name="snap", pool="fast", uuid="ab" * 16,
            directory="snap", source_volume_id="fast/" + "cd" * 16, size_bytes=MiB,
            method="copy", backend={"project_id": FIRST_PROJECT_ID + 120},
            created_at=dt.datetime.now(dt.UTC),
        )
    )  # fmt: skip

    pool = xfs_pool(root)

    assert pool.project_ids.recorded_high_water() == FIRST_PROJECT_ID + 120
    assert pool.create_volume("vol-new", MiB) == {"project_id": FIRST_PROJECT_ID + 121}


def test_concurrent_creates_in_two_pool_instances_never_share_a_project_id(
    tmp_path: Path,
) -> None:
    """Two controllers on one pool (two Catalog locks on the same file, as two processes
    would hold), each with its own idea of the next ID: the lock plus the in-use check keep
    every ID unique."""
    root = tmp_path / "pool"
    quotas = FakeProjectQuotas()  # one filesystem, seen by both
    pools = [xfs_pool(root, quotas), XfsPool("fast", root, quotas=quotas)]
    pools[1].start()
    results: dict[str, int | str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def create(index: int) -> None:
        try:
            barrier.wait()
            for n in range(10):
                directory = f"vol-{index}-{n}"
                results[directory] = pools[index % 2].create_volume(directory, MiB)["project_id"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 80
    assert len(set(results.values())) == 80
    for directory, project_id in results.items():
        assert quotas.get_project(root / "volumes" / directory) == project_id


def test_pool_without_project_ids_and_not_enforcing_makes_plain_directories(
    tmp_path: Path,
) -> None:
    quotas = FakeProjectQuotas(
        fs_type="ext4", quota_state=QuotaState(False, False, True), project_ids_supported=False
    )
    root = tmp_path / "pool"
    root.mkdir()
    pool = Ext4Pool("home", root, quotas=quotas, enforce_quota=False)
    pool.start()

    assert pool.create_volume("vol-a", MiB) == {}
    (root / "volumes" / "vol-a" / "f").write_bytes(b"x" * 8192)
    usage = pool.usage("vol-a", MiB, {})

    assert usage.capacity_bytes == MiB  # the recorded size: nothing enforces it
    assert usage.used_bytes >= 8192  # a tree walk


# -- limits and usage ---------------------------------------------------------------------


def test_expansion_raises_the_block_limit_and_keeps_the_file_limit(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    backend = pool.set_file_limit("vol-a", 100, pool.create_volume("vol-a", MiB))

    pool.set_limit("vol-a", 8 * MiB, backend)

    quota = fake_of(pool).get(FIRST_PROJECT_ID)
    assert (quota.block_limit_bytes, quota.inode_limit) == (8 * MiB, 100)
    assert backend == {"project_id": FIRST_PROJECT_ID, "max_files": 100}


def test_file_limit_must_be_positive(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    backend = pool.create_volume("vol-a", MiB)

    with pytest.raises(InvalidArgument):
        pool.set_file_limit("vol-a", 0, backend)


def test_usage_comes_from_the_project_quota(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    backend = pool.create_volume("vol-a", 10 * MiB)
    fake_of(pool).charge(FIRST_PROJECT_ID, used_bytes=3 * MiB, used_inodes=6)

    usage = pool.usage("vol-a", 999 * MiB, backend)

    assert usage.capacity_bytes == 10 * MiB  # the limit, not the recorded size
    assert usage.used_bytes == 3 * MiB
    assert usage.available_bytes == 7 * MiB
    assert usage.used_inodes == 7  # the directory itself and 6 files
    assert usage.total_inodes == usage.used_inodes + usage.available_inodes


def test_usage_with_a_file_limit_reports_it_as_the_inode_total(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    backend = pool.set_file_limit("vol-a", 50, pool.create_volume("vol-a", MiB))
    fake_of(pool).charge(FIRST_PROJECT_ID, used_inodes=9)

    usage = pool.usage("vol-a", MiB, backend)

    assert (usage.total_inodes, usage.used_inodes, usage.available_inodes) == (50, 10, 40)


def test_usage_of_a_missing_volume_is_not_found(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")

    with pytest.raises(NotFound):
        pool.usage("nope", MiB, {"project_id": FIRST_PROJECT_ID})


# -- delete, archive ----------------------------------------------------------------------


def test_delete_removes_the_tree_and_clears_the_limits(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    backend = pool.set_file_limit("vol-a", 10, pool.create_volume("vol-a", MiB))
    path = tmp_path / "pool" / "volumes" / "vol-a"
    (path / "sub").mkdir()
    (path / "sub" / "f").write_text("data")
    os.symlink("/etc", path / "escape")

    pool.delete_volume("vol-a", backend)

    assert not path.exists()
    assert os.path.isdir("/etc")
    quota = fake_of(pool).get(FIRST_PROJECT_ID)
    assert (quota.block_limit_bytes, quota.inode_limit) == (0, 0)


def test_delete_of_a_gone_volume_still_clears_its_recorded_project(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    fake_of(pool).set_limits(FIRST_PROJECT_ID + 7, block_bytes=MiB)

    pool.delete_volume("vol-gone", {"project_id": FIRST_PROJECT_ID + 7})

    assert fake_of(pool).get(FIRST_PROJECT_ID + 7).block_limit_bytes == 0


def test_archive_keeps_the_project_and_its_limit(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    pool.create_volume("vol-a", MiB)

    pool.archive_volume("vol-a", "vol-a-20240101T000000Z")

    archived = tmp_path / "pool" / "archive" / "vol-a-20240101T000000Z"
    assert fake_of(pool).get_project(archived) == FIRST_PROJECT_ID
    assert fake_of(pool).get(FIRST_PROJECT_ID).block_limit_bytes == MiB


# -- snapshots and clones -----------------------------------------------------------------


def test_clone_is_a_new_project_with_the_new_size_and_the_data(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    pool.create_volume("src", MiB)
    (tmp_path / "pool" / "volumes" / "src" / "f").write_text("payload")

    outcome = pool.clone_volume(ContentRef("volume", "src"), "copy", 4 * MiB)

    clone = tmp_path / "pool" / "volumes" / "copy"
    assert (clone / "f").read_text() == "payload"
    assert outcome.backend == {"project_id": FIRST_PROJECT_ID + 1}
    assert fake_of(pool).get_project(clone) == FIRST_PROJECT_ID + 1
    assert fake_of(pool).get(FIRST_PROJECT_ID + 1).block_limit_bytes == 4 * MiB
    assert sorted(os.listdir(tmp_path / "pool" / "volumes")) == ["copy", "src"]


def test_a_retried_clone_starts_over_in_the_same_project(tmp_path: Path) -> None:
    pool = xfs_pool(tmp_path / "pool")
    pool.create_volume("src", MiB)
    first = pool.clone_volume(ContentRef("volume", "src"), "copy", MiB)
    (tmp_path / "pool" / "volumes" / "copy" / "left-by-the-crash").write_text("x")

    again = pool.clone_volume(ContentRef("volume", "src"), "copy", MiB)

    assert again.backend == first.backend
    assert not (tmp_path / "pool" / "volumes" / "copy" / "left-by-the-crash").exists()


def test_snapshot_gets_its_own_project_without_a_limit_and_delete_clears_it(
    tmp_path: Path,
) -> None:
    pool = xfs_pool(tmp_path / "pool")
    pool.create_volume("src", MiB)
    (tmp_path / "pool" / "volumes" / "src" / "f").write_text("payload")

    outcome = pool.create_snapshot("src", "snap-1", MiB)

    snapshot = tmp_path / "pool" / "snapshots" / "snap-1"
    assert (snapshot / "f").read_text() == "payload"
    assert outcome.backend == {"project_id": FIRST_PROJECT_ID + 1}
    assert fake_of(pool).get(FIRST_PROJECT_ID + 1).block_limit_bytes == 0
    restored = pool.clone_volume(ContentRef("snapshot", "snap-1"), "restored", MiB)
    assert restored.backend == {"project_id": FIRST_PROJECT_ID + 2}

    pool.delete_snapshot("snap-1")

    assert not snapshot.exists()
    assert fake_of(pool).calls[-1] == ("set_limits", FIRST_PROJECT_ID + 1)


def test_archived_volume_usage_comes_from_its_project_and_purge_clears_it(
    tmp_path: Path,
) -> None:
    pool = xfs_pool(tmp_path / "pool")
    pool.create_volume("vol-a", 4 * MiB)
    fake_of(pool).charge(FIRST_PROJECT_ID, used_bytes=3 * MiB)
    pool.archive_volume("vol-a", "vol-a-1")
    assert isinstance(pool, ArchivePool)

    assert pool.archive_usage("vol-a-1") == 3 * MiB

    pool.purge_archive("vol-a-1")
    pool.purge_archive("vol-a-1")  # a retry after a crash

    assert not (tmp_path / "pool" / "archive" / "vol-a-1").exists()
    assert fake_of(pool).get(FIRST_PROJECT_ID).block_limit_bytes == 0
    with pytest.raises(NotFound):
        pool.archive_usage("vol-a-1")


def test_a_failed_clone_leaves_no_staging_copy_or_limit_after_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore or clone whose copy failed (or was cancelled) is undone by delete_volume: its
    staging folder and its project's limit go too, so failed attempts cannot fill the pool."""
    import sharevol.pools.snapshots as pool_snapshots
    from sharevol.errors import ResourceExhausted
    from sharevol.sys.sparse_copy import sparse_copy_tree

    root = tmp_path / "pool"
    root.mkdir()
    pool = XfsPool("fast", root, quotas=FakeProjectQuotas())
    pool.start()
    pool.create_volume("src", 1024 * 1024)
    (root / "volumes" / "src" / "big").write_bytes(b"x" * 300_000)

    def copy_then_fail(*args: object, **kwargs: object) -> None:
        sparse_copy_tree(*args, **kwargs)  # type: ignore[arg-type]
        raise ResourceExhausted("no space left (simulated after some data)")

    monkeypatch.setattr(pool_snapshots, "sparse_copy_tree", copy_then_fail)
    monkeypatch.setattr(pool_snapshots, "reflink_tree", copy_then_fail)
    with pytest.raises(ResourceExhausted):
        pool.clone_volume(ContentRef("volume", "src"), "clone", 4 * 1024 * 1024)
    staging = root / "volumes" / ".staging-clone"
    project = pool.quotas.get_project(staging)

    pool.delete_volume("clone", {})

    assert sorted(p.name for p in (root / "volumes").iterdir()) == ["src"]
    assert pool.quotas.get(project).block_limit_bytes == 0
