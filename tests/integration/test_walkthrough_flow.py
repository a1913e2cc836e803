"""The walkthrough (docs/walkthrough.md, examples/seed/) played against a real sharevol server:
the same StorageClasses, PVCs, pods and snapshots, turned into the calls the external-provisioner,
the external-snapshotter and kubelet would make, and the resulting volumes and mounts checked.

The walkthrough's pool `nas` is the nas overlay's `kind: nfs` pool, a share that sharevol
mounts; here a plain directory of the host stands in for the mounted share (this kernel has no
NFS client), which is what the share pool is to the controller: the plain pool's directories
on a mount that enforces nothing. The share pool's own mounts (the controller's, and nodes
mounting each volume's folder) are tested in the VM tier. The overlay classes' `fast`, `slow`
and `local` pools are btrfs.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.support.csi import running_server
from tests.support.kube import Cluster
from tests.support.manifests import (
    DEPLOY,
    Document,
    example_documents,
    load_documents,
    of_kind,
    pools_config,
    pvc_size_bytes,
)

pytestmark = pytest.mark.root("mkfs.ext4", "tar")

CONTEXT = "sharevol.csi.io/"
runner = SubprocessRunner()


@pytest.fixture
def kubelet_root(tmp_path: Path) -> Iterator[Path]:
    """kubelet's directory; whatever a failed test left mounted there (and the loop devices
    of image volumes under tmp_path) is undone afterwards."""
    root = tmp_path / "kubelet"
    root.mkdir()
    try:
        yield root
    finally:
        for target in sorted(mounts_under(tmp_path), key=len, reverse=True):
            if target.startswith(str(root)):
                runner.run(["umount", target], timeout=60.0, check=False)
        listing = runner.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"],
                             timeout=60.0, check=False)  # fmt: skip
        for line in listing.stdout.splitlines():
            name, _, back_file = line.strip().partition(" ")
            back_file = back_file.strip()
            # Image volumes only: the btrfs fixture detaches its own device.
            if back_file.startswith(str(tmp_path)) and not back_file.endswith("/btrfs.img"):
                runner.run(["losetup", "-d", name], timeout=60.0, check=False)


def nas_overlay_config() -> ServerConfig:
    """deploy/overlays/nas/config.yaml's pools.yaml, validated as `serve` does."""
    [config_map] = load_documents(DEPLOY / "overlays" / "nas" / "config.yaml")
    return pools_config(config_map)


def share_stand_in(share: Path) -> PoolConfig:
    """The nas overlay's share pool with a local directory in place of the mounted share.
    overcommit lets the walkthrough's 10Gi of claims fit whatever this disk's free space is."""
    [pool] = nas_overlay_config().pools
    assert pool.kind == "nfs" and pool.server and pool.share, pool
    return PoolConfig(name=pool.name, path=share, kind="plain", overcommit=100)


def share_config(share: Path) -> ServerConfig:
    """The nas overlay's pools.yaml, its share replaced by a local directory."""
    config = nas_overlay_config()
    return ServerConfig(pools=(share_stand_in(share),), default_pool=config.default_pool)


def walkthrough() -> list[Document]:
    return [*example_documents(), *load_documents(DEPLOY / "base" / "snapshotclass.yaml")]


def assert_write_refused(path: Path, code: int) -> None:
    with pytest.raises(OSError) as caught:
        path.write_text("must not land")
    assert caught.value.errno == code, caught.value


