"""The kernel's project quota interface as data: ioctl and quotactl command numbers and the
layouts of <linux/fs.h>, <linux/quota.h> and <linux/dqblk_xfs.h> (x86-64), packed from and
unpacked into `ProjectQuota` and `QuotaState`.

sharevol.sys.quota makes the calls with these and re-exports the two value types: callers
import them from there. A wrong offset here would set somebody else's limit, silently
(tests/unit/test_quota_structs.py pins every layout).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# FS_IOC_FSGETXATTR = _IOR('X', 31, struct fsxattr), FS_IOC_FSSETXATTR = _IOW('X', 32, ...).
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_XFLAG_PROJINHERIT = 0x00000200
FSXATTR = struct.Struct("=IIIII8s")  # xflags, extsize, nextents, projid, cowextsize, pad[8]

USRQUOTA, GRPQUOTA, PRJQUOTA = 0, 1, 2
SUBCMDSHIFT = 8

# Generic VFS quota commands (<linux/quota.h>).
Q_GETFMT = 0x800004
Q_GETINFO = 0x800005
Q_GETQUOTA = 0x800007
Q_SETQUOTA = 0x800008
Q_GETNEXTQUOTA = 0x800009
QIF_BLIMITS = 1 << 0
QIF_SPACE = 1 << 1
QIF_ILIMITS = 1 << 2
QIF_INODES = 1 << 3
QIF_DQBLKSIZE = 1024
"""dqb_bhardlimit counts 1 KiB quota blocks; dqb_curspace counts bytes."""


def xqm_cmd(number: int) -> int:
    """XQM_CMD(x): the XFS quota commands live in the ('X' << 8) range."""
    return (ord("X") << 8) + number


Q_XGETQUOTA = xqm_cmd(3)
Q_XSETQLIM = xqm_cmd(4)
Q_XGETQSTAT = xqm_cmd(5)
Q_XGETQSTATV = xqm_cmd(8)
Q_XGETNEXTQUOTA = xqm_cmd(9)

FS_DQUOT_VERSION = 1
FS_PROJ_QUOTA = 1 << 1
FS_DQ_ISOFT, FS_DQ_IHARD, FS_DQ_BSOFT, FS_DQ_BHARD = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_QUOTA_PDQ_ACCT, FS_QUOTA_PDQ_ENFD = 1 << 4, 1 << 5
FS_QSTATV_VERSION1 = 1
BASIC_BLOCK = 512
"""XFS quota block counts are in 512-byte basic blocks (BBs)."""

# struct fs_disk_quota, 112 bytes: version, flags, fieldmask, id, blk_hard, blk_soft, ino_hard,
# ino_soft, bcount, icount, itimer, btimer, iwarns, bwarns, itimer_hi, btimer_hi, rtbtimer_hi,
# padding2, rtb_hard, rtb_soft, rtbcount, rtbtimer, rtbwarns, padding3, padding4[8].
FS_DISK_QUOTA = struct.Struct("=bbHIQQQQQQiiHHbbbbQQQiHh8s")
# struct if_dqblk: bhard, bsoft, curspace, ihard, isoft, curinodes, btime, itime, valid (+pad).
IF_DQBLK = struct.Struct("=QQQQQQQQI4x")
IF_NEXTDQBLK = struct.Struct("=QQQQQQQQII")  # struct if_nextdqblk: if_dqblk, then dqb_id
# struct fs_quota_statv: version, pad1, flags, incoredqs, then 3 x fs_qfilestatv (ino, nblks,
# nextents, pad), btimelimit, itimelimit, rtbtimelimit, bwarnlimit, iwarnlimit, rtbwarnlimit,
# pad3, pad4, pad2[7].
FS_QUOTA_STATV = struct.Struct("=bBHI" + "QQII" * 3 + "iiiHHHHI" + "7Q")


def qcmd(command: int, quota_type: int) -> int:
    """QCMD(cmd, type): the first argument of quotactl(2), as the signed int C passes."""
    value = ((command << SUBCMDSHIFT) | (quota_type & 0x00FF)) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass(frozen=True)
class QuotaState:
    """Whether the filesystem accounts project usage and enforces project limits."""

    accounting: bool
    enforced: bool
    no_quota: bool = False
    """quotactl answered ENOSYS: no quota at all on this filesystem as mounted (an XFS without
    a quota mount option, an ext4 without the `quota` feature, or a kernel without quota)."""


@dataclass(frozen=True)
class ProjectQuota:
    """Usage and hard limits of one project; a limit of 0 means none."""

    project_id: int
    used_bytes: int
    used_inodes: int
    block_limit_bytes: int
    inode_limit: int

    @property
    def in_use(self) -> bool:
        """Anything charged to or configured for this project: it belongs to someone."""
        return bool(self.used_bytes or self.used_inodes or self.block_limit_bytes
                    or self.inode_limit)  # fmt: skip


def pack_xfs_limits(project_id: int, block_bytes: int | None, inodes: int | None) -> bytearray:
    """A fs_disk_quota that sets the hard (and clears the soft) limits asked for."""
    fieldmask = 0
    blocks = ino = 0
    if block_bytes is not None:
        fieldmask |= FS_DQ_BHARD | FS_DQ_BSOFT
        blocks = -(-block_bytes // BASIC_BLOCK)
    if inodes is not None:
        fieldmask |= FS_DQ_IHARD | FS_DQ_ISOFT
        ino = inodes
    return bytearray(
        FS_DISK_QUOTA.pack(
            FS_DQUOT_VERSION, FS_PROJ_QUOTA, fieldmask, project_id, blocks, 0, ino, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b"",
        )
    )  # fmt: skip


def unpack_xfs_quota(project_id: int, buf: bytes | bytearray) -> ProjectQuota:
    fields = FS_DISK_QUOTA.unpack(buf)
    blk_hard, _blk_soft, ino_hard, _ino_soft, bcount, icount = fields[4:10]
    return ProjectQuota(project_id, bcount * BASIC_BLOCK, icount, blk_hard * BASIC_BLOCK, ino_hard)


def pack_vfs_limits(block_bytes: int | None, inodes: int | None) -> bytearray:
    """An if_dqblk that sets the hard (and clears the soft) limits asked for."""
    valid = 0
    blocks = ino = 0
    if block_bytes is not None:
        valid |= QIF_BLIMITS
        blocks = -(-block_bytes // QIF_DQBLKSIZE)
    if inodes is not None:
        valid |= QIF_ILIMITS
        ino = inodes
    return bytearray(IF_DQBLK.pack(blocks, 0, 0, ino, 0, 0, 0, 0, valid))


def unpack_vfs_quota(project_id: int, buf: bytes | bytearray) -> ProjectQuota:
    bhard, _bsoft, curspace, ihard, _isoft, curinodes, _bt, _it, _valid = IF_DQBLK.unpack(buf)
    return ProjectQuota(project_id, curspace, curinodes, bhard * QIF_DQBLKSIZE, ihard)


def unpack_statv(buf: bytes | bytearray) -> QuotaState:
    flags = FS_QUOTA_STATV.unpack(buf)[2]
    return QuotaState(bool(flags & FS_QUOTA_PDQ_ACCT), bool(flags & FS_QUOTA_PDQ_ENFD))
