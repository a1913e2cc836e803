"""A fake of `sharevol.sys.quota.ProjectQuotas` for unit tests, shipped with the code.

It keeps a directory's project ID in a user xattr of that directory, so it lives and dies with
the inode and survives a rename as in the kernel; a registry of (device, inode) -> xattr value
makes a copied xattr (a tree copy carries xattrs along) count for nothing, since the kernel's
project ID is no xattr. Limits and usage per project live in memory,
and answers with the kernel's errors where the pools branch on them (ENOENT for a missing
directory, ESRCH/ENOSYS when quota is off, EOPNOTSUPP when the filesystem has no project IDs).
Tests set usage with `charge`.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from sharevol.sys.quota import ProjectQuota, QuotaError, QuotaState

XATTR = "user.sharevol-test.projid"
"""Where the fake keeps a directory's project ID (needs user xattrs: ext4, xfs, tmpfs >= 6.6)."""
_registry: dict[tuple[int, int], bytes] = {}
"""(st_dev, st_ino) -> the xattr value the fake set there; shared by every fake, like a disk."""
_registry_lock = threading.Lock()


@dataclass
class _Project:
    used_bytes: int = 0
    used_inodes: int = 0
    block_limit_bytes: int = 0
    inode_limit: int = 0


@dataclass
class FakeProjectQuotas:
    """In-memory project quotas of one filesystem; `calls` records every mutating call."""

    fs_type: str = "xfs"
    device: str = "/dev/fake0"
    quota_state: QuotaState = field(default_factory=lambda: QuotaState(True, True))
    project_ids_supported: bool = True
    calls: list[tuple[str, int]] = field(default_factory=list)
    _projects: dict[int, _Project] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self) -> QuotaState:
        return self.quota_state

    def get_project(self, path: Path) -> int:
        """The directory's own project ID; one it has none of is inherited from its parent
        (PROJINHERIT, which set_project always sets) and kept from then on, as the kernel
        gives a new directory its parent's project when it is made."""
        own = self._own_project(path)
        if own is not None:
            return own
        parent = Path(os.path.abspath(path)).parent
        inherited = 0 if parent == Path(os.path.abspath(path)) else self.get_project(parent)
        if inherited:
            self._register(path, inherited)
        return inherited

    def _own_project(self, path: Path) -> int | None:
        try:
            if os.path.islink(path):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            st = os.stat(path)
            value = os.getxattr(path, XATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return None
            raise QuotaError("FS_IOC_FSGETXATTR", path, exc.errno or errno.EIO) from exc
        with _registry_lock:
            if _registry.get((st.st_dev, st.st_ino)) != value:
                return None  # copied along with a tree, not set by set_project
        return int(value.split(b":")[0])

    def _register(self, path: Path, project_id: int) -> None:
        value = f"{project_id}:{secrets.token_hex(8)}".encode()
        try:
            if os.path.islink(path):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            st = os.stat(path)
            os.setxattr(path, XATTR, value, follow_symlinks=False)
        except OSError as exc:
            raise QuotaError("FS_IOC_FSSETXATTR", path, exc.errno or errno.EIO) from exc
        with _registry_lock:
            _registry[(st.st_dev, st.st_ino)] = value

    def set_project(self, path: Path, project_id: int) -> None:
        if not self.project_ids_supported:
            raise QuotaError("FS_IOC_FSSETXATTR", path, errno.EOPNOTSUPP)
        with self._lock:
            previous = self.get_project(path)
            self._register(path, project_id)
            # The kernel moves the directory inode's charge to the new project at once.
            if self.quota_state.accounting:
                if previous:
                    self._projects.setdefault(previous, _Project()).used_inodes -= 1
                self._projects.setdefault(project_id, _Project()).used_inodes += 1
            self.calls.append(("set_project", project_id))

    def _check_on(self, what: str) -> None:
        if not self.quota_state.accounting:
            raise QuotaError(what, self.device, errno.ENOSYS if self.quota_state.no_quota
                             else errno.ESRCH)  # fmt: skip

    def get(self, project_id: int) -> ProjectQuota:
        self._check_on("quotactl Q_XGETQUOTA")
        with self._lock:
            project = self._projects.get(project_id, _Project())
            return ProjectQuota(project_id, project.used_bytes, project.used_inodes,
                                project.block_limit_bytes, project.inode_limit)  # fmt: skip

    def set_limits(
        self, project_id: int, *, block_bytes: int | None = None, inodes: int | None = None
    ) -> None:
        self._check_on("quotactl Q_XSETQLIM")
        with self._lock:
            project = self._projects.setdefault(project_id, _Project())
            if block_bytes is not None:
                project.block_limit_bytes = block_bytes
            if inodes is not None:
                project.inode_limit = inodes
            self.calls.append(("set_limits", project_id))

    def list_projects(self) -> list[ProjectQuota]:
        self._check_on("quotactl Q_XGETNEXTQUOTA")
        found = [self.get(project_id) for project_id in sorted(self._projects)]
        return [quota for quota in found if quota.in_use]

    def set_tree_project(self, path: Path, project_id: int, timeout: float) -> int:
        """set_project on `path` and every directory and regular file below it (no symlinks)."""
        count = 0
        for folder, dirs, files in os.walk(path):
            self.set_project(Path(folder), project_id)
            count += 1
            for name in files:
                if os.path.isfile(Path(folder, name)) and not os.path.islink(Path(folder, name)):
                    self._register(Path(folder, name), project_id)
                    count += 1
            dirs[:] = [d for d in dirs if not os.path.islink(Path(folder, d))]
        return count

    def charge(self, project_id: int, *, used_bytes: int = 0, used_inodes: int = 0) -> None:
        """Pretend files were written to (or deleted from) a project."""
        with self._lock:
            project = self._projects.setdefault(project_id, _Project())
            self._projects[project_id] = replace(
                project,
                used_bytes=project.used_bytes + used_bytes,
                used_inodes=project.used_inodes + used_inodes,
            )
