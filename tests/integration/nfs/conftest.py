"""Fixtures of the NFS tests: a sharevol server with the managed NFS server (NFS-Ganesha) on
loopback, over a real btrfs pool and a plain pool; everything is undone even when a test fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.csi.server import CsiServer
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.support.csi import RWX, MiB, Stubs, mount_cap, running_server
from tests.support.nfs import free_port

NFS_TOOLS = ("ganesha.nfsd", "dbus-daemon", "gcc")
"""Besides root: Ganesha and its bus, and gcc for the source-address shim (tests.support.nfs)."""
CONTROLLER_ID = "controller@127.0.0.1"


@dataclass
class NfsServed:
    """A running server, its stubs, and where its NFS server listens."""

    server: CsiServer
    stubs: Stubs
    port: int
    config: ServerConfig
    state_dir: Path

    def create(
        self,
        name: str,
        size: int = 64 * MiB,
        *,
        access: int = RWX,
        **params: str,
    ) -> csi_pb2.Volume:
        """CreateVolume with StorageClass parameters as keywords (`mode="0777"`, ...)."""
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[mount_cap(access)],
            parameters=params,
        )
        return self.stubs.controller.CreateVolume(request).volume


def nfs_server_config(
    btrfs_fs: Path, plain: Path, port: int, clients: tuple[str, ...] = ("127.0.0.1",)
) -> ServerConfig:
    """Pool "fast" (btrfs) is exported, pool "plain" is not."""
    return ServerConfig(
        pools=(
            PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),
            PoolConfig(name="plain", path=plain, kind="plain"),
        ),
        default_pool="fast",
        nfs=NfsConfig(bind="127.0.0.1", port=port, pools=("fast",), clients=clients),
    )


def serve_nfs(config: ServerConfig, state_dir: Path) -> Iterator[NfsServed]:
    """Run the server; afterwards check (and force) that no export mount is left behind."""
    assert config.nfs is not None
    try:
        with running_server(config, state_dir, node_id=CONTROLLER_ID) as (server, stubs):
            yield NfsServed(server, stubs, config.nfs.port, config, state_dir)
    finally:
        left = mounts_under(state_dir / "nfs" / "mnt")
        for target in sorted(left, key=len, reverse=True):
            SubprocessRunner().run(["umount", "--lazy", target], timeout=30, check=False)
        assert not left, f"export bind mounts left behind: {left}"


nfs_served = contextlib.contextmanager(serve_nfs)
"""`with nfs_served(config, state_dir) as nfs:` for tests that stop and start servers."""


@pytest.fixture
def plain_path(tmp_path: Path) -> Path:
    path = tmp_path / "plain"
    path.mkdir()
    return path


@pytest.fixture
def nfs(btrfs_fs: Path, plain_path: Path, tmp_path: Path) -> Iterator[NfsServed]:
    """Exports of pool "fast" open to 127.0.0.1 (static clients) on a free port."""
    config = nfs_server_config(btrfs_fs, plain_path, free_port())
    yield from serve_nfs(config, tmp_path / "state")


@pytest.fixture
def nfs_published_only(btrfs_fs: Path, plain_path: Path, tmp_path: Path) -> Iterator[NfsServed]:
    """Exports open to nobody but the nodes each volume is ControllerPublished to."""
    config = nfs_server_config(btrfs_fs, plain_path, free_port(), clients=())
    yield from serve_nfs(config, tmp_path / "state")
