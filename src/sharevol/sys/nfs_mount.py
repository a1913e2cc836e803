"""Kernel NFS mounts that cannot wedge the caller: `mount -t nfs4` and `umount` under a timeout,
statvfs under a deadline, and the checks on what may be mounted.

A dead NFS server blocks mount(2), umount(2) and every stat of the mount in the kernel. Each
command runs through the runner with a timeout (the runner kills its process group when it
passes); an unmount that does not finish escalates to `umount -f` (abort the pending RPCs),
then `umount -l` (detach now, the kernel cleans up when the last user goes). statvfs runs in a
helper thread with a deadline (sharevol.sys.statfs.call_with_deadline).
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sharevol.errors import CommandFailed, Internal, InvalidArgument
from sharevol.sys.mounts import MountEntry
from sharevol.sys.runner import CommandRunner
from sharevol.sys.statfs import call_with_deadline

log = logging.getLogger(__name__)

NFS_FS_TYPES = frozenset({"nfs", "nfs4"})
"""What mountinfo calls a kernel NFS mount (and every bind of one)."""
NFS_VERSIONS = ("4", "4.0", "4.1", "4.2")
"""NFSv4 only: v3 needs rpcbind, statd and lockd on every node."""
DEFAULT_VERSION = "4.1"
DEFAULT_PORT = 2049
MOUNT_TIMEOUT = 60.0
"""Default for one `mount -t nfs4`: below kubelet's 2-minute timeout of a CSI call."""
PROBE_TIMEOUT = 10.0

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_PATH_COMPONENT = re.compile(r"^[A-Za-z0-9._@+~%=-]{1,255}$")
_OPTION = re.compile(r"^[A-Za-z0-9_.:=/+@%-]{1,256}$")
MAX_PATH_BYTES = 1024

_SYNONYMS = {"nfsvers": "vers", "soft": "hard", "softerr": "hard", "ro": "rw"}
"""Options that set the same thing: a later one replaces an earlier one (`nfsvers=4.2` replaces
`vers=4.1`, `hard` replaces `soft`, `ro` replaces `rw`)."""


# ---- what may be mounted -----------------------------------------------------------------


