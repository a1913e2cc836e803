"""Plays the Kubernetes side of a CSI driver against a real sharevol server: the
external-provisioner (CreateVolume/DeleteVolume), the external-snapshotter (CreateSnapshot) and
kubelet (NodeStage/NodePublish at kubelet's own paths), driven by manifests from examples/ and
deploy/ as a cluster would read them.

What each sidecar sends is taken from their documented behaviour: the provisioner sends one
capability per PVC access mode, the class's `mountOptions` as mount flags, its
`csi.storage.k8s.io/fstype` as fs_type and, with --extra-create-metadata, the PVC and PV
names; it retries ABORTED. The snapshotter re-calls CreateSnapshot until `ready_to_use`.
kubelet stages once per node at `plugins/kubernetes.io/csi/<driver>/<sha256>/globalmount`,
publishes per pod at `pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount`, and sends the PV's
first access mode.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from sharevol.csi._proto import csi_pb2
from tests.support.csi import Stubs
from tests.support.manifests import (
    Document,
    capability,
    create_parameters,
    fs_type,
    kubelet_staging_path,
    kubelet_target_path,
    named,
    of_kind,
    pvc_size_bytes,
)

SNAPSHOT_NAME = "csi.storage.k8s.io/volumesnapshot/name"
SNAPSHOT_NAMESPACE = "csi.storage.k8s.io/volumesnapshot/namespace"
SNAPSHOT_CONTENT_NAME = "csi.storage.k8s.io/volumesnapshotcontent/name"
RETRY_DEADLINE = 120.0
Reply = TypeVar("Reply")


def retry_aborted(call: Callable[[], Reply], deadline: float = RETRY_DEADLINE) -> Reply:
    """What the sidecars do with ABORTED (an operation still running): call again, backing off."""
    give_up = time.monotonic() + deadline
    delay = 0.01
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED or time.monotonic() > give_up:
                raise
        time.sleep(delay)  # the sidecars' exponential backoff, shortened
        delay = min(delay * 2, 0.5)


@dataclass
class BoundVolume:
    """A PV as the provisioner made it for one PVC."""

    pvc: Document
    pv_name: str
    volume: csi_pb2.Volume
    block: bool

    @property
    def volume_id(self) -> str:
        return self.volume.volume_id

    @property
    def access_modes(self) -> list[str]:
        return list(self.pvc["spec"]["accessModes"])


@dataclass
class Cluster:
    """One node and the control plane, over the manifests in `documents`."""

    stubs: Stubs
    documents: list[Document]
    kubelet_root: Path
    namespace: str = "default"
    volumes: dict[str, BoundVolume] = field(default_factory=dict)
    snapshots: dict[str, csi_pb2.Snapshot] = field(default_factory=dict)
    staged: dict[str, Path] = field(default_factory=dict)
    published: dict[tuple[str, str], Path] = field(default_factory=dict)

    # ---- external-provisioner ----------------------------------------------------------

    def storage_class(self, pvc: Document) -> Document:
        return named(self.documents, "StorageClass", pvc["spec"]["storageClassName"])

    def provision(self, claim: str) -> BoundVolume:
        """CreateVolume for a PVC of a sharevol StorageClass, as the provisioner sends it."""
        pvc = named(self.documents, "PersistentVolumeClaim", claim)
        pvc.setdefault("metadata", {}).setdefault("namespace", self.namespace)
        storage_class = self.storage_class(pvc)
        block = pvc["spec"].get("volumeMode") == "Block"
        pv_name = f"pvc-{uuid.uuid4()}"
        request = csi_pb2.CreateVolumeRequest(
            name=pv_name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=pvc_size_bytes(pvc)),
            volume_capabilities=[
                capability(
                    mode,
                    fs_type="" if block else fs_type(storage_class),
                    mount_flags=storage_class.get("mountOptions", []),
                    block=block,
                )
                for mode in pvc["spec"]["accessModes"]
            ],
            parameters=create_parameters(storage_class, pvc, pv_name),
        )
        source = pvc["spec"].get("dataSource")
        if source is not None and source["kind"] == "PersistentVolumeClaim":
            request.volume_content_source.volume.volume_id = self.volumes[source["name"]].volume_id
        elif source is not None and source["kind"] == "VolumeSnapshot":
            snapshot_id = self.snapshots[source["name"]].snapshot_id
            request.volume_content_source.snapshot.snapshot_id = snapshot_id
        response = retry_aborted(lambda: self.stubs.controller.CreateVolume(request))
        bound = BoundVolume(pvc, pv_name, response.volume, block)
        self.volumes[claim] = bound
        return bound

    def delete(self, claim: str) -> None:
        """The PVC and then its PV are deleted (reclaimPolicy Delete)."""
        bound = self.volumes.pop(claim)
        request = csi_pb2.DeleteVolumeRequest(volume_id=bound.volume_id)
        retry_aborted(lambda: self.stubs.controller.DeleteVolume(request))

    # ---- external-snapshotter ----------------------------------------------------------

    def snapshot(self, name: str) -> csi_pb2.Snapshot:
        """CreateSnapshot for a VolumeSnapshot, re-called until the snapshot is ready."""
        document = named(self.documents, "VolumeSnapshot", name)
        source = self.volumes[document["spec"]["source"]["persistentVolumeClaimName"]]
        snapshot_class = named(
            self.documents, "VolumeSnapshotClass", document["spec"]["volumeSnapshotClassName"]
        )
        content_name = f"snapcontent-{uuid.uuid4()}"
        request = csi_pb2.CreateSnapshotRequest(
            name=f"snapshot-{uuid.uuid4()}",
            source_volume_id=source.volume_id,
            parameters={
                **snapshot_class.get("parameters", {}),
                SNAPSHOT_NAME: name,
                SNAPSHOT_NAMESPACE: self.namespace,
                SNAPSHOT_CONTENT_NAME: content_name,
            },
        )

        def cut() -> csi_pb2.Snapshot:
            snapshot = self.stubs.controller.CreateSnapshot(request).snapshot
            if not snapshot.ready_to_use:
                raise _NotReady
            return snapshot

        give_up = time.monotonic() + RETRY_DEADLINE
        while True:
            try:
                snapshot = retry_aborted(cut)
                break
            except _NotReady:
                assert time.monotonic() < give_up, f"snapshot {name} never became ready"
                time.sleep(0.05)
        self.snapshots[name] = snapshot
        return snapshot

    # ---- kubelet -----------------------------------------------------------------------

    def pod_claims(self, pod_name: str) -> list[tuple[str, bool]]:
        """(claim, readonly) of a pod, a Job's pod or a Deployment's pod template by name."""
        for kind in ("Pod", "Job", "Deployment"):
            found = [d for d in of_kind(self.documents, kind) if d["metadata"]["name"] == pod_name]
            if found:
                spec = found[0]["spec"] if kind == "Pod" else found[0]["spec"]["template"]["spec"]
                return [
                    (v["persistentVolumeClaim"]["claimName"],
                     bool(v["persistentVolumeClaim"].get("readOnly", False)))
                    for v in spec.get("volumes", [])
                    if "persistentVolumeClaim" in v
                ]  # fmt: skip
        raise AssertionError(f"no Pod, Job or Deployment named {pod_name!r}")

    def run_pod(self, pod_name: str, replica: int = 0) -> dict[str, Path]:
        """Stage (once per volume) and publish every claim of a pod; claim -> path in the pod."""
        pod_uid = f"{pod_name}-{replica}-{uuid.uuid4().hex[:8]}"
        paths: dict[str, Path] = {}
        for claim, readonly in self.pod_claims(pod_name):
            paths[claim] = self.publish(claim, pod_uid, readonly=readonly)
        return paths

    def stop_pod(self, paths: Mapping[str, Path]) -> None:
        """Unpublish every volume of a pod (kubelet's order); unstage those no pod uses."""
        for claim, target in paths.items():
            bound = self.volumes[claim]
            self.stubs.node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id=bound.volume_id, target_path=str(target)
                )
            )
            assert not target.exists(), f"NodeUnpublish left {target} behind"
            del self.published[(claim, str(target))]
            if not any(c == claim for c, _ in self.published):
                self.unstage(claim)

    def node_capability(self, bound: BoundVolume) -> csi_pb2.VolumeCapability:
        """kubelet sends the PV's first access mode, and the PV's mount options."""
        storage_class = self.storage_class(bound.pvc)
        return capability(
            bound.access_modes[0],
            fs_type="" if bound.block else fs_type(storage_class),
            mount_flags=storage_class.get("mountOptions", []),
            block=bound.block,
        )

    def stage(self, claim: str) -> Path:
        bound = self.volumes[claim]
        staging = kubelet_staging_path(self.kubelet_root, bound.pv_name)
        if claim in self.staged:
            return staging
        staging.mkdir(parents=True, exist_ok=True)  # kubelet makes the staging directory
        self.stubs.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=bound.volume_id,
                staging_target_path=str(staging),
                volume_capability=self.node_capability(bound),
                volume_context=bound.volume.volume_context,
            )
        )
        self.staged[claim] = staging
        return staging

    def publish(self, claim: str, pod_uid: str, *, readonly: bool) -> Path:
        bound = self.volumes[claim]
        staging = self.stage(claim)
        target = kubelet_target_path(self.kubelet_root, pod_uid, bound.pv_name)
        target.parent.mkdir(parents=True, exist_ok=True)  # kubelet makes the parent only
        self.stubs.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=bound.volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=self.node_capability(bound),
                readonly=readonly,
                volume_context=bound.volume.volume_context,
            )
        )
        self.published[(claim, str(target))] = target
        return target

    def unstage(self, claim: str) -> None:
        bound = self.volumes[claim]
        staging = self.staged.pop(claim)
        self.stubs.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(
                volume_id=bound.volume_id, staging_target_path=str(staging)
            )
        )

    def stop_everything(self) -> None:
        """Unpublish and unstage whatever is still up (end of a test)."""
        by_target = dict(self.published)
        for (claim, _), target in by_target.items():
            self.stop_pod({claim: target})
        for claim in list(self.staged):
            self.unstage(claim)


class _NotReady(Exception):
    """CreateSnapshot answered ready_to_use=false: the snapshotter calls again later."""

