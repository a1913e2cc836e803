"""Mount points on a node: how paths are spelled, created, unmounted (verified) and removed.

The rules that keep user data safe live here in one place: a mount point is removed only with
`rmdir`/`unlink` after mountinfo shows nothing mounted there, never by a recursive delete.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence

from sharevol.errors import FailedPrecondition, Internal, InvalidArgument
from sharevol.sys.mounts import MountEntry, Mounter, MountIdentity

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

# More mounts than this stacked at one path is not something we made; stop and say so.
MAX_STACKED_MOUNTS = 16


def canonical_path(given: StrPath, field: str) -> str:
    """The path as mountinfo spells it: the parent resolved (symlinks, `..`), the last
    component kept (it is the mount point we manage)."""
    path = os.fspath(given)
    if not path or not os.path.isabs(path):
        raise InvalidArgument(f"{field} must be an absolute path, got {path!r}")
    normal = os.path.normpath(path)
    if normal == "/":
        raise InvalidArgument(f"{field} cannot be /")
    parent, name = os.path.split(normal)
    return os.path.join(os.path.realpath(parent), name)


def unmount_volume(
    mounter: Mounter, path: str, expected: Sequence[MountIdentity], volume_id: str
) -> int:
    """Unmount the volume's mounts stacked at `path` until mountinfo shows none there; a mount
    of anything else is left alone (FailedPrecondition). Returns how many it unmounted."""
    for unmounted in range(MAX_STACKED_MOUNTS):
        top = mounter.find(path)
        if top is None:
            return unmounted
        if not any(top.identity.same_source(identity) for identity in expected):
            raise FailedPrecondition(
                f"{path} holds a mount that is not volume {volume_id} ({describe(top)}); "
                "leaving it alone"
            )
        mounter.unmount(path)
        after = mounter.find(path)
        if after is not None and after.mount_id == top.mount_id:
            raise Internal(f"unmount of {path} reported success but the mount is still there")
    raise Internal(f"more than {MAX_STACKED_MOUNTS} mounts stacked at {path}; not unmounting")


def make_mount_point(path: str, what: str) -> bool:
    """Create the mount point; True when this call created it."""
    if os.path.islink(path):
        raise FailedPrecondition(f"{what} {path} is a symlink; refusing to mount over it")
    try:
        os.mkdir(path, 0o750)
    except FileExistsError:
        if not os.path.isdir(path):
            raise FailedPrecondition(f"{what} {path} exists and is not a directory") from None
        return False
    except FileNotFoundError:
        raise FailedPrecondition(f"the parent directory of {what} {path} does not exist") from None
    return True


def remove_published_target(target: str, *, recorded: bool, unmounted: int) -> None:
    """Remove what publish made at the target, but only when this node published the volume
    there (a publication record of that volume, or a mount of it just unmounted): an unpublish
    of a path that never held the volume must not delete whatever file or folder is there."""
    if recorded or unmounted:
        remove_target(target)
    elif os.path.lexists(target):
        log.info("unpublish: %s never held the volume here; left alone", target)


def remove_target(target: str) -> None:
    """Remove what publish created at the target after its unmount was verified."""
    try:
        os.rmdir(target)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise Internal(
                f"target {target} is not empty after its unmount; left in place for inspection "
                "(sharevol never deletes recursively)"
            ) from exc
        raise Internal(f"cannot remove target {target}: {exc.strerror}") from exc


def rmdir_quietly(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError as exc:
        log.warning("could not remove %s after a failed publish: %s", path, exc)


def describe(entry: MountEntry) -> str:
    return f"{entry.fs_type} {entry.source} root {entry.root}"
