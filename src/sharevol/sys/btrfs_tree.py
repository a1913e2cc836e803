"""Reading btrfs trees in-process (BTRFS_IOC_TREE_SEARCH_V2): qgroup usage and limits, the
subvolume list, nested subvolumes and inode counts, decoded from the raw items.

The tree-search items are little-endian on disk; their layouts follow <linux/btrfs_tree.h>.
sharevol.sys.btrfs re-exports every public name here: callers import them from there.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sharevol.sys.btrfs_ioctl import (
    FIRST_FREE_OBJECTID,
    INO_LOOKUP,
    INODE_ITEM_KEY,
    IOC_INO_LOOKUP,
    IOC_TREE_SEARCH_V2,
    LAST_FREE_OBJECTID,
    QGROUP_INFO_KEY,
    QGROUP_LIMIT_KEY,
    QGROUP_LIMIT_MAX_RFER,
    QGROUP_STATUS_KEY,
    QUOTA_TREE_OBJECTID,
    ROOT_ITEM_KEY,
    ROOT_REF_KEY,
    ROOT_TREE_OBJECTID,
    U64_MAX,
    BtrfsError,
    ioctl,
    open_dir,
)

_SEARCH_KEY = struct.Struct("=QQQQQQQIIII32x")  # tree_id, min/max objectid/offset/transid, ...
_NR_ITEMS_OFFSET = 7 * 8 + 2 * 4  # btrfs_ioctl_search_key.nr_items
_SEARCH_HEADER = struct.Struct("=QQQII")  # transid, objectid, offset, type, len
_QGROUP_INFO_ITEM = struct.Struct("<QQQQQ")  # generation, rfer, rfer_cmpr, excl, excl_cmpr
_QGROUP_LIMIT_ITEM = struct.Struct("<QQQQQ")  # flags, max_rfer, max_excl, rsv_rfer, rsv_excl
_ROOT_REF_ITEM = struct.Struct("<QQH")  # dirid, sequence, name_len
_ROOT_ITEM_REFS = struct.Struct("<I")
_ROOT_ITEM_REFS_OFFSET = 216  # after btrfs_inode_item (160) and 7 u64 fields
_SEARCH_BUF_SIZE = 256 * 1024
_SMALL_SEARCH_BUF_SIZE = 4096  # enough for a few quota or root items


@dataclass(frozen=True)
class Qgroup:
    """Accounting of one qgroup; `max_referenced` is None when no referenced limit is set."""

    qgroupid: int
    referenced: int
    exclusive: int
    max_referenced: int | None

    @property
    def level(self) -> int:
        return self.qgroupid >> 48

    @property
    def subvolume_id(self) -> int:
        """The subvolume a level-0 qgroup accounts (qgroup 0/<id>)."""
        return self.qgroupid & ((1 << 48) - 1)


@dataclass(frozen=True)
class Subvolume:
    """A subvolume root item; `deleted` while the cleaner has not dropped it yet (refs == 0)."""

    subvolume_id: int
    deleted: bool


@dataclass(frozen=True)
class ChildSubvolume:
    """A subvolume nested in another: `path` is relative to the parent subvolume's root."""

    subvolume_id: int
    path: str


@dataclass(frozen=True)
class SearchItem:
    """One item of a tree search: its key and raw little-endian payload."""

    objectid: int
    type: int
    offset: int
    data: bytes


def tree_search(
    fs_path: Path,
    tree_id: int,
    min_key: tuple[int, int, int],
    max_key: tuple[int, int, int],
    *,
    limit: int | None = None,
) -> Iterator[SearchItem]:
    """Items with keys (objectid, type, offset) in [min_key, max_key] of tree `tree_id`.

    The range is linear over 136-bit keys, not per field: callers filter on `type`."""
    buf_size = _SMALL_SEARCH_BUF_SIZE if limit is not None and limit <= 4 else _SEARCH_BUF_SIZE
    buf = bytearray(_SEARCH_KEY.size + 8 + buf_size)
    objectid, type_, offset = min_key
    returned = 0
    with open_dir(fs_path, "tree search") as fd:
        while limit is None or returned < limit:
            wanted = 4096 if limit is None else min(4096, limit - returned)
            _SEARCH_KEY.pack_into(
                buf, 0, tree_id, objectid, max_key[0], offset, max_key[2], 0, U64_MAX,
                type_, max_key[1], wanted, 0,
            )  # fmt: skip
            struct.pack_into("=Q", buf, _SEARCH_KEY.size, buf_size)
            ioctl(fd, IOC_TREE_SEARCH_V2, buf, f"tree search of tree {tree_id}", fs_path)
            count = struct.unpack_from("=I", buf, _NR_ITEMS_OFFSET)[0]
            if count == 0:
                return
            last_key = max_key
            for item in parse_search_buffer(buf, _SEARCH_KEY.size + 8, count):
                last_key = (item.objectid, item.type, item.offset)
                yield item
            returned += count
            next_key = _next_key(last_key)
            if next_key is None or next_key > max_key:
                return
            objectid, type_, offset = next_key


