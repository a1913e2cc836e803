"""Sparse image files: made with O_EXCL and ftruncate (no data written), grown by ftruncate,
optionally marked NOCOW on btrfs. Nothing here ever shrinks or overwrites a file."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from sharevol.errors import Internal

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000
"""chattr +C. On btrfs an overwrite of a NOCOW file's block is done in place, so a rewritten
image keeps referencing its own extents instead of whole old extents of which it uses a part."""

_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL)


def set_nocow(fd: int) -> bool:
    """Mark an EMPTY file NOCOW; False when the filesystem has no such flag (XFS, ext4, NFS)."""
    buf = bytearray(4)  # the kernel reads and writes an int, whatever the ioctl number says
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = struct.unpack("=i", buf)[0] | FS_NOCOW_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytearray(struct.pack("=i", flags)))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise Internal(f"cannot mark image file NOCOW: {exc.strerror}") from exc
    return True


def is_nocow(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(4)
        try:
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                return False
            raise
        return bool(struct.unpack("=i", buf)[0] & FS_NOCOW_FL)
    finally:
        os.close(fd)


def create_sparse(path: Path, size_bytes: int, *, nocow: bool) -> None:
    """Create `path` (it must not exist) as a sparse file of `size_bytes`, synced to disk."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise Internal(f"cannot create image file {path}: {exc.strerror}") from exc
    try:
        if nocow:
            set_nocow(fd)
        os.ftruncate(fd, size_bytes)
        os.fsync(fd)
    except OSError as exc:
        raise Internal(f"cannot size image file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def grow(path: Path, size_bytes: int) -> int:
    """Grow `path` to at least `size_bytes` (never shrink it); returns its size afterwards."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise Internal(f"cannot open image file {path}: {exc.strerror}") from exc
    try:
        current = os.fstat(fd).st_size
        if current < size_bytes:
            os.ftruncate(fd, size_bytes)
            os.fsync(fd)
            return size_bytes
        return current
    except OSError as exc:
        raise Internal(f"cannot grow image file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
