"""Typed, frozen, schema-versioned records: the only state sharevol keeps.

They live with the data (`<pool>/.sharevol/catalog/`), so a controller restart, or a new
controller on another machine that mounts the same pool, loses nothing.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class AccessMode(StrEnum):
    """CSI access modes, named as in the CSI spec (Kubernetes names in comments)."""

    SINGLE_NODE_WRITER = "SINGLE_NODE_WRITER"  # RWO (legacy CSI form)
    SINGLE_NODE_READER_ONLY = "SINGLE_NODE_READER_ONLY"
    MULTI_NODE_READER_ONLY = "MULTI_NODE_READER_ONLY"  # ROX
    MULTI_NODE_SINGLE_WRITER = "MULTI_NODE_SINGLE_WRITER"
    MULTI_NODE_MULTI_WRITER = "MULTI_NODE_MULTI_WRITER"  # RWX
    SINGLE_NODE_SINGLE_WRITER = "SINGLE_NODE_SINGLE_WRITER"  # RWOP
    SINGLE_NODE_MULTI_WRITER = "SINGLE_NODE_MULTI_WRITER"  # RWO with SINGLE_NODE_MULTI_WRITER cap

    @property
    def multi_node(self) -> bool:
        return self.name.startswith("MULTI_NODE")

    @property
    def read_only(self) -> bool:
        return self.name.endswith("READER_ONLY")

    @property
    def allows_many_targets(self) -> bool:
        """Whether one node may publish the volume at several target paths (CSI publish table)."""
        return self.multi_node or self is AccessMode.SINGLE_NODE_MULTI_WRITER


class OnDelete(StrEnum):
    """What DeleteVolume does with the data; recorded at create time, never re-read."""

    DELETE = "delete"
    RETAIN = "retain"
    ARCHIVE = "archive"


class Capability(BaseModel):
    """One CSI VolumeCapability in domain form."""

    model_config = ConfigDict(frozen=True)

    access_mode: AccessMode
    access_type: Literal["mount", "block"] = "mount"
    fs_type: str = ""
    mount_flags: tuple[str, ...] = ()


VolumeKind = Literal["directory", "image", "block"]
"""What a volume is on its pool: a folder, a filesystem in an image file, or a raw image file."""


class ContentSource(BaseModel):
    """Where a restored or cloned volume's data came from (CSI volume_content_source)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["snapshot", "volume"]
    source_id: str


class NfsExport(BaseModel):
    """A volume's export on the managed NFS server (sharevol.service.exports); what a node
    mounts is `server:pseudo` on `port`."""

    model_config = ConfigDict(frozen=True)

    export_id: int = Field(ge=1, le=65535)
    """Ganesha's Export_Id: unique on the server, allocated under the pool lock."""
    pseudo: str
    root_squash: bool = True
    server: str
    port: int


class Publication(BaseModel):
    """A node the volume is ControllerPublished to; its address is on the export's clients."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    address: str
    capability: Capability
    readonly: bool = False


class VolumeRecord(BaseModel):
    """One volume, from its reservation (state `creating`) to its deletion."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    volume_id: str
    name: str
    pool: str
    uuid: str
    directory: str
    capacity_bytes: int
    capabilities: tuple[Capability, ...]
    parameters: dict[str, str] = Field(default_factory=dict)
    mutable_parameters: dict[str, str] = Field(default_factory=dict)
    on_delete: OnDelete = OnDelete.DELETE
    state: Literal["creating", "ready", "deleting", "retained", "archived"] = "creating"
    """creating -> ready -> deleting -> gone | retained (data left in place) | archived (data moved
    to the pool's archive folder, purged later by `sharevol gc`)."""
    quota_enforced: bool = False
    accessible_topology: dict[str, str] = Field(default_factory=dict)
    backend: dict[str, int | str] = Field(default_factory=dict)
    created_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    deleted_at: dt.datetime | None = None
    archive_name: str | None = None
    content_source: ContentSource | None = None
    """Set for restores and clones; part of CreateVolume's idempotency check."""
    kind: VolumeKind = "directory"
    """directory: the volume is its folder; image: a filesystem (`fs_type`) in the sparse file
    `<folder>/disk.img`; block: that file as a raw device. See sharevol.service.images."""
    fs_type: str = ""
    """The filesystem of an image volume (ext4 or xfs); empty for the other kinds."""
    nfs_export: NfsExport | None = None
    """Set when the managed NFS server exports the volume (kept after delete, for the record)."""
    publications: tuple[Publication, ...] = ()
    """The nodes it is ControllerPublished to (NFS client list), in publish order."""

    @property
    def live(self) -> bool:
        """Still a volume for the CO (listed, locatable by ID, owns its name)."""
        return self.state in ("creating", "ready", "deleting")

    @property
    def access_type(self) -> Literal["mount", "block"]:
        return self.capabilities[0].access_type if self.capabilities else "mount"


SnapshotMethod = Literal["btrfs", "reflink", "copy"]
"""How a pool cuts snapshots: a read-only btrfs snapshot, a reflink tree copy (both metadata
only), or a real sparse copy run in the background."""


class SnapshotRecord(BaseModel):
    """One snapshot, in `<pool>/.sharevol/catalog/snapshots/<uuid>.json`, data in
    `<pool>/snapshots/<directory>`. It does not depend on its source volume once ready."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    snapshot_id: str
    name: str
    pool: str
    uuid: str
    directory: str
    source_volume_id: str
    size_bytes: int
    """The source's capacity when the snapshot was cut: CSI size_bytes, the smallest restore."""
    source_kind: VolumeKind = "directory"
    """The source volume's kind; a restore must be of the same kind (and filesystem), so that
    a tenant's raw block bytes are never mounted as a filesystem on a node."""
    source_fs_type: str = ""
    data_bytes: int = 0
    """Bytes of file data in the snapshot (allocated, holes excluded); known once ready."""
    method: SnapshotMethod
    state: Literal["creating", "copying", "ready", "deleting"] = "creating"
    """creating (a reservation) -> ready, or -> copying (background copy) -> ready;
    then deleting -> gone."""
    progress: float = 0.0
    """Fraction copied, as last recorded (1.0 once ready); live progress comes from the job."""
    parameters: dict[str, str] = Field(default_factory=dict)
    backend: dict[str, int | str] = Field(default_factory=dict)
    created_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    """When the snapshot was cut (CSI creation_time)."""

    @property
    def ready(self) -> bool:
        return self.state == "ready"
