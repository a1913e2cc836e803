"""Read the guest's junit.xml: which tests failed, by name, for the host's assertion message."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def failed_tests(junit: Path) -> list[str]:
    """`tests.vm.module[.Class]::test [failure]: first message line` per failed/errored case."""
    try:
        tree = ET.parse(junit)  # noqa: S314 (our own guest wrote it, not an untrusted party)
    except ET.ParseError as exc:
        return [f"(unreadable {junit.name}: {exc})"]
    failed: list[str] = []
    for case in tree.iter("testcase"):
        for kind in ("failure", "error"):
            problem = case.find(kind)
            if problem is None:
                continue
            where = f"{case.get('classname', '')}::{case.get('name', '')}"
            message = (problem.get("message") or "").strip().splitlines()
            failed.append(f"{where} [{kind}]: {message[0] if message else ''}")
    return failed


def outcome_counts(junit: Path) -> str:
    """`25 tests: 24 passed, 1 failed, 0 skipped` from the root suite, for the run's log line."""
    try:
        tree = ET.parse(junit)  # noqa: S314 (our own guest wrote it)
    except (ET.ParseError, OSError) as exc:
        return f"no readable {junit.name}: {exc}"
    cases = list(tree.iter("testcase"))
    failed = sum(1 for case in cases if case.find("failure") is not None
                 or case.find("error") is not None)  # fmt: skip
    skipped = sum(1 for case in cases if case.find("skipped") is not None)
    passed = len(cases) - failed - skipped
    return f"{len(cases)} tests: {passed} passed, {failed} failed, {skipped} skipped"
