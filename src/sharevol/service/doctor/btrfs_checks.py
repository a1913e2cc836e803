"""btrfs pools: qgroup limits against the records, qgroups whose subvolume is gone."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sharevol.catalog.records import VolumeRecord
from sharevol.pools.btrfs import BtrfsPool
from sharevol.service.doctor.model import Finding, Fix, PoolScan, pool_check, problem
from sharevol.service.images import quota_limit_bytes
from sharevol.sys import btrfs
from sharevol.units import format_size


def _is_btrfs(scan: PoolScan) -> bool:
    return isinstance(scan.pool, BtrfsPool)


def _limit_text(limit: int | None) -> str:
    return "no limit" if limit is None else format_size(limit)


@pool_check(
    "volume-limits", "every ready volume's qgroup limit is its recorded size", applies=_is_btrfs
)
def check_volume_limits(scan: PoolScan) -> Iterator[Finding]:
    root = scan.pool.root
    for record in scan.volumes:
        path = scan.pool.volume_path(record.directory)
        if record.state != "ready" or not btrfs.is_subvolume(path):
            continue  # a missing volume is the missing-data check's
        group = btrfs.qgroup(root, btrfs.subvolume_id(path))
        wanted = quota_limit_bytes(record.kind, record.capacity_bytes)
        subject = f"volume {record.name} ({record.volume_id})"
        if group is None:
            yield problem(
                "volume-limits",
                scan,
                subject,
                f"subvolume {path} has no qgroup, so no limit: run "
                f"`btrfs quota rescan -w {root}`, then doctor --fix",
            )
        elif group.max_referenced != wanted:
            yield problem(
                "volume-limits",
                scan,
                subject,
                f"limit is {_limit_text(group.max_referenced)}, the record says "
                f"{format_size(wanted)}",
                Fix(f"set the limit to {format_size(wanted)}", _set_limit(scan, record, wanted)),
            )


def _set_limit(scan: PoolScan, record: VolumeRecord, limit: int) -> Callable[[], None]:
    def apply() -> None:
        scan.pool.set_limit(record.directory, limit, record.backend)

    return apply


@pool_check("stale-qgroups", "every volume qgroup has its subvolume", applies=_is_btrfs)
def check_stale_qgroups(scan: PoolScan) -> Iterator[Finding]:
    pool = scan.pool
    assert isinstance(pool, BtrfsPool)  # noqa: S101 - `applies` guarantees it
    # Qgroups first, as BtrfsPool.drop_stale_qgroups does: a subvolume made in between is
    # then listed, and its fresh qgroup is not taken for stale.
    groups = btrfs.list_qgroups(pool.root)
    existing = {sub.subvolume_id for sub in btrfs.list_subvolumes(pool.root)}
    for group in groups:
        if group.level != 0 or group.subvolume_id < btrfs.FIRST_FREE_OBJECTID:
            continue
        if group.subvolume_id in existing:
            continue
        yield problem(
            "stale-qgroups",
            scan,
            f"qgroup 0/{group.subvolume_id}",
            f"its subvolume is gone ({format_size(group.referenced)} still counted)",
            Fix("drop the stale qgroups", lambda: _drop(pool)),
        )


def _drop(pool: BtrfsPool) -> None:
    pool.drop_stale_qgroups()
