"""deploy/image/sharevol-pool-mount, the start command of the managed NFS server pod, on real
loop devices: a blank device is formatted btrfs with quotas and mounted, a used btrfs keeps its
data, anything else is refused untouched, and the command after `--` runs only when all is well."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.sys import btrfs
from sharevol.sys.runner import CommandResult, SubprocessRunner
from sharevol.sys.statfs import filesystem_type, mounts_under
from tests.support.manifests import REPO

pytestmark = pytest.mark.root("mkfs.ext4", "blkid", "mountpoint", "timeout")

SCRIPT = REPO / "deploy" / "image" / "sharevol-pool-mount"
DEVICE_BYTES = 256 * 1024 * 1024
TIMEOUT = 120.0
runner = SubprocessRunner()


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    """A blank 256 MiB sparse image on a loop device; unmounted and detached afterwards."""
    image = tmp_path / "device.img"
    with image.open("wb") as handle:
        handle.truncate(DEVICE_BYTES)
    device = runner.run(["losetup", "--find", "--show", str(image)], timeout=TIMEOUT).stdout
    device = device.strip()
    try:
        yield device
    finally:
        for target in sorted(mounts_under(tmp_path), key=len, reverse=True):
            runner.run(["umount", target], timeout=TIMEOUT, check=False)
        runner.run(["losetup", "-d", device], timeout=TIMEOUT, check=False)


def run_script(*args: str) -> CommandResult:
    return runner.run([str(SCRIPT), *args], timeout=TIMEOUT, check=False)


def test_script_is_valid_posix_sh() -> None:
    runner.run(["sh", "-n", str(SCRIPT)], timeout=TIMEOUT)


def test_blank_device_is_formatted_btrfs_mounted_with_quotas_then_command_runs(
    loop_device: str, tmp_path: Path
) -> None:
    mount_point = tmp_path / "pools" / "fast"
    marker = mount_point / "written-by-command"
    result = run_script(f"{loop_device}={mount_point}", "--", "touch", str(marker))
    assert result.returncode == 0, result.stderr
    assert filesystem_type(mount_point) == "btrfs"
    assert btrfs.quota_enabled(mount_point)
    assert marker.exists(), "the command after -- ran with the pool mounted"


def test_device_with_btrfs_keeps_its_data_on_restart(loop_device: str, tmp_path: Path) -> None:
    mount_point = tmp_path / "pool"
    assert run_script(f"{loop_device}={mount_point}", "--", "true").returncode == 0
    (mount_point / "volume-data").write_text("precious")
    runner.run(["umount", str(mount_point)], timeout=TIMEOUT)

    # A restarted pod: same device, nothing mounted. Then a second run while still mounted.
    for _ in range(2):
        result = run_script(f"{loop_device}={mount_point}", "--", "true")
        assert result.returncode == 0, result.stderr
        assert "keeping it" in result.stderr
        assert (mount_point / "volume-data").read_text() == "precious"
    assert len([m for m in mounts_under(tmp_path) if m == str(mount_point)]) == 1


def test_device_with_another_filesystem_is_refused_untouched(
    loop_device: str, tmp_path: Path
) -> None:
    runner.run(["mkfs.ext4", "-q", "-F", loop_device], timeout=TIMEOUT)
    mount_point = tmp_path / "pool"
    marker = tmp_path / "command-ran"
    result = run_script(f"{loop_device}={mount_point}", "--", "touch", str(marker))
    assert result.returncode == 1
    assert "refusing" in result.stderr and "ext4" in result.stderr
    assert not marker.exists()
    assert mounts_under(tmp_path) == []
    probe = runner.run(["blkid", "-p", "-o", "value", "-s", "TYPE", loop_device], timeout=TIMEOUT)
    assert probe.stdout.strip() == "ext4"


def test_bad_arguments_fail_before_touching_anything(loop_device: str, tmp_path: Path) -> None:
    assert run_script().returncode == 1
    assert run_script(f"{loop_device}={tmp_path / 'p'}").returncode == 1  # no -- COMMAND
    assert run_script("relative=/x", "--", "true").returncode == 1
    result = run_script(f"{tmp_path / 'not-a-device'}={tmp_path / 'p'}", "--", "true")
    assert result.returncode == 1 and "not a block device" in result.stderr
