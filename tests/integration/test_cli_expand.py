"""`sharevol volume expand` and `volume create --block / --param type=image` against a real
server: the CLI drives CSI the way a CO would, and a mounted volume grows where it is mounted."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sharevol.cli.volume_cmd import volume
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import MiB, running_server
from tests.support.loops import clean_node

pytestmark = pytest.mark.root("mkfs.xfs", "xfs_growfs")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The server's state dir: the CLI stages next to the socket, tests mount below it."""
    path = tmp_path / "state"
    path.mkdir()
    yield path
    failures = clean_node(path, tmp_path)
    assert not failures, failures


@pytest.fixture
def cli(btrfs_fs: Path, state: Path) -> Iterator[CliRunner]:
    config = ServerConfig(pools=(PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),))
    with running_server(config, state):
        yield CliRunner()


def run(cli: CliRunner, state: Path, *args: str) -> Result:
    result = cli.invoke(volume, ["--endpoint", f"unix://{state / 'csi.sock'}", *args])
    assert result.exit_code == 0, result.output
    return result


def fill(path: Path, limit: int) -> tuple[int, int | None]:
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while written < limit:
            try:
                written += os.write(fd, b"\x00" * MiB)
                os.fsync(fd)
            except OSError as exc:
                return written, exc.errno
    finally:
        os.close(fd)
    return written, None


def test_expand_a_mounted_directory_volume(cli: CliRunner, state: Path) -> None:
    run(cli, state, "create", "data", "--size", "16Mi")
    mount_point = state / "mnt"
    run(cli, state, "mount", "data", str(mount_point))
    assert fill(mount_point / "f", 64 * MiB)[1] == errno.EDQUOT
    result = run(cli, state, "expand", "data", "--size", "48Mi")
    assert result.output == "volume data expanded to 48Mi\n"
    more, error = fill(mount_point / "f", 24 * MiB)
    assert error is None and more == 24 * MiB
    run(cli, state, "unmount", str(mount_point))
    shrink = cli.invoke(
        volume, ["--endpoint", f"unix://{state / 'csi.sock'}", "expand", "data", "--size", "8Mi"]
    )
    assert shrink.exit_code == 1
    assert "never shrinks" in shrink.output


def test_expand_a_mounted_xfs_image_volume_grows_its_filesystem(
    cli: CliRunner, state: Path
) -> None:
    run(cli, state, "create", "db", "--size", "300Mi", "--param", "type=image", "--param",
        "fsType=xfs")  # fmt: skip
    mount_point = state / "mnt"
    run(cli, state, "mount", "db", str(mount_point))
    before = os.statvfs(mount_point)
    result = run(cli, state, "expand", "db", "--size", "400Mi")
    assert result.output == "volume db expanded to 400Mi; its filesystem grew online\n"
    after = os.statvfs(mount_point)
    assert after.f_blocks * after.f_frsize > before.f_blocks * before.f_frsize + 90 * MiB
    run(cli, state, "unmount", str(mount_point))


def test_expand_an_unmounted_block_volume(cli: CliRunner, state: Path) -> None:
    run(cli, state, "create", "raw", "--size", "16Mi", "--block")
    result = run(cli, state, "expand", "raw", "--size", "32Mi")
    assert result.output == (
        "volume raw expanded to 32Mi; its device grows when the volume is next mounted\n"
    )
