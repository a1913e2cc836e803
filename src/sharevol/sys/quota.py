"""Project quotas on XFS and ext4 through in-process ioctls and quotactl(2), no process per volume.

A volume directory gets a project ID and the PROJINHERIT flag (FS_IOC_FSSETXATTR), so every
file made below it is charged to that project; quotactl sets the project's hard limits. The
`xfs_quota` CLI costs one process per call (~280 directories/s measured); these calls cost
microseconds. Layouts follow <linux/fs.h>, <linux/quota.h> and <linux/dqblk_xfs.h> (x86-64);
they and their packing live in sharevol.sys.quota_structs.

Two quotactl interfaces exist for the same limits: the XFS one (Q_XSETQLIM / Q_XGETQUOTA,
`struct fs_disk_quota`, sizes in 512-byte basic blocks) and the generic VFS one (Q_SETQUOTA /
Q_GETQUOTA, `struct if_dqblk`, limits in 1 KiB quota blocks, usage in bytes) that ext4 and
quota-tools use. quotactl(2) through libc names the filesystem by its block device, found in
mountinfo. Every failure is a `QuotaError` (an Internal) that keeps the errno.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

from sharevol.errors import Internal
from sharevol.sys.mounts import MountEntry
from sharevol.sys.quota_structs import (
    FS_DISK_QUOTA,
    FS_IOC_FSGETXATTR,
    FS_IOC_FSSETXATTR,
    FS_QSTATV_VERSION1,
    FS_QUOTA_STATV,
    FS_XFLAG_PROJINHERIT,
    FSXATTR,
    IF_DQBLK,
    IF_NEXTDQBLK,
    PRJQUOTA,
    Q_GETFMT,
    Q_GETINFO,
    Q_GETNEXTQUOTA,
    Q_GETQUOTA,
    Q_SETQUOTA,
    Q_XGETNEXTQUOTA,
    Q_XGETQSTAT,
    Q_XGETQSTATV,
    Q_XGETQUOTA,
    Q_XSETQLIM,
    ProjectQuota,
    QuotaState,
    pack_vfs_limits,
    pack_xfs_limits,
    qcmd,
    unpack_statv,
    unpack_vfs_quota,
    unpack_xfs_quota,
)
from sharevol.sys.statfs import find_mount
from sharevol.sys.tree_visit import visit_tree

__all__ = [
    "MAX_ID",
    "Interface",
    "KernelProjectQuotas",
    "ProjectQuota",
    "ProjectQuotas",
    "QuotaError",
    "QuotaState",
    "block_device",
    "get_fsxattr",
    "get_project",
    "open_project_quotas",
    "quotactl",
    "set_fsxattr_project",
    "set_project",
]

Interface = Literal["xfs", "vfs"]
MAX_ID = 2**32 - 2
"""The highest project ID (2**32 - 1 means "none" to the kernel)."""


class QuotaError(Internal):
    """An ioctl or quotactl failed; `errno` says how (ENOSYS: no kernel support, ESRCH: quota
    off, EOPNOTSUPP: the filesystem has no project IDs, ENOENT...)."""

    def __init__(self, what: str, where: Path | str, err: int, strerror: str | None = None) -> None:
        self.errno = err
        code = errno.errorcode.get(err, str(err))
        super().__init__(f"{what} on {where} failed: [{code}] {strerror or os.strerror(err)}")


class ProjectQuotas(Protocol):
    """The project quota calls of one filesystem; `sharevol.sys.fake_quota` is the fake."""

    fs_type: str
    device: str

    def state(self) -> QuotaState:
        """Accounting and enforcement of project quota (never raises for "off")."""
        ...

    def get_project(self, path: Path) -> int:
        """The project ID of directory `path` (0 when it has none)."""
        ...

    def set_project(self, path: Path, project_id: int) -> None:
        """Give directory `path` the project ID and the inherit flag (new files inherit it)."""
        ...

    def get(self, project_id: int) -> ProjectQuota:
        """Usage and limits of a project (zeros for a project nobody used)."""
        ...

    def set_limits(
        self, project_id: int, *, block_bytes: int | None = None, inodes: int | None = None
    ) -> None:
        """Set the hard block limit and/or inode limit (None: leave it; 0: no limit)."""
        ...

    def list_projects(self) -> list[ProjectQuota]:
        """Every project the filesystem charges something to or limits, by ID (doctor)."""
        ...

    def set_tree_project(self, path: Path, project_id: int, timeout: float) -> int:
        """Give directory `path` and everything below it the project (`xfs_quota project
        -s`), so their usage moves to it; returns how many inodes were set."""
        ...


# -- project ID of a directory (FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR) ------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def _open_dir(path: Path, what: str) -> Iterator[int]:
    """An O_DIRECTORY fd on `path`; a symlink as the last component is refused (ELOOP)."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise QuotaError(what, path, exc.errno or errno.EIO, exc.strerror) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def get_fsxattr(fd: int, where: Path | str) -> tuple[int, int]:
    """(xflags, projid) of an open file."""
    buf = bytearray(FSXATTR.size)
    try:
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf, True)
    except OSError as exc:
        raise QuotaError("FS_IOC_FSGETXATTR", where, exc.errno or errno.EIO, exc.strerror) from exc
    xflags, _extsize, _nextents, projid, _cow, _pad = FSXATTR.unpack(buf)
    return xflags, projid


