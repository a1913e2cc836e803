"""The btrfs ioctl layouts and the pool's start checks, with the kernel faked at sys.btrfs."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sharevol.errors import FailedPrecondition, Internal
from sharevol.pools import btrfs as btrfs_pool
from sharevol.pools.btrfs import BtrfsPool
from sharevol.sys import btrfs, btrfs_ioctl, btrfs_tree


def _ioc_size(request: int) -> int:
    return (request >> 16) & 0x3FFF


@pytest.mark.parametrize(
    ("request_code", "layout_size"),
    [
        (btrfs_ioctl.IOC_SUBVOL_CREATE, btrfs._VOL_ARGS.size),
        (btrfs_ioctl.IOC_SNAP_DESTROY, btrfs._VOL_ARGS.size),
        (btrfs_ioctl.IOC_SNAP_CREATE_V2, btrfs._VOL_ARGS_V2.size),
        (btrfs_ioctl.IOC_INO_LOOKUP, btrfs_ioctl.INO_LOOKUP.size),
        (btrfs_ioctl.IOC_QGROUP_CREATE, btrfs._QGROUP_CREATE.size),
        (btrfs_ioctl.IOC_QGROUP_LIMIT, btrfs._QGROUP_LIMIT.size),
        (btrfs_ioctl.IOC_TREE_SEARCH_V2, btrfs_tree._SEARCH_KEY.size + 8),
    ],
)
def test_ioctl_numbers_encode_the_size_of_their_struct(
    request_code: int, layout_size: int
) -> None:
    assert _ioc_size(request_code) == layout_size


def test_search_key_is_104_bytes_with_nr_items_at_64() -> None:
    packed = btrfs_tree._SEARCH_KEY.pack(1, 2, 3, 4, 5, 6, 7, 8, 9, 42, 0)
    assert len(packed) == 104
    assert struct.unpack_from("=I", packed, btrfs_tree._NR_ITEMS_OFFSET)[0] == 42


def _item(objectid: int, type_: int, offset: int, data: bytes) -> bytes:
    return struct.pack("=QQQII", 7, objectid, offset, type_, len(data)) + data


def test_parse_search_buffer_decodes_headers_and_payloads() -> None:
    buf = b"\xff" * 8 + _item(0, 242, 256, b"abc") + _item(0, 244, 256, b"")

    items = list(btrfs_tree.parse_search_buffer(buf, 8, 2))

    assert items == [
        btrfs_tree.SearchItem(0, 242, 256, b"abc"),
        btrfs_tree.SearchItem(0, 244, 256, b""),
    ]


def test_next_key_carries_into_type_and_objectid() -> None:
    top = btrfs_ioctl.U64_MAX
    assert btrfs_tree._next_key((5, 1, 9)) == (5, 1, 10)
    assert btrfs_tree._next_key((5, 1, top)) == (5, 2, 0)
    assert btrfs_tree._next_key((5, 255, top)) == (6, 0, 0)
    assert btrfs_tree._next_key((top, 255, top)) is None


def test_qgroup_items_give_usage_and_the_referenced_limit() -> None:
    info = struct.pack("<QQQQQ", 10, 5000, 5000, 4000, 4000)
    limit = struct.pack("<QQQQQ", btrfs_ioctl.QGROUP_LIMIT_MAX_RFER, 1 << 30, 0, 0, 0)

    group = btrfs_tree._qgroup_from_items(257, info, limit)

    assert group == btrfs.Qgroup(257, referenced=5000, exclusive=4000, max_referenced=1 << 30)
    assert (group.level, group.subvolume_id) == (0, 257)


def test_qgroup_without_max_rfer_flag_has_no_limit() -> None:
    info = struct.pack("<QQQQQ", 1, 16384, 16384, 16384, 16384)
    only_excl = struct.pack("<QQQQQ", 2, 123, 456, 0, 0)

    assert btrfs_tree._qgroup_from_items(300, info, only_excl).max_referenced is None
    assert btrfs_tree._qgroup_from_items(300, info, None).max_referenced is None


def test_subvolume_names_must_be_one_component() -> None:
    for bad in ("", ".", "..", "a/b", "a\0b", "x" * 256):
        with pytest.raises(Internal):
            btrfs._name_bytes(bad)
    assert btrfs._name_bytes("x" * 255) == b"x" * 255


def test_start_refuses_a_path_not_on_btrfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(btrfs_pool, "filesystem_type", lambda path: "xfs")

    with pytest.raises(FailedPrecondition, match=r"is on xfs, not btrfs.*kind \"plain\""):
        BtrfsPool("fast", tmp_path).start()
    assert list(tmp_path.iterdir()) == []


def test_start_with_quotas_off_says_to_enable_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(btrfs_pool, "filesystem_type", lambda path: "btrfs")
    monkeypatch.setattr(btrfs, "quota_enabled", lambda path: False)

    with pytest.raises(FailedPrecondition) as caught:
        BtrfsPool("fast", tmp_path).start()

    assert str(caught.value) == (
        f'pool "fast" at {tmp_path} has btrfs quotas off: run `btrfs quota enable {tmp_path}`'
    )
    assert list(tmp_path.iterdir()) == []


def test_start_refuses_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="is not a directory"):
        BtrfsPool("fast", tmp_path / "not-mounted").start()


class FakeQuotaTree:
    """sys.btrfs's qgroup and subvolume listings as a 6.1 kernel leaves them after deletes."""

    def __init__(self, qgroups: list[btrfs.Qgroup], subvolumes: list[int]) -> None:
        self.qgroups = qgroups
        self.subvolumes = subvolumes
        self.busy: set[int] = set()
        self.removed: list[int] = []

    def list_qgroups(self, fs_path: Path) -> list[btrfs.Qgroup]:
        return list(self.qgroups)

    def list_subvolumes(self, fs_path: Path) -> list[btrfs.Subvolume]:
        return [btrfs.Subvolume(sid, deleted=False) for sid in self.subvolumes]

    def remove_qgroup(self, fs_path: Path, qgroupid: int) -> None:
        if qgroupid in self.busy:
            raise btrfs.BtrfsError("qgroup remove", fs_path, OSError(16, "Device busy"))
        self.removed.append(qgroupid)


def _group(qgroupid: int) -> btrfs.Qgroup:
    return btrfs.Qgroup(qgroupid, referenced=0, exclusive=0, max_referenced=None)


def test_drop_stale_qgroups_removes_only_level0_groups_without_a_subvolume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    level1 = (1 << 48) | 100
    fake = FakeQuotaTree(
        [_group(5), _group(256), _group(257), _group(300), _group(level1)], subvolumes=[256]
    )
    fake.busy.add(300)  # the cleaner is still freeing it: left for the next start
    for name in ("list_qgroups", "list_subvolumes", "remove_qgroup"):
        monkeypatch.setattr(btrfs, name, getattr(fake, name))

    dropped = BtrfsPool("fast", tmp_path).drop_stale_qgroups()

    assert dropped == [257]
    assert fake.removed == [257]
