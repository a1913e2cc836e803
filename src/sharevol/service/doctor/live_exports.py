"""What the running NFS-Ganesha serves against the catalog, asked over its private DBus.

When the managed NFS server runs with this state dir, its bus socket exists (named in the
`dbus.conf` it wrote under `<state dir>/nfs`; a long state dir puts it under /tmp). Doctor then
lists Ganesha's exports (ShowExports) and compares them with the volume records: exports that no
volume owns, and ready volumes whose export is not served. The records are read after the
listing, so a volume created meanwhile is not taken for a missing one's owner.

`--fix` removes an export only when no record names its volume any more, and re-adds a ready
volume's missing export, both through the code the server runs (NfsExporter, VolumeExports),
holding every checked pool's lock (the controller allocates export IDs under it) and after
checking again. Everything else is reported: restarting the controller rebuilds the exports.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from sharevol.catalog.records import VolumeRecord
from sharevol.errors import SharevolError
from sharevol.nfs.bus import GaneshaBus
from sharevol.nfs.exports import ExportBus, NfsExporter
from sharevol.service.doctor.model import DoctorContext, Finding, Fix, server_check
from sharevol.service.exports import VolumeExports
from sharevol.service.locate import PoolHandle
from sharevol.sys.mounts import Mounter, SystemMounter
from sharevol.sys.runner import SubprocessRunner

CHECK = "live-exports"
BUS_TIMEOUT = 5.0
RESTART_HINT = "restarting the controller rebuilds the exports from the catalog"
_LISTEN = re.compile(r"<listen>unix:path=([^<]+)</listen>")


class LiveBus(ExportBus, Protocol):
    """Ganesha's ExportMgr as doctor uses it (GaneshaBus; a fake in unit tests)."""

    def exports(self) -> dict[int, str]: ...

    def close(self) -> None: ...


def _open_bus(socket: Path) -> LiveBus:
    return GaneshaBus(socket, BUS_TIMEOUT)


def _system_mounter() -> Mounter:
    return SystemMounter(SubprocessRunner())


open_bus: Callable[[Path], LiveBus] = _open_bus
"""How doctor reaches Ganesha (unit tests put a fake here)."""
make_mounter: Callable[[], Mounter] = _system_mounter


def bus_socket(runtime: Path) -> Path | None:
    """The running server's bus socket (from its dbus.conf, else `<runtime>/dbus.sock`), or
    None when there is none: the managed NFS server is not running here."""
    try:
        match = _LISTEN.search((runtime / "dbus.conf").read_text())
    except OSError:
        match = None
    socket = Path(match.group(1)) if match else runtime / "dbus.sock"
    return socket if socket.exists() else None


def _volume_of(path: str, mount_roots: tuple[Path, ...]) -> tuple[str, str] | None:
    """(pool, directory) of an export bind mount `<runtime>/mnt/<pool>/<directory>`."""
    for root in mount_roots:
        try:
            parts = Path(path).relative_to(root).parts
        except ValueError:
            continue
        return (parts[0], parts[1]) if len(parts) == 2 else None
    return None


def _skipped(message: str) -> Finding:
    return Finding(CHECK, "-", "ok", "", f"skipped: {message}")


