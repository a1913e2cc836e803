"""The btrfs ioctl boundary that sys.btrfs (subvolume and qgroup operations) and sys.btrfs_tree
(tree search) share: request numbers and keys of <linux/btrfs.h> and <linux/btrfs_tree.h>, and
the one way to call an ioctl, which turns every OSError into `BtrfsError` (an Internal) that
keeps the errno, so callers can branch on ENOENT/EEXIST.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from sharevol.errors import Internal

# ioctl request numbers: _IOC(dir, 0x94, nr, size).
IOC_SYNC = 0x00009408  # _IO(8)
IOC_SUBVOL_CREATE = 0x5000940E  # _IOW(14, btrfs_ioctl_vol_args: 4096)
IOC_SNAP_DESTROY = 0x5000940F  # _IOW(15, btrfs_ioctl_vol_args: 4096)
IOC_INO_LOOKUP = 0xD0009412  # _IOWR(18, btrfs_ioctl_ino_lookup_args: 4096)
IOC_TREE_SEARCH_V2 = 0xC0709411  # _IOWR(17, btrfs_ioctl_search_args_v2 header: 112)
IOC_SNAP_CREATE_V2 = 0x50009417  # _IOW(23, btrfs_ioctl_vol_args_v2: 4096)
IOC_QGROUP_CREATE = 0x4010942A  # _IOW(42, btrfs_ioctl_qgroup_create_args: 16)
IOC_QGROUP_LIMIT = 0x8030942B  # _IOR(43, btrfs_ioctl_qgroup_limit_args: 48)

FIRST_FREE_OBJECTID = 256
"""Inode number of every subvolume's root directory, and the first subvolume id."""
LAST_FREE_OBJECTID = 2**64 - 256
ROOT_TREE_OBJECTID = 1
QUOTA_TREE_OBJECTID = 8
INODE_ITEM_KEY = 1
ROOT_ITEM_KEY = 132
ROOT_REF_KEY = 156
QGROUP_STATUS_KEY = 240
QGROUP_INFO_KEY = 242
QGROUP_LIMIT_KEY = 244
QGROUP_LIMIT_MAX_RFER = 1
SUBVOL_RDONLY = 1 << 1
U64_MAX = 2**64 - 1

INO_LOOKUP = struct.Struct("=QQ4080s")  # treeid, objectid, name
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BtrfsError(Internal):
    """A btrfs ioctl failed; `errno` says how (ENOENT, EEXIST, ENOTEMPTY, EDQUOT...)."""

    def __init__(self, what: str, path: Path | str, exc: OSError) -> None:
        self.errno = exc.errno
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        super().__init__(f"btrfs {what} on {path} failed: [{code}] {exc.strerror}")


@contextlib.contextmanager
def open_dir(path: Path, what: str) -> Iterator[int]:
    """An O_DIRECTORY fd on `path` (symlinks in the last component are not followed)."""
    try:
        fd = os.open(path, DIR_FLAGS)
    except OSError as exc:
        raise BtrfsError(what, path, exc) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def ioctl(fd: int, request: int, arg: bytearray, what: str, path: Path | str) -> None:
    """fcntl.ioctl on a mutable buffer, OSError turned into BtrfsError."""
    try:
        fcntl.ioctl(fd, request, arg, True)
    except OSError as exc:
        raise BtrfsError(what, path, exc) from exc
