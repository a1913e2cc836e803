"""XFS and ext4 pools: project IDs and limits against the records.

A volume of these pools is sized by the project quota of its directory (sharevol.pools._project):
the directory's own project ID is what the kernel charges, and its record keeps a copy in
`backend["project_id"]`. Doctor checks that the two agree, that no two records hold one ID
(their usage and limit would be one), that each volume's limit is its size, and reports IDs the
filesystem charges that no record holds.

`--fix` sets a wrong limit again, and gives a volume directory its recorded project back (the
whole tree, as `xfs_quota project -s` does, so its usage moves with it) only when nothing else
can own that ID: no other record holds it, no other folder of the pool carries it, and the
filesystem charges nothing to it yet.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from sharevol.catalog.records import SnapshotRecord, VolumeRecord
from sharevol.pools._project import ProjectQuotaPool
from sharevol.pools._project_ids import FIRST_PROJECT_ID, PROJECT_KEY
from sharevol.pools.base import ARCHIVE_DIR, SNAPSHOTS_DIR, VOLUMES_DIR
from sharevol.service.doctor.model import (
    Finding,
    Fix,
    PoolScan,
    pool_check,
    problem,
    warning,
)
from sharevol.service.images import quota_limit_bytes
from sharevol.units import format_size

WALK_TIMEOUT = 600.0
"""How long re-setting the project of one volume's tree may take (one ioctl per inode)."""
LIMIT_SLACK = 1024
"""Limits are kept in 512-byte (XFS) or 1 KiB (ext4) blocks: a size is stored rounded up."""
LIMITED_STATES = ("ready", "retained")
"""Volumes in `volumes/` whose limit holds (an archived one keeps whatever it had)."""


def _is_project_pool(scan: PoolScan) -> bool:
    return isinstance(scan.pool, ProjectQuotaPool)


def _pool(scan: PoolScan) -> ProjectQuotaPool:
    pool = scan.pool
    assert isinstance(pool, ProjectQuotaPool)  # noqa: S101 - `applies` guarantees it
    return pool


def _recorded_id(backend: dict[str, int | str]) -> int:
    value = backend.get(PROJECT_KEY)
    return value if isinstance(value, int) else 0


def _volume_subject(record: VolumeRecord) -> str:
    return f"volume {record.name} ({record.volume_id})"


def _snapshot_subject(record: SnapshotRecord) -> str:
    return f"snapshot {record.name} ({record.snapshot_id})"


def _volume_dir(scan: PoolScan, record: VolumeRecord) -> Path:
    if record.state == "archived":
        return scan.pool.root / ARCHIVE_DIR / (record.archive_name or "")
    return scan.pool.volume_path(record.directory)


def _same_filesystem(scan: PoolScan) -> list[PoolScan]:
    """Every usable project pool on the filesystem of `scan` (project IDs are per filesystem)."""
    device = os.stat(scan.pool.root).st_dev
    return [
        other
        for other in scan.context.scans
        if other.usable and _is_project_pool(other) and os.stat(other.pool.root).st_dev == device
    ]


def _holders(scan: PoolScan) -> dict[int, list[str]]:
    """Project ID -> the records that hold it, over every pool on the filesystem."""
    held: dict[int, list[str]] = defaultdict(list)
    for other in _same_filesystem(scan):
        for record in other.volumes:
            if project_id := _recorded_id(record.backend):
                held[project_id].append(_volume_subject(record))
        for snapshot in other.snapshots:
            if project_id := _recorded_id(snapshot.backend):
                held[project_id].append(_snapshot_subject(snapshot))
    return held


def _folder_projects(scan: PoolScan) -> Callable[[], dict[int, list[Path]]]:
    """Project ID -> the folders of the pool that carry it, read on first use only."""

    @cache
    def read() -> dict[int, list[Path]]:
        pool = _pool(scan)
        found: dict[int, list[Path]] = defaultdict(list)
        for folder in (VOLUMES_DIR, ARCHIVE_DIR, SNAPSHOTS_DIR):
            for name in scan.entries[folder] or []:
                path = pool.root / folder / name
                if os.path.isdir(path) and not os.path.islink(path):
                    found[pool.project_ids.project_of(path)].append(path)
        return found

    return read


