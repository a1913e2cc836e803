"""Metrics pieces that need no server: the address syntax, method labels, and the pool
collector's promises (a hung pool cannot hang a scrape; copy progress is exposed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sharevol.catalog.records import (
    AccessMode,
    Capability,
    ContentSource,
    SnapshotRecord,
    VolumeRecord,
)
from sharevol.catalog.store import Catalog
from sharevol.csi.locking import KeyLocks
from sharevol.csi.metrics import new_registry, parse_address, split_method
from sharevol.errors import Aborted, InvalidArgument
from sharevol.pools.base import Pool, PoolCapabilities, PoolSpace, VolumeUsage
from sharevol.service.clones import CloneService
from sharevol.service.locate import PoolHandle
from sharevol.service.pool_metrics import (
    CopyProgress,
    PoolCollector,
    copy_progress_of,
)
from sharevol.service.provisioning import Provisioner
from sharevol.service.snapshots import SnapshotService

DEADLINE = 0.3


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:9808", ("0.0.0.0", 9808)),  # noqa: S104
        (":9808", ("0.0.0.0", 9808)),  # noqa: S104 - every address is what ":PORT" means
        ("[::1]:9808", ("::1", 9808)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_metrics_addresses_are_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9808", "host:port", "0.0.0.0:70000", "example.com:80", ""])
def test_bad_metrics_addresses_are_refused_with_the_syntax(address: str) -> None:
    with pytest.raises(InvalidArgument, match=r"HOST:PORT|not an IP address"):
        parse_address(address)


def test_methods_are_split_into_service_and_method() -> None:
    assert split_method("/csi.v1.Node/NodePublishVolume") == ("csi.v1.Node", "NodePublishVolume")


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_rpc_observer_and_lock_contention_feed_their_series() -> None:
    locks = KeyLocks()
    registry, rpc = new_registry(locks)
    rpc.observe("/csi.v1.Controller/DeleteVolume", grpc.StatusCode.FAILED_PRECONDITION, 0.02)
    with locks.hold(["volume:a"]), pytest.raises(Aborted), locks.hold(["volume:a"]):
        pass

    found = samples(registry)

    labels = {
        "service": "csi.v1.Controller",
        "method": "DeleteVolume",
        "code": "FAILED_PRECONDITION",
    }
    assert found[("sharevol_rpc_requests_total", frozenset(labels.items()))] == 1
    assert found[("sharevol_rpc_duration_seconds_sum", frozenset(labels.items()))] == 0.02
    assert found[("sharevol_lock_aborted_total", frozenset())] == 1


class HungPool:
    """A pool whose statvfs and usage never answer (a dead NFS server) until released."""

    name = "hung"
    kind = "plain"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.capabilities = PoolCapabilities(enforces_quota=True, reports_usage=True)
        self.release = threading.Event()

    def space(self) -> PoolSpace:
        self.release.wait()
        return PoolSpace(total_bytes=100, free_bytes=50)

    def usage(self, directory: str, capacity_bytes: int, backend: Any) -> VolumeUsage:
        self.release.wait()
        return VolumeUsage(capacity_bytes, 1, capacity_bytes - 1, 10, 1, 9)


def ready_record(pool: str) -> VolumeRecord:
    return VolumeRecord(
        volume_id=f"{pool}/{'a' * 32}",
        name="pvc-a",
        pool=pool,
        uuid="a" * 32,
        directory="a" * 32,
        capacity_bytes=4096 * 256,
        capabilities=(Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER),),
        state="ready",
    )


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[tuple[HungPool, Provisioner]]:
    pool = HungPool(tmp_path)
    catalog = Catalog(tmp_path)
    catalog.ensure()
    catalog.put_volume(ready_record("hung"))
    handles = {"hung": PoolHandle(cast(Pool, pool), catalog)}
    try:
        yield pool, Provisioner(handles, "hung", "node-1")
    finally:
        pool.release.set()


def test_a_hung_pool_cannot_hang_the_scrape(hung: tuple[HungPool, Provisioner]) -> None:
    pool, provisioner = hung
    registry = CollectorRegistry()
    registry.register(PoolCollector(provisioner, deadline=DEADLINE))

    started = time.monotonic()
    found = samples(registry)
    elapsed = time.monotonic() - started

    assert elapsed < DEADLINE + 1.0
    assert found[("sharevol_pool_up", frozenset({("pool", "hung"), ("kind", "plain")}))] == 0
    assert ("sharevol_pool_capacity_bytes", frozenset({("pool", "hung")})) not in found
    volume = frozenset({("pool", "hung"), ("volume_id", f"hung/{'a' * 32}"), ("name", "pvc-a")})
    assert found[("sharevol_volume_capacity_bytes", volume)] == 4096 * 256
    assert ("sharevol_volume_used_bytes", volume) not in found  # not read yet: not invented

    pool.release.set()  # the server answers again: the next scrapes see it
    deadline = time.monotonic() + 10
    while ("sharevol_volume_used_bytes", volume) not in found and time.monotonic() < deadline:
        found = samples(registry)
    assert found[("sharevol_volume_used_bytes", volume)] == 1


def test_copy_progress_is_a_gauge_pair_per_copy(hung: tuple[HungPool, Provisioner]) -> None:
    pool, provisioner = hung
    pool.release.set()
    copies = [CopyProgress("snapshot", "hung/" + "b" * 32, "hung", 10, 100)]
    registry = CollectorRegistry()
    registry.register(PoolCollector(provisioner, deadline=DEADLINE, copy_progress=lambda: copies))

    found = samples(registry)

    labels = frozenset({("kind", "snapshot"), ("pool", "hung"), ("target_id", "hung/" + "b" * 32)})
    assert found[("sharevol_copy_done_bytes", labels)] == 10
    assert found[("sharevol_copy_total_bytes", labels)] == 100


def test_copy_progress_is_read_from_snapshots_being_copied_and_clones_being_filled(
    hung: tuple[HungPool, Provisioner],
) -> None:
    _pool, provisioner = hung
    copying = SnapshotRecord(
        snapshot_id="hung/" + "c" * 32,
        name="snap",
        pool="hung",
        uuid="c" * 32,
        directory="c" * 32,
        source_volume_id=f"hung/{'a' * 32}",
        size_bytes=1,
        method="copy",
        state="copying",
    )
    ready = copying.model_copy(update={"snapshot_id": "hung/" + "d" * 32, "state": "ready"})
    snapshots = SimpleNamespace(
        index=SimpleNamespace(records=lambda: [copying, ready]),
        view=lambda record: SimpleNamespace(done_bytes=5, total_bytes=50),
    )
    filling = ready_record("hung").model_copy(
        update={
            "volume_id": "hung/" + "e" * 32,
            "state": "creating",
            "content_source": ContentSource(kind="snapshot", source_id=ready.snapshot_id),
        }
    )
    provisioner.index.put(filling)
    clones = SimpleNamespace(progress=lambda volume_id: (7, 70))

    progress = copy_progress_of(
        provisioner, cast(SnapshotService, snapshots), cast(CloneService, clones)
    )

    assert list(progress()) == [
        CopyProgress("snapshot", copying.snapshot_id, "hung", 5, 50),
        CopyProgress("clone", filling.volume_id, "hung", 7, 70),
    ]
