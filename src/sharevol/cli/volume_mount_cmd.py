"""`sharevol volume mount|unmount`: mount a volume on this machine the way a CO's node side
would (NodeStageVolume, then NodePublishVolume) and undo it. The `volume` group
(sharevol.cli.volume_cmd) adds these commands.
"""

from __future__ import annotations

import os

import click

from sharevol.cli.client import ClientError, SharevolClient, volume_capability
from sharevol.cli.common import Command, fail
from sharevol.cli.session import session
from sharevol.csi._proto import admin_pb2, csi_pb2

_READER_ONLY = (
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY,
    csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY,
)


def staging_path(socket: str, volume_id: str) -> str:
    """Where the CLI, acting as the CO, stages a volume: next to the server's socket."""
    name = volume_id.replace("/", "-")
    if name in ("", ".", "..") or "\0" in name:
        raise ClientError(f"server returned volume ID {volume_id!r}, unusable as a directory")
    return os.path.join(os.path.dirname(socket), "staging", name)


def recorded_capability(volume: admin_pb2.VolumeInfo) -> csi_pb2.VolumeCapability:
    """The capability to mount or expand a volume with: the first access mode it was created
    for, and its access type."""
    if not volume.access_modes:
        raise ClientError(f"volume {volume.name!r} has no access mode recorded on the server")
    return volume_capability(volume.access_modes[0], volume.access_type)


@click.command(cls=Command)
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=True, file_okay=True))
@click.option("--readonly", is_flag=True, help="Mount read-only.")
@click.pass_context
def mount(ctx: click.Context, name: str, path: str, readonly: bool) -> None:
    """Mount volume NAME at PATH on this machine (CSI NodeStage, then NodePublish)."""
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        fail(f"cannot mount at {target}: its parent directory {parent} does not exist")
    _check_target_is_free(target)
    with session(ctx) as client:
        info = client.get_volume(name=name)
        capability = recorded_capability(info)
        # A reader-only volume is mounted read-only whether or not --readonly was given.
        readonly = readonly or capability.access_mode.mode in _READER_ONLY
        stage = staging_path(client.path, info.volume_id)
        was_staged = any(p.volume_id == info.volume_id for p in client.list_publications())
        # The CO creates the staging directory; the SP mounts on it (CSI NodeStageVolume).
        os.makedirs(stage, mode=0o750, exist_ok=True)
        try:
            client.node_stage_volume(info.volume_id, stage, capability)
            client.node_publish_volume(info.volume_id, target, stage, capability, readonly)
        except ClientError:
            if not was_staged:
                _undo_stage(client, info.volume_id, stage)
            raise
    mode = "read-only" if readonly else "read-write"
    click.echo(f"volume {name} mounted at {target} ({mode}), staged at {stage}")


def _check_target_is_free(target: str) -> None:
    """Mount only on a new path or an empty directory (or an empty file, for block volumes):
    a mount over `/etc` or a folder with files would hide them, and unmount would then refuse
    to remove the folder."""
    if os.path.islink(target):
        fail(f"cannot mount at {target}: it is a symlink")
    if not os.path.lexists(target):
        return
    if os.path.ismount(target):
        return  # already a mount: the server answers OK (same volume) or ALREADY_EXISTS
    if os.path.isdir(target):
        if os.listdir(target):
            fail(
                f"cannot mount at {target}: the directory is not empty (its files would be hidden)"
            )
        return
    if os.path.isfile(target) and os.path.getsize(target) == 0:
        return
    fail(f"cannot mount at {target}: it exists and is not an empty directory")


def _undo_stage(client: SharevolClient, volume_id: str, stage: str) -> None:
    """Best effort: a failed first mount should not leave a staged volume nobody can unmount."""
    try:
        client.node_unstage_volume(volume_id, stage)
        os.rmdir(stage)
    except (ClientError, OSError) as error:
        click.echo(f"warning: volume {volume_id} stays staged at {stage}: {error}", err=True)


@click.command(cls=Command)
@click.argument("path", type=click.Path())
@click.pass_context
def unmount(ctx: click.Context, path: str) -> None:
    """Unmount the volume mounted at PATH; unstage it when no other mount uses it."""
    target = os.path.abspath(path)
    candidates = {target, os.path.realpath(target)}
    with session(ctx) as client:
        found = [
            publication
            for publication in client.list_publications()
            if os.path.normpath(publication.target_path) in candidates
        ]
        if not found:
            staged = _staged_volume(client, target)
            if staged is None:
                fail(f"no sharevol volume is mounted at {target}")
            client.node_unstage_volume(staged, target)
            _remove_staging_dir(target)
            click.echo(f"unstaged {staged} from {target}")
            return
        publication = found[0]
        volume_id = publication.volume_id
        client.node_unpublish_volume(volume_id, publication.target_path)
        others = [p for p in client.list_publications() if p.volume_id == volume_id]
        if others:
            click.echo(f"unmounted {target} ({volume_id}); it stays mounted at {len(others)} more")
            return
        stage = publication.staging_path or staging_path(client.path, volume_id)
        client.node_unstage_volume(volume_id, stage)
        ours = os.path.dirname(stage) == os.path.join(os.path.dirname(client.path), "staging")
    message = f"unmounted {target} ({volume_id}) and unstaged it"
    if ours:
        _remove_staging_dir(stage)
    click.echo(message)


def _staged_volume(client: SharevolClient, path: str) -> str | None:
    """The volume staged (but no longer published) at one of the CLI's own staging paths, as
    `sharevol up` lists them when it cannot detach its pool."""
    staging_dir = os.path.join(os.path.dirname(client.path), "staging")
    if os.path.dirname(path) != staging_dir or not os.path.ismount(path):
        return None
    pool, separator, uuid = os.path.basename(path).rpartition("-")
    return f"{pool}/{uuid}" if separator and pool and uuid else None


def _remove_staging_dir(stage: str) -> None:
    try:
        os.rmdir(stage)
    except FileNotFoundError:
        pass
    except OSError as error:
        click.echo(f"warning: left staging directory {stage}: {error.strerror}", err=True)
