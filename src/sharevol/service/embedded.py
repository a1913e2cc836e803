"""The embedded default pool of `sharevol up`: a sparse btrfs image on a loop device, so quotas
and instant snapshots work on any Linux box; a plain directory, with the reason, when impossible.

`--fs xfs|ext4` makes the image XFS or ext4 with project quotas instead, where the kernel can
mount it with `-o prjquota`; where it cannot, a fresh image is thrown away and the pool falls
back to btrfs (or plain), saying why. The image is never reformatted or shrunk, and detach keeps
it: the next attach finds every volume.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sharevol.errors import CommandFailed, FailedPrecondition, InvalidArgument
from sharevol.service.embedded_fs import FILESYSTEMS, EmbeddedFs, FsName
from sharevol.sys.mounts import MountEntry, Mounter, SystemMounter, normalize, top_mount_at
from sharevol.sys.runner import CommandRunner
from sharevol.units import format_size

DEFAULT_SIZE = 10 * 1024**3
MIN_SIZE = 256 * 1024**2
"""btrfs needs ~120 MiB for itself; below this a pool holds nothing useful."""

IMAGE_NAME = "pool.img"
MOUNT_NAME = "pool"

_QUICK = 15.0
"""Timeout of commands that only touch metadata (losetup, blkid, truncate)."""
_SLOW = 120.0
"""Timeout of commands that write or wait for the filesystem (mkfs, mount, umount, resize)."""

# (tool, Debian package): what every image pool needs besides root and its filesystem's tools.
_TOOLS = (
    ("losetup", "mount"),
    ("blkid", "util-linux"),
)

PoolKindName = Literal["btrfs", "xfs", "ext4", "plain"]


class QuotaMountFailed(Exception):
    """A fresh XFS/ext4 image cannot be mounted with project quotas here; says why."""


@dataclass(frozen=True)
class EmbeddedResult:
    """What attach() made: where the pool is, what kind, and why it is plain when it is."""

    path: Path
    kind: PoolKindName
    size_bytes: int | None
    """Size of the image; None for a plain directory, which shares its filesystem."""
    fallback_reason: str | None = None
    """Why this is not the filesystem asked for: a plain directory instead of btrfs (no quotas,
    no instant snapshots), or btrfs instead of XFS/ext4 (no project quota in this kernel)."""
    notes: tuple[str, ...] = ()
    """Things done or refused on the way (image grown, smaller size ignored)."""
    device: str | None = None
    requested: FsName | None = None
    """The filesystem `--fs` asked for when the pool fell back to another kind."""


class EmbeddedPool:
    """Attaches and detaches the pool under `<state_dir>`; every step is idempotent."""

    def __init__(
        self,
        state_dir: Path,
        size_bytes: int,
        runner: CommandRunner,
        *,
        mounter: Mounter | None = None,
        geteuid: Callable[[], int] = os.geteuid,
        fs: FsName | None = None,
    ) -> None:
        if size_bytes < MIN_SIZE:
            raise InvalidArgument(
                f"pool size {format_size(size_bytes)} is too small: use at least "
                f"{format_size(MIN_SIZE)}"
            )
        self.state_dir = state_dir.absolute()
        self.size_bytes = size_bytes
        self._runner = runner
        self._mounter = mounter if mounter is not None else SystemMounter(runner, timeout=_SLOW)
        self._geteuid = geteuid
        self.fs = fs
        """The filesystem asked for; None: the existing image's, or btrfs for a new one."""

    @property
    def image(self) -> Path:
        return self.state_dir / IMAGE_NAME

    @property
    def mount_point(self) -> Path:
        return self.state_dir / MOUNT_NAME

    def attach(self) -> EmbeddedResult:
        """Make or reuse the pool image and mount it; fall back to btrfs when XFS/ext4 project
        quotas are impossible here, and to a plain directory when no image can be used, saying
        why each time."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        reason = self._why_not_image()
        fs = self.fs or (self._image_fs() if reason is None else None) or "btrfs"
        requested: FsName | None = None
        if reason is None and fs != "btrfs":
            reason = self._missing_tools(FILESYSTEMS[fs])
            if reason is None:
                try:
                    return self._attach_image(FILESYSTEMS[fs])
                except QuotaMountFailed as exc:
                    reason = str(exc)
            requested, reason = fs, f"{fs} with project quotas is not possible here: {reason}"
            fs = "btrfs"
        if reason is None or requested is not None:
            missing = self._missing_tools(FILESYSTEMS["btrfs"])
            if missing is None:
                result = self._attach_image(FILESYSTEMS["btrfs"])
                return replace(result, fallback_reason=reason, requested=requested)
            reason = f"{reason}; and {missing}" if reason else missing
        self.mount_point.mkdir(exist_ok=True)
        return EmbeddedResult(
            self.mount_point, "plain", None, fallback_reason=reason, requested=requested
        )

    def users(self) -> list[str]:
        """Mount points that use the pool: bind mounts of its volumes, mounts inside it."""
        if self._geteuid() != 0:
            return []
        table = self._mounter.mounts()
        own = top_mount_at(table, self.mount_point)
        if own is None:
            return []
        inside = normalize(self.mount_point) + "/"
        return [
            entry.mount_point
            for entry in table
            if entry != own and (entry.device == own.device or entry.mount_point.startswith(inside))
        ]

    def detach(self) -> None:
        """Unmount the pool and free its loop device, keeping the image; refuse while in use."""
        if self._geteuid() != 0:
            return  # a plain directory: nothing was mounted
        users = self.users()
        if users:
            raise FailedPrecondition(
                f"pool {self.mount_point} is still used by mounts: {', '.join(users)}; "
                "unmount them first (sharevol volume unmount PATH)"
            )
        devices = self._loop_devices()
        mounted = self._mounted()
        if mounted is not None and mounted.source in devices:
            self._mounter.unmount(self.mount_point)
        for device in devices:
            self._run("losetup", "-d", device)

    # -- image path -------------------------------------------------------------------------

    def _why_not_image(self) -> str | None:
        """Why no loop-mounted image can be used at all (not root, no losetup, no loop device)."""
        if self._geteuid() != 0:
            return "not running as root: a loop-mounted pool image needs root"
        missing = self._missing_tools(None)
        if missing is not None:
            return missing
        if not self._loop_devices():
            try:
                self._run("losetup", "--find")
            except CommandFailed as exc:
                return f"no free loop device ({exc}): load the loop module (modprobe loop)"
        return None

    def _missing_tools(self, fs: EmbeddedFs | None) -> str | None:
        """Which tool the image (and `fs`, when given) needs and is not installed, or None."""
        for tool, package in fs.tools if fs is not None else _TOOLS:
            if not self._has_tool(tool):
                return (
                    f"{tool} not found: install {package} "
                    f"(apt-get install {package}, or run ./scripts/bootstrap as root)"
                )
        return None

    def _image_fs(self) -> FsName | None:
        """The filesystem of an existing image when it is one the pool can be made of."""
        if not self.image.exists():
            return None
        found = self._runner.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", str(self.image)],
            timeout=_QUICK, check=False,
        ).stdout.strip()  # fmt: skip
        return next((name for name in FILESYSTEMS if name == found), None)

    def _attach_image(self, fs: EmbeddedFs) -> EmbeddedResult:
        notes: list[str] = []
        created = not self.image.exists()
        if created:
            if self.size_bytes < fs.min_size:
                raise InvalidArgument(
                    f"pool size {format_size(self.size_bytes)} is too small for {fs.name}: use "
                    f"at least {format_size(fs.min_size)}"
                )
            self._run("truncate", "-s", str(self.size_bytes), str(self.image))
            notes.append(f"created sparse image {self.image} ({format_size(self.size_bytes)})")
        else:
            current = self.image.stat().st_size
            if self.size_bytes > current:
                self._run("truncate", "-s", str(self.size_bytes), str(self.image))
                notes.append(
                    f"grew pool from {format_size(current)} to {format_size(self.size_bytes)}"
                )
            elif self.size_bytes < current:
                notes.append(
                    f"pool image is {format_size(current)}, larger than the requested "
                    f"{format_size(self.size_bytes)}: kept at {format_size(current)} "
                    "(a pool is never shrunk)"
                )
        size = self.image.stat().st_size

        devices = self._loop_devices()
        attached_now = not devices
        if devices:
            device = devices[0]
            # Re-read the backing file's size: it may have grown in this call or in one that
            # crashed before the resize; a no-op otherwise.
            self._run("losetup", "-c", device)
        else:
            device = self._run("losetup", "--find", "--show", str(self.image)).strip()
        try:
            self._ensure_formatted(device, fs, notes)
            self._ensure_mounted(device, fs, created)
        except Exception:
            if attached_now:
                self._run("losetup", "-d", device)
            if created:  # made in this call: it holds nothing, so nothing is lost
                self.image.unlink(missing_ok=True)
            raise
        # Always, so a grow interrupted after the truncate converges; a no-op at full size.
        for argv in fs.grow_commands(device, str(self.mount_point)):
            result = self._runner.run(argv, timeout=_SLOW, check=fs.name != "ext4")
            if result.returncode != 0:  # ext4 online grow needs CAP_SYS_RESOURCE
                notes.append(f"could not grow {fs.name} online: {result.stderr.strip()}")
        return EmbeddedResult(self.mount_point, fs.name, size, notes=tuple(notes), device=device)

    def _ensure_formatted(self, device: str, fs: EmbeddedFs, notes: list[str]) -> None:
        """Format only an image with no filesystem signature at all; never overwrite one."""
        result = self._runner.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", device], timeout=_QUICK, check=False
        )
        if result.returncode == 2:  # blkid: nothing found on the device
            # No force flag: mkfs itself refuses to overwrite any signature blkid missed.
            self._run(*fs.mkfs, device, timeout=_SLOW)
            notes.append(f"formatted {self.image.name} as {fs.name}")
            return
        if result.returncode != 0:
            raise CommandFailed(list(result.argv), result.returncode, result.stderr)
        fstype = result.stdout.strip()
        if fstype != fs.name:
            hint = f" (start with --fs {fstype})" if fstype in FILESYSTEMS else ""
            raise FailedPrecondition(
                f"{self.image} holds a {fstype or 'unknown'} filesystem, not {fs.name}{hint}; "
                "sharevol never reformats it: move it away or use another --state-dir"
            )

    def _ensure_mounted(self, device: str, fs: EmbeddedFs, created: bool) -> None:
        mounted = self._mounted()
        if mounted is not None:
            if mounted.fs_type != fs.name or mounted.source != device:
                raise FailedPrecondition(
                    f"{self.mount_point} is already mounted from {mounted.source} "
                    f"({mounted.fs_type}), not from {device} ({self.image.name}): unmount it "
                    "or use another --state-dir"
                )
            return
        self.mount_point.mkdir(exist_ok=True)
        if any(self.mount_point.iterdir()):
            raise FailedPrecondition(
                f"{self.mount_point} is not empty (a plain-directory pool from a run without "
                "root or btrfs-progs?); mounting over it would hide that data: move it away "
                "or use another --state-dir"
            )
        try:
            self._mounter.mount(device, self.mount_point, fs.name, fs.mount_options)
        except CommandFailed as exc:
            if not fs.mount_options:
                raise
            why = self._why_quota_mount_failed(device, fs, exc)
            if created:
                raise QuotaMountFailed(why) from exc
            raise FailedPrecondition(
                f"{self.image} holds {fs.name} but cannot be mounted with project quotas: {why}"
            ) from exc

    def _why_quota_mount_failed(self, device: str, fs: EmbeddedFs, exc: CommandFailed) -> str:
        """Try the mount without quota options: when that works, the kernel lacks quota."""
        options = ",".join(fs.mount_options)
        said = next((line.strip() for line in exc.stderr.splitlines() if line.strip()), str(exc))
        try:
            self._mounter.mount(device, self.mount_point, fs.name)
        except CommandFailed:
            return (
                f"a new {fs.name} image made for project quotas does not mount, with or without "
                f"-o {options} ({said}): this kernel lacks {fs.kernel_needs}"
            )
        self._mounter.unmount(self.mount_point)
        return f"this kernel mounts {fs.name} but not with -o {options}: it lacks {fs.kernel_needs}"

    # -- queries ----------------------------------------------------------------------------

    def _has_tool(self, tool: str) -> bool:
        try:
            self._run(tool, "--version")
        except CommandFailed as exc:
            # returncode None and no timeout: the runner could not start it at all.
            return exc.returncode is not None or exc.timed_out
        return True

    def _loop_devices(self) -> list[str]:
        """Loop devices already backed by the image (a crash or an earlier `up` left them)."""
        if not self.image.exists():
            return []
        out = self._run("losetup", "--list", "--noheadings", "-O", "NAME", "-j", str(self.image))
        return [line.strip() for line in out.splitlines() if line.strip()]

    def _mounted(self) -> MountEntry | None:
        """The mount visible on the pool mount point, or None."""
        return self._mounter.find(self.mount_point)

    def _run(self, *argv: str, timeout: float = _QUICK) -> str:
        return self._runner.run(list(argv), timeout=timeout).stdout
