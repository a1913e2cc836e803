"""The hook through which the Provisioner makes restores and clones (CSI volume_content_source).

The Provisioner knows only this protocol; sharevol.service.clones implements it on top of the
snapshot service and the background copy jobs, so volume provisioning stays one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sharevol.catalog.records import ContentSource, VolumeKind, VolumeRecord
from sharevol.pools.base import ContentRef


@dataclass(frozen=True)
class Origin:
    """A resolved content source: its pool, its size (the smallest allowed clone), its folder,
    and the key under which a copy registers as its reader."""

    pool: str
    size_bytes: int
    ref: ContentRef
    reader_key: str
    kind: VolumeKind = "directory"
    fs_type: str = ""


class ContentHook(Protocol):
    def resolve(self, source: ContentSource) -> Origin:
        """The ready source a request names; NotFound, or Aborted while it is not ready."""
        ...

    def populate(self, record: VolumeRecord) -> dict[str, int | str]:
        """Fill a reserved volume from its source; Aborted while a background copy runs."""
        ...

    def before_delete(self, record: VolumeRecord) -> None:
        """FailedPrecondition while a copy reads the volume; stop a copy into it."""
        ...
