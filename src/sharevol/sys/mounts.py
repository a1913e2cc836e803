"""The mount table and mount/umount: `/proc/self/mountinfo` is the truth about what is mounted.

A bind mount shows up in mountinfo with the device (major:minor) and the path inside that
filesystem (field 4, "root") of its source, so a bind of a volume directory can be recognised
at any target by `MountIdentity` without trusting anything we wrote down ourselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sharevol.errors import Internal
from sharevol.sys.runner import DEFAULT_TIMEOUT, CommandRunner

MOUNTINFO = Path("/proc/self/mountinfo")

# The kernel writes a deleted source directory's root as "<path>//deleted" (d_path quirk).
DELETED_SUFFIX = "//deleted"

_OCTAL = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class MountIdentity:
    """What a bind mount is of: the filesystem (major:minor) and the path inside it."""

    device: str
    root: str

    @property
    def deleted(self) -> bool:
        """The source directory was removed while mounted (the mount now shows an orphan)."""
        return self.root.endswith(DELETED_SUFFIX)

    def same_source(self, other: MountIdentity) -> bool:
        """Same device and root, ignoring a `//deleted` mark on either side."""
        return self.device == other.device and _undeleted(self.root) == _undeleted(other.root)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (proc(5)), with escapes such as `\\040` decoded."""

    mount_id: int
    parent_id: int
    device: str
    """major:minor of the mounted filesystem."""
    root: str
    """The path inside the source filesystem that is mounted here (field 4)."""
    mount_point: str
    mount_options: tuple[str, ...]
    """Per-mount options: `ro`/`rw`, `nosuid`, ... (a bind can be ro on a rw filesystem)."""
    optional_fields: tuple[str, ...]
    fs_type: str
    source: str
    super_options: tuple[str, ...]
    """Options of the filesystem (superblock), shared by every mount of it."""

    @property
    def read_only(self) -> bool:
        return "ro" in self.mount_options

    @property
    def identity(self) -> MountIdentity:
        return MountIdentity(self.device, self.root)


def _undeleted(root: str) -> str:
    return root[: -len(DELETED_SUFFIX)] if root.endswith(DELETED_SUFFIX) else root


def unescape(field: bytes) -> str:
    """Decode the kernel's octal escapes (`\\040` space, `\\011` tab, `\\012` newline,
    `\\134` backslash) and the bytes as a file system path."""
    raw = _OCTAL.sub(lambda match: bytes([int(match.group(1), 8)]), field)
    return os.fsdecode(raw)


def parse_mountinfo_line(line: bytes) -> MountEntry:
    """Parse one mountinfo line; Internal if it does not have the documented shape."""
    fields = line.rstrip(b"\n").split(b" ")
    try:
        separator = fields.index(b"-", 6)
        mount_id, parent_id, device, root, mount_point, options = fields[:6]
        fs_type, source, super_options = fields[separator + 1 : separator + 4]
        return MountEntry(
            mount_id=int(mount_id),
            parent_id=int(parent_id),
            device=device.decode("ascii"),
            root=unescape(root),
            mount_point=unescape(mount_point),
            mount_options=tuple(unescape(option) for option in options.split(b",")),
            optional_fields=tuple(unescape(field) for field in fields[6:separator]),
            fs_type=unescape(fs_type),
            source=unescape(source),
            super_options=tuple(unescape(option) for option in super_options.split(b",")),
        )
    except ValueError as exc:
        raise Internal(f"unparsable mountinfo line {line!r}: {exc}") from exc


def parse_mountinfo(text: bytes) -> list[MountEntry]:
    """Every entry of a mountinfo file, in the kernel's order."""
    return [parse_mountinfo_line(line) for line in text.splitlines() if line.strip()]


