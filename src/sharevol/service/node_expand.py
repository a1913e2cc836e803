"""NodeExpandVolume: after ControllerExpandVolume grew a volume's image file, make the node see
it: refresh the loop device's size, then grow the filesystem inside (image volumes).

XFS grows online (`xfs_growfs`). ext4 grows online with `resize2fs` where the node may
(EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE); where it may not, the answer is
FAILED_PRECONDITION while the volume is mounted, and the filesystem is grown offline
(`e2fsck -f -p` + `resize2fs`, before the mount) the next time the volume is staged.
Directory volumes need nothing: their quota grew on the controller.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sharevol.catalog.records import Capability
from sharevol.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from sharevol.service.images import image_path
from sharevol.service.mount_points import canonical_path
from sharevol.service.publishing import capability_covered
from sharevol.service.stage_image import ImageStager
from sharevol.sys import blockfs, loop
from sharevol.units import format_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeExpandRequest:
    """NodeExpandVolume in domain form (0 means unset for the byte counts)."""

    volume_id: str
    volume_path: str
    staging_path: str = ""
    required_bytes: int = 0
    limit_bytes: int = 0
    capability: Capability | None = None


def expand_on_node(stager: ImageStager, request: NodeExpandRequest) -> int:
    """Grow what this node sees of the volume; returns the volume's size in bytes."""
    volume = stager.locator.locate(request.volume_id)  # NotFound for unknown volumes
    record = volume.record
    if request.capability is not None and not capability_covered(
        request.capability, record.capabilities
    ):
        raise InvalidArgument(
            f"volume {record.volume_id} was not created for {request.capability.access_type}/"
            f"{request.capability.access_mode.value}"
        )
    path = canonical_path(request.volume_path, "volume_path")
    if not os.path.lexists(path):
        raise NotFound(f"{request.volume_path} does not exist on this node")
    if record.kind == "directory":
        _check_range(request, record.capacity_bytes)
        return record.capacity_bytes  # the quota grew online on the controller
    image = image_path(volume.path)
    try:
        image_bytes = image.stat().st_size
    except OSError as exc:
        raise NotFound(f"volume {record.volume_id} has no image file {image}") from exc
    _check_range(request, image_bytes)
    stage = stager.stage_at(record.volume_id, path)
    if stage is None and request.staging_path:
        staging = canonical_path(request.staging_path, "staging_target_path")
        stage = stager.stage_at(record.volume_id, staging)
    device = stager.live_device(stage) if stage is not None else None
    if stage is None or device is None:
        raise NotFound(
            f"volume {record.volume_id} is not staged or published at {path} on this node; "
            "an image volume's filesystem is grown when the volume is next staged"
        )
    loop.refresh_size(stager.runner, device)
    device_bytes = loop.size_bytes(device)
    if record.kind == "block":
        return device_bytes
    top = stager.mounter.find(stage.staging_path)
    if top is None or top.read_only:
        log.info("volume %s is not mounted read-write here; its filesystem grows when it is "
                 "next staged read-write", record.volume_id)  # fmt: skip
        return device_bytes
    if record.fs_type == "xfs":
        blockfs.grow_xfs(stager.runner, stage.staging_path)
    else:
        geometry = blockfs.ext4_geometry(stager.runner, device)
        if blockfs.ext4_would_grow(geometry, device_bytes) and not blockfs.resize_ext4_online(
            stager.runner, device
        ):
            raise FailedPrecondition(
                f"volume {record.volume_id}: this node may not grow a mounted ext4 filesystem "
                "(resize2fs needs CAP_SYS_RESOURCE); its filesystem grows offline to "
                f"{format_size(device_bytes)} when it is next staged (unpublish and unstage it)"
            )
    log.info("volume %s: filesystem grown to fill %s", record.volume_id, format_size(device_bytes))
    return device_bytes


def _check_range(request: NodeExpandRequest, size: int) -> None:
    """The node cannot make a volume bigger than the controller made it, nor smaller."""
    required, limit = request.required_bytes, request.limit_bytes
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range bytes must not be negative")
    if limit and required > limit:
        raise OutOfRange(f"required_bytes {required} is larger than limit_bytes {limit}")
    if required > size:
        raise OutOfRange(
            f"the volume is {format_size(size)}, less than required_bytes {required}: "
            "ControllerExpandVolume must grow it first"
        )
    if limit and size > limit:
        raise OutOfRange(
            f"the volume is already {format_size(size)}, above limit_bytes {limit}; "
            "sharevol never shrinks a volume"
        )
