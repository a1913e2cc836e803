"""Project IDs of one XFS/ext4 pool: allocated under the pool's file lock, never reused while held.

The directory's own project ID (FS_IOC_FSGETXATTR) is the truth; records keep a copy in
`backend["project_id"]`. Allocation goes upwards from the highest ID any record of the pool
holds (ready, retained, archived volumes and snapshots alike), and skips every ID the
filesystem still charges something to or has a limit for: a snapshot, another pool on the same
filesystem, an admin's own project. The ID is set on the directory before the lock is released,
so a second allocator (another process on the same pool) sees it as in use.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from sharevol.catalog.store import Catalog
from sharevol.errors import Internal
from sharevol.sys.quota import ProjectQuotas, QuotaError, QuotaState

log = logging.getLogger(__name__)

FIRST_PROJECT_ID = 1_000_000
"""Admins number their own projects (/etc/projid) from small values; sharevol starts above."""
MAX_PROJECT_ID = 2**32 - 2
"""Project IDs are 32-bit; 2**32 - 1 means "no ID" to the kernel."""
MAX_PROBES = 10_000
"""IDs in use by others that one allocation may skip before giving up."""
PROJECT_KEY = "project_id"
NO_PROJECT_IDS = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL)
"""FS_IOC_FSSETXATTR errors of a filesystem that cannot hold project IDs."""


class ProjectIds:
    """The project ID allocator of one pool. Its lock is `Catalog.pool_lock`: never call
    `ensure` while holding that lock (flock does not nest across open files)."""

    def __init__(self, pool_name: str, catalog: Catalog) -> None:
        self._pool = pool_name
        self._catalog = catalog
        self._quotas: ProjectQuotas | None = None
        self._state = QuotaState(False, False)
        self.next_id = FIRST_PROJECT_ID

    def start(self, quotas: ProjectQuotas, state: QuotaState) -> None:
        """Read the highest recorded ID; called by the pool's start()."""
        self._quotas, self._state = quotas, state
        self.next_id = max(FIRST_PROJECT_ID, self.recorded_high_water() + 1)

    def recorded_high_water(self) -> int:
        """The highest project ID any volume or snapshot record of this pool holds (or 0)."""
        held = [(r.pool, r.backend) for r in self._catalog.load_volumes()]
        held += [(r.pool, r.backend) for r in self._catalog.load_snapshots()]
        recorded = [b.get(PROJECT_KEY) for pool, b in held if pool == self._pool]
        return max([value for value in recorded if isinstance(value, int)], default=0)

    @property
    def quotas(self) -> ProjectQuotas:
        if self._quotas is None:
            raise Internal(f'pool "{self._pool}" is used before start()')
        return self._quotas

    def ensure(self, path: Path, reuse: int = 0) -> int:
        """The project ID of directory `path`, setting `reuse` or a newly allocated one when it
        has none; 0 when the filesystem cannot hold project IDs and quotas are not enforced."""
        try:
            current = self.quotas.get_project(path)
            if current:
                return current
            with self._catalog.pool_lock():
                current = self.quotas.get_project(path)
                if current:
                    return current
                project_id = reuse or self._allocate()
                self.quotas.set_project(path, project_id)
                self.next_id = max(self.next_id, project_id + 1)
        except QuotaError as exc:
            if exc.errno in NO_PROJECT_IDS and not self._state.enforced:
                log.warning('pool "%s": %s has no project ID, the filesystem cannot hold one: %s',
                            self._pool, path, exc)  # fmt: skip
                return 0
            raise
        log.debug('pool "%s": %s is project %d', self._pool, path, project_id)
        return project_id

    def _allocate(self) -> int:
        """The next free project ID (the caller holds the pool lock and sets it at once)."""
        candidate = self.next_id
        for _ in range(MAX_PROBES):
            if candidate > MAX_PROJECT_ID:
                break
            if not self._state.accounting or not self.quotas.get(candidate).in_use:
                return candidate
            log.info('pool "%s": project %d is in use outside the catalog; skipping it',
                     self._pool, candidate)  # fmt: skip
            candidate += 1
        raise Internal(
            f'pool "{self._pool}": no free project ID from {self.next_id} on '
            f"({MAX_PROBES} in use in a row, or past {MAX_PROJECT_ID})"
        )

    def project_of(self, path: Path) -> int:
        """The project ID of a directory, 0 where the filesystem holds none."""
        try:
            return self.quotas.get_project(path)
        except QuotaError as exc:
            if exc.errno in NO_PROJECT_IDS:
                return 0
            raise
