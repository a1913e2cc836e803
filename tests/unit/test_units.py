"""Human sizes at the edges: parse_size and format_size, round trips and refusals."""

from __future__ import annotations

import pytest

from sharevol.errors import InvalidArgument
from sharevol.units import format_size, parse_size

KiB, MiB, GiB, TiB, PiB = (1024**n for n in range(1, 6))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("4096", 4096),
        ("1k", 1000),
        ("1K", 1000),
        ("100M", 100_000_000),
        ("2G", 2_000_000_000),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1Ki", KiB),
        ("1Mi", MiB),
        ("1Gi", GiB),
        ("3Ti", 3 * TiB),
        ("2Pi", 2 * PiB),
        ("1.5Gi", GiB + GiB // 2),
        ("0.5Ki", 512),
        ("1GiB", GiB),
        ("100b", 100),
        (" 1Gi ", GiB),
        ("1 Gi", GiB),
        ("1Gi\n", GiB),
    ],
)
def test_parse_size_reads_quantities(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", " ", "Gi", "-1", "-1Gi", "1Xi", "1Gii", "1 G i", "1e3", "1,5Gi", ".5Gi", "1..5",
             "0x10", "1Gi1", "abc", "1m", "1g", "1\0"]
)  # fmt: skip
def test_parse_size_refuses_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["0.5", "1.5", "0.1Ki", "1.0000001Ki"])
def test_parse_size_refuses_fractional_bytes(text: str) -> None:
    with pytest.raises(InvalidArgument, match="whole number of bytes"):
        parse_size(text)


def test_parse_size_lowercase_ki_is_invalid_argument_not_a_crash() -> None:
    with pytest.raises(InvalidArgument):
        parse_size("1ki")


def test_parse_size_is_exact_for_large_byte_counts() -> None:
    assert parse_size(str(2**53 + 1)) == 2**53 + 1


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (1, "1B"),
        (1023, "1023B"),
        (KiB, "1Ki"),
        (1536, "1.5Ki"),
        (MiB, "1Mi"),
        (100 * MiB, "100Mi"),
        (GiB, "1Gi"),
        (GiB + GiB // 2, "1.5Gi"),
        (10 * GiB, "10Gi"),
        (TiB, "1Ti"),
        (PiB, "1Pi"),
        (2048 * PiB, "2048Pi"),
    ],
)
def test_format_size_prints_the_largest_short_binary_unit(size: int, text: str) -> None:
    assert format_size(size) == text


def test_format_size_rounds_to_one_decimal() -> None:
    assert format_size(GiB + GiB // 3) == "1.3Gi"


@pytest.mark.parametrize(
    "size", [0, 1, 512, 1023, KiB, 1536, MiB, 5 * MiB, GiB, 3 * GiB + GiB // 2, 7 * TiB, 3 * PiB]
)
def test_format_then_parse_gives_the_size_back_for_exact_values(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["0", "1Ki", "1.5Ki", "100Mi", "1Gi", "1.5Gi", "2Ti", "4Pi"])
def test_parse_then_format_gives_the_text_back(text: str) -> None:
    assert format_size(parse_size(text)) == text
