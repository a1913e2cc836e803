"""`sharevol up`: the all-in-one machine. Attach the embedded pool, serve every CSI service on a
unix socket under the state dir, and on Ctrl-C/SIGTERM stop and detach, keeping the data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import click
import yaml

from sharevol.cli.common import Command, Size, fail
from sharevol.cli.logs import LOG_FORMATS, configure_logging
from sharevol.cli.nfs_option import NfsListen, nfs_config
from sharevol.cli.signals import StopSignals
from sharevol.csi.server import EndpointLock, build_server
from sharevol.errors import SharevolError
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from sharevol.service.embedded import EmbeddedPool, EmbeddedResult
from sharevol.service.embedded_fs import FS_NAMES, FsName
from sharevol.sys.runner import SubprocessRunner
from sharevol.units import format_size

POOL_NAME = "default"
STOP_GRACE = 5.0
EMBEDDED_OVERCOMMIT = 10.0
"""A 10 GiB playground pool takes, say, csi-sanity's several 10 GiB test volumes at once."""
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
    "--overcommit",
    type=click.FloatRange(0.1, 100.0),
    default=EMBEDDED_OVERCOMMIT,
    show_default=True,
    help="Volume sizes may add up to the pool size times this. The embedded pool is thin "
    "(sparse image, quota limits), so it promises more than it holds; 1 gives strict accounting.",
)
@click.option(
    "--fs",
    type=click.Choice(FS_NAMES),
    default=None,
    help="Filesystem of a new pool image: btrfs (qgroups), or xfs / ext4 (project quotas, where "
    "the kernel supports them; else btrfs, saying why). Default: the existing image's, or btrfs.",
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
@click.option(
    "--nfs",
    "nfs_listen",
    type=NfsListen(),
    default=None,
    help="Also serve every volume over NFSv4.1 (NFS-Ganesha) on ADDRESS[:PORT], for example "
    "127.0.0.1:20490; each volume is the export /default/<directory>.",
)
@click.option(
    "--nfs-clients",
    default="",
    metavar="LIST",
    help="Comma-separated addresses or CIDR networks that may mount every export "
    "(default: the --nfs address when it is loopback).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="text lines, or JSON lines (time, level, logger, message, RPC fields).",
)
@click.option(
    "--metrics-address",
    default="",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics over HTTP there, for example 127.0.0.1:9808 (default: off).",
)
def up(
    state_dir: Path,
    size: int,
    node_id: str,
    log_level: str,
    nfs_listen: tuple[str, int] | None,
    nfs_clients: str,
    log_format: str,
    metrics_address: str,
    fs: FsName | None = None,
    overcommit: float = 10.0,
) -> None:
    """Run sharevol on this machine: one pool, every CSI service, until Ctrl-C."""
    configure_logging(log_level, log_format)
    state_dir = state_dir.absolute()
    endpoint = f"unix://{state_dir / 'csi.sock'}"
    if len(str(state_dir / "csi.sock").encode()) > _MAX_SOCKET_PATH:
        fail(f"{state_dir}/csi.sock is too long for a unix socket: use a shorter --state-dir")

    try:
        # First: a second `up` on this state dir stops here, before it touches the pool.
        endpoint_lock = EndpointLock(state_dir / "csi.sock")
        pool = EmbeddedPool(state_dir, size, SubprocessRunner(), fs=fs)
        result = pool.attach()
        config = _write_pools_yaml(
            state_dir / "pools.yaml", result, nfs_config(nfs_listen, nfs_clients), overcommit
        )
        server = build_server(
            config,
            endpoint=endpoint,
            node_id=node_id,
            mode="all",
            state_dir=state_dir,
            metrics_address=metrics_address or None,
            endpoint_lock=endpoint_lock,
        )
    except SharevolError as exc:
        # The pool stays as it is: another `up` on this state dir may be using it.
        fail(str(exc))

    _print_pool(result)
    with StopSignals() as stop:
        try:
            server.start()
        except SharevolError as exc:
            server.stop(STOP_GRACE)
            fail(f"{exc} (the pool stays attached at {result.path})")
        _print_next_steps(endpoint, node_id)
        if server.metrics is not None:
            click.echo(
                f"sharevol up: Prometheus metrics at http://{server.metrics.url_host}/metrics"
            )
        if config.nfs is not None:
            _print_nfs(config.nfs)
        signum = stop.wait()
        # Signals stay caught until the pool is detached: a second Ctrl-C must not cut it short.
        click.echo(f"\nsharevol up: {signal.Signals(signum).name}: stopping the server")
        server.stop(STOP_GRACE)
        _detach(pool, result)


def _write_pools_yaml(
    path: Path,
    result: EmbeddedResult,
    nfs: NfsConfig | None = None,
    overcommit: float = 1.0,
) -> ServerConfig:
    """The config `sharevol serve --config` would read for this pool; written for reuse."""
    config = ServerConfig(
        pools=(
            PoolConfig(name=POOL_NAME, path=result.path, kind=result.kind, overcommit=overcommit),
        ),
        default_pool=POOL_NAME,
        nfs=nfs,
    )
    text = "# Written by `sharevol up`; `sharevol serve --config` reads the same format.\n"
    written = config.model_dump(mode="json", exclude={"nfs"} if nfs is None else None)
    text += yaml.safe_dump(written, sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return config


def _print_pool(result: EmbeddedResult) -> None:
    for note in result.notes:
        click.echo(f"sharevol up: {note}")
    if result.kind != "plain":
        size = format_size(result.size_bytes or 0)
        quotas = "quotas on" if result.kind == "btrfs" else "project quotas on"
        click.echo(
            f'sharevol up: pool "{POOL_NAME}": {result.kind} at {result.path} '
            f"({size} image on {result.device}, {quotas})"
        )
        if result.requested is not None:
            _print_not_requested(result)
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


def _print_not_requested(result: EmbeddedResult) -> None:
    """Say loudly that the pool is not the filesystem `--fs` asked for, and why."""
    banner = "!" * 78
    for line in (
        banner,
        f"sharevol up: asked for an {result.requested} pool; made {result.kind} instead",
        f"  why: {result.fallback_reason}",
        "  volume sizes ARE enforced (btrfs qgroups); run on a kernel with "
        f"{result.requested} quota support for an {result.requested} pool.",
        banner,
    ):
        click.secho(line, fg="yellow", bold=True, err=True)


def _print_nfs(nfs: NfsConfig) -> None:
    host = f"[{nfs.mount_address}]" if ":" in nfs.mount_address else nfs.mount_address
    click.echo(
        f"\nNFS: every volume is exported by NFS-Ganesha on {nfs.bind} port {nfs.port} to "
        f"{', '.join(nfs.clients) or 'published nodes only'}, as /{POOL_NAME}/<directory>:\n"
        f"  mount -t nfs4 -o vers=4.1,port={nfs.port} {host}:/{POOL_NAME}/DIRECTORY /mnt/data"
    )


def _short_path(path: str) -> str:
    """`.venv/bin/sharevol` from the clone; the absolute path from anywhere else."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith("..") else relative


def _print_next_steps(endpoint: str, node_id: str) -> None:
    prog = "sharevol" if shutil.which("sharevol") else _short_path(sys.argv[0])
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
    if result.kind != "plain":
        click.echo(f"sharevol up: pool unmounted; data kept in {pool.image}")
    else:
        click.echo(f"sharevol up: stopped; data kept in {result.path}")
