"""sharevol.sys.nfs_mount: option merging, what may be mounted, the mount argv and the unmount
that escalates when a dead server makes it hang (FakeRunner)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from sharevol.errors import CommandFailed, Internal, InvalidArgument
from sharevol.sys.fake import FakeRunner
from sharevol.sys.nfs_mount import (
    Health,
    Unmounted,
    check_export_path,
    check_server,
    check_subdir,
    merge_options,
    mount_nfs,
    nfs_device,
    option_value,
    probe,
    unmount_nfs,
)


def test_merge_adds_nfs_4_1_when_no_version_is_given() -> None:
    assert merge_options(["hard"]) == ["vers=4.1", "hard"]


def test_merge_later_options_replace_earlier_ones_of_the_same_key() -> None:
    merged = merge_options(["vers=4.1", "proto=tcp", "port=2049", "soft"], ["nfsvers=4.2", "hard"])
    assert merged == ["proto=tcp", "port=2049", "vers=4.2", "hard"]


def test_merge_ro_replaces_rw_and_noac_replaces_ac() -> None:
    assert merge_options(["vers=4.1", "rw", "ac"], ["noac", "ro"]) == ["vers=4.1", "noac", "ro"]


def test_merge_splits_comma_separated_flags() -> None:
    assert merge_options(["hard,nfsvers=4.1", " timeo=600 "]) == ["hard", "vers=4.1", "timeo=600"]


def test_merge_minorversion_without_vers_mounts_version_4() -> None:
    assert merge_options(["minorversion=2"]) == ["vers=4", "minorversion=2"]


@pytest.mark.parametrize("version", ["nfsvers=3", "vers=2", "vers=4.3", "vers"])
def test_merge_refuses_anything_but_nfs_version_4(version: str) -> None:
    with pytest.raises(InvalidArgument, match="NFSv4 only"):
        merge_options([version])


@pytest.mark.parametrize("option", ["hard two", "x;rm", 'context="a"', "a\nb", "tab\there"])
def test_merge_refuses_options_no_nfs_mount_has(option: str) -> None:
    with pytest.raises(InvalidArgument, match="not a valid NFS mount option"):
        merge_options([option])


def test_option_value_reads_the_last_value_and_knows_synonyms() -> None:
    assert option_value(["port=1", "port=2"], "port") == "2"
    assert option_value(["nfsvers=4.2"], "vers") == "4.2"
    assert option_value(["hard"], "port") is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("192.168.30.147", "192.168.30.147"), ("nas.example.com", "nas.example.com"),
     ("fd00::1", "fd00::1"), ("nas", "nas")],
)  # fmt: skip
def test_check_server_accepts_addresses_and_dns_names(given: str, expected: str) -> None:
    assert check_server(given) == expected


@pytest.mark.parametrize("given", ["", "nas:/x", "-o", "a b", "nas_1", "x" * 300, "a..b"])
def test_check_server_refuses_everything_else(given: str) -> None:
    with pytest.raises(InvalidArgument, match="neither an IP address nor a DNS name"):
        check_server(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/data/k8s", "/data/k8s"), ("/data/k8s/", "/data/k8s"), ("/", "/")],
)
def test_check_export_path_accepts_absolute_plain_paths(given: str, expected: str) -> None:
    assert check_export_path(given) == expected


@pytest.mark.parametrize(
    "given", ["data/k8s", "/data/../etc", "/data//k8s", "/data/./k8s", "/a b", "/a:b", "/a\0"]
)
def test_check_export_path_refuses_relative_dots_and_odd_names(given: str) -> None:
    with pytest.raises(InvalidArgument):
        check_export_path(given)


@pytest.mark.parametrize(("given", "expected"), [("pv1", "pv1"), ("a/b/", "a/b"), ("", "")])
def test_check_subdir_accepts_relative_plain_paths(given: str, expected: str) -> None:
    assert check_subdir(given) == expected


@pytest.mark.parametrize("given", ["/pv1", "..", "a/../../etc", "a//b", "a/./b", "x" * 1100])
def test_check_subdir_refuses_absolute_and_dot_dot(given: str) -> None:
    with pytest.raises(InvalidArgument):
        check_subdir(given)


def test_device_brackets_ipv6_servers() -> None:
    assert nfs_device("10.0.0.1", "/a") == "10.0.0.1:/a"
    assert nfs_device("fd00::1", "/a") == "[fd00::1]:/a"


def test_mount_runs_mount_t_nfs4_with_the_options_and_the_timeout() -> None:
    runner = FakeRunner()
    mount_nfs(runner, "nas:/data/k8s/pv1", "/stage", ["vers=4.1", "hard"], timeout=7.5)
    assert runner.calls == [
        ["mount", "-t", "nfs4", "-o", "vers=4.1,hard", "--", "nas:/data/k8s/pv1", "/stage"]
    ]
    assert runner.timeouts == [7.5]


def test_mount_timeout_says_the_server_may_be_down() -> None:
    runner = FakeRunner()
    runner.script(["mount"], timed_out=True)
    with pytest.raises(Internal, match=r"did not finish within 3s and was killed: is the NFS"):
        mount_nfs(runner, "nas:/x", "/stage", ["vers=4.1"], timeout=3)


def test_mount_failure_keeps_the_reason() -> None:
    runner = FakeRunner()
    runner.script(["mount"], returncode=32, stderr="mount.nfs4: access denied by server")
    with pytest.raises(Internal, match="access denied by server"):
        mount_nfs(runner, "nas:/x", "/stage", ["vers=4.1"], timeout=3)


def test_unmount_that_finishes_is_clean() -> None:
    runner = FakeRunner()
    assert unmount_nfs(runner, "/stage", timeout=4) is Unmounted.CLEAN
    assert runner.calls == [["umount", "--", "/stage"]]
    assert runner.timeouts == [4]


def test_stuck_unmount_escalates_to_force() -> None:
    runner = FakeRunner()
    runner.script(["umount", "--"], timed_out=True)
    assert unmount_nfs(runner, "/stage", timeout=4) is Unmounted.FORCED
    assert runner.calls == [["umount", "--", "/stage"], ["umount", "-f", "--", "/stage"]]
    assert runner.timeouts == [4, 4]


def test_stuck_forced_unmount_escalates_to_lazy() -> None:
    runner = FakeRunner()
    runner.script(["umount", "--"], timed_out=True)
    runner.script(["umount", "-f"], timed_out=True)
    assert unmount_nfs(runner, "/stage", timeout=4) is Unmounted.LAZY
    assert runner.calls[-1] == ["umount", "-l", "--", "/stage"]


def test_stale_unmount_escalates_too() -> None:
    runner = FakeRunner()
    runner.script(["umount", "--"], returncode=16, stderr="umount.nfs4: /stage: Stale file handle")
    assert unmount_nfs(runner, "/stage", timeout=4) is Unmounted.FORCED


def test_busy_unmount_is_raised_not_forced() -> None:
    runner = FakeRunner()
    runner.script(["umount", "--"], returncode=32, stderr="umount: /stage: target is busy.")
    with pytest.raises(CommandFailed, match="target is busy"):
        unmount_nfs(runner, "/stage", timeout=4)
    assert runner.calls == [["umount", "--", "/stage"]]


def test_probe_of_a_healthy_directory_has_its_numbers(tmp_path: Path) -> None:
    result = probe(str(tmp_path), timeout=5)
    assert result.health is Health.OK
    assert result.statvfs is not None and result.statvfs.f_blocks > 0


def test_probe_names_a_stale_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    def stale(path: str) -> os.statvfs_result:
        raise OSError(errno.ESTALE, "Stale file handle")

    monkeypatch.setattr(os, "statvfs", stale)
    assert probe("/stale-here", timeout=5).health is Health.STALE


def test_probe_of_a_hung_server_answers_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hang(path: str) -> os.statvfs_result:
        release.wait(30)
        raise OSError(errno.EIO, "gone")

    monkeypatch.setattr(os, "statvfs", hang)
    try:
        result = probe("/hung-here-unit", timeout=0.2)
    finally:
        release.set()
    assert result.health is Health.HUNG
    assert "did not answer within 0.2s" in result.message
