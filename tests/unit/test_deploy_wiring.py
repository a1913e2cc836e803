"""The CSI wiring of deploy/: which sidecars run where, with which flags and versions, and what
the CSIDriver and the node plugin promise kubelet. Each rule is one the CSI sidecars or kubelet
impose (see deploy/README.md); the rendered overlays must keep them."""

from __future__ import annotations

import pytest

from tests.support.manifests import (
    DRIVER,
    OVERLAYS,
    Document,
    containers,
    example_documents,
    named,
    of_kind,
    overlay,
    pools_config,
    require_kubectl,
)

SIDECAR_VERSIONS = {
    "csi-provisioner": "v6.3.0",
    "csi-attacher": "v4.12.0",
    "csi-resizer": "v2.2.1",
    "csi-snapshotter": "v8.6.0",
    "csi-node-driver-registrar": "v2.17.0",
    "livenessprobe": "v2.19.0",
}
"""registry.k8s.io/sig-storage images and the versions the project has checked (prior-art 4.4)."""


@pytest.fixture(scope="module", autouse=True)
def _kubectl() -> None:
    require_kubectl()


# ---- CSI wiring ----------------------------------------------------------------------------


def sidecar_args(documents: tuple[Document, ...], image: str) -> list[list[str]]:
    """The args of every container running that sidecar image."""
    return [
        container.get("args", [])
        for workload in documents
        if workload["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        for container in containers(workload).values()
        if container["image"].split("/")[-1].split(":")[0] == image
    ]


@pytest.mark.parametrize("name", OVERLAYS)
def test_sidecar_images_are_the_checked_versions(name: str) -> None:
    for workload in overlay(name):
        if workload["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        for container in containers(workload).values():
            image = container["image"]
            if image.startswith("registry.k8s.io/"):
                repository, tag = image.rsplit(":", 1)
                assert repository.startswith("registry.k8s.io/sig-storage/")
                assert SIDECAR_VERSIONS[repository.split("/")[-1]] == tag, image


@pytest.mark.parametrize("name", OVERLAYS)
def test_provisioner_and_snapshotter_pass_pvc_and_snapshot_names(name: str) -> None:
    documents = overlay(name)
    for image in ("csi-provisioner", "csi-snapshotter"):
        found = sidecar_args(documents, image)
        assert len(found) == 1, f"{name}: one {image}, found {len(found)}"
        assert "--extra-create-metadata" in found[0]


@pytest.mark.parametrize("name", OVERLAYS)
def test_controller_sidecars_elect_a_leader_unless_they_run_per_node(name: str) -> None:
    documents = overlay(name)
    node_deployment = name == "node-local"
    for image in ("csi-provisioner", "csi-snapshotter", "csi-resizer", "csi-attacher"):
        for args in sidecar_args(documents, image):
            assert ("--node-deployment" in args) == node_deployment, f"{image}: {args}"
            assert ("--leader-election" in args) == (not node_deployment), f"{image}: {args}"


def test_node_local_provisioner_is_per_node_with_topology_and_capacity() -> None:
    [args] = sidecar_args(overlay("node-local"), "csi-provisioner")
    for flag in ("--node-deployment", "--feature-gates=Topology=true", "--enable-capacity"):
        assert flag in args
    driver = named(overlay("node-local"), "CSIDriver", DRIVER)
    assert driver["spec"]["storageCapacity"] is True
    for storage_class in of_kind(overlay("node-local"), "StorageClass"):
        assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    # No per-node resizer exists, so no class may promise expansion.
    assert sidecar_args(overlay("node-local"), "csi-resizer") == []
    assert all(
        not c.get("allowVolumeExpansion") for c in of_kind(overlay("node-local"), "StorageClass")
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_attach_is_required_exactly_where_an_attacher_runs(name: str) -> None:
    """attachRequired without an external-attacher would hang every pod in ContainerCreating;
    an attacher without attachRequired would never be called."""
    driver = named(overlay(name), "CSIDriver", DRIVER)
    attachers = sidecar_args(overlay(name), "csi-attacher")
    assert driver["spec"]["attachRequired"] is bool(attachers)
    assert driver["spec"]["attachRequired"] is (name == "managed-nfs")
    # sharevol offers ControllerPublish exactly when its pools.yaml exports pools over NFS.
    config = pools_config(named(overlay(name), "ConfigMap", "sharevol-config"))
    assert driver["spec"]["attachRequired"] is bool(config.nfs_pools())


@pytest.mark.parametrize("name", OVERLAYS)
def test_csidriver_applies_fs_group_by_file_for_persistent_volumes(name: str) -> None:
    spec = named(overlay(name), "CSIDriver", DRIVER)["spec"]
    assert spec["fsGroupPolicy"] == "File"
    assert spec["volumeLifecycleModes"] == ["Persistent"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_node_plugin_can_mount_for_kubelet(name: str) -> None:
    daemonset = named(overlay(name), "DaemonSet", "sharevol-node")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    plugin = containers(daemonset)["sharevol"]
    assert plugin["securityContext"]["privileged"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    kubelet = [
        m for m in plugin["volumeMounts"]
        if volumes[m["name"]].get("hostPath", {}).get("path") == "/var/lib/kubelet"
    ]  # fmt: skip
    assert kubelet and kubelet[0]["mountPath"] == "/var/lib/kubelet"
    assert kubelet[0]["mountPropagation"] == "Bidirectional"
    registrar = containers(daemonset)["node-driver-registrar"]
    assert (
        "--kubelet-registration-path=/var/lib/kubelet/plugins/sharevol.csi.io/csi.sock"
        in registrar["args"]
    )


def test_volume_snapshot_class_is_sharevol_everywhere() -> None:
    for name in OVERLAYS:
        [snapshot_class] = of_kind(overlay(name), "VolumeSnapshotClass")
        assert snapshot_class["driver"] == DRIVER
    for snapshot in of_kind(example_documents(), "VolumeSnapshot"):
        assert snapshot["spec"]["volumeSnapshotClassName"] == snapshot_class["metadata"]["name"]
