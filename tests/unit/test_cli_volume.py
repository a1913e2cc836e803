"""`sharevol volume create|delete` against a real gRPC server with fake servicers."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from tests.unit.cli_fakes import (
    FakeServer,
    assert_one_line_error,
    only_request,
    running_server,
    volume_info,
)

Mode = csi_pb2.VolumeCapability.AccessMode.Mode
GI = 1 << 30


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with running_server() as fake:
        fake.calls.created = csi_pb2.Volume(
            volume_id="default/0123456789abcdef",
            capacity_bytes=GI,
            volume_context={"sharevol.csi.io/quota": "enforced"},
        )
        yield fake


def create_request(server: FakeServer) -> csi_pb2.CreateVolumeRequest:
    request = only_request(server, "CreateVolume")
    assert isinstance(request, csi_pb2.CreateVolumeRequest)
    return request


# create


def test_create_sends_name_size_and_one_mount_capability_per_access_mode(
    server: FakeServer,
) -> None:
    result = server.run(
        "create", "data", "--size", "1Gi", "--access-mode", "rwx", "--access-mode", "rox"
    )

    assert result.exit_code == 0, result.output
    request = create_request(server)
    assert request.name == "data"
    assert request.capacity_range.required_bytes == GI
    assert request.capacity_range.limit_bytes == 0
    modes = [cap.access_mode.mode for cap in request.volume_capabilities]
    assert modes == [Mode.MULTI_NODE_MULTI_WRITER, Mode.MULTI_NODE_READER_ONLY]
    assert all(cap.WhichOneof("access_type") == "mount" for cap in request.volume_capabilities)
    assert dict(request.parameters) == {}
    assert result.stdout == "volume data created: default/0123456789abcdef, 1Gi, quota enforced\n"


@pytest.mark.parametrize(
    ("short", "mode"),
    [
        ("rwo", Mode.SINGLE_NODE_MULTI_WRITER),
        ("rwop", Mode.SINGLE_NODE_SINGLE_WRITER),
        ("rox", Mode.MULTI_NODE_READER_ONLY),
        ("rwx", Mode.MULTI_NODE_MULTI_WRITER),
        ("RWX", Mode.MULTI_NODE_MULTI_WRITER),
    ],
)
def test_create_maps_kubernetes_access_mode_to_csi_mode(
    server: FakeServer, short: str, mode: int
) -> None:
    result = server.run("create", "data", "--size", "1Gi", "--access-mode", short)

    assert result.exit_code == 0, result.output
    [capability] = create_request(server).volume_capabilities
    assert capability.access_mode.mode == mode


def test_create_without_access_mode_asks_for_rwo(server: FakeServer) -> None:
    result = server.run("create", "data", "--size", "1Gi")

    assert result.exit_code == 0, result.output
    [capability] = create_request(server).volume_capabilities
    assert capability.access_mode.mode == Mode.SINGLE_NODE_MULTI_WRITER


def test_create_block_sends_block_capabilities(server: FakeServer) -> None:
    result = server.run(
        "create", "raw", "--size", "1Gi", "--block", "--access-mode", "rwo", "--access-mode", "rwop"
    )

    assert result.exit_code == 0, result.output
    capabilities = create_request(server).volume_capabilities
    assert [cap.WhichOneof("access_type") for cap in capabilities] == ["block", "block"]


@pytest.mark.parametrize(
    ("size", "expected"),
    [("500Mi", 500 * 1024**2), ("1G", 10**9), ("4096", 4096), ("2Ti", 2 * 1024**4)],
)
def test_create_accepts_binary_decimal_and_byte_sizes(
    server: FakeServer, size: str, expected: int
) -> None:
    result = server.run("create", "data", "--size", size)

    assert result.exit_code == 0, result.output
    assert create_request(server).capacity_range.required_bytes == expected


def test_create_sends_params_and_pool_as_parameters(server: FakeServer) -> None:
    result = server.run(
        "create",
        "data",
        "--size",
        "1Gi",
        "--pool",
        "fast",
        "--param",
        "onDelete=retain",
        "--param",
        "mode=a=b",
    )

    assert result.exit_code == 0, result.output
    parameters = dict(create_request(server).parameters)
    assert parameters == {"onDelete": "retain", "mode": "a=b", "pool": "fast"}


def test_create_says_size_not_enforced_when_the_server_cannot_enforce(
    server: FakeServer,
) -> None:
    server.calls.created.volume_context["sharevol.csi.io/quota"] = "not enforced"

    result = server.run("create", "data", "--size", "1Gi")

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(", 1Gi, size not enforced\n")


def test_create_with_bad_size_names_it_and_sends_nothing(server: FakeServer) -> None:
    result = server.run("create", "data", "--size", "1Gx")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "'1Gx'", "--size")
    assert server.calls.requests == []


def test_create_with_zero_size_is_an_error(server: FakeServer) -> None:
    result = server.run("create", "data", "--size", "0")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "'0'")
    assert server.calls.requests == []


def test_create_param_without_equals_is_an_error(server: FakeServer) -> None:
    result = server.run("create", "data", "--size", "1Gi", "--param", "retain")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "'retain' is not KEY=VALUE")
    assert server.calls.requests == []


def test_create_pool_disagreeing_with_param_pool_is_an_error(server: FakeServer) -> None:
    result = server.run("create", "data", "--size", "1Gi", "--pool", "a", "--param", "pool=b")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--pool a", "pool=b")
    assert server.calls.requests == []


def test_create_unknown_access_mode_is_a_one_line_error(server: FakeServer) -> None:
    result = server.run("create", "data", "--size", "1Gi", "--access-mode", "rw-many")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "rw-many", "--access-mode")


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.NOT_FOUND, 'pool "fast" does not exist'),
        (grpc.StatusCode.ALREADY_EXISTS, 'volume "data" exists with capacity 2Gi'),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 'pool "default" has 100Mi free, 1Gi asked'),
    ],
)
def test_create_server_error_is_shown_on_one_line_with_exit_1(
    server: FakeServer, code: grpc.StatusCode, details: str
) -> None:
    server.calls.fail("CreateVolume", code, details + "\nsecond line")

    result = server.run("create", "data", "--size", "1Gi")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "CreateVolume", details, code.name)


# delete


def test_delete_looks_up_the_volume_id_then_deletes_it(server: FakeServer) -> None:
    server.calls.volumes = [volume_info("data", "default/feed", on_delete="retain")]

    result = server.run("delete", "data")

    assert result.exit_code == 0, result.output
    assert server.calls.methods() == ["GetVolume", "DeleteVolume"]
    assert only_request(server, "DeleteVolume") == csi_pb2.DeleteVolumeRequest(
        volume_id="default/feed"
    )
    assert result.stdout == "volume data deleted (default/feed): its data is kept in the pool\n"


def test_delete_unknown_name_is_an_error_and_deletes_nothing(server: FakeServer) -> None:
    result = server.run("delete", "nope")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "nope", "NOT_FOUND")
    assert server.calls.of("DeleteVolume") == []


def test_delete_of_a_volume_in_use_shows_the_servers_reason(server: FakeServer) -> None:
    server.calls.volumes = [volume_info("data")]
    server.calls.fail(
        "DeleteVolume",
        grpc.StatusCode.FAILED_PRECONDITION,
        "volume is published at /mnt/data: unmount it first",
    )

    result = server.run("delete", "data")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "unmount it first", "FAILED_PRECONDITION")
