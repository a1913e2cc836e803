"""NFS exports against the catalog: export IDs, volumes missing their export, and exports or
export bind mounts left in the server's runtime folder that no volume owns.

The runtime folder (`<state dir>/nfs`, sharevol.nfs.exports.NfsExporter) holds one
`exports/export-<id>.conf` per export Ganesha serves and the bind mounts `mnt/<pool>/<dir>` it
exports; the controller clears it and rebuilds every export from the catalog when it starts.
What Ganesha itself serves (over its private DBus) is only known to the running controller.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from sharevol.errors import SharevolError
from sharevol.service.doctor.model import DoctorContext, Finding, PoolScan, pool_check, server_check
from sharevol.sys.statfs import read_mounts

EXPORTED_STATES = ("creating", "ready")
_CONF = re.compile(r"^export-(\d+)\.conf$")
RESTART_HINT = "restarting the controller rebuilds the exports from the catalog"


def _has_exports(scan: PoolScan) -> bool:
    return scan.name in scan.context.server.nfs_pools() or any(
        record.nfs_export is not None for record in scan.volumes
    )


@pool_check(
    "nfs-exports", "exported volumes have one export each, with a unique ID", applies=_has_exports
)
def check_nfs_exports(scan: PoolScan) -> Iterator[Finding]:
    exported_pool = scan.name in scan.context.server.nfs_pools()
    owners: dict[int, list[str]] = defaultdict(list)
    for record in scan.context.all_volumes():
        if record.nfs_export is not None and record.state in EXPORTED_STATES:
            owners[record.nfs_export.export_id].append(record.volume_id)
    for record in scan.volumes:
        subject = f"volume {record.name} ({record.volume_id})"
        export = record.nfs_export
        if record.state == "ready" and exported_pool and export is None:
            yield Finding(
                "nfs-exports",
                scan.name,
                "problem",
                subject,
                "its pool is exported over NFS but the volume has no export: nodes "
                "cannot mount it; recreate it, or ask for a fix in an issue",
            )
        if export is None or record.state not in EXPORTED_STATES:
            continue
        if not exported_pool:
            yield Finding(
                "nfs-exports",
                scan.name,
                "warning",
                subject,
                f"has export {export.export_id} but its pool is no longer exported "
                "(nfs.pools): nodes mounting it over NFS will fail",
            )
        others = [v for v in owners[export.export_id] if v != record.volume_id]
        if others:
            yield Finding(
                "nfs-exports",
                scan.name,
                "problem",
                subject,
                f"export ID {export.export_id} is also given to "
                f"{', '.join(others)}: one of them is not served",
            )


def _runtime(context: DoctorContext) -> Path | None:
    if context.state_dir is None:
        return None
    runtime = context.state_dir.resolve() / "nfs"
    return runtime if runtime.is_dir() else None


def _conf_path(conf: Path) -> str | None:
    """The `Path = "..."` an export file serves (sharevol.nfs.conf writes it quoted)."""
    try:
        match = re.search(r'^\s*Path\s*=\s*"([^"]*)"', conf.read_text(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1) if match else None


@server_check("stray-exports", "every export in the NFS runtime folder belongs to a volume")
def check_stray_exports(context: DoctorContext) -> Iterator[Finding]:
    runtime = _runtime(context)
    if runtime is None:
        return
    live = {
        record.nfs_export.export_id: record
        for record in context.all_volumes()
        if record.nfs_export is not None and record.state in EXPORTED_STATES
    }
    mount_root = runtime / "mnt"
    wanted = {str(mount_root / r.pool / r.directory) for r in live.values()}
    confs = sorted((runtime / "exports").glob("export-*.conf"))
    for conf in confs:
        match = _CONF.match(conf.name)
        if match is None:
            continue
        export_id = int(match.group(1))
        served = _conf_path(conf)
        owner = live.get(export_id)
        if owner is not None and served == str(mount_root / owner.pool / owner.directory):
            continue
        yield Finding(
            "stray-exports",
            "-",
            "problem",
            str(conf),
            f"export {export_id} of {served or 'an unknown path'} belongs to no "
            f"volume (or to another one); {RESTART_HINT}",
        )
    try:
        mounts = read_mounts()
    except SharevolError:
        return
    prefix = str(mount_root) + "/"
    for entry in mounts:
        if entry.mount_point.startswith(prefix) and entry.mount_point not in wanted:
            yield Finding(
                "stray-exports",
                "-",
                "problem",
                entry.mount_point,
                f"an export bind mount that no volume owns; {RESTART_HINT}, or "
                "unmount it by hand when no NFS client uses it",
            )
