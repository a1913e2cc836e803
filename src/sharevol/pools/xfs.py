"""The XFS pool: a directory per volume with its own project quota (hard block limit = size).

The filesystem must be mounted with `-o prjquota` (XFS turns quotas on only at mount time).
Writes past a volume's size fail with ENOSPC (XFS reports ENOSPC, not EDQUOT, for project
quota), and statfs of a volume directory reports its limit, so `df` inside a volume is right.
"""

from __future__ import annotations

from sharevol.pools._project import ProjectQuotaPool
from sharevol.sys.quota import QuotaState


class XfsPool(ProjectQuotaPool):
    """Volumes as XFS directories with project quotas (Q_XSETQLIM, in 512-byte blocks)."""

    kind = "xfs"
    fs_type = "xfs"
    interface = "xfs"

    def quota_off_message(self, state: QuotaState) -> str:
        if state.accounting:
            return (
                f'pool "{self.name}" at {self.root} has quotas off (project quota is accounted '
                "but not enforced, e.g. mounted with pqnoenforce): remount it with -o prjquota"
            )
        return (
            f'pool "{self.name}" at {self.root} has quotas off: mount it with -o prjquota '
            "(if that mount fails, this kernel lacks XFS quota support, CONFIG_XFS_QUOTA)"
        )
