"""XFS project-quota provisioning benchmark: in-process calls versus `xfs_quota` per volume.

Runs inside the VM tier (the host kernel has no XFS quota): one VM, one XFS disk mounted with
`-o prjquota`, and in the same run, N volumes made each way, every one a directory with its own
project ID and a 64 MiB hard limit:
  - pool API: XfsPool.create_volume (mkdir, project ID allocated under the pool lock,
    FS_IOC_FSSETXATTR, quotactl Q_XSETQLIM), all in-process;
  - xfs_quota: mkdir, then one `xfs_quota -x -c 'project -s ...' -c 'limit ...'` process.
Every limit is read back with Q_XGETQUOTA afterwards, so a phase that did not set its limits
fails instead of looking fast. TCG emulation makes both slow; the ratio is the figure.

Run as root on the host:  .venv/bin/python bench/xfs_quota.py [-n 200] [--json]
It boots the VM (tests/vm), runs this file's `test_measure_in_vm` there, and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from sharevol.pools.xfs import XfsPool
from sharevol.sys import quota
from sharevol.sys.runner import SubprocessRunner

MiB = 1024 * 1024
LIMIT = 64 * MiB
TIMEOUT = 120.0
SETTINGS = "xfs-bench-settings.json"
RESULTS = "xfs-bench-results.json"
FIRST_CLI_ID = 500_000
"""IDs of the xfs_quota phase: below the pool's (1,000,000 up), so the two never meet."""


# -- inside the VM ----------------------------------------------------------------------------


def measure(disk: Path, workdir: Path, count: int) -> dict[str, Any]:
    """Format `disk` XFS, mount it with prjquota and time both ways of making `count` volumes."""
    runner = SubprocessRunner()
    mount_point = workdir / "xfs"
    mount_point.mkdir()
    runner.run(["mkfs.xfs", "-q", "-f", str(disk)], timeout=TIMEOUT)
    runner.run(["mount", "-o", "prjquota", str(disk), str(mount_point)], timeout=TIMEOUT)
    try:
        pool = XfsPool("bench", mount_point)
        pool.start()
        phases = [_pool_api(pool, count), _cli(pool, mount_point, count)]
    finally:
        runner.run(["umount", str(mount_point)], timeout=TIMEOUT)
    return {"volumes": count, "limit_bytes": LIMIT, "kernel": os.uname().release,
            "phases": phases}  # fmt: skip


def _pool_api(pool: XfsPool, count: int) -> dict[str, Any]:
    started = time.monotonic()
    ids = [int(pool.create_volume(f"api-{n}", LIMIT)["project_id"]) for n in range(count)]
    seconds = time.monotonic() - started
    _check_limits(pool, ids, [pool.volume_path(f"api-{n}") for n in range(count)])
    return {"name": "pool API (in-process ioctl + quotactl)", "seconds": seconds}


def _cli(pool: XfsPool, mount_point: Path, count: int) -> dict[str, Any]:
    runner = SubprocessRunner()
    volumes = mount_point / "cli"
    volumes.mkdir()
    started = time.monotonic()
    for n in range(count):
        path, project_id = volumes / f"cli-{n}", FIRST_CLI_ID + n
        path.mkdir()
        runner.run(
            ["xfs_quota", "-x", "-c", f"project -s -p {path} {project_id}",
             "-c", f"limit -p bhard={LIMIT // MiB}m {project_id}", str(mount_point)],
            timeout=TIMEOUT,
        )  # fmt: skip
    seconds = time.monotonic() - started
    ids = [FIRST_CLI_ID + n for n in range(count)]
    _check_limits(pool, ids, [volumes / f"cli-{n}" for n in range(count)])
    return {"name": "xfs_quota (1 process per volume)", "seconds": seconds}


def _check_limits(pool: XfsPool, ids: list[int], paths: list[Path]) -> None:
    for project_id, path in zip(ids, paths, strict=True):
        assert quota.get_project(path) == project_id, path
        assert pool.quotas.get(project_id).block_limit_bytes == LIMIT, project_id


def _job_dir() -> Path:
    """The VM job dir (shared read-write with the host), from the guest's kernel command line."""
    for word in Path("/proc/cmdline").read_text().split():
        if word.startswith("sharevol_job="):
            return Path(word.split("=", 1)[1]).parent
    raise RuntimeError("not in the VM tier: no sharevol_job= on the kernel command line")


@pytest.mark.vm
def test_measure_in_vm(tmp_path: Path) -> None:
    """The guest half: read the settings the host left beside the job dir, write the figures."""
    from tests.vm.guest import XFS_DISK, vm_disk_path

    job = _job_dir()
    settings = json.loads((job.parent / SETTINGS).read_text())
    figures = measure(vm_disk_path(XFS_DISK), tmp_path, int(settings["volumes"]))
    (job / RESULTS).write_text(json.dumps(figures))


# -- on the host ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--volumes", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    from tests.vm.runner import VmJob, run_vm, unavailable

    reason = unavailable()
    if reason:
        print(f"xfs_quota bench: cannot run the VM tier: {reason}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="sharevol-xfs-bench-"))
    try:
        vm_dir = workdir / "vm"  # run_vm's workdir: the job dir is vm/job
        vm_dir.mkdir()
        (vm_dir / SETTINGS).write_text(json.dumps({"volumes": args.volumes}))
        result = run_vm(VmJob(("bench/xfs_quota.py",), timeout=1800.0), vm_dir)
        if not result.ok:
            print(result.report(), file=sys.stderr)
            return 1
        figures = json.loads((result.job_dir / RESULTS).read_text())
    finally:
        shutil.rmtree(workdir)
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"{figures['volumes']} volumes, {figures['limit_bytes'] // MiB} MiB limit each, "
          f"guest kernel {figures['kernel']} under TCG")  # fmt: skip
    rates = []
    for phase in figures["phases"]:
        rate = figures["volumes"] / phase["seconds"]
        rates.append(rate)
        print(f"  {phase['name']:<42} {phase['seconds']:8.2f} s {rate:9.1f} volumes/s")
    print(f"  in-process / xfs_quota: {rates[0] / rates[1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.vm
    sys.exit(main())
