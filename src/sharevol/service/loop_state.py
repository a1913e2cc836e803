"""What a node remembers about its image and block stages: which loop device backs which volume
at which staging path (a block stage mounts nothing, so mountinfo cannot tell).

One JSON record per staging path, named by a hash of the path (like sharevol.service.node_state)
and written atomically. A record only counts while its loop device still backs the volume's
image file; the device is always re-checked against the file before it is used or detached.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from sharevol.catalog.records import Capability
from sharevol.catalog.store import atomic_write, fsync_dir
from sharevol.service.node_state import record_name

log = logging.getLogger(__name__)

LOOP_STAGED_DIR = "loop-staged"


class LoopStageRecord(BaseModel):
    """An image volume mounted from (or a block volume attached to) a loop device."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    volume_id: str
    staging_path: str
    kind: Literal["image", "block"]
    fs_type: str = ""
    capability: Capability
    node_id: str
    image: str
    """The image file the device must be backed by."""
    device: str = ""
    """`/dev/loopN`; empty between writing the record and attaching the device (a crash
    there leaves a record that unstage resolves through `losetup -j`)."""


class LoopStages:
    """The records under `<state_dir>/loop-staged`."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / LOOP_STAGED_DIR
        self._lock = threading.Lock()

    def get(self, staging_path: str) -> LoopStageRecord | None:
        try:
            raw = (self.folder / record_name(staging_path)).read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = LoopStageRecord.model_validate_json(raw)
        except ValidationError as exc:
            log.error("ignoring unreadable loop stage record for %s: %s", staging_path, exc)
            return None
        return record if record.staging_path == staging_path else None

    def put(self, record: LoopStageRecord) -> None:
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.folder / record_name(record.staging_path)
            atomic_write(path, record.model_dump_json(indent=1).encode())

    def remove(self, staging_path: str) -> None:
        with self._lock, contextlib.suppress(FileNotFoundError):
            (self.folder / record_name(staging_path)).unlink()
            fsync_dir(self.folder)

    def all(self) -> list[LoopStageRecord]:
        records: list[LoopStageRecord] = []
        if not self.folder.is_dir():
            return records
        for file in sorted(self.folder.glob("*.json")):
            try:
                records.append(LoopStageRecord.model_validate_json(file.read_bytes()))
            except (ValidationError, OSError) as exc:
                log.error("skipping unreadable loop stage record %s: %s", file, exc)
        return records
