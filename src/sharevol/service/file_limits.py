"""The StorageClass parameter `maxFiles`: a hard cap on a volume's files (inodes).

Only pools with project quotas (xfs, ext4) can cap files; a class asking for it on another pool
is refused (INVALID_ARGUMENT) rather than silently ignored. The cap is recorded in the volume's
backend facts (`max_files`), so expansion and the controller's start re-apply it.
"""

from __future__ import annotations

from collections.abc import Mapping

from sharevol.catalog.records import VolumeRecord
from sharevol.errors import InvalidArgument
from sharevol.pools.base import FileLimitPool
from sharevol.service.locate import PoolHandle
from sharevol.service.params import parse_parameters


class FileLimits:
    """A provisioning hook (sharevol.service.hooks): set the inode limit `maxFiles` asks for."""

    def __init__(self, pools: Mapping[str, PoolHandle]) -> None:
        self._pools = pools

    def prepare(self, record: VolumeRecord) -> VolumeRecord:
        max_files = parse_parameters(record.parameters).max_files
        if max_files is None:
            return record
        pool = self._pools[record.pool].pool
        if not isinstance(pool, FileLimitPool):
            raise InvalidArgument(
                f"parameter 'maxFiles': pool {pool.name!r} ({pool.kind}) cannot limit files; "
                "only xfs and ext4 pools (project quotas) can"
            )
        if record.kind != "directory":
            raise InvalidArgument(
                f"parameter 'maxFiles' applies to directory volumes, not {record.kind} volumes"
            )
        backend = pool.set_file_limit(record.directory, max_files, record.backend)
        return record.model_copy(update={"backend": backend})

    def retire(self, record: VolumeRecord) -> None:
        """Nothing to undo: deleting the volume clears its project's limits."""
