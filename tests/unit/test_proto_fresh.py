"""The committed protobuf modules are exactly what scripts/gen-proto makes from the .proto files,
so a proto change without regeneration (or a hand edit of generated code) fails CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "src" / "sharevol" / "csi" / "_proto"
HAND_WRITTEN = {"__init__.py"}


def _generated_files(directory: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name not in HAND_WRITTEN
    }


def test_committed_proto_modules_are_byte_identical_to_a_fresh_generation(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    run = subprocess.run(
        [str(REPO / "scripts" / "gen-proto"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"scripts/gen-proto failed:\n{run.stdout}\n{run.stderr}"
    fresh = _generated_files(tmp_path / "sharevol" / "csi" / "_proto")
    committed = _generated_files(COMMITTED)

    assert fresh, "scripts/gen-proto generated nothing"
    assert sorted(committed) == sorted(fresh), (
        "generated file set differs from src/sharevol/csi/_proto: run `make proto`"
    )
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert stale == [], f"stale generated protobuf code {stale}: run `make proto` and commit"
