"""Snapshots and clones on a filesystem without reflink (ext4): real copies in the background,
`ready_to_use=false` then true, ABORTED while a restore copies, FAILED_PRECONDITION for deleting
what a copy reads, and copies that restart after a server restart. The server's copy gate holds
copies "in progress" so that no test races a fast copy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.csi.server import CsiServer
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.service.copy_jobs import CopyJobs
from tests.support import trees
from tests.support.csi import MiB, Stubs, code_of, running_server
from tests.support.snapshots import (
    COPY_TIMEOUT,
    create_when_copied,
    make_volume,
    ready_snapshot,
    restore_request,
    snapshot_request,
    take_snapshot,
    volume_path,
)

pytestmark = pytest.mark.root("mkfs.ext4")

C = grpc.StatusCode


@pytest.fixture
def config(ext4_fs: Path) -> ServerConfig:
    return ServerConfig(pools=(PoolConfig(name="slow", path=ext4_fs, kind="plain"),))


@pytest.fixture
def served(config: ServerConfig, tmp_path: Path) -> Iterator[tuple[CsiServer, Stubs]]:
    with running_server(config, tmp_path / "state") as both:
        yield both


def filled_volume(stubs: Stubs, name: str = "data") -> csi_pb2.Volume:
    volume = make_volume(stubs, name, "slow", 128 * MiB)
    trees.build_tree(volume_path(stubs, name))
    (volume_path(stubs, name) / "bulk").write_bytes(b"\x42" * (8 * MiB))
    return volume


def jobs_of(server: CsiServer) -> CopyJobs:
    assert server.copy_jobs is not None
    return server.copy_jobs


def test_snapshot_is_not_ready_first_then_ready(served: tuple[CsiServer, Stubs]) -> None:
    server, stubs = served
    source = filled_volume(stubs)
    content = trees.contents(volume_path(stubs, "data"))

    first = take_snapshot(stubs, "snap-1", source.volume_id)
    assert not first.ready_to_use
    assert first.size_bytes == 128 * MiB
    assert jobs_of(server).wait_all(COPY_TIMEOUT)

    again = take_snapshot(stubs, "snap-1", source.volume_id)
    assert again.ready_to_use
    assert again.snapshot_id == first.snapshot_id
    got = stubs.controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=first.snapshot_id))
    assert got.snapshot.ready_to_use
    info = stubs.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(name="snap-1")).snapshot
    assert (info.method, info.state, info.ready_to_use) == ("copy", "ready", True)
    assert trees.contents(Path(info.path)) == content


def test_pending_snapshot_is_listed_not_ready_and_cannot_be_restored_yet(
    served: tuple[CsiServer, Stubs],
) -> None:
    server, stubs = served
    source = filled_volume(stubs)
    with jobs_of(server).paused():
        made = take_snapshot(stubs, "snap-1", source.volume_id)
        listed = stubs.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
        assert [e.snapshot.ready_to_use for e in listed.entries] == [False]
        request = restore_request("restored", snapshot_id=made.snapshot_id)
        assert code_of(lambda: stubs.controller.CreateVolume(request)) == C.ABORTED
        info = stubs.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(name="snap-1")).snapshot
        assert (info.state, info.ready_to_use) == ("copying", False)
    create_when_copied(server, stubs, restore_request("restored", snapshot_id=made.snapshot_id))


def test_restore_answers_aborted_while_it_copies_and_the_volume_when_done(
    served: tuple[CsiServer, Stubs],
) -> None:
    server, stubs = served
    source = filled_volume(stubs)
    made = ready_snapshot(server, stubs, "snap-1", source.volume_id)
    request = restore_request("restored", snapshot_id=made.snapshot_id, size=256 * MiB)

    with jobs_of(server).paused():
        assert code_of(lambda: stubs.controller.CreateVolume(request)) == C.ABORTED
        assert code_of(lambda: stubs.controller.CreateVolume(request)) == C.ABORTED
        info = stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(name="restored")).volume
        assert info.state == "creating" and info.content_source_id == made.snapshot_id
        delete = csi_pb2.DeleteSnapshotRequest(snapshot_id=made.snapshot_id)
        assert code_of(lambda: stubs.controller.DeleteSnapshot(delete)) == C.FAILED_PRECONDITION

    restored = create_when_copied(server, stubs, request)
    assert restored.capacity_bytes == 256 * MiB
    assert restored.content_source.snapshot.snapshot_id == made.snapshot_id
    snapshot_path = Path(
        stubs.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(name="snap-1")).snapshot.path
    )
    assert trees.contents(volume_path(stubs, "restored")) == trees.contents(snapshot_path)
    stubs.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=made.snapshot_id))


def test_a_volume_being_copied_cannot_be_deleted(served: tuple[CsiServer, Stubs]) -> None:
    server, stubs = served
    source = filled_volume(stubs)
    delete = csi_pb2.DeleteVolumeRequest(volume_id=source.volume_id)
    with jobs_of(server).paused():
        assert not take_snapshot(stubs, "snap-1", source.volume_id).ready_to_use
        assert code_of(lambda: stubs.controller.DeleteVolume(delete)) == C.FAILED_PRECONDITION
        clone = restore_request("clone", volume_id=source.volume_id)
        assert code_of(lambda: stubs.controller.CreateVolume(clone)) == C.ABORTED
        assert code_of(lambda: stubs.controller.DeleteVolume(delete)) == C.FAILED_PRECONDITION

    assert jobs_of(server).wait_all(COPY_TIMEOUT)
    assert take_snapshot(stubs, "snap-1", source.volume_id).ready_to_use
    create_when_copied(server, stubs, restore_request("clone", volume_id=source.volume_id))
    stubs.controller.DeleteVolume(delete)


def test_deleting_a_snapshot_while_it_is_copied_cancels_the_copy(
    served: tuple[CsiServer, Stubs],
) -> None:
    server, stubs = served
    source = filled_volume(stubs)
    with jobs_of(server).paused():
        made = take_snapshot(stubs, "snap-1", source.volume_id)
        stubs.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=made.snapshot_id))

    assert list(stubs.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries) == []
    pool_root = volume_path(stubs, "data").parent.parent
    assert list((pool_root / "snapshots").iterdir()) == []
    again = take_snapshot(stubs, "snap-1", source.volume_id)
    assert again.snapshot_id != made.snapshot_id  # a new snapshot, cut anew


def test_an_interrupted_copy_starts_again_after_a_restart(
    config: ServerConfig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with running_server(config, state) as (server, stubs):
        source = filled_volume(stubs)
        content = trees.contents(volume_path(stubs, "data"))
        made = ready_snapshot(server, stubs, "snap-0", source.volume_id)
        restore = restore_request("restored", snapshot_id=made.snapshot_id)
        jobs_of(server).gate.close()  # both copies stay in progress until the server stops
        assert not take_snapshot(stubs, "snap-1", source.volume_id).ready_to_use
        assert code_of(lambda: stubs.controller.CreateVolume(restore)) == C.ABORTED

    with running_server(config, state) as (server, stubs):
        assert jobs_of(server).wait_all(COPY_TIMEOUT)  # resumed from the records at start
        snapshot = take_snapshot(stubs, "snap-1", source.volume_id)
        assert snapshot.ready_to_use
        create_when_copied(server, stubs, restore)
        assert trees.contents(volume_path(stubs, "restored")) == content
        info = stubs.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(name="snap-1")).snapshot
        assert trees.contents(Path(info.path)) == content


def test_copies_of_two_volumes_run_side_by_side(
    served: tuple[CsiServer, Stubs],
) -> None:
    server, stubs = served
    source = filled_volume(stubs)
    with jobs_of(server).paused():
        take_snapshot(stubs, "snap-1", source.volume_id)
        other = make_volume(stubs, "other", "slow")
        assert other.volume_id
        request = snapshot_request("snap-2", other.volume_id)
        assert not stubs.controller.CreateSnapshot(request).snapshot.ready_to_use
    assert jobs_of(server).wait_all(COPY_TIMEOUT)
