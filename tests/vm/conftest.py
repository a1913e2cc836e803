"""The `vm` marker policy and the guest fixtures.

A test marked `@pytest.mark.vm` runs only inside the VM tier's guest; on the host it is
deselected (tests/conftest.py), or skipped when named directly, because
tests/vm/test_vm_tier.py boots one VM that runs them all.
Guest tests get their blank disks from `vm_disk(serial)`, never by a /dev/vdX name: on the host
/dev/vda is the root disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.vm.guest import EXT4_DISK, NOT_IN_VM, XFS_DISK, in_vm, vm_disk_path


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip vm-marked tests outside the guest (the host runs them through the VM)."""
    if item.get_closest_marker("vm") is not None and not in_vm():
        pytest.skip(NOT_IN_VM)


@pytest.fixture
def vm_disk() -> Callable[[str], Path]:
    """`vm_disk("vmt-xfs")` -> /dev path of that blank guest disk; fails outside the VM."""

    def find(serial: str) -> Path:
        if not in_vm():
            pytest.fail(f"vm_disk({serial!r}) outside the VM: {NOT_IN_VM}", pytrace=False)
        return vm_disk_path(serial)

    return find


@pytest.fixture
def xfs_disk(vm_disk: Callable[[str], Path]) -> Path:
    """The blank 1 GiB disk meant for XFS tests (serial vmt-xfs); format it with mkfs -f."""
    return vm_disk(XFS_DISK)


@pytest.fixture
def ext4_disk(vm_disk: Callable[[str], Path]) -> Path:
    """The blank 1 GiB disk meant for ext4 tests (serial vmt-ext4); format it with mkfs -F."""
    return vm_disk(EXT4_DISK)