def normalize(path: str | os.PathLike[str]) -> str:
    """The absolute, `..`-free spelling mountinfo uses (without touching the filesystem)."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def top_mount_at(
    entries: Sequence[MountEntry], target: str | os.PathLike[str]
) -> MountEntry | None:
    """The mount that is visible at exactly `target`: of the mounts stacked there, the one no
    other mount at the same point sits on."""
    point = normalize(target)
    stacked = [entry for entry in entries if entry.mount_point == point]
    if not stacked:
        return None
    covered = {entry.parent_id for entry in stacked}
    uncovered = [entry for entry in stacked if entry.mount_id not in covered]
    return uncovered[-1] if uncovered else stacked[-1]


def containing_mount(entries: Sequence[MountEntry], path: str | os.PathLike[str]) -> MountEntry:
    """The mount a path lives on: the top mount at its longest mount-point prefix."""
    point = normalize(path)
    best: str | None = None
    for entry in entries:
        mount_point = entry.mount_point
        inside = point == mount_point or point.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > len(best)):
            best = mount_point
    found = top_mount_at(entries, best) if best is not None else None
    if found is None:
        raise Internal(f"no mount contains {point}: the mount table is empty or unreadable")
    return found


def identity_of(entries: Sequence[MountEntry], path: str | os.PathLike[str]) -> MountIdentity:
    """What a bind mount of `path` would show in mountinfo (device and root in that fs)."""
    point = normalize(path)
    entry = containing_mount(entries, point)
    relative = os.path.relpath(point, entry.mount_point)
    root = _undeleted(entry.root)
    if relative != ".":
        root = os.path.normpath(os.path.join(root, relative))
    return MountIdentity(entry.device, root)


def mounts_at(entries: Iterable[MountEntry], target: str | os.PathLike[str]) -> list[MountEntry]:
    """Every mount stacked at exactly `target`."""
    point = normalize(target)
    return [entry for entry in entries if entry.mount_point == point]


class Mounter(Protocol):
    """The mount table and the operations on it; `sharevol.sys.fake.FakeMounter` is its fake."""

    def mounts(self) -> list[MountEntry]:
        """The current mount table of this process's mount namespace."""
        ...

    def find(self, target: str | os.PathLike[str]) -> MountEntry | None:
        """The top-most mount at exactly `target`, or None."""
        ...

    def bind(
        self, source: str | os.PathLike[str], target: str | os.PathLike[str], readonly: bool
    ) -> None:
        """Bind `source` onto `target`; when `readonly`, the new mount is read-only (verified)."""
        ...

    def remount_readonly(self, target: str | os.PathLike[str]) -> None:
        """Make the bind mount at `target` read-only (only that mount, not the filesystem)."""
        ...

    def unmount(self, target: str | os.PathLike[str]) -> None:
        """Unmount the top-most mount at `target`."""
        ...

    def mount(
        self,
        source: str,
        target: str | os.PathLike[str],
        fstype: str,
        options: Sequence[str] = (),
    ) -> None:
        """Mount a filesystem (NFS, a loop device) at `target`."""
        ...


class SystemMounter:
    """The real mounter: util-linux `mount`/`umount` through the runner, each with a timeout,
    and mountinfo read straight from the kernel."""

    def __init__(
        self,
        runner: CommandRunner,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        mountinfo: Path = MOUNTINFO,
    ) -> None:
        self._runner = runner
        self._timeout = timeout
        self._mountinfo = mountinfo

    def mounts(self) -> list[MountEntry]:
        return parse_mountinfo(self._mountinfo.read_bytes())

    def find(self, target: str | os.PathLike[str]) -> MountEntry | None:
        return top_mount_at(self.mounts(), target)

    def bind(
        self, source: str | os.PathLike[str], target: str | os.PathLike[str], readonly: bool
    ) -> None:
        argv = ["mount", "--bind"]
        if readonly:
            argv += ["-o", "ro"]
        self._runner.run([*argv, "--", os.fspath(source), os.fspath(target)], timeout=self._timeout)
        if readonly:
            self._ensure_readonly(target)

    def _ensure_readonly(self, target: str | os.PathLike[str]) -> None:
        """Old util-linux ignored `-o ro` on a bind; never hand out a writable "read-only" mount."""
        top = self.find(target)
        if top is not None and top.read_only:
            return
        self.remount_readonly(target)
        top = self.find(target)
        if top is None or not top.read_only:
            self.unmount(target)
            raise Internal(f"bind mount at {target} did not become read-only; unmounted it")

    def remount_readonly(self, target: str | os.PathLike[str]) -> None:
        self._runner.run(
            ["mount", "-o", "remount,bind,ro", "--", os.fspath(target)], timeout=self._timeout
        )

    def unmount(self, target: str | os.PathLike[str]) -> None:
        self._runner.run(["umount", "--", os.fspath(target)], timeout=self._timeout)

    def mount(
        self,
        source: str,
        target: str | os.PathLike[str],
        fstype: str,
        options: Sequence[str] = (),
    ) -> None:
        argv = ["mount", "-t", fstype]
        if options:
            argv += ["-o", ",".join(options)]
        self._runner.run([*argv, "--", source, os.fspath(target)], timeout=self._timeout)
