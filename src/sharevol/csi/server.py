"""Composition root: start the pools, build the services for the chosen mode, serve gRPC on a
unix socket. The only module that knows every layer."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import stat
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc

from sharevol.catalog.records import VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.csi._proto import admin_pb2_grpc, csi_pb2_grpc
from sharevol.csi.admin import AdminServicer
from sharevol.csi.controller import ControllerServicer
from sharevol.csi.identity import IdentityServicer
from sharevol.csi.interceptor import ErrorMappingInterceptor, Observer
from sharevol.csi.locking import KeyLocks
from sharevol.csi.metrics import MetricsEndpoint, metrics_endpoint
from sharevol.csi.node import NodeServicer
from sharevol.errors import FailedPrecondition, InvalidArgument, SharevolError
from sharevol.pools.config import ServerConfig
from sharevol.pools.factory import make_pool
from sharevol.service.clones import CloneService
from sharevol.service.copy_jobs import CopyJobs
from sharevol.service.exports import VolumeExports, volume_exports
from sharevol.service.images import ImageFiles
from sharevol.service.inuse import mount_points_of
from sharevol.service.locate import PoolHandle, VolumeLocator
from sharevol.service.nodes import node_name
from sharevol.service.provisioning import Provisioner
from sharevol.service.publications import ControllerPublisher
from sharevol.service.publishing import NodePublisher
from sharevol.service.snapshots import SnapshotService
from sharevol.sys.mounts import SystemMounter
from sharevol.sys.nfs_mount import MOUNT_TIMEOUT
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


class EndpointLock:
    """An exclusive lock on `<socket>.lock`, held for the life of a server: a second `serve` or
    `up` on the same endpoint stops before it touches a pool (resuming copies, re-applying
    limits, growing images), not after, and two starting at once cannot both win."""

    def __init__(self, socket: Path) -> None:
        socket.parent.mkdir(parents=True, exist_ok=True)
        self.path = socket.with_name(socket.name + ".lock")
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise FailedPrecondition(
                f"another sharevol server runs on {socket} (it holds {self.path})"
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def start_pools(config: ServerConfig, *, skip_unavailable: bool = False) -> dict[str, PoolHandle]:
    """Start every configured pool (checks, folders) and open its catalog. With
    `skip_unavailable` (node mode) a pool that cannot start here is left out, said in the log:
    a node holds only some pools, and NFS volumes are staged from their volume context."""
    handles: dict[str, PoolHandle] = {}
    for pool_config in config.pools:
        pool = make_pool(pool_config)
        try:
            pool.start()
        except (SharevolError, OSError) as exc:
            if not skip_unavailable:
                raise
            log.warning(
                "pool %s is not available on this node, skipped (its NFS volumes are still "
                "mounted from their volume context): %s", pool_config.name, exc,
            )  # fmt: skip
            continue
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
    snapshots: SnapshotService | None = None
    copy_jobs: CopyJobs | None = None
    """Background copies (snapshots and clones on pools without reflink); stopped with the
    server so that none writes into a filesystem being unmounted."""
    nfs: VolumeExports | None = None
    """The managed NFS server (Ganesha and the volumes' exports); stopped with the server."""
    metrics: MetricsEndpoint | None = None
    """The Prometheus endpoint (`--metrics-address`), when asked for."""
    endpoint_lock: EndpointLock | None = None
    """Held until stop: no second server starts on this endpoint meanwhile."""

    def start(self) -> None:
        if self.metrics is not None:
            self.metrics.start()  # first: a port in use fails before CSI is served
        self.grpc_server.start()
        os.chmod(self.socket, 0o660)
        log.info("serving CSI on unix://%s", self.socket)

    def stop(self, grace: float = 5.0) -> None:
        self.grpc_server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()
        if self.copy_jobs is not None:
            self.copy_jobs.shutdown()
        if self.nfs is not None:
            self.nfs.stop()  # exports removed, bind mounts released, Ganesha stopped
        if self.socket.is_socket():
            self.socket.unlink()
        if self.endpoint_lock is not None:
            self.endpoint_lock.release()

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
    metrics_address: str | None = None,
    mount_timeout: float = MOUNT_TIMEOUT,
    endpoint_lock: EndpointLock | None = None,
) -> CsiServer:
    """Everything wired, the socket bound, not yet started. `mount_timeout` bounds each NFS
    mount and unmount of the node service. The endpoint is claimed (lock, then the socket)
    before any pool is touched; `endpoint_lock` is one the caller took earlier (`sharevol up`
    takes it before it attaches its pool)."""
    if mode not in MODES:
        raise InvalidArgument(f"mode {mode!r} must be one of {', '.join(MODES)}")
    if not node_id or len(node_id.encode()) > 128:
        raise InvalidArgument("node id must be 1 to 128 bytes")
    path = socket_path(endpoint)
    lock = endpoint_lock or EndpointLock(path)
    try:
        _claim_socket(path)
        server = _assemble(
            config, path, node_id, mode, state_dir, observers, metrics_address, mount_timeout
        )
    except BaseException:
        lock.release()
        raise
    server.endpoint_lock = lock
    return server


