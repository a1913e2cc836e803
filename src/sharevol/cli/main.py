"""Entry point of the `sharevol` console script."""

from __future__ import annotations

import click

from sharevol import __version__
from sharevol.cli import doctor_cmd, gc_cmd, serve_cmd, snapshot_cmd, up_cmd, volume_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sharevol")
def cli() -> None:
    """sharevol: Kubernetes persistent volumes out of shared file storage."""


cli.add_command(serve_cmd.serve)
cli.add_command(up_cmd.up)
cli.add_command(volume_cmd.volume)
cli.add_command(snapshot_cmd.snapshot)
cli.add_command(gc_cmd.gc)
cli.add_command(doctor_cmd.doctor)


def main() -> None:
    cli()
