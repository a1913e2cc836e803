"""Real loop-mounted XFS (reflink) and ext4 (no reflink) filesystems for tests of tree pools.

XFS with `-m reflink=1` is the reflink path of directory pools; ext4 cannot clone files, so it is
the background-copy path. Teardown unmounts everything below the mount point, detaches the loop
device and deletes the image, even when the test failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under

TIMEOUT = 60.0
MKFS: dict[str, list[str]] = {
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}


@contextlib.contextmanager
def loop_filesystem(workdir: Path, fs_type: str, size: int) -> Iterator[Path]:
    """A sparse image of `size` bytes in `workdir`, formatted `fs_type` and loop-mounted at
    `workdir/<fs_type>`; everything is undone afterwards."""
    runner = SubprocessRunner()
    image, mount_point = workdir / f"{fs_type}.img", workdir / fs_type
    mount_point.mkdir()
    with image.open("wb") as handle:
        handle.truncate(size)
    runner.run([*MKFS[fs_type], str(image)], timeout=TIMEOUT)
    loop = runner.run(["losetup", "--find", "--show", str(image)], timeout=TIMEOUT).stdout.strip()
    try:
        runner.run(["mount", loop, str(mount_point)], timeout=TIMEOUT)
        yield mount_point
    finally:
        failures: list[str] = []
        for target in sorted(mounts_under(mount_point), key=len, reverse=True):
            result = runner.run(["umount", target], timeout=TIMEOUT, check=False)
            if result.returncode != 0:
                failures.append(f"umount {target}: {result.stderr.strip()}")
                runner.run(["umount", "--lazy", target], timeout=TIMEOUT, check=False)
        result = runner.run(["losetup", "-d", loop], timeout=TIMEOUT, check=False)
        if result.returncode != 0:
            failures.append(f"losetup -d {loop}: {result.stderr.strip()}")
        image.unlink(missing_ok=True)
        if failures:
            raise AssertionError(f"{fs_type} fixture teardown: " + "; ".join(failures))
