"""Exports survive restarts: a killed Ganesha is restarted by its supervisor with every export,
and a restarted sharevol rebuilds them (client lists included) from the catalog."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.nfs.ganesha import GaneshaServer
from tests.integration.nfs.conftest import NFS_TOOLS, NfsServed, nfs_served, nfs_server_config
from tests.support.csi import mount_cap
from tests.support.nfs import build_shim, free_port, nfs_client, read_file, write_file, write_from

pytestmark = pytest.mark.root(*NFS_TOOLS)

CTX = "sharevol.csi.io/"
RESTART_TIMEOUT = 60.0


def ganesha_of(nfs: NfsServed) -> GaneshaServer:
    assert nfs.server.nfs is not None and nfs.server.nfs.ganesha is not None
    return nfs.server.nfs.ganesha


def test_killed_ganesha_is_restarted_and_every_export_comes_back(nfs: NfsServed) -> None:
    volumes = [nfs.create(f"r{i}", mode="0777") for i in range(3)]
    for i, volume in enumerate(volumes):
        with nfs_client(nfs.port, volume.volume_context[f"{CTX}nfs-export"]) as client:
            write_file(client, "data", f"volume {i}".encode())
    ganesha = ganesha_of(nfs)
    old_pid = ganesha.pid
    assert old_pid is not None

    os.kill(old_pid, signal.SIGKILL)

    assert ganesha.wait_restarted(1, RESTART_TIMEOUT), "Ganesha was not restarted"
    assert ganesha.pid not in (None, old_pid)
    assert len(ganesha.bus.export_ids()) == 3
    for i, volume in enumerate(volumes):
        with nfs_client(nfs.port, volume.volume_context[f"{CTX}nfs-export"]) as client:
            assert read_file(client, "data") == f"volume {i}".encode()


def test_exports_created_after_a_ganesha_restart_work(nfs: NfsServed) -> None:
    ganesha = ganesha_of(nfs)
    assert ganesha.pid is not None
    os.kill(ganesha.pid, signal.SIGKILL)
    assert ganesha.wait_restarted(1, RESTART_TIMEOUT)

    volume = nfs.create("after", mode="0777")

    with nfs_client(nfs.port, volume.volume_context[f"{CTX}nfs-export"]) as client:
        write_file(client, "x", b"after the restart")
        assert read_file(client, "x") == b"after the restart"


def test_restarted_sharevol_rebuilds_exports_and_client_lists_from_the_catalog(
    btrfs_fs: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    config = nfs_server_config(btrfs_fs, plain, free_port(), clients=())
    state = tmp_path / "state"
    shim = build_shim(tmp_path)
    with nfs_served(config, state) as first:
        volume = first.create("kept", mode="0777")
        first.stubs.controller.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(
                volume_id=volume.volume_id,
                node_id="node-2@127.0.0.2",
                volume_capability=mount_cap(),
            )
        )
        pseudo = volume.volume_context[f"{CTX}nfs-export"]
        assert write_from(shim, "127.0.0.2", first.port, pseudo, "before")["result"] == "ok"
    # stopped: exports removed, Ganesha stopped; a new server reads the catalog

    with nfs_served(config, state) as again:
        assert again.server.nfs is not None and again.server.nfs.ganesha is not None
        assert len(again.server.nfs.ganesha.bus.export_ids()) == 1
        assert write_from(shim, "127.0.0.2", again.port, pseudo, "after")["result"] == "ok"
        refused = write_from(shim, "127.0.0.1", again.port, pseudo, "nope")
        assert refused["error"] == "NfsNotFoundError"


def test_stop_leaves_no_ganesha_and_no_export_mount(btrfs_fs: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    config = nfs_server_config(btrfs_fs, plain, free_port())
    with nfs_served(config, tmp_path / "state") as nfs:  # its exit fails on a mount left
        nfs.create("a")
        pid = ganesha_of(nfs).pid
        assert pid is not None

    assert not Path(f"/proc/{pid}").exists()
    assert not (tmp_path / "state" / "nfs" / "ganesha.pid").exists()
