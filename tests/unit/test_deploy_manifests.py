"""deploy/ and examples/ are what a platform engineer applies: every kustomization renders with
`kubectl kustomize`, every object is valid against the Kubernetes schemas, and what the
manifests say to sharevol (StorageClass parameters, pools.yaml, `serve` arguments) is what the
code accepts. The sidecar wiring is checked against the CSI rules it must follow."""

from __future__ import annotations

import re
from pathlib import Path

import click
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sharevol.cli.serve_cmd import serve
from sharevol.csi.metrics import parse_address
from sharevol.pools.config import PoolConfig
from sharevol.pools.factory import make_pool
from sharevol.pools.nfs_share import BACKEND_EXPORT, BACKEND_OPTIONS, BACKEND_SERVER, SharePool
from sharevol.service.nodes import node_address, node_name
from sharevol.service.params import parse_parameters
from sharevol.sys.nfs_mount import merge_options
from tests.support.manifests import (
    DEPLOY,
    DRIVER,
    EXAMPLES,
    OVERLAYS,
    REPO,
    Document,
    containers,
    create_parameters,
    describe,
    example_documents,
    example_files,
    kustomization_dirs,
    load_documents,
    named,
    of_kind,
    overlay,
    pools_config,
    rendered,
    require_kubectl,
)
from tests.support.snapshot_schemas import SCHEMAS, validate_snapshot_object

KUBERNETES_VERSION = "1.30"
"""Oldest Kubernetes the manifests target (ReadWriteOncePod, VolumeAttributesClass RBAC)."""

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
    require_kubectl()


def validate_object(document: Document) -> None:
    """Against the Kubernetes OpenAPI schemas (strict: unknown fields fail), or against our
    own schema for the snapshot CRDs, which the core schemas do not know."""
    if document["kind"] in SCHEMAS and document["apiVersion"].startswith("snapshot.storage"):
        validate_snapshot_object(document)
        return
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


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


def test_serve_has_the_metrics_and_log_options_the_manifests_pass() -> None:
    """The manifests run `serve --metrics-address=... --log-format=json`: both are click options
    of sharevol.cli.serve_cmd (an unknown one would crash-loop every pod)."""
    options = {opt: param for param in serve.params for opt in param.opts}
    metrics, log_format = options["--metrics-address"], options["--log-format"]
    assert metrics.name == "metrics_address" and metrics.default == ""  # off unless asked
    assert isinstance(log_format.type, click.Choice)
    assert "json" in log_format.type.choices
    context = serve.make_context(
        "serve", ["--config=/p.yaml", "--metrics-address=:29871", "--log-format=json"]
    )
    assert parse_address(context.params["metrics_address"])[1] == 29871


LISTEN_FLAGS = ("--metrics-address=", "--http-endpoint=", "--health-port=")
"""Flags by which sharevol and the CSI sidecars open a listening TCP port."""


def listened_ports(workload: Document) -> list[int]:
    """The TCP ports the pod's containers open by their listen flags (`[host]:port`)."""
    return [
        int(arg[len(flag) :].rsplit(":", 1)[-1])
        for container in containers(workload).values()
        for arg in container.get("args", [])
        for flag in LISTEN_FLAGS
        if arg.startswith(flag)
    ]


def declared_ports(workload: Document) -> list[int]:
    return [
        port["containerPort"]
        for container in containers(workload).values()
        for port in container.get("ports", [])
    ]


