"""The CSI wiring of deploy/: which sidecars run where, with which flags and versions, and what
the CSIDriver and the node plugin promise kubelet. Each rule is one the CSI sidecars or kubelet
impose (see deploy/README.md); the rendered overlays must keep them."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from tests.support.manifests import (
    DRIVER,
    OVERLAYS,
    Document,
    containers,
    describe,
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


def holding_mount(container: Document, path: PurePosixPath) -> Document | None:
    """The container's volumeMount that `path` lies in (the deepest one), or None."""
    holders = [
        m for m in container.get("volumeMounts", [])
        if path.is_relative_to(PurePosixPath(m["mountPath"]))
    ]  # fmt: skip
    return max(holders, key=lambda m: len(PurePosixPath(m["mountPath"]).parts), default=None)


def state_dir(container: Document) -> PurePosixPath:
    [value] = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--state-dir=")]
    return PurePosixPath(value)


@pytest.mark.parametrize("name", OVERLAYS)
def test_share_pools_are_mounted_by_privileged_sharevol_in_its_own_mount_namespace(
    name: str,
) -> None:
    """Every sharevol container that reads a pools.yaml with `kind: nfs` pools mounts those
    shares itself (the controller, and the node plugin for image files): it must be allowed to
    mount, and the share must land in a writable volume of its state dir that does not
    propagate to the host. With Bidirectional, the share would outlive the pod on the host,
    inside a directory kubelet deletes (an emptyDir) or keeps (a hostPath)."""
    documents = overlay(name)
    config = pools_config(named(documents, "ConfigMap", "sharevol-config"))
    shares = [pool for pool in config.pools if pool.kind == "nfs"]
    if name == "nas":
        assert shares, "the nas overlay serves its share as a pool of kind nfs"
    checked = 0
    for workload in documents:
        if workload["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        plugin = containers(workload).get("sharevol")
        if plugin is None or not shares:
            continue
        where = describe(workload)
        security = plugin["securityContext"]
        assert security["privileged"] is True, f"{where}: mount(2) needs a privileged container"
        assert security.get("allowPrivilegeEscalation") is not False, where
        assert workload["spec"]["template"]["spec"]["hostNetwork"] is True, where
        for pool in shares:
            path = PurePosixPath(pool.path)
            assert path.is_relative_to(state_dir(plugin)), f"{where}: {path} not in its state dir"
            mount = holding_mount(plugin, path)
            assert mount is not None, f"{where}: {path} is in no volume"
            assert PurePosixPath(mount["mountPath"]) != path, f"{where}: {path} is a pod volume"
            assert not mount.get("readOnly", False), f"{where}: {mount}"
            assert mount.get("mountPropagation", "None") != "Bidirectional", f"{where}: {mount}"
            checked += 1
    assert checked == 2 * len(shares), f"{name}: the controller and the node plugin"


def test_nas_pods_name_no_share_kubelet_would_mount() -> None:
    """sharevol mounts the share (controller) and each volume's folder (nodes); no pod of the
    nas overlay has an in-tree `nfs:` volume, which would mount the whole share on its node."""
    for workload in overlay("nas"):
        if workload["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        volumes = workload["spec"]["template"]["spec"].get("volumes", [])
        assert [v["name"] for v in volumes if "nfs" in v] == [], describe(workload)


def test_volume_snapshot_class_is_sharevol_everywhere() -> None:
    for name in OVERLAYS:
        [snapshot_class] = of_kind(overlay(name), "VolumeSnapshotClass")
        assert snapshot_class["driver"] == DRIVER
    for snapshot in of_kind(example_documents(), "VolumeSnapshot"):
        assert snapshot["spec"]["volumeSnapshotClassName"] == snapshot_class["metadata"]["name"]
