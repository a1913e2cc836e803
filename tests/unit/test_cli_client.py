"""How the CLI finds the server and what it says when it cannot reach it or the call times out."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.cli.client import ClientError, SharevolClient, socket_path, volume_capability
from sharevol.csi._proto import csi_pb2
from tests.unit.cli_fakes import run_cli, running_server, volume_info


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="svcli-", dir="/tmp") as temp:
        yield Path(temp)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("unix:///run/sharevol/csi.sock", "/run/sharevol/csi.sock"),
        ("unix:/run/sharevol/csi.sock", "/run/sharevol/csi.sock"),
        ("/run/sharevol/csi.sock", "/run/sharevol/csi.sock"),
        ("unix://./.sharevol/csi.sock", "{cwd}/.sharevol/csi.sock"),
        ("unix://rel/csi.sock", "{cwd}/rel/csi.sock"),
    ],
)
def test_endpoint_forms_resolve_to_an_absolute_socket_path(
    endpoint: str, expected: str, monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    monkeypatch.chdir(short_dir)

    assert socket_path(endpoint) == expected.format(cwd=short_dir)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:10000", "unix://"])
def test_endpoint_that_is_not_a_unix_socket_path_is_refused(endpoint: str) -> None:
    with pytest.raises(ClientError, match="unix://PATH"):
        socket_path(endpoint)


def test_socket_path_longer_than_unix_allows_is_refused(short_dir: Path) -> None:
    deep = short_dir / ("d" * 120) / "csi.sock"

    with pytest.raises(ClientError, match="longer than 107 bytes"):
        SharevolClient(f"unix://{deep}")


def test_no_socket_says_to_start_a_server(short_dir: Path) -> None:
    missing = short_dir / "csi.sock"

    result = run_cli(["--endpoint", f"unix://{missing}", "list"])

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: no sharevol server at unix://{missing}: start one with `sharevol up`\n"
    )


def test_stale_socket_with_nobody_listening_says_to_start_a_server(short_dir: Path) -> None:
    stale = short_dir / "csi.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(stale))  # bound, never listening, then closed: connect is refused

    result = run_cli(["--endpoint", f"unix://{stale}", "get", "data"])

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no sharevol server at unix://{stale}: start one with `sharevol up`\n"
    )


def test_default_endpoint_is_the_socket_sharevol_up_serves_in_this_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_server(".sharevol/csi.sock") as server:
        server.calls.volumes = [volume_info("data")]
        monkeypatch.chdir(server.directory)

        result = run_cli(["get", "data", "-o", "json"])

        assert result.exit_code == 0, result.output
        assert server.calls.methods() == ["GetVolume"]


def test_endpoint_comes_from_sharevol_endpoint_when_no_option_is_given() -> None:
    with running_server() as server:
        server.calls.volumes = [volume_info("data")]

        result = run_cli(["list"], env={"SHAREVOL_ENDPOINT": server.endpoint})

        assert result.exit_code == 0, result.output
        assert server.calls.methods() == ["ListVolumes"]


def test_call_past_its_deadline_is_a_one_line_error() -> None:
    with running_server() as server:
        server.calls.hang.add("CreateVolume")

        result = server.run("--timeout", "0.2", "create", "data", "--size", "1Gi")

        assert result.exit_code == 1
        assert result.stderr == (
            "error: CreateVolume: no answer within 0.2s; the server may still finish it, "
            "and running the command again is safe (CSI calls are idempotent)\n"
        )


def test_call_the_server_does_not_implement_is_a_one_line_error() -> None:
    with running_server() as server:
        server.calls.fail("ListVolumes", grpc.StatusCode.UNIMPLEMENTED,
                          "this server runs no controller service")

        result = server.run("list")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: ListVolumes: the server does not offer this call: "
        "this server runs no controller service\n"
    )


def test_empty_get_volume_answer_is_treated_as_not_found() -> None:
    with running_server() as server, SharevolClient(server.endpoint, timeout=5) as client:
        server.calls.volumes = [volume_info("data", volume_id="")]

        with pytest.raises(ClientError, match="no volume named 'data'"):
            client.get_volume(name="data")


@pytest.mark.parametrize(
    ("mode", "access_type", "oneof"),
    [("MULTI_NODE_MULTI_WRITER", "mount", "mount"), ("single_node_writer", "block", "block"),
     ("SINGLE_NODE_SINGLE_WRITER", "", "mount")],
)
def test_volume_capability_is_built_from_csi_names(
    mode: str, access_type: str, oneof: str
) -> None:
    capability = volume_capability(mode, access_type)

    assert csi_pb2.VolumeCapability.AccessMode.Mode.Name(capability.access_mode.mode) == (
        mode.upper()
    )
    assert capability.WhichOneof("access_type") == oneof


@pytest.mark.parametrize(("mode", "access_type"), [("RWX", "mount"), ("UNKNOWN", "mount"),
                                                   ("MULTI_NODE_MULTI_WRITER", "nfs")])
def test_volume_capability_rejects_unknown_names(mode: str, access_type: str) -> None:
    with pytest.raises(ClientError):
        volume_capability(mode, access_type)
