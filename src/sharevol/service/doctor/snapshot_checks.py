"""Snapshot records against the data in `snapshots/`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial

from sharevol.catalog.records import SnapshotRecord
from sharevol.pools.base import SNAPSHOTS_DIR
from sharevol.pools.btrfs import BtrfsPool
from sharevol.service.doctor.model import Finding, Fix, PoolScan, pool_check, problem, warning
from sharevol.sys import btrfs


def _subject(record: SnapshotRecord) -> str:
    return f"snapshot {record.name} ({record.snapshot_id}, {record.state})"


@pool_check("orphan-snapshots", "every folder in snapshots/ belongs to a snapshot record")
def check_orphan_snapshots(scan: PoolScan) -> Iterator[Finding]:
    owned = {record.directory for record in scan.snapshots}
    for name in scan.entries[SNAPSHOTS_DIR] or []:
        if name in owned or name.startswith("."):
            continue  # dot names: reflink probes and partial copies a pool cleans up itself
        path = scan.pool.root / SNAPSHOTS_DIR / name
        if not os.path.lexists(path):
            continue
        yield problem(
            "orphan-snapshots",
            scan,
            f"{SNAPSHOTS_DIR}/{name}",
            "snapshot data that no snapshot record owns; left as it is: move it "
            "away or delete it by hand",
        )


@pool_check("snapshot-data", "every ready snapshot has its data")
def check_snapshot_data(scan: PoolScan) -> Iterator[Finding]:
    for record in scan.snapshots:
        if record.state != "ready":
            continue
        path = scan.pool.snapshot_path(record.directory)
        if not os.path.lexists(path):
            trouble = f"its data {path} is missing"
        elif isinstance(scan.pool, BtrfsPool) and not btrfs.is_subvolume(path):
            trouble = f"{path} is not a btrfs subvolume"
        else:
            continue
        yield problem(
            "snapshot-data",
            scan,
            _subject(record),
            f"{trouble}: restores from it will fail; delete the VolumeSnapshot",
        )


@pool_check("stuck-snapshots", "no snapshot was left half made or half deleted")
def check_stuck_snapshots(scan: PoolScan) -> Iterator[Finding]:
    repairs = scan.context.repairs
    for record in scan.snapshots:
        if record.state == "ready":
            continue
        if not scan.stuck(record.uuid):
            yield warning(
                "stuck-snapshots",
                scan,
                _subject(record),
                "in progress (changed recently); run doctor again later",
            )
        elif record.state == "copying" or (
            record.state == "creating" and not scan.pool.capabilities.instant_snapshot
        ):
            yield warning(
                "stuck-snapshots",
                scan,
                _subject(record),
                "a background copy: the controller resumes it when it starts",
            )
        else:
            what, rpc = (
                ("delete", "DeleteSnapshot")
                if record.state == "deleting"
                else ("snapshot", "CreateSnapshot")
            )
            yield problem(
                "stuck-snapshots",
                scan,
                _subject(record),
                f"a {what} that started and never finished",
                Fix(f"finish it as a {rpc} retry would", partial(repairs.finish_snapshot, record)),
            )
