"""How the CLI prints: kubectl-style plain tables, human sizes and ages, JSON for scripts.

Only presentation lives here; nothing in this module talks to the server.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sharevol.units import format_size

__all__ = [
    "ACCESS_MODE_SHORT",
    "UNKNOWN",
    "format_access_modes",
    "format_age",
    "format_capacity",
    "format_used",
    "message_to_dict",
    "print_json",
    "print_key_values",
    "print_table",
    "render_table",
]

UNKNOWN = "<unknown>"

# Kubernetes short names; RWO covers both forms the CSI sidecars send for ReadWriteOnce.
ACCESS_MODE_SHORT: dict[str, str] = {
    "SINGLE_NODE_WRITER": "RWO",
    "SINGLE_NODE_MULTI_WRITER": "RWO",
    "SINGLE_NODE_SINGLE_WRITER": "RWOP",
    "MULTI_NODE_READER_ONLY": "ROX",
    "MULTI_NODE_MULTI_WRITER": "RWX",
}

# Field descriptors: the stubs type them as a union of the pure-Python and upb classes.
_Field = Any

# Wide enough that rich never wraps or truncates a cell: kubectl lets long rows overflow.
_RENDER_WIDTH = 4096


def format_age(created_unix: int, now: float | None = None) -> str:
    """Age of a timestamp the way `kubectl get` shows it: 5s, 3m, 2h, 4d, 2y."""
    if created_unix <= 0:
        return UNKNOWN
    seconds = math.floor((time.time() if now is None else now) - created_unix)
    if seconds < 0:
        # Clock skew between the server and this machine: kubectl prints 0s too.
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}h"
    days = hours // 24
    if days < 365:
        return f"{days}d"
    return f"{days // 365}y"


def format_capacity(capacity_bytes: int, quota_enforced: bool) -> str:
    """Capacity, saying honestly when nothing stops writes beyond it."""
    size = format_size(capacity_bytes)
    return size if quota_enforced else f"{size} (not enforced)"


def format_used(used_bytes: int) -> str:
    """Usage in human units; a negative value is the server saying it cannot tell."""
    return UNKNOWN if used_bytes < 0 else format_size(used_bytes)


def format_access_modes(modes: Iterable[str]) -> str:
    """CSI access mode names as kubectl's comma list (RWO,RWX), without duplicates."""
    shown: list[str] = []
    for mode in modes:
        short = ACCESS_MODE_SHORT.get(mode.upper(), mode)
        if short not in shown:
            shown.append(short)
    return ",".join(shown) if shown else UNKNOWN


def render_table(headers: Sequence[str] | None, rows: Iterable[Sequence[str]]) -> str:
    """Lay out columns like kubectl: no borders, three spaces apart, no trailing blanks."""
    table = Table(
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 3, 0, 0),
        show_header=headers is not None,
        header_style="",
    )
    width = len(headers) if headers is not None else 0
    materialised = [list(row) for row in rows]
    if headers is None and materialised:
        width = len(materialised[0])
    for index in range(width):
        header = headers[index] if headers is not None else ""
        table.add_column(header, no_wrap=True, overflow="ignore")
    for row in materialised:
        # Text cells, so a volume named "[bold]x" is printed as it is, not as markup.
        table.add_row(*(Text(cell) for cell in row))
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=_RENDER_WIDTH,
        color_system=None,
        force_terminal=False,
        highlight=False,
        markup=False,
        emoji=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a table with a header line to stdout."""
    click.echo(render_table(headers, rows))


def print_key_values(pairs: Iterable[tuple[str, str]]) -> None:
    """Print `key   value` lines, aligned, for one object (get, stats)."""
    click.echo(render_table(None, [(key, value) for key, value in pairs]))


def message_to_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as plain JSON types; int64 stays a number (json_format quotes it)."""
    result: dict[str, Any] = {}
    field: _Field
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if _is_map(field):
            result[field.name] = {
                key: _scalar_or_message(field.message_type.fields_by_name["value"], item)
                for key, item in value.items()
            }
        elif _is_repeated(field):
            result[field.name] = [_scalar_or_message(field, item) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            continue  # an unset message (say the other branch of a oneof) is not printed
        else:
            result[field.name] = _scalar_or_message(field, value)
    return result


def print_json(value: Mapping[str, Any] | Sequence[Any]) -> None:
    """Print JSON for scripts: indented, keys in a stable order."""
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _is_repeated(field: _Field) -> bool:
    # protobuf >= 5 has `is_repeated`; the `label` attribute is deprecated there.
    return bool(getattr(field, "is_repeated", False))


def _is_map(field: _Field) -> bool:
    return (
        _is_repeated(field)
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def _scalar_or_message(field: _Field, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name if field.enum_type else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value
