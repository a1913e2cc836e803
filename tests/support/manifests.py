"""The repository's Kubernetes manifests as data: rendered kustomizations, example files, and
what the external-provisioner and kubelet would send to the driver for them.

The emulation follows the sidecars' documented behaviour, so that the tests feed the driver
exactly what a cluster would: `csi.storage.k8s.io/*` keys of a StorageClass are consumed by
the external-provisioner (an unknown one is an error there), `--extra-create-metadata` adds
the PVC and PV names, and kubelet sends the first access mode of the PV.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharevol.csi._proto import csi_pb2
from sharevol.pools.config import ServerConfig
from sharevol.service.params import PV_NAME, PVC_NAME, PVC_NAMESPACE
from sharevol.sys.runner import SubprocessRunner
from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
EXAMPLES = REPO / "examples"
KUBECTL = os.environ.get("SHAREVOL_KUBECTL", "kubectl")
"""Which kubectl renders the kustomizations (to try another, e.g. Debian's 1.20 build)."""
DRIVER = "sharevol.csi.io"

Document = dict[str, Any]

PROVISIONER_PREFIX = "csi.storage.k8s.io/"
PROVISIONER_KEYS = frozenset(
    PROVISIONER_PREFIX + key
    for key in (
        "fstype",
        *(
            f"{stage}-secret-{part}"
            for stage in (
                "provisioner",
                "controller-publish",
                "node-stage",
                "node-publish",
                "controller-expand",
                "node-expand",
            )
            for part in ("name", "namespace")
        ),
    )
)
"""The StorageClass keys the external-provisioner consumes itself and never passes on."""

Mode = csi_pb2.VolumeCapability.AccessMode
KUBELET_MODES: dict[str, int] = {
    # sharevol advertises SINGLE_NODE_MULTI_WRITER, so RWO arrives as that, not SINGLE_NODE_WRITER.
    "ReadWriteOnce": Mode.SINGLE_NODE_MULTI_WRITER,
    "ReadWriteOncePod": Mode.SINGLE_NODE_SINGLE_WRITER,
    "ReadOnlyMany": Mode.MULTI_NODE_READER_ONLY,
    "ReadWriteMany": Mode.MULTI_NODE_MULTI_WRITER,
}


def load_documents(path: Path) -> list[Document]:
    """Every YAML document of a file (empty documents dropped)."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def kustomization_dirs() -> list[Path]:
    """Every directory under deploy/ that kustomize can build."""
    return sorted(path.parent for path in DEPLOY.rglob("kustomization.yaml"))


def render(directory: Path) -> list[Document]:
    """`kubectl kustomize DIR`, parsed."""
    result = SubprocessRunner().run([KUBECTL, "kustomize", str(directory)], timeout=120.0)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


OVERLAYS = ("managed-nfs", "nas", "node-local")


def require_kubectl() -> None:
    """Skip (outside CI) or fail (CI=true) when kubectl is missing, saying how to get it."""
    if shutil.which(KUBECTL) is None:
        reason = f"needs {KUBECTL} on PATH (Debian package kubernetes-client; scripts/bootstrap)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
        pytest.skip(reason)


@functools.cache
def rendered(directory: Path) -> tuple[Document, ...]:
    """`render`, once per directory and test run."""
    return tuple(render(directory))


def overlay(name: str) -> tuple[Document, ...]:
    return rendered(DEPLOY / "overlays" / name)


def example_files() -> list[Path]:
    """Every manifest under examples/."""
    return sorted(EXAMPLES.rglob("*.yaml"))


def example_documents() -> list[Document]:
    return [doc for path in example_files() for doc in load_documents(path)]


def of_kind(documents: Iterable[Document], kind: str) -> list[Document]:
    return [doc for doc in documents if doc.get("kind") == kind]


def named(documents: Iterable[Document], kind: str, name: str) -> Document:
    """The one document of that kind and name; fails the test when it is missing."""
    found = [doc for doc in of_kind(documents, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def describe(document: Document) -> str:
    """`Kind/name`, for messages."""
    return f"{document['kind']}/{document['metadata']['name']}"


def containers(workload: Document) -> dict[str, Document]:
    """The containers of a Deployment, StatefulSet or DaemonSet by name."""
    spec = workload["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def pools_config(config_map: Document) -> ServerConfig:
    """The `pools.yaml` key of a sharevol-config ConfigMap, validated like `serve` does."""
    return ServerConfig.model_validate(yaml.safe_load(config_map["data"]["pools.yaml"]))


def driver_parameters(storage_class: Mapping[str, Any]) -> dict[str, str]:
    """What the external-provisioner passes on of a StorageClass's parameters: everything
    but its own `csi.storage.k8s.io/*` keys (an unknown one of those fails provisioning)."""
    parameters: dict[str, str] = dict(storage_class.get("parameters") or {})
    unknown = [
        key
        for key in parameters
        if key.startswith(PROVISIONER_PREFIX) and key not in PROVISIONER_KEYS
    ]
    assert not unknown, f"external-provisioner rejects unknown keys {unknown}"
    return {k: v for k, v in parameters.items() if not k.startswith(PROVISIONER_PREFIX)}


def create_parameters(
    storage_class: Mapping[str, Any], pvc: Mapping[str, Any], pv_name: str
) -> dict[str, str]:
    """CreateVolume parameters as sent by external-provisioner with --extra-create-metadata."""
    return {
        **driver_parameters(storage_class),
        PVC_NAME: pvc["metadata"]["name"],
        PVC_NAMESPACE: pvc["metadata"].get("namespace", "default"),
        PV_NAME: pv_name,
    }


def fs_type(storage_class: Mapping[str, Any]) -> str:
    """The fs_type of the mount capability: the class's `csi.storage.k8s.io/fstype` or none."""
    return str((storage_class.get("parameters") or {}).get(PROVISIONER_PREFIX + "fstype", ""))


def capability(
    access_mode: str, *, fs_type: str = "", mount_flags: Iterable[str] = (), block: bool = False
) -> csi_pb2.VolumeCapability:
    """One VolumeCapability for a Kubernetes access mode name."""
    mode = csi_pb2.VolumeCapability.AccessMode(mode=KUBELET_MODES[access_mode])  # type: ignore[arg-type]
    if block:
        return csi_pb2.VolumeCapability(
            access_mode=mode, block=csi_pb2.VolumeCapability.BlockVolume()
        )
    return csi_pb2.VolumeCapability(
        access_mode=mode,
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(mount_flags)),
    )


def pvc_size_bytes(pvc: Mapping[str, Any]) -> int:
    """`spec.resources.requests.storage` of a PVC in bytes (binary and decimal suffixes)."""
    text = str(pvc["spec"]["resources"]["requests"]["storage"])
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12}  # fmt: skip
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * units[suffix]
    return int(text)


def kubelet_staging_path(root: Path, volume_handle: str) -> Path:
    """Where kubelet asks for a volume to be staged (its layout, under a test root)."""
    digest = hashlib.sha256(volume_handle.encode()).hexdigest()
    return root / "plugins/kubernetes.io/csi" / DRIVER / digest / "globalmount"


def kubelet_target_path(root: Path, pod_uid: str, pv_name: str) -> Path:
    """Where kubelet asks for a volume to be published for one pod (its layout)."""
    return root / "pods" / pod_uid / "volumes/kubernetes.io~csi" / pv_name / "mount"
