"""Reflink copies: FICLONE per file, so a copy of a tree costs metadata, not data.

On XFS (reflink=1) and btrfs the clone shares the source's extents until either side writes;
holes stay holes because extents are cloned as they are. The tree walk and the metadata
(links, symlinks, modes, owners, xattrs, times) are sharevol.sys.tree_copy's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from sharevol.sys.sparse_copy import copy_file_sparse
from sharevol.sys.tree_copy import CopyControl, CopyResult, copy_tree

log = logging.getLogger(__name__)

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_FALLBACK_ERRORS = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ETXTBSY)
"""Per-file reasons a clone can fail on a filesystem that otherwise reflinks (btrfs: NOCOW
files; a swap file): such a file is copied for real instead."""


def clone_file(src_fd: int, dst_fd: int) -> None:
    """Make `dst_fd` share every extent of `src_fd` (same size, same holes)."""
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


def reflink_file_data(src_fd: int, dst_fd: int, control: CopyControl | None = None) -> None:
    """Clone the file, or copy it for real when this one file cannot be cloned."""
    try:
        clone_file(src_fd, dst_fd)
    except OSError as exc:
        if exc.errno not in _FALLBACK_ERRORS:
            raise
        log.debug("FICLONE failed (%s); copying this file for real", exc.strerror)
        os.ftruncate(dst_fd, 0)
        copy_file_sparse(src_fd, dst_fd, control)


def reflink_tree(
    source: Path, parent: Path, name: str, control: CopyControl | None = None
) -> CopyResult:
    """Make `parent/name` a reflink copy of directory `source` with all metadata."""
    return copy_tree(source, parent, name, reflink_file_data, control)


def supports_reflink(directory: Path) -> bool:
    """Whether files in `directory` can be cloned: try FICLONE on two temporary files.

    Asked once when a pool starts; the probe files are dot names, which no volume can have."""
    base = f".reflink-probe-{os.getpid()}"
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        src = os.open(f"{base}-a", flags, 0o600, dir_fd=dir_fd)
        try:
            dst = os.open(f"{base}-b", flags, 0o600, dir_fd=dir_fd)
            try:
                os.write(src, b"\0" * 4096)
                clone_file(src, dst)
                return True
            except OSError as exc:
                log.debug("no reflink in %s: %s", directory, exc.strerror)
                return False
            finally:
                os.close(dst)
        finally:
            os.close(src)
            for suffix in ("a", "b"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{base}-{suffix}", dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
