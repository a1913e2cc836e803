"""`sharevol up`: the all-in-one machine. Attach the embedded pool, serve every CSI service on a
unix socket under the state dir, and on Ctrl-C/SIGTERM stop and detach, keeping the data."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import click
import yaml

from sharevol.cli.common import Command, Size, fail
from sharevol.cli.signals import StopSignals
from sharevol.csi.server import build_server
from sharevol.errors import SharevolError
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.service.embedded import EmbeddedPool, EmbeddedResult
from sharevol.sys.runner import SubprocessRunner
from sharevol.units import format_size

POOL_NAME = "default"
STOP_GRACE = 5.0
_MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path holds 108 bytes with the NUL


@click.command(cls=Command)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".sharevol"),
    show_default=True,
    help="Where the pool image, its mount, pools.yaml and csi.sock live.",
)
@click.option(
    "--size",
    type=Size(),
    default="10Gi",
    show_default=True,
    help="Size of the pool image; a bigger size grows an existing pool, it never shrinks.",
)
@click.option(
    "--node-id", default=socket.gethostname, show_default="hostname", help="This node's ID."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
)
def up(state_dir: Path, size: int, node_id: str, log_level: str) -> None:
    """Run sharevol on this machine: one pool, every CSI service, until Ctrl-C."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    state_dir = state_dir.absolute()
    endpoint = f"unix://{state_dir / 'csi.sock'}"
    if len(str(state_dir / "csi.sock").encode()) > _MAX_SOCKET_PATH:
        fail(f"{state_dir}/csi.sock is too long for a unix socket: use a shorter --state-dir")

    try:
        pool = EmbeddedPool(state_dir, size, SubprocessRunner())
        result = pool.attach()
        config = _write_pools_yaml(state_dir / "pools.yaml", result)
        server = build_server(
            config, endpoint=endpoint, node_id=node_id, mode="all", state_dir=state_dir
        )
    except SharevolError as exc:
        # The pool stays as it is: another `up` on this state dir may be using it.
        fail(str(exc))

    _print_pool(result)
    with StopSignals() as stop:
        server.start()
        _print_next_steps(endpoint, node_id)
        signum = stop.wait()
        # Signals stay caught until the pool is detached: a second Ctrl-C must not cut it short.
        click.echo(f"\nsharevol up: {signal.Signals(signum).name}: stopping the server")
        server.stop(STOP_GRACE)
        _detach(pool, result)


def _write_pools_yaml(path: Path, result: EmbeddedResult) -> ServerConfig:
    """The config `sharevol serve --config` would read for this pool; written for reuse."""
    config = ServerConfig(
        pools=(PoolConfig(name=POOL_NAME, path=result.path, kind=result.kind),),
        default_pool=POOL_NAME,
    )
    text = "# Written by `sharevol up`; `sharevol serve --config` reads the same format.\n"
    text += yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return config


def _print_pool(result: EmbeddedResult) -> None:
    for note in result.notes:
        click.echo(f"sharevol up: {note}")
    if result.kind == "btrfs":
        size = format_size(result.size_bytes or 0)
        click.echo(
            f'sharevol up: pool "{POOL_NAME}": btrfs at {result.path} '
            f"({size} image on {result.device}, quotas on)"
        )
        return
    banner = "!" * 78
    click.secho(banner, fg="red", bold=True, err=True)
    click.secho(
        f'sharevol up: pool "{POOL_NAME}" is a PLAIN DIRECTORY at {result.path}',
        fg="red",
        bold=True,
        err=True,
    )
    click.secho(f"  why: {result.fallback_reason}", fg="red", bold=True, err=True)
    click.secho(
        "  volume sizes are NOT enforced and snapshots are full copies.\n"
        "  For quotas, run as root with btrfs-progs installed (./scripts/up does both).",
        fg="red",
        err=True,
    )
    click.secho(banner, fg="red", bold=True, err=True)


def _print_next_steps(endpoint: str, node_id: str) -> None:
    prog = "sharevol" if shutil.which("sharevol") else os.path.relpath(sys.argv[0])
    click.echo(f"sharevol up: serving CSI identity, controller and node on {endpoint}")
    click.echo(f"sharevol up: node id {node_id}")
    click.echo("\nTry, in another terminal:")
    if Path(".sharevol/csi.sock").absolute() != Path(endpoint[len("unix://") :]):
        click.echo(f"  export SHAREVOL_ENDPOINT={endpoint}")
    for command in (
        "volume create data --size 1Gi --access-mode rwx",
        "volume list",
        "volume mount data /mnt/data",
        "volume stats data",
        "volume unmount /mnt/data",
        "volume delete data",
    ):
        click.echo(f"  {prog} {command}")
    click.echo("\nCtrl-C stops the server and unmounts the pool; the data stays for the next `up`.")


def _detach(pool: EmbeddedPool, result: EmbeddedResult) -> None:
    """Unmount the pool, unless volumes are still mounted from it: users' mounts are left alone."""
    users = pool.users()
    if users:
        click.secho(
            f"sharevol up: the pool stays mounted at {result.path}: volumes are still mounted at",
            fg="yellow",
            bold=True,
            err=True,
        )
        for target in users:
            click.secho(f"  {target}", fg="yellow", err=True)
        click.secho(
            "  Start `sharevol up` again and `sharevol volume unmount PATH` each of them\n"
            "  (or umount them), then stop it again.",
            fg="yellow",
            err=True,
        )
        sys.exit(1)
    try:
        pool.detach()
    except SharevolError as exc:
        fail(f"could not detach the pool: {exc}")
    if result.kind == "btrfs":
        click.echo(f"sharevol up: pool unmounted; data kept in {pool.image}")
    else:
        click.echo(f"sharevol up: stopped; data kept in {result.path}")
