"""The folder layout every directory-based pool shares: `volumes/`, `archive/`, free space.

Kept in one place so the btrfs and plain pools agree on where things live and on how an
archive move converges after a crash.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sharevol.errors import FailedPrecondition, Internal, NotFound
from sharevol.pools.base import ARCHIVE_DIR, SNAPSHOTS_DIR, VOLUMES_DIR, PoolSpace, safe_child
from sharevol.sys.statfs import statvfs_with_deadline

log = logging.getLogger(__name__)

INODE_BYTES_ESTIMATE = 4096
"""Filesystems that allocate inodes on demand (btrfs, some NFS servers) report no inode total;
one more inode per 4 KiB of free space is the estimate offered instead."""


def require_directory(name: str, root: Path) -> None:
    """FailedPrecondition unless the pool root exists and is a directory."""
    if not root.is_dir():
        raise FailedPrecondition(
            f'pool "{name}": {root} is not a directory; mount the pool\'s filesystem there '
            "or fix the path in the pool configuration"
        )


def make_folders(name: str, root: Path) -> None:
    """Create `volumes/`, `archive/` and `snapshots/` (idempotent); refuse symlinks planted in
    their place."""
    for folder in (root / VOLUMES_DIR, root / ARCHIVE_DIR, root / SNAPSHOTS_DIR):
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise FailedPrecondition(f'pool "{name}": cannot create {folder}: {exc}') from exc
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise FailedPrecondition(
                f'pool "{name}": {folder} is not a plain directory (a symlink or file); '
                "move it away"
            )


def fsync_directory(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def archive(root: Path, directory: str, archive_name: str) -> None:
    """Move `volumes/<directory>` to `archive/<archive_name>` (a rename: data and limits kept).

    A retry after the rename finds the archive in place and does nothing."""
    volumes, archived = root / VOLUMES_DIR, root / ARCHIVE_DIR
    source = safe_child(volumes, directory)
    target = safe_child(archived, archive_name)
    if not os.path.lexists(source):
        if os.path.lexists(target):
            return
        raise NotFound(f"volume folder {source} does not exist; nothing to archive")
    if os.path.lexists(target):
        raise Internal(f"cannot archive {source}: {target} already exists")
    try:
        os.rename(source, target)
        fsync_directory(archived)
        fsync_directory(volumes)
    except OSError as exc:
        raise Internal(f"cannot archive {source} to {target}: {exc}") from exc
    log.info("archived %s as %s", source, target)


def space(root: Path, timeout: float) -> PoolSpace:
    """Size and free bytes (for unprivileged writers) of the filesystem under `root`."""
    st = statvfs_with_deadline(root, timeout)
    return PoolSpace(total_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize)

