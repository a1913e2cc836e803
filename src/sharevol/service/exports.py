"""Volumes served by the managed NFS server: one Ganesha export per volume, kept in step with
the catalog.

A volume of an exported pool gets an export ID (allocated under the pool lock, unique on the
server, written to its record before Ganesha hears of it) and the pseudo path
`/<pool>/<directory>`. Its client list is the static `nfs.clients` plus the address of every
node it is ControllerPublished to; everyone else is refused. Ganesha serves no export of its
own: at every start of sharevol and every restart of Ganesha, the exports are rebuilt from the
catalogs, and a volume's export is removed before its data is deleted, archived or retained.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from sharevol.catalog.records import NfsExport, Publication, VolumeRecord
from sharevol.errors import Internal, InvalidArgument, ResourceExhausted, SharevolError
from sharevol.nfs.conf import ExportSpec, ServerSettings
from sharevol.nfs.exports import NfsExporter
from sharevol.nfs.ganesha import GaneshaServer
from sharevol.pools.config import NfsConfig
from sharevol.service.hooks import retire_quietly
from sharevol.service.locate import PoolHandle
from sharevol.service.params import parse_parameters
from sharevol.sys.mounts import Mounter, normalize

log = logging.getLogger(__name__)

CONTEXT_PREFIX = "sharevol.csi.io/"
NFS_VERSION = "4.1"
"""What nodes mount: 4.1 is what the kernel-client tests use; Ganesha serves 4.2 too."""
FIRST_EXPORT_ID = 1
LAST_EXPORT_ID = 65535
"""Ganesha's Export_Id is 16 bits; 0 is its pseudo-filesystem root."""
_EXPORTED_STATES = ("creating", "ready")
"""A `creating` record with an export is between AddExport and `ready`: rebuild keeps it."""


def nfs_context(record: VolumeRecord) -> dict[str, str]:
    """The volume-context keys a node needs to mount the volume's export (see README, NFS):

    - `sharevol.csi.io/nfs-server`: address or DNS name of the NFS server
    - `sharevol.csi.io/nfs-port`: its TCP port, decimal
    - `sharevol.csi.io/nfs-export`: the export's NFSv4 pseudo path, `/<pool>/<directory>`
    - `sharevol.csi.io/nfs-mount-options`: comma-separated `mount -t nfs4 -o` options that reach
      this export (`vers=4.1,proto=tcp,port=<port>,sec=sys`); the node appends its own
    - `sharevol.csi.io/nfs-root-squash`: `true` or `false` (informational)
    """
    export = record.nfs_export
    if export is None:
        return {}
    return {
        f"{CONTEXT_PREFIX}nfs-server": export.server,
        f"{CONTEXT_PREFIX}nfs-port": str(export.port),
        f"{CONTEXT_PREFIX}nfs-export": export.pseudo,
        f"{CONTEXT_PREFIX}nfs-mount-options": mount_options(export),
        f"{CONTEXT_PREFIX}nfs-root-squash": "true" if export.root_squash else "false",
    }


def mount_options(export: NfsExport) -> str:
    return f"vers={NFS_VERSION},proto=tcp,port={export.port},sec=sys"


