"""Copy a directory tree with all its metadata, through directory fds, never following a symlink.

One walk serves two ways of moving file data: a reflink per file (sharevol.sys.reflink: metadata
only) and a real sparse copy (sharevol.sys.sparse_copy: bytes). Everything else is shared and
exact: sparse files stay sparse, hard links stay links, symlinks stay symlinks, and modes
(setuid included), owners, xattrs (ACLs are xattrs) and atime/mtime in ns are kept. Directory
times are set last, after their entries. A directory on another device (a mount, a nested btrfs
subvolume) becomes an empty directory with its metadata, as a btrfs snapshot shows it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sharevol.errors import Internal, ResourceExhausted
from sharevol.sys.copy_control import CopyCancelled, CopyControl, Gate

__all__ = [
    "CopyCancelled",
    "CopyControl",
    "CopyResult",
    "DataCopier",
    "Gate",
    "copy_tree",
    "data_bytes_of",
    "sync_filesystem",
]

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a file after the stat must not block the open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
_SKIPPED_XATTR_ERRORS = (errno.ENOTSUP, errno.EOPNOTSUPP)


DataCopier = Callable[[int, int, CopyControl | None], None]
"""Moves the data of one open regular file (source fd, new destination fd) and sets its size."""


@dataclass(frozen=True)
class CopyResult:
    """What a tree copy made: inodes created and data bytes (allocated in the source)."""

    inodes: int
    data_bytes: int


@dataclass
class _Frame:
    """One directory being copied: open fds on both sides and the entries still to copy."""

    src_fd: int
    dst_fd: int
    st: os.stat_result
    rel: str
    names: list[str] = field(default_factory=list)


def data_bytes_of(st: os.stat_result) -> int:
    """Bytes of data a regular file holds: its allocation, at most its size (holes are free)."""
    return min(st.st_size, st.st_blocks * 512)


def copy_tree(
    source: Path,
    parent: Path,
    name: str,
    copy_data: DataCopier,
    control: CopyControl | None = None,
) -> CopyResult:
    """Make `parent/name` (which must not exist) a copy of directory `source`.

    With a `control`, totals are counted first so progress can be reported, and the copy stops
    with CopyCancelled at the next file or chunk once it is cancelled. A failure leaves a partial
    tree for the caller to remove. Files that vanish while the walk runs are skipped (the source
    may be a live volume)."""
    try:
        src_top = _open_source(source, _DIR_FLAGS)
    except OSError as exc:
        raise Internal(f"cannot open {source}: {exc}") from exc
    frames: list[_Frame] = []
    parent_fd = -1
    try:
        device = os.fstat(src_top).st_dev
        if control is not None:
            control.set_total(_count_data(src_top, device, control))
        parent_fd = os.open(parent, _DIR_FLAGS)
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        dst_top = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        frames.append(_Frame(src_top, dst_top, os.fstat(src_top), "", _names(src_top)))
        src_top = -1
        walk = _Walk(dst_top, device, copy_data, control)
        while frames:
            frame = frames[-1]
            if not frame.names:
                frames.pop()
                _apply_metadata_fd(frame.src_fd, frame.dst_fd, frame.st)
                os.close(frame.src_fd)
                os.close(frame.dst_fd)
                continue
            child = walk.entry(frame, frame.names.pop())
            if child is not None:
                frames.append(child)
        return CopyResult(walk.inodes + 1, walk.data_bytes)
    except OSError as exc:
        where = exc.filename or source
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(f"no space left copying {source} to {parent / name}") from exc
        raise Internal(f"cannot copy {source} to {parent / name}: {where}: {exc}") from exc
    finally:
        for frame in frames:
            os.close(frame.src_fd)
            os.close(frame.dst_fd)
        if src_top >= 0:
            os.close(src_top)
        if parent_fd >= 0:
            os.close(parent_fd)


def _open_source(path: str | Path, flags: int, dir_fd: int | None = None) -> int:
    """Open something to copy with O_NOATIME where allowed (root, or the owner): copying a
    snapshot or a volume must not change it, atimes included."""
    try:
        return os.open(path, flags | _NOATIME, dir_fd=dir_fd)
    except PermissionError:
        return os.open(path, flags, dir_fd=dir_fd)


def _names(dir_fd: int) -> list[str]:
    """The entry names of a directory, in reverse order so `pop()` copies in listing order."""
    with os.scandir(dir_fd) as entries:
        names = [entry.name for entry in entries]
    names.reverse()
    return names


class _Walk:
    """The per-entry work of copy_tree, with the hard-link map and the counters."""

    def __init__(
        self, dst_top: int, device: int, copy_data: DataCopier, control: CopyControl | None
    ) -> None:
        self.dst_top = dst_top
        self.device = device
        self.copy_data = copy_data
        self.control = control
        self.links: dict[tuple[int, int], str] = {}
        self.inodes = 0
        self.data_bytes = 0

    def entry(self, frame: _Frame, name: str) -> _Frame | None:
        """Copy one entry of `frame`; returns a new frame for a directory to descend into."""
        if self.control is not None:
            self.control.checkpoint()
        rel = f"{frame.rel}{name}"
        try:
            st = os.stat(name, dir_fd=frame.src_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return self._directory(frame, name, rel, st)
        key = (st.st_dev, st.st_ino)
        first = self.links.get(key) if st.st_nlink > 1 else None
        if first is not None:
            os.link(first, name, src_dir_fd=self.dst_top, dst_dir_fd=frame.dst_fd,
                    follow_symlinks=False)  # fmt: skip
            return None
        if stat.S_ISREG(st.st_mode):
            if not self._file(frame, name, st):
                return None
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=frame.src_fd)
            os.symlink(target, name, dir_fd=frame.dst_fd)
            _apply_metadata_at(frame.src_fd, frame.dst_fd, name, st)
        else:  # FIFO, socket, character or block device
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=frame.dst_fd)
            _apply_metadata_at(frame.src_fd, frame.dst_fd, name, st)
        self.inodes += 1
        if st.st_nlink > 1:
            self.links[key] = rel
        return None

    def _directory(self, frame: _Frame, name: str, rel: str, st: os.stat_result) -> _Frame | None:
        os.mkdir(name, 0o700, dir_fd=frame.dst_fd)
        self.inodes += 1
        src_fd = _open_source(name, _DIR_FLAGS, frame.src_fd)
        try:
            dst_fd = os.open(name, _DIR_FLAGS, dir_fd=frame.dst_fd)
        except OSError:
            os.close(src_fd)
            raise
        if os.fstat(src_fd).st_dev != self.device:
            log.warning("not copying into %s: another filesystem or subvolume", rel)
            try:
                _apply_metadata_fd(src_fd, dst_fd, st)
            finally:
                os.close(src_fd)
                os.close(dst_fd)
            return None
        try:
            names = _names(src_fd)
        except OSError:
            os.close(src_fd)
            os.close(dst_fd)
            raise
        return _Frame(src_fd, dst_fd, st, f"{rel}/", names)

    def _file(self, frame: _Frame, name: str, st: os.stat_result) -> bool:
        """Copy one regular file; False when it vanished or changed kind meanwhile."""
        try:
            src_fd = _open_source(name, _READ_FLAGS, frame.src_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):  # gone, or now a symlink
                return False
            raise
        try:
            current = os.fstat(src_fd)
            if not stat.S_ISREG(current.st_mode):
                return False
            dst_fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=frame.dst_fd)
            try:
                self.copy_data(src_fd, dst_fd, self.control)
                _apply_metadata_fd(src_fd, dst_fd, current)
            finally:
                os.close(dst_fd)
            self.data_bytes += data_bytes_of(current)
        finally:
            os.close(src_fd)
        return True


def _count_data(top_fd: int, device: int, control: CopyControl) -> int:
    """Data bytes of every regular file below `top_fd` (each inode once, same device only)."""
    total = 0
    seen: set[int] = set()
    stack = [os.dup(top_fd)]
    try:
        while stack:
            fd = stack.pop()
            try:
                control.checkpoint()
                with os.scandir(fd) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                            try:
                                stack.append(_open_source(entry.name, _DIR_FLAGS, fd))
                            except FileNotFoundError:
                                continue
                        elif stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                            if st.st_nlink > 1:
                                seen.add(st.st_ino)
                            total += data_bytes_of(st)
            finally:
                os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return total


def _apply_metadata_fd(src_fd: int, dst_fd: int, st: os.stat_result) -> None:
    """Owner, then mode (chown clears setuid), then xattrs, then times, through open fds."""
    os.fchown(dst_fd, st.st_uid, st.st_gid)
    os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src_fd, dst_fd)
    os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _apply_metadata_at(src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> None:
    """The same for an entry that cannot be opened (symlink, FIFO, device), by name under its
    directory fd; xattrs go through /proc/self/fd so the path cannot be redirected."""
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst_dir, follow_symlinks=False)
    _copy_xattrs(f"/proc/self/fd/{src_dir}/{name}", f"/proc/self/fd/{dst_dir}/{name}")
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)


def _copy_xattrs(source: int | str, target: int | str) -> None:
    """Every extended attribute (user, trusted, security, POSIX ACLs); a namespace the
    filesystem does not support is skipped with a warning. Paths are never followed at the
    last component; fds cannot take follow_symlinks=False (Python refuses the pair)."""
    src_follow, dst_follow = isinstance(source, int), isinstance(target, int)
    try:
        names = os.listxattr(source, follow_symlinks=src_follow)
    except OSError as exc:
        if exc.errno in _SKIPPED_XATTR_ERRORS:
            return
        raise
    for attr in names:
        try:
            value = os.getxattr(source, attr, follow_symlinks=src_follow)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed meanwhile
                continue
            raise
        try:
            os.setxattr(target, attr, value, follow_symlinks=dst_follow)
        except OSError as exc:
            if exc.errno not in _SKIPPED_XATTR_ERRORS:
                raise
            log.warning("xattr %s not copied: %s", attr, exc.strerror)


_libc = ctypes.CDLL(None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """syncfs(2) on the filesystem holding `path`: a finished copy is on disk before its record
    says so (one call instead of an fsync per file)."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise Internal(f"syncfs of {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)
