"""Work other services add around a volume's life, without the Provisioner knowing them.

The Provisioner runs every hook's `prepare` after the pool made a volume and before the volume
is marked ready (root owner and mode: sharevol.service.ownership; NFS export:
sharevol.service.exports), and every hook's `retire` before a volume's data is deleted,
archived or retained, and when a failed create is undone. Both must be idempotent: a retry
after a crash at any point runs them again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from sharevol.catalog.records import VolumeRecord
from sharevol.errors import SharevolError

log = logging.getLogger(__name__)


class VolumeHook(Protocol):
    def prepare(self, record: VolumeRecord) -> VolumeRecord:
        """Finish a made volume; returns the record to mark ready (it may carry new fields)."""
        ...

    def retire(self, record: VolumeRecord) -> None:
        """Undo what prepare did (nothing when it did nothing); before the data goes."""
        ...


def retire_quietly(hooks: Iterable[VolumeHook], record: VolumeRecord) -> None:
    """Retire while undoing a failed create: a second failure is logged, not raised, so the
    caller reports the first one."""
    for hook in hooks:
        try:
            hook.retire(record)
        except SharevolError:
            log.exception("undoing %s of volume %s failed", type(hook).__name__, record.volume_id)