def set_fsxattr_project(fd: int, where: Path | str, project_id: int, inherit: bool = True) -> None:
    """Set the project ID (and PROJINHERIT) of an open file, keeping its other attributes."""
    if not 0 <= project_id < 2**32 - 1:
        raise Internal(f"project ID {project_id} is out of range")
    buf = bytearray(FSXATTR.size)
    try:
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf, True)
        xflags, extsize, nextents, _projid, cow, pad = FSXATTR.unpack(buf)
        if inherit:
            xflags |= FS_XFLAG_PROJINHERIT
        else:
            xflags &= ~FS_XFLAG_PROJINHERIT
        fcntl.ioctl(
            fd, FS_IOC_FSSETXATTR, bytearray(FSXATTR.pack(xflags, extsize, nextents, project_id,
                                                         cow, pad)), True
        )  # fmt: skip
    except OSError as exc:
        raise QuotaError("FS_IOC_FSSETXATTR", where, exc.errno or errno.EIO, exc.strerror) from exc


def get_project(path: Path) -> int:
    """The project ID of directory `path`."""
    with _open_dir(path, "FS_IOC_FSGETXATTR") as fd:
        return get_fsxattr(fd, path)[1]


def set_project(path: Path, project_id: int) -> None:
    """Give directory `path` project `project_id` with PROJINHERIT set."""
    with _open_dir(path, "FS_IOC_FSSETXATTR") as fd:
        set_fsxattr_project(fd, path, project_id)


# -- quotactl(2) -------------------------------------------------------------------------------


