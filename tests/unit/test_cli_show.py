"""`sharevol volume list|get|stats`: kubectl-like tables, JSON, and honest usage figures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from sharevol.csi._proto import admin_pb2
from tests.unit.cli_fakes import (
    FakeServer,
    assert_one_line_error,
    key_values,
    only_request,
    running_server,
    volume_info,
)

GI = 1 << 30


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with running_server() as fake:
        yield fake


# list


def test_list_prints_kubectl_columns_usage_and_enforcement(server: FakeServer) -> None:
    now = int(time.time())
    server.calls.volumes = [
        volume_info(
            "web",
            "default/b",
            capacity_bytes=GI,
            used_bytes=5 * 1024**2,
            quota_enforced=False,
            access_modes=["MULTI_NODE_MULTI_WRITER"],
            on_delete="retain",
            published_targets=["/mnt/web"],
            created_unix=now - 300,
        ),
        volume_info(
            "db",
            "fast/a",
            capacity_bytes=2 * GI,
            used_bytes=GI,
            access_modes=["SINGLE_NODE_WRITER", "SINGLE_NODE_MULTI_WRITER"],
            pool="fast",
            state="creating",
            created_unix=now - 3 * 86400,
        ),
    ]

    result = server.run("list")

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "CAPACITY",
        "USED",
        "ACCESS",
        "MODES",
        "RECLAIM",
        "STATUS",
        "POOL",
        "AGE",
    ]
    assert header.index("CAPACITY") < header.index("USED") < header.index("ACCESS MODES")
    assert [row.split()[0] for row in rows] == ["db", "web"]  # sorted by name
    db, web = rows
    assert db.split() == ["db", "2Gi", "1Gi", "RWO", "Delete", "Creating", "fast", "3d"]
    assert web.split() == [
        "web",
        "1Gi",
        "(not",
        "enforced)",
        "5Mi",
        "RWX",
        "Retain",
        "Published",
        "default",
        "5m",
    ]
    # Columns line up: every row has its CAPACITY where the header has it.
    assert db.index("2Gi") == web.index("1Gi (not enforced)") == header.index("CAPACITY")


def test_list_json_prints_the_volumes_with_numbers_as_numbers(server: FakeServer) -> None:
    server.calls.volumes = [volume_info("data", used_bytes=42, parameters={"k": "v"})]

    result = server.run("list", "-o", "json")

    assert result.exit_code == 0, result.output
    [item] = json.loads(result.stdout)
    assert item["name"] == "data"
    assert item["capacity_bytes"] == GI
    assert item["used_bytes"] == 42
    assert item["parameters"] == {"k": "v"}
    assert item["access_modes"] == ["SINGLE_NODE_MULTI_WRITER"]


def test_list_without_volumes_says_so_on_stderr(server: FakeServer) -> None:
    result = server.run("list")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "no volumes\n"


# get and stats


def test_get_prints_volume_fields_as_key_values(server: FakeServer) -> None:
    server.calls.volumes = [
        volume_info(
            "data", parameters={"onDelete": "delete"}, published_targets=["/mnt/a", "/mnt/b"]
        )
    ]

    result = server.run("get", "data")

    assert result.exit_code == 0, result.output
    request = only_request(server, "GetVolume")
    assert request == admin_pb2.GetVolumeRequest(name="data")
    fields = key_values(result.stdout)
    assert fields["NAME"] == "data"
    assert fields["VOLUME ID"] == "default/0123456789abcdef"
    assert fields["CAPACITY"] == "1Gi"
    assert fields["ACCESS MODES"] == "RWO"
    assert fields["RECLAIM"] == "Delete"
    assert fields["STATUS"] == "Published"
    assert fields["PUBLISHED AT"] == "/mnt/a,/mnt/b"
    assert fields["PARAMETERS"] == "onDelete=delete"


def test_get_json_prints_the_volume_info(server: FakeServer) -> None:
    server.calls.volumes = [volume_info("data", used_inodes=7)]

    result = server.run("get", "data", "-o", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["used_inodes"] == 7


def test_get_unknown_volume_is_a_not_found_error(server: FakeServer) -> None:
    result = server.run("get", "nope")

    assert result.exit_code == 1
    assert_one_line_error(result.stderr, 'volume "nope" not found', "NOT_FOUND")


def test_stats_prints_capacity_used_available_inodes_quota_pool_path(
    server: FakeServer,
) -> None:
    server.calls.volumes = [
        volume_info(
            "data",
            capacity_bytes=GI,
            used_bytes=256 * 1024**2,
            used_inodes=12,
            quota_enforced=False,
        )
    ]

    result = server.run("stats", "data")

    assert result.exit_code == 0, result.output
    assert key_values(result.stdout) == {
        "CAPACITY": "1Gi",
        "USED": "256Mi",
        "AVAILABLE": "768Mi",
        "USED INODES": "12",
        "QUOTA": "not enforced: writes can go beyond the capacity",
        "POOL": "default",
        "PATH": "/pool/data",
    }


def test_stats_json_reports_available_bytes(server: FakeServer) -> None:
    server.calls.volumes = [volume_info("data", capacity_bytes=GI, used_bytes=GI + 1)]

    result = server.run("stats", "data", "-o", "json")

    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["available_bytes"] == 0  # over a soft limit: nothing left, never negative
    assert stats["quota_enforced"] is True
