"""The btrfs pool: one subvolume per volume, its size a qgroup limit on referenced bytes.

`<root>/volumes/<directory>` is a subvolume; its qgroup 0/<id> has `max_rfer` = capacity, so
writes past it fail with EDQUOT, expansion raises the limit in place, and usage is the qgroup's
`referenced` (statfs on btrfs reports the whole filesystem, never the volume). Everything is
in-process ioctls: create + limit costs well under a millisecond.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from sharevol.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from sharevol.pools import _layout
from sharevol.pools.base import (
    ARCHIVE_DIR,
    VOLUMES_DIR,
    PoolCapabilities,
    PoolSpace,
    VolumeUsage,
    safe_child,
)
from sharevol.pools.snapshots import BtrfsSnapshots
from sharevol.sys import btrfs
from sharevol.sys.statfs import filesystem_type, statvfs_with_deadline

log = logging.getLogger(__name__)


class BtrfsPool(BtrfsSnapshots):
    """Volumes as btrfs subvolumes with qgroup limits; quotas must be on (`btrfs quota enable`).

    Inodes: btrfs allocates them on demand and keeps no per-subvolume count, so used inodes are
    the inode items of the subvolume's tree and available inodes are estimated as one per
    4 KiB of available space."""

    kind = "btrfs"

    def __init__(
        self, name: str, root: Path, *, node_local: bool = False, statfs_timeout: float = 10.0
    ) -> None:
        self.name = name
        self.root = root
        self.capabilities = PoolCapabilities(
            enforces_quota=True,
            reports_usage=True,
            instant_snapshot=True,
            node_local=node_local,
            snapshot_method="btrfs",
        )
        self._volumes = root / VOLUMES_DIR
        self._statfs_timeout = statfs_timeout

    def start(self) -> None:
        """Check the root is on btrfs with quotas on, make the folders, drop stale qgroups."""
        _layout.require_directory(self.name, self.root)
        fs_type = filesystem_type(self.root)
        if fs_type != "btrfs":
            raise FailedPrecondition(
                f'pool "{self.name}": {self.root} is on {fs_type}, not btrfs; mount a btrfs '
                'filesystem there or use kind "plain" (sizes not enforced)'
            )
        if not btrfs.quota_enabled(self.root):
            raise FailedPrecondition(
                f'pool "{self.name}" at {self.root} has btrfs quotas off: '
                f"run `btrfs quota enable {self.root}`"
            )
        _layout.make_folders(self.name, self.root)
        self.drop_stale_qgroups()

    def drop_stale_qgroups(self) -> list[int]:
        """Remove level-0 qgroups whose subvolume is gone; returns their ids.

        Kernels before ~6.7 (Debian 12's 6.1) keep the qgroup of a deleted subvolume forever;
        newer ones drop it once the cleaner has freed the subvolume."""
        # Qgroups first: a subvolume made between the two listings is then in `existing`, so
        # its fresh qgroup is never taken for stale (6.1 would remove it without complaint).
        groups = btrfs.list_qgroups(self.root)
        existing = {sub.subvolume_id for sub in btrfs.list_subvolumes(self.root)}
        dropped: list[int] = []
        for group in groups:
            stale = group.subvolume_id not in existing
            if group.level != 0 or group.subvolume_id < btrfs.FIRST_FREE_OBJECTID or not stale:
                continue
            try:
                btrfs.remove_qgroup(self.root, group.qgroupid)
            except btrfs.BtrfsError as exc:
                # EBUSY: the cleaner still holds it; ENOENT: dropped meanwhile. Next start.
                log.warning('pool "%s": cannot drop stale qgroup 0/%d: %s', self.name,
                            group.subvolume_id, exc)  # fmt: skip
                continue
            dropped.append(group.subvolume_id)
        if dropped:
            log.info('pool "%s": dropped %d stale qgroups', self.name, len(dropped))
        return dropped

    def volume_path(self, directory: str) -> Path:
        return safe_child(self._volumes, directory)

    def create_volume(self, directory: str, capacity_bytes: int) -> dict[str, int | str]:
        """Create the subvolume (or find the one a crashed attempt made) and set its limit."""
        if capacity_bytes <= 0:
            raise InvalidArgument(f"capacity must be positive, got {capacity_bytes}")
        path = self.volume_path(directory)
        try:
            btrfs.create_subvolume(self._volumes, directory)
        except btrfs.BtrfsError as exc:
            if exc.errno != errno.EEXIST:
                raise
            if not btrfs.is_subvolume(path):
                raise Internal(f"{path} exists but is not a btrfs subvolume; move it away") from exc
        subvolume_id = btrfs.subvolume_id(path)
        btrfs.set_referenced_limit(self._volumes, subvolume_id, capacity_bytes)
        return {"subvolume_id": subvolume_id}

    def delete_volume(self, directory: str, backend: dict[str, int | str]) -> None:
        """Delete the subvolume (and subvolumes a tenant nested in it); gone already is fine.

        The qgroup goes when the cleaner has freed the data (or at the next start)."""
        self._destroy(self._volumes, directory)

    def _destroy(self, parent: Path, name: str) -> None:
        """Delete subvolume `parent/name` and the subvolumes nested in it; gone is fine."""
        path = safe_child(parent, name)
        try:
            btrfs.destroy_subvolume(parent, name)
        except btrfs.BtrfsError as exc:
            if exc.errno == errno.ENOENT:
                return
            if exc.errno == errno.EINVAL and not btrfs.is_subvolume(path):
                raise Internal(f"{path} is not a btrfs subvolume; refusing to delete it") from exc
            if exc.errno != errno.ENOTEMPTY:
                raise
            self._destroy_nested(path)
            btrfs.destroy_subvolume(parent, name)
        log.info('pool "%s": deleted subvolume %s', self.name, path)

    def _destroy_nested(self, path: Path) -> None:
        """Delete every subvolume nested below the volume at `path`, deepest first."""
        nested: list[str] = []
        parents = [(btrfs.subvolume_id(path), "")]
        while parents:
            parent_id, prefix = parents.pop()
            for child in btrfs.child_subvolumes(self.root, parent_id):
                relative = f"{prefix}{child.path}"
                nested.append(relative)
                parents.append((child.subvolume_id, f"{relative}/"))
        for relative in sorted(nested, key=lambda rel: rel.count("/"), reverse=True):
            btrfs.destroy_subvolume_beneath(path, relative)
            log.info('pool "%s": deleted nested subvolume %s/%s', self.name, path, relative)

    def archive_volume(self, directory: str, archive_name: str) -> None:
        """Rename the subvolume into `archive/`: data, id and qgroup limit stay as they are."""
        _layout.archive(self.root, directory, archive_name)

    def archive_usage(self, archive_name: str) -> int:
        """Referenced bytes of the archived subvolume's qgroup (-1 when it has none); extents
        it shares with snapshots count in full, so a purge may give back less."""
        path = safe_child(self.root / ARCHIVE_DIR, archive_name)
        if not btrfs.is_subvolume(path):
            raise NotFound(f"archived volume {path} does not exist in pool {self.name!r}")
        group = btrfs.qgroup(self.root, btrfs.subvolume_id(path))
        return group.referenced if group is not None else -1

    def purge_archive(self, archive_name: str) -> None:
        """Delete the archived subvolume for good (`sharevol gc`); gone already is fine."""
        self._destroy(self.root / ARCHIVE_DIR, archive_name)

    def set_limit(self, directory: str, capacity_bytes: int, backend: dict[str, int | str]) -> None:
        """Set the qgroup limit by id (works even when the volume is over its limit)."""
        if capacity_bytes <= 0:
            raise InvalidArgument(f"capacity must be positive, got {capacity_bytes}")
        subvolume_id = self._subvolume_id(directory, backend)
        btrfs.set_referenced_limit(self._volumes, subvolume_id, capacity_bytes)

    def usage(
        self, directory: str, capacity_bytes: int, backend: dict[str, int | str]
    ) -> VolumeUsage:
        """Usage from the qgroup (current as of the last transaction commit, ~30 s at most)."""
        subvolume_id = self._subvolume_id(directory, backend)
        group = btrfs.qgroup(self.root, subvolume_id)
        if group is None:
            raise Internal(
                f"subvolume {subvolume_id} ({self.volume_path(directory)}) has no qgroup; "
                f"run `btrfs quota rescan -w {self.root}` and set its limit again"
            )
        capacity = group.max_referenced if group.max_referenced is not None else capacity_bytes
        used = group.referenced
        st = statvfs_with_deadline(self.root, self._statfs_timeout)
        available = max(0, min(capacity - used, st.f_bavail * st.f_frsize))
        used_inodes = btrfs.count_inodes(self.root, subvolume_id)
        available_inodes = available // _layout.INODE_BYTES_ESTIMATE
        return VolumeUsage(
            capacity_bytes=capacity,
            used_bytes=used,
            available_bytes=available,
            total_inodes=used_inodes + available_inodes,
            used_inodes=used_inodes,
            available_inodes=available_inodes,
        )

    def space(self) -> PoolSpace:
        return _layout.space(self.root, self._statfs_timeout)

    def _subvolume_id(self, directory: str, backend: dict[str, int | str]) -> int:
        """The id of the volume's subvolume, read from the filesystem (the record's id is only
        cross-checked: ids of deleted subvolumes can be reused after a remount)."""
        path = self.volume_path(directory)
        if not btrfs.is_subvolume(path):
            if os.path.lexists(path):
                raise Internal(f"{path} is not a btrfs subvolume")
            raise NotFound(f"volume folder {path} does not exist in pool {self.name!r}")
        subvolume_id = btrfs.subvolume_id(path)
        recorded = backend.get("subvolume_id")
        if recorded is not None and recorded != subvolume_id:
            log.warning("%s: recorded subvolume id %s, found %d", path, recorded, subvolume_id)
        return subvolume_id
