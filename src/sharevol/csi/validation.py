"""Checks of request fields that the CSI spec makes REQUIRED or bounded."""

from __future__ import annotations

import os

from sharevol.errors import InvalidArgument
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
