"""ControllerPublishVolume/ControllerUnpublishVolume: which nodes may mount a volume's export.

A publication is recorded in the volume's catalog record first (the truth, rebuilt on restart)
and then applied to Ganesha (UpdateExport with the new client list); a retry re-applies, so
a failure between the two converges. Single-node access modes hold across nodes: a volume
published for RWO/RWOP on one node cannot be published to a second one (FAILED_PRECONDITION).
Volumes that are not exported over NFS need nothing: publish and unpublish succeed untouched.
"""

from __future__ import annotations

import logging

from sharevol.catalog.records import AccessMode, Capability, Publication, VolumeRecord
from sharevol.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from sharevol.service.exports import VolumeExports
from sharevol.service.ids import check_id_length
from sharevol.service.nodes import require_address
from sharevol.service.provisioning import Provisioner

log = logging.getLogger(__name__)


class ControllerPublisher:
    """Adds and removes nodes on volumes' export client lists."""

    def __init__(self, provisioner: Provisioner, exports: VolumeExports) -> None:
        self._provisioner = provisioner
        self._exports = exports

    @property
    def offered(self) -> bool:
        """PUBLISH_UNPUBLISH_VOLUME is advertised only while the NFS server exports volumes."""
        return self._exports.enabled

    def publish(
        self, volume_id: str, node_id: str, capability: Capability, readonly: bool
    ) -> dict[str, str]:
        """Let `node_id` mount the volume; returns the publish context (empty)."""
        record = self._provisioner.get(volume_id)
        problem = self._provisioner.confirm_capabilities(record, [capability], {})
        if problem is not None:
            raise InvalidArgument(f"volume {record.name!r} cannot be published so: {problem}")
        if record.nfs_export is None:
            return {}  # not exported over NFS: nothing to open up
        address = require_address(node_id)
        mine = [p for p in record.publications if p.node_id == node_id]
        if mine:
            if mine[0].capability != capability or mine[0].readonly != readonly:
                raise AlreadyExists(
                    f"volume {record.name!r} is already published to node {node_id!r} with "
                    f"{_describe(mine[0].capability, mine[0].readonly)}, not "
                    f"{_describe(capability, readonly)}"
                )
            self._exports.apply(record)  # a retry after a failed UpdateExport converges
            return {}
        conflict = _conflict(record, node_id, capability, readonly)
        if conflict is not None:
            raise FailedPrecondition(conflict)
        publication = Publication(
            node_id=node_id, address=address, capability=capability, readonly=readonly
        )
        published = self._save(
            record.model_copy(update={"publications": (*record.publications, publication)})
        )
        self._exports.apply(published)
        log.info("published volume %s to node %s (%s)", volume_id, node_id, address)
        return {}

    def unpublish(self, volume_id: str, node_id: str) -> None:
        """Take `node_id` off the client list (every node when it is empty). A volume or node
        we do not know is safely unpublished already: OK, as the CSI spec allows."""
        check_id_length(volume_id, "volume_id")
        record = self._provisioner.index.get(volume_id)
        if record is None or record.state != "ready" or record.nfs_export is None:
            return
        kept = tuple(p for p in record.publications if node_id and p.node_id != node_id)
        if kept != record.publications:
            record = self._save(record.model_copy(update={"publications": kept}))
            log.info("unpublished volume %s from node %s", volume_id, node_id or "(all nodes)")
        self._exports.apply(record)

    def _save(self, record: VolumeRecord) -> VolumeRecord:
        """Write the record to its pool's catalog and the controller's index."""
        self._provisioner.pools()[record.pool].catalog.put_volume(record)
        self._provisioner.index.put(record)
        return record


def _conflict(
    record: VolumeRecord, node_id: str, capability: Capability, readonly: bool
) -> str | None:
    """Why a publication on `node_id` breaks the access mode, given the other nodes', or None."""
    others = [p for p in record.publications if p.node_id != node_id]
    if not others:
        return None
    mode = capability.access_mode
    if not mode.multi_node:
        return (
            f"volume {record.name!r} is published to node {others[0].node_id!r} and access mode "
            f"{mode.value} allows a single node; unpublish it there first"
        )
    for other in others:
        if not other.capability.access_mode.multi_node:
            return (
                f"volume {record.name!r} is published to node {other.node_id!r} with the "
                f"single-node mode {other.capability.access_mode.value}"
            )
    if mode is AccessMode.MULTI_NODE_SINGLE_WRITER and _writes(capability, readonly):
        writer = next((p for p in others if _writes(p.capability, p.readonly)), None)
        if writer is not None:
            return (
                f"volume {record.name!r} already has a writer on node {writer.node_id!r} "
                f"({mode.value}); publish read-only or unpublish it there first"
            )
    return None


def _writes(capability: Capability, readonly: bool) -> bool:
    return not (readonly or capability.access_mode.read_only)


def _describe(capability: Capability, readonly: bool) -> str:
    return f"{capability.access_mode.value}{' read-only' if readonly else ''}"
