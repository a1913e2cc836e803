"""The embedded pool of `sharevol up` on real loop devices and a real btrfs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.errors import FailedPrecondition
from sharevol.service.embedded import EmbeddedPool
from sharevol.sys.mounts import SystemMounter, mounts_at
from sharevol.sys.runner import SubprocessRunner

pytestmark = pytest.mark.root

MiB = 1024**2
SIZE = 256 * MiB


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose mounts, loop devices and image are removed even when a test fails."""
    state = tmp_path / "state"
    yield state
    runner = SubprocessRunner()
    mounter = SystemMounter(runner)
    inside = [e.mount_point for e in mounter.mounts() if e.mount_point.startswith(f"{tmp_path}/")]
    for target in sorted(inside, key=len, reverse=True):
        runner.run(["umount", target], timeout=30, check=False)
    image = state / "pool.img"
    if image.exists():
        out = runner.run(["losetup", "--list", "-n", "-O", "NAME", "-j", str(image)], timeout=15)
        for device in out.stdout.split():
            runner.run(["losetup", "-d", device], timeout=15, check=False)
        image.unlink()


def _pool(state_dir: Path, size: int = SIZE) -> EmbeddedPool:
    return EmbeddedPool(state_dir, size, SubprocessRunner())


def _fs_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


def _loop_devices(image: Path) -> list[str]:
    out = SubprocessRunner().run(["losetup", "--list", "-n", "-O", "NAME", "-j", str(image)])
    return out.stdout.split()


def test_attach_on_fresh_state_dir_makes_sparse_btrfs_pool_with_quota_on(state_dir: Path) -> None:
    result = _pool(state_dir).attach()

    assert result.kind == "btrfs"
    assert result.fallback_reason is None
    assert result.path == state_dir / "pool"
    assert result.size_bytes == SIZE
    entry = SystemMounter(SubprocessRunner()).find(result.path)
    assert entry is not None
    assert entry.fs_type == "btrfs"
    assert entry.source == result.device
    image = state_dir / "pool.img"
    assert image.stat().st_size == SIZE
    assert image.stat().st_blocks * 512 < SIZE // 2, "the image should be sparse"
    qgroups = SubprocessRunner().run(["btrfs", "qgroup", "show", str(result.path)], check=False)
    assert qgroups.returncode == 0, f"quotas are off: {qgroups.stderr}"


def test_detach_then_attach_finds_the_file_written_before(state_dir: Path) -> None:
    pool = _pool(state_dir)
    first = pool.attach()
    (first.path / "kept.txt").write_text("still here")

    pool.detach()

    assert SystemMounter(SubprocessRunner()).find(first.path) is None
    assert _loop_devices(state_dir / "pool.img") == []
    assert (state_dir / "pool.img").exists()

    second = _pool(state_dir).attach()
    assert second.kind == "btrfs"
    assert (second.path / "kept.txt").read_text() == "still here"
    assert not any("formatted" in note for note in second.notes), second.notes


def test_attach_when_already_attached_reuses_the_loop_device_and_mount(state_dir: Path) -> None:
    first = _pool(state_dir).attach()
    second = _pool(state_dir).attach()

    assert second.device == first.device
    assert _loop_devices(state_dir / "pool.img") == [first.device]
    assert len(mounts_at(SystemMounter(SubprocessRunner()).mounts(), first.path)) == 1


def test_bigger_size_grows_the_mounted_filesystem_and_smaller_keeps_it(state_dir: Path) -> None:
    small = _pool(state_dir).attach()
    (small.path / "kept.txt").write_text("data")
    before = _fs_bytes(small.path)

    grown = _pool(state_dir, 2 * SIZE).attach()

    assert grown.size_bytes == 2 * SIZE
    assert grown.device == small.device
    assert _fs_bytes(grown.path) >= before + SIZE - 16 * MiB
    assert (grown.path / "kept.txt").read_text() == "data"

    kept = _pool(state_dir, SIZE).attach()
    assert kept.size_bytes == 2 * SIZE
    assert (state_dir / "pool.img").stat().st_size == 2 * SIZE
    assert any("never shrunk" in note for note in kept.notes), kept.notes


def test_detach_refuses_while_a_volume_is_bind_mounted_elsewhere(
    state_dir: Path, tmp_path: Path
) -> None:
    pool = _pool(state_dir)
    result = pool.attach()
    volume = result.path / "volumes" / "data"
    volume.mkdir(parents=True)
    target = tmp_path / "mnt"
    target.mkdir()
    mounter = SystemMounter(SubprocessRunner())
    mounter.bind(volume, target, readonly=False)

    assert pool.users() == [str(target)]
    with pytest.raises(FailedPrecondition, match=str(target)):
        pool.detach()
    assert mounter.find(result.path) is not None, "the pool must stay mounted"

    mounter.unmount(target)
    pool.detach()
    assert mounter.find(result.path) is None


def test_grow_interrupted_after_the_truncate_completes_on_the_next_attach(state_dir: Path) -> None:
    pool = _pool(state_dir)
    before = _fs_bytes(pool.attach().path)
    pool.detach()
    os.truncate(state_dir / "pool.img", 2 * SIZE)  # a crash right after growing the file

    result = _pool(state_dir, 2 * SIZE).attach()

    assert _fs_bytes(result.path) >= before + SIZE - 16 * MiB
