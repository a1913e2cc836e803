"""The CLI's presentation: kubectl ages and access modes, honest capacities, plain tables."""

from __future__ import annotations

import pytest

from sharevol.cli.output import (
    format_access_modes,
    format_age,
    format_capacity,
    format_used,
    message_to_dict,
    render_table,
)
from sharevol.csi._proto import admin_pb2, csi_pb2

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("seconds_ago", "expected"),
    [
        (0, "0s"),
        (5, "5s"),
        (59, "59s"),
        (60, "1m"),
        (3 * 60 + 59, "3m"),
        (3599, "59m"),
        (3600, "1h"),
        (2 * 3600 + 1, "2h"),
        (86399, "23h"),
        (86400, "1d"),
        (4 * 86400 + 7, "4d"),
        (364 * 86400, "364d"),
        (2 * 365 * 86400, "2y"),
        (-30, "0s"),
    ],
)
def test_age_is_printed_like_kubectl(seconds_ago: int, expected: str) -> None:
    assert format_age(int(NOW) - seconds_ago, now=NOW) == expected


def test_age_of_an_unset_timestamp_is_unknown() -> None:
    assert format_age(0, now=NOW) == "<unknown>"


def test_capacity_says_when_it_is_not_enforced() -> None:
    assert format_capacity(1 << 30, quota_enforced=True) == "1Gi"
    assert format_capacity(1 << 30, quota_enforced=False) == "1Gi (not enforced)"
    assert format_capacity(1536 * 1024**2, quota_enforced=True) == "1.5Gi"


def test_negative_usage_is_unknown_not_a_number() -> None:
    assert format_used(-1) == "<unknown>"
    assert format_used(0) == "0"
    assert format_used(512 * 1024) == "512Ki"


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        (["SINGLE_NODE_MULTI_WRITER"], "RWO"),
        (["SINGLE_NODE_WRITER", "SINGLE_NODE_MULTI_WRITER"], "RWO"),
        (["SINGLE_NODE_SINGLE_WRITER"], "RWOP"),
        (["MULTI_NODE_READER_ONLY"], "ROX"),
        (["MULTI_NODE_MULTI_WRITER", "MULTI_NODE_READER_ONLY"], "RWX,ROX"),
        (["SINGLE_NODE_READER_ONLY"], "SINGLE_NODE_READER_ONLY"),
        ([], "<unknown>"),
    ],
)
def test_access_modes_use_kubernetes_short_names(modes: list[str], expected: str) -> None:
    assert format_access_modes(modes) == expected


def test_table_aligns_columns_without_borders_or_trailing_blanks() -> None:
    text = render_table(["NAME", "SIZE"], [["a-long-name", "1Gi"], ["b", "10Gi"]])

    assert text.splitlines() == [
        "NAME          SIZE",
        "a-long-name   1Gi",
        "b             10Gi",
    ]


def test_table_prints_markup_and_long_rows_verbatim() -> None:
    name = "[bold]vol[/bold]-" + "x" * 200

    text = render_table(["NAME", "AGE"], [[name, "5s"]])

    assert text.splitlines()[1] == f"{name}   5s"


def test_message_to_dict_keeps_int64_as_numbers_and_maps_as_objects() -> None:
    info = admin_pb2.VolumeInfo(name="a", capacity_bytes=1 << 40, parameters={"k": "v"},
                                access_modes=["MULTI_NODE_MULTI_WRITER"])

    as_dict = message_to_dict(info)

    assert as_dict["capacity_bytes"] == 1 << 40
    assert as_dict["parameters"] == {"k": "v"}
    assert as_dict["access_modes"] == ["MULTI_NODE_MULTI_WRITER"]
    assert as_dict["published_targets"] == []
    assert as_dict["quota_enforced"] is False


def test_message_to_dict_names_enums_and_skips_the_unset_oneof_branch() -> None:
    capability = csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY
        ),
        block=csi_pb2.VolumeCapability.BlockVolume(),
    )

    assert message_to_dict(capability) == {
        "block": {},
        "access_mode": {"mode": "MULTI_NODE_READER_ONLY"},
    }
