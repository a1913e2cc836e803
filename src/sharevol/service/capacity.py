"""How big a new volume is, and whether a pool can fit it.

Accounting is by provisioned size, not by bytes written: a pool promises every volume its full
size, so the sum of sizes may reach the filesystem size times the pool's `overcommit`. Retained
and archived volumes keep their data, so they keep counting until they are purged.
"""

from __future__ import annotations

from sharevol.errors import InvalidArgument, OutOfRange
from sharevol.units import format_size

MIN_VOLUME_BYTES = 1024 * 1024
"""Below 1 MiB a btrfs subvolume cannot even hold its own metadata under its limit."""
DEFAULT_VOLUME_BYTES = 1024**3
"""The size of a volume created without a capacity range (CSI leaves it to the plugin)."""
BLOCK = 4096


def choose_capacity(required_bytes: int, limit_bytes: int) -> int:
    """The size to give for a CSI capacity_range (0 means unset), rounded up to 4 KiB."""
    if required_bytes < 0 or limit_bytes < 0:
        raise InvalidArgument("capacity_range bytes must not be negative")
    if limit_bytes and required_bytes > limit_bytes:
        raise OutOfRange(
            f"required_bytes {required_bytes} is larger than limit_bytes {limit_bytes}"
        )
    wanted = required_bytes or min(DEFAULT_VOLUME_BYTES, limit_bytes or DEFAULT_VOLUME_BYTES)
    size = max(wanted, MIN_VOLUME_BYTES)
    size = -(-size // BLOCK) * BLOCK
    if limit_bytes and size > limit_bytes:
        if limit_bytes < MIN_VOLUME_BYTES:
            raise OutOfRange(
                f"limit_bytes {limit_bytes} is below the smallest volume sharevol makes "
                f"({format_size(MIN_VOLUME_BYTES)})"
            )
        rounded_down = limit_bytes // BLOCK * BLOCK
        # No 4 KiB multiple in [required, limit]: the limit itself is a valid exact size.
        size = (
            rounded_down if rounded_down >= max(required_bytes, MIN_VOLUME_BYTES) else limit_bytes
        )
    return size


def fits(capacity_bytes: int, required_bytes: int, limit_bytes: int) -> bool:
    """Whether an existing volume of `capacity_bytes` satisfies a capacity_range."""
    if required_bytes and capacity_bytes < required_bytes:
        return False
    return not (limit_bytes and capacity_bytes > limit_bytes)


def pool_budget(total_bytes: int, overcommit: float) -> int:
    """How many bytes the pool may promise in all."""
    return int(total_bytes * overcommit)
