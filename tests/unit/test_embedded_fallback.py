"""What the embedded pool decides, pinned down with fakes: when it falls back, what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharevol.errors import CommandFailed, FailedPrecondition, InvalidArgument
from sharevol.service.embedded import EmbeddedPool
from sharevol.sys.fake import FakeMounter, FakeRunner

GiB = 1024**3


def _not_installed(argv: list[str]) -> None:
    """What SubprocessRunner raises when the executable does not exist."""
    raise CommandFailed(argv, None, f"{argv[0]}: command not found")


def _pool(state_dir: Path, runner: FakeRunner, euid: int = 0) -> EmbeddedPool:
    return EmbeddedPool(state_dir, GiB, runner, mounter=FakeMounter(), geteuid=lambda: euid)


def _touched_storage(runner: FakeRunner) -> list[list[str]]:
    storage = {"truncate", "losetup", "mkfs.btrfs", "mount", "btrfs"}
    return [
        argv
        for argv in runner.calls
        if argv[0] in storage and argv[1:] not in (["--version"], ["--find"])
    ]


def test_missing_mkfs_btrfs_falls_back_to_plain_directory_naming_the_package(
    tmp_path: Path,
) -> None:
    runner = FakeRunner()
    runner.script(["mkfs.btrfs"], action=_not_installed)

    result = _pool(tmp_path, runner).attach()

    assert result.kind == "plain"
    assert result.path == tmp_path / "pool"
    assert result.path.is_dir()
    assert result.fallback_reason is not None
    assert "mkfs.btrfs not found" in result.fallback_reason
    assert "btrfs-progs" in result.fallback_reason
    assert _touched_storage(runner) == []
    assert not (tmp_path / "pool.img").exists()


def test_not_root_falls_back_without_running_anything(tmp_path: Path) -> None:
    runner = FakeRunner()

    result = _pool(tmp_path, runner, euid=1000).attach()

    assert result.kind == "plain"
    assert result.fallback_reason is not None
    assert "not running as root" in result.fallback_reason
    assert runner.calls == []


def test_no_free_loop_device_falls_back_with_the_reason(tmp_path: Path) -> None:
    runner = FakeRunner()
    runner.script(
        ["losetup", "--find"], returncode=1, stderr="losetup: cannot find an unused loop device"
    )

    result = _pool(tmp_path, runner).attach()

    assert result.kind == "plain"
    assert result.fallback_reason is not None
    assert "no free loop device" in result.fallback_reason
    assert "cannot find an unused loop device" in result.fallback_reason


def test_existing_image_with_another_filesystem_is_never_formatted(tmp_path: Path) -> None:
    (tmp_path / "pool.img").write_bytes(b"")
    runner = FakeRunner()
    runner.script(["losetup", "--find", "--show"], stdout="/dev/loop7\n")
    runner.script(["blkid"], stdout="xfs\n")
    pool = EmbeddedPool(tmp_path, GiB, runner, mounter=FakeMounter(), geteuid=lambda: 0, fs="btrfs")

    with pytest.raises(FailedPrecondition, match="holds a xfs filesystem, not btrfs"):
        pool.attach()

    assert not any(argv[0] == "mkfs.btrfs" and len(argv) > 2 for argv in runner.calls)
    assert ["losetup", "-d", "/dev/loop7"] in runner.calls, "the loop device it attached is freed"


def test_new_image_is_formatted_without_force(tmp_path: Path) -> None:
    runner = FakeRunner()
    runner.script(["losetup", "--find", "--show"], stdout="/dev/loop7\n")
    runner.script(["blkid"], returncode=2)
    runner.script(["truncate"], action=lambda argv: Path(argv[-1]).touch())

    result = _pool(tmp_path, runner).attach()

    assert result.kind == "btrfs"
    assert ["mkfs.btrfs", "-q", "-L", "sharevol", "/dev/loop7"] in runner.calls
    assert ["btrfs", "quota", "enable", str(tmp_path / "pool")] in runner.calls
    assert all(timeout > 0 for timeout in runner.timeouts), "every command has a timeout"


def test_size_below_the_minimum_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="too small"):
        EmbeddedPool(tmp_path, 1024**2, FakeRunner())
