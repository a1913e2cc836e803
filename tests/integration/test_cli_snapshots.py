"""`sharevol snapshot ...` and `sharevol volume create --from-snapshot | --from-volume` against a
real server: a plain pool on the host filesystem (a real copy in the background, followed by the
CLI) and a btrfs pool (instant)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sharevol.cli.main import cli
from sharevol.csi.server import CsiServer
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import Stubs, running_server
from tests.support.snapshots import volume_path


@pytest.fixture
def short_state() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes: pytest's tmp_path names can be longer."""
    with tempfile.TemporaryDirectory(prefix="svsnap-", dir="/tmp") as directory:
        yield Path(directory)


def run(server: CsiServer, group: str, *args: str) -> Result:
    result = CliRunner().invoke(
        cli, [group, "--endpoint", f"unix://{server.socket}", *args], env={"COLUMNS": "200"}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the command crashed: {result.exception!r}") from result.exception
    return result


@pytest.fixture
def plain_served(plain_dir: Path, short_state: Path) -> Iterator[tuple[CsiServer, Stubs]]:
    config = ServerConfig(pools=(PoolConfig(name="plain", path=plain_dir, kind="plain"),))
    with running_server(config, short_state) as both:
        yield both


def test_snapshot_restore_and_clone_through_the_cli(
    plain_served: tuple[CsiServer, Stubs],
) -> None:
    server, stubs = plain_served
    assert run(server, "volume", "create", "data", "--size", "64Mi").exit_code == 0
    data = volume_path(stubs, "data")
    (data / "table").write_text("row-1\n")

    made = run(server, "snapshot", "create", "s1", "--volume", "data")
    assert made.exit_code == 0, made.output
    assert "snapshot s1 of volume data ready" in made.stdout
    assert "(full copy, made in the background)" in made.stdout
    (data / "table").write_text("row-1\nrow-2\n")

    listed = run(server, "snapshot", "list")
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "SOURCE", "VOLUME", "RESTORE"]
    name, source, restore_size, _data, method, ready, pool, _age = row.split()
    assert (name, source, restore_size, method, ready, pool) == (
        "s1", "data", "64Mi", "copy", "true", "plain",
    )  # fmt: skip

    restored = run(server, "volume", "create", "restored", "--from-snapshot", "s1")
    assert restored.exit_code == 0, restored.output
    assert "volume restored created" in restored.stdout and "64Mi" in restored.stdout
    assert (volume_path(stubs, "restored") / "table").read_text() == "row-1\n"

    cloned = run(server, "volume", "create", "clone", "--from-volume", "data", "--size", "128Mi")
    assert cloned.exit_code == 0, cloned.output
    assert "128Mi" in cloned.stdout
    assert (volume_path(stubs, "clone") / "table").read_text() == "row-1\nrow-2\n"

    assert run(server, "snapshot", "delete", "s1").exit_code == 0
    assert run(server, "snapshot", "list").stderr == "no snapshots\n"
    missing = run(server, "snapshot", "get", "s1")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1


def test_snapshot_create_no_wait_returns_while_the_copy_runs(
    plain_served: tuple[CsiServer, Stubs],
) -> None:
    server, _stubs = plain_served
    assert server.copy_jobs is not None
    run(server, "volume", "create", "data", "--size", "64Mi")
    with server.copy_jobs.paused():
        made = run(server, "snapshot", "create", "s1", "--volume", "data", "--no-wait")
        assert made.exit_code == 0, made.output
        assert "being copied in the background" in made.stdout
        assert "false (" in run(server, "snapshot", "list").stdout
        shown = run(server, "snapshot", "get", "s1", "-o", "json")
        assert '"state": "copying"' in shown.stdout
    assert server.copy_jobs.wait_all(60)
    assert "ready" in run(server, "snapshot", "create", "s1", "--volume", "data").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "r", "--from-snapshot", "s", "--from-volume", "v"], "not both"),
        (["create", "r"], "--size is required"),
        (["create", "r", "--from-snapshot", "nope"], "no snapshot named 'nope'"),
        (["create", "r", "--from-volume", "nope"], "no volume named 'nope'"),
    ],
)
def test_volume_create_from_a_source_explains_mistakes(
    plain_served: tuple[CsiServer, Stubs], args: list[str], message: str
) -> None:
    server, _stubs = plain_served
    result = run(server, "volume", *args)
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.root
def test_btrfs_snapshot_is_ready_at_once(btrfs_fs: Path, short_state: Path) -> None:
    config = ServerConfig(pools=(PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),))
    with running_server(config, short_state) as (server, _stubs):
        run(server, "volume", "create", "data", "--size", "64Mi")
        made = run(server, "snapshot", "create", "s1", "--volume", "data")
        assert made.exit_code == 0, made.output
        assert "(btrfs snapshot)" in made.stdout
        restored = run(server, "volume", "create", "r", "--from-snapshot", "s1", "--size", "1Gi")
        assert "1Gi, quota enforced" in restored.stdout
