"""One Ganesha export per volume: a bind mount, an EXPORT file, and AddExport/UpdateExport/
RemoveExport over DBus, each step idempotent.

Ganesha 4.3 exports a btrfs subvolume only when it is a mount point (it resolves the path to a
filesystem through the mount table; a bare subvolume path fails with "No such file or
directory"), so every volume is bind-mounted at `<runtime>/mnt/<pool>/<directory>` and that
mount point is exported. Doing it for every pool kind keeps one code path. Removal is
RemoveExport first (it closes Ganesha's open files of the export, which otherwise keep deleted
files' space charged), then the unmount, then `rmdir` of the empty mount point.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Protocol

from sharevol.catalog.store import atomic_write
from sharevol.errors import Internal
from sharevol.nfs.bus import ExportAlreadyActive, ExportUnknown
from sharevol.nfs.conf import ExportSpec, export_conf
from sharevol.sys.mounts import Mounter, identity_of, normalize

log = logging.getLogger(__name__)


class ExportBus(Protocol):
    """Ganesha's ExportMgr: sharevol.nfs.bus.GaneshaBus, or a fake in unit tests."""

    def add_export(self, conf_path: Path, export_id: int) -> None: ...

    def update_export(self, conf_path: Path, export_id: int) -> None: ...

    def remove_export(self, export_id: int) -> None: ...


class NfsExporter:
    """Applies ExportSpecs to one running Ganesha; remembers what it has applied since the last
    (re)start of Ganesha, so that a repeated apply of the same spec costs nothing."""

    def __init__(self, runtime_dir: Path, bus: ExportBus, mounter: Mounter) -> None:
        self.runtime_dir = runtime_dir
        self.mount_root = runtime_dir / "mnt"
        self.conf_dir = runtime_dir / "exports"
        self._bus = bus
        self._mounter = mounter
        self._applied: dict[int, ExportSpec] = {}
        self._lock = threading.Lock()

    def mount_point(self, pool: str, directory: str) -> Path:
        """Where a volume is bind-mounted for Ganesha (both names are validated components)."""
        return self.mount_root / pool / directory

    def reset(self) -> None:
        """Forget what was applied and unmount every export bind mount: called before Ganesha
        starts, when it serves no export, so leftovers of a crash never linger."""
        with self._lock:
            self._applied.clear()
            self.conf_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.mount_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            prefix = normalize(self.mount_root) + "/"
            leftovers = [e.mount_point for e in self._mounter.mounts()]
            for target in sorted(
                (t for t in leftovers if t.startswith(prefix)), key=len, reverse=True
            ):
                log.info("unmounting export bind mount %s left by an earlier run", target)
                self._mounter.unmount(target)
            for conf in self.conf_dir.glob("export-*.conf"):
                conf.unlink()
            _remove_empty_dirs(self.mount_root)

    def forget(self) -> None:
        """Ganesha restarted with no exports: everything must be added again."""
        with self._lock:
            self._applied.clear()

    def applied(self) -> dict[int, ExportSpec]:
        with self._lock:
            return dict(self._applied)

    def apply(self, spec: ExportSpec, source: Path) -> None:
        """Serve `source` as `spec` says: bind it at `spec.path`, then add the export, or
        update it when Ganesha serves that ID already (a new client list, squash)."""
        with self._lock:
            if self._applied.get(spec.export_id) == spec:
                return
            self._bind(source, spec.path)
            conf = self.conf_dir / f"export-{spec.export_id}.conf"
            atomic_write(conf, export_conf(spec).encode())
            if spec.export_id in self._applied:
                try:
                    self._bus.update_export(conf, spec.export_id)
                except ExportUnknown:  # Ganesha restarted and the rebuild has not run yet
                    self._bus.add_export(conf, spec.export_id)
            else:
                try:
                    self._bus.add_export(conf, spec.export_id)
                except ExportAlreadyActive:
                    self._bus.update_export(conf, spec.export_id)
            self._applied[spec.export_id] = spec

    def remove(self, export_id: int, path: Path) -> None:
        """Stop serving the export and release its bind mount; nothing if it is gone."""
        with self._lock:
            try:
                self._bus.remove_export(export_id)
            except ExportUnknown:
                log.debug("export %d was not active", export_id)
            self._applied.pop(export_id, None)
            self._unbind(path)
            with contextlib.suppress(FileNotFoundError):
                (self.conf_dir / f"export-{export_id}.conf").unlink()

    def release(self, path: Path) -> None:
        """Release a volume's bind mount without touching any export (its ID serves another
        volume now)."""
        with self._lock:
            self._unbind(path)

    def remove_all(self) -> None:
        """Remove every applied export (a clean stop): Ganesha lets go of the volumes' files and
        the bind mounts are released, so pools can be unmounted after it."""
        for export_id, spec in sorted(self.applied().items()):
            try:
                self.remove(export_id, spec.path)
            except Internal as exc:
                log.error("removing export %d failed: %s", export_id, exc)
                with self._lock:
                    self._applied.pop(export_id, None)
                try:
                    self._unbind(spec.path)
                except Internal as again:  # Ganesha still holds it: retried after its stop
                    log.error("unmounting %s failed: %s", spec.path, again)
        with self._lock:
            _remove_empty_dirs(self.mount_root)

    def _bind(self, source: Path, target: Path) -> None:
        entries = self._mounter.mounts()
        current = [e for e in entries if e.mount_point == normalize(target)]
        wanted = identity_of(entries, source)
        if current:
            if current[-1].identity.same_source(wanted):
                return
            raise Internal(
                f"{target} is already mounted from {current[-1].source} "
                f"({current[-1].root}), not from {source}; unmount it by hand"
            )
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._mounter.bind(source, target, readonly=False)

    def _unbind(self, target: Path) -> None:
        while self._mounter.find(target) is not None:
            self._mounter.unmount(target)
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()  # an empty mount point after the unmount: never a recursive delete
        with contextlib.suppress(OSError):
            target.parent.rmdir()  # the pool's folder, when it was its last export


def _remove_empty_dirs(root: Path) -> None:
    """rmdir the empty `<pool>/<directory>` mount points below `root` and then empty pool
    folders. Two levels only, never a walk: a folder still mounted is a volume's data (rmdir
    fails with EBUSY there), and nothing inside a volume is ever touched."""
    if not root.is_dir():
        return
    for pool_dir in root.iterdir():
        if not pool_dir.is_dir() or pool_dir.is_symlink():
            continue
        for mount_point in pool_dir.iterdir():
            with contextlib.suppress(OSError):
                mount_point.rmdir()
        with contextlib.suppress(OSError):
            pool_dir.rmdir()
