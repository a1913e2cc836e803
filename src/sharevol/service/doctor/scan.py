"""Open the configured pools the way doctor needs them, and take one scan of each.

Pools are built from pools.yaml (offline: no server needed). btrfs and plain pools are not
started for a check run, because their start() changes things (it drops stale qgroups, makes
folders); doctor's own read-only checks cover what start() verifies. Pools of other kinds are
started, as the server would, because their start() is what reads their quota state.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from sharevol.catalog.store import Catalog
from sharevol.errors import SharevolError
from sharevol.pools.base import ARCHIVE_DIR, SNAPSHOTS_DIR, VOLUMES_DIR, Pool
from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.config import PoolConfig
from sharevol.pools.factory import make_pool
from sharevol.pools.plain import PlainPool
from sharevol.service.doctor.model import DoctorContext, PoolScan
from sharevol.service.locate import PoolHandle
from sharevol.sys.statfs import filesystem_type

FOLDERS = (VOLUMES_DIR, ARCHIVE_DIR, SNAPSHOTS_DIR)
FILESYSTEM_KINDS = ("btrfs", "xfs", "ext4")
"""Pool kinds named after the filesystem they must sit on."""


def open_pool(config: PoolConfig) -> tuple[PoolHandle, str]:
    """The pool of `config` with its catalog, and why it cannot be used ("" when it can)."""
    pool = make_pool(config)
    reason = ""
    if not isinstance(pool, BtrfsPool | PlainPool):
        try:
            pool.start()
        except SharevolError as exc:
            reason = str(exc)
    return PoolHandle(pool, Catalog(pool.root), config.overcommit), reason


def unusable_reason(pool: Pool, catalog: Catalog) -> str:
    """Why the pool's folders cannot be trusted (not mounted, wrong filesystem), or ""."""
    if not pool.root.is_dir():
        return f"{pool.root} is not a directory: is the pool's filesystem mounted?"
    try:
        fs_type = filesystem_type(pool.root)
    except SharevolError as exc:
        return f"cannot tell the filesystem of {pool.root}: {exc}"
    if pool.kind in FILESYSTEM_KINDS and fs_type != pool.kind:
        return f"{pool.root} is on {fs_type}, not {pool.kind}: is the right filesystem mounted?"
    if not catalog.volumes_dir.is_dir():
        return (
            f"{pool.root} has no catalog ({catalog.volumes_dir}): the pool was never started "
            "here, or its filesystem is not mounted"
        )
    return ""


def list_folder(path: Path) -> list[str] | None:
    """Names in a pool folder, or None when it is missing or not a real directory."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return None
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _locked(catalog: Catalog) -> Iterator[None]:
    """The pool lock, where the catalog exists (taking it would create the catalog folder)."""
    if catalog.root.is_dir():
        with catalog.pool_lock():
            yield
    else:
        yield


def scan_pool(
    config: PoolConfig, handle: PoolHandle, start_problem: str, context: DoctorContext
) -> PoolScan:
    """Folder listings first, then the records, under the pool lock (which a controller
    holds while it reserves a new volume or allocates an ID)."""
    pool, catalog = handle.pool, handle.catalog
    reason = start_problem or unusable_reason(pool, catalog)
    with _locked(catalog):
        entries = {folder: list_folder(pool.root / folder) for folder in FOLDERS}
        volumes = catalog.load_volumes() if not reason else []
        snapshots = catalog.load_snapshots() if not reason else []
    mtimes: dict[str, float] = {}
    for uuid, path in [
        *((r.uuid, catalog.volume_path(r.uuid)) for r in volumes),
        *((r.uuid, catalog.snapshot_path(r.uuid)) for r in snapshots),
    ]:
        with contextlib.suppress(FileNotFoundError):
            mtimes[uuid] = path.stat().st_mtime
    return PoolScan(
        config=config,
        pool=pool,
        catalog=catalog,
        volumes=volumes,
        snapshots=snapshots,
        entries=entries,
        record_mtimes=mtimes,
        context=context,
        usable=not reason,
        unusable_reason=reason,
    )
