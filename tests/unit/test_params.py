"""StorageClass parameters: the schema, the error messages, the CSI 4 KiB map limit."""

from __future__ import annotations

import pytest

from sharevol.catalog.records import OnDelete
from sharevol.errors import InvalidArgument
from sharevol.service.params import (
    MAX_MAP_BYTES,
    PV_NAME,
    PVC_NAME,
    PVC_NAMESPACE,
    check_map_size,
    parse_parameters,
)

KNOWN_KEYS = ("pool", "onDelete", "subDir", PVC_NAME, PVC_NAMESPACE, PV_NAME)


def test_no_parameters_mean_the_defaults() -> None:
    params = parse_parameters({})

    assert params.pool is None
    assert params.on_delete is OnDelete.DELETE
    assert params.sub_dir is None
    assert (params.pvc_name, params.pvc_namespace, params.pv_name) == (None, None, None)


def test_every_known_key_is_parsed_into_its_field() -> None:
    params = parse_parameters(
        {
            "pool": "fast-1",
            "onDelete": "archive",
            "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}",
            PVC_NAME: "data",
            PVC_NAMESPACE: "team-a",
            PV_NAME: "pvc-0123",
        }
    )

    assert params.pool == "fast-1"
    assert params.on_delete is OnDelete.ARCHIVE
    assert params.sub_dir == "${pvc.metadata.namespace}-${pvc.metadata.name}"
    assert params.pvc_name == "data"
    assert params.pvc_namespace == "team-a"
    assert params.pv_name == "pvc-0123"


@pytest.mark.parametrize("value", ["delete", "retain", "archive"])
def test_on_delete_accepts_each_policy(value: str) -> None:
    assert parse_parameters({"onDelete": value}).on_delete is OnDelete(value)


@pytest.mark.parametrize("value", ["Delete", "RETAIN", "keep", "", "recycle"])
def test_on_delete_outside_the_three_policies_is_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidArgument, match="'onDelete'"):
        parse_parameters({"onDelete": value})


def test_unknown_key_is_invalid_argument_naming_the_key_and_listing_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_parameters({"ondelete": "retain"})

    message = str(caught.value)
    assert "unknown parameter 'ondelete'" in message
    for key in KNOWN_KEYS:
        assert key in message


def test_every_bad_key_is_named_in_one_message() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_parameters({"size": "1Gi", "pool": "Bad_Pool", "fstype": "ext4"})

    message = str(caught.value)
    assert "unknown parameter 'size'" in message
    assert "unknown parameter 'fstype'" in message
    assert "parameter 'pool'" in message


@pytest.mark.parametrize("key", ["on_delete", "sub_dir", "pvc_name", "pvc_namespace", "pv_name"])
def test_python_field_names_are_unknown_keys(key: str) -> None:
    with pytest.raises(InvalidArgument, match=f"unknown parameter '{key}'"):
        parse_parameters({key: "retain"})


@pytest.mark.parametrize("pool", ["a", "fast", "fast-1", "0pool", "a" * 32])
def test_pool_names_matching_the_pattern_are_accepted(pool: str) -> None:
    assert parse_parameters({"pool": pool}).pool == pool


@pytest.mark.parametrize(
    "pool",
    ["", "Fast", "-fast", "fast-", "fa_st", "fa.st", "../x", "a/b", "a" * 33, "fast\n", "fa\0st"],
)
def test_pool_names_outside_the_pattern_are_invalid_argument(pool: str) -> None:
    with pytest.raises(InvalidArgument, match="parameter 'pool'"):
        parse_parameters({"pool": pool})


def test_parameters_of_exactly_4_kib_are_accepted() -> None:
    key = "subDir"
    values = {key: "a" * (MAX_MAP_BYTES - len(key))}

    check_map_size(values, "parameters")  # no error at the limit itself


def test_parameters_over_4_kib_are_refused_before_the_schema() -> None:
    # Unknown keys would also be refused; the size message must come first and say the rule.
    values = {f"key-{n}": "v" * 100 for n in range(40)}

    with pytest.raises(InvalidArgument, match=r"parameters is \d+ bytes; CSI allows at most 4096"):
        parse_parameters(values)


def test_map_size_counts_utf8_bytes_not_characters() -> None:
    values = {"k": "é" * 2048}  # 2048 characters, 4096 bytes, plus the key

    with pytest.raises(InvalidArgument, match="4097 bytes"):
        check_map_size(values, "parameters")


def test_parsed_parameters_are_frozen() -> None:
    params = parse_parameters({"pool": "fast"})

    with pytest.raises(ValueError, match="frozen"):
        params.pool = "other"  # type: ignore[misc]
