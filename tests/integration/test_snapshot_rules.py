"""The CSI snapshot and clone rules of the checklist, over real gRPC, on real btrfs, XFS (reflink)
and ext4 pools: CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot and CreateVolume with
a volume_content_source. Background copies (ext4) have their own module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.csi.server import CsiServer
from sharevol.sys import btrfs
from tests.support.csi import RWO, MiB, Stubs, code_of, running_server
from tests.support.snapshots import (
    create_when_copied,
    make_volume,
    ready_snapshot,
    restore_request,
    snapshot_request,
    take_snapshot,
    three_pools,
    volume_path,
)

pytestmark = pytest.mark.root("mkfs.xfs", "mkfs.ext4")

C = grpc.StatusCode
UNKNOWN_ID = "fast/" + "0" * 32
SNAPSHOTTER_KEYS = {
    "csi.storage.k8s.io/volumesnapshot/name": "snap-1",
    "csi.storage.k8s.io/volumesnapshot/namespace": "default",
    "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-1",
}


@pytest.fixture
def served(
    btrfs_fs: Path, xfs_fs: Path, ext4_fs: Path, tmp_path: Path
) -> Iterator[tuple[CsiServer, Stubs]]:
    with running_server(three_pools(btrfs_fs, xfs_fs, ext4_fs), tmp_path / "state") as both:
        yield both


@pytest.fixture
def stubs(served: tuple[CsiServer, Stubs]) -> Stubs:
    return served[1]


def test_controller_offers_snapshots_and_clones(stubs: Stubs) -> None:
    answer = stubs.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest())
    rpcs = {c.rpc.type for c in answer.capabilities}
    RPC = csi_pb2.ControllerServiceCapability.RPC
    assert {
        RPC.CREATE_DELETE_SNAPSHOT, RPC.LIST_SNAPSHOTS, RPC.GET_SNAPSHOT, RPC.CLONE_VOLUME,
    } <= rpcs  # fmt: skip


# -- CreateSnapshot -------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["fast", "xfs"])
def test_create_snapshot_is_ready_at_once_and_sized_as_its_source(stubs: Stubs, pool: str) -> None:
    source = make_volume(stubs, "data", pool, 96 * MiB)
    before = time.time()

    snapshot = take_snapshot(stubs, "snap-1", source.volume_id)

    assert snapshot.ready_to_use
    assert snapshot.size_bytes == 96 * MiB
    assert snapshot.source_volume_id == source.volume_id
    assert snapshot.snapshot_id.startswith(f"{pool}/")
    assert snapshot.snapshot_id != source.volume_id
    assert before - 5 <= snapshot.creation_time.seconds <= time.time() + 5


def test_create_snapshot_same_name_same_source_returns_the_same_snapshot(stubs: Stubs) -> None:
    source = make_volume(stubs, "data")
    first = take_snapshot(stubs, "snap-1", source.volume_id)
    second = take_snapshot(stubs, "snap-1", source.volume_id)
    assert first == second


def test_create_snapshot_same_name_other_source_is_already_exists(stubs: Stubs) -> None:
    one, other = make_volume(stubs, "one"), make_volume(stubs, "other")
    take_snapshot(stubs, "snap-1", one.volume_id)
    request = snapshot_request("snap-1", other.volume_id)
    assert code_of(lambda: stubs.controller.CreateSnapshot(request)) == C.ALREADY_EXISTS


@pytest.mark.parametrize("source", [UNKNOWN_ID, "nope/" + "1" * 32, "../../etc", "x" * 40])
def test_create_snapshot_of_an_unknown_volume_is_not_found(stubs: Stubs, source: str) -> None:
    request = snapshot_request("snap-1", source)
    assert code_of(lambda: stubs.controller.CreateSnapshot(request)) == C.NOT_FOUND


@pytest.mark.parametrize(
    "request_",
    [
        csi_pb2.CreateSnapshotRequest(source_volume_id=UNKNOWN_ID),
        csi_pb2.CreateSnapshotRequest(name="snap-1"),
        csi_pb2.CreateSnapshotRequest(name="s" * 129, source_volume_id=UNKNOWN_ID),
        csi_pb2.CreateSnapshotRequest(name="snap-1", source_volume_id="v" * 129),
    ],
)
def test_create_snapshot_with_missing_or_oversized_fields_is_invalid_argument(
    stubs: Stubs, request_: csi_pb2.CreateSnapshotRequest
) -> None:
    assert code_of(lambda: stubs.controller.CreateSnapshot(request_)) == C.INVALID_ARGUMENT


def test_create_snapshot_takes_the_snapshotter_metadata_and_refuses_other_keys(
    stubs: Stubs,
) -> None:
    source = make_volume(stubs, "data")
    made = stubs.controller.CreateSnapshot(
        snapshot_request("snap-1", source.volume_id, SNAPSHOTTER_KEYS)
    ).snapshot
    assert made.ready_to_use
    for bad in ({"bogus": "1"}, {"snapshot_name": "x"}, {**SNAPSHOTTER_KEYS, "pool": "fast"}):
        request = snapshot_request("snap-2", source.volume_id, bad)
        assert code_of(lambda r=request: stubs.controller.CreateSnapshot(r)) == C.INVALID_ARGUMENT


def test_create_snapshot_while_one_is_pending_is_aborted(
    served: tuple[CsiServer, Stubs],
) -> None:
    server, stubs = served
    source = make_volume(stubs, "data")
    request = snapshot_request("snap-1", source.volume_id)
    with server.locks.hold(["snapshot-name:snap-1"]):
        assert code_of(lambda: stubs.controller.CreateSnapshot(request)) == C.ABORTED
    assert take_snapshot(stubs, "snap-1", source.volume_id).ready_to_use


def test_create_snapshot_that_cannot_fit_is_resource_exhausted(stubs: Stubs) -> None:
    source = make_volume(stubs, "big", "slow", 320 * MiB)
    with (volume_path(stubs, "big") / "data").open("wb") as handle:
        for _ in range(300):
            handle.write(b"\x7f" * MiB)
    request = snapshot_request("snap-1", source.volume_id)
    assert code_of(lambda: stubs.controller.CreateSnapshot(request)) == C.RESOURCE_EXHAUSTED
    listed = stubs.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert list(listed.entries) == []


# -- DeleteSnapshot -------------------------------------------------------------------------


@pytest.mark.parametrize("snapshot_id", [UNKNOWN_ID, "nope/" + "2" * 32, "garbage", "../x"])
def test_delete_unknown_snapshot_is_ok(stubs: Stubs, snapshot_id: str) -> None:
    stubs.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))


def test_delete_snapshot_twice_is_ok_and_it_is_gone(stubs: Stubs) -> None:
    source = make_volume(stubs, "data")
    made = take_snapshot(stubs, "snap-1", source.volume_id)
    request = csi_pb2.DeleteSnapshotRequest(snapshot_id=made.snapshot_id)
    stubs.controller.DeleteSnapshot(request)
    stubs.controller.DeleteSnapshot(request)
    get = csi_pb2.GetSnapshotRequest(snapshot_id=made.snapshot_id)
    assert code_of(lambda: stubs.controller.GetSnapshot(get)) == C.NOT_FOUND


def test_delete_snapshot_without_id_is_invalid_argument(stubs: Stubs) -> None:
    request = csi_pb2.DeleteSnapshotRequest()
    assert code_of(lambda: stubs.controller.DeleteSnapshot(request)) == C.INVALID_ARGUMENT


@pytest.mark.parametrize("pool", ["fast", "xfs", "slow"])
def test_snapshots_outlive_their_source_volume(served: tuple[CsiServer, Stubs], pool: str) -> None:
    server, stubs = served
    source = make_volume(stubs, "data", pool)
    (volume_path(stubs, "data") / "file").write_text("kept\n")
    made = ready_snapshot(server, stubs, "snap-1", source.volume_id)

    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=source.volume_id))

    got = stubs.controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=made.snapshot_id))
    assert got.snapshot.ready_to_use
    create_when_copied(server, stubs, restore_request("restored", snapshot_id=made.snapshot_id))
    assert (volume_path(stubs, "restored") / "file").read_text() == "kept\n"


# -- ListSnapshots and GetSnapshot ----------------------------------------------------------


def test_list_snapshots_pages_through_every_snapshot_once(stubs: Stubs) -> None:
    one, two = make_volume(stubs, "one"), make_volume(stubs, "two")
    made = {take_snapshot(stubs, f"s{i}", (one, two)[i % 2].volume_id).snapshot_id
            for i in range(5)}  # fmt: skip
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = stubs.controller.ListSnapshots(
            csi_pb2.ListSnapshotsRequest(max_entries=2, starting_token=token)
        )
        assert len(page.entries) <= 2
        seen.extend(e.snapshot.snapshot_id for e in page.entries)
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(made)
    assert all(e.snapshot.ready_to_use for e in stubs.controller.ListSnapshots(
        csi_pb2.ListSnapshotsRequest()).entries)  # fmt: skip


@pytest.mark.parametrize("token", ["garbage", "1", "fast/zz", "x" * 200])
def test_list_snapshots_with_an_invalid_token_is_aborted(stubs: Stubs, token: str) -> None:
    request = csi_pb2.ListSnapshotsRequest(starting_token=token)
    assert code_of(lambda: stubs.controller.ListSnapshots(request)) == C.ABORTED


def test_list_snapshots_filters_by_snapshot_and_by_source(stubs: Stubs) -> None:
    one, two = make_volume(stubs, "one"), make_volume(stubs, "two")
    a = take_snapshot(stubs, "a", one.volume_id)
    b = take_snapshot(stubs, "b", one.volume_id)
    c = take_snapshot(stubs, "c", two.volume_id)

    def listed(snapshot_id: str = "", source_volume_id: str = "") -> list[str]:
        answer = stubs.controller.ListSnapshots(
            csi_pb2.ListSnapshotsRequest(snapshot_id=snapshot_id, source_volume_id=source_volume_id)
        )
        return sorted(e.snapshot.snapshot_id for e in answer.entries)

    assert listed(snapshot_id=b.snapshot_id) == [b.snapshot_id]
    assert listed(source_volume_id=one.volume_id) == sorted([a.snapshot_id, b.snapshot_id])
    assert listed(source_volume_id=two.volume_id) == [c.snapshot_id]
    assert listed(snapshot_id=UNKNOWN_ID) == []
    assert listed(snapshot_id="not-an-id") == []
    assert listed(source_volume_id=UNKNOWN_ID) == []


def test_get_snapshot_answers_the_snapshot_or_not_found(stubs: Stubs) -> None:
    source = make_volume(stubs, "data")
    made = take_snapshot(stubs, "snap-1", source.volume_id)
    got = stubs.controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=made.snapshot_id))
    assert got.snapshot == made
    for unknown in (UNKNOWN_ID, "garbage", source.volume_id):
        request = csi_pb2.GetSnapshotRequest(snapshot_id=unknown)
        assert code_of(lambda r=request: stubs.controller.GetSnapshot(r)) == C.NOT_FOUND


# -- CreateVolume with a content source ------------------------------------------------------


@pytest.mark.parametrize("pool", ["fast", "xfs"])
def test_restore_has_the_snapshot_data_and_names_its_source(stubs: Stubs, pool: str) -> None:
    source = make_volume(stubs, "data", pool)
    (volume_path(stubs, "data") / "table").write_text("row-1\n")
    made = take_snapshot(stubs, "snap-1", source.volume_id)
    (volume_path(stubs, "data") / "table").write_text("row-1\nrow-2\n")

    restored = stubs.controller.CreateVolume(
        restore_request("restored", snapshot_id=made.snapshot_id)
    ).volume

    assert restored.capacity_bytes == source.capacity_bytes
    assert restored.content_source.snapshot.snapshot_id == made.snapshot_id
    assert restored.volume_id.startswith(f"{pool}/")
    assert (volume_path(stubs, "restored") / "table").read_text() == "row-1\n"


@pytest.mark.parametrize("pool", ["fast", "xfs"])
def test_clone_is_an_independent_copy_of_its_volume(stubs: Stubs, pool: str) -> None:
    source = make_volume(stubs, "data", pool)
    (volume_path(stubs, "data") / "file").write_text("original\n")

    clone = stubs.controller.CreateVolume(
        restore_request("clone", volume_id=source.volume_id)
    ).volume
    (volume_path(stubs, "clone") / "file").write_text("changed in the clone\n")

    assert clone.content_source.volume.volume_id == source.volume_id
    assert (volume_path(stubs, "data") / "file").read_text() == "original\n"
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=source.volume_id))
    assert (volume_path(stubs, "clone") / "file").read_text() == "changed in the clone\n"


def test_restore_larger_than_its_source_gets_the_larger_limit(stubs: Stubs) -> None:
    source = make_volume(stubs, "data", size=32 * MiB)
    made = take_snapshot(stubs, "snap-1", source.volume_id)

    restored = stubs.controller.CreateVolume(
        restore_request("restored", snapshot_id=made.snapshot_id, size=80 * MiB)
    ).volume

    assert restored.capacity_bytes == 80 * MiB
    path = volume_path(stubs, "restored")
    group = btrfs.qgroup(path.parent.parent, btrfs.subvolume_id(path))
    assert group is not None and group.max_referenced == 80 * MiB


def test_restore_without_a_size_gets_the_source_size(stubs: Stubs) -> None:
    source = make_volume(stubs, "data", size=48 * MiB)
    made = take_snapshot(stubs, "snap-1", source.volume_id)
    restored = stubs.controller.CreateVolume(
        restore_request("restored", snapshot_id=made.snapshot_id)
    ).volume
    assert restored.capacity_bytes == 48 * MiB


@pytest.mark.parametrize(("size", "limit"), [(32 * MiB, 0), (0, 32 * MiB), (16 * MiB, 40 * MiB)])
def test_restore_smaller_than_its_source_is_out_of_range(
    stubs: Stubs, size: int, limit: int
) -> None:
    source = make_volume(stubs, "data", size=64 * MiB)
    made = take_snapshot(stubs, "snap-1", source.volume_id)
    for request in (
        restore_request("r", snapshot_id=made.snapshot_id, size=size, limit=limit),
        restore_request("c", volume_id=source.volume_id, size=size, limit=limit),
    ):
        assert code_of(lambda r=request: stubs.controller.CreateVolume(r)) == C.OUT_OF_RANGE


@pytest.mark.parametrize("kind", ["snapshot_id", "volume_id"])
@pytest.mark.parametrize("source", [UNKNOWN_ID, "nope/" + "3" * 32, "../../etc"])
def test_restore_from_an_unknown_source_is_not_found(stubs: Stubs, kind: str, source: str) -> None:
    request = restore_request("restored", **{kind: source})  # type: ignore[arg-type]
    assert code_of(lambda: stubs.controller.CreateVolume(request)) == C.NOT_FOUND


def test_restore_with_an_empty_content_source_is_invalid_argument(stubs: Stubs) -> None:
    request = restore_request("restored")
    request.volume_content_source.SetInParent()
    assert code_of(lambda: stubs.controller.CreateVolume(request)) == C.INVALID_ARGUMENT


def test_restore_is_idempotent_and_another_source_is_already_exists(stubs: Stubs) -> None:
    source = make_volume(stubs, "data")
    one = take_snapshot(stubs, "one", source.volume_id)
    two = take_snapshot(stubs, "two", source.volume_id)
    first = stubs.controller.CreateVolume(restore_request("r", snapshot_id=one.snapshot_id))
    again = stubs.controller.CreateVolume(restore_request("r", snapshot_id=one.snapshot_id))
    assert first.volume == again.volume

    for other in (
        restore_request("r", snapshot_id=two.snapshot_id),
        restore_request("r", volume_id=source.volume_id),
    ):
        assert code_of(lambda o=other: stubs.controller.CreateVolume(o)) == C.ALREADY_EXISTS
    plain = restore_request("data", snapshot_id=one.snapshot_id)  # "data" exists, no source
    assert code_of(lambda: stubs.controller.CreateVolume(plain)) == C.ALREADY_EXISTS


def test_restore_into_another_pool_is_invalid_argument(stubs: Stubs) -> None:
    source = make_volume(stubs, "data", "fast")
    made = take_snapshot(stubs, "snap-1", source.volume_id)
    request = restore_request("r", snapshot_id=made.snapshot_id, parameters={"pool": "xfs"})
    assert code_of(lambda: stubs.controller.CreateVolume(request)) == C.INVALID_ARGUMENT


def test_restore_keeps_the_requested_capabilities(stubs: Stubs) -> None:
    source = make_volume(stubs, "data")
    made = take_snapshot(stubs, "snap-1", source.volume_id)
    request = restore_request("r", snapshot_id=made.snapshot_id)
    del request.volume_capabilities[:]
    request.volume_capabilities.append(
        csi_pb2.VolumeCapability(
            access_mode=csi_pb2.VolumeCapability.AccessMode(mode=RWO),
            mount=csi_pb2.VolumeCapability.MountVolume(),
        )
    )
    volume = stubs.controller.CreateVolume(request).volume
    validate = csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=volume.volume_id, volume_capabilities=list(request.volume_capabilities)
    )
    assert stubs.controller.ValidateVolumeCapabilities(validate).HasField("confirmed")
