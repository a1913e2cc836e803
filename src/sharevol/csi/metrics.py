"""Prometheus metrics of the gRPC server: RPCs by method and code, lock contention, and the HTTP
endpoint that serves them with whatever collectors the composition root registers.

Each server has its own registry (not prometheus_client's global one), so several servers in
one process (tests) never share series. The RPC series come from the interceptor's observer
hook, so no servicer knows about metrics.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sharevol.csi.interceptor import Observer
from sharevol.csi.locking import KeyLocks
from sharevol.errors import InvalidArgument
from sharevol.service.clones import CloneService
from sharevol.service.pool_metrics import PoolCollector, copy_progress_of
from sharevol.service.provisioning import Provisioner
from sharevol.service.snapshots import SnapshotService

log = logging.getLogger(__name__)

NAMESPACE = "sharevol"
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""From a cached Probe (~1 ms) to a long first mount or a copy-backed create (minutes)."""


def split_method(full_method: str) -> tuple[str, str]:
    """`/csi.v1.Controller/CreateVolume` -> ("csi.v1.Controller", "CreateVolume")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class RpcMetrics:
    """RPC count and latency by service, method and gRPC code; an interceptor Observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("service", "method", "code")
        self.requests = Counter(
            "rpc_requests",
            "gRPC calls answered, by method and status code.",
            labels,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.latency = Histogram(
            "rpc_duration_seconds",
            "Time to answer a gRPC call, by method and status code.",
            labels,
            namespace=NAMESPACE,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    def observe(self, full_method: str, code: grpc.StatusCode, seconds: float) -> None:
        service, method = split_method(full_method)
        self.requests.labels(service, method, code.name).inc()
        self.latency.labels(service, method, code.name).observe(seconds)


class LockCollector(Collector):
    """ABORTED answers caused by a busy per-volume key (sharevol.csi.locking), read at scrape
    time from the KeyLocks counter."""

    def __init__(self, locks: KeyLocks) -> None:
        self._locks = locks

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            f"{NAMESPACE}_lock_aborted",
            "Calls answered ABORTED because another operation held the same volume, snapshot "
            "or name (the caller retries with backoff).",
        )
        family.add_metric([], self._locks.aborted_total)
        yield family


def new_registry(locks: KeyLocks) -> tuple[CollectorRegistry, RpcMetrics]:
    """A registry with the process, platform, RPC and lock metrics of one server."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    rpc = RpcMetrics(registry)
    registry.register(LockCollector(locks))
    return registry, rpc


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all addresses) -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidArgument(
            f"metrics address {address!r} must be HOST:PORT, [IPv6]:PORT or :PORT"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "0.0.0.0"  # noqa: S104 - ":PORT" asks for every address on purpose
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise InvalidArgument(
                f"metrics address {address!r}: {host!r} is not an IP address"
            ) from None
    return host, int(port_text)


@dataclass
class MetricsEndpoint:
    """The HTTP server answering Prometheus scrapes at /metrics (any path, in fact)."""

    address: str
    registry: CollectorRegistry
    _server: WSGIServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        host, port = parse_address(self.address)
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise InvalidArgument(
                f"cannot serve metrics on {self.address}: {exc.strerror or exc}"
            ) from exc
        log.info("serving Prometheus metrics on http://%s/metrics", self.url_host)

    @property
    def port(self) -> int:
        """The bound port (the one asked, or the one the kernel chose for port 0)."""
        if self._server is None:
            raise RuntimeError("the metrics endpoint is not started")
        return int(self._server.server_port)

    @property
    def url_host(self) -> str:
        host, _ = parse_address(self.address)
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None


def metrics_endpoint(
    address: str,
    locks: KeyLocks,
    provisioner: Provisioner | None,
    snapshots: SnapshotService | None = None,
    clones: CloneService | None = None,
) -> tuple[MetricsEndpoint, Observer]:
    """The endpoint of one server and the interceptor observer that feeds it; pool, volume
    and copy gauges only where this server runs the controller."""
    parse_address(address)  # a bad address fails at start-up, before anything is served
    registry, rpc = new_registry(locks)
    if provisioner is not None:
        progress = copy_progress_of(provisioner, snapshots, clones)
        registry.register(PoolCollector(provisioner, copy_progress=progress))
    return MetricsEndpoint(address, registry), rpc.observe
