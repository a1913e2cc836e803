"""`sharevol up --nfs 127.0.0.1:PORT` as a user runs it: volumes created with the CLI are NFS
exports on loopback, and SIGTERM stops Ganesha and still detaches the pool."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sharevol.sys.mounts import SystemMounter
from sharevol.sys.runner import SubprocessRunner
from tests.integration.nfs.conftest import NFS_TOOLS
from tests.support.nfs import free_port, nfs_client, read_file, write_file

pytestmark = pytest.mark.root(*NFS_TOOLS)

SHAREVOL = Path(sys.executable).parent / "sharevol"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose mounts, loop device and image are removed even when the test fails."""
    state = tmp_path / "state"
    yield state
    runner = SubprocessRunner()
    inside = [
        e.mount_point
        for e in SystemMounter(runner).mounts()
        if e.mount_point.startswith(f"{tmp_path}/")
    ]
    for target in sorted(inside, key=len, reverse=True):
        runner.run(["umount", "--lazy", target], timeout=30, check=False)
    image = state / "pool.img"
    if image.exists():
        out = runner.run(["losetup", "--list", "-n", "-O", "NAME", "-j", str(image)], timeout=15)
        for device in out.stdout.split():
            runner.run(["losetup", "-d", device], timeout=15, check=False)
        image.unlink()


def sharevol(state: Path, *args: str) -> str:
    env = dict(os.environ, SHAREVOL_ENDPOINT=f"unix://{state / 'csi.sock'}")
    result = subprocess.run(
        [str(SHAREVOL), *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def test_up_with_nfs_serves_cli_volumes_as_exports_and_stops_cleanly(state_dir: Path) -> None:
    port = free_port()
    up = subprocess.Popen(
        [str(SHAREVOL), "up", "--state-dir", str(state_dir), "--size", "512Mi",
         "--nfs", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
    )  # fmt: skip
    try:
        assert up.stdout is not None
        output = ""
        deadline = time.monotonic() + 60
        while "NFS: every volume is exported" not in output:
            ready, _, _ = select.select([up.stdout], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(up.stdout.fileno(), 65536) if ready else b""
            assert chunk, f"`up` never said it serves NFS; it said:\n{output}"
            output += chunk.decode()
        written = yaml.safe_load((state_dir / "pools.yaml").read_text())
        assert written["nfs"]["port"] == port
        assert written["nfs"]["clients"] == ["127.0.0.1"]

        sharevol(state_dir, "volume", "create", "data", "--size", "64Mi", "--access-mode", "rwx")
        (folder,) = (state_dir / "pool" / "volumes").iterdir()
        folder.chmod(0o777)  # as a StorageClass `mode` would; root is squashed
        with nfs_client(port, f"/default/{folder.name}") as client:
            write_file(client, "hello", b"through NFS\n")
            assert read_file(client, "hello") == b"through NFS\n"
        assert (folder / "hello").read_bytes() == b"through NFS\n"

        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=90)
        output += rest.decode()
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate(timeout=30)

    assert up.returncode == 0, output
    assert "pool unmounted" in output
    assert not (state_dir / "nfs" / "ganesha.pid").exists()
