"""`sharevol gc`: purge archived volumes older than an age; a dry run unless `--yes`.

It asks the running controller (Admin ListArchived/PurgeArchived) rather than touching the
pools itself: the controller counts archived volumes in each pool's provisioned bytes, and
only a purge it makes frees that space at once. Retained volumes are never purged.
"""

from __future__ import annotations

import re
import time
from typing import Any

import click

from sharevol.cli import output
from sharevol.cli.client import ClientError, SharevolClient
from sharevol.cli.common import CliError, Command
from sharevol.cli.session import server_options
from sharevol.csi._proto import admin_pb2
from sharevol.units import format_size

__all__ = ["Duration", "gc"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")


class Duration(click.ParamType[int]):
    """An age such as 7d, 12h, 1d12h, 90m or 0, converted to whole seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text == "0":
            return 0
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not an age like 7d, 12h, 1d12h, 90m or 0", param, ctx)
        return sum(int(number) * _UNITS[unit] for number, unit in parts)


@click.command(cls=Command)
@click.option(
    "--older-than",
    type=Duration(),
    required=True,
    help="Purge volumes archived at least this long ago: 7d, 12h, 1d12h, 90m, 0 for all.",
)
@click.option("--pool", default="", help="Only this pool (default: every pool).")
@click.option("--yes", is_flag=True, help="Purge for real; without it, only show what would go.")
@server_options
def gc(older_than: int, pool: str, yes: bool, endpoint: str, timeout: float) -> None:
    """Purge archived volumes (onDelete: archive) older than an age, data and record.

    A dry run by default: it lists what would be purged, with sizes. Retained volumes
    (onDelete: retain) are never purged; remove their folders by hand."""
    try:
        with SharevolClient(endpoint, timeout) as client:
            candidates = client.list_archived(pool, older_than)
            if not candidates:
                click.echo(f"nothing to purge: {_none_archived(older_than)}")
                return
            if not yes:
                _print(candidates)
                total = _total(candidates)
                click.echo(
                    f"\nwould purge {len(candidates)} archived volume(s), {total}; "
                    "run again with --yes to purge them"
                )
                return
            outcome = client.purge_archived(pool, older_than, [v.volume_id for v in candidates])
    except ClientError as error:
        raise CliError(str(error)) from None
    purged = list(outcome.purged)
    if purged:
        _print(purged)
        click.echo(f"\npurged {len(purged)} archived volume(s), {_total(purged)}")
    for failure in outcome.failed:
        click.echo(f"error: cannot purge {failure.volume_id}: {failure.message}", err=True)
    if outcome.failed:
        raise click.exceptions.Exit(1)


def _print(volumes: list[admin_pb2.ArchivedVolume]) -> None:
    headers = ["NAME", "VOLUME ID", "POOL", "ARCHIVED", "CAPACITY", "USED", "PATH"]
    rows = [
        [
            volume.name,
            volume.volume_id,
            volume.pool,
            f"{output.format_age(volume.deleted_unix)} ago",
            format_size(volume.capacity_bytes),
            output.format_used(volume.used_bytes),
            volume.path,
        ]
        for volume in volumes
    ]
    output.print_table(headers, rows)


def _total(volumes: list[admin_pb2.ArchivedVolume]) -> str:
    known = [v.used_bytes for v in volumes if v.used_bytes >= 0]
    text = f"{format_size(sum(known))} of data"
    if len(known) < len(volumes):
        text += f" (size unknown for {len(volumes) - len(known)})"
    capacity = format_size(sum(v.capacity_bytes for v in volumes))
    return f"{text}, {capacity} of provisioned capacity"


def _none_archived(seconds: int) -> str:
    if not seconds:
        return "no archived volume"
    return f"no volume archived more than {output.format_age(int(time.time()) - seconds)} ago"
