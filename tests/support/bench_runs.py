"""What the benchmark smoke tests share: find what a benchmark run left behind, and remove it
after a failed run so that no mount or loop device outlives the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under

TIMEOUT = 60.0


def _loops() -> list[str]:
    return SubprocessRunner().run(
        ["losetup", "--list", "-n", "-O", "NAME,BACK-FILE"], timeout=TIMEOUT
    ).stdout.splitlines()


def leftovers(workdir: Path) -> list[str]:
    """Mounts, loop devices and files a benchmark left under `workdir`."""
    found = [f"mount {target}" for target in mounts_under(workdir)]
    found += [f"loop {line.strip()}" for line in _loops() if str(workdir) in line]
    found += [f"file {path}" for path in workdir.rglob("*")]
    return found


def bench_workdir(tmp_path: Path) -> Iterator[Path]:
    """A fixture body: yield the benchmark's workdir, then undo whatever a failed run leaked."""
    yield tmp_path
    runner = SubprocessRunner()
    for target in sorted(mounts_under(tmp_path), key=len, reverse=True):
        runner.run(["umount", "--lazy", target], timeout=TIMEOUT, check=False)
    for line in _loops():
        if str(tmp_path) in line:
            runner.run(["losetup", "-d", line.split()[0]], timeout=TIMEOUT, check=False)
