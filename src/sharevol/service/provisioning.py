"""Controller-side volume lifecycle: create, delete, list, capacity, capability checks.

Crash safety (DESIGN.md): a create first writes a reservation record (state `creating`), then
makes the volume, then marks it `ready`; a retry with the same name resumes from the record. A
delete first marks the record `deleting`, then acts, then forgets or re-labels it. At any crash
point a retry converges to one correct volume, and no subvolume or qgroup is left unowned.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sharevol.catalog.records import Capability, ContentSource, OnDelete, VolumeRecord
from sharevol.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    SharevolError,
)
from sharevol.pools.base import VolumeUsage
from sharevol.service.capacity import choose_capacity, fits, pool_budget
from sharevol.service.content import ContentHook
from sharevol.service.exports import nfs_context
from sharevol.service.file_limits import FileLimits
from sharevol.service.hooks import VolumeHook, retire_quietly
from sharevol.service.ids import check_id_length, new_volume_ref, parse_volume_id
from sharevol.service.images import (
    ImageFiles,
    Layout,
    fit_capacity,
    quota_limit_bytes,
    volume_layout,
)
from sharevol.service.index import VolumeIndex
from sharevol.service.locate import PoolHandle
from sharevol.service.naming import render_directory
from sharevol.service.nfs_source import share_context
from sharevol.service.ownership import RootOwnership
from sharevol.service.params import check_map_size, parse_parameters
from sharevol.sys.runner import SubprocessRunner
from sharevol.units import format_size

log = logging.getLogger(__name__)

TOPOLOGY_KEY = "topology.sharevol.csi.io/node"
SPACE_TTL = 2.0
"""Seconds a pool's filesystem size is reused for capacity checks."""
CONTEXT_PREFIX = "sharevol.csi.io/"

MountsOf = Callable[[VolumeRecord], list[str]]
"""Where a volume's directory is mounted on this machine (empty when nowhere)."""


@dataclass(frozen=True)
class CreateRequest:
    """CreateVolume in domain form (the csi layer has checked required fields)."""

    name: str
    capabilities: tuple[Capability, ...]
    required_bytes: int = 0
    limit_bytes: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict)
    mutable_parameters: Mapping[str, str] = field(default_factory=dict)
    requisite_topologies: tuple[Mapping[str, str], ...] = ()
    content_source: ContentSource | None = None
    """A restore (snapshot) or clone (volume); see sharevol.service.clones."""


@dataclass(frozen=True)
class Page:
    """One page of a listing and the token of the next one ("" when it was the last)."""

    records: list[VolumeRecord]
    next_token: str


