"""Helpers for tests of image and block volumes: a volume driven through CSI like a CO would,
and a teardown that unmounts what the test mounted and detaches the loop devices of ITS images.

Only loop devices backed by an image file (`disk.img`) under the test's own tmp dir are ever
detached; any other loop device on the machine is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from sharevol.csi._proto import csi_pb2
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.support.csi import RWO, Stubs, block_cap, mount_cap

IMAGE_NAMES = ("disk.img", ".disk.img.new")
TIMEOUT = 60.0


def loops_backed_under(root: Path) -> list[str]:
    """Loop devices whose backing file is a volume image under `root`."""
    result = SubprocessRunner().run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], timeout=TIMEOUT
    )
    prefix = os.path.realpath(root).rstrip("/") + "/"
    found = []
    for line in result.stdout.splitlines():
        name, _, backing = line.strip().partition(" ")
        backing = backing.strip().removesuffix(" (deleted)")
        if backing.startswith(prefix) and os.path.basename(backing) in IMAGE_NAMES:
            found.append(name)
    return found


def clean_node(node_dir: Path, images_root: Path) -> list[str]:
    """Unmount everything at or below `node_dir` (deepest first), then detach the loop devices
    of images under `images_root`; returns what failed (empty when all went well)."""
    runner = SubprocessRunner()
    failures: list[str] = []
    if node_dir.exists():
        for target in sorted(mounts_under(node_dir), key=len, reverse=True):
            result = runner.run(["umount", target], timeout=TIMEOUT, check=False)
            if result.returncode != 0:
                failures.append(f"umount {target}: {result.stderr.strip()}")
                runner.run(["umount", "--lazy", target], timeout=TIMEOUT, check=False)
    for device in loops_backed_under(images_root):
        failures.append(f"loop device {device} was left attached")
        runner.run(["losetup", "--detach", device], timeout=TIMEOUT, check=False)
    return failures


class CsiVolume:
    """One volume created, staged and published through the CSI stubs, as kubelet would."""

    def __init__(
        self,
        stubs: Stubs,
        node_dir: Path,
        name: str,
        size: int,
        *,
        block: bool = False,
        mode: int = RWO,
        parameters: dict[str, str] | None = None,
        fs_type: str = "",
    ) -> None:
        self.stubs = stubs
        self.cap = block_cap(mode) if block else mount_cap(mode, fs_type)
        self.block = block
        self.volume = stubs.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=name,
                capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capabilities=[self.cap],
                parameters=parameters or {},
            )
        ).volume
        self.volume_id = self.volume.volume_id
        self.staging = node_dir / f"{name}-staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.pods = node_dir / "pods"
        self.pods.mkdir(parents=True, exist_ok=True)

    def target(self, pod: str) -> Path:
        return self.pods / f"{self.volume.volume_id.split('/')[1][:8]}-{pod}"

    def stage(self) -> None:
        self.stubs.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=self.volume_id,
                staging_target_path=str(self.staging),
                volume_capability=self.cap,
            )
        )

    def unstage(self) -> None:
        self.stubs.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(
                volume_id=self.volume_id, staging_target_path=str(self.staging)
            )
        )

    def publish_request(self, pod: str, readonly: bool = False) -> csi_pb2.NodePublishVolumeRequest:
        return csi_pb2.NodePublishVolumeRequest(
            volume_id=self.volume_id,
            staging_target_path=str(self.staging),
            target_path=str(self.target(pod)),
            volume_capability=self.cap,
            readonly=readonly,
        )

    def publish(self, pod: str = "pod", readonly: bool = False) -> Path:
        self.stubs.node.NodePublishVolume(self.publish_request(pod, readonly))
        return self.target(pod)

    def unpublish(self, pod: str = "pod") -> None:
        self.stubs.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(
                volume_id=self.volume_id, target_path=str(self.target(pod))
            )
        )

    def expand(self, required: int, limit: int = 0) -> csi_pb2.ControllerExpandVolumeResponse:
        return self.stubs.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                volume_id=self.volume_id,
                capacity_range=csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit),
            )
        )

    def node_expand(
        self, volume_path: Path, required: int = 0, limit: int = 0
    ) -> csi_pb2.NodeExpandVolumeResponse:
        return self.stubs.node.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(
                volume_id=self.volume_id,
                volume_path=str(volume_path),
                staging_target_path=str(self.staging),
                capacity_range=csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit),
                volume_capability=self.cap,
            )
        )

    def stats(self, volume_path: Path) -> csi_pb2.NodeGetVolumeStatsResponse:
        return self.stubs.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(
                volume_id=self.volume_id, volume_path=str(volume_path)
            )
        )
