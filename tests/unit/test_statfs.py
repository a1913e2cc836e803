"""statvfs with a deadline and filesystem type lookup, with the OS faked where it would hang."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.errors import Internal
from sharevol.sys import statfs


@pytest.fixture
def hung_statvfs(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """os.statvfs as a dead NFS server does it: blocks until the event is set."""
    release = threading.Event()
    real = os.statvfs

    def statvfs(path: str | os.PathLike[str]) -> os.statvfs_result:
        release.wait(30)
        return real(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    yield release
    release.set()


def test_statvfs_with_deadline_returns_the_real_answer(tmp_path: Path) -> None:
    result = statfs.statvfs_with_deadline(tmp_path, 5.0)

    assert result.f_blocks == os.statvfs(tmp_path).f_blocks


def test_statvfs_that_hangs_raises_internal_at_the_deadline(
    hung_statvfs: threading.Event, tmp_path: Path
) -> None:
    started = time.monotonic()

    with pytest.raises(Internal, match=r"did not answer within 0\.2s"):
        statfs.statvfs_with_deadline(tmp_path / "hung", 0.2)

    assert time.monotonic() - started < 2.0


def test_statvfs_still_hung_fails_at_once_without_another_thread(
    hung_statvfs: threading.Event, tmp_path: Path
) -> None:
    with pytest.raises(Internal):
        statfs.statvfs_with_deadline(tmp_path / "dead", 0.1)
    threads = threading.active_count()
    started = time.monotonic()

    with pytest.raises(Internal, match="still hung"):
        statfs.statvfs_with_deadline(tmp_path / "dead", 5.0)

    assert time.monotonic() - started < 1.0
    assert threading.active_count() == threads


def test_statvfs_error_becomes_internal_with_errno(tmp_path: Path) -> None:
    with pytest.raises(Internal, match=f"errno {errno.ENOENT}"):
        statfs.statvfs_with_deadline(tmp_path / "missing", 5.0)


def test_call_with_deadline_reraises_the_callers_exception() -> None:
    def boom() -> int:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        statfs.call_with_deadline(boom, 5.0, "boom")


MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:30 / /srv rw shared:2 - xfs /dev/vdb rw
31 30 0:31 / /srv/pools rw shared:3 - btrfs /dev/loop0 rw,space_cache=v2
32 30 0:32 / /srv/pools rw shared:4 - tmpfs tmpfs rw
40 22 0:40 / /mnt/nfs\\040share rw - nfs4 server:/export rw,vers=4.2
41 40 0:41 / /mnt/nfs\\040share/inner rw - ext4 /dev/vdc rw
"""


@pytest.fixture
def mountinfo(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return path


@pytest.mark.parametrize(
    ("path", "fs_type"),
    [
        ("/", "ext4"),
        ("/etc/passwd", "ext4"),
        ("/srv", "xfs"),
        ("/srv/other", "xfs"),
        ("/srv/poolsX", "xfs"),
        ("/srv/pools/fast", "tmpfs"),
        ("/mnt/nfs share/vol", "nfs4"),
        ("/mnt/nfs share/inner/x", "ext4"),
    ],
)
def test_filesystem_type_is_the_longest_mount_point_prefix(
    mountinfo: Path, path: str, fs_type: str
) -> None:
    assert statfs.filesystem_type(path, mountinfo) == fs_type


def test_filesystem_type_takes_the_top_of_stacked_mounts(mountinfo: Path) -> None:
    assert statfs.filesystem_type("/srv/pools", mountinfo) == "tmpfs"


def test_filesystem_type_resolves_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    table = tmp_path / "mountinfo"
    table.write_text(
        f"22 1 0:21 / / rw - ext4 /dev/vda rw\n31 22 0:31 / {real} rw - btrfs /dev/loop0 rw\n"
    )

    assert statfs.filesystem_type(tmp_path / "link" / "pool", table) == "btrfs"


def test_mounts_under_lists_the_point_and_below_only(mountinfo: Path) -> None:
    assert statfs.mounts_under("/srv", mountinfo) == ["/srv", "/srv/pools"]
    assert statfs.mounts_under("/mnt/nfs share/inner", mountinfo) == ["/mnt/nfs share/inner"]
    assert statfs.mounts_under("/srv/pools/fast", mountinfo) == []


def test_real_mount_table_knows_the_root_filesystem() -> None:
    assert statfs.filesystem_type("/proc") == "proc"
