"""Pool and volume gauges for Prometheus, computed when scraped, never able to hang a scrape.

Pool size and free space come from statvfs run under one deadline per scrape: a hung NFS pool
gives `sharevol_pool_up 0` and no size series, and the rest of the scrape still answers.
Per-volume limits come from the records (free). Per-volume usage is read only on pools whose
filesystem accounts it (`reports_usage`: btrfs qgroups, project quotas), by a background
refresh run at most once per `usage_ttl` and awaited at most until the deadline; plain pools
report limits only, because their usage is a walk of every file (`sharevol volume stats`
still walks one volume on demand). `sharevol_volume_usage_age_seconds` says how old usage is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sharevol.errors import SharevolError
from sharevol.pools.base import PoolSpace, VolumeUsage
from sharevol.service.capacity import pool_budget
from sharevol.service.clones import CloneService
from sharevol.service.provisioning import Provisioner
from sharevol.service.snapshots import SnapshotService
from sharevol.sys.statfs import call_with_deadline

log = logging.getLogger(__name__)

PREFIX = "sharevol"
SCRAPE_DEADLINE = 5.0
"""Seconds a scrape may spend on the pools; Prometheus' default scrape_timeout is 10 s."""
USAGE_TTL = 30.0
"""btrfs updates qgroup numbers at each transaction commit (30 s by default): reading them more
often shows nothing new."""
STATES = ("creating", "ready", "deleting", "retained", "archived")


@dataclass(frozen=True)
class CopyProgress:
    """One background copy (sharevol.service.copy_jobs): what it fills and how far it is."""

    kind: str
    """"snapshot" (a snapshot being copied) or "clone" (a volume filled from its source)."""
    target_id: str
    pool: str
    done_bytes: int
    total_bytes: int


CopyProgressSource = Callable[[], Iterable[CopyProgress]]


def copy_progress_of(
    provisioner: Provisioner,
    snapshots: SnapshotService | None,
    clones: CloneService | None,
) -> CopyProgressSource:
    """The progress of every running copy, read from the snapshot and clone services."""

    def progress() -> Iterator[CopyProgress]:
        if snapshots is not None:
            for snapshot in snapshots.index.records():
                if snapshot.state == "copying":
                    view = snapshots.view(snapshot)
                    yield CopyProgress(
                        "snapshot",
                        snapshot.snapshot_id,
                        snapshot.pool,
                        view.done_bytes,
                        view.total_bytes,
                    )
        if clones is not None:
            for volume in provisioner.index.records():
                if volume.state != "creating" or volume.content_source is None:
                    continue
                done_total = clones.progress(volume.volume_id)
                if done_total is not None:
                    yield CopyProgress("clone", volume.volume_id, volume.pool, *done_total)

    return progress


class UsageCache:
    """Per-volume usage of the pools that account it, refreshed in the background at most once
    per `ttl` seconds; a refresh stuck on a hung pool blocks only further refreshes."""

    def __init__(self, provisioner: Provisioner, ttl: float = USAGE_TTL) -> None:
        self._provisioner = provisioner
        self._ttl = ttl
        self._lock = threading.Lock()
        self._values: dict[str, VolumeUsage] = {}
        self._refreshed_at = -math.inf
        self._thread: threading.Thread | None = None

    def get(self, wait: float) -> tuple[dict[str, VolumeUsage], float]:
        """The usage by volume ID and its age in seconds (inf before the first refresh);
        starts a refresh when the values are older than the TTL, waiting up to `wait` s."""
        with self._lock:
            stale = time.monotonic() - self._refreshed_at > self._ttl
            if stale and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self._refresh, name="metrics: volume usage", daemon=True
                )
                self._thread.start()
            thread = self._thread
        if stale and thread is not None:
            thread.join(max(wait, 0.0))
        with self._lock:
            return dict(self._values), time.monotonic() - self._refreshed_at

    def _refresh(self) -> None:
        values: dict[str, VolumeUsage] = {}
        pools = self._provisioner.pools()
        for record in self._provisioner.index.records():
            handle = pools.get(record.pool)
            if record.state != "ready" or handle is None:
                continue
            if not handle.pool.capabilities.reports_usage:
                continue
            try:
                values[record.volume_id] = self._provisioner.usage(record)
            except SharevolError as exc:
                log.debug("metrics: no usage for %s: %s", record.volume_id, exc)
        with self._lock:
            self._values = values
            self._refreshed_at = time.monotonic()