@pytest.mark.parametrize("name", OVERLAYS)
def test_ports_are_declared_and_do_not_collide_on_one_host(name: str) -> None:
    """Every pod here uses the host network, and a node runs the node plugin beside the
    controller (or the provisioner): each listening port must be one role's alone."""
    owners: dict[int, str] = {}
    documents = overlay(name)
    nfs = pools_config(named(documents, "ConfigMap", "sharevol-config")).nfs
    for workload in documents:
        if workload["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        assert workload["spec"]["template"]["spec"].get("hostNetwork") is True, describe(workload)
        listened = listened_ports(workload)
        assert len(listened) == len(set(listened)), f"{describe(workload)}: {listened}"
        declared = declared_ports(workload)
        assert len(declared) == len(set(declared)), f"{describe(workload)}: {declared}"
        assert set(listened) <= set(declared), f"{describe(workload)}: undeclared ports"
        for port in declared:
            assert port not in owners, f"port {port}: {owners.get(port)} and {describe(workload)}"
            owners[port] = describe(workload)
    if nfs is not None and nfs.enabled:
        assert owners.get(nfs.port) == "StatefulSet/sharevol-nfs", owners
    metrics = {
        workload: [int(a.rsplit(":", 1)[1]) for a in argv if a.startswith("--metrics-address=")]
        for workload, argv in sharevol_commands(documents)
    }
    assert all(len(ports) == 1 for ports in metrics.values()), metrics
    assert len({ports[0] for ports in metrics.values()}) == len(metrics), metrics


def nas_pool() -> PoolConfig:
    """The nas overlay's one pool: the share, written once, in pools.yaml."""
    config = pools_config(named(overlay("nas"), "ConfigMap", "sharevol-config"))
    [pool] = config.pools
    assert config.default == pool.name
    return pool


def test_nas_pool_is_the_seed_share_as_a_share_pool_sharevol_mounts() -> None:
    """`kind: nfs`: the controller mounts server:share at `path` and nodes mount each volume's
    folder; not `kind: plain` over a share that kubelet mounts into the pods."""
    pool = nas_pool()
    assert (pool.kind, pool.server, pool.share) == ("nfs", "192.168.30.147", "/data/k8s")
    assert not pool.node_local
    assert pool.path.is_relative_to("/var/lib/sharevol"), "under the controller's state dir"
    # Where nodes mount a volume from (docs/walkthrough.md step 2), as the pool records it for
    # each volume's context; the pool is built, not started (that mounts the share).
    share = make_pool(pool)
    assert isinstance(share, SharePool)
    location = share.node_location("default-pvc-dynamic-pvc-0123")
    assert (location[BACKEND_SERVER], location[BACKEND_EXPORT]) == (
        "192.168.30.147", "/data/k8s/volumes/default-pvc-dynamic-pvc-0123"
    )  # fmt: skip
    assert location[BACKEND_OPTIONS] == "vers=4.1,proto=tcp,hard"


def test_share_pool_classes_keep_the_pools_mount_options() -> None:
    """A class's mountOptions come after the context's on the node and replace options of the
    same key (`nfsvers=4.2` would override the pool's `vers`, `soft` its `hard`): a class on the
    share pool may add options, never replace the pool's."""
    pool = nas_pool()
    share = make_pool(pool)
    assert isinstance(share, SharePool)
    context = share.options
    checked = 0
    for where, storage_class in storage_classes():
        if (storage_class.get("parameters") or {}).get("pool", pool.name) != pool.name:
            continue
        if where not in ("overlays/nas", "examples"):
            continue
        merged = merge_options(context, storage_class.get("mountOptions", []))
        assert set(context) <= set(merged), f"{where}: {describe(storage_class)}: {merged}"
        checked += 1
    assert checked >= 5, "the nas overlay's classes and the walkthrough's"


def test_static_pv_names_the_share_by_the_documented_attributes() -> None:
    """examples/seed/10-pv1.yaml: a CSI PV on an existing share path, no controller involved."""
    [pv] = of_kind(example_documents(), "PersistentVolume")
    csi = pv["spec"]["csi"]
    assert csi["driver"] == DRIVER
    assert set(csi["volumeAttributes"]) == {"server", "share", "subdir"}
    assert len(csi["volumeHandle"].encode()) <= 128, "CSI: IDs are at most 128 bytes"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain", "Recycle is deprecated"
    # The walkthrough's static PV lives on the share that the nas overlay serves.
    pool = nas_pool()
    assert csi["volumeAttributes"]["server"] == pool.server
    assert csi["volumeAttributes"]["share"] == pool.share
    merge_options(pv["spec"].get("mountOptions", []))  # NFSv4 options the node accepts
    text = (REPO / "docs" / "walkthrough.md").read_text()
    assert all(f"{key}:" in text for key in csi["volumeAttributes"])
    [pvc] = [c for c in of_kind(example_documents(), "PersistentVolumeClaim")
             if c["spec"].get("volumeName") == pv["metadata"]["name"]]  # fmt: skip
    assert pvc["metadata"]["name"] == "pvc-nfs" and pvc["spec"]["storageClassName"] == ""


def test_docs_name_every_example_file() -> None:
    text = (REPO / "docs" / "walkthrough.md").read_text()
    for path in example_files():
        assert path.relative_to(REPO).as_posix() in text, f"walkthrough misses {path.name}"
    assert (EXAMPLES / "seed").is_dir()
