"""XFS project quotas for real, in the VM (the host kernel has no XFS quota): the pool's sizes
are enforced (ENOSPC), expanded online, reported from the quota, kept across a remount and
cleared on delete; over the pool API and through the real CSI server."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.catalog.store import Catalog
from sharevol.errors import FailedPrecondition
from sharevol.pools.base import ContentRef
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.pools.xfs import XfsPool
from sharevol.sys import quota
from sharevol.sys.quota import ProjectQuota
from tests.support.csi import running_server
from tests.vm.project_quota import (
    CsiVolume,
    MiB,
    create_files_as_pod,
    create_volumes,
    has_no_cap_sys_resource,
    mount,
    project_fs,
    statvfs_size,
    unmount_all,
    write_as_pod,
)

pytestmark = pytest.mark.vm

FS = "xfs"


@pytest.fixture
def fs(xfs_disk: Path, tmp_path: Path) -> Iterator[Path]:
    with project_fs(xfs_disk, FS, tmp_path) as mount_point:
        yield mount_point


@pytest.fixture
def pool(fs: Path) -> XfsPool:
    started = XfsPool("fast", fs)
    started.start()
    return started


def test_pool_starts_enforcing_on_xfs_mounted_with_prjquota(pool: XfsPool) -> None:
    assert pool.quota_state == quota.QuotaState(accounting=True, enforced=True)
    assert pool.capabilities.enforces_quota and pool.capabilities.reports_usage
    assert pool.capabilities.snapshot_method == "reflink"


def test_pool_refuses_to_start_on_xfs_mounted_without_prjquota(
    xfs_disk: Path, tmp_path: Path
) -> None:
    with (
        project_fs(xfs_disk, FS, tmp_path, prjquota=False) as mount_point,
        pytest.raises(FailedPrecondition) as caught,
    ):
        XfsPool("fast", mount_point).start()
    assert "has quotas off: mount it with -o prjquota" in str(caught.value)


def test_writes_stop_at_the_size_with_enospc_and_resume_after_expansion(pool: XfsPool) -> None:
    assert has_no_cap_sys_resource()
    backend = pool.create_volume("vol", 8 * MiB)
    path = pool.volume_path("vol")

    first = write_as_pod(path / "first", 12 * MiB)

    assert first.error == errno.ENOSPC  # XFS project quota reports ENOSPC, not EDQUOT
    assert first.bytes == 8 * MiB

    pool.set_limit("vol", 16 * MiB, backend)
    second = write_as_pod(path / "second", 4 * MiB)

    assert second == type(second)(4 * MiB, None)
    usage = pool.usage("vol", 16 * MiB, backend)
    assert usage.capacity_bytes == 16 * MiB
    assert 12 * MiB <= usage.used_bytes <= 12 * MiB + 64 * 1024
    assert usage.available_bytes == 16 * MiB - usage.used_bytes
    assert usage.used_inodes == 3  # the volume directory and two files
    assert statvfs_size(path) == 16 * MiB  # df inside the volume shows its size


def test_file_limit_stops_new_files(pool: XfsPool) -> None:
    backend = pool.set_file_limit("vol", 5, pool.create_volume("vol", 8 * MiB))

    created = create_files_as_pod(pool.volume_path("vol"), 10)

    assert created == 4  # five inodes: the directory and four files
    usage = pool.usage("vol", 8 * MiB, backend)
    assert (usage.total_inodes, usage.used_inodes, usage.available_inodes) == (5, 5, 0)


def test_delete_removes_the_data_and_clears_the_project(pool: XfsPool) -> None:
    backend = pool.create_volume("vol", 8 * MiB)
    project_id = int(backend["project_id"])
    write_as_pod(pool.volume_path("vol") / "data", 2 * MiB)

    pool.delete_volume("vol", backend)

    assert not pool.volume_path("vol").exists()
    os.sync()  # XFS frees unlinked inodes in the background (inodegc); sync flushes that
    assert pool.quotas.get(project_id) == ProjectQuota(project_id, 0, 0, 0, 0)


def test_clone_by_reflink_is_a_new_project_holding_the_data(pool: XfsPool) -> None:
    pool.create_volume("src", 8 * MiB)
    write_as_pod(pool.volume_path("src") / "data", 4 * MiB)
    free_before = pool.space().free_bytes

    outcome = pool.clone_volume(ContentRef("volume", "src"), "copy", 6 * MiB)

    clone_id = int(outcome.backend["project_id"])
    assert quota.get_project(pool.volume_path("copy")) == clone_id
    charged = pool.quotas.get(clone_id)
    assert charged.block_limit_bytes == 6 * MiB
    assert charged.used_bytes >= 4 * MiB  # reflinked blocks count for each owner
    assert free_before - pool.space().free_bytes < MiB  # ... but are stored once
    assert write_as_pod(pool.volume_path("copy") / "more", 4 * MiB).error == errno.ENOSPC


def test_csi_volume_is_enforced_expanded_and_reported_through_the_server(
    fs: Path, tmp_path: Path
) -> None:
    config = ServerConfig(pools=(PoolConfig(name="fast", path=fs, kind="xfs"),))
    with running_server(config, tmp_path / "state") as (_server, stubs):
        volume = CsiVolume(stubs, tmp_path, "db", 8 * MiB)
        try:
            assert volume.volume.volume_context["sharevol.csi.io/quota"] == "enforced"
            first = write_as_pod(volume.target / "first", 12 * MiB)
            assert (first.bytes, first.error) == (8 * MiB, errno.ENOSPC)
            stats = volume.stats()
            assert stats[1].total == 8 * MiB  # BYTES
            assert 8 * MiB <= stats[1].used <= 8 * MiB + 64 * 1024

            assert volume.expand(16 * MiB) == 16 * MiB
            assert write_as_pod(volume.target / "second", 4 * MiB).error is None
            stats = volume.stats()
            assert stats[1].total == 16 * MiB
            assert 12 * MiB <= stats[1].used <= 12 * MiB + 64 * 1024
            assert stats[2].used == 3  # INODES: the directory and two files
        finally:
            record = Catalog(fs).load_volumes()[0]
            volume.close()
    project_id = int(record.backend["project_id"])
    assert XfsPool("fast", fs).project_ids.recorded_high_water() == 0  # the record is gone
    assert quota.open_project_quotas(fs, "xfs").get(project_id).block_limit_bytes == 0


def test_project_ids_and_limits_survive_a_remount(fs: Path, xfs_disk: Path, tmp_path: Path) -> None:
    config = ServerConfig(pools=(PoolConfig(name="fast", path=fs, kind="xfs"),))
    with running_server(config, tmp_path / "state-1") as (_server, stubs):
        create_volumes(stubs, "pvc", 3, 8 * MiB)
    before = {r.directory: r.backend["project_id"] for r in Catalog(fs).load_volumes()}
    assert len(set(before.values())) == 3

    unmount_all(fs)
    mount(xfs_disk, fs)

    pool = XfsPool("fast", fs)
    pool.start()
    for directory, project_id in before.items():
        assert quota.get_project(pool.volume_path(directory)) == project_id
        assert pool.quotas.get(int(project_id)).block_limit_bytes == 8 * MiB
    new = pool.create_volume("after-remount", MiB)
    assert new["project_id"] == max(int(v) for v in before.values()) + 1
