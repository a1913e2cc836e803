"""Publishing, unpublishing leftovers and stats of image and block volumes on a node (the
staging side is sharevol.service.stage_image).

Image volumes publish by binding the staged filesystem onto a target directory; block volumes
by binding the loop device node onto a target FILE this creates (CSI). A read-only block
publication gets a read-only loop device of its own: the kernel lets a device node on a
read-only mount be opened for writing, so the bind's flag alone would not stop writes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sharevol.catalog.records import Capability
from sharevol.errors import AlreadyExists, FailedPrecondition, NotFound
from sharevol.pools.base import VolumeUsage
from sharevol.service.images import image_path
from sharevol.service.locate import LocatedVolume
from sharevol.service.mount_points import (
    StrPath,
    canonical_path,
    describe,
    make_mount_point,
    rmdir_quietly,
)
from sharevol.service.node_state import PublishRecord
from sharevol.sys import loop
from sharevol.sys.mounts import MountEntry, MountIdentity, identity_of, top_mount_at
from sharevol.sys.statfs import statvfs_with_deadline

if TYPE_CHECKING:
    from sharevol.service.stage_image import ImageStager, OtherTargetsCheck

log = logging.getLogger(__name__)


def device_exists(device: str) -> bool:
    return os.path.exists(device)


def device_number_of(device: str) -> str:
    """`major:minor` of a loop device node, or "" once the node is gone."""
    return loop.device_number(device) if device_exists(device) else ""


def publish_image(
    stager: ImageStager,
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
    stage = stager.stages.get(staging)
    device = stager.live_device(stage) if stage and stage.volume_id == volume_id else None
    entries = stager.mounter.mounts()
    stage_top = top_mount_at(entries, staging)
    not_staged = FailedPrecondition(
        f"volume {volume_id} is not staged at {staging} on node {stager.node_id}; "
        "NodeStageVolume must succeed first"
    )
    if device is None:
        raise not_staged
    if volume.record.kind == "image":
        if stage_top is None or not stager.mounted_from(staging, device):
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
            source = _read_only_twin(stager, Path(stage.image)) if stage else ""
        identity = identity_of(entries, source) if source else MountIdentity("", "")
    top = top_mount_at(entries, target)
    record = stager.node_state.publication(target)
    wanted = PublishRecord(
        volume_id=volume_id,
        target_path=target,
        staging_path=staging,
        capability=capability,
        readonly=readonly,
        node_id=stager.node_id,
        device=identity.device,
        root=identity.root,
    )
    if top is not None:
        _check_published_same(stager, top, record, wanted, want_ro, check_other_targets)
        return
    if record is not None:
        stager.node_state.remove_publication(target)
    check_other_targets(volume_id, target, capability, entries)
    twin = ""
    if not source and stage is not None:
        source = twin = loop.attach(stager.runner, Path(stage.image), read_only=True)
        identity = identity_of(stager.mounter.mounts(), twin)
        wanted = wanted.model_copy(update={"device": identity.device, "root": identity.root})
    block = volume.record.kind == "block"
    created = _make_target_file(target) if block else make_mount_point(target, "target path")
    stager.node_state.put_publication(wanted)
    try:
        stager.mounter.bind(source, target, readonly=want_ro)
    except BaseException:
        stager.node_state.remove_publication(target)
        if created:
            _remove_created(target, block)
        if twin and not stager.device_users(twin):
            loop.detach(stager.runner, twin)
        raise
    log.info("published %s at %s (%s)", volume_id, target, "ro" if want_ro else "rw")


def _check_published_same(
    stager: ImageStager,
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
            stager.mounter.remount_readonly(target)
        return
    if top.read_only != want_ro:
        raise AlreadyExists(
            f"volume {volume_id} is already published at {target} "
            f"{'read-only' if top.read_only else 'read-write'}; unpublish it first"
        )
    check_other_targets(volume_id, target, wanted.capability, stager.mounter.mounts())
    stager.node_state.put_publication(wanted)


def release_twin(stager: ImageStager, publication: PublishRecord | None) -> None:
    """After an unpublish: detach the read-only twin device that publication used."""
    if publication is None or not publication.root.startswith("/loop"):
        return
    device = "/dev" + publication.root
    stage = stager.stages.get(publication.staging_path)
    if stage is None or stage.device == device or not device_exists(device):
        return
    in_use = stager.device_users(device) or device in {s.device for s in stager.stages.all()}
    if loop.is_read_only(device) and stager.backs(device, stage.image) and not in_use:
        loop.detach(stager.runner, device)


def _read_only_twin(stager: ImageStager, image: Path) -> str:
    for device in loop.devices_of(stager.runner, image):
        if loop.is_read_only(device):
            return device
    return ""


def image_stats(
    stager: ImageStager, volume: LocatedVolume, volume_path: StrPath
) -> tuple[VolumeUsage, bool, str]:
    """Image volumes: statvfs of the filesystem in the image. Block volumes: the device
    size only (what is used inside a raw device is unknown)."""
    volume_id = volume.record.volume_id
    path = canonical_path(volume_path, "volume_path")
    if not os.path.lexists(path):
        raise NotFound(f"{volume_path} does not exist on node {stager.node_id}")
    stage = stager.stage_at(volume_id, path)
    if stage is None:
        raise NotFound(
            f"volume {volume_id} is neither staged nor published at {volume_path} "
            f"on node {stager.node_id}"
        )
    device = stager.live_device(stage)
    problems: list[str] = []
    if not image_path(volume.path).is_file():
        problems.append(f"the volume's image file is gone from pool {volume.record.pool}")
    if device is None:
        problems.append(f"no loop device backs the volume's image on node {stager.node_id}")
    if volume.record.kind == "block" or device is None:
        size = loop.size_bytes(device) if device else volume.record.capacity_bytes
        return VolumeUsage(size, 0, 0, 0, 0, 0), bool(problems), "; ".join(problems)
    top = stager.mounter.find(path)
    if top is None or not top.identity.same_source(MountIdentity(device_number_of(device), "/")):
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
