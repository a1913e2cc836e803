"""A restore or clone is the same kind of volume as its source: a raw block volume's bytes are
never mounted as a filesystem on a node by restoring them as an image volume (or the reverse)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import RWO, MiB, Stubs, block_cap, code_of, mount_cap, running_server

pytestmark = pytest.mark.root("mkfs.ext4")

C = grpc.StatusCode


@pytest.fixture
def stubs(btrfs_fs: Path, tmp_path: Path) -> Iterator[Stubs]:
    config = ServerConfig(pools=(PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),))
    with running_server(config, tmp_path / "state") as (_server, stubs):
        yield stubs


def _create(
    stubs: Stubs,
    name: str,
    cap: csi_pb2.VolumeCapability,
    params: dict[str, str] | None = None,
    source: csi_pb2.VolumeContentSource | None = None,
) -> csi_pb2.CreateVolumeRequest:
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MiB),
        volume_capabilities=[cap],
        parameters=params or {},
    )
    if source is not None:
        request.volume_content_source.CopyFrom(source)
    return request


def _from_snapshot(snapshot_id: str) -> csi_pb2.VolumeContentSource:
    return csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snapshot_id)
    )


def _from_volume(volume_id: str) -> csi_pb2.VolumeContentSource:
    return csi_pb2.VolumeContentSource(
        volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=volume_id)
    )


def test_block_snapshot_restores_only_as_block(stubs: Stubs) -> None:
    block = stubs.controller.CreateVolume(_create(stubs, "raw", block_cap(RWO))).volume
    snapshot = stubs.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(name="raw-snap", source_volume_id=block.volume_id)
    ).snapshot
    as_image = _create(
        stubs, "as-image", mount_cap(RWO), {"type": "image"}, _from_snapshot(snapshot.snapshot_id)
    )
    assert code_of(lambda: stubs.controller.CreateVolume(as_image)) == C.INVALID_ARGUMENT
    as_directory = _create(
        stubs, "as-dir", mount_cap(RWO), None, _from_snapshot(snapshot.snapshot_id)
    )
    assert code_of(lambda: stubs.controller.CreateVolume(as_directory)) == C.INVALID_ARGUMENT
    as_block = _create(
        stubs, "as-block", block_cap(RWO), None, _from_snapshot(snapshot.snapshot_id)
    )
    assert code_of(lambda: stubs.controller.CreateVolume(as_block)) == C.OK


def test_directory_volume_clones_only_as_directory(stubs: Stubs) -> None:
    source = stubs.controller.CreateVolume(_create(stubs, "files", mount_cap(RWO))).volume
    as_block = _create(stubs, "clone-block", block_cap(RWO), None, _from_volume(source.volume_id))
    assert code_of(lambda: stubs.controller.CreateVolume(as_block)) == C.INVALID_ARGUMENT
    same = _create(stubs, "clone-dir", mount_cap(RWO), None, _from_volume(source.volume_id))
    assert code_of(lambda: stubs.controller.CreateVolume(same)) == C.OK
