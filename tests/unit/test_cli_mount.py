"""`sharevol volume mount|unmount`: the CLI plays the CO, staging next to the server's socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import admin_pb2, csi_pb2
from tests.unit.cli_fakes import FakeServer, running_server, volume_info

Mode = csi_pb2.VolumeCapability.AccessMode.Mode
VOLUME_ID = "default/0123456789abcdef"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with running_server() as fake:
        fake.calls.volumes = [
            volume_info("data", VOLUME_ID, access_modes=["MULTI_NODE_MULTI_WRITER"])
        ]
        yield fake


def staging(server: FakeServer) -> Path:
    return server.directory / "staging" / "default-0123456789abcdef"


def stage_request(server: FakeServer) -> csi_pb2.NodeStageVolumeRequest:
    [request] = server.calls.of("NodeStageVolume")
    assert isinstance(request, csi_pb2.NodeStageVolumeRequest)
    return request


def publish_request(server: FakeServer) -> csi_pb2.NodePublishVolumeRequest:
    [request] = server.calls.of("NodePublishVolume")
    assert isinstance(request, csi_pb2.NodePublishVolumeRequest)
    return request


def test_mount_stages_next_to_the_socket_then_publishes(server: FakeServer) -> None:
    target = server.directory / "mnt"

    result = server.run("mount", "data", str(target))

    assert result.exit_code == 0, result.output
    assert server.calls.of("GetVolume") == [admin_pb2.GetVolumeRequest(name="data")]
    stage = stage_request(server)
    assert stage.volume_id == VOLUME_ID
    assert stage.staging_target_path == str(staging(server))
    assert stage.volume_capability.access_mode.mode == Mode.MULTI_NODE_MULTI_WRITER
    assert stage.volume_capability.WhichOneof("access_type") == "mount"
    assert dict(stage.volume_context) == {}
    publish = publish_request(server)
    assert publish.volume_id == VOLUME_ID
    assert publish.target_path == str(target)
    assert publish.staging_target_path == str(staging(server))
    assert publish.volume_capability == stage.volume_capability
    assert publish.readonly is False
    assert staging(server).is_dir()  # made by the CLI, as a CO makes it
    methods = server.calls.methods()
    assert methods.index("NodeStageVolume") < methods.index("NodePublishVolume")
    assert result.stdout == (
        f"volume data mounted at {target} (read-write), staged at {staging(server)}\n"
    )


def test_mount_readonly_of_a_relative_path_publishes_the_absolute_path(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(server.directory)

    result = server.run("mount", "data", "mnt", "--readonly")

    assert result.exit_code == 0, result.output
    publish = publish_request(server)
    assert publish.target_path == str(server.directory / "mnt")
    assert publish.readonly is True
    assert "(read-only)" in result.stdout


def test_mount_uses_the_first_recorded_access_mode_and_block_type(server: FakeServer) -> None:
    server.calls.volumes = [
        volume_info("raw", "fast/42", access_type="block",
                    access_modes=["SINGLE_NODE_SINGLE_WRITER", "SINGLE_NODE_MULTI_WRITER"])
    ]

    result = server.run("mount", "raw", str(server.directory / "dev"))

    assert result.exit_code == 0, result.output
    capability = stage_request(server).volume_capability
    assert capability.access_mode.mode == Mode.SINGLE_NODE_SINGLE_WRITER
    assert capability.WhichOneof("access_type") == "block"
    assert stage_request(server).staging_target_path == str(server.directory / "staging/fast-42")


def test_mount_under_a_missing_parent_is_an_error_before_any_call(server: FakeServer) -> None:
    target = server.directory / "no" / "such" / "mnt"

    result = server.run("mount", "data", str(target))

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot mount at {target}: its parent directory {target.parent} does not exist\n"
    )
    assert server.calls.requests == []


def test_mount_of_an_unknown_volume_stages_nothing(server: FakeServer) -> None:
    result = server.run("mount", "nope", str(server.directory / "mnt"))

    assert result.exit_code == 1
    assert result.stderr.startswith("error: GetVolume: ")
    assert server.calls.of("NodeStageVolume") == []
    assert not (server.directory / "staging").exists()


def test_failed_publish_unstages_a_volume_it_just_staged(server: FakeServer) -> None:
    server.calls.fail("NodePublishVolume", grpc.StatusCode.ALREADY_EXISTS,
                      "target is published with different options")

    result = server.run("mount", "data", str(server.directory / "mnt"))

    assert result.exit_code == 1
    assert result.stderr == (
        "error: NodePublishVolume: target is published with different options (ALREADY_EXISTS)\n"
    )
    [unstage] = server.calls.of("NodeUnstageVolume")
    assert unstage == csi_pb2.NodeUnstageVolumeRequest(
        volume_id=VOLUME_ID, staging_target_path=str(staging(server))
    )
    assert not staging(server).exists()


def test_failed_publish_keeps_a_stage_another_mount_uses(server: FakeServer) -> None:
    first = server.run("mount", "data", str(server.directory / "a"))
    assert first.exit_code == 0, first.output
    server.calls.fail("NodePublishVolume", grpc.StatusCode.INTERNAL, "bind mount failed")

    result = server.run("mount", "data", str(server.directory / "b"))

    assert result.exit_code == 1
    assert server.calls.of("NodeUnstageVolume") == []
    assert staging(server).is_dir()


def test_unmount_of_the_last_mount_unpublishes_unstages_and_removes_the_stage(
    server: FakeServer,
) -> None:
    target = server.directory / "mnt"
    assert server.run("mount", "data", str(target)).exit_code == 0
    server.calls.requests.clear()

    result = server.run("unmount", str(target))

    assert result.exit_code == 0, result.output
    assert server.calls.methods() == [
        "ListPublications", "NodeUnpublishVolume", "ListPublications", "NodeUnstageVolume",
    ]
    assert server.calls.of("NodeUnpublishVolume") == [
        csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOLUME_ID, target_path=str(target))
    ]
    assert server.calls.of("NodeUnstageVolume") == [
        csi_pb2.NodeUnstageVolumeRequest(
            volume_id=VOLUME_ID, staging_target_path=str(staging(server))
        )
    ]
    assert not staging(server).exists()
    assert result.stdout == f"unmounted {target} ({VOLUME_ID}) and unstaged it\n"


def test_unmount_keeps_the_stage_while_another_mount_remains(server: FakeServer) -> None:
    for name in ("a", "b"):
        assert server.run("mount", "data", str(server.directory / name)).exit_code == 0
    server.calls.requests.clear()

    result = server.run("unmount", str(server.directory / "a"))

    assert result.exit_code == 0, result.output
    assert server.calls.of("NodeUnstageVolume") == []
    assert staging(server).is_dir()
    assert "stays mounted at 1 more" in result.stdout


def test_unmount_of_a_path_with_no_mount_is_an_error(server: FakeServer) -> None:
    target = server.directory / "mnt"

    result = server.run("unmount", str(target))

    assert result.exit_code == 1
    assert result.stderr == f"error: no sharevol volume is mounted at {target}\n"
    assert server.calls.of("NodeUnpublishVolume") == []


def test_unmount_failure_leaves_the_stage_alone(server: FakeServer) -> None:
    target = server.directory / "mnt"
    assert server.run("mount", "data", str(target)).exit_code == 0
    server.calls.fail("NodeUnpublishVolume", grpc.StatusCode.FAILED_PRECONDITION,
                      f"{target} is busy")

    result = server.run("unmount", str(target))

    assert result.exit_code == 1
    assert "is busy (FAILED_PRECONDITION)" in result.stderr
    assert server.calls.of("NodeUnstageVolume") == []
    assert staging(server).is_dir()


def test_mount_of_a_reader_only_volume_publishes_read_only(server: FakeServer) -> None:
    server.calls.volumes = [volume_info("ro", "default/7", access_modes=["MULTI_NODE_READER_ONLY"])]

    result = server.run("mount", "ro", str(server.directory / "mnt"))

    assert result.exit_code == 0, result.output
    assert publish_request(server).readonly is True
    assert "(read-only)" in result.stdout


def test_failed_stage_publishes_nothing_and_removes_the_staging_directory(
    server: FakeServer,
) -> None:
    server.calls.fail("NodeStageVolume", grpc.StatusCode.INTERNAL, "mount exited 32: bad fs")

    result = server.run("mount", "data", str(server.directory / "mnt"))

    assert result.exit_code == 1
    assert result.stderr == "error: NodeStageVolume: mount exited 32: bad fs (INTERNAL)\n"
    assert server.calls.of("NodePublishVolume") == []
    assert not staging(server).exists()


@pytest.mark.parametrize("kind", ["directory with files", "non-empty file", "symlink"])
def test_mount_refuses_a_target_that_would_hide_data(server: FakeServer, kind: str) -> None:
    """`volume mount data /etc` must not hide /etc: only new paths and empty directories."""
    target = server.directory / "busy"
    if kind == "directory with files":
        target.mkdir()
        (target / "keep").write_text("x")
    elif kind == "non-empty file":
        target.write_text("x")
    else:
        target.symlink_to(server.directory)

    result = server.run("mount", "data", str(target))

    assert result.exit_code == 1
    assert result.output.startswith("error: cannot mount at ")
    assert server.calls.of("NodeStageVolume") == []


def test_mount_onto_an_empty_directory_works(server: FakeServer) -> None:
    target = server.directory / "empty"
    target.mkdir()
    result = server.run("mount", "data", str(target))
    assert result.exit_code == 0, result.output
    assert publish_request(server).target_path == str(target)
