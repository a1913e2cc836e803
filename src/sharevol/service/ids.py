"""Volume IDs are opaque tokens `<pool>/<32 hex>`, checked against a strict pattern before they
reach any path. Anything else cannot name a volume of ours (path traversal through IDs is a
known CVE class in CSI drivers)."""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass

from sharevol.errors import InvalidArgument

MAX_ID_BYTES = 128
POOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_VOLUME_ID = re.compile(r"^([a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?)/([0-9a-f]{32})$")


@dataclass(frozen=True)
class VolumeRef:
    """A parsed, validated volume ID."""

    pool: str
    uuid: str

    @property
    def volume_id(self) -> str:
        return f"{self.pool}/{self.uuid}"


def new_volume_ref(pool: str) -> VolumeRef:
    return VolumeRef(pool, uuidlib.uuid4().hex)


def check_id_length(value: str, what: str) -> None:
    """CSI: strings are at most 128 bytes; longer is INVALID_ARGUMENT."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidArgument(f"{what} is longer than {MAX_ID_BYTES} bytes")


def parse_volume_id(volume_id: str) -> VolumeRef | None:
    """The pool and uuid of an ID, or None when the string cannot be one of our IDs."""
    match = _VOLUME_ID.fullmatch(volume_id)
    if match is None:
        return None
    return VolumeRef(match.group(1), match.group(3))
