"""Composition root: start the pools, build the services for the chosen mode, serve gRPC on a
unix socket. The only module that knows every layer."""

from __future__ import annotations

import logging
import os
import socket
import stat
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc

from sharevol.catalog.store import Catalog
from sharevol.csi._proto import admin_pb2_grpc, csi_pb2_grpc
from sharevol.csi.admin import AdminServicer
from sharevol.csi.controller import ControllerServicer
from sharevol.csi.identity import IdentityServicer
from sharevol.csi.interceptor import ErrorMappingInterceptor, Observer
from sharevol.csi.locking import KeyLocks
from sharevol.csi.node import NodeServicer
from sharevol.errors import FailedPrecondition, InvalidArgument
from sharevol.pools.config import ServerConfig
from sharevol.pools.factory import make_pool
from sharevol.service.inuse import mount_points_of
from sharevol.service.locate import PoolHandle, VolumeLocator
from sharevol.service.provisioning import Provisioner
from sharevol.service.publishing import NodePublisher
from sharevol.sys.mounts import SystemMounter
from sharevol.sys.runner import SubprocessRunner

log = logging.getLogger(__name__)

Mode = Literal["all", "controller", "node"]
MODES: tuple[Mode, ...] = ("all", "controller", "node")
WORKERS = 64
"""Above the external-provisioner's default of 100 workers split between creates and deletes
would be ideal; 64 threads keep Probe answering while slow calls run (prior-art notes)."""


def socket_path(endpoint: str) -> Path:
    """The filesystem path of a `unix://` CSI endpoint (`unix:///abs` or `unix://relative`)."""
    if not endpoint.startswith("unix://"):
        raise InvalidArgument(f"endpoint {endpoint!r} must be unix:///path/to/csi.sock")
    path = endpoint[len("unix://") :]
    if not path:
        raise InvalidArgument(f"endpoint {endpoint!r} has no path")
    return Path(path).absolute()


def start_pools(config: ServerConfig) -> dict[str, PoolHandle]:
    """Start every configured pool (checks, folders) and open its catalog."""
    handles: dict[str, PoolHandle] = {}
    for pool_config in config.pools:
        pool = make_pool(pool_config)
        pool.start()
        catalog = Catalog(pool.root)
        catalog.ensure()
        handles[pool.name] = PoolHandle(pool, catalog, pool_config.overcommit)
        log.info(
            "pool %s: %s at %s, %s",
            pool.name,
            pool.kind,
            pool.root,
            "quota enforced" if pool.capabilities.enforces_quota else "size NOT enforced",
        )
    return handles


@dataclass
class CsiServer:
    """A running (or ready to run) sharevol gRPC server."""

    grpc_server: grpc.Server
    socket: Path
    provisioner: Provisioner | None
    publisher: NodePublisher | None
    locks: KeyLocks

    def start(self) -> None:
        self.grpc_server.start()
        os.chmod(self.socket, 0o660)
        log.info("serving CSI on unix://%s", self.socket)

    def stop(self, grace: float = 5.0) -> None:
        self.grpc_server.stop(grace).wait()
        if self.socket.is_socket():
            self.socket.unlink()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def build_server(
    config: ServerConfig,
    *,
    endpoint: str,
    node_id: str,
    mode: str,
    state_dir: Path,
    observers: list[Observer] | None = None,
) -> CsiServer:
    """Everything wired, the socket bound, not yet started."""
    if mode not in MODES:
        raise InvalidArgument(f"mode {mode!r} must be one of {', '.join(MODES)}")
    if not node_id or len(node_id.encode()) > 128:
        raise InvalidArgument("node id must be 1 to 128 bytes")
    path = socket_path(endpoint)
    handles = start_pools(config)
    node_local = any(h.pool.capabilities.node_local for h in handles.values())
    mounter = SystemMounter(SubprocessRunner())

    provisioner: Provisioner | None = None
    publisher: NodePublisher | None = None
    if mode in ("all", "controller"):
        provisioner = Provisioner(
            handles,
            config.default,
            node_id,
            mounts_of=lambda record: mount_points_of(
                mounter, handles[record.pool].pool.volume_path(record.directory)
            ),
        )
        provisioner.reapply_limits()
    if mode in ("all", "node"):
        node_state = state_dir / "node"
        node_state.mkdir(parents=True, exist_ok=True, mode=0o700)
        publisher = NodePublisher(VolumeLocator(handles), mounter, node_state, node_id)

    locks = KeyLocks()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="csi"),
        interceptors=[ErrorMappingInterceptor(locks, observers)],
    )
    csi_pb2_grpc.add_IdentityServicer_to_server(
        IdentityServicer(controller=provisioner is not None, node_local_pools=node_local), server
    )
    if provisioner is not None:
        csi_pb2_grpc.add_ControllerServicer_to_server(ControllerServicer(provisioner), server)
    if publisher is not None:
        csi_pb2_grpc.add_NodeServicer_to_server(
            NodeServicer(publisher, node_id, node_local), server
        )
    admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(provisioner, publisher), server)
    _claim_socket(path)
    server.add_insecure_port(f"unix:{path}")
    return CsiServer(server, path, provisioner, publisher, locks)


def _claim_socket(path: Path) -> None:
    """Remove a stale socket left by a crash; refuse when a live server still answers on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; remove it or pick another")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"another server is listening on {path}")