class VolumeExports:
    """A provisioning hook (prepare/retire) plus the server's lifecycle; `None` exporter means
    the NFS server is off, and then asking for an export is an error, not a silent no."""

    def __init__(
        self,
        pools: Mapping[str, PoolHandle],
        config: NfsConfig | None = None,
        exported_pools: tuple[str, ...] = (),
        exporter: NfsExporter | None = None,
        ganesha: GaneshaServer | None = None,
    ) -> None:
        self._pools = pools
        self._config = config
        self._exported_pools = exported_pools
        self._exporter = exporter
        self._ganesha = ganesha
        self._lock = threading.RLock()
        self._owners: dict[int, str] = {}
        """export ID -> volume ID, of every record whose export is served (creating, ready).
        A `deleting` record's export was removed by `retire` before anything else, so its ID
        may already serve a newer volume: it owns nothing."""
        for handle in pools.values():
            for record in handle.catalog.load_volumes():
                if record.nfs_export is not None and record.state in _EXPORTED_STATES:
                    self._owners[record.nfs_export.export_id] = record.volume_id

    @property
    def enabled(self) -> bool:
        return self._exporter is not None

    @property
    def ganesha(self) -> GaneshaServer | None:
        return self._ganesha

    def applied(self) -> dict[int, ExportSpec]:
        """The exports Ganesha was given since it last started, by export ID."""
        return self._exporter.applied() if self._exporter is not None else {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Clear leftovers of a crash, start Ganesha, then add every volume's export."""
        if self._exporter is None or self._ganesha is None:
            return
        self._exporter.reset()
        self._ganesha.start()
        try:
            count = self.rebuild()
        except BaseException:
            self._ganesha.stop()
            self._exporter.reset()  # no export bind mount outlives a failed start
            raise
        log.info("NFS: %d volume exports served", count)

    def stop(self) -> None:
        """Remove every export (Ganesha lets go of the volumes' files, bind mounts are
        released), then stop Ganesha and its bus."""
        if self._exporter is None or self._ganesha is None:
            return
        self._ganesha.stop_supervising()  # a death from here on must not re-add exports
        with self._lock:
            self._exporter.remove_all()
        self._ganesha.stop()
        try:
            self._exporter.reset()  # a bind mount Ganesha still held: its files are closed now
        except SharevolError as exc:
            log.error("NFS export mounts left under %s: %s", self._exporter.mount_root, exc)

    def rebuild(self) -> int:
        """Add the export of every volume that has one, from the catalogs (the truth); called
        at start and by the supervisor after Ganesha restarted with no exports."""
        if self._exporter is None:
            return 0
        count = 0
        with self._lock:
            self._exporter.forget()
            for handle in self._pools.values():
                for record in handle.catalog.load_volumes():
                    if record.nfs_export is None or record.state not in _EXPORTED_STATES:
                        continue
                    try:
                        self.apply(record)
                    except SharevolError as exc:  # one bad record must not unserve the others
                        log.error("NFS: cannot export volume %s: %s", record.volume_id, exc)
                        continue
                    count += 1
        return count

    # -- provisioning hooks -----------------------------------------------------------------

    def prepare(self, record: VolumeRecord) -> VolumeRecord:
        """Give a new volume its export (before it is marked ready); idempotent on retries."""
        if not self._wants_export(record):
            return record
        handle = self._pools[record.pool]
        with self._lock:
            exported = record
            export = record.nfs_export
            if export is None or self._owners.get(export.export_id) != record.volume_id:
                with handle.catalog.pool_lock():
                    export = self._new_export(record)
                    exported = record.model_copy(update={"nfs_export": export})
                    handle.catalog.put_volume(exported)
                    self._owners[export.export_id] = record.volume_id
            try:
                self.apply(exported)
            except SharevolError:
                # The create is undone with the record we got, which may not name the export
                # yet: release the bind mount and the ID here, or the volume stays busy.
                retire_quietly([self], exported)
                raise
        return exported

    def retire(self, record: VolumeRecord) -> None:
        """Remove the volume's export before its data is deleted, archived or retained."""
        export = record.nfs_export
        if export is None or self._exporter is None:
            return
        mount_point = self._exporter.mount_point(record.pool, record.directory)
        with self._lock:
            owner = self._owners.get(export.export_id)
            if owner is None or owner == record.volume_id:
                self._exporter.remove(export.export_id, mount_point)
                self._owners.pop(export.export_id, None)
            else:
                # A retried delete whose export ID went to a newer volume meanwhile: that
                # volume's export stays; only this volume's own bind mount is released.
                self._exporter.release(mount_point)

    def in_use(self, record: VolumeRecord, mount_points: list[str]) -> list[str]:
        """What keeps a volume from being deleted: its mounts on this machine, except the
        bind mount Ganesha exports (retire removes that), and the nodes it is published to."""
        ours = normalize(self._exporter.mount_root) + "/" if self._exporter else None
        local = [m for m in mount_points if ours is None or not m.startswith(ours)]
        return local + [f"NFS client {p.node_id} ({p.address})" for p in record.publications]

    # -- exports ----------------------------------------------------------------------------

    def apply(self, record: VolumeRecord) -> None:
        """Make Ganesha serve the record's export with its current client list."""
        exporter, export = self._exporter, record.nfs_export
        if exporter is None or export is None:
            return
        with self._lock:
            source = self._pools[record.pool].pool.volume_path(record.directory)
            exporter.apply(self._spec(record, export, exporter), source)

    def _spec(self, record: VolumeRecord, export: NfsExport, exporter: NfsExporter) -> ExportSpec:
        """The export of a record: static clients and published writers RW, readers RO."""
        static = self._config.clients if self._config is not None else ()
        writers = [p.address for p in record.publications if _writes(p)]
        readers = [p.address for p in record.publications if not _writes(p)]
        rw = tuple(dict.fromkeys((*static, *writers)))
        ro = tuple(a for a in dict.fromkeys(readers) if a not in rw)
        return ExportSpec(
            export_id=export.export_id,
            path=exporter.mount_point(record.pool, record.directory),
            pseudo=export.pseudo,
            root_squash=export.root_squash,
            rw_clients=rw,
            ro_clients=ro,
        )

    def _wants_export(self, record: VolumeRecord) -> bool:
        choice = parse_parameters(record.parameters).nfs_export
        if choice == "false":
            return False
        exportable = (
            self._exporter is not None
            and record.pool in self._exported_pools
            and record.kind == "directory"
        )
        if choice == "true" and not exportable:
            raise InvalidArgument(self._why_not(record))
        return exportable

    def _why_not(self, record: VolumeRecord) -> str:
        if self._exporter is None:
            return "nfsExport is true but the managed NFS server is off (pools.yaml `nfs:`)"
        if record.kind != "directory":
            return f"nfsExport is true but a {record.kind} volume cannot be exported over NFS"
        return (
            f"nfsExport is true but pool {record.pool!r} is not exported "
            f"(exported pools: {', '.join(self._exported_pools) or 'none'})"
        )

    def _new_export(self, record: VolumeRecord) -> NfsExport:
        """The lowest free export ID (called under the pool lock and our lock)."""
        config = self._config
        if config is None:
            raise Internal("NFS export asked for while the NFS server is off")
        export_id = next(
            (i for i in range(FIRST_EXPORT_ID, LAST_EXPORT_ID + 1) if i not in self._owners),
            None,
        )
        if export_id is None:
            raise ResourceExhausted(
                f"the NFS server has no free export ID left ({LAST_EXPORT_ID} exports)"
            )
        params = parse_parameters(record.parameters)
        return NfsExport(
            export_id=export_id,
            pseudo=f"/{record.pool}/{record.directory}",
            root_squash=params.root_squash == "true",
            server=config.mount_address,
            port=config.port,
        )


def _writes(publication: Publication) -> bool:
    """A node may write unless it was published read-only or with a reader-only mode."""
    return not (publication.readonly or publication.capability.access_mode.read_only)


def volume_exports(
    config: NfsConfig | None,
    exported_pools: tuple[str, ...],
    pools: Mapping[str, PoolHandle],
    runtime_dir: Path,
    mounter: Mounter,
) -> VolumeExports:
    """The controller's VolumeExports, not started yet: with Ganesha when the config turns the
    NFS server on, else a disabled one that refuses `nfsExport: "true"`."""
    if config is None or not config.enabled:
        return VolumeExports(pools)
    settings = ServerSettings(bind=config.bind, port=config.port, runtime_dir=runtime_dir)
    ganesha = GaneshaServer(settings)
    exporter = NfsExporter(runtime_dir, ganesha.bus, mounter)
    exports = VolumeExports(pools, config, exported_pools, exporter, ganesha)
    ganesha.on_restart = exports.rebuild
    return exports
