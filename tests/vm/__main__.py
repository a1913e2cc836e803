"""Run the VM tier by hand: `.venv/bin/python -m tests.vm [--keep] [-- pytest args]`.

Boots one VM that runs `pytest -m vm` on tests/vm (or the given paths and options), prints the
guest console live, and exits with the guest pytest's exit code (255: the guest crashed, 124:
timeout, 2: the tier cannot run here). docs/vm-tier.md explains the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sharevol.sys.statfs import mounts_under
from tests.vm.kernel import KernelUnavailable, guest_kernel
from tests.vm.nfs_host import ENV_SPEC, host_nfs
from tests.vm.runner import DEFAULT_TIMEOUT, NFS_PORT, VmJob, run_vm, unavailable


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: run the vm tests in one VM, print the console live, exit with the guest's rc."""
    parser = argparse.ArgumentParser(prog="python -m tests.vm", description=__doc__)
    parser.add_argument(
        "pytest_args",
        nargs="*",
        default=["tests/vm"],
        help="paths and options for the guest pytest (default: tests/vm)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--nfs-port", type=int, default=NFS_PORT)
    parser.add_argument("--keep", action="store_true", help="keep the job dir and console log")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"vm-tier: cannot run: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        kernel = guest_kernel()
    except KernelUnavailable as exc:
        print(f"vm-tier: cannot run: {exc}", file=sys.stderr)
        return 2
    print(
        f"vm-tier: kernel {kernel.release} ({'built' if kernel.built else 'cached'}) "
        f"in {time.monotonic() - started:.1f} s"
    )
    workdir = Path(tempfile.mkdtemp(prefix="sharevol-vm-"))
    try:
        with host_nfs(workdir / "nfs") as nfs:  # the guest NFS tests' server (tests/vm/nfs_host)
            port = nfs.port if nfs.env.get(ENV_SPEC) else args.nfs_port
            job = VmJob(tuple(args.pytest_args), args.timeout, nfs_port=port, env=nfs.env,
                        console=sys.stdout)  # fmt: skip
            result = run_vm(job, workdir, kernel)
        print(f"vm-tier: {result.report(console=False)}")
        print(f"vm-tier: total {time.monotonic() - started:.1f} s (kernel, compile, VM)")
    finally:
        if args.keep:
            print(f"vm-tier: kept {workdir}")
        else:
            _remove_workdir(workdir)
    return result.rc if result.rc is not None else 255


def _remove_workdir(workdir: Path) -> None:
    """Delete what run_vm left (job dir, logs); never through a mount."""
    job_dir = workdir / "job"
    if job_dir.exists() and not os.path.ismount(job_dir):
        shutil.rmtree(job_dir)
    for name in ("console.log", "virtiofsd.log"):
        (workdir / name).unlink(missing_ok=True)
    nfs_dir = workdir / "nfs"  # the host NFS server's state, pool image and logs
    if nfs_dir.exists() and not mounts_under(nfs_dir):
        shutil.rmtree(nfs_dir)
    with contextlib.suppress(OSError):  # something unexpected is left: keep it for a look
        workdir.rmdir()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # run_vm has stopped qemu and virtiofsd by now
        print("vm-tier: interrupted", file=sys.stderr)
        sys.exit(130)
