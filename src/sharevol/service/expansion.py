"""ControllerExpandVolume: raise a volume's size online, idempotently, within the pool's budget.

Directory volumes grow by raising the pool limit (btrfs qgroup; plain pools only record it) and
need nothing on the node. Image and block volumes also grow their image file (truncate up) and
need the node to refresh the loop device and grow the filesystem (NodeExpandVolume).

Order for crash safety: the pool limit and the file grow first (both idempotent, growing only),
the record last, so a retry after a crash at any point redoes the work and then records it; a
record never promises a size the pool does not hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sharevol.errors import InvalidArgument, OutOfRange, ResourceExhausted
from sharevol.service.capacity import BLOCK, pool_budget
from sharevol.service.images import image_path, quota_limit_bytes
from sharevol.service.provisioning import Provisioner
from sharevol.units import format_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expanded:
    """CSI ControllerExpandVolumeResponse in domain form."""

    capacity_bytes: int
    node_expansion_required: bool


def target_size(current: int, required_bytes: int, limit_bytes: int) -> int:
    """The size to grow to (4 KiB multiples), or `current` when it already satisfies the range.

    Sizes never go down: a range entirely below the current size is OUT_OF_RANGE (sharevol
    does not shrink), a range that the current size satisfies is OK with the current size
    (CSI idempotency: "already >= the target")."""
    if required_bytes < 0 or limit_bytes < 0:
        raise InvalidArgument("capacity_range bytes must not be negative")
    if not required_bytes and not limit_bytes:
        raise InvalidArgument("capacity_range must set required_bytes (the new size)")
    if limit_bytes and required_bytes > limit_bytes:
        raise OutOfRange(
            f"required_bytes {required_bytes} is larger than limit_bytes {limit_bytes}"
        )
    if limit_bytes and current > limit_bytes:
        raise OutOfRange(
            f"the volume is already {format_size(current)}, above limit_bytes {limit_bytes}; "
            "sharevol never shrinks a volume"
        )
    if required_bytes <= current:
        return current
    size = -(-required_bytes // BLOCK) * BLOCK
    if limit_bytes and size > limit_bytes:
        size = limit_bytes  # no 4 KiB multiple in [required, limit]: the limit is exact
    return size


class VolumeExpander:
    """Grows volumes of the Provisioner's pools; every change happens under the pool lock."""

    def __init__(self, provisioner: Provisioner) -> None:
        self._provisioner = provisioner

    def expand(self, volume_id: str, required_bytes: int, limit_bytes: int) -> Expanded:
        record = self._provisioner.get(volume_id)  # NotFound for unknown and unready volumes
        handle = self._provisioner.pools()[record.pool]
        with handle.catalog.pool_lock():
            record = self._provisioner.get(volume_id)
            node_required = record.kind != "directory"
            current = record.capacity_bytes
            size = target_size(current, required_bytes, limit_bytes)
            if node_required:
                # An expansion that grew the image but crashed before its record was written
                # left a bigger file: never record (or limit) less than the image really is.
                size = max(size, _image_bytes(handle.pool.volume_path(record.directory)))
            if size == current:
                return Expanded(current, node_required)
            self._check_budget(record.pool, size, size - current)
            pool = handle.pool
            if pool.capabilities.enforces_quota:
                limit = quota_limit_bytes(record.kind, size)
                pool.set_limit(record.directory, limit, record.backend)
            if record.kind != "directory":
                self._provisioner.images.grow(pool.volume_path(record.directory), size)
            grown = record.model_copy(update={"capacity_bytes": size})
            handle.catalog.put_volume(grown)
            self._provisioner.index.put(grown)
        log.info(
            "expanded volume %s (%s) from %s to %s",
            volume_id,
            record.name,
            format_size(current),
            format_size(size),
        )
        return Expanded(size, node_required)

    def _check_budget(self, pool_name: str, size: int, growth: int) -> None:
        """The growth must fit what the pool may still promise: RESOURCE_EXHAUSTED when it
        does not fit now (space may be freed), OUT_OF_RANGE when the volume alone would pass
        the pool's whole budget (it never can fit)."""
        handle = self._provisioner.pools()[pool_name]
        budget = pool_budget(handle.pool.space().total_bytes, handle.overcommit)
        if size > budget:
            raise OutOfRange(
                f"pool {pool_name!r} can promise {format_size(budget)} in all; a volume of "
                f"{format_size(size)} can never fit"
            )
        available = self._provisioner.available_bytes(pool_name)
        if growth > available:
            raise ResourceExhausted(
                f"pool {pool_name!r} cannot grow the volume by {format_size(growth)}: "
                f"{format_size(available)} left to provision"
            )


def _image_bytes(volume_path: Path) -> int:
    """The size of a volume's image file, 0 when there is none (yet)."""
    try:
        return image_path(volume_path).stat().st_size
    except FileNotFoundError:
        return 0
