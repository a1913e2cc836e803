"""The quotactl and fsxattr layouts, pinned against <linux/dqblk_xfs.h>, <linux/quota.h> and
<linux/fs.h> (x86-64): a wrong offset here would set somebody else's limit, silently."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from sharevol.errors import Internal
from sharevol.sys import quota
from sharevol.sys import quota_structs as structs
from sharevol.sys.mounts import MountEntry

MiB = 1024 * 1024


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    """_IOC() of <asm-generic/ioctl.h>: dir << 30 | size << 16 | type << 8 | nr."""
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | number


def test_fsxattr_ioctl_numbers_are_ior_and_iow_of_the_28_byte_struct() -> None:
    assert structs.FSXATTR.size == 28
    assert _ioc(2, "X", 31, 28) == structs.FS_IOC_FSGETXATTR == 0x801C581F
    assert _ioc(1, "X", 32, 28) == structs.FS_IOC_FSSETXATTR == 0x401C5820


def test_struct_sizes_match_the_kernel_headers() -> None:
    assert structs.FS_DISK_QUOTA.size == 112
    assert structs.IF_DQBLK.size == 72  # 8 u64 + u32, padded to 8
    assert structs.FS_QUOTA_STATV.size == 160


@pytest.mark.parametrize(
    ("command", "quota_type", "expected"),
    [
        (structs.Q_XSETQLIM, structs.PRJQUOTA, 0x00580402),
        (structs.Q_XGETQUOTA, structs.PRJQUOTA, 0x00580302),
        (structs.Q_XGETQSTATV, structs.PRJQUOTA, 0x00580802),
        (structs.Q_GETQUOTA, structs.PRJQUOTA, 0x80000702 - 2**32),
        (structs.Q_SETQUOTA, structs.PRJQUOTA, 0x80000802 - 2**32),
        (structs.Q_GETINFO, structs.USRQUOTA, 0x80000500 - 2**32),
    ],
)
def test_qcmd_is_the_kernel_value_as_a_signed_int(
    command: int, quota_type: int, expected: int
) -> None:
    assert structs.qcmd(command, quota_type) == expected
    assert -(2**31) <= structs.qcmd(command, quota_type) < 2**31


def test_xfs_commands_are_in_the_x_range() -> None:
    x_base = ord("X") << 8
    assert (
        x_base + 3,
        x_base + 4,
        x_base + 8,
    ) == (structs.Q_XGETQUOTA, structs.Q_XSETQLIM, structs.Q_XGETQSTATV)


def test_xfs_limits_put_the_hard_block_limit_at_offset_8_in_basic_blocks() -> None:
    buf = structs.pack_xfs_limits(1_000_007, 100 * MiB, None)

    version, flags, fieldmask, project_id = struct.unpack_from("=bbHI", buf, 0)
    assert (version, flags, project_id) == (1, structs.FS_PROJ_QUOTA, 1_000_007)
    assert fieldmask == structs.FS_DQ_BHARD | structs.FS_DQ_BSOFT
    assert struct.unpack_from("=QQ", buf, 8) == (100 * MiB // 512, 0)  # hard, soft (cleared)
    assert struct.unpack_from("=Q", buf, 72) == (0,)  # d_rtb_hardlimit untouched


def test_xfs_limits_round_a_size_up_to_whole_basic_blocks() -> None:
    buf = structs.pack_xfs_limits(5, 513, None)

    assert struct.unpack_from("=Q", buf, 8) == (2,)


def test_xfs_inode_limit_alone_leaves_the_block_fields_out_of_the_mask() -> None:
    buf = structs.pack_xfs_limits(5, None, 1000)

    fieldmask = struct.unpack_from("=H", buf, 2)[0]
    assert fieldmask == structs.FS_DQ_IHARD | structs.FS_DQ_ISOFT
    assert struct.unpack_from("=QQQQ", buf, 8) == (0, 0, 1000, 0)


def test_xfs_quota_reads_usage_from_bcount_at_40_and_icount_at_48() -> None:
    buf = bytearray(112)
    struct.pack_into("=QQQQQQ", buf, 8, 2048, 0, 70, 0, 300, 12)  # limits, bcount, icount

    got = structs.unpack_xfs_quota(9, buf)

    assert got == structs.ProjectQuota(9, 300 * 512, 12, MiB, 70)
    assert got.in_use


def test_an_empty_project_is_not_in_use() -> None:
    assert not structs.ProjectQuota(9, 0, 0, 0, 0).in_use
    assert structs.ProjectQuota(9, 0, 0, 0, 5).in_use  # a limit alone means someone set it


def test_vfs_limits_are_in_1_kib_quota_blocks_with_the_valid_bits() -> None:
    buf = structs.pack_vfs_limits(100 * MiB + 1, 50)

    bhard, bsoft, curspace, ihard, isoft, curinodes, _bt, _it, valid = structs.IF_DQBLK.unpack(buf)
    assert (bhard, bsoft, ihard, isoft) == (100 * 1024 + 1, 0, 50, 0)
    assert (curspace, curinodes) == (0, 0)
    assert valid == structs.QIF_BLIMITS | structs.QIF_ILIMITS


def test_vfs_block_limit_alone_sets_only_qif_blimits() -> None:
    buf = structs.pack_vfs_limits(4096, None)

    assert structs.IF_DQBLK.unpack(buf)[8] == structs.QIF_BLIMITS


def test_vfs_quota_reads_curspace_in_bytes() -> None:
    buf = structs.IF_DQBLK.pack(1024, 0, 12345, 10, 0, 3, 0, 0, 0x0F)

    assert structs.unpack_vfs_quota(4, buf) == structs.ProjectQuota(4, 12345, 3, MiB, 10)


@pytest.mark.parametrize(
    ("flags", "accounting", "enforced"),
    [
        (0, False, False),
        (1 << 4, True, False),
        ((1 << 4) | (1 << 5), True, True),
        (3, False, False),
    ],
)
def test_statv_project_flags(flags: int, accounting: bool, enforced: bool) -> None:
    buf = bytearray(160)
    struct.pack_into("=bBH", buf, 0, 1, 0, flags)

    assert structs.unpack_statv(buf) == structs.QuotaState(accounting, enforced)


def _mount(device: str, source: str) -> MountEntry:
    return MountEntry(1, 0, device, "/", "/srv/pool", ("rw",), (), "xfs", source, ("rw",))


def test_block_device_refuses_a_source_that_is_not_that_device() -> None:
    with pytest.raises(Internal, match=r"cannot find the block device of /srv/pool.*quotactl"):
        quota.block_device(_mount("0:0", "/dev/null"))


def test_block_device_is_the_mountinfo_source_when_it_is_that_device() -> None:
    with os.scandir("/dev") as entries:
        devices = [e.path for e in entries if stat.S_ISBLK(e.stat(follow_symlinks=False).st_mode)]
    device = devices[0] if devices else None
    if device is None:
        pytest.skip("needs a block device node in /dev to compare against; there is none")
    rdev = os.stat(device).st_rdev
    entry = _mount(f"{os.major(rdev)}:{os.minor(rdev)}", device)

    assert quota.block_device(entry) == device


def test_quota_error_keeps_the_errno_and_names_the_call(tmp_path: Path) -> None:
    error = quota.QuotaError("quotactl Q_XSETQLIM (id 7)", "/dev/vdb", 38)

    assert error.errno == 38
    assert str(error) == (
        "quotactl Q_XSETQLIM (id 7) on /dev/vdb failed: [ENOSYS] Function not implemented"
    )
    assert isinstance(error, Internal)


def test_project_calls_on_a_missing_directory_fail_with_enoent(tmp_path: Path) -> None:
    with pytest.raises(quota.QuotaError) as caught:
        quota.get_project(tmp_path / "nope")
    assert caught.value.errno == 2
