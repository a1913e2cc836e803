"""The controller's answers about volumes and pools: get, list (paged), usage, the capacity a
pool can still promise (GetCapacity), and whether a volume supports capabilities
(ValidateVolumeCapabilities). A mixin of Provisioner (sharevol.service.provisioning), which
owns the state it reads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sharevol.catalog.records import Capability, VolumeRecord
from sharevol.errors import Aborted, InvalidArgument, NotFound
from sharevol.pools.base import VolumeUsage
from sharevol.service.capacity import pool_budget
from sharevol.service.ids import check_id_length, parse_volume_id
from sharevol.service.index import VolumeIndex
from sharevol.service.locate import PoolHandle
from sharevol.service.params import parse_parameters

TOPOLOGY_KEY = "topology.sharevol.csi.io/node"
SPACE_TTL = 2.0
"""Seconds a pool's filesystem size is reused for capacity checks."""


@dataclass(frozen=True)
class Page:
    """One page of a listing and the token of the next one ("" when it was the last)."""

    records: list[VolumeRecord]
    next_token: str


class VolumeQueries:
    """Provisioner's read side; the attributes below are set by Provisioner.__init__."""

    _pools: Mapping[str, PoolHandle]
    _default_pool: str
    _node_id: str
    _space_cache: dict[str, tuple[float, int]]
    index: VolumeIndex

    def get(self, volume_id: str) -> VolumeRecord:
        """A ready volume by ID, or NotFound."""
        check_id_length(volume_id, "volume_id")
        record = self.index.get(volume_id) if parse_volume_id(volume_id) else None
        if record is None or record.state != "ready":
            raise NotFound(f"volume {volume_id!r} not found")
        return record

    def get_by_name(self, name: str) -> VolumeRecord:
        record = self.index.by_name(name)
        if record is None:
            raise NotFound(f"no volume named {name!r}")
        return record

    def list_page(self, starting_token: str, max_entries: int) -> Page:
        """ListVolumes: ready volumes in volume-ID order, resuming after the token's ID.

        The token is the last ID of the previous page, so volumes added or deleted between
        pages never make a valid token fail; a token that is not an ID is ABORTED (CSI)."""
        if max_entries < 0:
            raise InvalidArgument("max_entries must not be negative")
        if starting_token and parse_volume_id(starting_token) is None:
            raise Aborted(f"invalid starting_token {starting_token[:64]!r}")
        records = [
            r
            for r in self.index.records()
            if r.state == "ready" and (not starting_token or r.volume_id > starting_token)
        ]
        if max_entries and len(records) > max_entries:
            page = records[:max_entries]
            return Page(page, page[-1].volume_id)
        return Page(records, "")

    def usage(self, record: VolumeRecord) -> VolumeUsage:
        handle = self._pools[record.pool]
        return handle.pool.usage(record.directory, record.capacity_bytes, record.backend)

    def pools(self) -> Mapping[str, PoolHandle]:
        return self._pools

    def available_bytes(self, pool_name: str) -> int:
        """Bytes the pool may still promise to new volumes."""
        handle = self._pools[pool_name]
        budget = pool_budget(self._pool_total_bytes(handle), handle.overcommit)
        return max(0, budget - self.index.provisioned_bytes(pool_name))

    def _pool_total_bytes(self, handle: PoolHandle) -> int:
        """The pool filesystem's size, read at most every SPACE_TTL seconds: a statvfs (in a
        helper thread, with a deadline) on every create cost up to 0.8 ms, and the size only
        changes when an admin grows the filesystem."""
        now = time.monotonic()
        cached = self._space_cache.get(handle.pool.name)
        if cached is not None and now - cached[0] < SPACE_TTL:
            return cached[1]
        total = handle.pool.space().total_bytes
        self._space_cache[handle.pool.name] = (now, total)
        return total

    def capacity(self, parameters: Mapping[str, str], topology: Mapping[str, str] | None) -> int:
        """GetCapacity: what a new volume with these parameters could get."""
        pool_name, handle = self._pool_named(parse_parameters(parameters).pool)
        if topology and handle.pool.capabilities.node_local:
            node = topology.get(TOPOLOGY_KEY)
            if node is not None and node != self._node_id:
                return 0
        return self.available_bytes(pool_name)

    def _pool_named(self, pool_param: str | None) -> tuple[str, PoolHandle]:
        """The pool a `pool` parameter names (the default pool when it is not given)."""
        pool_name = pool_param or self._default_pool
        handle = self._pools.get(pool_name)
        if handle is None:
            raise InvalidArgument(f"unknown pool {pool_name!r} (pools: {', '.join(self._pools)})")
        return pool_name, handle

    def confirm_capabilities(
        self,
        record: VolumeRecord,
        capabilities: Sequence[Capability],
        parameters: Mapping[str, str],
    ) -> str | None:
        """None when the volume supports every capability asked, else why not (for the message
        of ValidateVolumeCapabilities, which answers OK without `confirmed`)."""
        if parameters and dict(parameters) != record.parameters:
            return "parameters differ from the ones the volume was created with"
        supported = {(c.access_mode, c.access_type) for c in record.capabilities}
        for capability in capabilities:
            if capability.access_type != record.access_type:
                return f"the volume is a {record.access_type} volume"
            if record.kind == "image" and capability.fs_type not in ("", record.fs_type):
                return f"the volume's image holds {record.fs_type}, not {capability.fs_type}"
            if (capability.access_mode, capability.access_type) not in supported and not any(
                _mode_covers(c, capability) for c in record.capabilities
            ):
                return f"access mode {capability.access_mode.value} was not requested at creation"
        return None


def _mode_covers(created: Capability, asked: Capability) -> bool:
    """A volume created for writers may also be used by readers of the same reach."""
    if created.access_type != asked.access_type:
        return False
    if asked.access_mode.read_only:
        return created.access_mode.multi_node or not asked.access_mode.multi_node
    return False
