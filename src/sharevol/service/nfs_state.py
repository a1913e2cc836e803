"""What a node remembers about its NFS stages: which `server:/path` is mounted at which staging
path with which options, so that unstage, unpublish and stats (whose requests carry no volume
context) know an NFS stage when they meet one.

One JSON record per staging path, named by a hash of the path (as sharevol.service.node_state)
and written atomically. Mountinfo stays the truth: a record counts only together with an NFS
mount of its device at its path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from sharevol.catalog.records import Capability
from sharevol.catalog.store import atomic_write, fsync_dir
from sharevol.service.node_state import record_name

log = logging.getLogger(__name__)

NFS_STAGED_DIR = "nfs-staged"


class NfsStageRecord(BaseModel):
    """A volume staged by mounting `device` (`server:/path`) at `staging_path`."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    volume_id: str
    staging_path: str
    device: str
    options: tuple[str, ...]
    capability: Capability
    node_id: str
    static: bool = False


class NfsStages:
    """The records under `<state_dir>/nfs-staged`."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / NFS_STAGED_DIR
        self._lock = threading.Lock()

    def get(self, staging_path: str) -> NfsStageRecord | None:
        try:
            raw = (self.folder / record_name(staging_path)).read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = NfsStageRecord.model_validate_json(raw)
        except ValidationError as exc:
            log.error("ignoring unreadable NFS stage record of %s: %s", staging_path, exc)
            return None
        return record if record.staging_path == staging_path else None

    def put(self, record: NfsStageRecord) -> None:
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(
                self.folder / record_name(record.staging_path),
                record.model_dump_json(indent=1).encode(),
            )

    def remove(self, staging_path: str) -> None:
        with self._lock, contextlib.suppress(FileNotFoundError):
            (self.folder / record_name(staging_path)).unlink()
            fsync_dir(self.folder)