def write_synced(path: Path, data: bytes) -> None:
    """Write as a database does: the file and its directory entry fsynced. A snapshot is
    crash-consistent: it holds what was synced, like a disk after a power cut."""
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()  # out of Python's buffer first, or fsync syncs an empty file
        os.fsync(handle.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def directory_of(volume: csi_pb2.Volume) -> str:
    return volume.volume_context[CONTEXT + "directory"]


def test_dynamic_claim_gets_its_named_directory_on_the_share_and_is_archived_on_delete(
    plain_dir: Path, kubelet_root: Path
) -> None:
    with running_server(share_config(plain_dir), kubelet_root.parent / "state") as (_, stubs):
        cluster = Cluster(stubs, walkthrough(), kubelet_root)
        bound = cluster.provision("pvc-dynamic")
        # subDir ${pvc.metadata.namespace}-${pvc.metadata.name}-${pv.metadata.name}
        directory = directory_of(bound.volume)
        assert directory == f"default-pvc-dynamic-{bound.pv_name}"
        assert bound.volume.capacity_bytes == pvc_size_bytes(bound.pvc)
        assert bound.volume.volume_context[CONTEXT + "quota"] == "not enforced"
        on_share = plain_dir / "volumes" / directory
        assert on_share.is_dir()

        paths = cluster.run_pod("dynamic-writer")
        (paths["pvc-dynamic"] / "hello.txt").write_text("hello from the pod\n")
        assert (on_share / "hello.txt").read_text() == "hello from the pod\n"
        cluster.stop_pod(paths)
        assert mounts_under(kubelet_root) == []

        cluster.delete("pvc-dynamic")
        assert not on_share.exists(), "the claim's directory left the share's volumes"
        archived = [p for p in plain_dir.rglob("hello.txt") if "volumes" not in p.parts]
        assert [p.read_text() for p in archived] == ["hello from the pod\n"]


def test_config_loaded_once_is_cloned_read_only_for_every_web_pod(
    plain_dir: Path, kubelet_root: Path
) -> None:
    with running_server(share_config(plain_dir), kubelet_root.parent / "state") as (_, stubs):
        cluster = Cluster(stubs, walkthrough(), kubelet_root)
        cluster.provision("app-config-source")
        loader = cluster.run_pod("load-config")
        (loader["app-config-source"] / "app.conf").write_text("listen 8080\nworkers 4\n")
        (loader["app-config-source"] / "VERSION").write_text("v1\n")
        cluster.stop_pod(loader)

        config = cluster.provision("app-config")  # ReadOnlyMany, dataSource: the source PVC
        assert config.volume_id != cluster.volumes["app-config-source"].volume_id
        cluster.provision("app-logs")
        pods = [cluster.run_pod("web", replica) for replica in range(3)]
        for pod in pods:
            assert (pod["app-config"] / "app.conf").read_text() == "listen 8080\nworkers 4\n"
            assert_write_refused(pod["app-config"] / "app.conf", errno.EROFS)
        # The clone is independent: changing the source later does not reach the pods.
        loader = cluster.run_pod("load-config")
        (loader["app-config-source"] / "VERSION").write_text("v2\n")
        assert (pods[0]["app-config"] / "VERSION").read_text() == "v1\n"
        cluster.stop_everything()
        assert mounts_under(kubelet_root) == []


def test_logs_are_written_by_every_replica_and_read_by_the_reader(
    plain_dir: Path, kubelet_root: Path
) -> None:
    with running_server(share_config(plain_dir), kubelet_root.parent / "state") as (_, stubs):
        cluster = Cluster(stubs, walkthrough(), kubelet_root)
        cluster.provision("app-config-source")
        cluster.provision("app-config")
        logs = cluster.provision("app-logs")
        assert [m for m in logs.access_modes] == ["ReadWriteMany"]
        writers = [cluster.run_pod("web", replica) for replica in range(3)]
        for number, pod in enumerate(writers):
            (pod["app-logs"] / f"web-{number}.log").write_text(f"line from web-{number}\n")
        reader = cluster.run_pod("log-reader")
        seen = sorted(p.name for p in reader["app-logs"].iterdir())
        assert seen == ["web-0.log", "web-1.log", "web-2.log"]
        assert_write_refused(reader["app-logs"] / "web-0.log", errno.EROFS)
        # One staging per volume on the node, one publication per pod.
        assert sorted(cluster.staged) == ["app-config", "app-logs"]
        assert len([claim for claim, _ in cluster.published if claim == "app-logs"]) == 4
        cluster.stop_everything()
        assert mounts_under(kubelet_root) == []


def test_database_has_a_hard_limit_and_its_snapshot_restore_feeds_the_backup(
    plain_dir: Path, kubelet_root: Path
) -> None:
    with running_server(share_config(plain_dir), kubelet_root.parent / "state") as (_, stubs):
        cluster = Cluster(stubs, walkthrough(), kubelet_root)
        database = cluster.provision("db-data")
        assert database.access_modes == ["ReadWriteOncePod"]
        assert database.volume.volume_context[CONTEXT + "quota"] == "enforced"
        db = cluster.run_pod("db")
        data = db["db-data"]
        write_synced(data / "PG_VERSION", b"16\n")
        write_synced(data / "table", b"row-1\n")
        limit = pvc_size_bytes(database.pvc)
        with pytest.raises(OSError) as caught, (data / "too-big").open("wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, limit + 1)
        assert caught.value.errno == errno.ENOSPC, "the image file is the hard limit"
        (data / "too-big").unlink()
        # ReadWriteOncePod: a second pod on the node is refused.
        with pytest.raises(grpc.RpcError) as refused:
            cluster.run_pod("db", replica=1)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        cluster.snapshot("db-data-snap-1")
        write_synced(data / "table", b"row-1\nrow-2-after-the-snapshot\n")

        cluster.provision("backups")
        restore = cluster.provision("db-data-restore")
        assert restore.volume.capacity_bytes >= database.volume.capacity_bytes
        job = cluster.run_pod("db-backup")
        assert_write_refused(job["db-data-restore"] / "table", errno.EROFS)
        archive = job["backups"] / "db-data.tar.gz"
        runner.run(["tar", "-C", str(job["db-data-restore"]), "-czf", str(archive), "."],
                   timeout=120.0)  # fmt: skip
        extracted = runner.run(["tar", "-xzOf", str(archive), "./table"], timeout=120.0)
        assert extracted.stdout == "row-1\n", "the backup holds the data at snapshot time"
        cluster.stop_everything()
        assert mounts_under(kubelet_root) == []

        cluster.delete("db-data-restore")
        cluster.delete("db-data")  # onDelete: retain keeps the image file on the share
        retained = [p for p in plain_dir.rglob("disk.img")]
        assert retained, "the retained database image is still on the share"


# ---- the classes deploy/ installs ----------------------------------------------------------


def overlay_classes() -> list[tuple[str, Document]]:
    found = []
    for name in ("managed-nfs", "nas", "node-local"):
        for document in load_documents(DEPLOY / "overlays" / name / "storageclasses.yaml"):
            found.append((name, document))
    return [
        (f"{where}/{d['metadata']['name']}", d) for where, d in found if d["kind"] == "StorageClass"
    ]


@pytest.mark.parametrize(
    ("where", "storage_class"), overlay_classes(), ids=[w for w, _ in overlay_classes()]
)
def test_overlay_storage_class_makes_a_usable_volume(
    where: str, storage_class: Document, btrfs_fs: Path, plain_dir: Path, kubelet_root: Path
) -> None:
    """Each class of deploy/ through CreateVolume, stage, publish, write, read back, clean up,
    with its pools of the kinds they have in the overlay (btrfs; a plain directory in place of
    the mounted share)."""
    pools = []
    for name in ("fast", "slow", "local"):
        (btrfs_fs / name).mkdir()
        pools.append(PoolConfig(name=name, path=btrfs_fs / name, kind="btrfs", overcommit=10))
    pools.append(share_stand_in(plain_dir))
    block = "block" in storage_class["metadata"]["name"]
    pvc: Document = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {
            "storageClassName": storage_class["metadata"]["name"],
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "64Mi"}},
            **({"volumeMode": "Block"} if block else {}),
        },
    }
    pod: Document = {
        "kind": "Pod",
        "metadata": {"name": "app"},
        "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
    }
    config = ServerConfig(pools=tuple(pools))
    with running_server(config, kubelet_root.parent / "state") as (_, stubs):
        cluster = Cluster(stubs, [storage_class, pvc, pod], kubelet_root)
        bound = cluster.provision("data")
        assert bound.volume.capacity_bytes == 64 * 1024 * 1024
        paths = cluster.run_pod("app")
        if block:
            with paths["data"].open("r+b") as device:
                device.write(b"raw block data")
                device.flush()
                os.fsync(device.fileno())
                device.seek(0)
                assert device.read(14) == b"raw block data"
        else:
            (paths["data"] / "file").write_text(where)
            assert (paths["data"] / "file").read_text() == where
        cluster.stop_everything()
        assert mounts_under(kubelet_root) == []
        cluster.delete("data")
        assert of_kind(cluster.documents, "StorageClass") == [storage_class]
