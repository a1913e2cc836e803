"""deploy/ and examples/ are what a platform engineer applies: every kustomization renders with
`kubectl kustomize`, every object is valid against the Kubernetes schemas, and what the
manifests say to sharevol (StorageClass parameters, pools.yaml, `serve` arguments) is what the
code accepts. The sidecar wiring is checked against the CSI rules it must follow."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

import click
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sharevol.cli.serve_cmd import serve
from sharevol.csi.metrics import parse_address
from sharevol.service.nodes import node_address, node_name
from sharevol.service.params import parse_parameters
from tests.conftest import in_ci
from tests.support.manifests import (
    DEPLOY,
    DRIVER,
    EXAMPLES,
    KUBECTL,
    REPO,
    Document,
    containers,
    create_parameters,
    example_documents,
    example_files,
    kustomization_dirs,
    load_documents,
    named,
    of_kind,
    pools_config,
    render,
)
from tests.support.snapshot_schemas import SCHEMAS, validate_snapshot_object

KUBERNETES_VERSION = "1.30"
"""Oldest Kubernetes the manifests target (ReadWriteOncePod, VolumeAttributesClass RBAC)."""

SIDECAR_VERSIONS = {
    "csi-provisioner": "v6.3.0",
    "csi-attacher": "v4.12.0",
    "csi-resizer": "v2.2.1",
    "csi-snapshotter": "v8.6.0",
    "csi-node-driver-registrar": "v2.17.0",
    "livenessprobe": "v2.19.0",
}
"""registry.k8s.io/sig-storage images and the versions the project has checked (prior-art 4.4)."""

OVERLAYS = ("managed-nfs", "nas", "node-local")
KUSTOMIZE_V2_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "bases",
        "resources",
        "patchesStrategicMerge",
        "patchesJson6902",
        "images",
        "configMapGenerator",
        "secretGenerator",
        "generatorOptions",
        "namePrefix",
        "nameSuffix",
        "namespace",
        "commonLabels",
        "commonAnnotations",
        "vars",
    }
)
"""What the kustomize v2.0.3 inside Debian 12's kubectl 1.20 understands; newer fields such as
`patches`, `components` or `labels` would break `kubectl apply -k` there."""


@pytest.fixture(scope="module", autouse=True)
def _kubectl() -> None:
    if shutil.which(KUBECTL) is None:
        reason = f"needs {KUBECTL} on PATH (Debian package kubernetes-client; scripts/bootstrap)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
        pytest.skip(reason)


@functools.cache
def rendered(directory: Path) -> tuple[Document, ...]:
    return tuple(render(directory))


def overlay(name: str) -> tuple[Document, ...]:
    return rendered(DEPLOY / "overlays" / name)


def validate_object(document: Document) -> None:
    """Against the Kubernetes OpenAPI schemas (strict: unknown fields fail), or against our
    own schema for the snapshot CRDs, which the core schemas do not know."""
    if document["kind"] in SCHEMAS and document["apiVersion"].startswith("snapshot.storage"):
        validate_snapshot_object(document)
        return
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def describe(document: Document) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


# ---- rendering and schemas -----------------------------------------------------------------


def test_deploy_has_a_base_and_the_three_overlays() -> None:
    names = {path.relative_to(DEPLOY).as_posix() for path in kustomization_dirs()}
    assert names == {"base", *(f"overlays/{name}" for name in OVERLAYS)}


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: p.name)
def test_kustomization_renders_to_valid_kubernetes_objects(directory: Path) -> None:
    documents = rendered(directory)
    assert documents, f"{directory} rendered nothing"
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in documents]
    assert len(keys) == len(set(keys)), f"duplicate objects in {directory}"
    for document in documents:
        try:
            validate_object(document)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{directory.name}: {describe(document)}: {exc.message}")


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_manifest_is_valid_kubernetes(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path} is empty"
    for document in documents:
        try:
            validate_object(document)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{path.name}: {describe(document)}: {exc.message}")


def test_snapshot_schema_refuses_what_the_crd_refuses() -> None:
    """The home-made CRD schema can fail: a snapshot naming two sources, an unknown policy."""
    snapshot = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": "s"},
        "spec": {"source": {"persistentVolumeClaimName": "a", "volumeSnapshotContentName": "b"}},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate_snapshot_object(snapshot)
    snapshot_class = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": "c"},
        "driver": DRIVER,
        "deletionPolicy": "Recycle",
    }
    with pytest.raises(jsonschema.ValidationError):
        validate_snapshot_object(snapshot_class)


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: p.name)
def test_kustomization_uses_only_what_debian_kubectl_understands(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZE_V2_KEYS
    assert not unknown, f"fields unknown to kustomize v2.0.3 (kubectl 1.20): {sorted(unknown)}"
    for entry in kustomization.get("resources", []):
        # kustomize v2.0.3 takes directories only under `bases`.
        assert (directory / entry).is_file(), f"resources: {entry} must be a file"


# ---- what the manifests tell sharevol ------------------------------------------------------


def storage_classes() -> list[tuple[str, Document]]:
    """(where, StorageClass) for every class in the overlays and the examples."""
    found = [
        (f"overlays/{name}", document)
        for name in OVERLAYS
        for document in of_kind(overlay(name), "StorageClass")
    ]
    found += [("examples", document) for document in of_kind(example_documents(), "StorageClass")]
    return found


def test_every_storage_class_is_sharevol_and_its_parameters_are_accepted() -> None:
    classes = storage_classes()
    assert len(classes) >= 6
    pvc = {"metadata": {"name": "data", "namespace": "team-a"}}
    for where, storage_class in classes:
        assert storage_class["provisioner"] == DRIVER, f"{where}: {describe(storage_class)}"
        # The parameters as the external-provisioner sends them, parsed as CreateVolume does.
        parse_parameters(create_parameters(storage_class, pvc, "pvc-0123"))


def test_storage_class_pools_exist_in_the_pools_yaml_they_are_served_with() -> None:
    """Overlay classes name pools of their overlay; the walkthrough's run on the nas overlay."""
    for where, storage_class in storage_classes():
        source = "nas" if where == "examples" else where.removeprefix("overlays/")
        config = pools_config(named(overlay(source), "ConfigMap", "sharevol-config"))
        pool = (storage_class.get("parameters") or {}).get("pool", config.default)
        assert pool in {p.name for p in config.pools}, (
            f"{where}: {describe(storage_class)} names pool {pool!r}, not in {source}'s pools.yaml"
        )


