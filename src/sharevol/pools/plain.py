"""The plain pool: a directory per volume on any mounted filesystem (an NFS share, ext4...).

Nothing can enforce a size here, and the pool says so (`enforces_quota=False`): capacity is the
recorded one and usage comes from walking the tree with a deadline. Delete is the one place
sharevol removes a tree; it goes through `sharevol.sys.tree.remove_tree`, which never follows
a symlink nor enters another mount.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sharevol.errors import FailedPrecondition, Internal, NotFound
from sharevol.pools import _layout
from sharevol.pools.base import (
    ARCHIVE_DIR,
    VOLUMES_DIR,
    PoolCapabilities,
    PoolSpace,
    VolumeUsage,
    safe_child,
)
from sharevol.pools.snapshots import TreeSnapshots
from sharevol.sys.statfs import filesystem_type, mounts_under, statvfs_with_deadline
from sharevol.sys.tree import remove_tree, tree_usage

log = logging.getLogger(__name__)

DELETING_PREFIX = ".deleting-"
"""A volume being deleted is first renamed to `volumes/.deleting-<directory>`, so it vanishes
from its path at once and a crashed delete is finished by the retry. Volume directories never
start with a dot (safe_child), so these names cannot collide with a volume."""


class PlainPool(TreeSnapshots):
    """Volumes as plain directories; sizes are recorded, not enforced."""

    kind = "plain"

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        node_local: bool = False,
        statfs_timeout: float = 10.0,
        walk_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.root = root
        self.capabilities = PoolCapabilities(
            enforces_quota=False, reports_usage=False, instant_snapshot=False, node_local=node_local
        )
        self._volumes = root / VOLUMES_DIR
        self._statfs_timeout = statfs_timeout
        self._walk_timeout = walk_timeout

    def start(self) -> None:
        """Check the root answers (a dead NFS server fails here, in time) and make folders."""
        _layout.require_directory(self.name, self.root)
        try:
            statvfs_with_deadline(self.root, self._statfs_timeout)
        except Internal as exc:
            raise FailedPrecondition(f'pool "{self.name}": {exc}') from exc
        log.warning(
            'pool "%s": plain directories on %s (%s); volume sizes are NOT enforced',
            self.name, self.root, filesystem_type(self.root),
        )  # fmt: skip
        _layout.make_folders(self.name, self.root)
        self.detect_snapshot_method()

    def volume_path(self, directory: str) -> Path:
        return safe_child(self._volumes, directory)

    def create_volume(self, directory: str, capacity_bytes: int) -> dict[str, int | str]:
        """Make the directory (a retry finds it made); nothing to record."""
        path = self.volume_path(directory)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise Internal(f"{path} exists and is not a directory; move it away") from None
        except OSError as exc:
            raise Internal(f"cannot create {path}: {exc}") from exc
        return {}

    def delete_volume(self, directory: str, backend: dict[str, int | str]) -> None:
        """Rename the volume aside, then remove that tree without leaving it; gone is fine."""
        path = self.volume_path(directory)
        trash_name = f"{DELETING_PREFIX}{directory}"
        self._check_volumes_folder()
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None:
            if not stat.S_ISDIR(mode):
                raise FailedPrecondition(f"{path} is not a directory (a symlink?); refusing")
            mounted = mounts_under(path)
            if mounted:
                where = ", ".join(mounted)
                raise FailedPrecondition(f"{path} has mounts at {where}; unmount them first")
            if os.path.lexists(self._volumes / trash_name):
                remove_tree(self._volumes, trash_name)
            try:
                os.rename(path, self._volumes / trash_name)
            except OSError as exc:
                raise Internal(f"cannot move {path} aside for deletion: {exc}") from exc
        remove_tree(self._volumes, trash_name)
        log.info('pool "%s": deleted %s', self.name, path)

    def _check_volumes_folder(self) -> None:
        """The volumes folder must be the real `<root>/volumes`, not a symlink out of the pool."""
        real_root = os.path.realpath(self.root)
        if os.path.realpath(self._volumes) != os.path.join(real_root, VOLUMES_DIR):
            raise FailedPrecondition(f"{self._volumes} leads out of the pool root; refusing")

    def archive_volume(self, directory: str, archive_name: str) -> None:
        _layout.archive(self.root, directory, archive_name)

    def archive_usage(self, archive_name: str) -> int:
        """A tree walk of the archived directory, bounded by the walk deadline."""
        path = safe_child(self.root / ARCHIVE_DIR, archive_name)
        if not os.path.isdir(path) or os.path.islink(path):
            raise NotFound(f"archived volume {path} does not exist in pool {self.name!r}")
        return tree_usage(path, self._walk_timeout).used_bytes

    def purge_archive(self, archive_name: str) -> None:
        """Remove the archived tree for good (`sharevol gc`) without leaving it; gone is fine.
        A purge cut short leaves a smaller tree that the retry finishes."""
        archive = self.root / ARCHIVE_DIR
        path = safe_child(archive, archive_name)
        if os.path.lexists(path) and not stat.S_ISDIR(os.lstat(path).st_mode):
            raise FailedPrecondition(f"{path} is not a directory (a symlink?); refusing")
        remove_tree(archive, archive_name)
        log.info('pool "%s": purged archived volume %s', self.name, path)

    def set_limit(self, directory: str, capacity_bytes: int, backend: dict[str, int | str]) -> None:
        """Nothing to change: the size is only recorded (the service records the new one)."""

    def usage(
        self, directory: str, capacity_bytes: int, backend: dict[str, int | str]
    ) -> VolumeUsage:
        """Walk the tree (bounded by a deadline); capacity is the recorded size."""
        path = self.volume_path(directory)
        if not os.path.isdir(path) or os.path.islink(path):
            raise NotFound(f"volume folder {path} does not exist in pool {self.name!r}")
        used = tree_usage(path, self._walk_timeout)
        st = statvfs_with_deadline(path, self._statfs_timeout)
        available = max(0, min(capacity_bytes - used.used_bytes, st.f_bavail * st.f_frsize))
        # No inode total (f_files == 0) means inodes are allocated on demand: estimate.
        estimate = available // _layout.INODE_BYTES_ESTIMATE
        available_inodes = st.f_favail if st.f_files else estimate
        return VolumeUsage(
            capacity_bytes=capacity_bytes,
            used_bytes=used.used_bytes,
            available_bytes=available,
            total_inodes=used.used_inodes + available_inodes,
            used_inodes=used.used_inodes,
            available_inodes=available_inodes,
        )

    def space(self) -> PoolSpace:
        return _layout.space(self.root, self._statfs_timeout)
