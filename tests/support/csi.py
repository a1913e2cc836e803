"""A real sharevol server on a unix socket in a tmp dir, and typed stubs to talk to it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from sharevol.csi._proto import admin_pb2_grpc, csi_pb2, csi_pb2_grpc
from sharevol.csi.server import CsiServer, build_server
from sharevol.pools.config import ServerConfig

Mode = csi_pb2.VolumeCapability.AccessMode
RWX = Mode.MULTI_NODE_MULTI_WRITER
RWO = Mode.SINGLE_NODE_MULTI_WRITER
RWOP = Mode.SINGLE_NODE_SINGLE_WRITER
ROX = Mode.MULTI_NODE_READER_ONLY
MiB = 1024 * 1024
GiB = 1024 * MiB


def mount_cap(mode: int = RWX, fs_type: str = "") -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type),
    )


def block_cap(mode: int = RWO) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
        block=csi_pb2.VolumeCapability.BlockVolume(),
    )


@dataclass
class Stubs:
    identity: csi_pb2_grpc.IdentityStub
    controller: csi_pb2_grpc.ControllerStub
    node: csi_pb2_grpc.NodeStub
    admin: admin_pb2_grpc.AdminStub
    channel: grpc.Channel


@contextlib.contextmanager
def stubs_for(socket: Path) -> Iterator[Stubs]:
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield Stubs(
            csi_pb2_grpc.IdentityStub(channel),
            csi_pb2_grpc.ControllerStub(channel),
            csi_pb2_grpc.NodeStub(channel),
            admin_pb2_grpc.AdminStub(channel),
            channel,
        )
    finally:
        channel.close()


@contextlib.contextmanager
def running_server(
    config: ServerConfig, state_dir: Path, *, node_id: str = "node-1", mode: str = "all"
) -> Iterator[tuple[CsiServer, Stubs]]:
    """Start a server, yield it with stubs, stop it (even when the test fails)."""
    socket = state_dir / "csi.sock"
    server = build_server(
        config, endpoint=f"unix://{socket}", node_id=node_id, mode=mode, state_dir=state_dir
    )
    server.start()
    try:
        with stubs_for(socket) as stubs:
            yield server, stubs
    finally:
        server.stop(grace=1.0)


def code_of(call: object) -> grpc.StatusCode:
    """Run a zero-argument callable that makes one RPC and return the status code it got."""
    assert callable(call)
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