def check_server(value: str, field: str = "server") -> str:
    """An NFS server: an IP address or a DNS name (InvalidArgument otherwise)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        if _DNS_NAME.fullmatch(value):
            return value
    raise InvalidArgument(f"{field} {value[:128]!r} is neither an IP address nor a DNS name")


def check_export_path(value: str, field: str = "share") -> str:
    """An absolute path on the server, made of plain components (no `.`, `..` or empty ones)."""
    if not value.startswith("/"):
        raise InvalidArgument(f"{field} {value[:128]!r} must be an absolute path")
    if value == "/":
        return value
    return "/" + _check_components(value[1:].rstrip("/"), field, value)


def check_subdir(value: str, field: str = "subdir") -> str:
    """A path relative to a share, made of plain components; "" is the share itself."""
    if value in ("", "."):
        return ""
    if value.startswith("/"):
        raise InvalidArgument(f"{field} {value[:128]!r} must be a relative path")
    return _check_components(value.rstrip("/"), field, value)


def _check_components(path: str, field: str, given: str) -> str:
    if len(given.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_PATH_BYTES} bytes")
    components = path.split("/")
    for component in components:
        if component in ("", ".", "..") or not _PATH_COMPONENT.fullmatch(component):
            raise InvalidArgument(
                f"{field} {given[:128]!r} must be made of names of [A-Za-z0-9._@+~%=-] "
                "(no empty, `.` or `..` components)"
            )
    return "/".join(components)


def nfs_device(server: str, path: str) -> str:
    """What `mount` takes and mountinfo shows as the source: `server:/path` (`[v6]:/path`)."""
    host = f"[{server}]" if ":" in server else server
    return f"{host}:{path}"


def split_options(values: Iterable[str], field: str = "mount option") -> list[str]:
    """Options as single words: `"hard,nfsvers=4.1"` is two; refuses spaces, quotes and other
    characters no NFS option has (they reach `mount` as one argv word, never a shell)."""
    words: list[str] = []
    for value in values:
        for word in value.split(","):
            word = word.strip()
            if not word:
                continue
            if not _OPTION.fullmatch(word):
                raise InvalidArgument(f"{field} {word[:64]!r} is not a valid NFS mount option")
            words.append(word)
    return words


def merge_options(*groups: Sequence[str]) -> list[str]:
    """One option list from several (context, StorageClass mountOptions, ...): a later option
    replaces an earlier one of the same key; NFSv4 only, `vers=4.1` when no version is given."""
    merged: dict[str, str] = {}
    for group in groups:
        for word in split_options(group):
            merged.pop(_key(word), None)  # re-inserted last: the order mount sees is the asked one
            merged[_key(word)] = word
    version = merged.get("vers")
    if version is None:
        default = "4" if "minorversion" in merged else DEFAULT_VERSION
        merged = {"vers": f"vers={default}", **merged}
    else:
        number = version.split("=", 1)[1] if "=" in version else ""
        if number not in NFS_VERSIONS:
            raise InvalidArgument(
                f"mount option {version!r}: sharevol mounts NFSv4 only "
                f"(vers={', vers='.join(NFS_VERSIONS)})"
            )
        merged["vers"] = f"vers={number}"
    return list(merged.values())


def _key(word: str) -> str:
    name = word.split("=", 1)[0]
    name = _SYNONYMS.get(name, name)
    if "=" not in word and name.startswith("no") and len(name) > 2:
        name = name[2:]  # `noac` and `ac` set the same thing
    return name


def option_value(options: Sequence[str], name: str) -> str | None:
    """The value of `name=value` in an option list (the last one), or None."""
    value = None
    for word in options:
        key, _, rest = word.partition("=")
        if _SYNONYMS.get(key, key) == _SYNONYMS.get(name, name) and rest:
            value = rest
    return value


def is_nfs_mount(entry: MountEntry | None, device: str) -> bool:
    """Whether `entry` is a kernel NFS mount (or a bind of one) of `device`."""
    return entry is not None and entry.fs_type in NFS_FS_TYPES and entry.source == device


# ---- mount and unmount --------------------------------------------------------------------


def mount_nfs(
    runner: CommandRunner, device: str, target: str, options: Sequence[str], timeout: float
) -> None:
    """`mount -t nfs4 -o OPTIONS DEVICE TARGET`, killed (with its helpers) after `timeout`."""
    argv = ["mount", "-t", "nfs4", "-o", ",".join(options), "--", device, target]
    try:
        runner.run(argv, timeout=timeout)
    except CommandFailed as exc:
        if exc.timed_out:
            raise Internal(
                f"mounting {device} at {target} did not finish within {timeout:g}s and was "
                "killed: is the NFS server up and reachable from this node?"
            ) from exc
        raise Internal(f"mounting {device} at {target} failed: {exc}") from exc


class Unmounted(enum.Enum):
    """How an NFS unmount ended."""

    CLEAN = "clean"
    FORCED = "forced"
    """`umount -f`: pending requests to the server were aborted."""
    LAZY = "lazy"
    """`umount -l`: detached from the tree; the kernel finishes when the last user goes."""


def unmount_nfs(runner: CommandRunner, target: str, timeout: float) -> Unmounted:
    """Unmount the top mount at `target`; a stuck unmount (a dead server) escalates to
    `umount -f`, then `umount -l`, each under `timeout`. Other failures (busy) are raised."""
    try:
        runner.run(["umount", "--", target], timeout=timeout)
        return Unmounted.CLEAN
    except CommandFailed as exc:
        if not (exc.timed_out or _stale(exc)):
            raise
        log.warning("umount of %s is stuck (%s); forcing it", target, exc)
    try:
        runner.run(["umount", "-f", "--", target], timeout=timeout)
        return Unmounted.FORCED
    except CommandFailed as exc:
        log.warning("umount -f of %s failed (%s); detaching it lazily", target, exc)
    runner.run(["umount", "-l", "--", target], timeout=timeout)
    return Unmounted.LAZY


def _stale(exc: CommandFailed) -> bool:
    return "stale" in exc.stderr.lower()


# ---- health -------------------------------------------------------------------------------


class Health(enum.Enum):
    OK = "ok"
    STALE = "stale"
    """ESTALE: the server no longer knows the mounted directory's file handle."""
    HUNG = "hung"
    """statvfs did not answer in time: the server is down or unreachable."""
    FAILED = "failed"


@dataclass(frozen=True)
class Probe:
    """The outcome of statvfs on a mount, with its numbers when it answered."""

    health: Health
    message: str = ""
    statvfs: os.statvfs_result | None = None


def probe(path: str, timeout: float = PROBE_TIMEOUT) -> Probe:
    """statvfs(path) within `timeout` seconds; never raises, never hangs the caller."""
    try:
        result = call_with_deadline(lambda: os.statvfs(path), timeout, f"statvfs of {path}")
    except OSError as exc:
        if exc.errno == errno.ESTALE:
            return Probe(Health.STALE, f"{path}: stale file handle (the server lost it)")
        return Probe(Health.FAILED, f"statvfs of {path} failed: [errno {exc.errno}] {exc.strerror}")
    except Internal as exc:
        return Probe(Health.HUNG, str(exc))
    return Probe(Health.OK, statvfs=result)
