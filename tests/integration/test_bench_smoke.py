"""bench/provision.py runs end to end on a small N and leaves nothing behind, even when it is
stopped with SIGTERM halfway through. Its figures are not checked: they are not timed tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharevol.sys.runner import SubprocessRunner
from tests.support.bench_runs import bench_workdir, leftovers

pytestmark = pytest.mark.root

BENCH = Path(__file__).resolve().parents[2] / "bench" / "provision.py"
PHASES = [
    "floor create", "floor delete", "gRPC create seq", "gRPC delete seq",
    "gRPC create x4", "gRPC delete x4", "ref catalog write", "ref durable create",
    "ref durable delete", "ref gRPC Probe",
]  # fmt: skip
"""The table's rows, in the order printed: measured phases first, then the reference rows."""
TIMEOUT = 60.0


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """Where the benchmark makes its image; whatever a failed run leaks is removed afterwards."""
    yield from bench_workdir(tmp_path)


def test_benchmark_prints_table_and_json_and_cleans_up(workdir: Path) -> None:
    argv = [sys.executable, str(BENCH), "-n", "20", "--clients", "4", "--json",
            "--workdir", str(workdir)]  # fmt: skip
    result = SubprocessRunner().run(argv, timeout=TIMEOUT, check=False)

    assert result.returncode == 0, result.stderr
    table, _, document = result.stdout.partition("\n{")
    assert "p50 ms" in table and "p99 ms" in table
    rows = [line.split("  ")[0] for line in table.splitlines() if line.split("  ")[0] in PHASES]
    assert rows == PHASES, table
    assert table.count("PASS") + table.count("FAIL") == 4
    figures = json.loads("{" + document)
    assert sorted(p["name"] for p in figures["phases"]) == sorted(PHASES)
    assert all(p["ops"] == 20 and p["ops_per_s"] > 0 for p in figures["phases"])
    assert {type(t["pass"]) for t in figures["targets"]} == {bool}
    assert figures["context"]["budget_ms_per_cycle_at_target"] > 0
    assert leftovers(workdir) == []


def test_sigterm_midway_unmounts_detaches_and_removes_the_image(workdir: Path) -> None:
    argv = [sys.executable, str(BENCH), "-n", "16000", "--workdir", str(workdir)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        # The floor folder exists once the image is mounted with quotas on and volumes are
        # being made: the signal then lands in the middle of the work.
        while not any(workdir.glob("sharevol-bench-*/btrfs/floor")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the benchmark never started its floor phase"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert leftovers(workdir) == []
