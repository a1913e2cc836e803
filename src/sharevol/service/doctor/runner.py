"""Run every registered check on every pool, apply the safe fixes, and check again.

With `fix`, each problem that carries a Fix is repaired (pools are started first, as the
server starts them), then every check runs again: a problem that is gone is reported FIXED, one
that remains stays a PROBLEM. The report therefore never claims a repair it did not verify.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from sharevol.errors import InvalidArgument, SharevolError
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.service.doctor.model import (
    CHECKS,
    DoctorContext,
    Finding,
    PoolCheck,
    PoolScan,
    RegisteredCheck,
)
from sharevol.service.doctor.repairs import ServiceRepairs
from sharevol.service.doctor.scan import open_pool, scan_pool
from sharevol.service.locate import PoolHandle

log = logging.getLogger(__name__)

Status = Literal["ok", "warning", "problem", "skipped", "fixed", "fix failed"]
STUCK_AFTER = dt.timedelta(minutes=15)
"""A create or delete whose record has not changed for this long is not in progress: the
external-provisioner retries within minutes, and every step rewrites the record."""


@dataclass(frozen=True)
class ReportLine:
    pool: str
    check: str
    status: Status
    subject: str
    message: str
    fix: str = ""
    """What `--fix` would do about this problem ("" when it is not safe to repair)."""


@dataclass(frozen=True)
class DoctorReport:
    lines: list[ReportLine]

    @property
    def problems(self) -> int:
        """Problems left (not fixed), the number that decides the exit code."""
        return sum(1 for line in self.lines if line.status in ("problem", "fix failed"))


def run_doctor(
    config: ServerConfig,
    *,
    state_dir: Path | None = None,
    fix: bool = False,
    stuck_after: dt.timedelta = STUCK_AFTER,
    pools: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> DoctorReport:
    """Check (and with `fix`, repair) the pools of `config`, or only those named in `pools`."""
    unknown = [name for name in pools if name not in {p.name for p in config.pools}]
    if unknown:
        raise InvalidArgument(f"unknown pool(s) {', '.join(unknown)} in the configuration")
    chosen = [p for p in config.pools if not pools or p.name in pools]
    opened = [(pool_config, *open_pool(pool_config)) for pool_config in chosen]
    handles = {pool_config.name: handle for pool_config, handle, _ in opened}
    repairs = ServiceRepairs(config, handles)
    try:
        first = _run(config, opened, state_dir, stuck_after, now, repairs)
        if not fix:
            return DoctorReport([_line(finding, finding.severity) for finding in first])
        failures = _apply_fixes(first, handles)
        second = _run(config, opened, state_dir, stuck_after, now, repairs)
        return DoctorReport(_merge(first, second, failures))
    finally:
        repairs.close()


def _run(
    config: ServerConfig,
    opened: list[tuple[PoolConfig, PoolHandle, str]],
    state_dir: Path | None,
    stuck_after: dt.timedelta,
    now: dt.datetime | None,
    repairs: ServiceRepairs,
) -> list[Finding]:
    context = DoctorContext(
        server=config,
        state_dir=state_dir,
        now=now or dt.datetime.now(dt.UTC),
        stuck_after=stuck_after,
        repairs=repairs,
    )
    for pool_config, handle, start_problem in opened:
        context.scans.append(scan_pool(pool_config, handle, start_problem, context))
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(_run_check(check, context))
    return findings


def _run_check(check: RegisteredCheck, context: DoctorContext) -> list[Finding]:
    if check.server_check is not None:
        server_check = check.server_check
        return _guarded(check, "-", lambda: list(server_check(context)))
    results: list[Finding] = []
    pool_check = check.pool_check
    assert pool_check is not None  # noqa: S101 - every check has one of the two
    for scan in context.scans:
        if not check.applies(scan):
            continue
        if check.needs_data and not scan.usable:
            results.append(Finding(check.name, scan.name, "ok", "", "skipped: pool unusable"))
            continue
        results.extend(_guarded(check, scan.name, partial(_listed, pool_check, scan)))
    return results


def _listed(check: PoolCheck, scan: PoolScan) -> list[Finding]:
    return list(check(scan))


def _guarded(check: RegisteredCheck, pool: str, run: Callable[[], list[Finding]]) -> list[Finding]:
    """The check's findings, an OK line when it found nothing, a problem when it failed."""
    try:
        found = run()
    except (SharevolError, OSError) as exc:
        log.debug("doctor check %s failed", check.name, exc_info=True)
        return [Finding(check.name, pool, "problem", "", f"the check failed: {exc}")]
    return found or [Finding(check.name, pool, "ok", "", check.title)]


def _apply_fixes(
    findings: list[Finding], handles: dict[str, PoolHandle]
) -> dict[tuple[str, str, str], str]:
    """Start the pools with something to fix, run each fix; returns failures by finding key."""
    failures: dict[tuple[str, str, str], str] = {}
    started: dict[str, str] = {}
    for finding in findings:
        if finding.severity != "problem" or finding.fix is None:
            continue
        if finding.pool not in started:
            started[finding.pool] = _start(handles.get(finding.pool))
        if started[finding.pool]:
            failures[finding.key] = f"cannot start the pool: {started[finding.pool]}"
            continue
        try:
            finding.fix.apply()
            log.info("doctor: %s: %s", finding.subject or finding.pool, finding.fix.description)
        except (SharevolError, OSError) as exc:
            failures[finding.key] = str(exc)
    return failures


def _start(handle: PoolHandle | None) -> str:
    if handle is None:
        return ""
    try:
        handle.pool.start()
    except SharevolError as exc:
        return str(exc)
    return ""


def _line(finding: Finding, status: Status, message: str = "") -> ReportLine:
    if finding.severity == "ok" and finding.message.startswith("skipped:"):
        status = "skipped"
    fix = finding.fix.description if finding.fix is not None and status == "problem" else ""
    return ReportLine(
        finding.pool, finding.check, status, finding.subject, message or finding.message, fix
    )


def _merge(
    first: list[Finding], second: list[Finding], failures: dict[tuple[str, str, str], str]
) -> list[ReportLine]:
    """The second run's lines, with the first run's fixed problems in place of the OK lines of
    their check, and the failed fixes said as such."""
    remaining = {f.key for f in second if f.severity == "problem"}
    fixed: dict[tuple[str, str], list[ReportLine]] = {}
    for finding in first:
        if finding.severity != "problem" or finding.fix is None:
            continue
        if finding.key in failures:
            continue
        if finding.key not in remaining:
            line = _line(finding, "fixed", f"{finding.message}; fixed: {finding.fix.description}")
            fixed.setdefault((finding.check, finding.pool), []).append(line)
    lines: list[ReportLine] = []
    for finding in second:
        group = (finding.check, finding.pool)
        if finding.key in failures and finding.severity == "problem":
            message = f"{finding.message}; the fix failed: {failures[finding.key]}"
            lines.append(_line(finding, "fix failed", message))
        elif not (finding.severity == "ok" and fixed.get(group)):
            lines.append(_line(finding, finding.severity))
        lines.extend(fixed.pop(group, []))
    for rest in fixed.values():
        lines.extend(rest)
    return lines
