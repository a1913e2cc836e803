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
