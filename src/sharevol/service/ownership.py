"""The owner and mode of a new volume's root folder, from the StorageClass (`uid`, `gid`, `mode`).

Through a root-squashed NFS export a pod running as root becomes 65534, and a non-root pod is
its own uid: neither can write into a root-owned 0755 folder. Setting the folder's owner at
create time lets them write without making it 0777 (the seed setup's habit). Applied once,
before the volume is ready; never again, so a pod's later chmod/chown is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sharevol.catalog.records import VolumeRecord
from sharevol.errors import Internal
from sharevol.service.locate import PoolHandle
from sharevol.service.params import parse_parameters


class RootOwnership:
    """A provisioning hook: chown/chmod the volume folder of directory volumes."""

    def __init__(self, pools: Mapping[str, PoolHandle]) -> None:
        self._pools = pools

    def prepare(self, record: VolumeRecord) -> VolumeRecord:
        params = parse_parameters(record.parameters)
        if params.uid is None and params.gid is None and params.mode is None:
            return record
        if record.kind != "directory":
            return record  # an image's folder holds the image, not the pod's files
        path = self._pools[record.pool].pool.volume_path(record.directory)
        # -1 leaves that id unchanged (chown(2)). O_NOFOLLOW: never follow a symlink put there.
        uid = -1 if params.uid is None else params.uid
        gid = -1 if params.gid is None else params.gid
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                if uid != -1 or gid != -1:
                    os.fchown(fd, uid, gid)
                if params.mode is not None:
                    os.fchmod(fd, int(params.mode, 8))
            finally:
                os.close(fd)
        except OSError as exc:
            raise Internal(f"cannot set the owner or mode of {path}: {exc}") from exc
        return record

    def retire(self, record: VolumeRecord) -> None:
        """Nothing to undo: the folder goes with the volume."""

    def users(self, record: VolumeRecord) -> list[str]:
        return []
