"""Facts about the VM tier's guest that tests and the runner share: the kernel command-line
marker that says "this is the throw-away VM", and the virtio disks found by serial.

Inside the VM the disks are /dev/vdX, and so is the HOST's root disk: a test that formats a
disk must get its path from `vm_disk_path`, which refuses outside the VM.
"""

from __future__ import annotations

from pathlib import Path

CMDLINE_MARKER = "sharevol_vm=1"
"""On the guest kernel's command line (set by tests/vm/runner.py), never on a real host's."""
XFS_DISK = "vmt-xfs"
EXT4_DISK = "vmt-ext4"
DISK_SERIALS = (XFS_DISK, EXT4_DISK)
"""virtio-blk serials of the blank 1 GiB disks every VM gets, in this order."""
NOT_IN_VM = "runs inside the VM tier (tests/vm/test_vm_tier.py boots it; see docs/vm-tier.md)"


class NotInVm(RuntimeError):
    """A guest-only action (formatting a disk) was attempted outside the VM."""


def in_vm(cmdline: Path = Path("/proc/cmdline")) -> bool:
    """Whether this process runs in the VM tier's guest (the marker is a whole word)."""
    try:
        return CMDLINE_MARKER in cmdline.read_text().split()
    except OSError:
        return False


def vm_disk_path(
    serial: str,
    *,
    sys_block: Path = Path("/sys/block"),
    cmdline: Path = Path("/proc/cmdline"),
    mounts: Path = Path("/proc/self/mounts"),
) -> Path:
    """/dev path of the guest disk with this virtio serial; refuses outside the VM, and when
    the disk is mounted (an earlier test did not clean up)."""
    if not in_vm(cmdline):
        raise NotInVm(f"refusing to look up disk {serial!r} outside the VM: {NOT_IN_VM}")
    seen: dict[str, str] = {}
    for entry in sorted(sys_block.glob("vd*")):
        try:
            seen[(entry / "serial").read_text().strip()] = entry.name
        except OSError:
            continue
    if serial not in seen:
        raise LookupError(f"no virtio disk with serial {serial!r}; found {seen or 'none'}")
    device = Path("/dev") / seen[serial]
    with mounts.open() as table:
        for line in table:
            if line.split()[0] == str(device):
                raise RuntimeError(f"{device} ({serial}) is still mounted: {line.strip()}")
    return device
