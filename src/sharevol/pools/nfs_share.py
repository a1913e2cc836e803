"""Pools on an NFS share the admin already runs (pool kind `nfs`): a NAS, or a Linux server with
`/etc/exports`, such as the seed's `192.168.30.147:/data/k8s`.

The controller keeps the share mounted at the pool's `path` (ShareMount) and keeps one
directory per volume in it; the directory logic is the plain pool's (`PlainPool`, composed, not
copied). Nothing on the client side can enforce a size on a share, so `enforces_quota` is
false and volumes say "not enforced"; image volumes give a hard limit for one node. Nodes do
not need the pool: a directory volume's record carries where its folder is on the server, and
the node mounts `server:/share/volumes/<directory>` itself (sharevol.service.nfs_source).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path

from sharevol.errors import FailedPrecondition, Internal
from sharevol.pools.base import (
    VOLUMES_DIR,
    ContentRef,
    CopyOutcome,
    PoolCapabilities,
    PoolSpace,
    VolumeUsage,
)
from sharevol.pools.plain import PlainPool
from sharevol.sys.mounts import Mounter, SystemMounter
from sharevol.sys.nfs_mount import (
    DEFAULT_PORT,
    PROBE_TIMEOUT,
    Health,
    is_nfs_mount,
    merge_options,
    mount_nfs,
    nfs_device,
    option_value,
    probe,
    unmount_nfs,
)
from sharevol.sys.runner import CommandRunner, SubprocessRunner
from sharevol.sys.tree_copy import CopyControl

log = logging.getLogger(__name__)

SHARE_MOUNT_TIMEOUT = 30.0
RECHECK_SECONDS = 5.0
"""A share that answered this recently is not probed again before the next operation."""

BACKEND_SERVER = "nfs_server"
BACKEND_PORT = "nfs_port"
BACKEND_EXPORT = "nfs_export"
BACKEND_OPTIONS = "nfs_mount_options"
"""Keys of a volume record's `backend` that say where nodes mount the volume's folder from."""


class ShareMount:
    """Keeps `server:share` mounted at `mount_point`: mounts it when missing, mounts it again
    when its file handle went stale, and fails in time (never hangs) when the server is down."""

    def __init__(
        self,
        pool: str,
        device: str,
        mount_point: Path,
        options: list[str],
        *,
        runner: CommandRunner,
        mounter: Mounter,
        mount_timeout: float = SHARE_MOUNT_TIMEOUT,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.pool = pool
        self.device = device
        self.mount_point = mount_point
        self.options = options
        self._runner = runner
        self._mounter = mounter
        self._mount_timeout = mount_timeout
        self._probe_timeout = probe_timeout
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._mounted_before = False
        """Once this process mounted the share, the mount point is known to be ours: mounting
        it again after a loss does not require it empty (a lost mount may leave lock files)."""

    def ensure(self) -> None:
        """Make sure the share is mounted and answers; FailedPrecondition when something else
        holds the mount point, Internal when the server does not answer in time."""
        with self._lock:
            now = time.monotonic()
            if self._checked_at is not None and now - self._checked_at < RECHECK_SECONDS:
                return
            self._checked_at = None
            self._mount_if_missing()
            health = probe(os.fspath(self.mount_point), self._probe_timeout)
            if health.health is Health.STALE:
                log.warning('pool "%s": %s is stale; mounting it again', self.pool, self.device)
                self._remount()
                health = probe(os.fspath(self.mount_point), self._probe_timeout)
            if health.health is not Health.OK:
                raise Internal(
                    f'pool "{self.pool}": the NFS share {self.device} does not answer at '
                    f"{self.mount_point}: {health.message}"
                )
            self._checked_at = time.monotonic()

    def _mount_if_missing(self) -> None:
        target = os.fspath(self.mount_point)
        top = self._mounter.find(target)
        if is_nfs_mount(top, self.device):
            return
        if top is not None:
            raise FailedPrecondition(
                f'pool "{self.pool}": {target} holds another mount ({top.fs_type} '
                f"{top.source}), not the share {self.device}; unmount it or change `path`"
            )
        self.mount_point.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._mounted_before and any(self.mount_point.iterdir()):
            raise FailedPrecondition(
                f'pool "{self.pool}": {target} is not empty; sharevol mounts the share '
                f"{self.device} there and never mounts over data (use an empty directory)"
            )
        log.info('pool "%s": mounting %s at %s', self.pool, self.device, target)
        mount_nfs(self._runner, self.device, target, self.options, self._mount_timeout)
        if not is_nfs_mount(self._mounter.find(target), self.device):
            raise Internal(f"mount of {self.device} at {target} succeeded but is not visible")
        self._mounted_before = True

    def _remount(self) -> None:
        target = os.fspath(self.mount_point)
        while is_nfs_mount(self._mounter.find(target), self.device):
            unmount_nfs(self._runner, target, self._mount_timeout)
        self._mount_if_missing()


class SharePool:
    """Volumes as directories on an NFS share that sharevol mounts; sizes are not enforced."""

    kind = "nfs"

    def __init__(
        self,
        name: str,
        root: Path,
        server: str,
        share: str,
        *,
        mount_options: tuple[str, ...] = (),
        runner: CommandRunner | None = None,
        mounter: Mounter | None = None,
        mount_timeout: float = SHARE_MOUNT_TIMEOUT,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.name = name
        self.root = root
        self.server = server
        self.share = share.rstrip("/") or "/"
        self.options = merge_options(["proto=tcp"], mount_options)
        self.port = int(option_value(self.options, "port") or DEFAULT_PORT)
        runner = runner or SubprocessRunner()
        self.mount = ShareMount(
            name,
            nfs_device(server, self.share),
            root,
            self.options,
            runner=runner,
            mounter=mounter or SystemMounter(runner),
            mount_timeout=mount_timeout,
            probe_timeout=probe_timeout,
        )
        self._plain = PlainPool(name, root, statfs_timeout=probe_timeout)
        self.capabilities = _remote(self._plain.capabilities)

    def start(self) -> None:
        """Mount the share (a dead server fails here, in time), then the plain pool's checks
        and folders on it."""
        self.mount.ensure()
        self._plain.start()
        self.capabilities = _remote(self._plain.capabilities)  # the snapshot method found

    def node_location(self, directory: str) -> dict[str, int | str]:
        """Where nodes mount a volume's folder: backend facts for its record."""
        self._plain.volume_path(directory)  # validates the name
        export = f"{self.share.rstrip('/')}/{VOLUMES_DIR}/{directory}"
        return {
            BACKEND_SERVER: self.server,
            BACKEND_PORT: self.port,
            BACKEND_EXPORT: export,
            BACKEND_OPTIONS: ",".join(self.options),
        }

    # ---- the plain pool's directory logic, on a share that is checked first ---------------

    def volume_path(self, directory: str) -> Path:
        return self._plain.volume_path(directory)

    def create_volume(self, directory: str, capacity_bytes: int) -> dict[str, int | str]:
        self.mount.ensure()
        return {**self._plain.create_volume(directory, capacity_bytes),
                **self.node_location(directory)}  # fmt: skip

    def delete_volume(self, directory: str, backend: dict[str, int | str]) -> None:
        self.mount.ensure()
        self._plain.delete_volume(directory, backend)

    def archive_volume(self, directory: str, archive_name: str) -> None:
        self.mount.ensure()
        self._plain.archive_volume(directory, archive_name)

    def archive_usage(self, archive_name: str) -> int:
        self.mount.ensure()
        return self._plain.archive_usage(archive_name)

    def purge_archive(self, archive_name: str) -> None:
        self.mount.ensure()
        self._plain.purge_archive(archive_name)

    def set_limit(self, directory: str, capacity_bytes: int, backend: dict[str, int | str]) -> None:
        """Nothing to set: a share has no quota sharevol can reach (the size is recorded)."""

    def usage(
        self, directory: str, capacity_bytes: int, backend: dict[str, int | str]
    ) -> VolumeUsage:
        self.mount.ensure()
        return self._plain.usage(directory, capacity_bytes, backend)

    def space(self) -> PoolSpace:
        self.mount.ensure()
        return self._plain.space()

    def snapshot_path(self, directory: str) -> Path:
        return self._plain.snapshot_path(directory)

    def create_snapshot(
        self,
        volume_directory: str,
        snapshot_directory: str,
        size_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        self.mount.ensure()
        return self._plain.create_snapshot(volume_directory, snapshot_directory, size_bytes,
                                           control)  # fmt: skip

    def delete_snapshot(self, snapshot_directory: str) -> None:
        self.mount.ensure()
        self._plain.delete_snapshot(snapshot_directory)

    def clone_volume(
        self,
        source: ContentRef,
        directory: str,
        capacity_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        self.mount.ensure()
        outcome = self._plain.clone_volume(source, directory, capacity_bytes, control)
        backend = {**outcome.backend, **self.node_location(directory)}
        return dataclasses.replace(outcome, backend=backend)


def _remote(capabilities: PoolCapabilities) -> PoolCapabilities:
    return dataclasses.replace(capabilities, enforces_quota=False, remote_share=True)
