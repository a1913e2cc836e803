"""Volumes served by a real NFS-Ganesha on loopback, read and written with a real NFSv4.1
client (nfs-rs): reachability, data, quota, deletion, client lists, squash and ownership."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import grpc
import nfs_rs
import pytest

from sharevol.catalog.store import Catalog
from sharevol.csi._proto import csi_pb2
from sharevol.sys.statfs import mounts_under
from tests.integration.nfs.conftest import NFS_TOOLS, NfsServed
from tests.support.csi import MiB, mount_cap
from tests.support.nfs import build_shim, nfs_client, read_file, write_file, write_from

pytestmark = pytest.mark.root(*NFS_TOOLS)

CTX = "sharevol.csi.io/"


def pseudo_of(volume: csi_pb2.Volume) -> str:
    return volume.volume_context[f"{CTX}nfs-export"]


def test_created_volume_context_tells_nodes_where_to_mount(nfs: NfsServed) -> None:
    volume = nfs.create("ctx")

    context = volume.volume_context
    directory = context[f"{CTX}directory"]
    assert context[f"{CTX}nfs-server"] == "127.0.0.1"
    assert context[f"{CTX}nfs-port"] == str(nfs.port)
    assert context[f"{CTX}nfs-export"] == f"/fast/{directory}"
    assert context[f"{CTX}nfs-mount-options"] == f"vers=4.1,proto=tcp,port={nfs.port},sec=sys"
    assert context[f"{CTX}nfs-root-squash"] == "true"


def test_created_volume_is_reachable_and_data_reads_back(nfs: NfsServed, btrfs_fs: Path) -> None:
    volume = nfs.create("data", mode="0777")
    payload = os.urandom(3 * MiB + 17)

    with nfs_client(nfs.port, pseudo_of(volume)) as client:
        write_file(client, "blob", payload)
        client.mkdir("sub")
        write_file(client, "sub/note", b"hello\n")
        assert read_file(client, "blob") == payload
        assert client.listdir("sub") == ["note"]

    on_pool = btrfs_fs / "volumes" / volume.volume_context[f"{CTX}directory"]
    assert (on_pool / "blob").read_bytes() == payload
    assert (on_pool / "sub" / "note").read_bytes() == b"hello\n"


def test_write_past_the_quota_fails_with_edquot_through_nfs(nfs: NfsServed) -> None:
    volume = nfs.create("small", 16 * MiB, mode="0777")

    with (
        nfs_client(nfs.port, pseudo_of(volume)) as client,
        pytest.raises(nfs_rs.NfsError) as failure,
        client.open("big", "wb") as handle,
    ):
        for _ in range(32):
            handle.write(b"\0" * MiB)
    assert failure.value.errno == errno.EDQUOT


def test_deleted_volume_export_is_gone(nfs: NfsServed) -> None:
    volume = nfs.create("doomed", mode="0777")
    assert nfs.server.nfs is not None and nfs.server.nfs.ganesha is not None
    bus = nfs.server.nfs.ganesha.bus
    with nfs_client(nfs.port, pseudo_of(volume)) as client:
        write_file(client, "x", b"x")
    exported = bus.export_ids()
    assert len(exported) == 1

    nfs.stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))

    assert bus.export_ids() == set()
    with pytest.raises(nfs_rs.NfsNotFoundError):  # NFS4ERR_NOENT at the pseudo path
        nfs_client(nfs.port, pseudo_of(volume)).__enter__()
    assert mounts_under(nfs.state_dir / "nfs" / "mnt") == []


def test_export_ids_are_unique_and_kept_in_the_catalog(nfs: NfsServed, btrfs_fs: Path) -> None:
    volumes = [nfs.create(f"v{i}") for i in range(3)]

    records = {r.volume_id: r for r in Catalog(btrfs_fs).load_volumes()}
    ids = [records[v.volume_id].nfs_export.export_id for v in volumes]  # type: ignore[union-attr]
    assert len(set(ids)) == 3
    assert nfs.server.nfs is not None and nfs.server.nfs.ganesha is not None
    assert nfs.server.nfs.ganesha.bus.export_ids() == set(ids)


def test_volume_of_a_pool_not_exported_gets_no_export(nfs: NfsServed) -> None:
    volume = nfs.create("local", pool="plain")

    assert f"{CTX}nfs-export" not in volume.volume_context
    assert nfs.server.nfs is not None and nfs.server.nfs.ganesha is not None
    assert nfs.server.nfs.ganesha.bus.export_ids() == set()


def test_nfs_export_false_opts_a_volume_out_and_true_on_an_unexported_pool_is_refused(
    nfs: NfsServed,
) -> None:
    volume = nfs.create("opt-out", nfsExport="false")
    assert f"{CTX}nfs-export" not in volume.volume_context

    with pytest.raises(grpc.RpcError) as refused:
        nfs.create("wants-nfs", pool="plain", nfsExport="true")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not exported" in (refused.value.details() or "")


def test_export_restricted_to_127_0_0_2_refuses_127_0_0_1_and_serves_127_0_0_2(
    nfs_published_only: NfsServed, tmp_path: Path
) -> None:
    nfs = nfs_published_only
    volume = nfs.create("restricted", mode="0777")
    nfs.stubs.controller.ControllerPublishVolume(
        csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume.volume_id,
            node_id="node-2@127.0.0.2",
            volume_capability=mount_cap(),
        )
    )
    shim = build_shim(tmp_path)

    from_1 = write_from(shim, "127.0.0.1", nfs.port, pseudo_of(volume), "one")
    from_2 = write_from(shim, "127.0.0.2", nfs.port, pseudo_of(volume), "two")

    assert from_1 == {"result": "error", "error": "NfsNotFoundError", "errno": errno.ENOENT}
    assert from_2 == {"result": "ok", "read": "from the probe\n"}
    with pytest.raises(nfs_rs.NfsNotFoundError):  # the in-process client is 127.0.0.1 too
        nfs_client(nfs.port, pseudo_of(volume)).__enter__()


def test_root_squash_maps_root_to_the_anonymous_user(nfs: NfsServed, btrfs_fs: Path) -> None:
    squashed = nfs.create("squashed", mode="0777")
    trusted = nfs.create("trusted", mode="0777", rootSquash="false")

    for volume in (squashed, trusted):
        with nfs_client(nfs.port, pseudo_of(volume), uid=0, gid=0) as client:
            write_file(client, "by-root", b"r")

    def owner(volume: csi_pb2.Volume) -> tuple[int, int]:
        path = btrfs_fs / "volumes" / volume.volume_context[f"{CTX}directory"] / "by-root"
        info = path.stat()
        return info.st_uid, info.st_gid

    assert owner(squashed) == (65534, 65534)
    assert owner(trusted) == (0, 0)
    assert trusted.volume_context[f"{CTX}nfs-root-squash"] == "false"


def test_uid_gid_mode_let_a_non_root_client_write_without_0777(
    nfs: NfsServed, btrfs_fs: Path
) -> None:
    volume = nfs.create("owned", uid="1000", gid="1000", mode="0770")

    root = btrfs_fs / "volumes" / volume.volume_context[f"{CTX}directory"]
    info = root.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1000, 1000, 0o770)
    with nfs_client(nfs.port, pseudo_of(volume), uid=1000, gid=1000) as client:
        write_file(client, "mine", b"ok")
    assert (root / "mine").stat().st_uid == 1000
    with (
        nfs_client(nfs.port, pseudo_of(volume), uid=2000, gid=2000) as stranger,
        pytest.raises(nfs_rs.NfsPermissionError),
    ):
        write_file(stranger, "theirs", b"no")
    with (
        nfs_client(nfs.port, pseudo_of(volume), uid=0, gid=0) as squashed_root,
        pytest.raises(nfs_rs.NfsPermissionError),  # root is 65534 here: not the owner
    ):
        write_file(squashed_root, "roots", b"no")
