"""`sharevol up` as a user runs it: a real process, a real btrfs pool, a real signal to stop it."""

from __future__ import annotations

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

pytestmark = pytest.mark.root

SHAREVOL = Path(sys.executable).parent / "sharevol"
READY = "serving CSI"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose mounts, loop devices and image are removed even when a test fails."""
    state = tmp_path / "state"
    yield state
    runner = SubprocessRunner()
    inside = [
        e.mount_point
        for e in SystemMounter(runner).mounts()
        if e.mount_point.startswith(f"{tmp_path}/")
    ]
    for target in sorted(inside, key=len, reverse=True):
        runner.run(["umount", target], timeout=30, check=False)
    image = state / "pool.img"
    if image.exists():
        out = runner.run(["losetup", "--list", "-n", "-O", "NAME", "-j", str(image)], timeout=15)
        for device in out.stdout.split():
            runner.run(["losetup", "-d", device], timeout=15, check=False)
        image.unlink()


class Up:
    """A running `sharevol up`; output is read as it comes, to wait for what it says."""

    def __init__(self, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [str(SHAREVOL), "up", "--state-dir", str(state_dir), "--size", "512Mi"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            line = self.proc.stdout.readline() if ready else ""
            if not line:
                pytest.fail(f"`sharevol up` never said {text!r}; it said:\n{self.output}")
            self.output += line

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        rest, _ = self.proc.communicate(timeout=60)
        self.output += rest
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def up(state_dir: Path) -> Iterator[Up]:
    running = Up(state_dir)
    yield running
    running.kill()


def test_up_serves_the_btrfs_pool_and_sigterm_detaches_it_keeping_data(
    up: Up, state_dir: Path
) -> None:
    up.wait_for(READY)

    assert (state_dir / "csi.sock").is_socket()
    pools = yaml.safe_load((state_dir / "pools.yaml").read_text())
    assert pools["default_pool"] == "default"
    assert pools["pools"][0]["kind"] == "btrfs"
    assert pools["pools"][0]["path"] == str(state_dir / "pool")
    (state_dir / "pool" / "kept.txt").write_text("data")

    assert up.stop(signal.SIGTERM) == 0, up.output

    mounter = SystemMounter(SubprocessRunner())
    assert mounter.find(state_dir / "pool") is None, up.output
    assert not (state_dir / "csi.sock").exists()
    assert (state_dir / "pool.img").exists()
    again = Up(state_dir)
    try:
        again.wait_for(READY)
        assert (state_dir / "pool" / "kept.txt").read_text() == "data"
        assert again.stop(signal.SIGINT) == 0, again.output
    finally:
        again.kill()


def test_up_refuses_to_detach_a_pool_with_a_volume_still_mounted(
    up: Up, state_dir: Path, tmp_path: Path
) -> None:
    up.wait_for(READY)
    volume = state_dir / "pool" / "some-volume"
    volume.mkdir()
    target = tmp_path / "mnt"
    target.mkdir()
    mounter = SystemMounter(SubprocessRunner())
    mounter.bind(volume, target, readonly=False)

    assert up.stop(signal.SIGTERM) != 0, up.output

    assert str(target) in up.output
    assert mounter.find(state_dir / "pool") is not None, "the pool must stay mounted"
    assert mounter.find(target) is not None, "the user's mount is left alone"
