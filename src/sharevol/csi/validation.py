"""Checks of request fields that the CSI spec makes REQUIRED or bounded."""

from __future__ import annotations

import os

from sharevol.errors import InvalidArgument, NotFound
from sharevol.service.ids import MAX_ID_BYTES

MAX_PATH_BYTES = 4096


def required(value: str, field: str) -> str:
    """A REQUIRED string field: present, at most 128 bytes, no NUL."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_ID_BYTES} bytes")
    if "\0" in value:
        raise InvalidArgument(f"{field} contains a NUL byte")
    return value


def required_path(value: str, field: str) -> str:
    """A REQUIRED path from the CO: absolute, normalised, no NUL, bounded."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if "\0" in value or len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{field} is not a valid path")
    if (
        not os.path.isabs(value)
        or os.path.normpath(value) != value.rstrip("/")
        or ".." in value.split("/")
    ):
        raise InvalidArgument(f"{field} {value[:128]!r} must be an absolute, normalised path")
    return value


def node_volume_path(value: str, field: str) -> str:
    """The REQUIRED path at which a node call expects a volume (NodeGetVolumeStats,
    NodeExpandVolume): a path that is not absolute and normalised can hold no volume, so it is
    NOT_FOUND, as the conformance suite expects (it sends "some/path"); an empty, NUL or
    oversized one is still INVALID_ARGUMENT."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if "\0" in value or len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{field} is not a valid path")
    try:
        return required_path(value, field)
    except InvalidArgument:
        raise NotFound(f"no volume is staged or published at {value[:128]!r}") from None
