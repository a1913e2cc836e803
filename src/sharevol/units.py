"""Human sizes (`1Gi`, `500M`, `1048576`) at the edges; sizes are int bytes everywhere else."""

from __future__ import annotations

import re
from decimal import Decimal

from sharevol.errors import InvalidArgument

_SUFFIXES: dict[str, int] = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]i|[kKMGTP])?[bB]?\s*")
_BINARY = ("Ki", "Mi", "Gi", "Ti", "Pi")


def parse_size(text: str) -> int:
    """Parse a Kubernetes-style quantity (`1Gi`, `100M`, `4096`) into bytes."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f"invalid size {text!r}: use a number with an optional suffix like 1Gi"
        )
    number, suffix = match.group(1), match.group(2) or ""
    if suffix == "K":
        suffix = "k"
    value = Decimal(number) * _SUFFIXES[suffix]
    if value != value.to_integral_value():
        raise InvalidArgument(f"invalid size {text!r}: it must be a whole number of bytes")
    return int(value)


def format_size(size: int) -> str:
    """Print bytes the way kubectl does: the largest binary unit that keeps it short."""
    if size < 1024:
        return f"{size}B" if size else "0"
    value = float(size)
    chosen = _BINARY[-1]
    for unit in _BINARY:
        value /= 1024
        if value < 1024:
            chosen = unit
            break
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text}{chosen}"