class _Live:
    """One look at the running server: where it is, and how to reach it and the pools."""

    def __init__(self, context: DoctorContext, runtime: Path, socket: Path) -> None:
        self.context = context
        self.runtime = runtime
        self.socket = socket
        self.scans = sorted((s for s in context.scans if s.usable), key=lambda s: s.name)
        self.mount_roots = tuple(dict.fromkeys((runtime / "mnt", runtime.resolve() / "mnt")))

    def records(self) -> list[VolumeRecord]:
        """The checked pools' volume records, read now."""
        return [record for scan in self.scans for record in scan.catalog.load_volumes()]

    def mount_point(self, record: VolumeRecord) -> str:
        return str(self.mount_roots[0] / record.pool / record.directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[LiveBus]:
        """Every checked pool's lock (by name: no two doctors deadlock), and the bus."""
        with contextlib.ExitStack() as stack:
            for scan in self.scans:
                stack.enter_context(scan.catalog.pool_lock())
            bus = open_bus(self.socket)
            stack.callback(bus.close)
            yield bus

    def exporter(self, bus: LiveBus) -> NfsExporter:
        return NfsExporter(self.runtime, bus, make_mounter())

    def readd(self, record: VolumeRecord) -> Callable[[], None]:
        def apply() -> None:
            with self.locked() as bus:
                current = next((r for r in self.records() if r.uuid == record.uuid), None)
                export = record.nfs_export
                if current is None or current.state != "ready" or export is None:
                    return
                if current.nfs_export != export or export.export_id in bus.exports():
                    return
                handles = {s.name: PoolHandle(s.pool, s.catalog, s.config.overcommit)
                           for s in self.scans}  # fmt: skip
                server = self.context.server
                exports = VolumeExports(handles, server.nfs, server.nfs_pools(), self.exporter(bus))
                exports.apply(current)

        return apply

    def remove(self, export_id: int, path: str) -> Callable[[], None]:
        def apply() -> None:
            place = _volume_of(path, self.mount_roots)
            with self.locked() as bus:
                for record in self.records():
                    export = record.nfs_export
                    owns = export is not None and export.export_id == export_id and record.live
                    if owns or (record.pool, record.directory) == place:
                        return  # a volume (re)appeared for it meanwhile
                if bus.exports().get(export_id) != path:
                    return
                self.exporter(bus).remove(export_id, Path(path))

        return apply


@server_check(CHECK, "the running NFS server serves exactly the exports of the volume records")
def check_live_exports(context: DoctorContext) -> Iterator[Finding]:
    if context.state_dir is None:
        yield _skipped("no state dir given (--state-dir), so no NFS server to ask")
        return
    runtime = Path(os.path.abspath(context.state_dir)) / "nfs"
    socket = bus_socket(runtime)
    if socket is None:
        nfs = context.server.nfs
        if nfs is None or not nfs.enabled:
            yield _skipped("pools.yaml turns the managed NFS server off (no `nfs:`)")
        else:
            yield _skipped(f"the managed NFS server is not running (no DBus socket in {runtime})")
        return
    live = _Live(context, runtime, socket)
    bus = open_bus(socket)
    try:
        served = bus.exports()
    except SharevolError as exc:
        yield Finding(
            CHECK,
            "-",
            "warning",
            str(socket),
            f"the NFS server's DBus socket is there but Ganesha does not answer ({exc}): the "
            "controller is stopped or restarting it; run doctor again when it serves",
        )
        return
    finally:
        bus.close()
    records = live.records()  # after the listing: an export always has its record by then
    yield from _unowned(live, served, records)
    yield from _missing(live, served, records)


def _unowned(live: _Live, served: dict[int, str], records: list[VolumeRecord]) -> Iterator[Finding]:
    owners = {r.nfs_export.export_id: r for r in records if r.nfs_export is not None and r.live}
    by_place = {(r.pool, r.directory): r for r in records}
    checked = {scan.name for scan in live.scans}
    configured = {pool.name for pool in live.context.server.pools}
    for export_id, path in sorted(served.items()):
        owner = owners.get(export_id)
        subject = f"export {export_id} ({path})"
        if owner is not None:
            if _volume_of(path, live.mount_roots) != (owner.pool, owner.directory):
                yield Finding(
                    CHECK,
                    owner.pool,
                    "problem",
                    subject,
                    f"serves {path}, but it is volume {owner.name} ({owner.volume_id})'s "
                    f"export, of {live.mount_point(owner)}; {RESTART_HINT}",
                )
            continue
        place = _volume_of(path, live.mount_roots)
        if place is None:
            yield Finding(
                CHECK,
                "-",
                "warning",
                subject,
                "an export sharevol did not make (not one of its export bind mounts): added "
                "over DBus by someone else; left as it is",
            )
            continue
        pool, directory = place
        if pool not in checked:
            if pool not in configured:
                yield Finding(
                    CHECK,
                    "-",
                    "problem",
                    subject,
                    f"exports a volume of pool {pool!r}, which pools.yaml no longer names; "
                    f"{RESTART_HINT}",
                )
            continue  # a pool left out of this run (--pool), or unusable: not ours to judge
        record = by_place.get(place)
        if record is not None:
            yield Finding(
                CHECK,
                pool,
                "problem",
                subject,
                f"serves volume {record.name} ({record.volume_id}, {record.state}), whose "
                f"record has no such export; {RESTART_HINT}",
            )
            continue
        yield Finding(
            CHECK,
            pool,
            "problem",
            subject,
            f"no volume record of pool {pool} names {directory} any more, yet NFS clients "
            "can still reach it",
            Fix(f"remove export {export_id} and its bind mount", live.remove(export_id, path)),
        )


def _missing(live: _Live, served: dict[int, str], records: list[VolumeRecord]) -> Iterator[Finding]:
    for record in records:
        export = record.nfs_export
        if export is None or record.state != "ready" or export.export_id in served:
            continue
        yield Finding(
            CHECK,
            record.pool,
            "problem",
            f"volume {record.name} ({record.volume_id})",
            f"its export {export.export_id} ({export.pseudo}) is not served: nodes cannot mount it",
            Fix(f"add export {export.export_id} again", live.readd(record)),
        )
