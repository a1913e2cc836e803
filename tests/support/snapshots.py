"""Helpers for snapshot and clone tests over real gRPC: three pools (btrfs, XFS with reflink,
ext4 without), and calls that create volumes, snapshots and restores the way a CO does."""

from __future__ import annotations

from pathlib import Path

import grpc

from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.csi.server import CsiServer
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import RWX, MiB, Stubs, mount_cap

COPY_TIMEOUT = 120.0


def three_pools(btrfs_fs: Path, xfs_fs: Path, ext4_fs: Path) -> ServerConfig:
    """ "fast": btrfs (subvolume snapshots); "xfs": plain on XFS (reflink); "slow": plain on
    ext4 (real copies in the background)."""
    return ServerConfig(
        pools=(
            PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),
            PoolConfig(name="xfs", path=xfs_fs, kind="plain"),
            PoolConfig(name="slow", path=ext4_fs, kind="plain"),
        ),
        default_pool="fast",
    )


def make_volume(
    stubs: Stubs, name: str, pool: str = "fast", size: int = 64 * MiB
) -> csi_pb2.Volume:
    response = stubs.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[mount_cap(RWX)],
            parameters={"pool": pool},
        )
    )
    return response.volume


def volume_path(stubs: Stubs, name: str) -> Path:
    return Path(stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(name=name)).volume.path)


def snapshot_request(
    name: str, source_volume_id: str, parameters: dict[str, str] | None = None
) -> csi_pb2.CreateSnapshotRequest:
    return csi_pb2.CreateSnapshotRequest(
        name=name, source_volume_id=source_volume_id, parameters=parameters or {}
    )


def take_snapshot(stubs: Stubs, name: str, source_volume_id: str) -> csi_pb2.Snapshot:
    return stubs.controller.CreateSnapshot(snapshot_request(name, source_volume_id)).snapshot


def restore_request(
    name: str,
    *,
    snapshot_id: str = "",
    volume_id: str = "",
    size: int = 0,
    limit: int = 0,
    parameters: dict[str, str] | None = None,
) -> csi_pb2.CreateVolumeRequest:
    """CreateVolume with a snapshot or a volume as its content source."""
    source = csi_pb2.VolumeContentSource()
    if snapshot_id:
        source.snapshot.snapshot_id = snapshot_id
    if volume_id:
        source.volume.volume_id = volume_id
    return csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=size, limit_bytes=limit),
        volume_capabilities=[mount_cap(RWX)],
        parameters=parameters or {},
        volume_content_source=source,
    )


def create_when_copied(
    server: CsiServer, stubs: Stubs, request: csi_pb2.CreateVolumeRequest
) -> csi_pb2.Volume:
    """CreateVolume as the external-provisioner calls it: again after ABORTED, here once the
    server's background copies are done rather than after a backoff."""
    for _ in range(5):
        try:
            return stubs.controller.CreateVolume(request).volume
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED:
                raise
        assert server.copy_jobs is not None
        assert server.copy_jobs.wait_all(COPY_TIMEOUT), "background copies did not finish"
    raise AssertionError(f"CreateVolume {request.name} still ABORTED after its copy finished")


def ready_snapshot(server: CsiServer, stubs: Stubs, name: str, source: str) -> csi_pb2.Snapshot:
    """CreateSnapshot, re-called (as the external-snapshotter does) until ready_to_use."""
    snapshot = take_snapshot(stubs, name, source)
    if not snapshot.ready_to_use:
        assert server.copy_jobs is not None
        assert server.copy_jobs.wait_all(COPY_TIMEOUT), "background copies did not finish"
        snapshot = take_snapshot(stubs, name, source)
    assert snapshot.ready_to_use
    return snapshot
