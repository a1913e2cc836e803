"""Filesystems inside image files: make them, read their size, grow them (ext4 and XFS).

Each tool runs through the runner with a timeout. mkfs is only ever pointed at a file the caller
has just created itself (the `-F` of mkfs.ext4 is needed because the target is a regular file).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sharevol.errors import CommandFailed, InvalidArgument
from sharevol.sys.runner import CommandRunner

MKFS_TIMEOUT = 300.0
FSCK_TIMEOUT = 600.0
RESIZE_TIMEOUT = 600.0
QUERY_TIMEOUT = 30.0

FS_TYPES = ("ext4", "xfs")

_NOT_PERMITTED = ("Permission denied", "Operation not permitted")


def make_filesystem(runner: CommandRunner, path: Path, fs_type: str) -> None:
    """Format the freshly created (all-zero, sparse) image at `path`.

    ext4: `assume_storage_prezeroed` keeps the image sparse (no inode tables or journal
    written: 2 MiB of a 4 GiB image instead of 67 MiB) and stops the lazy-init thread from
    filling it later. XFS writes its log (64 MiB at most sizes) whatever the options."""
    target = os.fspath(path)
    if fs_type == "ext4":
        argv = ["mkfs.ext4", "-F", "-q", "-E", "nodiscard,assume_storage_prezeroed=1", target]
    elif fs_type == "xfs":
        argv = ["mkfs.xfs", "-q", "-K", target]
    else:
        raise InvalidArgument(f"unsupported filesystem {fs_type!r}: use {' or '.join(FS_TYPES)}")
    runner.run(argv, timeout=MKFS_TIMEOUT)


@dataclass(frozen=True)
class Ext4Geometry:
    """The fields of an ext4 superblock that decide whether (and how far) it can grow."""

    block_count: int
    block_size: int
    first_block: int
    blocks_per_group: int
    inode_blocks_per_group: int
    reserved_gdt_blocks: int

    @property
    def size_bytes(self) -> int:
        return self.block_count * self.block_size


_FIELDS = {
    "Block count": "block_count",
    "Block size": "block_size",
    "First block": "first_block",
    "Blocks per group": "blocks_per_group",
    "Inode blocks per group": "inode_blocks_per_group",
    "Reserved GDT blocks": "reserved_gdt_blocks",
}
_LINE = re.compile(r"^([A-Za-z ]+):\s+([0-9]+)\s*$")


def parse_dumpe2fs(text: str) -> Ext4Geometry:
    """The geometry from `dumpe2fs -h` output."""
    values: dict[str, int] = {"reserved_gdt_blocks": 0}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match and match.group(1) in _FIELDS:
            values[_FIELDS[match.group(1)]] = int(match.group(2))
    missing = [name for name in _FIELDS.values() if name not in values]
    if missing:
        raise ValueError(f"dumpe2fs output lacks {', '.join(missing)}")
    return Ext4Geometry(**values)


def ext4_geometry(runner: CommandRunner, path: str | Path) -> Ext4Geometry:
    """Read the superblock of the ext4 filesystem in `path` (an image file or a device)."""
    result = runner.run(["dumpe2fs", "-h", os.fspath(path)], timeout=QUERY_TIMEOUT)
    try:
        return parse_dumpe2fs(result.stdout)
    except ValueError as exc:
        raise CommandFailed(list(result.argv), result.returncode, str(exc)) from exc


def ext4_would_grow(geometry: Ext4Geometry, device_bytes: int) -> bool:
    """Whether resize2fs would make the filesystem bigger on a device of `device_bytes`.

    resize2fs (like mke2fs) drops a last block group too small to hold its own metadata plus
    50 blocks, so a device a little larger than the filesystem may leave nothing to do; asking
    the same question here avoids an fsck on every stage of such a volume."""
    blocks = device_bytes // geometry.block_size
    if blocks <= geometry.block_count:
        return False
    overhead = 2 + geometry.inode_blocks_per_group + 1 + geometry.reserved_gdt_blocks
    remainder = (blocks - geometry.first_block) % geometry.blocks_per_group
    if remainder and remainder < overhead + 50:
        blocks -= remainder
    return blocks > geometry.block_count


def check_ext4(runner: CommandRunner, path: str | Path) -> None:
    """`e2fsck -f -p`: exit 0 (clean) and 1 (fixed) are fine; anything else fails."""
    argv = ["e2fsck", "-f", "-p", os.fspath(path)]
    result = runner.run(argv, timeout=FSCK_TIMEOUT, check=False)
    if result.returncode not in (0, 1):
        raise CommandFailed(argv, result.returncode, result.stderr or result.stdout)


def resize_ext4_offline(runner: CommandRunner, path: str | Path) -> None:
    """Check, then grow an UNMOUNTED ext4 filesystem to the size of its device or file."""
    check_ext4(runner, path)
    runner.run(["resize2fs", os.fspath(path)], timeout=RESIZE_TIMEOUT)


def resize_ext4_online(runner: CommandRunner, device: str) -> bool:
    """Grow a MOUNTED ext4 filesystem; False when the kernel refuses for lack of privilege
    (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE, which some containers drop)."""
    argv = ["resize2fs", device]
    result = runner.run(argv, timeout=RESIZE_TIMEOUT, check=False)
    if result.returncode == 0:
        return True
    output = result.stderr + result.stdout
    if any(marker in output for marker in _NOT_PERMITTED):
        return False
    raise CommandFailed(argv, result.returncode, output)


def grow_xfs(runner: CommandRunner, mount_point: str | Path) -> None:
    """Grow a mounted XFS to its device's size (a no-op when it already fills the device)."""
    runner.run(["xfs_growfs", "-d", os.fspath(mount_point)], timeout=RESIZE_TIMEOUT)
