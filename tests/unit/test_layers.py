"""Imports point down the layers of DESIGN.md: import-linter checks the pyproject.toml contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
DESIGN_LAYERS = [
    {"sharevol.cli"},
    {"sharevol.csi"},
    {"sharevol.service"},
    {"sharevol.pools", "sharevol.nfs"},
    {"sharevol.catalog"},
    {"sharevol.sys"},
]
"""DESIGN.md's layers, top down; siblings share a layer."""


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pyproject_declares_the_design_layers_top_down() -> None:
    """Every package that exists is in its DESIGN.md layer (sharevol.nfs once it is written)."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    contracts = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    packages = (REPO / "src" / "sharevol").iterdir()
    existing = {p.name for p in packages if (p / "__init__.py").exists()}
    expected = [{m for m in layer if m.split(".")[1] in existing} for layer in DESIGN_LAYERS]

    assert config["root_package"] == "sharevol"
    assert len(contracts) == 1, "one layers contract"
    declared = [{m.strip() for m in layer.split("|")} for layer in contracts[0]]
    assert declared == expected


def test_source_tree_keeps_the_layer_contract() -> None:
    result = _lint_imports(REPO)

    assert result.returncode == 0, f"layer contract broken:\n{result.stdout}\n{result.stderr}"
    assert "Layers point down only KEPT" in result.stdout


def test_layer_check_fails_on_an_upward_import(tmp_path: Path) -> None:
    """The same contract on a copy of the tree with sys importing cli: proves the check bites."""
    copy = tmp_path / "src"
    shutil.copytree(REPO / "src" / "sharevol", copy / "sharevol")
    (copy / "sharevol" / "sys" / "upward.py").write_text("import sharevol.cli.main\n")
    for package in ("csi", "nfs"):  # layers not written yet must not hide what this test checks
        (copy / "sharevol" / package).mkdir(exist_ok=True)
        (copy / "sharevol" / package / "__init__.py").touch()

    result = _lint_imports(tmp_path, pythonpath=copy)

    assert result.returncode != 0, result.stdout
    assert "Layers point down only BROKEN" in result.stdout
    assert "sharevol.sys.upward -> sharevol.cli" in result.stdout
