"""The StorageClass parameter `maxFiles` through the real Provisioner: set on project-quota pools,
recorded, re-applied on expansion; refused (and nothing left) on pools that cannot limit files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability
from sharevol.catalog.store import Catalog
from sharevol.errors import InvalidArgument
from sharevol.pools._project_ids import FIRST_PROJECT_ID
from sharevol.pools.base import Pool
from sharevol.pools.plain import PlainPool
from sharevol.pools.xfs import XfsPool
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.sys.fake_quota import FakeProjectQuotas

MiB = 1024 * 1024
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)


def provisioner_for(pool: Pool) -> Provisioner:
    pool.start()
    catalog = Catalog(pool.root)
    catalog.ensure()
    return Provisioner({pool.name: PoolHandle(pool, catalog)}, pool.name, "node-1")


def request(name: str = "pvc-1", **parameters: str) -> CreateRequest:
    return CreateRequest(
        name=name, capabilities=(RWX,), required_bytes=64 * MiB, parameters=parameters
    )


def test_max_files_sets_the_inode_limit_and_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    quotas = FakeProjectQuotas()
    prov = provisioner_for(XfsPool("fast", tmp_path / "pool", quotas=quotas))

    record = prov.create_volume(request(maxFiles="1000"))

    assert record.state == "ready"
    assert record.quota_enforced
    assert record.backend == {"project_id": FIRST_PROJECT_ID, "max_files": 1000}
    limits = quotas.get(FIRST_PROJECT_ID)
    assert (limits.block_limit_bytes, limits.inode_limit) == (64 * MiB, 1000)


def test_without_max_files_no_inode_limit_is_set(tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    quotas = FakeProjectQuotas()
    prov = provisioner_for(XfsPool("fast", tmp_path / "pool", quotas=quotas))

    record = prov.create_volume(request())

    assert record.backend == {"project_id": FIRST_PROJECT_ID}
    assert quotas.get(FIRST_PROJECT_ID).inode_limit == 0


def test_limits_reapplied_at_start_keep_the_file_limit(tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    quotas = FakeProjectQuotas()
    prov = provisioner_for(XfsPool("fast", tmp_path / "pool", quotas=quotas))
    prov.create_volume(request(maxFiles="10"))
    quotas.set_limits(FIRST_PROJECT_ID, block_bytes=0, inodes=0)  # e.g. lost by a quota reset

    assert prov.reapply_limits() == 1

    limits = quotas.get(FIRST_PROJECT_ID)
    assert (limits.block_limit_bytes, limits.inode_limit) == (64 * MiB, 10)


def test_max_files_on_a_pool_that_cannot_limit_files_is_refused_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "pool").mkdir()
    prov = provisioner_for(PlainPool("plain", tmp_path / "pool"))

    with pytest.raises(InvalidArgument, match=r"maxFiles.*pool 'plain' \(plain\) cannot limit"):
        prov.create_volume(request(maxFiles="1000"))

    assert os.listdir(tmp_path / "pool" / "volumes") == []
    assert Catalog(tmp_path / "pool").load_volumes() == []


@pytest.mark.parametrize("value", ["0", "-1", "1e3", "lots"])
def test_max_files_must_be_a_positive_decimal(tmp_path: Path, value: str) -> None:
    (tmp_path / "pool").mkdir()
    prov = provisioner_for(XfsPool("fast", tmp_path / "pool", quotas=FakeProjectQuotas()))

    with pytest.raises(InvalidArgument, match="maxFiles"):
        prov.create_volume(request(maxFiles=value))
