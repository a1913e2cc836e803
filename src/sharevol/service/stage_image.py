"""The node side of image and block volumes: stage attaches the volume's `disk.img` to a loop
device (and, for image volumes, mounts its filesystem at the staging path); publish binds the
staging mount onto a target directory (image) or the device node onto a target FILE (block,
as CSI requires); unstage unmounts and detaches. NodePublisher dispatches here by volume kind.

Idempotency: mountinfo for mounts, plus one record per loop stage (sharevol.service.loop_state)
for what mountinfo cannot show (a block stage mounts nothing). A loop device is used or detached
only after `losetup -j` shows it backing this volume's image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sharevol.catalog.records import Capability
from sharevol.errors import AlreadyExists, FailedPrecondition, Internal, NotFound
from sharevol.pools.base import VolumeUsage
from sharevol.service.images import image_path
from sharevol.service.locate import LocatedVolume
from sharevol.service.loop_state import LoopStageRecord, LoopStages
from sharevol.service.mount_points import (
    StrPath,
    canonical_path,
    describe,
    make_mount_point,
    unmount_volume,
)
from sharevol.service.node_state import NodeState, PublishRecord
from sharevol.service.publish_image import (
    device_exists,
    device_number_of,
    image_stats,
    publish_image,
    release_twin,
)
from sharevol.sys import blockfs, loop
from sharevol.sys.mounts import MountEntry, Mounter, MountIdentity, identity_of
from sharevol.sys.runner import CommandRunner

log = logging.getLogger(__name__)

OtherTargetsCheck = Callable[[str, str, Capability, Sequence[MountEntry]], None]
"""PublishRules.check_other_targets: the CSI publish table for a second target."""


class Locator(Protocol):
    """Finds a ready volume by ID (sharevol.service.locate.VolumeLocator is the real one)."""

    def locate(self, volume_id: str) -> LocatedVolume: ...


class ImageStager:
    """Stage, publish, unstage, stats and growth of image and block volumes on one node."""

    def __init__(
        self,
        locator: Locator,
        mounter: Mounter,
        runner: CommandRunner,
        state_dir: Path,
        node_id: str,
        node_state: NodeState,
    ) -> None:
        self.locator = locator
        self.mounter = mounter
        self.runner = runner
        self.stages = LoopStages(state_dir)
        self.node_id = node_id
        self.node_state = node_state

    # ---- stage ------------------------------------------------------------------------------

    def stage(self, volume: LocatedVolume, staging_path: StrPath, capability: Capability) -> None:
        """Attach the image (reusing a device that already backs it) and, for image volumes,
        grow the filesystem if its image grew, then mount it at the staging path."""
        record = volume.record
        volume_id = record.volume_id
        staging = canonical_path(staging_path, "staging_target_path")
        image = _image_of(volume)
        if record.kind == "image" and capability.fs_type not in ("", record.fs_type):
            raise FailedPrecondition(
                f"volume {volume_id} holds {record.fs_type}, not {capability.fs_type}"
            )
        existing = self.stages.get(staging)
        if existing is not None and self.live_device(existing) is not None:
            if existing.volume_id != volume_id or existing.capability != capability:
                raise AlreadyExists(
                    f"staging path {staging} already holds volume {existing.volume_id} with "
                    f"{_show(existing.capability)}; unstage it first"
                )
            if record.kind == "block" or self.mounted_from(staging, existing.device):
                return
        top = self.mounter.find(staging)
        if top is not None:
            raise AlreadyExists(
                f"staging path {staging} already holds another mount ({describe(top)}); "
                f"unstage it before staging volume {volume_id} there"
            )
        if record.kind == "image":
            make_mount_point(staging, "staging path")
        pending = LoopStageRecord(
            volume_id=volume_id,
            staging_path=staging,
            kind="block" if record.kind == "block" else "image",
            fs_type=record.fs_type,
            capability=capability,
            node_id=self.node_id,
            image=str(image),
        )
        self.stages.put(pending)
        read_only = capability.access_mode.read_only
        attached_before = loop.devices_of(self.runner, image)
        device = ""
        try:
            device = loop.attach(self.runner, image, read_only=read_only)
            self.stages.put(pending.model_copy(update={"device": device}))
            if device in attached_before:
                loop.refresh_size(self.runner, device)  # the image may have grown since
            if record.kind == "image":
                self._mount(device, staging, record.fs_type, capability)
        except BaseException:
            if device and device not in attached_before and not self.device_users(device):
                loop.detach(self.runner, device)
            self.stages.remove(staging)
            raise
        log.info("staged %s volume %s at %s on %s", record.kind, volume_id, staging, device)

    def _mount(self, device: str, staging: str, fs_type: str, capability: Capability) -> None:
        """Mount the image's filesystem, growing it first (ext4, offline) or right after
        (XFS, online) when the image grew while the volume was not staged here."""
        read_only = capability.access_mode.read_only
        if fs_type == "ext4" and not read_only and not self.device_users(device):
            geometry = blockfs.ext4_geometry(self.runner, device)
            if blockfs.ext4_would_grow(geometry, loop.size_bytes(device)):
                log.info("growing ext4 on %s offline before mounting it", device)
                blockfs.resize_ext4_offline(self.runner, device)
        # The filesystem's bytes are the tenant's: no setuid binaries or device nodes from it.
        options = ["nosuid", "nodev", *(["ro"] if read_only else [])]
        if fs_type == "xfs":
            options.append("nouuid")  # a clone has its source's UUID; both may be mounted here
        options.extend(capability.mount_flags)
        self.mounter.mount(device, staging, fs_type, options)
        if fs_type == "xfs" and not read_only:
            blockfs.grow_xfs(self.runner, staging)

    # ---- unstage ----------------------------------------------------------------------------

    def unstage(self, volume_id: str, staging_path: StrPath) -> bool:
        """Unmount (image) and detach the loop device of a loop stage at `staging_path`.
        False when nothing there is a loop stage (the caller handles directory stages)."""
        staging = canonical_path(staging_path, "staging_target_path")
        record = self.stages.get(staging) or self._adopt(volume_id, staging)
        if record is None:
            return False
        if record.volume_id != volume_id:
            raise FailedPrecondition(
                f"{staging} holds volume {record.volume_id}, not {volume_id}; leaving it alone"
            )
        published = [
            pub.target_path
            for pub in self.node_state.publications()
            if pub.volume_id == volume_id and pub.staging_path == staging and self._live(pub)
        ]
        if published:
            raise FailedPrecondition(
                f"volume {volume_id} is still published at {', '.join(sorted(published))}; "
                "unpublish it before unstaging"
            )
        devices = [record.device] if record.device else []
        if os.path.exists(record.image):  # with read-only twins a crash may have left behind
            devices = [*devices, *loop.devices_of(self.runner, Path(record.image))]
        others = {stage.device for stage in self.stages.all() if stage.staging_path != staging}
        devices = [device for device in dict.fromkeys(devices) if device not in others]
        if record.kind == "image":
            expected = [
                MountIdentity(loop.device_number(d), "/") for d in devices if device_exists(d)
            ]
            unmount_volume(self.mounter, staging, expected, volume_id)
        for device in devices:
            if not self.backs(device, record.image):
                log.warning("%s no longer backs %s; not detaching it", device, record.image)
            elif self.device_users(device):
                log.warning("%s is still in use; not detaching it", device)
            else:
                loop.detach(self.runner, device)
        self.stages.remove(staging)
        log.info("unstaged %s volume %s from %s", record.kind, volume_id, staging)
        return True

    def _adopt(self, volume_id: str, staging: str) -> LoopStageRecord | None:
        """A loop mount of this volume at `staging` without a record (the state dir was lost)."""
        top = self.mounter.find(staging)
        if top is None or not top.source.startswith("/dev/loop"):
            return None
        try:
            volume = self.locator.locate(volume_id)
        except NotFound:
            return None
        image = image_path(volume.path)
        if volume.record.kind != "image" or not image.is_file():
            return None
        if top.source not in loop.devices_of(self.runner, image):
            return None
        capability = volume.record.capabilities[0]
        return LoopStageRecord(
            volume_id=volume_id,
            staging_path=staging,
            kind="image",
            fs_type=volume.record.fs_type,
            capability=capability,
            node_id=self.node_id,
            image=str(image),
            device=top.source,
        )

    # ---- publish and stats (sharevol.service.publish_image) ---------------------------------

    def publish(
        self,
        volume: LocatedVolume,
        staging_path: StrPath,
        target_path: StrPath,
        capability: Capability,
        readonly: bool,
        check_other_targets: OtherTargetsCheck,
    ) -> None:
        publish_image(self, volume, staging_path, target_path, capability, readonly,
                      check_other_targets)  # fmt: skip

    def release(self, publication: PublishRecord | None) -> None:
        release_twin(self, publication)

    def stats(self, volume: LocatedVolume, volume_path: StrPath) -> tuple[VolumeUsage, bool, str]:
        return image_stats(self, volume, volume_path)

    def is_block(self, volume_id: str) -> bool:
        return self.locator.locate(volume_id).record.kind == "block"

    def stage_at(self, volume_id: str, path: str) -> LoopStageRecord | None:
        """The loop stage of the volume reachable at `path`: its staging path, or a target it
        is published at (through that publication's staging path)."""
        stage = self.stages.get(path)
        if stage is None:
            publication = self.node_state.publication(path)
            if publication is not None and publication.volume_id == volume_id:
                stage = self.stages.get(publication.staging_path)
        return stage if stage is not None and stage.volume_id == volume_id else None

    def identities(self, volume: LocatedVolume) -> list[MountIdentity]:
        """What a mount of this volume's loop device looks like on this node (for unpublish
        when the publication record was lost)."""
        if volume.record.kind == "directory":
            return []
        image = image_path(volume.path)
        if not image.is_file():
            return []
        entries = self.mounter.mounts()
        found: list[MountIdentity] = []
        for device in loop.devices_of(self.runner, image):
            found.append(MountIdentity(loop.device_number(device), "/"))
            found.append(identity_of(entries, device))
        return found

    # ---- shared steps -----------------------------------------------------------------------

    def live_device(self, record: LoopStageRecord | None) -> str | None:
        """The record's loop device if it still backs the record's image file."""
        if record is None or not record.device:
            return None
        return record.device if self.backs(record.device, record.image) else None

    def backs(self, device: str, image: str) -> bool:
        if not device_exists(device):
            return False
        if os.path.exists(image):
            return device in loop.devices_of(self.runner, Path(image))
        return loop.backing_file(device) in (image, f"{image} (deleted)")

    def mounted_from(self, path: str, device: str) -> bool:
        top = self.mounter.find(path)
        return top is not None and top.identity.same_source(
            MountIdentity(device_number_of(device), "/")
        )

    def device_users(self, device: str) -> list[str]:
        """Mount points of the device's filesystem or of binds of its node, on this node."""
        number, node_root = device_number_of(device), "/" + os.path.basename(device)
        return [
            entry.mount_point
            for entry in self.mounter.mounts()
            if entry.source == device
            or entry.device == number
            or (entry.fs_type == "devtmpfs" and entry.root == node_root)
        ]

    def _live(self, publication: PublishRecord) -> bool:
        top = self.mounter.find(publication.target_path)
        return top is not None and top.identity.same_source(publication.identity)


def _image_of(volume: LocatedVolume) -> Path:
    image = image_path(volume.path)
    if not image.is_file():
        raise Internal(
            f"volume {volume.record.volume_id} has a record but its image file {image} is "
            f"missing on pool {volume.record.pool}; the volume is damaged"
        )
    return image


def _show(capability: Capability) -> str:
    return f"{capability.access_type}/{capability.access_mode.value}"
