"""Pools never build a path from an unsafe name: every entry point validates it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharevol.errors import InvalidArgument
from sharevol.pools.base import safe_child
from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.plain import PlainPool

UNSAFE = [
    pytest.param("../x", id="dotdot-slash"),
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("", id="empty"),
    pytest.param("/abs", id="absolute"),
    pytest.param("a/b", id="two-components"),
    pytest.param("a\0b", id="nul-byte"),
    pytest.param("a\n", id="trailing-newline"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("x" * 10_000, id="10k-name"),
    pytest.param("x" * 129, id="129-chars"),
]


@pytest.mark.parametrize("name", UNSAFE)
def test_safe_child_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid directory name"):
        safe_child(Path("/pool/volumes"), name)


def test_safe_child_accepts_one_plain_component() -> None:
    assert safe_child(Path("/pool/volumes"), "pvc-1.data_x") == Path("/pool/volumes/pvc-1.data_x")
    assert safe_child(Path("/p"), "x" * 128) == Path("/p") / ("x" * 128)


@pytest.mark.parametrize("name", UNSAFE)
def test_plain_pool_refuses_unsafe_names_before_touching_the_disk(
    tmp_path: Path, name: str
) -> None:
    pool = PlainPool("plain", tmp_path)  # not started: nothing may be created either way
    with pytest.raises(InvalidArgument):
        pool.create_volume(name, 1024)
    with pytest.raises(InvalidArgument):
        pool.delete_volume(name, {})
    with pytest.raises(InvalidArgument):
        pool.archive_volume("ok", name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", UNSAFE)
def test_btrfs_pool_refuses_unsafe_names_before_any_ioctl(tmp_path: Path, name: str) -> None:
    pool = BtrfsPool("fast", tmp_path)
    with pytest.raises(InvalidArgument):
        pool.create_volume(name, 1024)
    with pytest.raises(InvalidArgument):
        pool.delete_volume(name, {})
    with pytest.raises(InvalidArgument):
        pool.set_limit(name, 1024, {})
    with pytest.raises(InvalidArgument):
        pool.usage(name, 1024, {})
    assert list(tmp_path.iterdir()) == []
