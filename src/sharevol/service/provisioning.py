"""Controller-side volume lifecycle: create, delete, list, capacity, capability checks.

Provisioner is one object; its delete flow (sharevol.service.volume_deletion) and its queries
and capacity answers (sharevol.service.volume_queries) are mixins in their own modules.

Crash safety (DESIGN.md): a create first writes a reservation record (state `creating`), then
makes the volume, then marks it `ready`; a retry with the same name resumes from the record. A
delete first marks the record `deleting`, then acts, then forgets or re-labels it. At any crash
point a retry converges to one correct volume, and no subvolume or qgroup is left unowned.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sharevol.catalog.records import Capability, ContentSource, VolumeRecord
from sharevol.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    SharevolError,
)
from sharevol.service.capacity import choose_capacity, fits
from sharevol.service.content import ContentHook
from sharevol.service.exports import nfs_context
from sharevol.service.file_limits import FileLimits
from sharevol.service.hooks import VolumeHook, retire_quietly
from sharevol.service.ids import new_volume_ref
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
from sharevol.service.volume_deletion import MountsOf, VolumeDeletion
from sharevol.service.volume_guard import VolumeGuard
from sharevol.service.volume_queries import SPACE_TTL, TOPOLOGY_KEY, Page, VolumeQueries
from sharevol.sys.runner import SubprocessRunner
from sharevol.units import format_size

__all__ = [
    "CONTEXT_PREFIX",
    "SPACE_TTL",
    "TOPOLOGY_KEY",
    "CreateRequest",
    "MountsOf",
    "Page",
    "Provisioner",
    "volume_context",
]

log = logging.getLogger(__name__)

CONTEXT_PREFIX = "sharevol.csi.io/"


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


class Provisioner(VolumeDeletion, VolumeQueries):
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
        self.guard = VolumeGuard()
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
        pool_name, handle = self._pool_named(params.pool)
        capacity = choose_capacity(request.required_bytes, request.limit_bytes)
        layout = volume_layout(params, request.capabilities)
        capacity = fit_capacity(layout, capacity, request.limit_bytes)
        existing = self.index.by_name(request.name)
        if existing is not None:
            self._check_compatible(existing, request)
            if existing.state == "deleting":
                raise Aborted(f"volume {request.name!r} is being deleted; retry later")
            if existing.state == "ready":
                return existing
            with self.guard.hold(existing.volume_id):  # a resume never races a delete
                return self._finish(existing)
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
