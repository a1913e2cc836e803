"""Volume IDs: only `<pool>/<32 lowercase hex>` parses; CSI's 128-byte limit counts bytes."""

from __future__ import annotations

import pytest

from sharevol.errors import InvalidArgument
from sharevol.service.ids import (
    MAX_ID_BYTES,
    VolumeRef,
    check_id_length,
    new_volume_ref,
    parse_volume_id,
)

HEX = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("pool", ["a", "fast", "fast-1", "0", "a" * 32])
def test_pool_slash_32_hex_parses(pool: str) -> None:
    ref = parse_volume_id(f"{pool}/{HEX}")

    assert ref == VolumeRef(pool, HEX)
    assert ref is not None and ref.volume_id == f"{pool}/{HEX}"


@pytest.mark.parametrize(
    "volume_id",
    [
        "",
        HEX,
        f"fast/{HEX[:-1]}",
        f"fast/{HEX}0",
        f"fast/{HEX.upper()}",
        f"fast/{HEX[:-1]}A",
        f"fast/{HEX[:-1]}g",
        f"Fast/{HEX}",
        f"-fast/{HEX}",
        f"fast-/{HEX}",
        f"{'a' * 33}/{HEX}",
        f"/{HEX}",
        f"fast//{HEX}",
        f"fast/{HEX}/",
        f"fast/sub/{HEX}",
        f"/fast/{HEX}",
        f"../{HEX}",
        f"fast/../{HEX}",
        f"fast/{HEX[:16]}/../{HEX[16:]}",
        "../../etc/passwd",
        f"fast/{HEX}\0",
        f"fa\0st/{HEX}",
        f" fast/{HEX}",
        f"fast/{HEX} ",
        f"fast\\{HEX}",
        "x" * 10_000,
        f"fast/{HEX}" * 4,
    ],
)
def test_anything_else_does_not_parse(volume_id: str) -> None:
    assert parse_volume_id(volume_id) is None


def test_a_trailing_newline_does_not_parse() -> None:
    assert parse_volume_id(f"fast/{HEX}\n") is None


def test_new_refs_parse_back_to_themselves() -> None:
    ref = new_volume_ref("fast")

    assert parse_volume_id(ref.volume_id) == ref
    assert len(ref.uuid) == 32


def test_new_refs_are_unique() -> None:
    assert len({new_volume_ref("fast").uuid for _ in range(100)}) == 100


def test_an_id_of_128_bytes_passes_the_length_check() -> None:
    check_id_length("a" * MAX_ID_BYTES, "volume_id")


def test_an_id_of_129_bytes_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="volume_id is longer than 128 bytes"):
        check_id_length("a" * (MAX_ID_BYTES + 1), "volume_id")


def test_multi_byte_characters_count_in_bytes() -> None:
    check_id_length("é" * 64, "name")  # 64 characters, 128 bytes
    with pytest.raises(InvalidArgument, match="name is longer than 128 bytes"):
        check_id_length("é" * 64 + "a", "name")  # 65 characters, 129 bytes


def test_a_four_byte_character_counts_four() -> None:
    check_id_length("\U0001f4be" * 32, "name")  # 32 characters, 128 bytes
    with pytest.raises(InvalidArgument):
        check_id_length("\U0001f4be" * 32 + "a", "name")


def test_lone_surrogates_are_measured_not_crashed_on() -> None:
    # gRPC hands us str; a lone surrogate must still be measured (3 bytes each), not raise
    # UnicodeEncodeError (which would become INTERNAL).
    check_id_length("\ud800" * 42, "name")  # 126 bytes
    with pytest.raises(InvalidArgument):
        check_id_length("\ud800" * 43, "name")  # 129 bytes
