"""What the XFS and ext4 pools share: one directory per volume, sized by its own project quota.

A volume is `<root>/volumes/<directory>` with its own project ID and PROJINHERIT, so whatever
is written below it is charged to that project, and the project's hard block limit is the
volume's size (XFS answers ENOSPC past it, ext4 EDQUOT). Expansion raises the limit in place;
usage and capacity come from the quota, never from a tree walk or the whole filesystem.

Project IDs come from `sharevol.pools._project_ids` (allocated under the pool's file lock,
recorded in `backend["project_id"]`, never reused while a record holds them). Clones and
snapshots are copied (reflink where the filesystem can) into a directory that already carries
their new project ID, so every copied file is charged to it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from sharevol.catalog.store import Catalog
from sharevol.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from sharevol.pools import _layout
from sharevol.pools._project_ids import NO_PROJECT_IDS, PROJECT_KEY, ProjectIds
from sharevol.pools.base import (
    ARCHIVE_DIR,
    SNAPSHOTS_DIR,
    VOLUMES_DIR,
    ContentRef,
    CopyOutcome,
    PoolCapabilities,
    PoolSpace,
    VolumeUsage,
    safe_child,
)
from sharevol.pools.plain import DELETING_PREFIX, PlainPool
from sharevol.pools.snapshots import TreeSnapshots
from sharevol.sys.copy_control import CopyControl
from sharevol.sys.quota import (
    Interface,
    ProjectQuotas,
    QuotaError,
    QuotaState,
    open_project_quotas,
)
from sharevol.sys.statfs import filesystem_type, statvfs_with_deadline
from sharevol.sys.tree import remove_tree, tree_usage

log = logging.getLogger(__name__)

MAX_FILES_KEY = "max_files"
STAGING_PREFIX = ".staging-"
"""A clone or snapshot is copied into `<folder>/.staging-<name>/data`, a directory that already
carries the new project ID (so every copied file is charged to it), then renamed into place."""
STAGED = "data"


class ProjectQuotaPool(TreeSnapshots):
    """A pool of directories with project quotas; XfsPool and Ext4Pool fill in the specifics.

    `enforce_quota=False` lets the pool start on a filesystem that does not enforce project
    quotas; it then says so (`enforces_quota=False`) and still sets project IDs and limits
    where the filesystem accounts them, so that a remount with `-o prjquota` enforces them."""

    kind = "project"
    fs_type = ""
    interface: Interface = "xfs"

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        node_local: bool = False,
        enforce_quota: bool = True,
        statfs_timeout: float = 10.0,
        walk_timeout: float = 30.0,
        quotas: ProjectQuotas | None = None,
    ) -> None:
        self.name = name
        self.root = root
        self.capabilities = PoolCapabilities(
            enforces_quota=enforce_quota, reports_usage=enforce_quota, node_local=node_local
        )
        self.quota_state = QuotaState(False, False)
        self._enforce_quota = enforce_quota
        self._volumes = root / VOLUMES_DIR
        self._statfs_timeout = statfs_timeout
        self._walk_timeout = walk_timeout
        self._plain = PlainPool(name, root, node_local=node_local, statfs_timeout=statfs_timeout,
                                walk_timeout=walk_timeout)  # fmt: skip
        self._quotas = quotas
        self.project_ids = ProjectIds(name, Catalog(root))

    # -- start ----------------------------------------------------------------------------

    def quota_off_message(self, state: QuotaState) -> str:
        """What the admin must do to turn project quotas on (filesystem specific)."""
        return f'pool "{self.name}" at {self.root} has quotas off: mount it with -o prjquota'

    def start(self) -> None:
        """Check the filesystem and its project quota state, make the folders, and find the
        highest project ID the catalog records; FailedPrecondition says what to fix."""
        _layout.require_directory(self.name, self.root)
        fs_type = self._quotas.fs_type if self._quotas else filesystem_type(self.root)
        if fs_type != self.fs_type:
            raise FailedPrecondition(
                f'pool "{self.name}": {self.root} is on {fs_type}, not {self.fs_type}; mount '
                f'{self.fs_type} there or use kind "auto"'
            )
        if self._quotas is None:
            self._quotas = open_project_quotas(self.root, self.interface)
        state = self._quotas.state()
        if not state.enforced:
            message = self.quota_off_message(state)
            if self._enforce_quota:
                raise FailedPrecondition(message)
            log.warning("%s; starting anyway (enforce_quota: false): volume sizes are NOT "
                        "enforced", message)  # fmt: skip
        self.quota_state = state
        self.capabilities = replace(
            self.capabilities, enforces_quota=state.enforced, reports_usage=state.accounting
        )
        _layout.make_folders(self.name, self.root)
        for folder in (self._volumes, self.root / ARCHIVE_DIR, self.root / SNAPSHOTS_DIR):
            self._check_folder_has_no_project(folder)
        self.project_ids.start(self._quotas, state)
        self.detect_snapshot_method()

    def _check_folder_has_no_project(self, folder: Path) -> None:
        """Volume directories must be renamable (delete, archive): XFS and ext4 refuse (EXDEV)
        to move a directory of another project into one that passes its own project on."""
        try:
            project_id = self.quotas.get_project(folder)
        except QuotaError as exc:
            if exc.errno in NO_PROJECT_IDS and not self.quota_state.enforced:
                return
            raise
        if project_id:
            raise FailedPrecondition(
                f'pool "{self.name}": {folder} belongs to project {project_id}; the pool folders '
                "must not carry a project ID: put the pool outside that project's tree"
            )

    @property
    def quotas(self) -> ProjectQuotas:
        if self._quotas is None:
            raise Internal(f'pool "{self.name}" is used before start()')
        return self._quotas

    # -- volumes --------------------------------------------------------------------------

    def volume_path(self, directory: str) -> Path:
        return safe_child(self._volumes, directory)

    def create_volume(self, directory: str, capacity_bytes: int) -> dict[str, int | str]:
        """Make the directory with its own project ID (or find the one a crashed attempt made)
        and set the project's hard block limit to `capacity_bytes`."""
        if capacity_bytes <= 0:
            raise InvalidArgument(f"capacity must be positive, got {capacity_bytes}")
        self._plain.create_volume(directory, capacity_bytes)
        project_id = self.project_ids.ensure(self.volume_path(directory))
        if not project_id:
            return {}
        if self.quota_state.accounting:
            self.quotas.set_limits(project_id, block_bytes=capacity_bytes)
        return {PROJECT_KEY: project_id}

    def set_file_limit(
        self, directory: str, max_files: int, backend: dict[str, int | str]
    ) -> dict[str, int | str]:
        """Cap the inodes of the volume (its top directory counts as one); returns the backend
        facts to record, which later limit changes re-apply."""
        if max_files <= 0:
            raise InvalidArgument(f"maxFiles must be positive, got {max_files}")
        if self.quota_state.accounting:
            project_id = self._volume_project(directory, backend)
            if project_id:
                self.quotas.set_limits(project_id, inodes=max_files)
        return {**backend, MAX_FILES_KEY: max_files}

    def delete_volume(self, directory: str, backend: dict[str, int | str]) -> None:
        """Remove the tree (never leaving it, never following a symlink), then clear the
        project's limits; a volume that is already gone only has its limits cleared."""
        project_id = self._project_for_delete(directory, backend)
        self._plain.delete_volume(directory, backend)
        # A restore or clone that failed or was cancelled leaves its copy in the staging folder.
        if os.path.lexists(self._volumes / f"{STAGING_PREFIX}{directory}"):
            staged_project = self._remove_copies(self._volumes, directory)
            if staged_project and staged_project != project_id and self.quota_state.accounting:
                self.quotas.set_limits(staged_project, block_bytes=0, inodes=0)
        if project_id and self.quota_state.accounting:
            self.quotas.set_limits(project_id, block_bytes=0, inodes=0)

    def _project_for_delete(self, directory: str, backend: dict[str, int | str]) -> int:
        """The project to clear: the directory's own (or its half-deleted copy's), else the
        recorded one."""
        for path in (self.volume_path(directory), self._volumes / f"{DELETING_PREFIX}{directory}"):
            if os.path.isdir(path) and not os.path.islink(path):
                try:
                    found = self.quotas.get_project(path)
                except QuotaError as exc:
                    if exc.errno not in NO_PROJECT_IDS:
                        raise
                    found = 0
                if found:
                    return found
        recorded = backend.get(PROJECT_KEY)
        return recorded if isinstance(recorded, int) else 0

    def archive_volume(self, directory: str, archive_name: str) -> None:
        """Rename into `archive/`: the project ID, its limit and the data stay as they are."""
        _layout.archive(self.root, directory, archive_name)

    def archive_usage(self, archive_name: str) -> int:
        """Bytes an archived volume holds: its project's usage (a tree walk where no quota
        accounts it); `sharevol gc` shows it."""
        path = safe_child(self.root / ARCHIVE_DIR, archive_name)
        if not os.path.isdir(path) or os.path.islink(path):
            raise NotFound(f"archived volume {path} does not exist in pool {self.name!r}")
        project_id = self.project_ids.project_of(path)
        if project_id and self.quota_state.accounting:
            return self.quotas.get(project_id).used_bytes
        return tree_usage(path, self._walk_timeout).used_bytes

    def purge_archive(self, archive_name: str) -> None:
        """Delete an archived volume for good, then clear its project's limits (gc)."""
        folder = self.root / ARCHIVE_DIR
        path = safe_child(folder, archive_name)
        project_id = 0
        if os.path.isdir(path) and not os.path.islink(path):
            project_id = self.project_ids.project_of(path)
        remove_tree(folder, archive_name)
        if project_id and self.quota_state.accounting:
            self.quotas.set_limits(project_id, block_bytes=0, inodes=0)
        log.info('pool "%s": purged archived volume %s', self.name, path)

    def set_limit(self, directory: str, capacity_bytes: int, backend: dict[str, int | str]) -> None:
        """Set the project's hard block limit (expansion, online), and the recorded file limit."""
        if capacity_bytes <= 0:
            raise InvalidArgument(f"capacity must be positive, got {capacity_bytes}")
        if not self.quota_state.accounting:
            return
        project_id = self._volume_project(directory, backend)
        if not project_id:
            log.error('pool "%s": %s has no project ID; its size cannot be enforced',
                      self.name, self.volume_path(directory))  # fmt: skip
            return
        max_files = backend.get(MAX_FILES_KEY)
        inodes = max_files if isinstance(max_files, int) else None
        self.quotas.set_limits(project_id, block_bytes=capacity_bytes, inodes=inodes)

    def usage(
        self, directory: str, capacity_bytes: int, backend: dict[str, int | str]
    ) -> VolumeUsage:
        """Usage and limits from the project quota (a tree walk only where it accounts none)."""
        project_id = self._volume_project(directory, backend)
        if not project_id or not self.quota_state.accounting:
            return self._plain.usage(directory, capacity_bytes, backend)
        quota = self.quotas.get(project_id)
        capacity = quota.block_limit_bytes or capacity_bytes
        st = statvfs_with_deadline(self.root, self._statfs_timeout)
        available = max(0, min(capacity - quota.used_bytes, st.f_bavail * st.f_frsize))
        if quota.inode_limit:
            total_inodes = quota.inode_limit
            available_inodes = max(0, min(quota.inode_limit - quota.used_inodes, st.f_favail))
        else:
            available_inodes = st.f_favail
            total_inodes = quota.used_inodes + available_inodes
        return VolumeUsage(
            capacity_bytes=capacity,
            used_bytes=quota.used_bytes,
            available_bytes=available,
            total_inodes=total_inodes,
            used_inodes=quota.used_inodes,
            available_inodes=available_inodes,
        )

    def _volume_project(self, directory: str, backend: dict[str, int | str]) -> int:
        """The project ID of an existing volume directory (the directory is the truth; a
        different recorded ID is logged)."""
        path = self.volume_path(directory)
        if not os.path.isdir(path) or os.path.islink(path):
            raise NotFound(f"volume folder {path} does not exist in pool {self.name!r}")
        try:
            project_id = self.quotas.get_project(path)
        except QuotaError as exc:
            if exc.errno in NO_PROJECT_IDS and not self.quota_state.enforced:
                return 0
            raise
        recorded = backend.get(PROJECT_KEY)
        if recorded is not None and recorded != project_id:
            log.warning('pool "%s": %s is project %d, recorded %s', self.name, path, project_id,
                        recorded)  # fmt: skip
        return project_id

    def space(self) -> PoolSpace:
        return _layout.space(self.root, self._statfs_timeout)

    # -- snapshots and clones (reflink where the filesystem can: XFS reflink=1) --------------

    def create_snapshot(
        self,
        volume_directory: str,
        snapshot_directory: str,
        size_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        """A copy of the volume in `snapshots/` with a project ID of its own (so its usage is
        accounted apart) and no limit: nothing writes to a snapshot."""
        source = self._content_path(ContentRef("volume", volume_directory))
        parent = self.root / SNAPSHOTS_DIR
        safe_child(parent, snapshot_directory)
        return self._copy_into_project(source, parent, snapshot_directory, None, control)

    def delete_snapshot(self, snapshot_directory: str) -> None:
        """Remove the snapshot (and a partial copy of it), then clear its project's limits."""
        parent = self.root / SNAPSHOTS_DIR
        safe_child(parent, snapshot_directory)
        project_id = self._remove_copies(parent, snapshot_directory)
        if project_id and self.quota_state.accounting:
            self.quotas.set_limits(project_id, block_bytes=0, inodes=0)
        log.info('pool "%s": deleted snapshot %s', self.name, parent / snapshot_directory)

    def clone_volume(
        self,
        source: ContentRef,
        directory: str,
        capacity_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        """Volume `directory` as a copy of `source`, in a new project limited to the size."""
        safe_child(self._volumes, directory)
        path = self._content_path(source)
        return self._copy_into_project(path, self._volumes, directory, capacity_bytes, control)

    def _copy_into_project(
        self,
        source: Path,
        parent: Path,
        name: str,
        limit_bytes: int | None,
        control: CopyControl | None,
    ) -> CopyOutcome:
        """Copy `source` to `parent/name` inside a fresh project; a retry throws away what a
        crashed attempt left (keeping its project ID) and copies again."""
        if not os.path.isdir(source) or os.path.islink(source):
            raise NotFound(f"{source} does not exist in pool {self.name!r}")
        reuse = self._remove_copies(parent, name)
        staging = parent / f"{STAGING_PREFIX}{name}"
        try:
            os.mkdir(staging, 0o700)
        except OSError as exc:
            raise Internal(f"cannot create {staging}: {exc}") from exc
        project_id = self.project_ids.ensure(staging, reuse)
        if project_id and self.quota_state.accounting and limit_bytes is not None:
            self.quotas.set_limits(project_id, block_bytes=limit_bytes)
        result = self._copy(source, staging, STAGED, control)
        copied = self.project_ids.project_of(staging / STAGED)
        if copied != project_id:  # PROJINHERIT passes the project on to every new inode
            raise Internal(
                f"{staging / STAGED} is project {copied}, not {project_id}: the "
                "filesystem did not pass the project on; its files are not charged"
            )
        try:
            os.rename(staging / STAGED, parent / name)
            os.rmdir(staging)
            _layout.fsync_directory(parent)
        except OSError as exc:
            raise Internal(
                f"cannot move the copy {staging / STAGED} to {parent / name}: {exc}"
            ) from exc
        return CopyOutcome({PROJECT_KEY: project_id} if project_id else {}, result.data_bytes)

    def _remove_copies(self, parent: Path, name: str) -> int:
        """Remove `parent/name` and its staging folder; returns the project ID they had."""
        project_id = 0
        for leftover in (name, f"{STAGING_PREFIX}{name}"):
            path = parent / leftover
            if not os.path.lexists(path):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                project_id = project_id or self.project_ids.project_of(path)
            remove_tree(parent, leftover)
        return project_id
