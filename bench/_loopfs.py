"""A throw-away btrfs for benchmarks: a sparse image on a loop device with quotas on.

Everything goes through the runner with a timeout, and everything is undone at the end, even
on Ctrl-C or SIGTERM (a second Ctrl-C cannot cut the cleanup short).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sharevol.sys import btrfs
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under

COMMAND_TIMEOUT = 120.0
SETTLE_TIMEOUT = 300.0
SETTLE_POLL = 0.05


@contextlib.contextmanager
def btrfs_image(workdir: Path, size: int) -> Iterator[Path]:
    """A sparse btrfs image, loop-mounted at `workdir/btrfs` with quotas on; always undone."""
    runner = SubprocessRunner()
    image, mount_point = workdir / "btrfs.img", workdir / "btrfs"
    mount_point.mkdir()
    with image.open("wb") as handle:
        handle.truncate(size)
    loop = ""
    try:
        runner.run(["mkfs.btrfs", "-q", "-f", "-K", str(image)], timeout=COMMAND_TIMEOUT)
        loop = runner.run(
            ["losetup", "--find", "--show", str(image)], timeout=COMMAND_TIMEOUT
        ).stdout.strip()
        runner.run(["mount", loop, str(mount_point)], timeout=COMMAND_TIMEOUT)
        runner.run(["btrfs", "quota", "enable", str(mount_point)], timeout=COMMAND_TIMEOUT)
        yield mount_point
    finally:
        with signals_ignored():
            _destroy_image(runner, image, mount_point, loop)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the cleanup short and leak a mount or a loop device."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _destroy_image(runner: SubprocessRunner, image: Path, mount_point: Path, loop: str) -> None:
    """Unmount, detach, delete the image; every step is tried and failures are reported."""
    failures: list[str] = []
    for target in sorted(mounts_under(mount_point), key=len, reverse=True):
        if runner.run(["umount", target], timeout=COMMAND_TIMEOUT, check=False).returncode:
            failures.append(f"umount {target} failed; detached lazily")
            runner.run(["umount", "--lazy", target], timeout=COMMAND_TIMEOUT, check=False)
    if loop:
        result = runner.run(["losetup", "-d", loop], timeout=COMMAND_TIMEOUT, check=False)
        if result.returncode:
            failures.append(f"losetup -d {loop}: {result.stderr.strip()}")
    image.unlink(missing_ok=True)
    if not mounts_under(mount_point):
        mount_point.rmdir()  # empty once unmounted: never a recursive delete of pool data
    for failure in failures:
        print(f"cleanup: {failure}", file=sys.stderr)


def settle(mount_point: Path) -> float:
    """Wait until the btrfs cleaner has dropped every deleted subvolume, so one phase's
    background work does not land in the next phase's figures; returns the seconds it took.

    In-process, like `btrfs subvolume sync` (which polls too: the kernel offers nothing to wait
    on), so an interrupt leaves no child process holding the mount busy."""
    started = time.monotonic()
    btrfs.sync(mount_point)  # the cleaner runs after a commit: without it, up to 30 s idle
    while any(sub.deleted for sub in btrfs.list_subvolumes(mount_point)):
        if time.monotonic() - started > SETTLE_TIMEOUT:
            raise TimeoutError(f"the btrfs cleaner of {mount_point} did not finish in time")
        time.sleep(SETTLE_POLL)
    return time.monotonic() - started
