"""`sharevol up --fs xfs|ext4` on this host's real kernel: an XFS/ext4 pool with project quotas
where the kernel can mount one with `-o prjquota`, else btrfs with the reason said loudly (the
test machines' kernel has no XFS/ext4 quota, so there this proves the fallback)."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sharevol.service.embedded import EmbeddedPool
from sharevol.service.embedded_fs import FsName
from sharevol.sys import quota
from sharevol.sys.mounts import SystemMounter
from sharevol.sys.runner import SubprocessRunner

pytestmark = pytest.mark.root("mkfs.xfs", "xfs_growfs", "mkfs.ext4", "resize2fs", "blkid")

MiB = 1024**2
SHAREVOL = Path(sys.executable).parent / "sharevol"
KERNEL_NEEDS = {"xfs": "CONFIG_XFS_QUOTA", "ext4": "CONFIG_QFMT_V2"}


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose mounts, loop devices and image are removed even when a test fails."""
    state = tmp_path / "state"
    yield state
    runner = SubprocessRunner()
    inside = [
        e.mount_point
        for e in SystemMounter(runner).mounts()
        if e.mount_point.startswith(f"{tmp_path}/")
    ]
    for target in sorted(inside, key=len, reverse=True):
        runner.run(["umount", target], timeout=30, check=False)
    image = state / "pool.img"
    if image.exists():
        out = runner.run(["losetup", "--list", "-n", "-O", "NAME", "-j", str(image)], timeout=15)
        for device in out.stdout.split():
            runner.run(["losetup", "-d", device], timeout=15, check=False)
        image.unlink()


@pytest.mark.parametrize("fs", ["xfs", "ext4"])
def test_attach_makes_the_project_quota_pool_or_falls_back_to_btrfs_saying_why(
    state_dir: Path, fs: FsName
) -> None:
    pool = EmbeddedPool(state_dir, 512 * MiB, SubprocessRunner(), fs=fs)

    result = pool.attach()
    try:
        mounted = SystemMounter(SubprocessRunner()).find(state_dir / "pool")
        assert mounted is not None and mounted.fs_type == result.kind
        if result.kind == fs:  # a kernel with quota support: enforced for real
            interface: quota.Interface = "xfs" if fs == "xfs" else "vfs"
            state = quota.open_project_quotas(state_dir / "pool", interface).state()
            assert state.enforced
            assert result.fallback_reason is None
        else:
            assert result.kind == "btrfs"
            assert result.requested == fs
            assert result.fallback_reason is not None
            assert f"{fs} with project quotas is not possible here" in result.fallback_reason
            assert KERNEL_NEEDS[fs] in result.fallback_reason
    finally:
        pool.detach()
    again = EmbeddedPool(state_dir, 512 * MiB, SubprocessRunner()).attach()  # no --fs: reuse
    try:
        assert again.kind == result.kind
        assert again.fallback_reason is None
    finally:
        EmbeddedPool(state_dir, 512 * MiB, SubprocessRunner()).detach()


def test_sharevol_up_fs_xfs_serves_and_says_what_it_made(state_dir: Path) -> None:
    proc = subprocess.Popen(
        [str(SHAREVOL), "up", "--state-dir", str(state_dir), "--size", "512Mi", "--fs", "xfs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = _read_until(proc, "serving CSI", timeout=60.0)
        kind = yaml.safe_load((state_dir / "pools.yaml").read_text())["pools"][0]["kind"]
        if kind == "xfs":
            assert "xfs at" in output and "project quotas on" in output
        else:
            assert kind == "btrfs"
            assert "asked for an xfs pool; made btrfs instead" in output
            assert "CONFIG_XFS_QUOTA" in output
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output + rest
        assert "pool unmounted" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def _read_until(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Output of `proc` up to the line that holds `text`; fails with all of it otherwise."""
    assert proc.stdout is not None
    output = ""
    deadline = time.monotonic() + timeout
    while text not in output:
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        line = proc.stdout.readline() if ready else ""
        if not line:
            pytest.fail(f"`sharevol up --fs xfs` never said {text!r}; it said:\n{output}")
        output += line
    return output