@pool_check(
    "project-ids",
    "every volume and snapshot folder has its record's project ID, held by no other record",
    applies=_is_project_pool,
)
def check_project_ids(scan: PoolScan) -> Iterator[Finding]:
    pool = _pool(scan)
    held = _holders(scan)
    mine = {_recorded_id(r.backend) for r in scan.volumes} | {
        _recorded_id(s.backend) for s in scan.snapshots
    }
    for project_id in sorted(mine - {0}):
        if len(held[project_id]) > 1:
            yield problem(
                "project-ids",
                scan,
                f"project {project_id}",
                f"held by {', '.join(held[project_id])}: their usage and limit are one; "
                "the folders' own project IDs (this check) say which record is wrong",
            )
    folders = _folder_projects(scan)
    for record in scan.volumes:
        if record.state in (*LIMITED_STATES, "archived"):
            yield from _check_folder(scan, pool, record, held, folders)
    for snapshot in scan.snapshots:
        path = pool.snapshot_path(snapshot.directory)
        if snapshot.state != "ready" or not _is_dir(path):
            continue
        recorded, actual = _recorded_id(snapshot.backend), pool.project_ids.project_of(path)
        if recorded and actual != recorded:
            yield problem(
                "project-ids",
                scan,
                _snapshot_subject(snapshot),
                f"{path} is project {actual}, the record says {recorded}: its usage is "
                "counted elsewhere; delete the VolumeSnapshot and take it again",
            )


def _is_dir(path: Path) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _check_folder(
    scan: PoolScan,
    pool: ProjectQuotaPool,
    record: VolumeRecord,
    held: dict[int, list[str]],
    folders: Callable[[], dict[int, list[Path]]],
) -> Iterator[Finding]:
    path = _volume_dir(scan, record)
    if not _is_dir(path):
        return  # the missing-data check's
    recorded, actual = _recorded_id(record.backend), pool.project_ids.project_of(path)
    subject = _volume_subject(record)
    if not recorded:
        if actual:
            yield warning(
                "project-ids",
                scan,
                subject,
                f"the record names no project ID, {path} is project {actual}",
            )
        elif pool.quota_state.enforced:
            yield problem(
                "project-ids",
                scan,
                subject,
                f"{path} has no project ID, so no limit holds for it: recreate the volume",
            )
        return
    if actual == recorded:
        return
    message = (
        f"{path} is project {actual}, the record says {recorded}: its data is charged to "
        f"project {actual}, so its size limit does not hold"
    )
    unsafe = _why_unsafe(pool, path, recorded, [h for h in held[recorded] if h != subject], folders)
    if record.state not in LIMITED_STATES:
        unsafe = unsafe or f"an {record.state} volume; `sharevol gc` purges it"
    if unsafe:
        yield problem(
            "project-ids", scan, subject, f"{message}; not repaired automatically: {unsafe}"
        )
        return
    yield problem(
        "project-ids",
        scan,
        subject,
        message,
        Fix(
            f"give {path} and everything in it project {recorded} again, and its limit",
            _reassign(scan, pool, record, actual),
        ),
    )


def _why_unsafe(
    pool: ProjectQuotaPool,
    path: Path,
    recorded: int,
    other_holders: list[str],
    folders: Callable[[], dict[int, list[Path]]],
) -> str:
    """Why project `recorded` may belong to something else ("" when nothing can own it)."""
    if other_holders:
        return f"project {recorded} is also held by {', '.join(other_holders)}"
    others = [p for p in folders().get(recorded, []) if p != path]
    if others:
        return f"{', '.join(map(str, others))} carries project {recorded}"
    if pool.quota_state.accounting:
        charged = pool.quotas.get(recorded)
        if charged.used_bytes or charged.used_inodes:
            return (
                f"the filesystem charges {format_size(charged.used_bytes)} in "
                f"{charged.used_inodes} file(s) to project {recorded} already"
            )
    return ""


def _reassign(
    scan: PoolScan, pool: ProjectQuotaPool, record: VolumeRecord, seen: int
) -> Callable[[], None]:
    def apply() -> None:
        path = pool.volume_path(record.directory)
        with scan.catalog.pool_lock():
            # Checked again just before: a record or a folder that changed meanwhile is left.
            current = scan.catalog.read_volume(record.uuid)
            if current is None or current.backend != record.backend:
                return
            if current.state not in LIMITED_STATES or pool.project_ids.project_of(path) != seen:
                return
            pool.quotas.set_tree_project(path, _recorded_id(record.backend), WALK_TIMEOUT)
            limit = quota_limit_bytes(record.kind, record.capacity_bytes)
            pool.set_limit(record.directory, limit, record.backend)

    return apply


