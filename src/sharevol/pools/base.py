"""The protocol every pool kind implements, and the value types it returns.

A pool owns one folder tree: `<root>/volumes/<directory>` holds volumes, `<root>/archive/`
holds archived ones, and `<root>/.sharevol/` holds the catalog. Every path a pool builds comes
from a `directory` that sharevol.service.naming has already validated as one safe component;
pools check that again (`safe_child`) because a pool must never act outside its root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from sharevol.catalog.records import SnapshotMethod
from sharevol.errors import InvalidArgument
from sharevol.sys.copy_control import CopyControl

VOLUMES_DIR = "volumes"
ARCHIVE_DIR = "archive"
SNAPSHOTS_DIR = "snapshots"

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_child(parent: Path, component: str) -> Path:
    """`parent/component` for a single safe path component, or InvalidArgument."""
    if not _COMPONENT.fullmatch(component) or component in (".", ".."):
        raise InvalidArgument(f"invalid directory name {component!r}")
    return parent / component


@dataclass(frozen=True)
class PoolCapabilities:
    """What a pool can do; callers branch on these, never on the pool kind."""

    enforces_quota: bool
    """Writes past a volume's size fail (EDQUOT/ENOSPC)."""
    reports_usage: bool
    """Per-volume used bytes come from the filesystem's accounting, not a tree walk."""
    instant_snapshot: bool = False
    """Snapshots and clones cost metadata, not data (btrfs snapshot, reflink)."""
    node_local: bool = False
    """The pool is on one node's disk: volumes are pinned to that node (topology)."""
    snapshot_method: SnapshotMethod = "copy"
    """How snapshots and clones are made: btrfs snapshot, reflink copy (both instant), or a
    real copy that the service runs in the background."""
    remote_share: bool = False
    """The pool is an NFS share that sharevol mounts (pool kind `nfs`): nodes mount a directory
    volume's own folder from the server instead of binding it from a local pool."""


@dataclass(frozen=True)
class VolumeUsage:
    """Bytes and inodes of one volume (CSI NodeGetVolumeStats, `sharevol volume stats`)."""

    capacity_bytes: int
    used_bytes: int
    available_bytes: int
    total_inodes: int
    used_inodes: int
    available_inodes: int


@dataclass(frozen=True)
class PoolSpace:
    """Size and free space of the filesystem under the pool."""

    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class ContentRef:
    """Data a new volume is made from, inside the same pool: a volume or a snapshot folder."""

    kind: Literal["volume", "snapshot"]
    directory: str


@dataclass(frozen=True)
class CopyOutcome:
    """What a snapshot or clone produced: pool facts to record, and bytes of data in it."""

    backend: dict[str, int | str]
    data_bytes: int


class Pool(Protocol):
    """A place where volumes are made. Every method is idempotent: a retry after a crash at any
    point converges to the same result."""

    name: str
    kind: str
    root: Path
    capabilities: PoolCapabilities

    def start(self) -> None:
        """Check the pool is usable (mounted, quotas on) and create its folders; raise
        FailedPrecondition with a message saying what to fix."""
        ...

    def volume_path(self, directory: str) -> Path:
        """Where the volume's data lives: `<root>/volumes/<directory>`."""
        ...

    def create_volume(self, directory: str, capacity_bytes: int) -> dict[str, int | str]:
        """Make the volume (or finish making it) with a hard limit of `capacity_bytes` where the
        pool enforces quotas. Returns pool-specific facts to record (for example the btrfs
        subvolume id)."""
        ...

    def delete_volume(self, directory: str, backend: dict[str, int | str]) -> None:
        """Remove the volume and its quota; nothing if it is already gone."""
        ...

    def archive_volume(self, directory: str, archive_name: str) -> None:
        """Move the volume to `<root>/archive/<archive_name>`, data and limit kept."""
        ...

    def set_limit(self, directory: str, capacity_bytes: int, backend: dict[str, int | str]) -> None:
        """Change the hard limit (expansion); a no-op where the pool does not enforce."""
        ...

    def usage(
        self, directory: str, capacity_bytes: int, backend: dict[str, int | str]
    ) -> VolumeUsage:
        """Current usage of one volume. `capacity_bytes` is the recorded size, used where the
        pool has no limit of its own to report."""
        ...

    def space(self) -> PoolSpace:
        """Total and free bytes of the filesystem under the pool."""
        ...

    # -- snapshots and clones (sharevol.pools.snapshots) --------------------------------------

    def snapshot_path(self, directory: str) -> Path:
        """Where a snapshot's data lives: `<root>/snapshots/<directory>`."""
        ...

    def create_snapshot(
        self,
        volume_directory: str,
        snapshot_directory: str,
        size_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        """Cut a snapshot of the volume into `snapshots/<snapshot_directory>`, independent of
        the volume. Instant for btrfs and reflink; a real copy otherwise (the caller runs it in
        the background with `control`). A retry after a crash converges."""
        ...

    def delete_snapshot(self, snapshot_directory: str) -> None:
        """Remove a snapshot's data (and a partial copy of it); gone already is fine."""
        ...

    def clone_volume(
        self,
        source: ContentRef,
        directory: str,
        capacity_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        """Make volume `directory` a writable copy of `source` with a hard limit of
        `capacity_bytes` where the pool enforces; same mechanisms as create_snapshot."""
        ...


@runtime_checkable
class FileLimitPool(Protocol):
    """A pool that can also cap a volume's number of files (XFS and ext4 project quotas); the
    StorageClass parameter `maxFiles` needs one."""

    def set_file_limit(
        self, directory: str, max_files: int, backend: dict[str, int | str]
    ) -> dict[str, int | str]:
        """Cap the volume's inodes (its top directory counts as one); returns the backend facts
        to record, which set_limit re-applies."""
        ...


@runtime_checkable
class ArchivePool(Protocol):
    """A pool that can measure and purge its archived volumes (`archive/<archive_name>`), which
    `sharevol gc` needs; a pool kind without it keeps its archives until purged by hand."""

    def archive_usage(self, archive_name: str) -> int:
        """Bytes the archived volume still holds (what a purge gives back); -1 when unknown."""
        ...

    def purge_archive(self, archive_name: str) -> None:
        """Delete the archived volume's data for good; gone already is fine (a retry)."""
        ...
