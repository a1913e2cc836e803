"""Build the pool a configuration asks for; `kind: auto` picks btrfs only where it can enforce."""

from __future__ import annotations

import logging
from pathlib import Path

from sharevol.errors import SharevolError
from sharevol.pools.base import Pool
from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.config import PoolConfig
from sharevol.pools.plain import PlainPool
from sharevol.sys import btrfs
from sharevol.sys.statfs import filesystem_type

log = logging.getLogger(__name__)


def make_pool(config: PoolConfig) -> Pool:
    """The pool for `config` (not started). For kind auto: btrfs when the path is on btrfs with
    quotas on, otherwise plain directories with a warning saying why sizes are not enforced."""
    if config.kind == "btrfs":
        return BtrfsPool(config.name, config.path, node_local=config.node_local)
    if config.kind == "plain":
        return PlainPool(config.name, config.path, node_local=config.node_local)
    reason = btrfs_unusable_reason(config.path)
    if reason is None:
        return BtrfsPool(config.name, config.path, node_local=config.node_local)
    log.warning(
        'pool "%s" at %s: using plain directories, volume sizes will NOT be enforced: %s',
        config.name, config.path, reason,
    )  # fmt: skip
    return PlainPool(config.name, config.path, node_local=config.node_local)


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
