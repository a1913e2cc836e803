"""`sharevol doctor [--fix]`: check the pools of a pools.yaml and their catalogs, offline.

Doctor reads the pools directly (no server needed: it is most useful when the server cannot
start), scanning each under its pool lock. It exits 1 while problems remain. `--fix` repairs
only what is safe and says what it did; data that no record owns is reported, never deleted.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from sharevol.cli import output
from sharevol.cli.common import Command, fail
from sharevol.cli.gc_cmd import Duration
from sharevol.errors import SharevolError
from sharevol.pools.config import load_config
from sharevol.service.doctor import STUCK_AFTER, DoctorReport, run_doctor

__all__ = ["doctor"]

UP_CONFIG = Path(".sharevol/pools.yaml")
"""What `sharevol up` writes; doctor's default config, with `.sharevol` as the state dir."""
SERVE_STATE_DIR = Path("/var/lib/sharevol")
"""`sharevol serve`'s default state dir, where the NFS runtime folder is."""

_STATUS = {
    "ok": "OK",
    "warning": "WARNING",
    "problem": "PROBLEM",
    "skipped": "SKIPPED",
    "fixed": "FIXED",
    "fix failed": "FIX FAILED",
}


@click.command(cls=Command)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SHAREVOL_CONFIG",
    default=None,
    help="The pools.yaml the server runs with (default: .sharevol/pools.yaml of `sharevol up`).",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="SHAREVOL_STATE_DIR",
    default=None,
    help="The server's state dir, for its NFS exports (default: the one of the config's server).",
)
@click.option("--fix", is_flag=True, help="Repair what is safe to repair, then check again.")
@click.option("--pool", "pools", multiple=True, help="Only this pool; repeat for several.")
@click.option(
    "--stuck-after",
    type=Duration(),
    default=f"{int(STUCK_AFTER.total_seconds()) // 60}m",
    show_default=True,
    help="A create or delete unchanged for this long is stuck, not in progress.",
)
@click.option(
    "-o", "--output", "output_format", type=click.Choice(["table", "json"]), default="table"
)
def doctor(
    config_path: Path | None,
    state_dir: Path | None,
    fix: bool,
    pools: tuple[str, ...],
    stuck_after: int,
    output_format: str,
) -> None:
    """Check each pool, its catalog against its data, and the NFS exports; exit 1 on problems.

    \b
    Pools: filesystem, quotas, snapshot method, folders, free space.
    Volumes: data without a record, records without data, creates or deletes left half done,
    qgroup limits that differ from the record, stale qgroups (btrfs); project IDs and limits
    that differ from the record, shared or unrecorded project IDs (XFS, ext4).
    Snapshots and NFS exports: the same, for their records; with a running managed NFS
    server, what Ganesha serves against the records.

    --fix repairs only what is safe: it sets limits again, finishes stuck records the way a CO
    retry would, drops stale qgroups, creates missing folders, gives a volume folder its
    recorded project ID back when nothing else holds it, and removes live exports whose volume
    record is gone or re-adds missing ones. It never deletes data that no
    record owns. Run it with the controller stopped, or while the COs are quiet (the
    NFS export repairs need the controller running)."""
    if config_path is None:
        if not UP_CONFIG.is_file():
            fail("give --config pools.yaml (no .sharevol/pools.yaml here from `sharevol up`)")
        config_path = UP_CONFIG
        state_dir = state_dir or UP_CONFIG.parent
    if state_dir is None and SERVE_STATE_DIR.is_dir():
        state_dir = SERVE_STATE_DIR
    try:
        report = run_doctor(
            load_config(config_path),
            state_dir=state_dir.absolute() if state_dir is not None else None,
            fix=fix,
            stuck_after=dt.timedelta(seconds=stuck_after),
            pools=pools,
        )
    except SharevolError as exc:
        fail(str(exc))
    if output_format == "json":
        output.print_json([line.__dict__ for line in report.lines])
    else:
        _print(report, fix)
    if report.problems:
        raise click.exceptions.Exit(1)


def _print(report: DoctorReport, fixed: bool) -> None:
    rows = []
    for line in report.lines:
        details = line.message
        if line.fix:
            details += f" [--fix: {line.fix}]"
        rows.append([line.pool, line.check, _STATUS[line.status], line.subject or "-", details])
    output.print_table(["POOL", "CHECK", "STATUS", "SUBJECT", "DETAILS"], rows)
    problems = report.problems
    warnings = sum(1 for line in report.lines if line.status == "warning")
    repaired = sum(1 for line in report.lines if line.status == "fixed")
    fixable = sum(1 for line in report.lines if line.fix)
    summary = f"\n{problems} problem(s), {warnings} warning(s)"
    if fixed:
        summary += f", {repaired} fixed"
    elif fixable:
        summary += f"; `sharevol doctor --fix` repairs {fixable} of them"
    if problems > (0 if fixed else fixable):
        summary += "; the others need a decision: see DETAILS"
    click.echo(summary)
