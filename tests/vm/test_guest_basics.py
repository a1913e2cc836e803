"""Proves the VM tier itself: right kernel, inside the VM, disks by serial, XFS project
quota accounting, and the project's Python stack importable in the guest."""

from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.sys.runner import SubprocessRunner
from tests.vm.guest import CMDLINE_MARKER, DISK_SERIALS, in_vm, vm_disk_path

pytestmark = pytest.mark.vm

TIMEOUT = 60.0
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """An empty directory that is unmounted (if it was mounted) after the test."""
    target = tmp_path / "mnt"
    target.mkdir()
    yield target
    if os.path.ismount(target):
        SubprocessRunner().run(["umount", str(target)], timeout=TIMEOUT)


def test_kernel_is_the_debian_cloud_kernel() -> None:
    assert platform.release().endswith("-cloud-amd64"), platform.release()
    assert "Debian" in platform.version(), platform.version()


def test_cmdline_carries_the_vm_marker() -> None:
    assert in_vm()
    assert CMDLINE_MARKER in Path("/proc/cmdline").read_text().split()


def test_each_disk_is_found_by_serial_and_is_one_gib() -> None:
    devices = [vm_disk_path(serial) for serial in DISK_SERIALS]
    assert len(set(devices)) == len(DISK_SERIALS), devices
    for device in devices:
        assert device.is_block_device(), device
        sectors = int(Path(f"/sys/block/{device.name}/size").read_text())
        assert sectors * 512 == 1024**3, (device, sectors)


def test_unknown_serial_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="no virtio disk with serial 'vmt-nope'"):
        vm_disk_path("vmt-nope")


def test_xfs_mounts_with_project_quota_accounting_on(xfs_disk: Path, mount_point: Path) -> None:
    runner = SubprocessRunner()
    runner.run(["mkfs.xfs", "-q", "-f", str(xfs_disk)], timeout=TIMEOUT)
    runner.run(["mount", "-o", "prjquota", str(xfs_disk), str(mount_point)], timeout=TIMEOUT)
    state = runner.run(["xfs_quota", "-x", "-c", "state -p", str(mount_point)], timeout=TIMEOUT)
    assert "Accounting: ON" in state.stdout, state.stdout
    assert "Enforcement: ON" in state.stdout, state.stdout


@pytest.mark.parametrize("module", ["sharevol", "grpc", "sharevol.csi.server"])
def test_project_python_stack_imports(module: str) -> None:
    imported = importlib.import_module(module)
    if module.startswith("sharevol"):
        assert str(PROJECT / "src") in str(imported.__file__)
