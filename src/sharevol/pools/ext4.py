"""The ext4 pool: a directory per volume with its own project quota (hard block limit = size).

The filesystem needs the `quota` and `project` features and the `-o prjquota` mount option:
    mkfs.ext4 -O quota,project -E quotatype=prjquota DEVICE
    (or, unmounted: tune2fs -O quota,project -Q prjquota DEVICE)
    mount -o prjquota DEVICE POOL
Writes past a volume's size fail with EDQUOT. ext4 lets a process with CAP_SYS_RESOURCE (root
on the host) write past the hard limit; containers do not get that capability by default.
"""

from __future__ import annotations

from sharevol.pools._project import ProjectQuotaPool
from sharevol.sys.quota import QuotaState

MKFS_OPTIONS = ("-O", "quota,project", "-E", "quotatype=prjquota")
"""What `mkfs.ext4` needs for a pool (the `project` feature alone is not enough)."""


class Ext4Pool(ProjectQuotaPool):
    """Volumes as ext4 directories with project quotas (VFS quotactl Q_SETQUOTA, PRJQUOTA)."""

    kind = "ext4"
    fs_type = "ext4"
    interface = "vfs"

    def quota_off_message(self, state: QuotaState) -> str:
        if state.accounting:
            return f'pool "{self.name}" at {self.root} has quotas off: mount it with -o prjquota'
        return (
            f'pool "{self.name}" at {self.root} has quotas off: its ext4 needs the quota and '
            "project features (mkfs.ext4 -O quota,project -E quotatype=prjquota, or unmounted: "
            "tune2fs -O quota,project -Q prjquota DEVICE) and a mount with -o prjquota"
        )