def _not_accounted(check: str, scan: PoolScan) -> Finding:
    return Finding(
        check,
        scan.name,
        "ok",
        "",
        f"skipped: {scan.pool.root} accounts no project quota (mounted without -o prjquota, "
        "or the kernel has no quota support)",
    )


def _limit_matches(limit: int, wanted: int) -> bool:
    return wanted <= limit < wanted + LIMIT_SLACK


@pool_check(
    "project-limits",
    "every volume's project limit is its recorded size",
    applies=_is_project_pool,
)
def check_project_limits(scan: PoolScan) -> Iterator[Finding]:
    pool = _pool(scan)
    if not pool.quota_state.accounting:
        yield _not_accounted("project-limits", scan)
        return
    held = _holders(scan)
    for record in scan.volumes:
        project_id = _recorded_id(record.backend)
        path = pool.volume_path(record.directory)
        if record.state not in LIMITED_STATES or not project_id or len(held[project_id]) > 1:
            continue  # shared IDs and volumes without one are the project-ids check's
        if not _is_dir(path) or pool.project_ids.project_of(path) != project_id:
            continue
        quota = pool.quotas.get(project_id)
        wanted = quota_limit_bytes(record.kind, record.capacity_bytes)
        max_files = record.backend.get("max_files")
        wrong = []
        if not _limit_matches(quota.block_limit_bytes, wanted):
            have = format_size(quota.block_limit_bytes) if quota.block_limit_bytes else "none"
            wrong.append(f"size limit is {have}, the record says {format_size(wanted)}")
        if isinstance(max_files, int) and quota.inode_limit != max_files:
            wrong.append(
                f"file limit is {quota.inode_limit or 'none'}, the record says {max_files}"
            )
        if wrong:
            yield problem(
                "project-limits",
                scan,
                _volume_subject(record),
                f"project {project_id}: {'; '.join(wrong)}",
                Fix(f"set project {project_id}'s limits again", _set_limit(pool, record, wanted)),
            )


def _set_limit(pool: ProjectQuotaPool, record: VolumeRecord, limit: int) -> Callable[[], None]:
    def apply() -> None:
        pool.set_limit(record.directory, limit, record.backend)

    return apply


@pool_check(
    "stray-projects",
    "every project the filesystem charges from sharevol's range is held by a record",
    applies=_is_project_pool,
)
def check_stray_projects(scan: PoolScan) -> Iterator[Finding]:
    pool = _pool(scan)
    if not pool.quota_state.accounting:
        yield _not_accounted("stray-projects", scan)
        return
    unscanned = _unscanned_pools_here(scan)
    if unscanned:
        yield Finding(
            "stray-projects",
            scan.name,
            "ok",
            "",
            f"skipped: pool(s) {', '.join(unscanned)} on the same filesystem are not checked "
            "in this run, and may hold them",
        )
        return
    if scan is not _same_filesystem(scan)[0]:
        return  # one report per filesystem, with its first pool
    held = _holders(scan)
    for quota in pool.quotas.list_projects():
        if quota.project_id < FIRST_PROJECT_ID or quota.project_id in held:
            continue  # below: an admin's own projects (/etc/projid)
        limit = format_size(quota.block_limit_bytes) if quota.block_limit_bytes else "none"
        yield warning(
            "stray-projects",
            scan,
            f"project {quota.project_id}",
            f"charged {format_size(quota.used_bytes)} in {quota.used_inodes} file(s), size "
            f"limit {limit}, but no record holds it: a create or delete in progress, data that "
            "no record owns (see orphan-data), or limits a failed delete left behind",
        )


def _unscanned_pools_here(scan: PoolScan) -> list[str]:
    """Configured pools on this filesystem that this run does not check (`--pool`)."""
    scanned = {other.name for other in scan.context.scans}
    device = os.stat(scan.pool.root).st_dev
    names = []
    for config in scan.context.server.pools:
        if config.name in scanned:
            continue
        try:
            if os.stat(config.path).st_dev == device:
                names.append(config.name)
        except OSError:
            continue
    return names
