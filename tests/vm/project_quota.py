"""What the XFS and ext4 quota tests share inside the VM: a blank disk formatted and mounted
with project quotas, a writer without CAP_SYS_RESOURCE, and the CSI calls of one volume.

ext4 lets a process with CAP_SYS_RESOURCE write past any quota, and the guest runs as full
root; pods run without that capability, so writes go through `setpriv --bounding-set
-sys_resource dd`, as a pod's root would write.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sharevol.csi._proto import csi_pb2
from sharevol.pools.ext4 import MKFS_OPTIONS
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.support.csi import Stubs, mount_cap

TIMEOUT = 120.0
MiB = 1024 * 1024
MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F", *MKFS_OPTIONS],
}
"""How each filesystem is made for a pool (xfsprogs >= 5.x has reflink=1 by default)."""
_ERRORS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT}


def run(*argv: str) -> str:
    return SubprocessRunner().run(list(argv), timeout=TIMEOUT).stdout


def mount(disk: Path, mount_point: Path, *, prjquota: bool = True) -> None:
    run("mount", *(["-o", "prjquota"] if prjquota else []), str(disk), str(mount_point))


def unmount_all(mount_point: Path) -> None:
    """Unmount everything at and below `mount_point`, deepest first."""
    for target in sorted(mounts_under(mount_point), key=len, reverse=True):
        run("umount", target)


@contextlib.contextmanager
def project_fs(disk: Path, fs_type: str, where: Path, *, prjquota: bool = True) -> Iterator[Path]:
    """`disk` freshly formatted as `fs_type` and mounted (with -o prjquota unless told not);
    unmounted afterwards, also when the test fails."""
    mount_point = where / f"{fs_type}-pool"
    mount_point.mkdir()
    run(*MKFS[fs_type], str(disk))
    mount(disk, mount_point, prjquota=prjquota)
    try:
        yield mount_point
    finally:
        unmount_all(mount_point)


@dataclass(frozen=True)
class Written:
    """What one writer got through: bytes on disk and the errno it stopped with (or None)."""

    bytes: int
    error: int | None


def write_as_pod(path: Path, nbytes: int) -> Written:
    """Write `nbytes` to a new file `path` in 1 MiB blocks with fsync, as a process without
    CAP_SYS_RESOURCE; a failing write is reported, not raised."""
    result = SubprocessRunner().run(
        ["setpriv", "--bounding-set", "-sys_resource", "--inh-caps", "-sys_resource",
         "dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={-(-nbytes // MiB)}",
         "conv=fsync", "status=none"],
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    error = None
    if result.returncode != 0:
        found = [code for text, code in _ERRORS.items() if text in result.stderr]
        if not found:
            raise AssertionError(f"dd failed for another reason: {result.stderr.strip()}")
        error = found[0]
    size = path.stat().st_size if path.exists() else 0
    return Written(size, error)


def has_no_cap_sys_resource() -> bool:
    """Whether the writer really lacks the capability (else ext4 would not stop it)."""
    out = run("setpriv", "--bounding-set", "-sys_resource", "--inh-caps", "-sys_resource",
              "grep", "^CapEff:", "/proc/self/status")  # fmt: skip
    return not (int(out.split()[1], 16) >> 24) & 1  # CAP_SYS_RESOURCE is bit 24


# -- one volume over CSI -------------------------------------------------------------------


class CsiVolume:
    """A volume made by CreateVolume and staged + published at `target` for the test."""

    def __init__(self, stubs: Stubs, workdir: Path, name: str, size: int, **params: str) -> None:
        self.stubs = stubs
        self.cap = mount_cap()
        self.volume = stubs.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=name,
                capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capabilities=[self.cap],
                parameters=params,
            )
        ).volume
        self.staging, self.target = workdir / f"{name}-staging", workdir / f"{name}-pod"
        self.staging.mkdir()
        stubs.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=self.volume.volume_id,
                staging_target_path=str(self.staging),
                volume_capability=self.cap,
            )
        )
        stubs.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=self.volume.volume_id,
                staging_target_path=str(self.staging),
                target_path=str(self.target),
                volume_capability=self.cap,
            )
        )

    def expand(self, size: int) -> int:
        response = self.stubs.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                volume_id=self.volume.volume_id,
                capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capability=self.cap,
            )
        )
        return response.capacity_bytes

    def stats(self) -> dict[int, csi_pb2.VolumeUsage]:
        """NodeGetVolumeStats by unit (BYTES, INODES)."""
        response = self.stubs.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(
                volume_id=self.volume.volume_id, volume_path=str(self.target)
            )
        )
        assert not response.volume_condition.abnormal, response.volume_condition.message
        return {usage.unit: usage for usage in response.usage}

    def close(self) -> None:
        """Unpublish, unstage and delete: what a pod's end and a PVC's deletion do."""
        volume_id = self.volume.volume_id
        self.stubs.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(self.target))
        )
        self.stubs.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(
                volume_id=volume_id, staging_target_path=str(self.staging)
            )
        )
        self.stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))


def create_volumes(stubs: Stubs, prefix: str, count: int, size: int) -> list[csi_pb2.Volume]:
    """CreateVolume `count` times (names `<prefix>-<n>`), nothing published."""
    return [
        stubs.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=f"{prefix}-{index}",
                capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capabilities=[mount_cap()],
            )
        ).volume
        for index in range(count)
    ]


def create_files_as_pod(folder: Path, count: int) -> int:
    """Try to create `count` empty files in `folder` (one `touch`, no CAP_SYS_RESOURCE);
    returns how many exist afterwards."""
    names = [str(folder / f"file-{index}") for index in range(count)]
    SubprocessRunner().run(
        ["setpriv", "--bounding-set", "-sys_resource", "--inh-caps", "-sys_resource",
         "touch", *names],
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    return sum(1 for name in names if os.path.exists(name))


def statvfs_size(path: Path) -> int:
    """What `df` shows as the size of the filesystem at `path` (the project limit on XFS)."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize
