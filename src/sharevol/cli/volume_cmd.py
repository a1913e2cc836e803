"""`sharevol volume ...`: drive a running server over its socket, the way a CO would.

Each command parses its arguments, makes the CSI or Admin calls a container orchestrator would
make, and prints the outcome. Every failure is one `error: ...` line on stderr and exit code 1.
`mount` and `unmount` live in sharevol.cli.volume_mount_cmd; this group adds them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import click

from sharevol.cli import output
from sharevol.cli.client import ClientError, volume_capability
from sharevol.cli.common import Group, Size, fail
from sharevol.cli.session import Settings, server_options, session
from sharevol.cli.snapshot_cmd import create_from_source
from sharevol.cli.volume_mount_cmd import mount, recorded_capability, staging_path, unmount
from sharevol.csi._proto import admin_pb2
from sharevol.units import format_size

__all__ = ["ACCESS_MODES", "QUOTA_CONTEXT_KEY", "staging_path", "volume"]

# volume_context key of CreateVolume's answer: "enforced" or "not enforced".
QUOTA_CONTEXT_KEY = "sharevol.csi.io/quota"

# Kubernetes access modes as the CSI modes the external-provisioner sends for them. RWO is
# SINGLE_NODE_MULTI_WRITER because the driver advertises that capability.
ACCESS_MODES: dict[str, str] = {
    "rwo": "SINGLE_NODE_MULTI_WRITER",
    "rwop": "SINGLE_NODE_SINGLE_WRITER",
    "rox": "MULTI_NODE_READER_ONLY",
    "rwx": "MULTI_NODE_MULTI_WRITER",
}

_STATUS = {"ready": "Ready", "creating": "Creating", "deleting": "Deleting"}
_RECLAIM_EFFECT = {
    "delete": "its data is deleted",
    "retain": "its data is kept in the pool",
    "archive": "its data is archived in the pool",
}
_OUTPUT = click.Choice(["table", "json"])


def _status(volume: admin_pb2.VolumeInfo) -> str:
    if volume.state == "ready" and volume.published_targets:
        return "Published"
    return _STATUS.get(volume.state, volume.state.capitalize() or output.UNKNOWN)


def _reclaim(volume: admin_pb2.VolumeInfo) -> str:
    return volume.on_delete.capitalize() or output.UNKNOWN


def _quota_text(enforced: bool) -> str:
    return "enforced" if enforced else "not enforced: writes can go beyond the capacity"


@click.group(cls=Group)
@server_options
@click.pass_context
def volume(ctx: click.Context, endpoint: str, timeout: float) -> None:
    """Create, list, mount and delete volumes on a running sharevol server."""
    ctx.obj = Settings(endpoint=endpoint, timeout=timeout)


def _parse_params(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx, param)
        if pairs.get(key, value) != value:
            raise click.BadParameter(f"{key!r} is given twice with different values", ctx, param)
        pairs[key] = value
    return pairs


@volume.command()
@click.argument("name")
@click.option(
    "--size",
    type=Size(),
    default=None,
    help="Capacity: 1Gi, 500Mi, 1G or bytes (a restore or clone: its source's size by default).",
)
@click.option(
    "--access-mode",
    "access_modes",
    type=click.Choice(list(ACCESS_MODES), case_sensitive=False),
    multiple=True,
    help="rwo (default), rwop, rox or rwx; repeat for several.",
)
@click.option("--pool", default="", help="The pool to carve the volume from.")
@click.option(
    "--param",
    "params",
    multiple=True,
    callback=_parse_params,
    metavar="KEY=VALUE",
    help="A StorageClass parameter; repeat for several.",
)
@click.option("--block", is_flag=True, help="A raw block volume instead of a filesystem.")
@click.option("--from-snapshot", default="", metavar="SNAPSHOT", help="Restore this snapshot.")
@click.option("--from-volume", default="", metavar="VOLUME", help="Clone this volume.")
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    size: int | None,
    access_modes: tuple[str, ...],
    pool: str,
    params: dict[str, str],
    block: bool,
    from_snapshot: str,
    from_volume: str,
) -> None:
    """Create volume NAME (CSI CreateVolume; running it again is safe), empty or restored from
    a snapshot or cloned from a volume."""
    if from_snapshot and from_volume:
        fail("give --from-snapshot or --from-volume, not both")
    if size is None and not (from_snapshot or from_volume):
        fail("--size is required (a restore or clone defaults to its source's size)")
    parameters = dict(params)
    if pool:
        if parameters.get("pool", pool) != pool:
            fail(f"--pool {pool} and --param pool={parameters['pool']} disagree: give one")
        parameters["pool"] = pool
    modes = list(dict.fromkeys(mode.lower() for mode in access_modes)) or ["rwo"]
    access_type = "block" if block else "mount"
    with session(ctx) as client:
        capabilities = [volume_capability(ACCESS_MODES[mode], access_type) for mode in modes]
        if from_snapshot or from_volume:  # sharevol.cli.snapshot_cmd follows a background copy
            created = create_from_source(
                client, name, size or 0, capabilities, parameters, from_snapshot, from_volume
            )
        else:
            created = client.create_volume(name, size or 0, capabilities, parameters)
    quota = created.volume_context.get(QUOTA_CONTEXT_KEY)
    if quota == "enforced":
        enforcement = "quota enforced"
    elif quota == "not enforced":
        enforcement = "size not enforced"
    else:
        enforcement = "quota status not reported by the server"
    size_text = format_size(created.capacity_bytes)
    click.echo(f"volume {name} created: {created.volume_id}, {size_text}, {enforcement}")


@volume.command(name="list")
@click.option("-o", "--output", "output_format", type=_OUTPUT, default="table", show_default=True)
@click.pass_context
def list_volumes(ctx: click.Context, output_format: str) -> None:
    """List volumes with their usage, like `kubectl get pv`."""
    with session(ctx) as client:
        volumes = sorted(client.list_volumes(), key=lambda item: (item.name, item.volume_id))
    if output_format == "json":
        output.print_json([output.message_to_dict(item) for item in volumes])
        return
    if not volumes:
        click.echo("no volumes", err=True)
        return
    headers = ["NAME", "CAPACITY", "USED", "ACCESS MODES", "RECLAIM", "STATUS", "POOL", "AGE"]
    rows = [
        [
            item.name,
            output.format_capacity(item.capacity_bytes, item.quota_enforced),
            output.format_used(item.used_bytes),
            output.format_access_modes(item.access_modes),
            _reclaim(item),
            _status(item),
            item.pool,
            output.format_age(item.created_unix),
        ]
        for item in volumes
    ]
    output.print_table(headers, rows)


@volume.command()
@click.argument("name")
@click.option("-o", "--output", "output_format", type=_OUTPUT, default="table", show_default=True)
@click.pass_context
def get(ctx: click.Context, name: str, output_format: str) -> None:
    """Show everything the server knows about volume NAME."""
    with session(ctx) as client:
        info = client.get_volume(name=name)
    if output_format == "json":
        output.print_json(output.message_to_dict(info))
        return
    created = output.UNKNOWN
    if info.created_unix > 0:
        when = dt.datetime.fromtimestamp(info.created_unix, dt.UTC).isoformat()
        created = f"{when} ({output.format_age(info.created_unix)} ago)"
    parameters = ",".join(f"{key}={value}" for key, value in sorted(info.parameters.items()))
    output.print_key_values(
        [
            ("NAME", info.name),
            ("VOLUME ID", info.volume_id),
            ("POOL", info.pool),
            ("CAPACITY", output.format_capacity(info.capacity_bytes, info.quota_enforced)),
            ("USED", output.format_used(info.used_bytes)),
            ("ACCESS MODES", output.format_access_modes(info.access_modes)),
            ("ACCESS TYPE", info.access_type or "mount"),
            ("RECLAIM", _reclaim(info)),
            ("STATUS", _status(info)),
            ("CREATED", created),
            ("PATH", info.path or output.UNKNOWN),
            ("PUBLISHED AT", ",".join(info.published_targets) or "<none>"),
            ("PARAMETERS", parameters or "<none>"),
        ]
    )


@volume.command()
@click.argument("name")
@click.option("-o", "--output", "output_format", type=_OUTPUT, default="table", show_default=True)
@click.pass_context
def stats(ctx: click.Context, name: str, output_format: str) -> None:
    """Show the usage of volume NAME, as its quota counts it."""
    with session(ctx) as client:
        info = client.get_volume(name=name)
    known = info.used_bytes >= 0
    available = max(info.capacity_bytes - info.used_bytes, 0) if known else -1
    if output_format == "json":
        output.print_json(
            {
                "name": info.name,
                "volume_id": info.volume_id,
                "capacity_bytes": info.capacity_bytes,
                "used_bytes": info.used_bytes,
                "available_bytes": available,
                "used_inodes": info.used_inodes,
                "quota_enforced": info.quota_enforced,
                "pool": info.pool,
                "path": info.path,
            }
        )
        return
    output.print_key_values(
        [
            ("CAPACITY", format_size(info.capacity_bytes)),
            ("USED", output.format_used(info.used_bytes)),
            ("AVAILABLE", format_size(available) if known else output.UNKNOWN),
            ("USED INODES", str(info.used_inodes)),
            ("QUOTA", _quota_text(info.quota_enforced)),
            ("POOL", info.pool),
            ("PATH", info.path or output.UNKNOWN),
        ]
    )


@volume.command()
@click.argument("name")
@click.option("--size", type=Size(), required=True, help="The new capacity: 2Gi, 500Mi, ...")
@click.pass_context
def expand(ctx: click.Context, name: str, size: int) -> None:
    """Grow volume NAME online (CSI ControllerExpandVolume, then NodeExpandVolume where it is
    mounted on this machine). Volumes never shrink."""
    with session(ctx) as client:
        info = client.get_volume(name=name)
        if size < info.capacity_bytes:
            fail(
                f"volume {name} is already {format_size(info.capacity_bytes)}; "
                "sharevol never shrinks a volume"
            )
        expanded = client.expand_volume(info.volume_id, size)
        what = "device" if info.access_type == "block" else "filesystem"
        note = ""
        if expanded.node_expansion_required:
            note = f"; its {what} grows when the volume is next mounted"
            try:
                mounts = [p for p in client.list_publications() if p.volume_id == info.volume_id]
            except ClientError:
                mounts = []  # a controller-only server: nothing is mounted through it
            if mounts:
                try:
                    client.node_expand_volume(
                        info.volume_id,
                        mounts[0].target_path,
                        mounts[0].staging_path,
                        expanded.capacity_bytes,
                        recorded_capability(info),
                    )
                    note = f"; its {what} grew online"
                except ClientError as error:
                    note += f" ({error})"
    click.echo(f"volume {name} expanded to {format_size(expanded.capacity_bytes)}{note}")


@volume.command()
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete volume NAME (CSI DeleteVolume); its reclaim policy decides what happens to data."""
    with session(ctx) as client:
        info = client.get_volume(name=name)
        client.delete_volume(info.volume_id)
    effect = _RECLAIM_EFFECT.get(info.on_delete, f"reclaim policy {info.on_delete!r} applied")
    click.echo(f"volume {name} deleted ({info.volume_id}): {effect}")


volume.add_command(mount)
volume.add_command(unmount)
