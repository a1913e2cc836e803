"""Tree copies on the test's own filesystem (no root): the real sparse copy keeps holes, links,
symlinks, modes, times and user xattrs; it reports progress, stops when cancelled, waits while
its gate is closed, and never follows a symlink out of the tree."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sharevol.errors import Internal
from sharevol.sys.reflink import supports_reflink
from sharevol.sys.sparse_copy import copy_file_sparse, sparse_copy_tree
from sharevol.sys.tree_copy import CopyCancelled, CopyControl, Gate, copy_tree
from tests.support import trees

MiB = 1024 * 1024


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    trees.build_tree(root, owners=os.geteuid() == 0)
    return root


def test_sparse_copy_keeps_every_kind_of_entry_and_its_metadata(
    source: Path, tmp_path: Path
) -> None:
    before = trees.describe(source)

    result = sparse_copy_tree(source, tmp_path, "copy")

    copy = tmp_path / "copy"
    assert trees.differences(trees.describe(copy), before) == []
    assert trees.contents(copy) == trees.contents(source)
    assert result.data_bytes >= trees.SPARSE_DATA_OFFSET // 64  # data, not the holes
    assert result.inodes == len(before[0]) - 2  # two extra names of one linked inode


def test_sparse_copy_leaves_holes_as_holes(source: Path, tmp_path: Path) -> None:
    sparse_copy_tree(source, tmp_path, "copy")

    image = tmp_path / "copy" / "sparse.img"
    assert image.stat().st_size == trees.SPARSE_SIZE
    assert trees.allocated_bytes(image) < 2 * MiB


def test_a_file_that_is_all_hole_stays_all_hole(tmp_path: Path) -> None:
    hole = tmp_path / "hole"
    with hole.open("wb") as handle:
        handle.truncate(100 * MiB)
    target = tmp_path / "target"
    src, dst = os.open(hole, os.O_RDONLY), os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        copy_file_sparse(src, dst)
    finally:
        os.close(src)
        os.close(dst)
    assert target.stat().st_size == 100 * MiB
    assert trees.allocated_bytes(target) == 0


def test_progress_counts_data_bytes_up_to_the_total(source: Path, tmp_path: Path) -> None:
    control = CopyControl()

    sparse_copy_tree(source, tmp_path, "copy", control)

    done, total = control.progress
    assert done == total
    assert MiB <= total < 3 * MiB


def test_a_cancelled_copy_stops_with_copy_cancelled(source: Path, tmp_path: Path) -> None:
    control = CopyControl()
    control.cancel()
    with pytest.raises(CopyCancelled):
        sparse_copy_tree(source, tmp_path, "copy", control)


def test_a_closed_gate_holds_the_copy_until_opened(source: Path, tmp_path: Path) -> None:
    gate = Gate()
    gate.close()
    control = CopyControl(gate)
    finished = threading.Event()

    def copy() -> None:
        sparse_copy_tree(source, tmp_path, "copy", control)
        finished.set()

    worker = threading.Thread(target=copy)
    worker.start()
    try:
        assert not finished.wait(0.3)
        assert control.progress[0] == 0
    finally:
        gate.open()
        worker.join(30)
    assert finished.is_set()


def test_cancelling_wakes_a_copy_held_by_the_gate(source: Path, tmp_path: Path) -> None:
    gate = Gate()
    gate.close()
    control = CopyControl(gate)
    errors: list[BaseException] = []

    def copy() -> None:
        try:
            sparse_copy_tree(source, tmp_path, "copy", control)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=copy)
    worker.start()
    control.cancel()
    worker.join(30)
    assert not worker.is_alive()
    assert [type(e) for e in errors] == [CopyCancelled]


def test_the_copy_never_follows_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours\n")
    source = tmp_path / "source"
    source.mkdir()
    os.symlink(outside, source / "escape")
    os.symlink(outside / "secret", source / "secret-link")

    sparse_copy_tree(source, tmp_path, "copy")

    assert os.readlink(tmp_path / "copy" / "escape") == str(outside)
    assert (tmp_path / "copy" / "escape").is_symlink()
    assert sorted(os.listdir(tmp_path / "copy")) == ["escape", "secret-link"]


def test_a_source_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    with pytest.raises(Internal):
        sparse_copy_tree(tmp_path / "link", tmp_path, "copy")


def test_an_existing_target_is_refused(source: Path, tmp_path: Path) -> None:
    (tmp_path / "copy").mkdir()
    with pytest.raises(Internal, match="File exists"):
        sparse_copy_tree(source, tmp_path, "copy")


def test_a_file_vanishing_during_the_copy_is_skipped(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "stays").write_text("here\n")
    (source / "goes").write_text("soon gone\n")

    def copy_and_remove(src_fd: int, dst_fd: int, control: CopyControl | None) -> None:
        copy_file_sparse(src_fd, dst_fd, control)
        (source / "goes").unlink(missing_ok=True)

    copy_tree(source, tmp_path, "copy", copy_and_remove)

    copied = sorted(os.listdir(tmp_path / "copy"))
    assert copied == ["stays"] or (tmp_path / "copy" / "goes").read_text() == "soon gone\n"
    assert (tmp_path / "copy" / "stays").read_text() == "here\n"


def test_reflink_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    supports_reflink(tmp_path)  # the answer depends on the test's filesystem
    assert list(tmp_path.iterdir()) == []
