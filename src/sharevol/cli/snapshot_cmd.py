"""`sharevol snapshot create|list|get|delete`: the calls the external-snapshotter would make.

Snapshots are named like volumes (the CSI name) and looked up by name through the Admin service.
On btrfs and reflink pools a snapshot is ready at once; elsewhere the server copies in the
background and `create` follows the copy with a progress bar (or returns at once with
`--no-wait`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import click
import grpc

from sharevol.cli import output
from sharevol.cli.client import ClientError, SharevolClient
from sharevol.cli.common import Group
from sharevol.cli.progress import CopyState, follow_copy
from sharevol.cli.session import Settings, server_options, session
from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.units import format_size

__all__ = ["create_from_source", "snapshot"]

_OUTPUT = click.Choice(["table", "json"])
_METHOD_TEXT = {
    "btrfs": "btrfs snapshot",
    "reflink": "reflink copy",
    "copy": "full copy, made in the background",
}


@click.group(cls=Group)
@server_options
@click.pass_context
def snapshot(ctx: click.Context, endpoint: str, timeout: float) -> None:
    """Snapshot volumes, list and delete snapshots; restore one with `volume create
    --from-snapshot`."""
    ctx.obj = Settings(endpoint=endpoint, timeout=timeout)


@snapshot.command()
@click.argument("name")
@click.option("--volume", "volume_name", required=True, help="The volume to snapshot.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow a background copy until the snapshot is ready.",
)
@click.pass_context
def create(ctx: click.Context, name: str, volume_name: str, wait: bool) -> None:
    """Snapshot volume VOLUME as NAME (CSI CreateSnapshot; running it again is safe)."""
    with session(ctx) as client:
        source = client.get_volume(name=volume_name)
        made = client.create_snapshot(name, source.volume_id)
        if not made.ready_to_use and wait:

            def step() -> CopyState[csi_pb2.Snapshot]:
                again = client.create_snapshot(name, source.volume_id)
                if again.ready_to_use:
                    return CopyState(again)
                info = client.get_snapshot(name=name)
                return CopyState(None, info.copied_bytes, info.copy_total_bytes)

            made = follow_copy(
                f"copying {volume_name}", step, f"run `sharevol snapshot create {name} "
                f"--volume {volume_name}` again to follow it"
            )  # fmt: skip
        info = client.get_snapshot(snapshot_id=made.snapshot_id)
    how = _METHOD_TEXT.get(info.method, info.method)
    if made.ready_to_use:
        click.echo(
            f"snapshot {name} of volume {volume_name} ready: {made.snapshot_id}, "
            f"{format_size(made.size_bytes)} ({how})"
        )
    else:
        click.echo(
            f"snapshot {name} of volume {volume_name} created: {made.snapshot_id}, being "
            f"copied in the background; `sharevol snapshot list` shows when it is ready"
        )


@snapshot.command(name="list")
@click.option("-o", "--output", "output_format", type=_OUTPUT, default="table", show_default=True)
@click.pass_context
def list_snapshots(ctx: click.Context, output_format: str) -> None:
    """List snapshots, like `kubectl get volumesnapshotcontent`."""
    with session(ctx) as client:
        snapshots = sorted(client.list_snapshots(), key=lambda s: (s.name, s.snapshot_id))
    if output_format == "json":
        output.print_json([output.message_to_dict(item) for item in snapshots])
        return
    if not snapshots:
        click.echo("no snapshots", err=True)
        return
    headers = ["NAME", "SOURCE VOLUME", "RESTORE SIZE", "DATA", "METHOD", "READY", "POOL", "AGE"]
    rows = [
        [
            item.name,
            item.source_volume_name or f"<deleted> {item.source_volume_id}",
            format_size(item.size_bytes),
            format_size(item.data_bytes) if item.ready_to_use else "-",
            item.method,
            _readiness(item),
            item.pool,
            output.format_age(item.created_unix),
        ]
        for item in snapshots
    ]
    output.print_table(headers, rows)


@snapshot.command()
@click.argument("name")
@click.option("-o", "--output", "output_format", type=_OUTPUT, default="table", show_default=True)
@click.pass_context
def get(ctx: click.Context, name: str, output_format: str) -> None:
    """Show everything the server knows about snapshot NAME."""
    with session(ctx) as client:
        info = client.get_snapshot(name=name)
    if output_format == "json":
        output.print_json(output.message_to_dict(info))
        return
    created = dt.datetime.fromtimestamp(info.created_unix, dt.UTC).isoformat()
    output.print_key_values(
        [
            ("NAME", info.name),
            ("SNAPSHOT ID", info.snapshot_id),
            ("SOURCE VOLUME", info.source_volume_name or "<deleted>"),
            ("SOURCE VOLUME ID", info.source_volume_id),
            ("RESTORE SIZE", format_size(info.size_bytes)),
            ("DATA", format_size(info.data_bytes) if info.ready_to_use else "-"),
            ("METHOD", _METHOD_TEXT.get(info.method, info.method)),
            ("READY", _readiness(info)),
            ("POOL", info.pool),
            ("CREATED", f"{created} ({output.format_age(info.created_unix)} ago)"),
            ("PATH", info.path or output.UNKNOWN),
        ]
    )


@snapshot.command()
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete snapshot NAME (CSI DeleteSnapshot); volumes restored from it are not touched."""
    with session(ctx) as client:
        info = client.get_snapshot(name=name)
        client.delete_snapshot(info.snapshot_id)
    click.echo(f"snapshot {name} deleted ({info.snapshot_id})")


def create_from_source(
    client: SharevolClient,
    name: str,
    required_bytes: int,
    capabilities: Sequence[csi_pb2.VolumeCapability],
    parameters: Mapping[str, str],
    from_snapshot: str,
    from_volume: str,
) -> csi_pb2.Volume:
    """`volume create --from-snapshot | --from-volume`: CreateVolume with a content source,
    called again while the server answers ABORTED (a background copy), with a progress bar."""
    source = csi_pb2.VolumeContentSource()
    if from_snapshot:
        source.snapshot.snapshot_id = client.get_snapshot(name=from_snapshot).snapshot_id
    else:
        source.volume.volume_id = client.get_volume(name=from_volume).volume_id
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=required_bytes),
        volume_capabilities=list(capabilities),
        parameters=dict(parameters),
        volume_content_source=source,
    )

    def step() -> CopyState[csi_pb2.Volume]:
        try:
            return CopyState(client.create_volume_from(request))
        except ClientError as error:
            if error.code is not grpc.StatusCode.ABORTED:
                raise
        try:
            info = client.get_volume(name=name)
        except ClientError:  # not reserved yet (the source snapshot is still being copied)
            return CopyState()
        return CopyState(None, info.copied_bytes, info.copy_total_bytes)

    origin = f"snapshot {from_snapshot}" if from_snapshot else f"volume {from_volume}"
    return follow_copy(
        f"copying {origin}", step, "run the same `sharevol volume create` again to follow it"
    )


def _readiness(info: admin_pb2.SnapshotInfo) -> str:
    if info.ready_to_use:
        return "true"
    if info.copy_total_bytes:
        return f"false ({100 * info.copied_bytes // info.copy_total_bytes}% copied)"
    return "false (copying)"
