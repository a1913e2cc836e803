"""The node side of NFS volumes: stage mounts `server:/path` with the kernel client once per
node, publish binds that mount onto each target (read-only where asked), unpublish and unstage
undo both. NodePublisher dispatches here when the volume context says NFS (a volume of the
managed NFS server or of a share pool on another machine, or a static PV).

A dead server must not wedge the node plugin: mount and unmount run under a timeout (an
unmount escalates to `umount -f`, then `umount -l`), and every look at the mounted files is a
statvfs with a deadline. A stale file handle (the server lost the directory, e.g. it was made
again) found at publish or stage mounts the stage again, and a target left on the old mount
is bound again. Nothing here reads the catalog: the context and our records are enough.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sharevol.catalog.records import Capability
from sharevol.errors import AlreadyExists, FailedPrecondition, Internal
from sharevol.pools.base import VolumeUsage
from sharevol.service.mount_points import (
    MAX_STACKED_MOUNTS,
    StrPath,
    canonical_path,
    describe,
    make_mount_point,
    remove_published_target,
    rmdir_quietly,
)
from sharevol.service.nfs_source import NfsSource
from sharevol.service.nfs_state import NfsStageRecord, NfsStages
from sharevol.service.nfs_stats import nfs_stats
from sharevol.service.node_state import NodeState, PublishRecord
from sharevol.service.publish_rules import check_same_parameters
from sharevol.sys.mounts import MountEntry, Mounter
from sharevol.sys.nfs_mount import (
    MOUNT_TIMEOUT,
    NFS_FS_TYPES,
    PROBE_TIMEOUT,
    Health,
    Probe,
    is_nfs_mount,
    merge_options,
    mount_nfs,
    probe,
    unmount_nfs,
)
from sharevol.sys.runner import CommandRunner

log = logging.getLogger(__name__)

OtherTargetsCheck = Callable[[str, str, Capability, Sequence[MountEntry]], None]
"""PublishRules.check_other_targets: the CSI publish table for a second target."""
Prober = Callable[[str, float], Probe]


class NfsStager:
    """Stage, publish, unpublish, unstage and stats of NFS volumes on one node."""

    def __init__(
        self,
        mounter: Mounter,
        runner: CommandRunner,
        state_dir: Path,
        node_id: str,
        node_state: NodeState,
        *,
        mount_timeout: float = MOUNT_TIMEOUT,
        probe_timeout: float = PROBE_TIMEOUT,
        prober: Prober = probe,
    ) -> None:
        self.mounter = mounter
        self.runner = runner
        self.stages = NfsStages(state_dir)
        self.node_id = node_id
        self.node_state = node_state
        self.mount_timeout = mount_timeout
        self.probe_timeout = probe_timeout
        self.prober = prober

    # ---- stage / unstage ------------------------------------------------------------------

    def stage(
        self, volume_id: str, staging_path: StrPath, capability: Capability, source: NfsSource
    ) -> None:
        """Mount the source at the staging path (read-only for reader-only modes) with the
        context's options and the capability's mount flags. Staged identically: OK (a stale
        stage is mounted again). Anything else there: AlreadyExists."""
        staging = canonical_path(staging_path, "staging_target_path")
        _check_mount_access(volume_id, capability)
        read_only = capability.access_mode.read_only
        options = merge_options(source.options, capability.mount_flags, ["ro"] if read_only else [])
        wanted = NfsStageRecord(
            volume_id=volume_id,
            staging_path=staging,
            device=source.device,
            options=tuple(options),
            capability=capability,
            node_id=self.node_id,
            static=source.static,
        )
        record = self.stages.get(staging)
        top = self.mounter.find(staging)
        if top is not None:
            if not is_nfs_mount(top, source.device):
                raise AlreadyExists(
                    f"staging path {staging} already holds another mount ({describe(top)}); "
                    f"unstage it before staging volume {volume_id} there"
                )
            if record is not None and record != wanted:
                raise AlreadyExists(
                    f"volume {record.volume_id} is already staged at {staging} from "
                    f"{record.device} with options {','.join(record.options)} and "
                    f"{_show(record.capability)}; unstage it first"
                )
            if record is None:  # our mount, its record lost: adopt it if it agrees
                if top.read_only != read_only:
                    raise AlreadyExists(
                        f"{staging} already holds {source.device} "
                        f"{'read-only' if top.read_only else 'read-write'}; unstage it first"
                    )
                self.stages.put(wanted)
            self._heal(wanted)
            return
        if record is not None:
            log.info("dropping stale NFS stage record of %s at %s", record.volume_id, staging)
            self.stages.remove(staging)
        make_mount_point(staging, "staging path")
        self.stages.put(wanted)
        try:
            self._mount(wanted)
        except BaseException:
            self.stages.remove(staging)
            raise
        log.info("staged %s at %s from %s", volume_id, staging, source.device)

    def unstage(self, volume_id: str, staging_path: StrPath) -> bool:
        """Unmount an NFS stage (escalating when stuck); False when `staging_path` is not an
        NFS stage of ours (the caller handles other kinds)."""
        staging = canonical_path(staging_path, "staging_target_path")
        record = self.stages.get(staging)
        if record is None:
            return False
        if record.volume_id != volume_id:
            raise FailedPrecondition(
                f"{staging} holds volume {record.volume_id}, not {volume_id}; leaving it alone"
            )
        published = [
            pub.target_path
            for pub in self.node_state.publications()
            if pub.volume_id == volume_id
            and pub.staging_path == staging
            and is_nfs_mount(self.mounter.find(pub.target_path), record.device)
        ]
        if published:
            log.warning("unstaging %s while still published at %s", volume_id, published)
        self._unmount_all(staging, volume_id, lambda top: is_nfs_mount(top, record.device))
        self.stages.remove(staging)
        log.info("unstaged %s from %s", volume_id, staging)
        return True

    # ---- publish / unpublish --------------------------------------------------------------

    def publish(
        self,
        volume_id: str,
        staging_path: StrPath,
        target_path: StrPath,
        capability: Capability,
        readonly: bool,
        check_other_targets: OtherTargetsCheck,
    ) -> None:
        """Bind the NFS stage onto `target_path` (created here). A stale stage is mounted
        again first; a target still bound to an older mount of the stage is bound again."""
        staging = canonical_path(staging_path, "staging_target_path")
        target = canonical_path(target_path, "target_path")
        stage = self.stages.get(staging)
        if stage is None or stage.volume_id != volume_id or not self._staged(stage):
            raise FailedPrecondition(
                f"volume {volume_id} is not staged at {staging} on node {self.node_id}; "
                "NodeStageVolume must succeed first"
            )
        _check_mount_access(volume_id, capability)
        want_ro = readonly or capability.access_mode.read_only
        if stage.capability.access_mode.read_only and not want_ro:
            raise FailedPrecondition(
                f"volume {volume_id} is staged read-only at {staging}; it cannot be published "
                "read-write from there"
            )
        stage_top = self._heal(stage)
        top = self.mounter.find(target)
        record = self.node_state.publication(target)
        if top is not None:
            if not is_nfs_mount(top, stage.device):
                raise AlreadyExists(
                    f"target path {target} already holds another mount ({describe(top)}); "
                    f"volume {volume_id} cannot be published there"
                )
            _check_same_publication(record, top, volume_id, staging, target, capability,
                                    readonly, want_ro)  # fmt: skip
            if top.identity.same_source(stage_top.identity):
                if want_ro and not top.read_only:
                    self.mounter.remount_readonly(target)  # someone made it writable
                if record is None:
                    check_other_targets(volume_id, target, capability, self.mounter.mounts())
                    self._put_publication(volume_id, staging, target, capability, readonly,
                                          stage_top)  # fmt: skip
                return
            log.warning("%s is bound to an older mount of %s; binding it again", target, staging)
            self._unmount_all(target, volume_id, lambda entry: is_nfs_mount(entry, stage.device))
        elif record is not None:
            log.info("dropping stale publish record of %s at %s", record.volume_id, target)
            self.node_state.remove_publication(target)
        check_other_targets(volume_id, target, capability, self.mounter.mounts())
        created = make_mount_point(target, "target path")
        self._put_publication(volume_id, staging, target, capability, readonly, stage_top)
        try:
            self.mounter.bind(staging, target, readonly=want_ro)
        except BaseException:
            self.node_state.remove_publication(target)
            if created:
                rmdir_quietly(target)
            raise
        log.info("published %s at %s (%s)", volume_id, target, "ro" if want_ro else "rw")

    def owns_publication(self, volume_id: str, target_path: StrPath) -> bool:
        """Whether `target_path` is a publication of an NFS stage of this volume."""
        target = canonical_path(target_path, "target_path")
        record = self.node_state.publication(target)
        if record is None or record.volume_id != volume_id:
            return False
        if self.stages.get(record.staging_path) is not None:
            return True
        top = self.mounter.find(target)
        return top is not None and top.fs_type in NFS_FS_TYPES

    def unpublish(self, volume_id: str, target_path: StrPath) -> None:
        """Unmount the NFS bind at the target (escalating when stuck), then remove the
        directory publish made. Never a recursive delete."""
        target = canonical_path(target_path, "target_path")
        record = self.node_state.publication(target)
        stage = self.stages.get(record.staging_path) if record is not None else None

        def ours(top: MountEntry) -> bool:
            if top.fs_type not in NFS_FS_TYPES:
                return False
            if stage is not None and top.source == stage.device:
                return True
            return record is not None and top.identity.same_source(record.identity)

        unmounted = self._unmount_all(target, volume_id, ours)
        recorded = record is not None and record.volume_id == volume_id
        if recorded or record is None:
            self.node_state.remove_publication(target)
        remove_published_target(target, recorded=recorded, unmounted=unmounted)
        log.info("unpublished %s from %s", volume_id, target)

    # ---- stats (sharevol.service.nfs_stats) ------------------------------------------------

    def stats(self, volume_id: str, volume_path: StrPath) -> tuple[VolumeUsage, bool, str] | None:
        return nfs_stats(self, volume_id, volume_path)

    # ---- shared steps ---------------------------------------------------------------------

    def _mount(self, record: NfsStageRecord) -> None:
        staging = record.staging_path
        mount_nfs(self.runner, record.device, staging, record.options, self.mount_timeout)
        if not is_nfs_mount(self.mounter.find(staging), record.device):
            raise Internal(
                f"mount of {record.device} at {staging} succeeded but mountinfo does not show it"
            )

    def _staged(self, record: NfsStageRecord) -> bool:
        return is_nfs_mount(self.mounter.find(record.staging_path), record.device)

    def _heal(self, record: NfsStageRecord) -> MountEntry:
        """The stage's mount once it answers: a stale one is mounted again; a server that does
        not answer is an error in time, never a hang."""
        health = self.prober(record.staging_path, self.probe_timeout)
        if health.health is Health.STALE:
            log.warning("%s: %s; mounting %s again", record.volume_id, health.message,
                        record.device)  # fmt: skip
            self._unmount_all(
                record.staging_path,
                record.volume_id,
                lambda top: is_nfs_mount(top, record.device),
            )
            self._mount(record)
            health = self.prober(record.staging_path, self.probe_timeout)
        if health.health is not Health.OK:
            raise Internal(
                f"volume {record.volume_id}: the NFS mount of {record.device} at "
                f"{record.staging_path} does not work: {health.message}"
            )
        top = self.mounter.find(record.staging_path)
        if top is None:
            raise Internal(f"{record.staging_path} lost its mount of {record.device}")
        return top

    def _unmount_all(self, path: str, volume_id: str, ours: Callable[[MountEntry], bool]) -> int:
        """Unmount our NFS mounts stacked at `path` until none is left; anything else there
        is left alone (FailedPrecondition). Returns how many it unmounted."""
        for unmounted in range(MAX_STACKED_MOUNTS):
            top = self.mounter.find(path)
            if top is None:
                return unmounted
            if not ours(top):
                raise FailedPrecondition(
                    f"{path} holds a mount that is not volume {volume_id} ({describe(top)}); "
                    "leaving it alone"
                )
            how = unmount_nfs(self.runner, path, self.mount_timeout)
            after = self.mounter.find(path)
            if after is not None and after.mount_id == top.mount_id:
                raise Internal(f"unmount of {path} ({how.value}) left the mount in place")
        raise Internal(f"more than {MAX_STACKED_MOUNTS} mounts stacked at {path}; not unmounting")

    def _put_publication(
        self,
        volume_id: str,
        staging: str,
        target: str,
        capability: Capability,
        readonly: bool,
        stage_top: MountEntry,
    ) -> None:
        self.node_state.put_publication(
            PublishRecord(
                volume_id=volume_id,
                target_path=target,
                staging_path=staging,
                capability=capability,
                readonly=readonly,
                node_id=self.node_id,
                device=stage_top.device,
                root=stage_top.root,
            )
        )


def _check_mount_access(volume_id: str, capability: Capability) -> None:
    if capability.access_type != "mount":
        raise FailedPrecondition(
            f"volume {volume_id} is an NFS directory; {_show(capability)} does not apply to it"
        )


def _check_same_publication(
    record: PublishRecord | None,
    top: MountEntry,
    volume_id: str,
    staging: str,
    target: str,
    capability: Capability,
    readonly: bool,
    want_ro: bool,
) -> None:
    """CSI publish table: the same target with other parameters is ALREADY_EXISTS."""
    if record is None:
        if top.read_only != want_ro:
            raise AlreadyExists(
                f"volume {volume_id} is already published at {target} "
                f"{'read-only' if top.read_only else 'read-write'}; unpublish it first"
            )
        return
    check_same_parameters(record, volume_id, staging, target, capability, readonly)


def _show(capability: Capability) -> str:
    return f"{capability.access_type}/{capability.access_mode.value}"
