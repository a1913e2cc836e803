"""What each filesystem of `sharevol up`'s pool image needs: tools, mkfs, mount options, and how
it grows online. btrfs enforces sizes with qgroups; XFS and ext4 with project quotas, which the
kernel must support (the mount with `-o prjquota` fails where it does not)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sharevol.pools.ext4 import MKFS_OPTIONS

FsName = Literal["btrfs", "xfs", "ext4"]
FS_NAMES: tuple[FsName, ...] = ("btrfs", "xfs", "ext4")
MiB = 1024 * 1024


@dataclass(frozen=True)
class EmbeddedFs:
    """One filesystem the embedded pool can be made of."""

    name: FsName
    tools: tuple[tuple[str, str], ...]
    """(tool, Debian package) besides losetup and blkid."""
    mkfs: tuple[str, ...]
    """argv before the device; never forces: mkfs refuses a signature blkid missed."""
    mount_options: tuple[str, ...]
    min_size: int
    kernel_needs: str = ""
    """What the kernel must be built with for the pool's quotas (for messages)."""

    def grow_commands(self, device: str, mount_point: str) -> list[list[str]]:
        """Commands run after every mount: quota on (btrfs) and an online grow to the image's
        size, which is a no-op at full size; idempotent."""
        if self.name == "btrfs":
            return [
                ["btrfs", "quota", "enable", mount_point],
                ["btrfs", "filesystem", "resize", "max", mount_point],
            ]
        if self.name == "xfs":
            return [["xfs_growfs", mount_point]]
        return [["resize2fs", device]]


FILESYSTEMS: dict[FsName, EmbeddedFs] = {
    "btrfs": EmbeddedFs(
        "btrfs",
        (("mkfs.btrfs", "btrfs-progs"), ("btrfs", "btrfs-progs")),
        ("mkfs.btrfs", "-q", "-L", "sharevol"),
        (),
        256 * MiB,  # btrfs needs ~120 MiB for itself
    ),
    "xfs": EmbeddedFs(
        "xfs",
        (("mkfs.xfs", "xfsprogs"), ("xfs_growfs", "xfsprogs")),
        ("mkfs.xfs", "-q", "-L", "sharevol"),
        ("prjquota",),
        300 * MiB,  # mkfs.xfs refuses smaller filesystems
        "XFS quota support (CONFIG_XFS_QUOTA)",
    ),
    "ext4": EmbeddedFs(
        "ext4",
        (("mkfs.ext4", "e2fsprogs"), ("resize2fs", "e2fsprogs")),
        ("mkfs.ext4", "-q", "-L", "sharevol", *MKFS_OPTIONS),
        ("prjquota",),
        256 * MiB,
        "ext4 quota support (CONFIG_QUOTA and CONFIG_QFMT_V2)",
    ),
}
