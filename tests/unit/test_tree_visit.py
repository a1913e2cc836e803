"""The fd-based tree walk behind re-setting a volume's project ID (sharevol.sys.tree_visit):
every directory and regular file once, nothing through a symlink, no special file opened, and
a deadline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sharevol.errors import Internal
from sharevol.sys.tree_visit import visit_tree


def test_walk_visits_directories_and_regular_files_only_and_never_leaves_the_tree(
    tmp_path: Path,
) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file").write_text("x")
    (tree / "top").write_text("y")
    outside.mkdir()
    (outside / "secret").write_text("z")
    (tree / "link-dir").symlink_to(outside)
    (tree / "link-file").symlink_to(outside / "secret")
    os.mkfifo(tree / "fifo")  # opening it would block: it must be skipped, not opened
    seen: dict[str, bool] = {}

    def visit(fd: int, where: str, is_dir: bool) -> None:
        assert os.fstat(fd).st_ino == os.stat(where, follow_symlinks=False).st_ino
        seen[os.path.relpath(where, tree)] = is_dir

    count = visit_tree(tree, visit, timeout=10)

    assert seen == {".": True, "a": True, "a/b": True, "a/b/file": False, "top": False}
    assert count == 5


def test_walk_that_runs_out_of_time_says_so(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"f{index}").write_text("x")

    with pytest.raises(Internal, match="ran out of time"):
        visit_tree(tmp_path, lambda fd, where, is_dir: None, timeout=-1)
