"""Visit every directory and regular file of a tree through open fds, never following a symlink.

What `xfs_quota -x -c 'project -s'` does to a directory tree needs an fd on each inode it
changes. Opening by path would follow a symlink that a tenant swapped in for a directory and
leave the volume; so, as in sharevol.sys.tree, each step opens the next name relative to its
parent's fd with O_NOFOLLOW, and no mount point nor other device is entered. Symlinks,
devices, FIFOs and sockets are skipped, as xfs_quota skips them: opening a device or a FIFO
has side effects, and their inodes hold no data blocks.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from sharevol.errors import Internal
from sharevol.sys.statfs import mounts_under

Visit = Callable[[int, str, bool], None]
"""visit(fd, path for messages, is_directory): called once for each inode, with an open fd."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def visit_tree(path: Path, visit: Visit, timeout: float) -> int:
    """Call `visit` on `path` itself, then on every directory and regular file below it on
    the same device; returns how many inodes were visited. Internal when the walk takes
    longer than `timeout` seconds (what was visited stays visited: call again to finish)."""
    deadline = time.monotonic() + timeout
    root = os.path.realpath(path)
    mounted = set(mounts_under(path)) - {root}
    try:
        top = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise Internal(f"cannot open {path}: {exc}") from exc
    device = os.fstat(top).st_dev
    stack: list[tuple[int, str]] = [(top, root)]
    visited = 0
    try:
        visit(top, root, True)
        visited += 1
        while stack:
            fd, where = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    names = [entry.name for entry in entries]
                for name in names:
                    if time.monotonic() > deadline:
                        raise Internal(
                            f"the walk of {path} ran out of time after {visited} inodes "
                            f"({timeout:g}s); run it again to go on"
                        )
                    child_path = f"{where}/{name}"
                    child = None if child_path in mounted else _open(fd, name, device)
                    if child is None:
                        continue
                    child_fd, is_dir = child
                    try:
                        visit(child_fd, child_path, is_dir)
                        visited += 1
                    except BaseException:
                        os.close(child_fd)
                        raise
                    if is_dir:
                        stack.append((child_fd, child_path))
                    else:
                        os.close(child_fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise Internal(f"the walk of {path} failed: {exc}") from exc
    finally:
        for fd, _where in stack:
            os.close(fd)
    return visited


def _open(parent_fd: int, name: str, device: int) -> tuple[int, bool] | None:
    """An fd on `name` and whether it is a directory; None for what is skipped (symlinks,
    special files, other devices, names removed since the listing)."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if st.st_dev != device or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return None
    flags = _DIR_FLAGS if stat.S_ISDIR(st.st_mode) else _FILE_FLAGS
    try:
        fd = os.open(name, flags, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return None  # removed or swapped for a symlink since the stat: not ours to visit
        raise
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)  # swapped for another inode since the stat
        return None
    return fd, stat.S_ISDIR(opened.st_mode)
