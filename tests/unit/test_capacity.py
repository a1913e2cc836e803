"""Sizes of new volumes from CSI capacity ranges, range checks of existing ones, pool budgets."""

from __future__ import annotations

import pytest

from sharevol.errors import InvalidArgument, OutOfRange
from sharevol.service.capacity import (
    BLOCK,
    DEFAULT_VOLUME_BYTES,
    MIN_VOLUME_BYTES,
    choose_capacity,
    fits,
    pool_budget,
)

KiB, MiB, GiB = 1024, 1024**2, 1024**3


def test_neither_bound_gives_the_default_of_1_gib() -> None:
    assert GiB == DEFAULT_VOLUME_BYTES
    assert choose_capacity(0, 0) == GiB


def test_required_only_gives_exactly_the_required_size_when_aligned() -> None:
    assert choose_capacity(5 * GiB, 0) == 5 * GiB


def test_required_only_is_rounded_up_to_4_kib() -> None:
    assert choose_capacity(10 * MiB + 1, 0) == 10 * MiB + 4 * KiB
    assert choose_capacity(10 * MiB + 4095, 0) == 10 * MiB + 4 * KiB


def test_required_below_the_minimum_gives_1_mib() -> None:
    assert MiB == MIN_VOLUME_BYTES
    assert choose_capacity(1, 0) == MiB
    assert choose_capacity(MiB - 1, 0) == MiB


def test_limit_only_above_the_default_gives_the_default() -> None:
    assert choose_capacity(0, 10 * GiB) == GiB


def test_limit_only_below_the_default_gives_the_limit() -> None:
    assert choose_capacity(0, 100 * MiB) == 100 * MiB


def test_limit_only_unaligned_is_rounded_down_to_4_kib() -> None:
    assert choose_capacity(0, 100 * MiB + 100) == 100 * MiB


def test_limit_of_exactly_the_minimum_is_accepted() -> None:
    assert choose_capacity(0, MiB) == MiB


def test_both_bounds_give_the_required_size() -> None:
    assert choose_capacity(2 * GiB, 3 * GiB) == 2 * GiB


def test_equal_bounds_give_that_size() -> None:
    assert choose_capacity(64 * MiB, 64 * MiB) == 64 * MiB


def test_rounding_up_never_passes_the_limit() -> None:
    assert choose_capacity(10 * MiB + 1, 10 * MiB + 8 * KiB) == 10 * MiB + 4 * KiB


def test_a_range_without_a_4_kib_multiple_still_gets_a_size_inside_it() -> None:
    required, limit = 10 * MiB + 1, 10 * MiB + 100

    size = choose_capacity(required, limit)

    assert required <= size <= limit


@pytest.mark.parametrize("limit", [1, 4 * KiB, MiB - 1])
def test_limit_below_the_minimum_is_out_of_range(limit: int) -> None:
    with pytest.raises(OutOfRange, match="below the smallest volume"):
        choose_capacity(0, limit)


def test_required_and_limit_both_below_the_minimum_is_out_of_range() -> None:
    with pytest.raises(OutOfRange):
        choose_capacity(1000, 2000)


def test_required_larger_than_limit_is_out_of_range() -> None:
    with pytest.raises(OutOfRange, match=r"required_bytes 2000000000 is larger than limit_bytes"):
        choose_capacity(2_000_000_000, 1_000_000_000)


@pytest.mark.parametrize(("required", "limit"), [(-1, 0), (0, -1), (-GiB, -GiB)])
def test_negative_bytes_are_invalid_argument(required: int, limit: int) -> None:
    with pytest.raises(InvalidArgument, match="must not be negative"):
        choose_capacity(required, limit)


@pytest.mark.parametrize(
    ("required", "limit"),
    [(0, 0), (1, 0), (123_456_789, 0), (0, 123_456_789), (5 * MiB, 5 * MiB + 1), (GiB, 2 * GiB)],
)
def test_results_are_4_kib_multiples_within_the_range(required: int, limit: int) -> None:
    size = choose_capacity(required, limit)

    assert size % BLOCK == 0
    assert size >= max(required, MIN_VOLUME_BYTES)
    assert fits(size, required, limit)


def test_fits_with_no_bounds_accepts_any_size() -> None:
    assert fits(1, 0, 0)
    assert fits(10 * GiB, 0, 0)


def test_fits_refuses_sizes_below_required() -> None:
    assert not fits(GiB - 1, GiB, 0)
    assert fits(GiB, GiB, 0)


def test_fits_refuses_sizes_above_limit() -> None:
    assert not fits(GiB + 1, 0, GiB)
    assert fits(GiB, 0, GiB)


def test_fits_checks_both_bounds() -> None:
    assert fits(2 * GiB, GiB, 3 * GiB)
    assert not fits(4 * GiB, GiB, 3 * GiB)
    assert not fits(GiB // 2, GiB, 3 * GiB)


def test_pool_budget_is_total_times_overcommit() -> None:
    assert pool_budget(10 * GiB, 1.0) == 10 * GiB
    assert pool_budget(10 * GiB, 2.5) == 25 * GiB
    assert pool_budget(10 * GiB, 0.5) == 5 * GiB
    assert pool_budget(10 * GiB, 0.0) == 0


def test_pool_budget_is_whole_bytes_rounded_down() -> None:
    assert pool_budget(3, 0.5) == 1
    assert isinstance(pool_budget(10 * GiB, 1.1), int)
