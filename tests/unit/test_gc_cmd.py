"""The age syntax of `sharevol gc --older-than` and `sharevol doctor --stuck-after`."""

from __future__ import annotations

import click
import pytest

from sharevol.cli.gc_cmd import Duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
    ],
)
def test_ages_are_whole_seconds(text: str, seconds: int) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "7", "7days", "d7", "1.5d", "-1d", "7d 12h"])
def test_other_ages_are_refused_with_examples(text: str) -> None:
    with pytest.raises(click.BadParameter, match="7d, 12h"):
        Duration().convert(text, None, None)
