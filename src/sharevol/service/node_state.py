"""What a node remembers about its stages and publications: the parameters mountinfo cannot show.

One small JSON record per staging path and per target path, named by a hash of the path and
written atomically. A record only counts together with a live mount of the same source
(mountinfo is the truth); a record without one is stale and is dropped when met.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sharevol.catalog.records import Capability
from sharevol.catalog.store import atomic_write, fsync_dir
from sharevol.sys.mounts import MountIdentity

log = logging.getLogger(__name__)

NODE_STATE_VERSION = 1
STAGED_DIR = "staged"
PUBLISHED_DIR = "published"


class StageRecord(BaseModel):
    """A volume staged (bind-mounted from its pool directory) at `staging_path`."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = NODE_STATE_VERSION
    volume_id: str
    staging_path: str
    capability: Capability
    node_id: str
    device: str
    root: str

    @property
    def identity(self) -> MountIdentity:
        return MountIdentity(self.device, self.root)


class PublishRecord(BaseModel):
    """A volume published (bind-mounted from its staging path) at `target_path`."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = NODE_STATE_VERSION
    volume_id: str
    target_path: str
    staging_path: str
    capability: Capability
    readonly: bool
    node_id: str
    device: str
    root: str

    @property
    def identity(self) -> MountIdentity:
        return MountIdentity(self.device, self.root)


_Record = TypeVar("_Record", StageRecord, PublishRecord)


def record_name(path: str) -> str:
    """File name of the record for a path: a hash, so no request string becomes a path."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:40] + ".json"


class NodeState:
    """The records under one state directory (`<state_dir>/staged`, `<state_dir>/published`)."""

    def __init__(self, state_dir: Path) -> None:
        self.staged_dir = state_dir / STAGED_DIR
        self.published_dir = state_dir / PUBLISHED_DIR
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Create the record folders (idempotent)."""
        for folder in (self.staged_dir, self.published_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def stage(self, staging_path: str) -> StageRecord | None:
        return self._read(self.staged_dir, staging_path, StageRecord)

    def publication(self, target_path: str) -> PublishRecord | None:
        return self._read(self.published_dir, target_path, PublishRecord)

    def put_stage(self, record: StageRecord) -> None:
        self._write(self.staged_dir, record.staging_path, record)

    def put_publication(self, record: PublishRecord) -> None:
        self._write(self.published_dir, record.target_path, record)

    def remove_stage(self, staging_path: str) -> None:
        self._remove(self.staged_dir, staging_path)

    def remove_publication(self, target_path: str) -> None:
        self._remove(self.published_dir, target_path)

    def stages(self) -> list[StageRecord]:
        return self._all(self.staged_dir, StageRecord)

    def publications(self) -> list[PublishRecord]:
        return self._all(self.published_dir, PublishRecord)

    def _read(self, folder: Path, path: str, model: type[_Record]) -> _Record | None:
        try:
            raw = (folder / record_name(path)).read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = model.model_validate_json(raw)
        except ValidationError as exc:
            # A torn record cannot happen (atomic writes); a corrupt one is useless: drop it
            # and fall back to comparing the mount itself.
            log.error("ignoring unreadable node record for %s: %s", path, exc)
            return None
        return record if _path_of(record) == path else None

    def _write(self, folder: Path, path: str, record: BaseModel) -> None:
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(folder / record_name(path), record.model_dump_json(indent=1).encode())

    def _remove(self, folder: Path, path: str) -> None:
        with self._lock, contextlib.suppress(FileNotFoundError):
            (folder / record_name(path)).unlink()
            fsync_dir(folder)

    def _all(self, folder: Path, model: type[_Record]) -> list[_Record]:
        records: list[_Record] = []
        if not folder.is_dir():
            return records
        for file in sorted(folder.glob("*.json")):
            try:
                records.append(model.model_validate_json(file.read_bytes()))
            except (ValidationError, OSError) as exc:
                log.error("skipping unreadable node record %s: %s", file, exc)
        return records


def _path_of(record: StageRecord | PublishRecord) -> str:
    return record.staging_path if isinstance(record, StageRecord) else record.target_path
