"""What doctor checks produce and read, and the registry that lists the checks.

A check is one small function registered with `@pool_check` (run once per pool with that pool's
`PoolScan`) or `@server_check` (run once with every scan). It yields `Finding`s; a finding may
carry a `Fix`, a repair that is safe to run unattended (it never deletes data it cannot
attribute to a record). New kinds of records get a new check in a new module, nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from sharevol.catalog.records import SnapshotRecord, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.pools.base import Pool
from sharevol.pools.config import PoolConfig, ServerConfig

Severity = Literal["ok", "warning", "problem"]


@dataclass(frozen=True)
class Fix:
    """A safe repair: what it does, in words, and the call that does it (idempotent)."""

    description: str
    apply: Callable[[], None]


@dataclass(frozen=True)
class Finding:
    """One result of one check about one subject (a pool, a record, a folder, a qgroup)."""

    check: str
    pool: str
    severity: Severity
    subject: str
    message: str
    fix: Fix | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the same finding in the check run after the fixes."""
        return (self.check, self.pool, self.subject)


@dataclass
class PoolScan:
    """One pool as the checks see it: the folder listings were taken before the records were
    read, so data that a running controller deletes meanwhile is not taken for an orphan."""

    config: PoolConfig
    pool: Pool
    catalog: Catalog
    volumes: list[VolumeRecord]
    snapshots: list[SnapshotRecord]
    entries: dict[str, list[str] | None]
    """Names in `volumes/`, `archive/`, `snapshots/` (None when the folder is missing)."""
    record_mtimes: dict[str, float]
    """uuid -> when its record file was last written (volumes and snapshots)."""
    context: DoctorContext
    usable: bool = True
    """False when the pool's filesystem is not what it should be: data checks are skipped."""
    unusable_reason: str = ""

    @property
    def name(self) -> str:
        return self.config.name

    def stuck(self, uuid: str) -> bool:
        """Whether a record has not changed for longer than `--stuck-after`."""
        written = self.record_mtimes.get(uuid)
        if written is None:
            return False
        age = self.context.now.timestamp() - written
        return age > self.context.stuck_after.total_seconds()


class RecordRepairs(Protocol):
    """Finishing stuck records by the code the controller runs on a retry (doctor.repairs)."""

    def finish_create(self, record: VolumeRecord) -> None: ...

    def finish_delete(self, record: VolumeRecord) -> None: ...

    def finish_snapshot(self, record: SnapshotRecord) -> None: ...


@dataclass
class DoctorContext:
    """The whole run: configuration, time, every pool's scan, and the record repairs."""

    server: ServerConfig
    state_dir: Path | None
    now: dt.datetime
    stuck_after: dt.timedelta
    repairs: RecordRepairs
    scans: list[PoolScan] = field(default_factory=list)

    def all_volumes(self) -> list[VolumeRecord]:
        return [record for scan in self.scans for record in scan.volumes]


PoolCheck = Callable[[PoolScan], Iterable[Finding]]
ServerCheck = Callable[[DoctorContext], Iterable[Finding]]


@dataclass(frozen=True)
class RegisteredCheck:
    name: str
    title: str
    """What the check verifies, as the report's OK line says it."""
    pool_check: PoolCheck | None = None
    server_check: ServerCheck | None = None
    applies: Callable[[PoolScan], bool] = lambda scan: True
    needs_data: bool = True
    """Skipped on a pool whose filesystem is wrong (its folders would mislead)."""


CHECKS: list[RegisteredCheck] = []
"""Every check, in registration order (the order of the report)."""


def pool_check(
    name: str,
    title: str,
    *,
    applies: Callable[[PoolScan], bool] = lambda scan: True,
    needs_data: bool = True,
) -> Callable[[PoolCheck], PoolCheck]:
    """Register a check run once per pool."""

    def register(function: PoolCheck) -> PoolCheck:
        CHECKS.append(
            RegisteredCheck(
                name, title, pool_check=function, applies=applies, needs_data=needs_data
            )
        )
        return function

    return register


def server_check(name: str, title: str) -> Callable[[ServerCheck], ServerCheck]:
    """Register a check run once for the whole server (for example the NFS runtime)."""

    def register(function: ServerCheck) -> ServerCheck:
        CHECKS.append(RegisteredCheck(name, title, server_check=function, needs_data=False))
        return function

    return register


def problem(
    check: str, scan: PoolScan, subject: str, message: str, fix: Fix | None = None
) -> Finding:
    return Finding(check, scan.name, "problem", subject, message, fix)


def warning(check: str, scan: PoolScan, subject: str, message: str) -> Finding:
    return Finding(check, scan.name, "warning", subject, message)


def ok(check: str, scan: PoolScan, message: str) -> Finding:
    return Finding(check, scan.name, "ok", "", message)
