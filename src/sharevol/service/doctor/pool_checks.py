"""Checks of each pool itself: its filesystem, quotas, snapshot method, folders, free space."""

from __future__ import annotations

import os
from collections.abc import Iterator

from sharevol.pools import _layout
from sharevol.pools.btrfs import BtrfsPool
from sharevol.service.capacity import pool_budget
from sharevol.service.doctor.model import (
    Finding,
    Fix,
    PoolScan,
    ok,
    pool_check,
    problem,
    warning,
)
from sharevol.service.doctor.scan import FOLDERS
from sharevol.sys import btrfs
from sharevol.sys.reflink import supports_reflink
from sharevol.sys.statfs import filesystem_type
from sharevol.units import format_size

LOW_SPACE = 0.15
"""Below this fraction free, a warning: volumes may fill the pool before their limits."""
NO_SPACE = 0.05
"""Below this fraction free, a problem: writes will soon fail whatever the limits say."""


@pool_check("filesystem", "the pool is mounted on the filesystem its kind needs", needs_data=False)
def check_filesystem(scan: PoolScan) -> Iterator[Finding]:
    if not scan.usable:
        yield problem("filesystem", scan, str(scan.pool.root), scan.unusable_reason)
        return
    fs_type = filesystem_type(scan.pool.root)
    if not scan.pool.capabilities.enforces_quota:
        why = ""
        if (
            scan.config.kind == "auto"
            and fs_type == "btrfs"
            and not btrfs.quota_enabled(scan.pool.root)
        ):
            why = f" (btrfs quotas are off: `btrfs quota enable {scan.pool.root}`)"
        yield warning(
            "filesystem",
            scan,
            str(scan.pool.root),
            f"{scan.pool.kind} pool on {fs_type}: volume sizes are NOT enforced{why}",
        )
        return
    yield ok("filesystem", scan, f"{scan.pool.kind} on {fs_type}, sizes enforced")


@pool_check("quota", "btrfs quotas are on", applies=lambda scan: isinstance(scan.pool, BtrfsPool))
def check_btrfs_quota(scan: PoolScan) -> Iterator[Finding]:
    if not btrfs.quota_enabled(scan.pool.root):
        yield problem(
            "quota",
            scan,
            str(scan.pool.root),
            f"btrfs quotas are off, so no volume limit holds: run "
            f"`btrfs quota enable {scan.pool.root}`, then restart the controller "
            "(it sets every volume's limit again)",
        )


@pool_check("folders", "volumes/, archive/ and snapshots/ are real folders")
def check_folders(scan: PoolScan) -> Iterator[Finding]:
    missing = [folder for folder in FOLDERS if scan.entries[folder] is None]
    if not missing:
        return
    planted = [f for f in missing if os.path.lexists(scan.pool.root / f)]
    if planted:
        yield problem(
            "folders",
            scan,
            ", ".join(planted),
            "not a plain directory (a symlink or a file): move it away",
        )
        return
    root = scan.pool.root
    yield problem(
        "folders",
        scan,
        ", ".join(missing),
        "missing (the catalog is there, so the filesystem is mounted)",
        Fix("create the missing folders", lambda: _layout.make_folders(scan.name, root)),
    )


@pool_check("snapshots", "how snapshots and clones are made")
def check_snapshot_method(scan: PoolScan) -> Iterator[Finding]:
    if isinstance(scan.pool, BtrfsPool):
        yield ok("snapshots", scan, "instant (btrfs snapshots)")
        return
    folder = scan.pool.root / "snapshots"
    if scan.entries["snapshots"] is None:
        return  # the folders check says so
    if supports_reflink(folder):
        yield ok("snapshots", scan, "instant (reflink copies)")
    else:
        yield warning(
            "snapshots",
            scan,
            str(folder),
            "no reflink here: snapshots and clones are real copies, made in the "
            "background (use btrfs, or XFS with reflink=1, for instant ones)",
        )


@pool_check("space", "free space and provisioned sizes")
def check_space(scan: PoolScan) -> Iterator[Finding]:
    space = scan.pool.space()
    promised = sum(record.capacity_bytes for record in scan.volumes)
    budget = pool_budget(space.total_bytes, scan.config.overcommit)
    summary = (
        f"{format_size(space.free_bytes)} free of {format_size(space.total_bytes)}; "
        f"{format_size(promised)} provisioned of {format_size(budget)} allowed"
    )
    fraction = space.free_bytes / space.total_bytes if space.total_bytes else 0.0
    if fraction < NO_SPACE:
        yield problem("space", scan, str(scan.pool.root), f"almost full: {summary}")
    elif fraction < LOW_SPACE:
        yield warning("space", scan, str(scan.pool.root), f"low on space: {summary}")
    elif promised > budget:
        yield warning(
            "space",
            scan,
            str(scan.pool.root),
            f"more provisioned than the pool allows (overcommit "
            f"{scan.config.overcommit:g}): {summary}",
        )
    else:
        yield ok("space", scan, summary)
