"""A directory tree with every kind of metadata a copy can lose, and an exact description of a
tree to compare copies with (types, modes, owners, times, xattrs, links, sparseness, content).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
SPARSE_SIZE = 64 * MiB
SPARSE_DATA_OFFSET = 32 * MiB
SPARSE_DATA = os.urandom(MiB)
OLD_NS = 1_000_000_000 * 1_000_000_000  # 2001-09-09, in ns
OTHER_OLD_NS = OLD_NS + 123_456_789


def build_tree(root: Path, *, owners: bool = True) -> None:
    """Fill `root` (an existing directory): files, a sparse file, hard links, symlinks (one
    dangling), a FIFO, nested directories, setuid and odd modes, foreign owners (as root),
    user xattrs on a file and a directory, and old timestamps set last."""
    (root / "docs").mkdir()
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("hello snapshot\n")
    (root / "docs" / "deep" / "er" / "data.bin").write_bytes(os.urandom(300_000))
    (root / "empty").write_bytes(b"")
    with (root / "sparse.img").open("wb") as handle:
        handle.truncate(SPARSE_SIZE)
        handle.seek(SPARSE_DATA_OFFSET)
        handle.write(SPARSE_DATA)
    (root / "linked").write_text("one inode, three names\n")
    os.link(root / "linked", root / "docs" / "linked-again")
    os.link(root / "linked", root / "docs" / "deep" / "linked-deep")
    os.symlink("docs/readme.txt", root / "to-readme")
    os.symlink("/nonexistent/target", root / "dangling")
    os.mkfifo(root / "pipe", 0o640)
    tool = root / "tool"
    tool.write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(tool, 0o4755)  # noqa: S103 (a setuid file on purpose)
    os.chmod(root / "docs" / "deep", 0o750)  # noqa: S103
    os.chmod(root / "docs" / "readme.txt", 0o600)
    os.setxattr(root / "docs" / "readme.txt", "user.color", b"blue")
    os.setxattr(root / "docs", "user.team", b"storage")
    if owners:
        os.chown(root / "docs" / "readme.txt", 1234, 5678)
        os.chown(root / "to-readme", 4321, 8765, follow_symlinks=False)
        os.chown(root / "docs" / "deep", 2000, 2000)
        os.chmod(tool, 0o4755)  # noqa: S103 (chown cleared setuid; set it again)
    for path in (root / "docs" / "readme.txt", root / "to-readme", root / "pipe"):
        os.utime(path, ns=(OTHER_OLD_NS, OLD_NS), follow_symlinks=False)
    for directory in (root / "docs" / "deep" / "er", root / "docs" / "deep", root / "docs"):
        os.utime(directory, ns=(OLD_NS, OLD_NS))


@dataclass(frozen=True)
class Entry:
    """What a copy must keep of one path (atime only for files and FIFOs: listing a directory
    or reading a symlink may update its atime, so no description can leave those untouched)."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int | None
    size: int
    target: str | None
    xattrs: tuple[tuple[str, bytes], ...]


def describe(root: Path) -> tuple[dict[str, Entry], list[list[str]]]:
    """Every entry below `root` (stat only, no file is read) and the groups of hard links."""
    entries: dict[str, Entry] = {}
    inodes: dict[int, list[str]] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        path = root / rel if rel else root
        st = os.lstat(path)
        kind = _kind(st.st_mode)
        entries[rel or "."] = Entry(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            atime_ns=None if kind in ("dir", "link") else st.st_atime_ns,
            size=st.st_size if kind in ("file", "link") else 0,
            target=os.readlink(path) if kind == "link" else None,
            xattrs=_xattrs(path),
        )
        if kind != "dir":
            inodes.setdefault(st.st_ino, []).append(rel)
            continue
        pending.extend(f"{rel}/{name}" if rel else name for name in sorted(os.listdir(path)))
    groups = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return entries, groups


def differences(
    got: tuple[dict[str, Entry], list[list[str]]], want: tuple[dict[str, Entry], list[list[str]]]
) -> list[str]:
    """What differs between two descriptions, one readable line per path (empty when equal)."""
    lines = [
        f"{rel}: {got[0].get(rel)} != {want[0].get(rel)}"
        for rel in sorted(set(got[0]) | set(want[0]))
        if got[0].get(rel) != want[0].get(rel)
    ]
    if got[1] != want[1]:
        lines.append(f"hard links {got[1]} != {want[1]}")
    return lines


def contents(root: Path) -> dict[str, str]:
    """sha256 of every regular file below `root` (reads them)."""
    digests: dict[str, str] = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def allocated_bytes(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "other"


def _xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    names = sorted(n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user."))
    return tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)
