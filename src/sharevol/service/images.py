"""Image and block volumes on the controller side: which kind a request makes, how big its pool
limit is, and the sparse `disk.img` inside the volume's folder (made, formatted, grown).

An image or block volume is a directory volume (a subvolume with a limit on btrfs, a directory
on plain pools) holding one sparse file `disk.img` of exactly the volume's size. The file's size
is what enforces the volume's size, on every pool, so these volumes count as quota-enforced even
on plain pools; snapshots and clones of the folder carry the file along.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sharevol.catalog.records import AccessMode, Capability, VolumeKind, VolumeRecord
from sharevol.errors import Internal, InvalidArgument, OutOfRange
from sharevol.pools.base import Pool
from sharevol.service.params import VolumeParameters
from sharevol.sys import blockfs, imagefile, loop
from sharevol.sys.runner import CommandRunner
from sharevol.units import format_size

log = logging.getLogger(__name__)

IMAGE_NAME = "disk.img"
PARTIAL_NAME = ".disk.img.new"
"""An image is made under this name and renamed once formatted, so `disk.img` existing always
means a finished image; a leftover partial file is ours alone and is made again."""
DEFAULT_FS_TYPE = "ext4"
MiB = 1024 * 1024
MIN_IMAGE_BYTES = {"ext4": 16 * MiB, "xfs": 300 * MiB, "": MiB}
"""ext4 below ~4 MiB has no journal; xfsprogs 5.19 and later refuse filesystems under 300 MB."""

_BLOCK_MODES = frozenset(
    {
        AccessMode.SINGLE_NODE_WRITER,
        AccessMode.SINGLE_NODE_READER_ONLY,
        AccessMode.SINGLE_NODE_SINGLE_WRITER,
        AccessMode.SINGLE_NODE_MULTI_WRITER,
        AccessMode.MULTI_NODE_READER_ONLY,
        AccessMode.MULTI_NODE_MULTI_WRITER,
    }
)
"""Raw block: one node, readers anywhere, or many writers that coordinate themselves. A single
writer across nodes cannot be enforced on a loop device, so it is not offered."""
_IMAGE_MODES = _BLOCK_MODES - {AccessMode.MULTI_NODE_MULTI_WRITER}
"""ext4 and XFS are not cluster filesystems: writers on one node only (RWO, RWOP), or ROX."""


@dataclass(frozen=True)
class Layout:
    """What a CreateVolume makes: its kind and, for image volumes, the filesystem."""

    kind: VolumeKind
    fs_type: str = ""


def volume_layout(params: VolumeParameters, capabilities: Sequence[Capability]) -> Layout:
    """The kind of volume a request asks for. Block comes from the CSI access type (Kubernetes
    `volumeMode: Block`), image from the `type` parameter; fsType from the parameter or the
    capability (the external-provisioner moves `csi.storage.k8s.io/fstype` there)."""
    access_types = {capability.access_type for capability in capabilities}
    if len(access_types) > 1:
        raise InvalidArgument("volume capabilities mix block and mount access types")
    if "block" in access_types:
        if params.volume_type != "directory" or params.fs_type is not None:
            raise InvalidArgument(
                "a block volume takes neither `type` nor `fsType`: it is a raw image file"
            )
        _check_modes(capabilities, _BLOCK_MODES, "block")
        return Layout("block")
    wanted = {capability.fs_type for capability in capabilities if capability.fs_type}
    if params.volume_type == "directory":
        if params.fs_type is not None:
            raise InvalidArgument("fsType applies to image volumes only: add type=image")
        return Layout("directory")
    if params.fs_type is not None:
        wanted.add(params.fs_type)
    if len(wanted) > 1:
        raise InvalidArgument(f"conflicting filesystem types {sorted(wanted)}; give one")
    fs_type = wanted.pop() if wanted else DEFAULT_FS_TYPE
    if fs_type not in blockfs.FS_TYPES:
        raise InvalidArgument(
            f"image volumes are formatted {' or '.join(blockfs.FS_TYPES)}, not {fs_type!r}"
        )
    _check_modes(capabilities, _IMAGE_MODES, f"{fs_type} image")
    return Layout("image", fs_type)


def _check_modes(
    capabilities: Sequence[Capability], allowed: frozenset[AccessMode], what: str
) -> None:
    for capability in capabilities:
        if capability.access_mode not in allowed:
            raise InvalidArgument(
                f"access mode {capability.access_mode.value} is not offered for {what} "
                "volumes; use a directory volume for shared writers"
            )


def fit_capacity(layout: Layout, capacity: int, limit_bytes: int) -> int:
    """Raise a size below what the filesystem can be made in to its minimum (CSI lets the
    plugin give more than required_bytes), unless limit_bytes forbids it: OUT_OF_RANGE."""
    if layout.kind == "directory":
        return capacity
    minimum = MIN_IMAGE_BYTES[layout.fs_type]
    if capacity >= minimum:
        return capacity
    if limit_bytes and limit_bytes < minimum:
        what = f"an {layout.fs_type} image" if layout.fs_type else "a block"
        raise OutOfRange(
            f"limit_bytes {limit_bytes} is below the smallest {what} volume "
            f"({format_size(minimum)})"
        )
    return minimum


def quota_limit_bytes(kind: VolumeKind, capacity_bytes: int) -> int:
    """The pool's hard limit (btrfs qgroup) for a volume of `capacity_bytes`.

    For image and block volumes the image file's size enforces the volume size; the qgroup
    limit is only a backstop and must never fire under a loop device (the filesystem inside
    would see I/O errors). btrfs counts a whole extent while a file references any part of
    it: after a snapshot, rewriting an image in place makes it reference up to twice its size
    (measured: 1.5x after rewriting half of a 256 MiB image). Fully fragmented file metadata
    measured 2.2% (4 KiB random writes). So: twice the size, plus 1/16, plus 64 MiB."""
    if kind == "directory":
        return capacity_bytes
    return 2 * capacity_bytes + capacity_bytes // 16 + 64 * MiB


def image_path(volume_path: Path) -> Path:
    return volume_path / IMAGE_NAME


class ImageFiles:
    """Makes and grows the image files of image and block volumes on the controller."""

    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    def finish(self, pool: Pool, record: VolumeRecord) -> None:
        """Give a new (or restored, or cloned) image or block volume its image file of exactly
        the record's size, and its pool limit. Idempotent: a retry after a crash converges."""
        if record.kind == "directory":
            return
        volume_path = pool.volume_path(record.directory)
        if pool.capabilities.enforces_quota:
            limit = quota_limit_bytes(record.kind, record.capacity_bytes)
            pool.set_limit(record.directory, limit, record.backend)
        image = image_path(volume_path)
        if os.path.lexists(image):
            self.grow(volume_path, record.capacity_bytes)  # a clone bigger than its source
            return
        partial = volume_path / PARTIAL_NAME
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        imagefile.create_sparse(
            partial, record.capacity_bytes, nocow=pool.capabilities.enforces_quota
        )
        if record.kind == "image":
            blockfs.make_filesystem(self._runner, partial, record.fs_type)
        try:
            os.rename(partial, image)
            _fsync_dir(volume_path)
        except OSError as exc:
            raise Internal(f"cannot put image file {image} in place: {exc.strerror}") from exc
        log.info(
            "volume %s: %s image file %s made (%s)",
            record.volume_id,
            record.fs_type or "block",
            image,
            format_size(record.capacity_bytes),
        )

    def grow(self, volume_path: Path, capacity_bytes: int) -> int:
        """Grow the volume's image file to `capacity_bytes` (truncate up; never down)."""
        image = image_path(volume_path)
        if not image.is_file() or image.is_symlink():
            raise Internal(f"image file {image} is missing or not a regular file")
        return imagefile.grow(image, capacity_bytes)

    def users(self, volume_path: Path) -> list[str]:
        """Loop devices on this machine backed by the volume's image (a staged volume)."""
        image = image_path(volume_path)
        if not image.is_file():
            return []
        return loop.devices_of(self._runner, image)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
