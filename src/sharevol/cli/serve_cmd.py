"""`sharevol serve`: the CSI server as Kubernetes runs it (controller, node, or both)."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import click

from sharevol.cli.logs import LOG_FORMATS, configure_logging
from sharevol.cli.signals import StopSignals
from sharevol.csi.server import MODES, build_server
from sharevol.errors import SharevolError
from sharevol.pools.config import load_config
from sharevol.sys.nfs_mount import MOUNT_TIMEOUT


@click.command()
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="all",
    envvar="SHAREVOL_MODE",
    show_default=True,
    help="Which CSI services to serve.",
)
@click.option(
    "--endpoint",
    envvar="CSI_ENDPOINT",
    default="unix:///run/sharevol/csi.sock",
    show_default=True,
    help="unix:///path/to/csi.sock",
)
@click.option(
    "--node-id",
    envvar="NODE_ID",
    default=socket.gethostname,
    show_default="hostname",
    help="This node's ID (Kubernetes: the node name).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SHAREVOL_CONFIG",
    required=True,
    help="pools.yaml",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="SHAREVOL_STATE_DIR",
    default=Path("/var/lib/sharevol"),
    show_default=True,
    help="Node-side records of stages and publications.",
)
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    envvar="SHAREVOL_LOG_FORMAT",
    default="text",
    show_default=True,
    help="text lines, or JSON lines (time, level, logger, message, RPC fields).",
)
@click.option(
    "--metrics-address",
    envvar="SHAREVOL_METRICS_ADDRESS",
    default="",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics over HTTP there, for example 0.0.0.0:9808 (default: off).",
)
@click.option(
    "--mount-timeout",
    type=click.FloatRange(min=1.0),
    envvar="SHAREVOL_MOUNT_TIMEOUT",
    default=MOUNT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Node: an NFS mount or unmount still running after this is killed (a dead server "
    "fails the call instead of hanging the plugin).",
)
def serve(
    mode: str,
    endpoint: str,
    node_id: str,
    config_path: Path,
    state_dir: Path,
    log_level: str,
    log_format: str,
    metrics_address: str,
    mount_timeout: float,
) -> None:
    """Serve the CSI Identity, Controller and/or Node services on a unix socket."""
    configure_logging(log_level, log_format)
    try:
        server = build_server(
            load_config(config_path),
            endpoint=endpoint,
            node_id=node_id,
            mode=mode,
            state_dir=state_dir,
            metrics_address=metrics_address or None,
            mount_timeout=mount_timeout,
        )
    except SharevolError as exc:
        raise click.ClickException(str(exc)) from exc
    with StopSignals() as stop:
        try:
            server.start()
        except SharevolError as exc:
            server.stop(grace=0)
            raise click.ClickException(str(exc)) from exc
        signum = stop.wait()
        logging.getLogger(__name__).info("%s: stopping", signal.Signals(signum).name)
        server.stop(grace=5.0)