class PoolCollector(Collector):
    """The `sharevol_pool_*`, `sharevol_volume_*` and `sharevol_copy_*` families."""

    def __init__(
        self,
        provisioner: Provisioner,
        *,
        deadline: float = SCRAPE_DEADLINE,
        usage_ttl: float = USAGE_TTL,
        copy_progress: CopyProgressSource | None = None,
    ) -> None:
        self._provisioner = provisioner
        self._deadline = deadline
        self._usage = UsageCache(provisioner, usage_ttl)
        self._copy_progress = copy_progress

    def collect(self) -> Iterator[Metric]:
        ends = time.monotonic() + self._deadline
        yield from self._pools(ends)
        yield from self._volumes(ends)
        yield from self._copies()

    def _pools(self, ends: float) -> Iterator[Metric]:
        labels = ["pool"]
        up = _gauge(
            "pool_up",
            "1 when the pool answered statvfs within the scrape deadline.",
            ["pool", "kind"],
        )
        size = _gauge("pool_capacity_bytes", "Size of the filesystem under the pool.", labels)
        free = _gauge("pool_free_bytes", "Bytes free for unprivileged writers.", labels)
        used = _gauge("pool_used_bytes", "Size minus free bytes.", labels)
        provisioned = _gauge(
            "pool_provisioned_bytes",
            "Sum of the sizes promised to volumes (retained and archived ones included).",
            labels,
        )
        available = _gauge(
            "pool_available_bytes",
            "Bytes the pool may still promise: size x overcommit - provisioned.",
            labels,
        )
        enforced = _gauge("pool_quota_enforced", "1 when volume sizes are hard limits.", labels)
        volumes = _gauge("pool_volumes", "Volume records by state.", ["pool", "state"])
        index = self._provisioner.index
        for name, handle in self._provisioner.pools().items():
            promised = index.provisioned_bytes(name)
            provisioned.add_metric([name], promised)
            enforced.add_metric([name], int(handle.pool.capabilities.enforces_quota))
            states = Counter[str](record.state for record in index.records(name))
            for state in STATES:
                volumes.add_metric([name, state], states[state])
            space = self._space(name, handle.pool.space, ends)
            up.add_metric([name, handle.pool.kind], int(space is not None))
            if space is None:
                continue
            size.add_metric([name], space.total_bytes)
            free.add_metric([name], space.free_bytes)
            used.add_metric([name], max(space.total_bytes - space.free_bytes, 0))
            budget = pool_budget(space.total_bytes, handle.overcommit)
            available.add_metric([name], max(budget - promised, 0))
        yield from (up, size, free, used, provisioned, available, enforced, volumes)

    @staticmethod
    def _space(name: str, space: Callable[[], PoolSpace], ends: float) -> PoolSpace | None:
        try:
            return call_with_deadline(
                space, max(ends - time.monotonic(), 0.001), f"metrics: space of pool {name}"
            )
        except SharevolError as exc:
            log.warning("metrics: pool %s: %s", name, exc)
            return None

    def _volumes(self, ends: float) -> Iterator[Metric]:
        labels = ["pool", "volume_id", "name"]
        limit = _gauge("volume_capacity_bytes", "Size of a ready volume (its limit).", labels)
        used = _gauge(
            "volume_used_bytes", "Bytes a volume uses, where its pool accounts them.", labels
        )
        inodes = _gauge("volume_used_inodes", "Files and directories in a volume.", labels)
        age = _gauge(
            "volume_usage_age_seconds",
            "Seconds since volume usage was last read (it is refreshed in the background).",
            [],
        )
        usage, seconds = self._usage.get(ends - time.monotonic())
        for record in self._provisioner.index.records():
            if record.state != "ready":
                continue
            values = [record.pool, record.volume_id, record.name]
            limit.add_metric(values, record.capacity_bytes)
            volume = usage.get(record.volume_id)
            if volume is not None:
                used.add_metric(values, volume.used_bytes)
                inodes.add_metric(values, volume.used_inodes)
        if math.isfinite(seconds):
            age.add_metric([], seconds)
        yield from (limit, used, inodes, age)

    def _copies(self) -> Iterator[Metric]:
        labels = ["kind", "pool", "target_id"]
        done = _gauge("copy_done_bytes", "Bytes a background copy has copied so far.", labels)
        total = _gauge("copy_total_bytes", "Bytes a background copy has to copy.", labels)
        if self._copy_progress is not None:
            try:
                for copy in self._copy_progress():
                    values = [copy.kind, copy.pool, copy.target_id]
                    done.add_metric(values, copy.done_bytes)
                    total.add_metric(values, copy.total_bytes)
            except SharevolError as exc:
                log.warning("metrics: cannot read copy progress: %s", exc)
        yield from (done, total)


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)
