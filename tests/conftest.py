"""The `root` marker policy, for every test of the project.

A test marked `@pytest.mark.root` (or a module with `pytestmark = pytest.mark.root`) needs root,
loop devices and the tools in ROOT_TOOLS; `@pytest.mark.root("ganesha.nfsd")` names extra tools.
Outside CI such a test is skipped with the exact reason; with CI=true it FAILS instead, so CI
can never go green by skipping what it was meant to run.
"""

from __future__ import annotations

import os
import shutil

import pytest

ROOT_TOOLS: dict[str, str] = {
    "mkfs.btrfs": "btrfs-progs",
    "btrfs": "btrfs-progs",
    "losetup": "util-linux",
    "mount": "mount",
    "umount": "mount",
}
"""Tools every root test may use, with the Debian package that provides each."""

LOOP_CONTROL = "/dev/loop-control"


def in_ci() -> bool:
    """Whether this run is CI (env CI=true), where nothing may be skipped for lack of setup."""
    return os.environ.get("CI", "").strip().lower() == "true"


def root_unavailable(extra_tools: tuple[str, ...] = ()) -> str | None:
    """Why root tests cannot run here (the skip reason), or None when they can."""
    if os.geteuid() != 0:
        return f"needs root: running as uid {os.geteuid()}"
    tools = {**ROOT_TOOLS, **{tool: tool for tool in extra_tools}}
    missing = [f"{tool} (package {package})" for tool, package in tools.items()
               if shutil.which(tool) is None]  # fmt: skip
    if missing:
        return f"needs {', '.join(missing)} on PATH"
    if not os.path.exists(LOOP_CONTROL):
        return f"needs loop devices: {LOOP_CONTROL} is missing"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, in CI, fail) root tests that cannot run on this machine, saying why."""
    marker = item.get_closest_marker("root")
    if marker is None:
        return
    reason = root_unavailable(tuple(str(tool) for tool in marker.args))
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: root tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the host, tests marked `vm` are deselected, not skipped: tests/vm/test_vm_tier.py
    boots one VM that runs them all, so a green host run has no skips to explain."""
    from tests.vm.guest import in_vm

    if in_vm():
        return
    guest_only = [item for item in items if item.get_closest_marker("vm") is not None]
    if guest_only:
        config.hook.pytest_deselected(items=guest_only)
        items[:] = [item for item in items if item.get_closest_marker("vm") is None]
