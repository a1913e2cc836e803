"""VolumeSnapshotClass parameters: the external-snapshotter's metadata keys and nothing else."""

from __future__ import annotations

import pytest

from sharevol.errors import InvalidArgument
from sharevol.service.snapshots import (
    SNAPSHOT_CONTENT_NAME,
    SNAPSHOT_NAME,
    SNAPSHOT_NAMESPACE,
    parse_snapshot_parameters,
)


def test_the_snapshotter_metadata_keys_are_accepted() -> None:
    parsed = parse_snapshot_parameters(
        {SNAPSHOT_NAME: "nightly", SNAPSHOT_NAMESPACE: "db", SNAPSHOT_CONTENT_NAME: "snapcontent-1"}
    )
    assert (parsed.snapshot_name, parsed.snapshot_namespace, parsed.content_name) == (
        "nightly", "db", "snapcontent-1",
    )  # fmt: skip


def test_no_parameters_at_all_is_fine() -> None:
    assert parse_snapshot_parameters({}).snapshot_name is None


@pytest.mark.parametrize(
    "values",
    [
        {"bogus": "1"},
        {"snapshot_name": "python field names are not keys"},
        {"pool": "fast"},
        {SNAPSHOT_NAMESPACE: "n" * 64},
        {SNAPSHOT_NAME: "x" * 5000},
    ],
)
def test_anything_else_is_invalid_argument_naming_the_key(values: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_snapshot_parameters(values)
    assert next(iter(values)) in str(err.value) or "4096" in str(err.value)
