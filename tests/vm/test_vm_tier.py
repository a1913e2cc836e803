"""The host side of the VM tier, as part of the normal test run: boots ONE VM that runs every
test marked `vm` under tests/vm/, and fails naming the guest tests that failed.

Marked root (virtiofsd, mount namespaces). In CI it never skips: a missing tool or kernel
package fails it; elsewhere it skips saying exactly what is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import in_ci
from tests.vm.guest import in_vm
from tests.vm.junit import outcome_counts
from tests.vm.kernel import KernelUnavailable, guest_kernel
from tests.vm.nfs_host import host_nfs
from tests.vm.runner import VmJob, run_vm, unavailable

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]

GUEST_TIMEOUT = 900.0
"""Whole VM run; a warm run takes well under a minute here (docs/vm-tier.md has the numbers)."""


def _cannot_run(reason: str) -> NoReturn:
    """Skip saying why, or fail in CI, where the VM tier must run."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the VM tier must run, not skip)", pytrace=False)
    pytest.skip(reason)


def test_vm_suite_passes_inside_the_guest(tmp_path: Path) -> None:
    if in_vm():
        pytest.skip("this is the host's entry to the VM tier; the guest does not boot another VM")
    reason = unavailable()
    if reason:
        _cannot_run(reason)
    try:
        kernel = guest_kernel()
    except KernelUnavailable as exc:
        _cannot_run(str(exc))
    with host_nfs(tmp_path / "nfs") as nfs:  # Ganesha + sharevol for the guest's NFS tests
        job = VmJob(("tests/vm",), GUEST_TIMEOUT, nfs_port=nfs.port, env=nfs.env)
        (tmp_path / "vm").mkdir()
        result = run_vm(job, tmp_path / "vm", kernel)
    print(
        f"VM tier: kernel {kernel.release} ({'built now' if kernel.built else 'cached'}), "
        f"VM run {result.seconds:.1f} s, {outcome_counts(result.job_dir / 'junit.xml')}",
        file=sys.stderr,
    )
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)
