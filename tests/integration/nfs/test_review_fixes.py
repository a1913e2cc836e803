"""Export IDs and client addresses after failures: a retried delete never removes the export a
newer volume got its old ID for, and a node ID that cannot be a Ganesha client (an IPv6 zone)
is refused before anything is saved, so one bad request never unserves other volumes."""

from __future__ import annotations

import os
import signal

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.errors import Internal
from tests.integration.nfs.conftest import NFS_TOOLS, NfsServed
from tests.support.csi import code_of, mount_cap
from tests.support.nfs import nfs_client, write_file

pytestmark = pytest.mark.root(*NFS_TOOLS)

EXPORT = "sharevol.csi.io/nfs-export"


def test_a_retried_delete_never_removes_the_export_its_id_now_serves(
    nfs: NfsServed, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = nfs.create("first", mode="0777")
    provisioner = nfs.server.provisioner
    assert provisioner is not None
    pool = provisioner.pools()["fast"].pool
    delete_for_real = pool.delete_volume
    attempts: list[int] = []

    def fails_once(*args: object, **kwargs: object) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise Internal("transient failure deleting the subvolume")
        delete_for_real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "delete_volume", fails_once)
    request = csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id)
    assert code_of(lambda: nfs.stubs.controller.DeleteVolume(request)) == grpc.StatusCode.INTERNAL
    second = nfs.create("second", mode="0777")

    assert code_of(lambda: nfs.stubs.controller.DeleteVolume(request)) == grpc.StatusCode.OK

    with nfs_client(nfs.port, second.volume_context[EXPORT]) as client:
        write_file(client, "still-served", b"yes")


def test_a_node_id_with_an_ipv6_zone_is_not_found_and_saves_nothing(nfs: NfsServed) -> None:
    volumes = [nfs.create(f"v{index}", mode="0777") for index in range(3)]
    request = csi_pb2.ControllerPublishVolumeRequest(
        volume_id=volumes[0].volume_id,
        node_id="node-x@fe80::1%eth0",
        volume_capability=mount_cap(),
    )
    code = code_of(lambda: nfs.stubs.controller.ControllerPublishVolume(request))
    assert code == grpc.StatusCode.NOT_FOUND
    provisioner = nfs.server.provisioner
    assert provisioner is not None
    assert provisioner.get(volumes[0].volume_id).publications == ()

    ganesha = nfs.server.nfs.ganesha if nfs.server.nfs else None
    assert ganesha is not None and ganesha.pid is not None
    os.kill(ganesha.pid, signal.SIGKILL)
    assert ganesha.wait_restarted(1, 60)
    for volume in volumes:
        with nfs_client(nfs.port, volume.volume_context[EXPORT]) as client:
            write_file(client, "after-restart", b"ok")
