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
    rmdir_quietly,
    unmount_volume,
)
from sharevol.service.node_state import NodeState, PublishRecord
from sharevol.sys import blockfs, loop
from sharevol.sys.mounts import MountEntry, Mounter, MountIdentity, identity_of, top_mount_at
from sharevol.sys.runner import CommandRunner
from sharevol.sys.statfs import statvfs_with_deadline

log = logging.getLogger(__name__)

OtherTargetsCheck = Callable[[str, str, Capability, Sequence[MountEntry]], None]
"""NodePublisher._check_other_targets: the CSI publish table for a second target."""


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
        self._node_id = node_id
        self._state = node_state

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
        if existing is not None and self._live_device(existing) is not None:
            if existing.volume_id != volume_id or existing.capability != capability:
                raise AlreadyExists(
                    f"staging path {staging} already holds volume {existing.volume_id} with "
                    f"{_show(existing.capability)}; unstage it first"
                )
            if record.kind == "block" or self._mounted_from(staging, existing.device):
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
            node_id=self._node_id,
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
            if device and device not in attached_before and not self._device_users(device):
                loop.detach(self.runner, device)
            self.stages.remove(staging)
            raise
        log.info("staged %s volume %s at %s on %s", record.kind, volume_id, staging, device)

    def _mount(self, device: str, staging: str, fs_type: str, capability: Capability) -> None:
        """Mount the image's filesystem, growing it first (ext4, offline) or right after
        (XFS, online) when the image grew while the volume was not staged here."""
        read_only = capability.access_mode.read_only
        if fs_type == "ext4" and not read_only and not self._device_users(device):
            geometry = blockfs.ext4_geometry(self.runner, device)
            if blockfs.ext4_would_grow(geometry, loop.size_bytes(device)):
                log.info("growing ext4 on %s offline before mounting it", device)
                blockfs.resize_ext4_offline(self.runner, device)
        options = ["ro"] if read_only else []
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
            for pub in self._state.publications()
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
            expected = [MountIdentity(loop.device_number(d), "/") for d in devices if _exists(d)]
            unmount_volume(self.mounter, staging, expected, volume_id)
        for device in devices:
            if not self._backs(device, record.image):
                log.warning("%s no longer backs %s; not detaching it", device, record.image)
            elif self._device_users(device):
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
            node_id=self._node_id,
            image=str(image),
            device=top.source,
        )

    # ---- publish ----------------------------------------------------------------------------

    def publish(
        self,
        volume: LocatedVolume,
        staging_path: StrPath,
        target_path: StrPath,
        capability: Capability,
        readonly: bool,
        check_other_targets: OtherTargetsCheck,
    ) -> None:
        """Bind the staged filesystem onto a target directory (image) or the loop device onto
        a target file this creates (block). Idempotency follows the CSI publish table."""
        volume_id = volume.record.volume_id
        staging = canonical_path(staging_path, "staging_target_path")
        target = canonical_path(target_path, "target_path")
        want_ro = readonly or capability.access_mode.read_only
        stage = self.stages.get(staging)
        device = self._live_device(stage) if stage and stage.volume_id == volume_id else None
        entries = self.mounter.mounts()
        stage_top = top_mount_at(entries, staging)
        not_staged = FailedPrecondition(
            f"volume {volume_id} is not staged at {staging} on node {self._node_id}; "
            "NodeStageVolume must succeed first"
        )
        if device is None:
            raise not_staged
        if volume.record.kind == "image":
            if stage_top is None or not self._mounted_from(staging, device):
                raise not_staged
            identity, source = stage_top.identity, staging
            if stage_top.read_only and not want_ro:
                raise FailedPrecondition(
                    f"volume {volume_id} is staged read-only at {staging}; it cannot be "
                    "published read-write from there"
                )
        else:
            source = device
            if want_ro and not loop.is_read_only(device):
                # The kernel lets a device node on a read-only mount be opened for writing, so a
                # read-only publication gets a read-only loop device of its own ("twin").
                source = self._read_only_twin(Path(stage.image)) if stage else ""
            identity = identity_of(entries, source) if source else MountIdentity("", "")
        top = top_mount_at(entries, target)
        record = self._state.publication(target)
        wanted = PublishRecord(
            volume_id=volume_id,
            target_path=target,
            staging_path=staging,
            capability=capability,
            readonly=readonly,
            node_id=self._node_id,
            device=identity.device,
            root=identity.root,
        )
        if top is not None:
            self._check_published_same(top, record, wanted, want_ro, check_other_targets)
            return
        if record is not None:
            self._state.remove_publication(target)
        check_other_targets(volume_id, target, capability, entries)
        twin = ""
        if not source and stage is not None:
            source = twin = loop.attach(self.runner, Path(stage.image), read_only=True)
            identity = identity_of(self.mounter.mounts(), twin)
            wanted = wanted.model_copy(update={"device": identity.device, "root": identity.root})
        block = volume.record.kind == "block"
        created = _make_target_file(target) if block else make_mount_point(target, "target path")
        self._state.put_publication(wanted)
        try:
            self.mounter.bind(source, target, readonly=want_ro)
        except BaseException:
            self._state.remove_publication(target)
            if created:
                _remove_created(target, block)
            if twin and not self._device_users(twin):
                loop.detach(self.runner, twin)
            raise
        log.info("published %s at %s (%s)", volume_id, target, "ro" if want_ro else "rw")

    def _check_published_same(
        self,
        top: MountEntry,
        record: PublishRecord | None,
        wanted: PublishRecord,
        want_ro: bool,
        check_other_targets: OtherTargetsCheck,
    ) -> None:
        target, volume_id = wanted.target_path, wanted.volume_id
        if not top.identity.same_source(wanted.identity):
            raise AlreadyExists(
                f"target path {target} already holds another mount ({describe(top)}); "
                f"volume {volume_id} cannot be published there"
            )
        if record is not None and record.identity.same_source(top.identity):
            if record.model_copy(update={"device": "", "root": ""}) != wanted.model_copy(
                update={"device": "", "root": ""}
            ):
                raise AlreadyExists(
                    f"volume {record.volume_id} is already published at {target} with other "
                    "parameters; unpublish it first"
                )
            if want_ro and not top.read_only:
                self.mounter.remount_readonly(target)
            return
        if top.read_only != want_ro:
            raise AlreadyExists(
                f"volume {volume_id} is already published at {target} "
                f"{'read-only' if top.read_only else 'read-write'}; unpublish it first"
            )
        check_other_targets(volume_id, target, wanted.capability, self.mounter.mounts())
        self._state.put_publication(wanted)

    def release(self, publication: PublishRecord | None) -> None:
        """After an unpublish: detach the read-only twin device that publication used."""
        if publication is None or not publication.root.startswith("/loop"):
            return
        device = "/dev" + publication.root
        stage = self.stages.get(publication.staging_path)
        if stage is None or stage.device == device or not _exists(device):
            return
        in_use = self._device_users(device) or device in {s.device for s in self.stages.all()}
        if loop.is_read_only(device) and self._backs(device, stage.image) and not in_use:
            loop.detach(self.runner, device)

    def _read_only_twin(self, image: Path) -> str:
        for device in loop.devices_of(self.runner, image):
            if loop.is_read_only(device):
                return device
        return ""

    # ---- stats ------------------------------------------------------------------------------

    def stats(self, volume: LocatedVolume, volume_path: StrPath) -> tuple[VolumeUsage, bool, str]:
        """Image volumes: statvfs of the filesystem in the image. Block volumes: the device
        size only (what is used inside a raw device is unknown)."""
        volume_id = volume.record.volume_id
        path = canonical_path(volume_path, "volume_path")
        if not os.path.lexists(path):
            raise NotFound(f"{volume_path} does not exist on node {self._node_id}")
        stage = self.stage_at(volume_id, path)
        if stage is None:
            raise NotFound(
                f"volume {volume_id} is neither staged nor published at {volume_path} "
                f"on node {self._node_id}"
            )
        device = self._live_device(stage)
        problems: list[str] = []
        if not image_path(volume.path).is_file():
            problems.append(f"the volume's image file is gone from pool {volume.record.pool}")
        if device is None:
            problems.append(f"no loop device backs the volume's image on node {self._node_id}")
        if volume.record.kind == "block" or device is None:
            size = loop.size_bytes(device) if device else volume.record.capacity_bytes
            return VolumeUsage(size, 0, 0, 0, 0, 0), bool(problems), "; ".join(problems)
        top = self.mounter.find(path)
        if top is None or not top.identity.same_source(MountIdentity(_number(device), "/")):
            problems.append(f"{path} no longer holds the volume's filesystem")
            return VolumeUsage(volume.record.capacity_bytes, 0, 0, 0, 0, 0), True, problems[-1]
        st = statvfs_with_deadline(path)
        usage = VolumeUsage(
            capacity_bytes=st.f_blocks * st.f_frsize,
            used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
            available_bytes=st.f_bavail * st.f_frsize,
            total_inodes=st.f_files,
            used_inodes=st.f_files - st.f_ffree,
            available_inodes=st.f_favail,
        )
        return usage, bool(problems), "; ".join(problems)

    def is_block(self, volume_id: str) -> bool:
        return self.locator.locate(volume_id).record.kind == "block"

    def stage_at(self, volume_id: str, path: str) -> LoopStageRecord | None:
        """The loop stage of the volume reachable at `path`: its staging path, or a target it
        is published at (through that publication's staging path)."""
        stage = self.stages.get(path)
        if stage is None:
            publication = self._state.publication(path)
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

    def live_device(self, record: LoopStageRecord) -> str | None:
        return self._live_device(record)

    def _live_device(self, record: LoopStageRecord | None) -> str | None:
        """The record's loop device if it still backs the record's image file."""
        if record is None or not record.device:
            return None
        return record.device if self._backs(record.device, record.image) else None

    def _backs(self, device: str, image: str) -> bool:
        if not _exists(device):
            return False
        if os.path.exists(image):
            return device in loop.devices_of(self.runner, Path(image))
        return loop.backing_file(device) in (image, f"{image} (deleted)")

    def _mounted_from(self, path: str, device: str) -> bool:
        top = self.mounter.find(path)
        return top is not None and top.identity.same_source(MountIdentity(_number(device), "/"))

    def _device_users(self, device: str) -> list[str]:
        """Mount points of the device's filesystem or of binds of its node, on this node."""
        number, node_root = _number(device), "/" + os.path.basename(device)
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


def _exists(device: str) -> bool:
    return os.path.exists(device)


def _number(device: str) -> str:
    return loop.device_number(device) if _exists(device) else ""


def _make_target_file(target: str) -> bool:
    """Create the file a block volume is published on (CSI: the SP creates the target);
    True when this call created it."""
    if os.path.islink(target):
        raise FailedPrecondition(f"target path {target} is a symlink; refusing to mount over it")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    except FileExistsError:
        if not os.path.isfile(target):
            raise FailedPrecondition(
                f"target path {target} exists and is not a regular file (block volumes are "
                "published on a file)"
            ) from None
        return False
    except FileNotFoundError:
        raise FailedPrecondition(
            f"the parent directory of target path {target} does not exist"
        ) from None
    os.close(fd)
    return True


def _remove_created(target: str, is_file: bool) -> None:
    if not is_file:
        rmdir_quietly(target)
        return
    try:
        os.unlink(target)
    except OSError as exc:
        log.warning("could not remove %s after a failed publish: %s", target, exc)


def _show(capability: Capability) -> str:
    return f"{capability.access_type}/{capability.access_mode.value}"
