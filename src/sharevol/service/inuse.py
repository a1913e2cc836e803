"""Is a volume mounted anywhere on this machine? DeleteVolume refuses (FAILED_PRECONDITION) when
it is, so an all-in-one or node-local deployment can never delete data under a running pod."""

from __future__ import annotations

from pathlib import Path

from sharevol.sys.mounts import Mounter, identity_of


def mount_points_of(mounter: Mounter, directory: Path) -> list[str]:
    """Every mount point that shows `directory` (or a folder inside it), found in mountinfo."""
    entries = mounter.mounts()
    identity = identity_of(entries, directory)
    prefix = identity.root.rstrip("/") + "/"
    return [
        entry.mount_point
        for entry in entries
        if entry.device == identity.device
        and (entry.root == identity.root or entry.root.startswith(prefix))
    ]
