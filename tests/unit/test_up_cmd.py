"""`sharevol up` wiring with the pool and server faked: what it writes, prints, and how it stops."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sharevol.cli import up_cmd
from sharevol.errors import FailedPrecondition
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.service.embedded import EmbeddedResult


class FakeServer:
    """Sends this process SIGTERM when started, as a user pressing Ctrl-C at once would."""

    metrics = None  # no --metrics-address

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.stopped_with: float | None = None

    def start(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def stop(self, grace: float) -> None:
        self.stopped_with = grace


class FakePool:
    def __init__(self, result: EmbeddedResult, users: list[str]) -> None:
        self.result = result
        self._users = users
        self.detached = False
        self.image = result.path.parent / "pool.img"

    def attach(self) -> EmbeddedResult:
        return self.result

    def users(self) -> list[str]:
        return self._users

    def detach(self) -> None:
        if self._users:
            raise FailedPrecondition("in use")
        self.detached = True


def _run_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, result: EmbeddedResult, users: list[str]
) -> tuple[Any, FakePool, list[FakeServer]]:
    pool = FakePool(result, users)
    servers: list[FakeServer] = []

    def build_server(config: object, **kwargs: Any) -> FakeServer:
        servers.append(FakeServer(config=config, **kwargs))
        return servers[-1]

    monkeypatch.setattr(up_cmd, "EmbeddedPool", lambda *args, **kwargs: pool)
    monkeypatch.setattr(up_cmd, "build_server", build_server)
    outcome = CliRunner().invoke(
        up_cmd.up, ["--state-dir", str(tmp_path), "--node-id", "node-a"], catch_exceptions=False
    )
    return outcome, pool, servers


def test_up_writes_pools_yaml_serves_all_modes_and_detaches_on_sigterm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = EmbeddedResult(tmp_path / "pool", "btrfs", 10 * 1024**3, device="/dev/loop9")

    outcome, pool, servers = _run_up(monkeypatch, tmp_path, result, users=[])

    assert outcome.exit_code == 0, outcome.output
    config = ServerConfig.model_validate(yaml.safe_load((tmp_path / "pools.yaml").read_text()))
    assert config == ServerConfig(
        pools=(
            PoolConfig(name="default", path=tmp_path / "pool", kind="btrfs", overcommit=10.0),
        ),
        default_pool="default",
    )
    (server,) = servers
    assert server.kwargs["endpoint"] == f"unix://{tmp_path}/csi.sock"
    assert server.kwargs["mode"] == "all"
    assert server.kwargs["node_id"] == "node-a"
    assert server.stopped_with == up_cmd.STOP_GRACE
    assert pool.detached
    assert "btrfs" in outcome.output
    assert "volume create data --size 1Gi --access-mode rwx" in outcome.output
    assert "SIGTERM" in outcome.output


def test_up_keeps_the_pool_mounted_and_fails_while_volumes_are_mounted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = EmbeddedResult(tmp_path / "pool", "btrfs", 10 * 1024**3, device="/dev/loop9")

    outcome, pool, servers = _run_up(monkeypatch, tmp_path, result, users=["/mnt/data"])

    assert outcome.exit_code == 1
    assert "/mnt/data" in outcome.output
    assert not pool.detached
    assert servers[0].stopped_with is not None, "the server stops even when the pool stays"


def test_up_says_loudly_why_the_pool_is_a_plain_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reason = "mkfs.btrfs not found: install btrfs-progs"
    result = EmbeddedResult(tmp_path / "pool", "plain", None, fallback_reason=reason)

    outcome, _, _ = _run_up(monkeypatch, tmp_path, result, users=[])

    assert outcome.exit_code == 0, outcome.output
    assert "PLAIN DIRECTORY" in outcome.output
    assert reason in outcome.output
    assert "NOT enforced" in outcome.output
    assert yaml.safe_load((tmp_path / "pools.yaml").read_text())["pools"][0]["kind"] == "plain"