def _next_key(key: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """The smallest key after `key`, or None at the end of the key space."""
    objectid, type_, offset = key
    if offset < U64_MAX:
        return objectid, type_, offset + 1
    if type_ < 255:
        return objectid, type_ + 1, 0
    if objectid < U64_MAX:
        return objectid + 1, 0, 0
    return None


def parse_search_buffer(buf: bytes | bytearray, start: int, count: int) -> Iterator[SearchItem]:
    """Decode `count` (btrfs_ioctl_search_header, item) pairs packed from `start`."""
    pos = start
    for _ in range(count):
        _transid, objectid, offset, type_, length = _SEARCH_HEADER.unpack_from(buf, pos)
        pos += _SEARCH_HEADER.size
        yield SearchItem(objectid, type_, offset, bytes(buf[pos : pos + length]))
        pos += length


def quota_enabled(fs_path: Path) -> bool:
    """Whether qgroups are on: the quota tree exists only while they are (ENOENT otherwise)."""
    key = (0, QGROUP_STATUS_KEY, 0)
    try:
        for _ in tree_search(fs_path, QUOTA_TREE_OBJECTID, key, key, limit=1):
            pass
    except BtrfsError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def qgroup(fs_path: Path, subvolume_id: int) -> Qgroup | None:
    """Usage and limit of qgroup 0/<subvolume_id>, or None when there is no such qgroup."""
    info_key = (0, QGROUP_INFO_KEY, subvolume_id)
    limit_key = (0, QGROUP_LIMIT_KEY, subvolume_id)
    infos = list(tree_search(fs_path, QUOTA_TREE_OBJECTID, info_key, info_key, limit=1))
    if not infos:
        return None
    limits = list(tree_search(fs_path, QUOTA_TREE_OBJECTID, limit_key, limit_key, limit=1))
    return _qgroup_from_items(subvolume_id, infos[0].data, limits[0].data if limits else None)


def list_qgroups(fs_path: Path) -> list[Qgroup]:
    """Every qgroup of the filesystem with its usage and limit."""
    infos: dict[int, bytes] = {}
    limits: dict[int, bytes] = {}
    low, high = (0, QGROUP_INFO_KEY, 0), (0, QGROUP_LIMIT_KEY, U64_MAX)
    for item in tree_search(fs_path, QUOTA_TREE_OBJECTID, low, high):
        if item.type == QGROUP_INFO_KEY:
            infos[item.offset] = item.data
        elif item.type == QGROUP_LIMIT_KEY:
            limits[item.offset] = item.data
    return [_qgroup_from_items(qid, data, limits.get(qid)) for qid, data in sorted(infos.items())]


def _qgroup_from_items(qgroupid: int, info: bytes, limit: bytes | None) -> Qgroup:
    """A Qgroup from its raw info item and optional limit item."""
    _gen, rfer, _rfer_cmpr, excl, _excl_cmpr = _QGROUP_INFO_ITEM.unpack_from(info)
    max_rfer: int | None = None
    if limit is not None:
        flags, max_rfer_raw, *_ = _QGROUP_LIMIT_ITEM.unpack_from(limit)
        if flags & QGROUP_LIMIT_MAX_RFER and max_rfer_raw != U64_MAX:
            max_rfer = max_rfer_raw
    return Qgroup(qgroupid, rfer, excl, max_rfer)


def list_subvolumes(fs_path: Path) -> list[Subvolume]:
    """Every subvolume with a root item, including deleted ones the cleaner has not dropped."""
    low = (FIRST_FREE_OBJECTID, ROOT_ITEM_KEY, 0)
    high = (LAST_FREE_OBJECTID, ROOT_ITEM_KEY, U64_MAX)
    found: dict[int, bool] = {}
    for item in tree_search(fs_path, ROOT_TREE_OBJECTID, low, high):
        if item.type != ROOT_ITEM_KEY:
            continue
        refs = _ROOT_ITEM_REFS.unpack_from(item.data, _ROOT_ITEM_REFS_OFFSET)[0]
        found[item.objectid] = refs == 0
    return [Subvolume(sid, deleted) for sid, deleted in sorted(found.items())]


def child_subvolumes(fs_path: Path, parent_id: int) -> list[ChildSubvolume]:
    """Subvolumes nested directly in subvolume `parent_id`, with paths relative to its root."""
    low, high = (parent_id, ROOT_REF_KEY, 0), (parent_id, ROOT_REF_KEY, U64_MAX)
    children: list[ChildSubvolume] = []
    for item in tree_search(fs_path, ROOT_TREE_OBJECTID, low, high):
        if item.type != ROOT_REF_KEY:
            continue
        dirid, _sequence, name_len = _ROOT_REF_ITEM.unpack_from(item.data)
        name = os.fsdecode(item.data[_ROOT_REF_ITEM.size : _ROOT_REF_ITEM.size + name_len])
        directory = _directory_path(fs_path, parent_id, dirid)
        children.append(ChildSubvolume(item.offset, f"{directory}{name}"))
    return children


def _directory_path(fs_path: Path, tree_id: int, dirid: int) -> str:
    """Path of directory inode `dirid` inside subvolume `tree_id`: "" or "a/b/" (INO_LOOKUP)."""
    args = bytearray(INO_LOOKUP.pack(tree_id, dirid, b""))
    with open_dir(fs_path, "ino lookup") as fd:
        ioctl(fd, IOC_INO_LOOKUP, args, f"ino lookup {tree_id}/{dirid}", fs_path)
    raw = bytes(args[16:])
    return os.fsdecode(raw[: raw.index(b"\0")])


def count_inodes(fs_path: Path, subvolume_id: int) -> int:
    """Number of inode items in a subvolume's tree: its files and directories (a file with
    several hard links counts once).

    btrfs keeps no per-subvolume inode counter, so this walks the tree's keys (the kernel copies
    every item; it costs a few ms per ten thousand files)."""
    low = (FIRST_FREE_OBJECTID, INODE_ITEM_KEY, 0)
    high = (LAST_FREE_OBJECTID, INODE_ITEM_KEY, U64_MAX)
    return sum(
        1 for item in tree_search(fs_path, subvolume_id, low, high) if item.type == INODE_ITEM_KEY
    )
