"""NodeGetVolumeStats of NFS volumes: statvfs of the mount with a deadline, so a dead server
makes the volume abnormal instead of hanging the call.

The numbers are what the server reports for the filesystem it exports. Behind the managed NFS
server that is the whole pool filesystem (Ganesha reports the filesystem, not the btrfs qgroup);
`sharevol volume stats` on the controller has the quota's numbers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sharevol.errors import NotFound
from sharevol.pools.base import VolumeUsage
from sharevol.service.mount_points import StrPath, canonical_path
from sharevol.sys.nfs_mount import Health, is_nfs_mount

if TYPE_CHECKING:
    from sharevol.service.stage_nfs import NfsStager

NO_USAGE = VolumeUsage(0, 0, 0, 0, 0, 0)


def nfs_stats(
    stager: NfsStager, volume_id: str, volume_path: StrPath
) -> tuple[VolumeUsage, bool, str] | None:
    """Usage of an NFS volume staged or published at `volume_path`, abnormal (with zeros) when
    the server does not answer or the handle is stale; None when the path is no NFS stage or
    publication of this volume (the caller handles the other kinds)."""
    path = canonical_path(volume_path, "volume_path")
    stage = stager.stages.get(path)
    if stage is None:
        publication = stager.node_state.publication(path)
        if publication is not None and publication.volume_id == volume_id:
            stage = stager.stages.get(publication.staging_path)
    if stage is None or stage.volume_id != volume_id:
        return None
    if not is_nfs_mount(stager.mounter.find(path), stage.device):
        if not os.path.lexists(path):
            raise NotFound(f"{volume_path} does not exist on node {stager.node_id}")
        return NO_USAGE, True, f"{path} no longer holds the NFS mount of {stage.device}"
    health = stager.prober(path, stager.probe_timeout)
    if health.statvfs is None:
        what = {
            Health.STALE: f"{health.message}; publishing or staging it again remounts it",
            Health.HUNG: f"the NFS server of {stage.device} does not answer: {health.message}",
        }.get(health.health, health.message)
        return NO_USAGE, True, what
    st = health.statvfs
    usage = VolumeUsage(
        capacity_bytes=st.f_blocks * st.f_frsize,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
        available_bytes=st.f_bavail * st.f_frsize,
        total_inodes=st.f_files,
        used_inodes=max(0, st.f_files - st.f_ffree),
        available_inodes=st.f_favail,
    )
    return usage, False, ""
