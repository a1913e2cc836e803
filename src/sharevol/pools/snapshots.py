"""Snapshots and clones of directory volumes, as mixins of the pool classes.

btrfs: a snapshot is a read-only subvolume snapshot in `snapshots/<dir>` with its own qgroup
(limited to the source's size); a restore or clone is a writable snapshot of the snapshot (or
volume) into `volumes/<dir>` with the new volume's limit. Metadata only, whatever the data size.

Directory pools: a reflink tree copy where the filesystem can clone files (XFS reflink=1, btrfs
without quotas), detected once at pool start; otherwise a real sparse copy, which the service
runs in the background. A crashed copy is thrown away and done again: the record's state, not
the folder, says whether a copy is complete.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
from pathlib import Path

from sharevol.errors import Internal, NotFound, ResourceExhausted
from sharevol.pools.base import (
    SNAPSHOTS_DIR,
    VOLUMES_DIR,
    ContentRef,
    CopyOutcome,
    PoolCapabilities,
    safe_child,
)
from sharevol.sys import btrfs
from sharevol.sys.reflink import reflink_tree, supports_reflink
from sharevol.sys.sparse_copy import sparse_copy_tree
from sharevol.sys.tree import remove_tree
from sharevol.sys.tree_copy import CopyControl, CopyResult, sync_filesystem

log = logging.getLogger(__name__)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class _SnapshotFolders:
    """Paths shared by both mixins; the pool class provides `name` and `root`."""

    name: str
    root: Path

    def snapshot_path(self, directory: str) -> Path:
        return safe_child(self.root / SNAPSHOTS_DIR, directory)

    def _content_path(self, source: ContentRef) -> Path:
        folder = VOLUMES_DIR if source.kind == "volume" else SNAPSHOTS_DIR
        return safe_child(self.root / folder, source.directory)


class BtrfsSnapshots(_SnapshotFolders):
    """Snapshots and clones as btrfs subvolume snapshots (a mixin of BtrfsPool)."""

    def create_snapshot(
        self,
        volume_directory: str,
        snapshot_directory: str,
        size_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        """A read-only snapshot with a qgroup limit of the source's size; instant."""
        source = self._content_path(ContentRef("volume", volume_directory))
        target = self.snapshot_path(snapshot_directory)
        self._snapshot(source, target, readonly=True)
        return self._limited(target, size_bytes)

    def delete_snapshot(self, snapshot_directory: str) -> None:
        """Delete the snapshot subvolume; its qgroup goes when the cleaner is done (or at the
        next pool start)."""
        path = self.snapshot_path(snapshot_directory)
        try:
            btrfs.destroy_subvolume(path.parent, path.name)
        except btrfs.BtrfsError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise
        log.info('pool "%s": deleted snapshot %s', self.name, path)

    def clone_volume(
        self,
        source: ContentRef,
        directory: str,
        capacity_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        """A writable snapshot of the snapshot or volume, limited to `capacity_bytes`."""
        target = safe_child(self.root / VOLUMES_DIR, directory)
        self._snapshot(self._content_path(source), target, readonly=False)
        return self._limited(target, capacity_bytes)

    def _snapshot(self, source: Path, target: Path, *, readonly: bool) -> None:
        if not btrfs.is_subvolume(source):
            raise NotFound(f"{source} is not a btrfs subvolume of pool {self.name!r}")
        try:
            btrfs.snapshot_subvolume(source, target.parent, target.name, readonly=readonly)
        except btrfs.BtrfsError as exc:
            if exc.errno in _NO_SPACE:
                raise ResourceExhausted(f"pool {self.name!r} has no space for {target}") from exc
            if exc.errno != errno.EEXIST:
                raise
            if not btrfs.is_subvolume(target):  # a retry finds its own snapshot made
                raise Internal(f"{target} exists and is not a btrfs subvolume") from exc
        log.info('pool "%s": snapshot %s -> %s%s', self.name, source, target,
                 " (read-only)" if readonly else "")  # fmt: skip

    def _limited(self, path: Path, limit_bytes: int) -> CopyOutcome:
        """Set the referenced limit of the new subvolume and read what it references."""
        subvolume_id = btrfs.subvolume_id(path)
        btrfs.set_referenced_limit(self.root, subvolume_id, limit_bytes)
        group = btrfs.qgroup(self.root, subvolume_id)
        return CopyOutcome({"subvolume_id": subvolume_id}, group.referenced if group else 0)


class TreeSnapshots(_SnapshotFolders):
    """Snapshots and clones as tree copies: reflink where the filesystem can, else a real
    sparse copy (a mixin of directory pools; `capabilities` says which)."""

    capabilities: PoolCapabilities

    def detect_snapshot_method(self) -> None:
        """Try FICLONE once in `snapshots/` and record the outcome in the capabilities (so
        callers keep reading data, never the pool kind). Called by the pool's start()."""
        reflink = supports_reflink(self.root / SNAPSHOTS_DIR)
        self.capabilities = dataclasses.replace(
            self.capabilities,
            instant_snapshot=reflink,
            snapshot_method="reflink" if reflink else "copy",
        )
        log.info('pool "%s": snapshots and clones by %s', self.name,
                 "reflink (instant)" if reflink else "real copy (in the background)")  # fmt: skip

    def create_snapshot(
        self,
        volume_directory: str,
        snapshot_directory: str,
        size_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        source = self._content_path(ContentRef("volume", volume_directory))
        result = self._copy(source, self.root / SNAPSHOTS_DIR, snapshot_directory, control)
        return CopyOutcome({}, result.data_bytes)

    def delete_snapshot(self, snapshot_directory: str) -> None:
        path = self.snapshot_path(snapshot_directory)
        remove_tree(path.parent, path.name)
        log.info('pool "%s": deleted snapshot %s', self.name, path)

    def clone_volume(
        self,
        source: ContentRef,
        directory: str,
        capacity_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        target_parent = self.root / VOLUMES_DIR
        safe_child(target_parent, directory)
        result = self._copy(self._content_path(source), target_parent, directory, control)
        return CopyOutcome({}, result.data_bytes)

    def _copy(
        self, source: Path, parent: Path, name: str, control: CopyControl | None
    ) -> CopyResult:
        """Copy `source` to `parent/name`, replacing what a crashed attempt left there."""
        try:
            mode = os.lstat(source).st_mode
        except FileNotFoundError:
            raise NotFound(f"{source} does not exist in pool {self.name!r}") from None
        if not stat.S_ISDIR(mode):
            raise Internal(f"{source} is not a directory (a symlink?); refusing to copy it")
        if os.path.lexists(parent / name):
            log.info('pool "%s": removing the partial copy %s', self.name, parent / name)
            remove_tree(parent, name)
        copy = reflink_tree if self.capabilities.snapshot_method == "reflink" else sparse_copy_tree
        result = copy(source, parent, name, control)
        sync_filesystem(parent)
        log.info('pool "%s": copied %s -> %s (%s, %d inodes, %d data bytes)', self.name, source,
                 parent / name, self.capabilities.snapshot_method, result.inodes,
                 result.data_bytes)  # fmt: skip
        return result