class Provisioner:
    """The volumes of every pool this controller serves."""

    def __init__(
        self,
        pools: Mapping[str, PoolHandle],
        default_pool: str,
        node_id: str,
        mounts_of: MountsOf | None = None,
        images: ImageFiles | None = None,
    ) -> None:
        self._pools = pools
        self._default_pool = default_pool
        self._node_id = node_id
        self._mounts_of = mounts_of or (lambda _record: [])
        self.images = images or ImageFiles(SubprocessRunner())
        """Image and block volumes' image files (sharevol.service.images)."""
        self.content: ContentHook | None = None
        """Restores and clones (sharevol.service.clones); None refuses content sources."""
        self.hooks: list[VolumeHook] = [RootOwnership(pools), FileLimits(pools)]
        """Root owner/mode, file limit, NFS export: run around a volume's life
        (sharevol.service.hooks)."""
        self._space_cache: dict[str, tuple[float, int]] = {}
        self.index = VolumeIndex(
            record for handle in pools.values() for record in handle.catalog.load_volumes()
        )

    def reapply_limits(self) -> int:
        """Set every ready volume's hard limit again; returns how many were set.

        Disabling and re-enabling btrfs quotas recreates the qgroups without their limits, so a
        controller start puts back what the records promise (milliseconds for thousands)."""
        count = 0
        for record in self.index.records():
            handle = self._pools.get(record.pool)
            if record.state != "ready" or handle is None:
                continue
            if handle.pool.capabilities.enforces_quota:
                limit = quota_limit_bytes(record.kind, record.capacity_bytes)
                try:
                    handle.pool.set_limit(record.directory, limit, record.backend)
                except SharevolError as exc:  # one broken volume must not stop the controller
                    log.error("volume %s (%s): cannot set its limit: %s; run `sharevol doctor`",
                              record.volume_id, record.name, exc)  # fmt: skip
                    continue
                count += 1
        return count

    # -- create ---------------------------------------------------------------------------

    def create_volume(self, request: CreateRequest) -> VolumeRecord:
        """Create the named volume, or return it when it already exists compatibly."""
        params = parse_parameters(request.parameters)
        check_map_size(request.mutable_parameters, "mutable_parameters")
        if request.mutable_parameters:
            raise InvalidArgument("sharevol has no mutable parameters yet")
        pool_name = params.pool or self._default_pool
        handle = self._pools.get(pool_name)
        if handle is None:
            raise InvalidArgument(f"unknown pool {pool_name!r} (pools: {', '.join(self._pools)})")
        capacity = choose_capacity(request.required_bytes, request.limit_bytes)
        layout = volume_layout(params, request.capabilities)
        capacity = fit_capacity(layout, capacity, request.limit_bytes)
        existing = self.index.by_name(request.name)
        if existing is not None:
            self._check_compatible(existing, request)
            if existing.state == "deleting":
                raise Aborted(f"volume {request.name!r} is being deleted; retry later")
            return existing if existing.state == "ready" else self._finish(existing)
        if request.content_source is not None:  # restore or clone: the source decides
            pool_name, capacity = self._content_origin(
                request.content_source, request, params.pool, layout
            )
            handle = self._pools[pool_name]
        topology = self._topology(handle, request)
        with handle.catalog.pool_lock():
            self._check_fits(handle, capacity)
            ref = new_volume_ref(pool_name)
            directory = render_directory(params, ref.uuid)
            self._check_directory_free(handle, directory)
            record = VolumeRecord(
                volume_id=ref.volume_id,
                name=request.name,
                pool=pool_name,
                uuid=ref.uuid,
                directory=directory,
                capacity_bytes=capacity,
                capabilities=request.capabilities,
                parameters=dict(request.parameters),
                on_delete=params.on_delete,
                state="creating",
                # An image file's size is a hard limit on any pool (sharevol.service.images).
                quota_enforced=(
                    handle.pool.capabilities.enforces_quota or layout.kind != "directory"
                ),
                kind=layout.kind,
                fs_type=layout.fs_type,
                accessible_topology=topology,
                content_source=request.content_source,
            )
            self.index.put(record)  # the reservation: in memory under the lock (capacity, name)
        try:
            # ...and on disk outside it, so concurrent creates do not queue behind fsyncs.
            # It is durable before any data is made, as the crash-safety rule needs.
            handle.catalog.put_volume(record)
        except BaseException:
            self.index.remove(record.volume_id)
            raise
        return self._finish(record)

    def _finish(self, record: VolumeRecord) -> VolumeRecord:
        """Make the volume of a `creating` record and mark it ready; undo it on failure."""
        handle = self._pools[record.pool]
        try:
            if record.content_source is None:
                limit = quota_limit_bytes(record.kind, record.capacity_bytes)
                backend = handle.pool.create_volume(record.directory, limit)
            else:  # restore or clone (sharevol.service.clones)
                backend = self._content_hook().populate(record)
            self.images.finish(handle.pool, record.model_copy(update={"backend": backend}))
            for hook in self.hooks:  # root owner, NFS export (sharevol.service.hooks)
                record = hook.prepare(record.model_copy(update={"backend": backend}))
                backend = record.backend  # a hook may record facts too (maxFiles)
        except Aborted:
            raise  # a background copy into the volume still runs: the reservation stays
        except SharevolError:
            log.exception("creating volume %s failed; removing its reservation", record.volume_id)
            retire_quietly(reversed(self.hooks), record)
            handle.pool.delete_volume(record.directory, record.backend)
            handle.catalog.remove_volume(record.uuid)
            self.index.remove(record.volume_id)
            raise
        ready = record.model_copy(update={"state": "ready", "backend": backend})
        handle.catalog.put_volume(ready)
        self.index.put(ready)
        log.info(
            "created volume %s (%s) in pool %s: %s, %s",
            ready.volume_id,
            ready.name,
            ready.pool,
            format_size(ready.capacity_bytes),
            "quota enforced" if ready.quota_enforced else "size not enforced",
        )
        return ready

    def _content_hook(self) -> ContentHook:
        if self.content is None:
            raise InvalidArgument("this server does not create volumes from a content source")
        return self.content

    def _content_origin(
        self,
        source: ContentSource,
        request: CreateRequest,
        pool_param: str | None,
        layout: Layout,
    ) -> tuple[str, int]:
        """Pool and size of a restore or clone: the source's pool, at least the source's size
        (the source's size when no capacity is asked), and the source's kind of volume."""
        origin = self._content_hook().resolve(source)
        if (origin.kind, origin.fs_type) != (layout.kind, layout.fs_type):
            raise InvalidArgument(
                f"the source is a {origin.kind} volume{_fs(origin.fs_type)}; a restore or clone "
                f"must be one too, not a {layout.kind} volume{_fs(layout.fs_type)}"
            )
        if pool_param and pool_param != origin.pool:
            raise InvalidArgument(
                f"the source is in pool {origin.pool!r}: a restore or clone is made in the "
                f"same pool, not in {pool_param!r}"
            )
        if request.limit_bytes and request.limit_bytes < origin.size_bytes:
            raise OutOfRange(
                f"limit_bytes {request.limit_bytes} is smaller than the source "
                f"({format_size(origin.size_bytes)})"
            )
        capacity = choose_capacity(request.required_bytes or origin.size_bytes, request.limit_bytes)
        if capacity < origin.size_bytes:
            raise OutOfRange(
                f"a restore or clone cannot be smaller than its source "
                f"({format_size(origin.size_bytes)}); asked {format_size(capacity)}"
            )
        return origin.pool, capacity

    def _check_compatible(self, existing: VolumeRecord, request: CreateRequest) -> None:
        """CSI CreateVolume idempotency: same name must mean the same volume."""
        problems = []
        if not fits(existing.capacity_bytes, request.required_bytes, request.limit_bytes):
            problems.append(
                f"its size {existing.capacity_bytes} is outside the requested range "
                f"[{request.required_bytes}, {request.limit_bytes or 'unlimited'}]"
            )
        if set(existing.capabilities) != set(request.capabilities):
            problems.append("it has other volume capabilities")
        if existing.parameters != dict(request.parameters):
            problems.append("it has other parameters")
        if existing.content_source != request.content_source:
            problems.append("it has another content source")
        if request.requisite_topologies and not _topology_allowed(
            existing.accessible_topology, request.requisite_topologies
        ):
            problems.append("its topology is not among the requisite ones")
        if problems:
            raise AlreadyExists(
                f"volume {existing.name!r} already exists and is incompatible: "
                + "; ".join(problems)
            )

    def _topology(self, handle: PoolHandle, request: CreateRequest) -> dict[str, str]:
        if not handle.pool.capabilities.node_local:
            return {}
        topology = {TOPOLOGY_KEY: self._node_id}
        if request.requisite_topologies and not _topology_allowed(
            topology, request.requisite_topologies
        ):
            raise ResourceExhausted(
                f"pool {handle.pool.name!r} is local to node {self._node_id!r}, which is not "
                "among the requisite topologies"
            )
        return topology

    def _check_fits(self, handle: PoolHandle, capacity: int) -> None:
        available = self.available_bytes(handle.pool.name)
        if capacity > available:
            raise ResourceExhausted(
                f"pool {handle.pool.name!r} cannot fit {format_size(capacity)}: "
                f"{format_size(available)} left to provision"
            )

    def _check_directory_free(self, handle: PoolHandle, directory: str) -> None:
        owner = self.index.directory_owner(handle.pool.name, directory)
        if owner is not None:
            raise AlreadyExists(
                f"directory {directory!r} in pool {handle.pool.name!r} already belongs to "
                f"volume {owner.name!r} ({owner.state})"
            )
        if handle.pool.volume_path(directory).exists():
            raise AlreadyExists(
                f"directory {directory!r} exists in pool {handle.pool.name!r} but belongs to no "
                "volume; move it away or use another subDir"
            )

    # -- delete ---------------------------------------------------------------------------

    def delete_volume(self, volume_id: str) -> None:
        """Delete, retain or archive a volume as recorded at create time; unknown IDs are OK."""
        check_id_length(volume_id, "volume_id")
        ref = parse_volume_id(volume_id)
        if ref is None or ref.pool not in self._pools:
            return
        record = self.index.get(volume_id)
        if record is None or not record.live:
            return
        mounts = self._mounts_of(record) if record.state == "ready" else []
        if mounts:
            raise FailedPrecondition(
                f"volume {record.name!r} is in use: mounted at {', '.join(sorted(mounts))}"
            )
        if self.content is not None:
            self.content.before_delete(record)  # a copy still reading it, or into it
        handle = self._pools[record.pool]
        now = dt.datetime.now(dt.UTC)
        # The archive name is decided once and recorded before anything moves, so a retry after
        # a crash looks for the archive where the first attempt put it.
        archive_name = record.archive_name or f"{record.directory}-{now:%Y%m%dT%H%M%SZ}"
        deleting = record.model_copy(update={"state": "deleting", "archive_name": archive_name})
        handle.catalog.put_volume(deleting)
        self.index.put(deleting)
        for hook in reversed(self.hooks):  # the NFS export goes before the data
            hook.retire(deleting)
        if record.on_delete is OnDelete.DELETE:
            handle.pool.delete_volume(record.directory, record.backend)
            handle.catalog.remove_volume(record.uuid)
            self.index.remove(volume_id)
        elif record.on_delete is OnDelete.RETAIN:
            self._relabel(
                handle, deleting.model_copy(update={"state": "retained", "deleted_at": now})
            )
        else:
            handle.pool.archive_volume(record.directory, archive_name)
            self._relabel(
                handle,
                deleting.model_copy(
                    update={"state": "archived", "deleted_at": now, "archive_name": archive_name}
                ),
            )
        log.info("deleted volume %s (%s): %s", volume_id, record.name, record.on_delete.value)

    def _relabel(self, handle: PoolHandle, record: VolumeRecord) -> None:
        handle.catalog.put_volume(record)
        self.index.put(record)

    # -- queries --------------------------------------------------------------------------

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
        params = parse_parameters(parameters)
        pool_name = params.pool or self._default_pool
        handle = self._pools.get(pool_name)
        if handle is None:
            raise InvalidArgument(f"unknown pool {pool_name!r} (pools: {', '.join(self._pools)})")
        if topology and handle.pool.capabilities.node_local:
            node = topology.get(TOPOLOGY_KEY)
            if node is not None and node != self._node_id:
                return 0
        return self.available_bytes(pool_name)

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


def _topology_allowed(topology: Mapping[str, str], requisite: Sequence[Mapping[str, str]]) -> bool:
    """A volume with no topology is reachable everywhere; otherwise one requisite must match."""
    if not topology:
        return True
    return any(all(topology.get(k) == v for k, v in t.items() if k in topology) for t in requisite)


def volume_context(record: VolumeRecord) -> dict[str, str]:
    """What a node (and a human reading the PV) learns from CreateVolume."""
    return {
        f"{CONTEXT_PREFIX}pool": record.pool,
        f"{CONTEXT_PREFIX}directory": record.directory,
        f"{CONTEXT_PREFIX}quota": "enforced" if record.quota_enforced else "not enforced",
        f"{CONTEXT_PREFIX}onDelete": record.on_delete.value,
        **nfs_context(record),
        **share_context(record),  # volumes of NFS share pools: nodes mount their folder
    }


def _fs(fs_type: str) -> str:
    return f" ({fs_type})" if fs_type else ""
