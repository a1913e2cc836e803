"""ControllerPublishVolume/ControllerUnpublishVolume rules over real gRPC, with a real Ganesha:
capabilities, NOT_FOUND, ALREADY_EXISTS, single-node modes across nodes, idempotency, the
export's client list, and DeleteVolume while published."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from sharevol.catalog.store import Catalog
from sharevol.csi._proto import csi_pb2
from tests.integration.nfs.conftest import NFS_TOOLS, NfsServed
from tests.support.csi import ROX, RWO, RWOP, RWX, code_of, mount_cap, running_server

pytestmark = pytest.mark.root(*NFS_TOOLS)

C = grpc.StatusCode
RPC = csi_pb2.ControllerServiceCapability.RPC
MNSW = csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_SINGLE_WRITER
NODE_A = "node-a@127.0.0.11"
NODE_B = "node-b@127.0.0.12"


def publisher(nfs: NfsServed) -> Callable[..., grpc.StatusCode]:
    """publish(volume_id, node, mode=RWX, readonly=False) -> status code."""

    def publish(
        volume_id: str, node: str, mode: int = RWX, readonly: bool = False
    ) -> grpc.StatusCode:
        request = csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume_id, node_id=node, volume_capability=mount_cap(mode), readonly=readonly
        )
        return code_of(lambda: nfs.stubs.controller.ControllerPublishVolume(request))

    return publish


def unpublish(nfs: NfsServed, volume_id: str, node: str = "") -> grpc.StatusCode:
    request = csi_pb2.ControllerUnpublishVolumeRequest(volume_id=volume_id, node_id=node)
    return code_of(lambda: nfs.stubs.controller.ControllerUnpublishVolume(request))


def clients(nfs: NfsServed, volume_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(RW, RO) client lists Ganesha was given for the volume's export."""
    assert nfs.server.nfs is not None and nfs.server.provisioner is not None
    record = nfs.server.provisioner.get(volume_id)
    assert record.nfs_export is not None
    spec = nfs.server.nfs.applied()[record.nfs_export.export_id]
    return spec.rw_clients, spec.ro_clients


def test_publish_capabilities_are_advertised_with_the_nfs_server(nfs: NfsServed) -> None:
    caps = nfs.stubs.controller.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest()
    ).capabilities
    kinds = {c.rpc.type for c in caps}

    assert {RPC.PUBLISH_UNPUBLISH_VOLUME, RPC.PUBLISH_READONLY} <= kinds


def test_without_the_nfs_server_publish_is_neither_advertised_nor_served(
    btrfs_fs: Path, tmp_path: Path
) -> None:
    from sharevol.pools.config import PoolConfig, ServerConfig

    config = ServerConfig(pools=(PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),))
    with running_server(config, tmp_path / "state") as (_server, stubs):
        caps = stubs.controller.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest()
        ).capabilities
        request = csi_pb2.ControllerPublishVolumeRequest(
            volume_id="fast/" + "a" * 32, node_id=NODE_A, volume_capability=mount_cap()
        )
        code = code_of(lambda: stubs.controller.ControllerPublishVolume(request))

    assert RPC.PUBLISH_UNPUBLISH_VOLUME not in {c.rpc.type for c in caps}
    assert code == C.UNIMPLEMENTED


def test_publish_adds_the_node_address_and_unpublish_removes_it(nfs: NfsServed) -> None:
    volume = nfs.create("shared")
    publish = publisher(nfs)

    assert publish(volume.volume_id, NODE_A) == C.OK
    assert publish(volume.volume_id, NODE_B, readonly=True) == C.OK
    assert clients(nfs, volume.volume_id) == (("127.0.0.1", "127.0.0.11"), ("127.0.0.12",))

    assert unpublish(nfs, volume.volume_id, NODE_A) == C.OK
    assert clients(nfs, volume.volume_id) == (("127.0.0.1",), ("127.0.0.12",))
    assert unpublish(nfs, volume.volume_id) == C.OK  # no node: from every node
    assert clients(nfs, volume.volume_id) == (("127.0.0.1",), ())


def test_publications_are_recorded_in_the_catalog(nfs: NfsServed, btrfs_fs: Path) -> None:
    volume = nfs.create("recorded")
    publisher(nfs)(volume.volume_id, NODE_A, readonly=True)

    (record,) = [r for r in Catalog(btrfs_fs).load_volumes() if r.volume_id == volume.volume_id]
    assert [(p.node_id, p.address, p.readonly) for p in record.publications] == [
        (NODE_A, "127.0.0.11", True)
    ]


