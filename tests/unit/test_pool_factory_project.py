"""make_pool and XFS/ext4: explicit kinds, and `auto` picking them only where project quota is
enforced (otherwise plain, with the reason)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sharevol.pools import factory
from sharevol.pools.config import PoolConfig
from sharevol.pools.ext4 import Ext4Pool
from sharevol.pools.plain import PlainPool
from sharevol.pools.xfs import XfsPool
from sharevol.sys.fake_quota import FakeProjectQuotas
from sharevol.sys.quota import Interface, QuotaState


def _fake_fs(monkeypatch: pytest.MonkeyPatch, fs_type: str, state: QuotaState) -> list[str]:
    """Pretend every path is on `fs_type` with that project quota state; returns the quotactl
    interfaces asked for."""
    asked: list[str] = []

    def open_quotas(path: Path, interface: Interface) -> FakeProjectQuotas:
        asked.append(interface)
        return FakeProjectQuotas(fs_type=fs_type, quota_state=state)

    monkeypatch.setattr(factory, "filesystem_type", lambda path: fs_type)
    monkeypatch.setattr(factory, "open_project_quotas", open_quotas)
    return asked


@pytest.mark.parametrize(("kind", "cls"), [("xfs", XfsPool), ("ext4", Ext4Pool)])
def test_explicit_kind_is_that_pool_with_its_enforce_flag(kind: str, cls: type) -> None:
    config = PoolConfig.model_validate(
        {"name": "fast", "path": "/srv/fast", "kind": kind, "enforce_quota": False}
    )

    pool = factory.make_pool(config)

    assert isinstance(pool, cls)
    assert pool.kind == kind
    assert not pool.capabilities.enforces_quota  # until start() reads the real state


@pytest.mark.parametrize(
    ("fs_type", "cls", "interface"), [("xfs", XfsPool, "xfs"), ("ext4", Ext4Pool, "vfs")]
)
def test_auto_with_project_quota_enforced_is_the_project_pool(
    monkeypatch: pytest.MonkeyPatch, fs_type: str, cls: type, interface: str
) -> None:
    asked = _fake_fs(monkeypatch, fs_type, QuotaState(True, True))

    pool = factory.make_pool(PoolConfig(name="fast", path=Path("/srv/fast")))

    assert isinstance(pool, cls)
    assert asked == [interface]


def test_auto_on_xfs_without_prjquota_is_plain_and_says_how_to_mount(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_fs(monkeypatch, "xfs", QuotaState(False, False, no_quota=True))

    with caplog.at_level(logging.WARNING, logger="sharevol.pools.factory"):
        pool = factory.make_pool(PoolConfig(name="fast", path=Path("/srv/fast")))

    assert isinstance(pool, PlainPool)
    assert "NOT be enforced" in caplog.text
    assert 'pool "fast" at /srv/fast has quotas off: mount it with -o prjquota' in caplog.text


def test_auto_on_ext4_accounting_only_is_plain_and_says_mount_with_prjquota(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_fs(monkeypatch, "ext4", QuotaState(True, False))

    with caplog.at_level(logging.WARNING, logger="sharevol.pools.factory"):
        pool = factory.make_pool(PoolConfig(name="home", path=Path("/srv/home")))

    assert isinstance(pool, PlainPool)
    assert "has quotas off: mount it with -o prjquota" in caplog.text


def test_config_accepts_the_new_kinds_and_defaults_to_enforcing() -> None:
    config = PoolConfig.model_validate({"name": "fast", "path": "/srv/fast", "kind": "ext4"})

    assert config.kind == "ext4"
    assert config.enforce_quota
