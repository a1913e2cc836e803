"""Fakes of the sys boundary for unit tests, shipped with the code (httpx's MockTransport habit).

`FakeRunner` records every argv and answers from a script; `FakeMounter` keeps an in-memory mount
table with mountinfo-shaped entries (device, root, options) and the same rules as the kernel for
what can be mounted where, so that idempotency code sees what it would see on a real node.
Paths are checked against the real filesystem (tests point them into tmp dirs), mounts are not.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sharevol.errors import CommandFailed
from sharevol.sys.mounts import (
    MountEntry,
    containing_mount,
    identity_of,
    normalize,
    top_mount_at,
)
from sharevol.sys.runner import DEFAULT_TIMEOUT, CommandResult


@dataclass(frozen=True)
class _Scripted:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    action: Callable[[list[str]], None] | None


class FakeRunner:
    """A CommandRunner that runs nothing: it records argv lists and answers from a script.

    `script(prefix, ...)` sets the answer for every argv starting with `prefix` (the longest
    matching prefix wins, the latest on a tie); anything unscripted succeeds with no output.
    """

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.timeouts: list[float] = []
        self._scripts: list[tuple[tuple[str, ...], _Scripted]] = []

    def script(
        self,
        prefix: Sequence[str],
        *,
        returncode: int = 0,
        stdout: str = "",
        stderr: str = "",
        timed_out: bool = False,
        action: Callable[[list[str]], None] | None = None,
    ) -> None:
        """Answer commands starting with `prefix`; `action(argv)` runs first (side effects)."""
        scripted = _Scripted(returncode, stdout, stderr, timed_out, action)
        self._scripts.append((tuple(prefix), scripted))

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        stdin: str | None = None,
    ) -> CommandResult:
        args = [str(arg) for arg in argv]
        self.calls.append(args)
        self.timeouts.append(timeout)
        scripted = self._match(args)
        if scripted is None:
            return CommandResult(tuple(args), 0, "", "", 0.0)
        if scripted.action is not None:
            scripted.action(args)
        if scripted.timed_out:
            raise CommandFailed(args, None, scripted.stderr, timed_out=True)
        if check and scripted.returncode != 0:
            raise CommandFailed(args, scripted.returncode, scripted.stderr or scripted.stdout)
        return CommandResult(
            tuple(args), scripted.returncode, scripted.stdout, scripted.stderr, 0.0
        )

    def _match(self, args: list[str]) -> _Scripted | None:
        best: tuple[int, _Scripted] | None = None
        for prefix, scripted in self._scripts:
            if tuple(args[: len(prefix)]) == prefix and (best is None or len(prefix) >= best[0]):
                best = (len(prefix), scripted)
        return best[1] if best else None


_ROOT_ENTRY = MountEntry(
    mount_id=1,
    parent_id=0,
    device="0:1",
    root="/",
    mount_point="/",
    mount_options=("rw", "relatime"),
    optional_fields=(),
    fs_type="fakefs",
    source="/dev/fake0",
    super_options=("rw",),
)


class FakeMounter:
    """An in-memory mount table with SystemMounter's semantics.

    It starts with one filesystem at `/` (device 0:1), so a bind of any real directory gets
    the root mountinfo would show. Fault injection: unmounting a path in `busy` fails like
    "target is busy"; unmounting a path in `stuck` reports success but leaves the mount, as a
    lazily detached or re-propagated mount would.
    """

    def __init__(self) -> None:
        self._entries: list[MountEntry] = [_ROOT_ENTRY]
        self._next_id = 2
        self._next_minor = 2
        self._lock = threading.Lock()
        self.busy: set[str] = set()
        self.stuck: set[str] = set()
        self.operations: list[tuple[str, ...]] = []

    def mounts(self) -> list[MountEntry]:
        with self._lock:
            return list(self._entries)

    def find(self, target: str | os.PathLike[str]) -> MountEntry | None:
        with self._lock:
            return top_mount_at(self._entries, target)

    def bind(
        self, source: str | os.PathLike[str], target: str | os.PathLike[str], readonly: bool
    ) -> None:
        src, tgt = normalize(source), normalize(target)
        argv = ["mount", "--bind", *(["-o", "ro"] if readonly else []), "--", src, tgt]
        if not os.path.exists(src):
            raise CommandFailed(argv, 32, f"mount: {tgt}: special device {src} does not exist.")
        self._check_mount_point(argv, tgt)
        if os.path.isdir(src) != os.path.isdir(tgt):
            raise CommandFailed(
                argv, 32, f"mount: {tgt}: mount(2) system call failed: Not a directory."
            )
        with self._lock:
            self.operations.append(("bind", src, tgt, "ro" if readonly else "rw"))
            origin = containing_mount(self._entries, src)
            identity = identity_of(self._entries, src)
            self._add(
                replace(
                    origin,
                    device=identity.device,
                    root=identity.root,
                    mount_options=("ro" if readonly else "rw", "relatime"),
                ),
                tgt,
            )

    def remount_readonly(self, target: str | os.PathLike[str]) -> None:
        tgt = normalize(target)
        with self._lock:
            self.operations.append(("remount_readonly", tgt))
            top = top_mount_at(self._entries, tgt)
            if top is None:
                argv = ["mount", "-o", "remount,bind,ro", "--", tgt]
                raise CommandFailed(
                    argv, 32, f"mount: {tgt}: mount point not mounted or bad option."
                )
            options = tuple("ro" if option == "rw" else option for option in top.mount_options)
            self._entries[self._entries.index(top)] = replace(top, mount_options=options)

    def make_writable(self, target: str | os.PathLike[str]) -> None:
        """Fault injection: someone remounted the top mount at `target` read-write."""
        tgt = normalize(target)
        with self._lock:
            top = top_mount_at(self._entries, tgt)
            if top is None:
                raise ValueError(f"nothing mounted at {tgt}")
            options = tuple("rw" if option == "ro" else option for option in top.mount_options)
            self._entries[self._entries.index(top)] = replace(top, mount_options=options)

    def unmount(self, target: str | os.PathLike[str]) -> None:
        tgt = normalize(target)
        argv = ["umount", "--", tgt]
        with self._lock:
            self.operations.append(("unmount", tgt))
            top = top_mount_at(self._entries, tgt)
            if top is None:
                raise CommandFailed(argv, 32, f"umount: {tgt}: not mounted.")
            has_children = any(entry.parent_id == top.mount_id for entry in self._entries)
            if tgt in self.busy or has_children:
                raise CommandFailed(argv, 32, f"umount: {tgt}: target is busy.")
            if tgt in self.stuck:
                return
            self._entries.remove(top)

    def mount(
        self,
        source: str,
        target: str | os.PathLike[str],
        fstype: str,
        options: Sequence[str] = (),
    ) -> None:
        tgt = normalize(target)
        argv = ["mount", "-t", fstype, "--", source, tgt]
        self._check_mount_point(argv, tgt)
        with self._lock:
            self.operations.append(("mount", source, tgt, fstype, ",".join(options)))
            device = f"0:{self._next_minor}"
            self._next_minor += 1
            mode = "ro" if "ro" in options else "rw"
            entry = MountEntry(
                0, 0, device, "/", tgt, (mode, "relatime"), (), fstype, source, ("rw",)
            )
            self._add(entry, tgt)

    @staticmethod
    def _check_mount_point(argv: list[str], tgt: str) -> None:
        if not os.path.exists(tgt):
            raise CommandFailed(argv, 32, f"mount: {tgt}: mount point does not exist.")

    def _add(self, template: MountEntry, tgt: str) -> None:
        """Put a new mount on top of whatever is visible at `tgt` (caller holds the lock)."""
        parent = top_mount_at(self._entries, tgt) or containing_mount(self._entries, tgt)
        entry = replace(
            template,
            mount_id=self._next_id,
            parent_id=parent.mount_id,
            mount_point=tgt,
            optional_fields=(),
        )
        self._next_id += 1
        self._entries.append(entry)
