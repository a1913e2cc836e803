"""statvfs that cannot hang a worker, and which filesystem (and mount) holds a path.

A statvfs or a tree walk on a dead NFS server blocks in the kernel, uninterruptibly. Such calls
run in a daemon helper thread that the caller waits for with a deadline: the caller gets
Internal in time, the stuck thread is abandoned (and at most one is left per path).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sharevol.errors import Internal
from sharevol.sys.mounts import MOUNTINFO, MountEntry, containing_mount, parse_mountinfo

T = TypeVar("T")

_stuck_lock = threading.Lock()
_stuck: dict[str, threading.Thread] = {}
"""Calls that missed their deadline and still run, by key: a new call for the same key fails
at once instead of stacking up another blocked thread."""


def call_with_deadline(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run `fn` in a helper thread and return its result, or raise Internal after `timeout`
    seconds (the thread is left to finish on its own). Exceptions of `fn` are re-raised."""
    with _stuck_lock:
        stuck = _stuck.get(what)
        if stuck is not None and stuck.is_alive():
            raise Internal(f"{what} is still hung from an earlier call; is the server down?")
        _stuck.pop(what, None)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"deadline: {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        with _stuck_lock:
            _stuck[what] = thread
        raise Internal(f"{what} did not answer within {timeout:g}s; is the server down?")
    if failure:
        raise failure[0]
    return outcome[0]


def statvfs_with_deadline(path: Path | str, timeout: float = 10.0) -> os.statvfs_result:
    """os.statvfs(path), or Internal when it fails or does not answer within `timeout` s."""
    try:
        return call_with_deadline(lambda: os.statvfs(path), timeout, f"statvfs of {path}")
    except OSError as exc:
        raise Internal(f"statvfs of {path} failed: [errno {exc.errno}] {exc.strerror}") from exc


def read_mounts(mountinfo: Path = MOUNTINFO) -> list[MountEntry]:
    """The current mount table of this process's mount namespace."""
    try:
        return parse_mountinfo(mountinfo.read_bytes())
    except OSError as exc:
        raise Internal(f"cannot read {mountinfo}: {exc}") from exc


def find_mount(path: Path | str, mountinfo: Path = MOUNTINFO) -> MountEntry:
    """The mount that holds `path` with symlinks resolved: the top mount at the longest mount
    point containing it."""
    return containing_mount(read_mounts(mountinfo), os.path.realpath(path))


def filesystem_type(path: Path | str, mountinfo: Path = MOUNTINFO) -> str:
    """The type of the filesystem holding `path`: "btrfs", "xfs", "ext4", "nfs4", "tmpfs"..."""
    return find_mount(path, mountinfo).fs_type


def mounts_under(path: Path | str, mountinfo: Path = MOUNTINFO) -> list[str]:
    """Mount points at or below `path` (resolved): what a tree walk or delete must not enter."""
    resolved = os.path.realpath(path)
    inside = resolved.rstrip("/") + "/"
    return sorted(
        {
            m.mount_point
            for m in read_mounts(mountinfo)
            if m.mount_point == resolved or m.mount_point.startswith(inside)
        }
    )
