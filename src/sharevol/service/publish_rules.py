"""The CSI idempotency rules of NodeStageVolume and NodePublishVolume on a node: what a mount
already at the staging or target path means (this stage or publication again: OK; other
parameters: ALREADY_EXISTS; our mount with its record lost: adopted when it agrees), when a
second target on the node is allowed, and whether a requested capability is within what the
volume was created with. NodePublisher (sharevol.service.publishing) asks before it mounts.
"""

from __future__ import annotations

from collections.abc import Sequence

from sharevol.catalog.records import AccessMode, Capability
from sharevol.errors import AlreadyExists, FailedPrecondition
from sharevol.service.mount_points import describe
from sharevol.service.node_state import NodeState, PublishRecord, StageRecord
from sharevol.sys.mounts import MountEntry, Mounter, MountIdentity, top_mount_at

# (nodes, writers) an access mode allows; a request may not exceed what the volume was made for.
_REACH: dict[AccessMode, tuple[int, int]] = {
    AccessMode.SINGLE_NODE_READER_ONLY: (1, 0),
    AccessMode.SINGLE_NODE_SINGLE_WRITER: (1, 1),
    AccessMode.SINGLE_NODE_WRITER: (1, 2),
    AccessMode.SINGLE_NODE_MULTI_WRITER: (1, 2),
    AccessMode.MULTI_NODE_READER_ONLY: (2, 0),
    AccessMode.MULTI_NODE_SINGLE_WRITER: (2, 1),
    AccessMode.MULTI_NODE_MULTI_WRITER: (2, 2),
}


def capability_covered(requested: Capability, offered: Sequence[Capability]) -> bool:
    """Whether a volume created with `offered` capabilities can serve `requested`: same access
    type, and no more nodes or writers than one of the offered access modes allows."""
    if not offered:
        return True
    nodes, writers = _REACH[requested.access_mode]
    for capability in offered:
        max_nodes, max_writers = _REACH[capability.access_mode]
        same_type = capability.access_type == requested.access_type
        if same_type and nodes <= max_nodes and writers <= max_writers:
            return True
    return False


class PublishRules:
    """The rules above for one node's directory volumes; they read our records and write the
    record of a mount they adopt."""

    def __init__(self, mounter: Mounter, state: NodeState, node_id: str) -> None:
        self._mounter = mounter
        self._state = state
        self._node_id = node_id

    def stage_record(
        self, volume_id: str, staging: str, capability: Capability, source: MountIdentity
    ) -> StageRecord:
        """The record of a stage on this node of the mount source `source`."""
        return StageRecord(
            volume_id=volume_id,
            staging_path=staging,
            capability=capability,
            node_id=self._node_id,
            device=source.device,
            root=source.root,
        )

    def publish_record(
        self,
        volume_id: str,
        target: str,
        staging: str,
        capability: Capability,
        readonly: bool,
        source: MountIdentity,
    ) -> PublishRecord:
        """The record of a publication on this node of the mount source `source`."""
        return PublishRecord(
            volume_id=volume_id,
            target_path=target,
            staging_path=staging,
            capability=capability,
            readonly=readonly,
            node_id=self._node_id,
            device=source.device,
            root=source.root,
        )

    def check_staged_same(
        self,
        top: MountEntry,
        record: StageRecord | None,
        volume_id: str,
        staging: str,
        capability: Capability,
        identity: MountIdentity,
    ) -> None:
        """CSI stage table: something already mounted at the staging path is OK only when it
        is this volume staged with this capability; anything else is ALREADY_EXISTS."""
        if not top.identity.same_source(identity):
            raise AlreadyExists(
                f"staging path {staging} already holds another mount ({describe(top)}); "
                f"unstage it before staging volume {volume_id} there"
            )
        if record is not None and record.identity.same_source(top.identity):
            if record.volume_id != volume_id or record.capability != capability:
                raise AlreadyExists(
                    f"volume {volume_id} is already staged at {staging} with capability "
                    f"{show_capability(record.capability)}, not {show_capability(capability)}; "
                    "unstage it first"
                )
            return
        # A mount of this volume without a (valid) record, e.g. the state dir was lost:
        # adopt it if what mountinfo shows agrees with the request.
        if top.read_only != capability.access_mode.read_only:
            raise AlreadyExists(
                f"volume {volume_id} is already staged at {staging} "
                f"{'read-only' if top.read_only else 'read-write'}, which "
                f"{show_capability(capability)} does not match; unstage it first"
            )
        self._state.put_stage(self.stage_record(volume_id, staging, capability, top.identity))

    def check_published_same(
        self,
        top: MountEntry,
        record: PublishRecord | None,
        volume_id: str,
        staging: str,
        target: str,
        capability: Capability,
        readonly: bool,
        identity: MountIdentity,
    ) -> None:
        """CSI publish table: something already mounted at the target is OK only when it is
        this volume published with these parameters; anything else is ALREADY_EXISTS."""
        if not top.identity.same_source(identity):
            raise AlreadyExists(
                f"target path {target} already holds another mount ({describe(top)}); "
                f"volume {volume_id} cannot be published there"
            )
        want_ro = readonly or capability.access_mode.read_only
        if record is not None and record.identity.same_source(top.identity):
            check_same_parameters(record, volume_id, staging, target, capability, readonly)
            if want_ro and not top.read_only:
                # Someone made our read-only mount writable; put the promise back.
                self._mounter.remount_readonly(target)
            return
        if top.read_only != want_ro:
            raise AlreadyExists(
                f"volume {volume_id} is already published at {target} "
                f"{'read-only' if top.read_only else 'read-write'}; the request asks for "
                f"{'read-only' if want_ro else 'read-write'}; unpublish it first"
            )
        self.check_other_targets(volume_id, target, capability, self._mounter.mounts())
        self._state.put_publication(
            self.publish_record(volume_id, target, staging, capability, readonly, top.identity)
        )

    def check_other_targets(
        self,
        volume_id: str,
        target: str,
        capability: Capability,
        entries: Sequence[MountEntry],
    ) -> None:
        """CSI publish table: a second target on one node needs a mode that allows it, on both
        the new request and the existing publication (an RWOP publication stays single)."""
        for other in self._state.publications():
            if other.volume_id != volume_id or other.target_path == target:
                continue
            other_top = top_mount_at(entries, other.target_path)
            if other_top is None or not other_top.identity.same_source(other.identity):
                continue
            modes = (capability.access_mode, other.capability.access_mode)
            if not all(mode.allows_many_targets for mode in modes):
                raise FailedPrecondition(
                    f"volume {volume_id} is already published at {other.target_path} on node "
                    f"{self._node_id} with {other.capability.access_mode.value}; access mode "
                    f"{capability.access_mode.value} does not allow another target"
                )


def check_same_parameters(
    record: PublishRecord,
    volume_id: str,
    staging: str,
    target: str,
    capability: Capability,
    readonly: bool,
) -> None:
    """CSI publish table: the same target with other parameters than our record's is
    ALREADY_EXISTS (bind and NFS publications alike)."""
    differences = [
        what
        for what, differs in (
            ("volume", record.volume_id != volume_id),
            ("capability", record.capability != capability),
            ("readonly flag", record.readonly != readonly),
            ("staging path", record.staging_path != staging),
        )
        if differs
    ]
    if differences:
        raise AlreadyExists(
            f"volume {record.volume_id} is already published at {target} with a different "
            f"{', '.join(differences)}; unpublish it first"
        )


def show_capability(capability: Capability) -> str:
    """How messages name a capability: `mount/SINGLE_NODE_WRITER`."""
    return f"{capability.access_type}/{capability.access_mode.value}"
