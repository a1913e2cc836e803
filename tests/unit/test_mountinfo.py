"""mountinfo parsing, mount-table queries, SystemMounter's commands, and the shipped fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharevol.errors import CommandFailed, Internal
from sharevol.sys.fake import FakeMounter, FakeRunner
from sharevol.sys.mounts import (
    MountIdentity,
    SystemMounter,
    containing_mount,
    identity_of,
    parse_mountinfo,
    parse_mountinfo_line,
    top_mount_at,
)

SAMPLE = b"""\
22 27 0:21 / /proc rw,relatime shared:5 - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
43 27 0:39 / /srv/pool rw,relatime shared:30 - btrfs /dev/loop0 rw,subvolid=5,subvol=/
46 27 0:39 /volumes/pvc-1 /kubelet/stage/pvc\\0401 ro shared:31 - btrfs /dev/loop0 rw
47 46 0:39 /volumes/pvc-1 /kubelet/stage/pvc\\0401 rw - btrfs /dev/loop0 rw
48 27 7:1 /back\\134slash /mnt/tab\\011and\\012newline rw - xfs /dev/loop1 rw,attr2
"""


def test_parses_every_field_of_a_mountinfo_line() -> None:
    entry = parse_mountinfo(SAMPLE)[2]
    assert entry.mount_id == 43
    assert entry.parent_id == 27
    assert entry.device == "0:39"
    assert entry.root == "/"
    assert entry.mount_point == "/srv/pool"
    assert entry.mount_options == ("rw", "relatime")
    assert entry.optional_fields == ("shared:30",)
    assert entry.fs_type == "btrfs"
    assert entry.source == "/dev/loop0"
    assert entry.super_options == ("rw", "subvolid=5", "subvol=/")
    assert not entry.read_only


def test_decodes_octal_escapes_in_paths() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert entries[3].mount_point == "/kubelet/stage/pvc 1"
    assert entries[5].root == "/back\\slash"
    assert entries[5].mount_point == "/mnt/tab\tand\nnewline"


def test_per_mount_ro_is_read_only_even_on_a_rw_filesystem() -> None:
    entry = parse_mountinfo(SAMPLE)[3]
    assert entry.read_only
    assert entry.super_options[0] == "rw"


def test_line_without_optional_fields_parses() -> None:
    entry = parse_mountinfo_line(b"48 27 7:1 / /mnt rw - xfs /dev/loop1 rw,attr2\n")
    assert entry.optional_fields == ()
    assert entry.fs_type == "xfs"


def test_non_utf8_path_round_trips_through_fsdecode() -> None:
    entry = parse_mountinfo_line(b"48 27 7:1 / /mnt/caf\xe9 rw - xfs /dev/loop1 rw\n")
    assert entry.mount_point.encode("utf-8", "surrogateescape") == b"/mnt/caf\xe9"


def test_garbage_line_is_internal_error() -> None:
    with pytest.raises(Internal, match="unparsable mountinfo"):
        parse_mountinfo_line(b"this is not mountinfo\n")


def test_find_returns_the_top_of_stacked_mounts() -> None:
    top = top_mount_at(parse_mountinfo(SAMPLE), "/kubelet/stage/pvc 1")
    assert top is not None
    assert top.mount_id == 47


def test_find_needs_the_exact_mount_point() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert top_mount_at(entries, "/srv") is None
    assert top_mount_at(entries, "/srv/pool/volumes") is None
    found = top_mount_at(entries, "/srv/pool/")
    assert found is not None
    assert found.mount_id == 43


def test_identity_of_a_directory_is_its_path_inside_the_containing_filesystem() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert containing_mount(entries, "/srv/pool/volumes/pvc-1").mount_id == 43
    assert containing_mount(entries, "/srv/poolx").mount_id == 27
    assert identity_of(entries, "/srv/pool/volumes/pvc-1") == MountIdentity(
        "0:39", "/volumes/pvc-1"
    )
    assert identity_of(entries, "/srv/pool") == MountIdentity("0:39", "/")


def test_identity_ignores_the_deleted_mark() -> None:
    deleted = MountIdentity("0:39", "/volumes/pvc-1//deleted")
    assert deleted.deleted
    assert deleted.same_source(MountIdentity("0:39", "/volumes/pvc-1"))
    assert not deleted.same_source(MountIdentity("0:40", "/volumes/pvc-1"))
    assert not deleted.same_source(MountIdentity("0:39", "/volumes/pvc-2"))


# ---- SystemMounter against a FakeRunner and a scripted mountinfo file ---------------------


def _mountinfo_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_readonly_bind_runs_one_mount_with_ro_and_a_timeout(tmp_path: Path) -> None:
    mountinfo = _mountinfo_file(
        tmp_path, "1 0 254:0 / / rw - ext4 /dev/vda rw", "2 1 254:0 /src /dst ro - ext4 /dev/vda rw"
    )
    runner = FakeRunner()
    mounter = SystemMounter(runner, timeout=7.0, mountinfo=mountinfo)
    mounter.bind("/src", "/dst", readonly=True)
    assert runner.calls == [["mount", "--bind", "-o", "ro", "--", "/src", "/dst"]]
    assert runner.timeouts == [7.0]


def test_readonly_bind_that_came_out_writable_is_remounted_ro(tmp_path: Path) -> None:
    mountinfo = _mountinfo_file(
        tmp_path, "1 0 254:0 / / rw - ext4 /dev/vda rw", "2 1 254:0 /src /dst rw - ext4 /dev/vda rw"
    )

    def remount(argv: list[str]) -> None:
        mountinfo.write_text(mountinfo.read_text().replace("/dst rw", "/dst ro"))

    runner = FakeRunner()
    runner.script(["mount", "-o", "remount,bind,ro"], action=remount)
    SystemMounter(runner, mountinfo=mountinfo).bind("/src", "/dst", readonly=True)
    assert runner.calls[-1] == ["mount", "-o", "remount,bind,ro", "--", "/dst"]


def test_readonly_bind_that_stays_writable_is_undone_and_fails(tmp_path: Path) -> None:
    mountinfo = _mountinfo_file(
        tmp_path, "1 0 254:0 / / rw - ext4 /dev/vda rw", "2 1 254:0 /src /dst rw - ext4 /dev/vda rw"
    )
    runner = FakeRunner()
    with pytest.raises(Internal, match="did not become read-only"):
        SystemMounter(runner, mountinfo=mountinfo).bind("/src", "/dst", readonly=True)
    assert runner.calls[-1] == ["umount", "--", "/dst"]


def test_failed_mount_raises_command_failed_with_stderr(tmp_path: Path) -> None:
    runner = FakeRunner()
    runner.script(["mount"], returncode=32, stderr="mount: /dst: mount point does not exist.")
    mounter = SystemMounter(runner, mountinfo=_mountinfo_file(tmp_path))
    with pytest.raises(CommandFailed, match="mount point does not exist"):
        mounter.mount("server:/export", "/dst", "nfs4", ["vers=4.1", "soft"])
    assert runner.calls == [
        ["mount", "-t", "nfs4", "-o", "vers=4.1,soft", "--", "server:/export", "/dst"]
    ]


def test_fake_runner_longest_prefix_wins_and_timeouts_raise() -> None:
    runner = FakeRunner()
    runner.script(["umount"], returncode=32, stderr="not mounted")
    runner.script(["umount", "--", "/hung"], timed_out=True)
    with pytest.raises(CommandFailed) as info:
        runner.run(["umount", "--", "/hung"], timeout=1.0)
    assert info.value.timed_out
    assert runner.run(["umount", "--", "/x"], check=False).returncode == 32
    assert runner.run(["true"]).returncode == 0


# ---- FakeMounter keeps the kernel's rules ---------------------------------------------------


def test_fake_bind_shows_source_root_and_device_like_mountinfo(tmp_path: Path) -> None:
    (tmp_path / "vol").mkdir()
    (tmp_path / "stage").mkdir()
    (tmp_path / "target").mkdir()
    mounter = FakeMounter()
    mounter.bind(tmp_path / "vol", tmp_path / "stage", readonly=False)
    mounter.bind(tmp_path / "stage", tmp_path / "target", readonly=True)
    target = mounter.find(tmp_path / "target")
    assert target is not None
    assert target.identity == MountIdentity("0:1", str(tmp_path / "vol"))
    assert target.read_only


def test_fake_refuses_missing_mount_point_and_unmount_of_nothing(tmp_path: Path) -> None:
    mounter = FakeMounter()
    with pytest.raises(CommandFailed, match="mount point does not exist"):
        mounter.bind(tmp_path, tmp_path / "missing", readonly=False)
    with pytest.raises(CommandFailed, match="not mounted"):
        mounter.unmount(tmp_path)


def test_fake_stacks_mounts_and_unmounts_the_top_first(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "t").mkdir()
    mounter = FakeMounter()
    mounter.bind(tmp_path / "a", tmp_path / "t", readonly=False)
    mounter.bind(tmp_path / "b", tmp_path / "t", readonly=False)
    top = mounter.find(tmp_path / "t")
    assert top is not None
    assert top.root == str(tmp_path / "b")
    mounter.unmount(tmp_path / "t")
    top = mounter.find(tmp_path / "t")
    assert top is not None
    assert top.root == str(tmp_path / "a")


def test_fake_unmount_of_a_mount_with_submounts_is_busy(tmp_path: Path) -> None:
    (tmp_path / "fs").mkdir()
    mounter = FakeMounter()
    mounter.mount("tmpfs", tmp_path / "fs", "tmpfs")
    (tmp_path / "fs" / "inner").mkdir()
    mounter.bind(tmp_path, tmp_path / "fs" / "inner", readonly=False)
    with pytest.raises(CommandFailed, match="busy"):
        mounter.unmount(tmp_path / "fs")
