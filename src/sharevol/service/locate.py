"""Find a volume's pool, record and data path from its ID, reading the catalog on the pool.

The node side uses this too: any machine that has the pool mounted can read its records, so
NodeStage/Publish need nothing from the controller's memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sharevol.catalog.records import VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.errors import NotFound
from sharevol.pools.base import Pool
from sharevol.service.ids import check_id_length, parse_volume_id


@dataclass(frozen=True)
class LocatedVolume:
    """A volume that exists in a pool we serve."""

    pool: Pool
    record: VolumeRecord
    path: Path


@dataclass(frozen=True)
class PoolHandle:
    """A started pool with its catalog and the admin's accounting policy."""

    pool: Pool
    catalog: Catalog
    overcommit: float = 1.0


class VolumeLocator:
    """Maps volume IDs to ready volumes on the configured pools."""

    def __init__(self, pools: Mapping[str, PoolHandle]) -> None:
        self._pools = pools

    def locate(self, volume_id: str) -> LocatedVolume:
        """The ready volume with that ID; NotFound for anything else (unknown pool, no record,
        a volume still being created, or a string that is not one of our IDs)."""
        check_id_length(volume_id, "volume_id")
        ref = parse_volume_id(volume_id)
        handle = self._pools.get(ref.pool) if ref else None
        if ref is None or handle is None:
            raise NotFound(f"volume {volume_id!r} not found")
        record = handle.catalog.read_volume(ref.uuid)
        if record is None or record.state != "ready":
            raise NotFound(f"volume {volume_id!r} not found")
        return LocatedVolume(handle.pool, record, handle.pool.volume_path(record.directory))