def _load_libc() -> ctypes.CDLL:
    """glibc by its soname (find_library would start `ldconfig`); the process image otherwise."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return ctypes.CDLL(None, use_errno=True)


_libc = _load_libc()
_quotactl = _libc.quotactl
_quotactl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
_quotactl.restype = ctypes.c_int


def quotactl(command: int, quota_type: int, device: str, qid: int, buf: bytearray | None) -> None:
    """quotactl(QCMD(command, type), device, id, buf); `buf` is read and written in place."""
    cbuf = (ctypes.c_char * len(buf)).from_buffer(buf) if buf is not None else None
    signed_id = qid - (1 << 32) if qid >= 1 << 31 else qid
    result = _quotactl(
        qcmd(command, quota_type), os.fsencode(device), signed_id,
        ctypes.addressof(cbuf) if cbuf is not None else None,
    )  # fmt: skip
    if result != 0:
        err = ctypes.get_errno()
        raise QuotaError(f"quotactl {_command_name(command)} (id {qid})", device, err)


def _command_name(command: int) -> str:
    names = {
        Q_GETFMT: "Q_GETFMT", Q_GETINFO: "Q_GETINFO", Q_GETQUOTA: "Q_GETQUOTA",
        Q_SETQUOTA: "Q_SETQUOTA", Q_XGETQUOTA: "Q_XGETQUOTA", Q_XSETQLIM: "Q_XSETQLIM",
        Q_XGETQSTAT: "Q_XGETQSTAT", Q_XGETQSTATV: "Q_XGETQSTATV",
        Q_GETNEXTQUOTA: "Q_GETNEXTQUOTA", Q_XGETNEXTQUOTA: "Q_XGETNEXTQUOTA",
    }  # fmt: skip
    return names.get(command, hex(command))


class KernelProjectQuotas:
    """Project quotas of the filesystem on `device`, through the XFS or the VFS interface."""

    def __init__(self, device: str, fs_type: str, interface: Interface) -> None:
        self.device = device
        self.fs_type = fs_type
        self.interface = interface

    def state(self) -> QuotaState:
        """Q_XGETQSTATV: both XFS and ext4 (dquot_get_state) answer it; ENOSYS means no quota
        is active on the filesystem at all."""
        buf = bytearray(FS_QUOTA_STATV.size)
        buf[0] = FS_QSTATV_VERSION1
        try:
            quotactl(Q_XGETQSTATV, PRJQUOTA, self.device, 0, buf)
        except QuotaError as exc:
            if exc.errno == errno.ENOSYS:
                return QuotaState(False, False, no_quota=True)
            if exc.errno in (errno.ESRCH, errno.EINVAL):
                return QuotaState(False, False)
            raise
        return unpack_statv(buf)

    def get_project(self, path: Path) -> int:
        return get_project(path)

    def set_project(self, path: Path, project_id: int) -> None:
        set_project(path, project_id)

    def get(self, project_id: int) -> ProjectQuota:
        if self.interface == "xfs":
            buf = bytearray(FS_DISK_QUOTA.size)
            try:
                quotactl(Q_XGETQUOTA, PRJQUOTA, self.device, project_id, buf)
            except QuotaError as exc:
                if exc.errno == errno.ENOENT:  # XFS: no dquot was ever made for this ID
                    return ProjectQuota(project_id, 0, 0, 0, 0)
                raise
            return unpack_xfs_quota(project_id, buf)
        buf = bytearray(IF_DQBLK.size)
        quotactl(Q_GETQUOTA, PRJQUOTA, self.device, project_id, buf)
        return unpack_vfs_quota(project_id, buf)

    def set_limits(
        self, project_id: int, *, block_bytes: int | None = None, inodes: int | None = None
    ) -> None:
        if block_bytes is None and inodes is None:
            return
        if self.interface == "xfs":
            buf = pack_xfs_limits(project_id, block_bytes, inodes)
            quotactl(Q_XSETQLIM, PRJQUOTA, self.device, project_id, buf)
        else:
            quotactl(Q_SETQUOTA, PRJQUOTA, self.device, project_id,
                     pack_vfs_limits(block_bytes, inodes))  # fmt: skip

    def list_projects(self) -> list[ProjectQuota]:
        """Q_XGETNEXTQUOTA / Q_GETNEXTQUOTA from ID 0 up: each answers the next ID at or
        after the one asked that has a quota entry, and ENOENT past the last."""
        found: list[ProjectQuota] = []
        next_id = 0
        while next_id <= MAX_ID:
            try:
                quota = self._next(next_id)
            except QuotaError as exc:
                if exc.errno == errno.ENOENT:
                    break
                raise
            if quota.project_id < next_id:
                raise Internal(f"quotactl GETNEXTQUOTA on {self.device} went backwards")
            if quota.in_use:
                found.append(quota)
            next_id = quota.project_id + 1
        return found

    def _next(self, project_id: int) -> ProjectQuota:
        if self.interface == "xfs":
            buf = bytearray(FS_DISK_QUOTA.size)
            quotactl(Q_XGETNEXTQUOTA, PRJQUOTA, self.device, project_id, buf)
            return unpack_xfs_quota(FS_DISK_QUOTA.unpack(buf)[3], buf)
        buf = bytearray(IF_NEXTDQBLK.size)
        quotactl(Q_GETNEXTQUOTA, PRJQUOTA, self.device, project_id, buf)
        found = IF_NEXTDQBLK.unpack(buf)[9]
        return unpack_vfs_quota(found, IF_DQBLK.pack(*IF_NEXTDQBLK.unpack(buf)[:9]))

    def set_tree_project(self, path: Path, project_id: int, timeout: float) -> int:
        def visit(fd: int, where: str, is_dir: bool) -> None:
            set_fsxattr_project(fd, where, project_id, inherit=is_dir)

        return visit_tree(path, visit, timeout)


def block_device(mount: MountEntry) -> str:
    """The block device node of a mounted filesystem, for quotactl(2): the mountinfo source
    when it is that device, else /dev/block/MAJ:MIN (udev's link)."""
    major, minor = (int(part) for part in mount.device.split(":"))
    wanted = os.makedev(major, minor)
    for candidate in (mount.source, f"/dev/block/{mount.device}"):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == wanted:
            return candidate
    raise Internal(
        f"cannot find the block device of {mount.mount_point} ({mount.source}, "
        f"{mount.device}): quotactl needs it; is /dev mounted?"
    )


def open_project_quotas(path: Path, interface: Interface) -> KernelProjectQuotas:
    """The project quotas of the filesystem holding `path`."""
    mount = find_mount(path)
    return KernelProjectQuotas(block_device(mount), mount.fs_type, interface)
