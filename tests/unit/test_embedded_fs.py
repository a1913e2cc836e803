"""`sharevol up --fs xfs|ext4`, pinned down with fakes: the image is made and mounted for project
quotas where the kernel can; where it cannot, a fresh image is thrown away and the pool falls
back to btrfs saying why; an existing image is never reformatted nor silently replaced."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from sharevol.errors import CommandFailed, FailedPrecondition, InvalidArgument
from sharevol.service.embedded import EmbeddedPool
from sharevol.service.embedded_fs import FsName
from sharevol.sys.fake import FakeMounter, FakeRunner

GiB = 1024**3
DEVICE = "/dev/loop7"


class NoQuotaKernel(FakeMounter):
    """A kernel without XFS/ext4 quota: `-o prjquota` is refused, a plain mount works."""

    def mount(
        self,
        source: str,
        target: str | os.PathLike[str],
        fstype: str,
        options: Sequence[str] = (),
    ) -> None:
        if "prjquota" in options:
            raise CommandFailed(
                ["mount", "-t", fstype, "-o", ",".join(options), source, str(target)],
                32,
                f"mount: {target}: wrong fs type, bad option, bad superblock on {source}.",
            )
        super().mount(source, target, fstype, options)


def fresh_image_runner() -> FakeRunner:
    """losetup hands out DEVICE, the new image is blank, truncate really makes the file."""
    runner = FakeRunner()
    runner.script(["losetup", "--find", "--show"], stdout=f"{DEVICE}\n")
    runner.script(["blkid"], returncode=2)
    runner.script(["truncate"], action=lambda argv: Path(argv[-1]).touch())
    return runner


def pool(
    state_dir: Path, runner: FakeRunner, fs: FsName | None, mounter: FakeMounter | None = None
) -> EmbeddedPool:
    return EmbeddedPool(
        state_dir, GiB, runner, mounter=mounter or FakeMounter(), geteuid=lambda: 0, fs=fs
    )


def mounts_of(mounter: FakeMounter) -> list[tuple[str, ...]]:
    return [op for op in mounter.operations if op[0] == "mount"]


def test_fs_xfs_formats_for_xfs_and_mounts_with_prjquota(tmp_path: Path) -> None:
    runner, mounter = fresh_image_runner(), FakeMounter()

    result = pool(tmp_path, runner, "xfs", mounter).attach()

    assert (result.kind, result.fallback_reason, result.device) == ("xfs", None, DEVICE)
    assert ["mkfs.xfs", "-q", "-L", "sharevol", DEVICE] in runner.calls
    assert mounts_of(mounter) == [("mount", DEVICE, str(tmp_path / "pool"), "xfs", "prjquota")]
    assert ["xfs_growfs", str(tmp_path / "pool")] in runner.calls
    assert not any(argv[0].endswith("btrfs") and "--version" not in argv for argv in runner.calls)


def test_fs_ext4_formats_with_the_quota_and_project_features(tmp_path: Path) -> None:
    runner, mounter = fresh_image_runner(), FakeMounter()

    result = pool(tmp_path, runner, "ext4", mounter).attach()

    assert result.kind == "ext4"
    mkfs = ["mkfs.ext4", "-q", "-L", "sharevol", "-O", "quota,project", "-E", "quotatype=prjquota"]
    assert [*mkfs, DEVICE] in runner.calls
    assert mounts_of(mounter) == [("mount", DEVICE, str(tmp_path / "pool"), "ext4", "prjquota")]
    assert ["resize2fs", DEVICE] in runner.calls


def test_kernel_without_xfs_quota_falls_back_to_btrfs_saying_why(tmp_path: Path) -> None:
    runner, mounter = fresh_image_runner(), NoQuotaKernel()
    blank = {"formatted": False}

    def mkfs(argv: list[str]) -> None:
        blank["formatted"] = True

    runner.script(["mkfs.xfs"], action=mkfs)

    result = pool(tmp_path, runner, "xfs", mounter).attach()

    assert result.kind == "btrfs"
    assert result.requested == "xfs"
    assert result.fallback_reason is not None
    assert "xfs with project quotas is not possible here" in result.fallback_reason
    assert "mounts xfs but not with -o prjquota" in result.fallback_reason
    assert "CONFIG_XFS_QUOTA" in result.fallback_reason
    assert blank["formatted"]
    # The XFS image was thrown away (it held nothing) and a btrfs one made in its place.
    assert runner.calls.count(["losetup", "-d", DEVICE]) == 1
    assert ["mkfs.btrfs", "-q", "-L", "sharevol", DEVICE] in runner.calls
    assert mounts_of(mounter)[-1] == ("mount", DEVICE, str(tmp_path / "pool"), "btrfs", "")


def test_missing_xfsprogs_falls_back_to_btrfs_naming_the_package(tmp_path: Path) -> None:
    runner = fresh_image_runner()
    runner.script(["mkfs.xfs"], action=lambda argv: _not_installed(argv))

    result = pool(tmp_path, runner, "xfs").attach()

    assert result.kind == "btrfs"
    assert result.fallback_reason is not None
    assert "mkfs.xfs not found: install xfsprogs" in result.fallback_reason


def test_no_root_with_fs_xfs_is_a_plain_directory_saying_why(tmp_path: Path) -> None:
    runner = FakeRunner()
    embedded = EmbeddedPool(tmp_path, GiB, runner, mounter=FakeMounter(), geteuid=lambda: 1000,
                            fs="xfs")  # fmt: skip

    result = embedded.attach()

    assert result.kind == "plain"
    assert result.fallback_reason is not None and "not running as root" in result.fallback_reason
    assert runner.calls == []


def test_existing_xfs_image_is_used_again_without_fs(tmp_path: Path) -> None:
    (tmp_path / "pool.img").write_bytes(b"")
    runner, mounter = FakeRunner(), FakeMounter()
    runner.script(["losetup", "--find", "--show"], stdout=f"{DEVICE}\n")
    runner.script(["blkid"], stdout="xfs\n")

    result = pool(tmp_path, runner, None, mounter).attach()

    assert result.kind == "xfs"
    assert not any(argv[0].startswith("mkfs") and len(argv) > 2 for argv in runner.calls)
    assert mounts_of(mounter) == [("mount", DEVICE, str(tmp_path / "pool"), "xfs", "prjquota")]


def test_existing_xfs_image_on_a_kernel_without_quota_is_refused_and_kept(
    tmp_path: Path,
) -> None:
    image = tmp_path / "pool.img"
    image.write_bytes(b"data")
    runner = FakeRunner()
    runner.script(["losetup", "--find", "--show"], stdout=f"{DEVICE}\n")
    runner.script(["blkid"], stdout="xfs\n")

    with pytest.raises(FailedPrecondition, match="holds xfs but cannot be mounted with project"):
        pool(tmp_path, runner, "xfs", NoQuotaKernel()).attach()

    assert image.read_bytes() == b"data"
    assert ["losetup", "-d", DEVICE] in runner.calls


def test_btrfs_image_asked_to_be_xfs_is_never_reformatted(tmp_path: Path) -> None:
    (tmp_path / "pool.img").write_bytes(b"")
    runner = FakeRunner()
    runner.script(["losetup", "--find", "--show"], stdout=f"{DEVICE}\n")
    runner.script(["blkid"], stdout="btrfs\n")

    with pytest.raises(FailedPrecondition, match=r"holds a btrfs filesystem, not xfs \(start "):
        pool(tmp_path, runner, "xfs").attach()

    assert not any(argv[0].startswith("mkfs") and len(argv) > 2 for argv in runner.calls)


def test_xfs_below_its_minimum_size_is_invalid(tmp_path: Path) -> None:
    runner = fresh_image_runner()
    small = EmbeddedPool(tmp_path, 256 * 1024**2, runner, mounter=FakeMounter(),
                         geteuid=lambda: 0, fs="xfs")  # fmt: skip

    with pytest.raises(InvalidArgument, match="too small for xfs"):
        small.attach()


def _not_installed(argv: list[str]) -> None:
    if argv[1:] == ["--version"]:
        raise CommandFailed(argv, None, f"{argv[0]}: command not found")
