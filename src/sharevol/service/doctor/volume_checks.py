"""Volume records against the data on disk: data without a record, records without data,
records stuck half way through a create or a delete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial

from sharevol.catalog.records import VolumeRecord
from sharevol.pools.base import ARCHIVE_DIR, VOLUMES_DIR, ArchivePool
from sharevol.pools.btrfs import BtrfsPool
from sharevol.service.doctor.model import Finding, Fix, PoolScan, pool_check, problem, warning
from sharevol.sys import btrfs

DELETING_PREFIX = ".deleting-"
"""A plain pool renames a volume to this before removing it (sharevol.pools.plain)."""
OWNING_STATES = ("creating", "ready", "deleting", "retained")
"""Records whose data sits in `volumes/<directory>`."""


def _describe(scan: PoolScan, folder: str, name: str) -> str:
    path = scan.pool.root / folder / name
    if isinstance(scan.pool, BtrfsPool) and btrfs.is_subvolume(path):
        return "subvolume"
    return "directory" if os.path.isdir(path) and not os.path.islink(path) else "file"


@pool_check("orphan-data", "every folder in volumes/ and archive/ belongs to a record")
def check_orphan_data(scan: PoolScan) -> Iterator[Finding]:
    owned = {r.directory for r in scan.volumes if r.state in OWNING_STATES}
    archived = {r.archive_name for r in scan.volumes if r.archive_name is not None}
    deleting = {r.directory for r in scan.volumes if r.state == "deleting"}
    for folder, known in ((VOLUMES_DIR, owned), (ARCHIVE_DIR, archived)):
        for name in scan.entries[folder] or []:
            if name in known or name.startswith(".reflink-probe-"):
                continue
            path = scan.pool.root / folder / name
            if not os.path.lexists(path):
                continue  # removed since the listing: a delete finished meanwhile
            if name.startswith(DELETING_PREFIX) and name[len(DELETING_PREFIX) :] in deleting:
                continue  # a plain delete in progress; the stuck-records check judges it
            kind = _describe(scan, folder, name)
            if name.startswith(DELETING_PREFIX):
                message = f"a {kind} left by an interrupted delete of a volume no record names"
            else:
                message = f"a {kind} that no volume record owns"
            yield problem(
                "orphan-data",
                scan,
                f"{folder}/{name}",
                f"{message}; sharevol cannot tell whose data it is, so it is left as "
                "it is: move it away or delete it by hand",
            )


def _data_problem(scan: PoolScan, record: VolumeRecord) -> str:
    """What is wrong with a record's data folder ("" when it is there as it should be)."""
    if record.state == "archived":
        path = scan.pool.root / ARCHIVE_DIR / (record.archive_name or "")
    else:
        path = scan.pool.volume_path(record.directory)
    if not os.path.lexists(path):
        return f"its data {path} is missing"
    if isinstance(scan.pool, BtrfsPool) and not btrfs.is_subvolume(path):
        return f"{path} is not a btrfs subvolume, so no limit applies to it"
    if not os.path.isdir(path) or os.path.islink(path):
        return f"{path} is not a directory"
    return ""


def _forget(scan: PoolScan, record: VolumeRecord) -> Fix:
    def apply() -> None:
        if _data_problem(scan, record).endswith("is missing"):  # checked again, just before
            scan.catalog.remove_volume(record.uuid)

    return Fix("forget the record: it describes no data and still holds provisioned space", apply)


@pool_check("missing-data", "every ready, retained and archived volume has its data")
def check_missing_data(scan: PoolScan) -> Iterator[Finding]:
    for record in scan.volumes:
        if record.state not in ("ready", "retained", "archived"):
            continue
        trouble = _data_problem(scan, record)
        if not trouble:
            continue
        subject = f"volume {record.name} ({record.volume_id}, {record.state})"
        if record.state == "ready":
            yield problem(
                "missing-data",
                scan,
                subject,
                f"{trouble}: pods using it will fail; restore the data there, or "
                "delete the volume (PV)",
            )
        elif trouble.endswith("is missing"):
            yield problem("missing-data", scan, subject, trouble, _forget(scan, record))
        else:
            yield problem("missing-data", scan, subject, trouble)


@pool_check("stuck-records", "no create or delete was left half done")
def check_stuck_records(scan: PoolScan) -> Iterator[Finding]:
    exported = scan.name in scan.context.server.nfs_pools()
    repairs = scan.context.repairs
    for record in scan.volumes:
        if record.state not in ("creating", "deleting"):
            continue
        subject = f"volume {record.name} ({record.volume_id}, {record.state})"
        if not scan.stuck(record.uuid):
            yield warning(
                "stuck-records",
                scan,
                subject,
                "in progress (changed recently); run doctor again later",
            )
            continue
        action = "create" if record.state == "creating" else "delete"
        message = f"a {action} that started and never finished"
        if exported:
            yield problem(
                "stuck-records",
                scan,
                subject,
                f"{message}; the pool is exported over NFS, so only the controller "
                "can finish it: it does when the CO retries",
            )
        elif (
            action == "create"
            and record.content_source is not None
            and not (scan.pool.capabilities.instant_snapshot)
        ):
            yield problem(
                "stuck-records",
                scan,
                subject,
                f"{message}: a copy from {record.content_source.kind} "
                f"{record.content_source.source_id}; the controller resumes it when "
                "it starts",
            )
        elif action == "create":
            yield problem(
                "stuck-records",
                scan,
                subject,
                message,
                Fix(
                    "finish the create as a CreateVolume retry would",
                    partial(repairs.finish_create, record),
                ),
            )
        else:
            yield problem(
                "stuck-records",
                scan,
                subject,
                message,
                Fix(
                    f"finish the delete as a DeleteVolume retry would "
                    f"(onDelete: {record.on_delete.value})",
                    partial(repairs.finish_delete, record),
                ),
            )


@pool_check("archive-purge", "archived volumes can be purged by `sharevol gc`")
def check_archive_purge(scan: PoolScan) -> Iterator[Finding]:
    if isinstance(scan.pool, ArchivePool):
        return
    count = sum(1 for record in scan.volumes if record.state == "archived")
    if count:
        yield warning(
            "archive-purge",
            scan,
            f"{count} archived volume(s)",
            f"pools of kind {scan.pool.kind} cannot purge archives yet: `sharevol gc` leaves them",
        )
