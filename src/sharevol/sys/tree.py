"""Walking and removing a directory tree through directory fds, never following a symlink.

Every step opens the next directory relative to the fd of its parent with O_NOFOLLOW, so a
symlink (even one swapped in during the walk) can never lead out of the tree, and a directory
on another device (a mount, a btrfs subvolume) is never entered. This is what makes deleting a
plain-pool volume, whose contents a tenant controls, safe.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from sharevol.errors import FailedPrecondition, Internal
from sharevol.sys.statfs import call_with_deadline, mounts_under

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class TreeUsage:
    """Space and inodes a tree holds: each inode once (hard links), symlinks not followed."""

    used_bytes: int
    used_inodes: int


@dataclass
class _Frame:
    """One open directory of the walk and the subdirectories still to visit in it."""

    fd: int
    name: str
    path: str
    pending: list[str] | None = None
    skipped: list[str] = field(default_factory=list)


def _open_child(parent_fd: int, name: str, device: int, path: str) -> int:
    """Open directory `name` under `parent_fd`; refuse symlinks and other devices."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    if os.fstat(fd).st_dev != device:
        os.close(fd)
        raise FailedPrecondition(
            f"{path} is another filesystem or btrfs subvolume inside the tree; remove it by hand"
        )
    return fd


def remove_tree(parent: Path, name: str) -> None:
    """Delete directory `parent/name` and everything below it, staying on its device.

    Refuses (FailedPrecondition) when anything is mounted at or below it. A failure half way
    leaves a smaller tree; calling again finishes the job."""
    top = parent / name
    mounted = mounts_under(top)
    if mounted:
        raise FailedPrecondition(f"{top} has mounts at {', '.join(mounted)}; unmount them first")
    try:
        parent_fd = os.open(parent, _DIR_FLAGS)
    except OSError as exc:
        raise Internal(f"cannot open {parent}: {exc}") from exc
    stack: list[_Frame] = []
    try:
        try:
            top_fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        device = os.fstat(top_fd).st_dev
        stack.append(_Frame(top_fd, name, str(top)))
        while stack:
            frame = stack[-1]
            if frame.pending is None:
                frame.pending = _unlink_files(frame)
            if frame.pending:
                child = frame.pending.pop()
                path = f"{frame.path}/{child}"
                stack.append(_Frame(_open_child(frame.fd, child, device, path), child, path))
                continue
            stack.pop()
            os.close(frame.fd)
            os.rmdir(frame.name, dir_fd=stack[-1].fd if stack else parent_fd)
    except OSError as exc:
        raise Internal(f"cannot delete {top}: {exc}") from exc
    finally:
        for frame in stack:
            os.close(frame.fd)
        os.close(parent_fd)


def _unlink_files(frame: _Frame) -> list[str]:
    """Unlink every non-directory in the frame's directory; return its subdirectory names."""
    subdirs: list[str] = []
    with os.scandir(frame.fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=frame.fd)
    return subdirs


def tree_usage(path: Path, timeout: float) -> TreeUsage:
    """Bytes (st_blocks * 512) and inodes under `path`, not following symlinks nor entering
    mounts or other devices; Internal if the walk takes longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    return call_with_deadline(lambda: _walk(path, deadline), timeout, f"usage walk of {path}")


def _walk(path: Path, deadline: float) -> TreeUsage:
    """The walk of `tree_usage`, run in a helper thread; checks the deadline as it goes."""
    mounted = set(mounts_under(path)) - {os.path.realpath(path)}
    try:
        top_fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise Internal(f"cannot open {path}: {exc}") from exc
    top = os.fstat(top_fd)
    seen: set[int] = set()
    used_bytes, used_inodes = top.st_blocks * 512, 1
    stack = [_Frame(top_fd, "", os.path.realpath(path))]
    try:
        while stack:
            frame = stack.pop()
            try:
                with os.scandir(frame.fd) as entries:
                    for entry in entries:
                        if time.monotonic() > deadline:
                            raise Internal(f"usage walk of {path} ran out of time; too many files")
                        st = entry.stat(follow_symlinks=False)
                        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                            if st.st_ino in seen:
                                continue
                            seen.add(st.st_ino)
                        child_path = f"{frame.path}/{entry.name}"
                        if stat.S_ISDIR(st.st_mode):
                            if st.st_dev != top.st_dev or child_path in mounted:
                                continue
                            fd = os.open(entry.name, _DIR_FLAGS, dir_fd=frame.fd)
                            stack.append(_Frame(fd, entry.name, child_path))
                        used_bytes += st.st_blocks * 512
                        used_inodes += 1
            finally:
                os.close(frame.fd)
    except OSError as exc:
        raise Internal(f"usage walk of {path} failed: {exc}") from exc
    finally:
        for frame in stack:
            os.close(frame.fd)
    return TreeUsage(used_bytes, used_inodes)