def test_publish_is_idempotent_and_an_incompatible_repeat_is_already_exists(
    nfs: NfsServed,
) -> None:
    volume = nfs.create("idem")
    publish = publisher(nfs)

    assert publish(volume.volume_id, NODE_A) == C.OK
    assert publish(volume.volume_id, NODE_A) == C.OK
    assert publish(volume.volume_id, NODE_A, readonly=True) == C.ALREADY_EXISTS
    assert publish(volume.volume_id, NODE_A, mode=ROX) == C.ALREADY_EXISTS
    assert clients(nfs, volume.volume_id) == (("127.0.0.1", "127.0.0.11"), ())


@pytest.mark.parametrize("mode", [RWO, RWOP])
def test_single_node_volume_on_a_second_node_is_failed_precondition(
    nfs: NfsServed, mode: int
) -> None:
    volume = nfs.create("single", access=mode)
    publish = publisher(nfs)

    assert publish(volume.volume_id, NODE_A, mode) == C.OK
    assert publish(volume.volume_id, NODE_B, mode) == C.FAILED_PRECONDITION
    assert unpublish(nfs, volume.volume_id, NODE_A) == C.OK
    assert publish(volume.volume_id, NODE_B, mode) == C.OK


def test_multi_node_single_writer_allows_one_writer_and_readers(nfs: NfsServed) -> None:
    volume = nfs.create("one-writer", access=MNSW)
    publish = publisher(nfs)

    assert publish(volume.volume_id, NODE_A, MNSW) == C.OK
    assert publish(volume.volume_id, NODE_B, MNSW) == C.FAILED_PRECONDITION
    assert publish(volume.volume_id, NODE_B, MNSW, readonly=True) == C.OK


def test_missing_volume_or_node_address_is_not_found(nfs: NfsServed) -> None:
    volume = nfs.create("nf")
    publish = publisher(nfs)

    assert publish("fast/" + "0" * 32, NODE_A) == C.NOT_FOUND
    assert publish("not-an-id", NODE_A) == C.NOT_FOUND
    assert publish(volume.volume_id, "node-without-address") == C.NOT_FOUND
    assert publish(volume.volume_id, "node@not-an-ip") == C.NOT_FOUND


def test_bad_publish_requests_are_invalid_argument(nfs: NfsServed) -> None:
    volume = nfs.create("bad")
    missing_cap = csi_pb2.ControllerPublishVolumeRequest(volume_id=volume.volume_id, node_id=NODE_A)
    missing_node = csi_pb2.ControllerPublishVolumeRequest(
        volume_id=volume.volume_id, volume_capability=mount_cap()
    )
    rwo_volume = nfs.create("rwo", access=RWO)

    controller = nfs.stubs.controller
    assert code_of(lambda: controller.ControllerPublishVolume(missing_cap)) == C.INVALID_ARGUMENT
    assert code_of(lambda: controller.ControllerPublishVolume(missing_node)) == C.INVALID_ARGUMENT
    assert publisher(nfs)(rwo_volume.volume_id, NODE_A, RWX) == C.INVALID_ARGUMENT


def test_unpublish_of_unknown_volume_or_node_is_ok(nfs: NfsServed) -> None:
    volume = nfs.create("un")

    assert unpublish(nfs, "fast/" + "0" * 32, NODE_A) == C.OK
    assert unpublish(nfs, volume.volume_id, NODE_A) == C.OK
    assert unpublish(nfs, volume.volume_id, NODE_A) == C.OK


def test_volume_not_exported_publishes_without_doing_anything(nfs: NfsServed) -> None:
    volume = nfs.create("plain-one", access=RWO, pool="plain")
    publish = publisher(nfs)

    assert publish(volume.volume_id, NODE_A, RWO) == C.OK
    assert publish(volume.volume_id, NODE_B, RWO) == C.OK  # nothing recorded, nothing enforced
    assert unpublish(nfs, volume.volume_id, NODE_A) == C.OK
    assert nfs.server.provisioner is not None
    assert nfs.server.provisioner.get(volume.volume_id).publications == ()


def test_delete_of_a_published_volume_is_failed_precondition_until_unpublished(
    nfs: NfsServed,
) -> None:
    volume = nfs.create("busy")
    publisher(nfs)(volume.volume_id, NODE_A)
    delete = csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id)

    assert code_of(lambda: nfs.stubs.controller.DeleteVolume(delete)) == C.FAILED_PRECONDITION
    assert unpublish(nfs, volume.volume_id, NODE_A) == C.OK
    assert code_of(lambda: nfs.stubs.controller.DeleteVolume(delete)) == C.OK
