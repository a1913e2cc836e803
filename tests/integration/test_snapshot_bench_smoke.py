"""bench/snapshot.py runs end to end on a tiny data set and leaves nothing behind. Its figures
are not checked: a benchmark is not a timed test."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.sys.runner import SubprocessRunner
from tests.support.bench_runs import bench_workdir, leftovers

pytestmark = pytest.mark.root("mkfs.xfs", "tar", "gzip")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "snapshot.py"
TIMINGS = [
    "btrfs snapshot 1x", "xfs snapshot 1x", "btrfs snapshot 4x", "xfs snapshot 4x",
    "btrfs restore 1x", "xfs restore 1x", "tar czf",
]  # fmt: skip
TIMEOUT = 120.0


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """Where the benchmark makes its images; whatever a failed run leaks is removed afterwards."""
    yield from bench_workdir(tmp_path)


def test_snapshot_benchmark_prints_times_ratios_and_cleans_up(workdir: Path) -> None:
    argv = [sys.executable, str(BENCH), "--gib", "0.004", "--files", "8", "--repeat", "1",
            "--scale", "--json", "--workdir", str(workdir)]  # fmt: skip
    result = SubprocessRunner().run(argv, timeout=TIMEOUT, check=False)

    assert result.returncode == 0, result.stderr
    table, _, document = result.stdout.partition("\n{")
    assert "median s" in table and "verdict" in table
    figures = json.loads("{" + document)
    assert [t["name"] for t in figures["timings"]] == TIMINGS
    assert all(t["median_s"] > 0 for t in figures["timings"])
    targets = {row["target"] for row in figures["targets"]}
    assert "tar czf / btrfs snapshot" in targets and "xfs snapshot 4x data / 1x" in targets
    assert leftovers(workdir) == []
