"""Loop devices for image and block volumes: attach an image file, find the devices of a file,
refresh a device's size, detach. Every step is `losetup` (util-linux) through the runner.

A device is only ever identified through its backing file (device and inode, as `losetup -j`
matches them): attach reuses the device already backing the same file, and detach is only done
on a device the caller has just seen backing the file it owns. Devices of other files are never
touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sharevol.errors import Internal
from sharevol.sys.runner import CommandRunner

LOSETUP_TIMEOUT = 30.0
SYS_BLOCK = Path("/sys/block")

_DEVICE = re.compile(r"^/dev/loop[0-9]+$")


def _checked(device: str) -> str:
    """A loop device path as losetup prints it; anything else is a bug or a forged value."""
    if not _DEVICE.fullmatch(device):
        raise Internal(f"{device!r} is not a loop device path")
    return device


def devices_of(runner: CommandRunner, image: Path) -> list[str]:
    """The loop devices backed by `image` (same device and inode), in losetup's order."""
    result = runner.run(
        ["losetup", "--noheadings", "--output", "NAME", "--associated", os.fspath(image)],
        timeout=LOSETUP_TIMEOUT,
    )
    return [_checked(line.strip()) for line in result.stdout.splitlines() if line.strip()]


def attach(runner: CommandRunner, image: Path, *, read_only: bool = False) -> str:
    """A loop device of `image` with the wanted read-only flag: an existing one is reused (a
    retried or restarted stage must not stack a second device on the file), else a new one is
    set up. Direct I/O stays off: the image may live on NFS or btrfs, where O_DIRECT through
    the loop driver is not reliable."""
    for device in devices_of(runner, image):
        if is_read_only(device) == read_only:
            return device
    argv = ["losetup", "--find", "--show", "--direct-io=off"]
    if read_only:
        argv.append("--read-only")
    result = runner.run([*argv, "--", os.fspath(image)], timeout=LOSETUP_TIMEOUT)
    return _checked(result.stdout.strip())


def refresh_size(runner: CommandRunner, device: str) -> None:
    """Make the device see its backing file's current size (after the file was grown)."""
    runner.run(["losetup", "--set-capacity", _checked(device)], timeout=LOSETUP_TIMEOUT)


def detach(runner: CommandRunner, device: str) -> None:
    """Detach the device (the kernel defers it while something still holds the device open)."""
    runner.run(["losetup", "--detach", _checked(device)], timeout=LOSETUP_TIMEOUT)


def size_bytes(device: str, sys_block: Path | None = None) -> int:
    """The device's current size as the kernel sees it (sysfs counts 512-byte sectors)."""
    name = os.path.basename(_checked(device))
    try:
        return int(((sys_block or SYS_BLOCK) / name / "size").read_text()) * 512
    except (OSError, ValueError) as exc:
        raise Internal(f"cannot read the size of {device}: {exc}") from exc


def device_number(device: str) -> str:
    """`major:minor` of the device node, as mountinfo shows the filesystems on it."""
    try:
        rdev = os.stat(_checked(device)).st_rdev
    except OSError as exc:
        raise Internal(f"cannot stat {device}: {exc.strerror}") from exc
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def backing_file(device: str, sys_block: Path | None = None) -> str | None:
    """The backing file's path as the kernel reports it (` (deleted)` appended once the file
    was removed), or None when the device backs nothing."""
    name = os.path.basename(_checked(device))
    try:
        return ((sys_block or SYS_BLOCK) / name / "loop" / "backing_file").read_text().rstrip("\n")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Internal(f"cannot read the backing file of {device}: {exc}") from exc


def is_read_only(device: str, sys_block: Path | None = None) -> bool:
    name = os.path.basename(_checked(device))
    try:
        return ((sys_block or SYS_BLOCK) / name / "ro").read_text().strip() == "1"
    except OSError as exc:
        raise Internal(f"cannot read the read-only flag of {device}: {exc}") from exc