def _assemble(
    config: ServerConfig,
    path: Path,
    node_id: str,
    mode: str,
    state_dir: Path,
    observers: list[Observer] | None,
    metrics_address: str | None,
    mount_timeout: float,
) -> CsiServer:
    """The pools, the services of the mode, the gRPC server bound to `path`."""
    handles = start_pools(config, skip_unavailable=mode == "node")
    node_local = any(h.pool.capabilities.node_local for h in handles.values())
    mounter = SystemMounter(SubprocessRunner())

    controller = (
        _controller_side(config, handles, state_dir, mounter, node_id)
        if mode in ("all", "controller")
        else None
    )
    provisioner = controller.provisioner if controller else None
    snapshots = controller.snapshots if controller else None
    clones = controller.clones if controller else None
    nfs = controller.nfs if controller else None
    publisher: NodePublisher | None = None
    if mode in ("all", "node"):
        node_state = state_dir / "node"
        node_state.mkdir(parents=True, exist_ok=True, mode=0o700)
        publisher = NodePublisher(
            VolumeLocator(handles), mounter, node_state, node_id, mount_timeout=mount_timeout
        )

    locks = KeyLocks()
    metrics: MetricsEndpoint | None = None
    if metrics_address:
        metrics, observe = metrics_endpoint(metrics_address, locks, provisioner, snapshots, clones)
        observers = [*(observers or []), observe]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="csi"),
        interceptors=[ErrorMappingInterceptor(locks, observers)],
    )
    csi_pb2_grpc.add_IdentityServicer_to_server(
        IdentityServicer(
            controller=provisioner is not None, node_local_pools=node_local, expansion=True
        ),
        server,
    )
    if provisioner is not None:
        csi_pb2_grpc.add_ControllerServicer_to_server(
            ControllerServicer(
                provisioner,
                snapshots,
                ControllerPublisher(provisioner, nfs) if nfs is not None else None,
            ),
            server,
        )
    if publisher is not None:
        csi_pb2_grpc.add_NodeServicer_to_server(
            NodeServicer(publisher, node_id, node_local), server
        )
    admin_pb2_grpc.add_AdminServicer_to_server(
        AdminServicer(provisioner, publisher, snapshots, clones), server
    )
    server.add_insecure_port(f"unix:{path}")
    if nfs is not None:
        nfs.start()  # last: a failure above leaves no Ganesha behind
    return CsiServer(
        server,
        path,
        provisioner,
        publisher,
        locks,
        snapshots,
        controller.copy_jobs if controller else None,
        nfs,
        metrics=metrics,
    )


@dataclass(frozen=True)
class _ControllerSide:
    """The controller's services, wired to each other."""

    provisioner: Provisioner
    snapshots: SnapshotService
    clones: CloneService
    copy_jobs: CopyJobs
    nfs: VolumeExports | None


def _controller_side(
    config: ServerConfig,
    handles: dict[str, PoolHandle],
    state_dir: Path,
    mounter: SystemMounter,
    node_id: str,
) -> _ControllerSide:
    """Provisioning with its hooks (NFS exports), snapshots, clones and their copy jobs; limits
    re-applied and interrupted copies resumed from the records."""
    images = ImageFiles(SubprocessRunner())
    nfs = exports = volume_exports(
        config.nfs, config.nfs_pools(), handles, state_dir / "nfs", mounter
    )

    def mounts_of(record: VolumeRecord) -> list[str]:
        path = handles[record.pool].pool.volume_path(record.directory)
        # in_use drops Ganesha's bind mount and adds the nodes the volume is published to
        return exports.in_use(record, [*mount_points_of(mounter, path), *images.users(path)])

    provisioner = Provisioner(
        handles,
        config.default,
        node_name(node_id),  # topology labels take the name part of "name@address"
        mounts_of=mounts_of,
        images=images,
    )
    provisioner.hooks.append(nfs)
    provisioner.reapply_limits()
    copy_jobs = CopyJobs()
    snapshots = SnapshotService(provisioner, copy_jobs)
    clones = CloneService(provisioner, snapshots, copy_jobs)
    provisioner.content = clones
    snapshots.resume()
    clones.resume()
    return _ControllerSide(provisioner, snapshots, clones, copy_jobs, nfs)


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
