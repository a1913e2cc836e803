"""make_pool picks the backend; `auto` only picks btrfs where it can enforce sizes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sharevol.pools import factory
from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.config import PoolConfig
from sharevol.pools.plain import PlainPool
from sharevol.sys import btrfs


def _fake_fs(monkeypatch: pytest.MonkeyPatch, fs_type: str, quotas: bool) -> None:
    monkeypatch.setattr(factory, "filesystem_type", lambda path: fs_type)
    monkeypatch.setattr(btrfs, "quota_enabled", lambda path: quotas)


def test_kind_btrfs_is_btrfs_whatever_the_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_fs(monkeypatch, "xfs", quotas=False)

    pool = factory.make_pool(PoolConfig(name="fast", path=Path("/srv/fast"), kind="btrfs"))

    assert isinstance(pool, BtrfsPool)
    assert (pool.name, pool.root, pool.kind) == ("fast", Path("/srv/fast"), "btrfs")
    assert pool.capabilities.enforces_quota


def test_kind_plain_is_plain_even_on_btrfs(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_fs(monkeypatch, "btrfs", quotas=True)

    pool = factory.make_pool(
        PoolConfig(name="nas", path=Path("/mnt/nas"), kind="plain", node_local=True)
    )

    assert isinstance(pool, PlainPool)
    assert not pool.capabilities.enforces_quota
    assert pool.capabilities.node_local


def test_auto_on_btrfs_with_quotas_is_btrfs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_fs(monkeypatch, "btrfs", quotas=True)

    pool = factory.make_pool(PoolConfig(name="fast", path=Path("/srv/fast")))

    assert isinstance(pool, BtrfsPool)
    assert "NOT be enforced" not in caplog.text


def test_auto_on_btrfs_with_quotas_off_is_plain_and_warns_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_fs(monkeypatch, "btrfs", quotas=False)

    with caplog.at_level(logging.WARNING, logger="sharevol.pools.factory"):
        pool = factory.make_pool(PoolConfig(name="fast", path=Path("/srv/fast")))

    assert isinstance(pool, PlainPool)
    assert "quotas are off" in caplog.text
    assert "btrfs quota enable /srv/fast" in caplog.text


def test_auto_on_nfs_is_plain_and_names_the_filesystem(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_fs(monkeypatch, "nfs4", quotas=True)

    with caplog.at_level(logging.WARNING, logger="sharevol.pools.factory"):
        pool = factory.make_pool(PoolConfig(name="nas", path=Path("/mnt/nas")))

    assert isinstance(pool, PlainPool)
    assert "it is on nfs4, not btrfs" in caplog.text