def test_overlay_storage_classes_cover_tiers_file_block_and_delete_policies() -> None:
    classes = [c for where, c in storage_classes() if where != "examples"]
    parameters = [c.get("parameters") or {} for c in classes]
    assert {"fast", "slow"} <= {p.get("pool") for p in parameters}, "fast and slow tiers"
    assert {"archive", "retain"} <= {p.get("onDelete") for p in parameters}
    names = {c["metadata"]["name"] for c in classes}
    assert any("block" in name for name in names), "a class for volumeMode: Block"


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_pools_yaml_validates_with_server_config(name: str) -> None:
    config_maps = [
        c for c in of_kind(overlay(name), "ConfigMap") if "pools.yaml" in (c.get("data") or {})
    ]
    assert [c["metadata"]["name"] for c in config_maps] == ["sharevol-config"]
    config = pools_config(config_maps[0])
    if name == "node-local":
        assert all(pool.node_local for pool in config.pools)


DOWNWARD_API_SAMPLES = {"NODE_NAME": "node-a", "NODE_IP": "10.0.0.7"}
"""What the downward API puts in the env vars that sharevol's arguments use."""


def sharevol_commands(documents: tuple[Document, ...]) -> list[tuple[str, list[str]]]:
    """(workload, argv after `sharevol`) of every sharevol container, with `$(VAR)` filled."""
    found = []
    for workload in documents:
        if workload["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        for container in containers(workload).values():
            if not container["image"].startswith("sharevol"):
                continue
            argv = [*container.get("command", []), *container.get("args", [])]
            if "sharevol" in argv:  # a wrapper such as `sharevol-pool-mount ... -- sharevol`
                argv = argv[argv.index("sharevol") + 1 :]
            env = {e["name"] for e in container.get("env", [])}
            filled = []
            for arg in argv:
                for var in re.findall(r"\$\(([A-Z_]+)\)", arg):
                    assert var in env, f"{describe(workload)}: $({var}) is not in env"
                    arg = arg.replace(f"$({var})", DOWNWARD_API_SAMPLES[var])
                filled.append(arg)
            found.append((describe(workload), filled))
    return found


@pytest.mark.parametrize("name", OVERLAYS)
def test_sharevol_containers_run_serve_with_options_it_accepts(name: str) -> None:
    commands = sharevol_commands(overlay(name))
    modes = set()
    for workload, argv in commands:
        assert argv[0] == "serve", f"{workload}: {argv}"
        try:
            context = serve.make_context("serve", argv[1:])
        except click.ClickException as exc:
            pytest.fail(f"{workload}: sharevol serve {' '.join(argv[1:])}: {exc.format_message()}")
        assert context.params["endpoint"] == "unix:///csi/csi.sock"
        assert str(context.params["config_path"]) == "/etc/sharevol/pools.yaml"
        mode = context.params["mode"]
        modes.add(mode)
        node_id = context.params["node_id"]
        assert node_name(node_id) == "node-a"
        if name == "managed-nfs" and mode == "node":
            # ControllerPublish puts this address on the volume's export (sharevol.service.nodes).
            assert node_address(node_id) == "10.0.0.7", node_id
    expected = {"all"} if name == "node-local" else {"controller", "node"}
    assert modes == expected


@pytest.mark.parametrize("name", OVERLAYS)
def test_sharevol_metrics_port_is_declared_and_annotated_for_scraping(name: str) -> None:
    for workload in overlay(name):
        if workload["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        plugin = containers(workload).get("sharevol")
        if plugin is None:
            continue
        args = plugin.get("args", [])
        assert "--log-format=json" in args, f"{describe(workload)}: JSON logs for collectors"
        [address] = [a.split("=", 1)[1] for a in args if a.startswith("--metrics-address=")]
        _host, port = parse_address(address)
        declared = {p["name"]: p["containerPort"] for p in plugin.get("ports", [])}
        assert declared.get("metrics") == port, f"{describe(workload)}: {declared}"
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(port)


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


def test_docs_name_every_example_file() -> None:
    text = (REPO / "docs" / "walkthrough.md").read_text()
    for path in example_files():
        assert path.relative_to(REPO).as_posix() in text, f"walkthrough misses {path.name}"
    assert (EXAMPLES / "seed").is_dir()
