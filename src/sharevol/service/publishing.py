"""The node side: stage a volume (bind its pool directory onto the staging path), publish it
(bind the staging path onto each target), undo both, and report usage of a published volume.

Idempotency follows the CSI spec's tables and is decided from `/proc/self/mountinfo` (what is
really mounted) plus one small record per stage and publication (what mountinfo cannot show:
capability, readonly flag, volume ID); the rules themselves live in
sharevol.service.publish_rules. Unpublish is a verified unmount followed by `rmdir`, never a
recursive delete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from sharevol.catalog.records import Capability
from sharevol.errors import (
    FailedPrecondition,
    Internal,
    NotFound,
    SharevolError,
)
from sharevol.pools.base import VolumeUsage
from sharevol.service.locate import LocatedVolume
from sharevol.service.mount_points import (
    StrPath,
    canonical_path,
    describe,
    make_mount_point,
    remove_published_target,
    rmdir_quietly,
    unmount_volume,
)
from sharevol.service.nfs_source import NfsSource, nfs_source
from sharevol.service.node_state import NodeState, PublishRecord, StageRecord
from sharevol.service.publish_rules import PublishRules, capability_covered, show_capability
from sharevol.service.stage_image import ImageStager
from sharevol.service.stage_nfs import NfsStager
from sharevol.sys.mounts import MountEntry, Mounter, MountIdentity, identity_of, top_mount_at
from sharevol.sys.nfs_mount import MOUNT_TIMEOUT
from sharevol.sys.runner import CommandRunner, SubprocessRunner

__all__ = ["Locator", "NodePublisher", "Publication", "capability_covered"]

log = logging.getLogger(__name__)


class Locator(Protocol):
    """Finds a ready volume by ID (sharevol.service.locate.VolumeLocator is the real one)."""

    def locate(self, volume_id: str) -> LocatedVolume: ...


class Publication(NamedTuple):
    """One live publication on this node, for `sharevol` node listings."""

    volume_id: str
    target_path: str
    staging_path: str
    readonly: bool


class NodePublisher:
    """Stage, publish, unpublish, unstage and stats of volumes on one node."""

    def __init__(
        self,
        locator: Locator,
        mounter: Mounter,
        state_dir: Path,
        node_id: str,
        runner: CommandRunner | None = None,
        mount_timeout: float = MOUNT_TIMEOUT,
    ) -> None:
        self._locator = locator
        self._mounter = mounter
        self._state = NodeState(state_dir)
        self._node_id = node_id
        self._rules = PublishRules(mounter, self._state, node_id)
        self.images = ImageStager(
            locator, mounter, runner or SubprocessRunner(), state_dir, node_id, self._state
        )
        """Image and block volumes (loop devices); every method below hands them over."""
        self.nfs = NfsStager(
            mounter, self.images.runner, state_dir, node_id, self._state,
            mount_timeout=mount_timeout,
        )  # fmt: skip
        """NFS volumes (kernel client mounts, from the volume context alone)."""

    # ---- stage / unstage -------------------------------------------------------------------

    def stage(
        self,
        volume_id: str,
        staging_path: StrPath,
        capability: Capability,
        volume_context: Mapping[str, str],
    ) -> None:
        """Bind the volume's directory onto `staging_path` (read-only for reader-only modes).
        Already staged identically: OK. Something else or other parameters there: AlreadyExists."""
        source = self._nfs_source(volume_id, volume_context)
        if source is not None:
            self.nfs.stage(volume_id, staging_path, capability, source)
            return
        volume = self._locate_for_use(volume_id, capability)
        if volume.record.kind != "directory":
            self.images.stage(volume, staging_path, capability)
            return
        staging = canonical_path(staging_path, "staging_target_path")
        entries = self._mounter.mounts()
        identity = _volume_identity(volume, entries, volume_id)
        top = top_mount_at(entries, staging)
        record = self._state.stage(staging)
        if top is not None:
            self._rules.check_staged_same(top, record, volume_id, staging, capability, identity)
            return
        if record is not None:
            log.info("dropping stale stage record of %s at %s", record.volume_id, staging)
            self._state.remove_stage(staging)
        make_mount_point(staging, "staging path")
        self._state.put_stage(self._rules.stage_record(volume_id, staging, capability, identity))
        try:
            self._mounter.bind(volume.path, staging, readonly=capability.access_mode.read_only)
        except BaseException:
            self._state.remove_stage(staging)
            raise
        log.info("staged %s at %s", volume_id, staging)

    def unstage(self, volume_id: str, staging_path: StrPath) -> None:
        """Unmount the stage (verified); not staged: OK. The staging dir itself belongs to the
        CO and stays."""
        if self.nfs.unstage(volume_id, staging_path):
            return
        if self.images.unstage(volume_id, staging_path):
            return
        staging = canonical_path(staging_path, "staging_target_path")
        record = self._state.stage(staging)
        expected = self._expected_identities(volume_id, record)
        still_published = [
            pub.target_path
            for pub in self._state.publications()
            if pub.volume_id == volume_id
            and pub.staging_path == staging
            and self._live(pub.target_path, pub.identity)
        ]
        if still_published:
            log.warning("unstaging %s while still published at %s", volume_id, still_published)
        unmount_volume(self._mounter, staging, expected, volume_id)
        self._state.remove_stage(staging)
        log.info("unstaged %s from %s", volume_id, staging)

    # ---- publish / unpublish ---------------------------------------------------------------

    def publish(
        self,
        volume_id: str,
        staging_path: StrPath,
        target_path: StrPath,
        capability: Capability,
        readonly: bool,
        volume_context: Mapping[str, str],
    ) -> None:
        """Bind the staged volume onto `target_path`, which this creates (a directory).
        Read-only when `readonly` is set or the access mode is a reader-only one."""
        if os.fspath(staging_path) in ("", "."):
            raise FailedPrecondition(
                "staging_target_path is required: this driver stages volumes (STAGE_UNSTAGE)"
            )
        if self._nfs_source(volume_id, volume_context) is not None:
            self.nfs.publish(volume_id, staging_path, target_path, capability, readonly,
                             self._rules.check_other_targets)  # fmt: skip
            return
        volume = self._locate_for_use(volume_id, capability)
        if volume.record.kind != "directory":
            self.images.publish(volume, staging_path, target_path, capability, readonly,
                                self._rules.check_other_targets)  # fmt: skip
            return
        staging = canonical_path(staging_path, "staging_target_path")
        target = canonical_path(target_path, "target_path")
        want_ro = readonly or capability.access_mode.read_only
        entries = self._mounter.mounts()
        identity = _volume_identity(volume, entries, volume_id)
        top = top_mount_at(entries, target)
        record = self._state.publication(target)
        if top is not None:
            self._rules.check_published_same(
                top, record, volume_id, staging, target, capability, readonly, identity
            )
            return
        if record is not None:
            log.info("dropping stale publish record of %s at %s", record.volume_id, target)
            self._state.remove_publication(target)
        stage_top = top_mount_at(entries, staging)
        if stage_top is None or not stage_top.identity.same_source(identity):
            raise FailedPrecondition(
                f"volume {volume_id} is not staged at {staging} on node {self._node_id}; "
                "NodeStageVolume must succeed first"
            )
        if stage_top.read_only and not want_ro:
            raise FailedPrecondition(
                f"volume {volume_id} is staged read-only at {staging}; it cannot be published "
                "read-write from there"
            )
        self._rules.check_other_targets(volume_id, target, capability, entries)
        created = make_mount_point(target, "target path")
        self._state.put_publication(
            self._rules.publish_record(volume_id, target, staging, capability, readonly, identity)
        )
        try:
            self._mounter.bind(staging, target, readonly=want_ro)
        except BaseException:
            self._state.remove_publication(target)
            if created:
                rmdir_quietly(target)
            raise
        log.info("published %s at %s (%s)", volume_id, target, "ro" if want_ro else "rw")

    def unpublish(self, volume_id: str, target_path: StrPath) -> None:
        """Unmount every mount of the volume at `target_path` (verified), then remove the
        directory (or file) publish created. Nothing there: OK. Something else there:
        FailedPrecondition, left alone. Never a recursive delete."""
        if self.nfs.owns_publication(volume_id, target_path):
            self.nfs.unpublish(volume_id, target_path)
            return
        target = canonical_path(target_path, "target_path")
        record = self._state.publication(target)
        expected = self._expected_identities(volume_id, record)
        unmounted = unmount_volume(self._mounter, target, expected, volume_id)
        recorded = record is not None and record.volume_id == volume_id
        if recorded or record is None:
            self._state.remove_publication(target)
        remove_published_target(target, recorded=recorded, unmounted=unmounted)
        self.images.release(record)  # a read-only twin loop device of a block publication
        log.info("unpublished %s from %s", volume_id, target)

    # ---- stats and listing -----------------------------------------------------------------

    def stats(self, volume_id: str, volume_path: StrPath) -> tuple[VolumeUsage, bool, str]:
        """Usage of a volume staged or published at `volume_path`, and whether it is abnormal
        (directory gone on the pool, or the path no longer holds the volume) with a message."""
        nfs_stats = self.nfs.stats(volume_id, volume_path)
        if nfs_stats is not None:
            return nfs_stats
        volume = self._locator.locate(volume_id)
        if volume.record.kind != "directory":
            return self.images.stats(volume, volume_path)
        path = canonical_path(volume_path, "volume_path")
        if not os.path.lexists(path):
            raise NotFound(f"{volume_path} does not exist on node {self._node_id}")
        entries = self._mounter.mounts()
        identity = identity_of(entries, os.path.realpath(volume.path))
        top = top_mount_at(entries, path)
        mounted_here = top is not None and top.identity.same_source(identity)
        recorded = any(
            rec.volume_id == volume_id
            for rec in (self._state.publication(path), self._state.stage(path))
            if rec is not None
        )
        if not mounted_here and not recorded:
            raise NotFound(
                f"volume {volume_id} is neither staged nor published at {volume_path} "
                f"on node {self._node_id}"
            )
        problems: list[str] = []
        if not volume.path.is_dir():
            problems.append(
                f"the volume's directory {volume.path} is gone from pool {volume.record.pool}"
            )
        elif top is not None and mounted_here and top.identity.deleted:
            problems.append(f"the directory mounted at {path} was deleted from the pool")
        if not mounted_here:
            held = f" (it holds {describe(top)})" if top is not None else ""
            problems.append(f"{path} no longer holds a mount of the volume's directory{held}")
        return self._usage(volume, problems), bool(problems), "; ".join(problems)

    def _usage(self, volume: LocatedVolume, problems: list[str]) -> VolumeUsage:
        record = volume.record
        try:
            return volume.pool.usage(record.directory, record.capacity_bytes, record.backend)
        except (SharevolError, OSError) as exc:
            if not problems:
                raise
            log.warning("no usage for abnormal volume %s: %s", record.volume_id, exc)
            return VolumeUsage(record.capacity_bytes, 0, 0, 0, 0, 0)

    def publications(self) -> list[Publication]:
        """Publications that are live (record and a mount of the same source at the target)."""
        entries = self._mounter.mounts()
        live: list[Publication] = []
        for record in self._state.publications():
            top = top_mount_at(entries, record.target_path)
            if top is not None and top.identity.same_source(record.identity):
                live.append(
                    Publication(
                        record.volume_id, record.target_path, record.staging_path, top.read_only
                    )
                )
        return sorted(live)

    def is_block(self, volume_id: str) -> bool:
        """Whether the volume is a raw block volume (NFS and static volumes never are)."""
        try:
            return self.images.is_block(volume_id)
        except NotFound:
            return False

    # ---- shared steps ----------------------------------------------------------------------

    def _nfs_source(self, volume_id: str, volume_context: Mapping[str, str]) -> NfsSource | None:
        """Where to mount the volume from over NFS, or None to bind it from a local pool: a
        directory volume of a pool this node serves is bound, unless that pool is itself an
        NFS share (nodes mount a share's volume folder directly)."""
        source = nfs_source(volume_id, volume_context)
        if source is None or source.static:
            return source
        try:
            volume = self._locator.locate(volume_id)
        except NotFound:
            return source
        local = not volume.pool.capabilities.remote_share
        return None if local and volume.record.kind == "directory" else source

    def _locate_for_use(self, volume_id: str, capability: Capability) -> LocatedVolume:
        """The volume, if the requested capability is within what it was created with."""
        volume = self._locator.locate(volume_id)
        if not capability_covered(capability, volume.record.capabilities):
            offered = ", ".join(show_capability(cap) for cap in volume.record.capabilities)
            raise FailedPrecondition(
                f"volume {volume_id} was created for {offered}; {show_capability(capability)} "
                "exceeds it"
            )
        if (capability.access_type == "block") != (volume.record.kind == "block"):
            raise FailedPrecondition(
                f"volume {volume_id} is a {volume.record.kind} volume; "
                f"{show_capability(capability)} does not apply to it"
            )
        return volume

    def _expected_identities(
        self, volume_id: str, record: StageRecord | PublishRecord | None
    ) -> list[MountIdentity]:
        """What a mount of this volume looks like: from the pool (if the volume still exists)
        and from our record (if it names this volume)."""
        expected: list[MountIdentity] = []
        if record is not None and record.volume_id == volume_id:
            expected.append(record.identity)
        try:
            volume = self._locator.locate(volume_id)
        except NotFound:
            return expected
        expected.append(identity_of(self._mounter.mounts(), os.path.realpath(volume.path)))
        expected.extend(self.images.identities(volume))  # loop filesystem or device node binds
        return expected

    def _live(self, path: str, identity: MountIdentity) -> bool:
        top = self._mounter.find(path)
        return top is not None and top.identity.same_source(identity)


def _volume_identity(
    volume: LocatedVolume, entries: Sequence[MountEntry], volume_id: str
) -> MountIdentity:
    if not volume.path.is_dir():
        raise Internal(
            f"volume {volume_id} has a record but its directory {volume.path} is missing on "
            f"pool {volume.record.pool}; the volume is damaged"
        )
    return identity_of(entries, os.path.realpath(volume.path))

