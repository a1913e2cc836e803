"""Build the pool a configuration asks for; `kind: auto` picks a quota pool only where the
filesystem enforces sizes (btrfs with quotas on, XFS or ext4 with project quota on)."""

from __future__ import annotations

import logging
from pathlib import Path

from sharevol.errors import SharevolError
from sharevol.pools._project import ProjectQuotaPool
from sharevol.pools.base import Pool
from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.config import PoolConfig
from sharevol.pools.ext4 import Ext4Pool
from sharevol.pools.nfs_share import SharePool
from sharevol.pools.plain import PlainPool
from sharevol.pools.xfs import XfsPool
from sharevol.sys import btrfs
from sharevol.sys.quota import open_project_quotas
from sharevol.sys.statfs import filesystem_type

log = logging.getLogger(__name__)

PROJECT_POOLS: dict[str, type[ProjectQuotaPool]] = {"xfs": XfsPool, "ext4": Ext4Pool}
"""Filesystem type -> the pool kind that sizes volumes with project quotas on it."""


def make_pool(config: PoolConfig) -> Pool:
    """The pool for `config` (not started). For kind auto: btrfs on btrfs with quotas on, xfs or
    ext4 where project quota is enforced, otherwise plain directories with a warning saying
    why sizes are not enforced."""
    if config.kind == "btrfs":
        return BtrfsPool(config.name, config.path, node_local=config.node_local)
    if config.kind == "plain":
        return PlainPool(config.name, config.path, node_local=config.node_local)
    if config.kind == "nfs":
        assert config.server is not None and config.share is not None  # noqa: S101 - validated
        return SharePool(config.name, config.path, config.server, config.share,
                         mount_options=config.mount_options)  # fmt: skip
    if config.kind in PROJECT_POOLS:
        return _project_pool(config, config.kind)
    reason: str | None
    try:
        fs_type = filesystem_type(config.path)
    except SharevolError as exc:
        reason = f"cannot tell its filesystem type: {exc}"
    else:
        if fs_type in PROJECT_POOLS:
            reason = project_quota_unusable_reason(config.path, fs_type, config.name)
            if reason is None:
                return _project_pool(config, fs_type)
        else:
            reason = btrfs_unusable_reason(config.path)
            if reason is None:
                return BtrfsPool(config.name, config.path, node_local=config.node_local)
    log.warning(
        'pool "%s" at %s: using plain directories, volume sizes will NOT be enforced: %s',
        config.name, config.path, reason,
    )  # fmt: skip
    return PlainPool(config.name, config.path, node_local=config.node_local)


def _project_pool(config: PoolConfig, fs_type: str) -> ProjectQuotaPool:
    return PROJECT_POOLS[fs_type](
        config.name, config.path, node_local=config.node_local,
        enforce_quota=config.enforce_quota,
    )  # fmt: skip


def btrfs_unusable_reason(path: Path) -> str | None:
    """Why a btrfs pool cannot work at `path` ("quotas are off", "it is on xfs"), or None."""
    try:
        fs_type = filesystem_type(path)
    except SharevolError as exc:
        return f"cannot tell its filesystem type: {exc}"
    if fs_type != "btrfs":
        return f"it is on {fs_type}, not btrfs"
    try:
        enabled = btrfs.quota_enabled(path)
    except SharevolError as exc:
        return f"cannot read the btrfs quota state: {exc}"
    if not enabled:
        return f"btrfs quotas are off (run `btrfs quota enable {path}` to enforce sizes)"
    return None


def project_quota_unusable_reason(path: Path, fs_type: str, name: str = "") -> str | None:
    """Why an xfs/ext4 pool cannot enforce sizes at `path` (project quota off), or None."""
    pool_class = PROJECT_POOLS.get(fs_type)
    if pool_class is None:
        return f"it is on {fs_type}, which has no project quotas sharevol can use"
    try:
        state = open_project_quotas(path, pool_class.interface).state()
    except SharevolError as exc:
        return f"cannot read the {fs_type} project quota state: {exc}"
    if state.enforced:
        return None
    return pool_class(name or path.name, path).quota_off_message(state)
