"""The Dockerfile cannot be built on these machines, so its parts are checked one by one: it
parses, it is Debian bookworm, every apt package it names exists in Debian, the tools each role
needs are installed, what it copies exists and is not ignored, and it starts `sharevol`."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharevol.sys.runner import SubprocessRunner
from tests.conftest import in_ci
from tests.support.manifests import REPO

DOCKERFILE = REPO / "Dockerfile"
INSTRUCTIONS = frozenset(
    {
        *("FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT"),
        *("VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"),
    }
)
ROLE_PACKAGES = {
    "python3": "runs the sharevol venv",
    "nfs-common": "node role: the NFS client (mount.nfs4)",
    "btrfs-progs": "btrfs pools",
    "xfsprogs": "xfs pools and image volumes",
    "e2fsprogs": "ext4 pools and image volumes",
    "util-linux": "losetup, blkid, findmnt",
    "mount": "mount/umount",
    "nfs-ganesha": "managed NFS server role",
    "nfs-ganesha-vfs": "Ganesha's VFS backend",
    "dbus": "Ganesha's private control bus",
    "tini": "PID 1 that reaps orphaned children",
}


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    argument: str


def parse(text: str) -> list[Instruction]:
    """Dockerfile logical lines: comments dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, argument = " ".join(pending).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), argument.strip()))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            found.append([])
        assert found, f"line {instruction.line}: {instruction.keyword} before any FROM"
        found[-1].append(instruction)
    return found


def apt_packages(instructions: list[Instruction]) -> list[str]:
    """Every package named after `apt-get install` in RUN instructions."""
    packages: list[str] = []
    for instruction in instructions:
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", instruction.argument):
            words = command.split()
            if "apt-get" in words and "install" in words:
                after = words[words.index("install") + 1 :]
                packages += [w for w in after if not w.startswith("-") and "=" not in w]
    return packages


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def test_dockerfile_parses_into_known_instructions(instructions: list[Instruction]) -> None:
    assert instructions[0].keyword == "FROM"
    for instruction in instructions:
        assert instruction.keyword in INSTRUCTIONS, f"line {instruction.line}: {instruction}"
        assert instruction.argument, f"line {instruction.line}: {instruction.keyword} is empty"


def test_parser_catches_a_broken_dockerfile() -> None:
    with pytest.raises(AssertionError):
        parse("FROM debian:bookworm-slim\nRUN apt-get update \\\n")
    assert parse("FROM x\n# note\nRUN a \\\n  # inside\n  b\n")[1].argument == "a b"


def test_every_stage_is_debian_bookworm(instructions: list[Instruction]) -> None:
    for stage in stages(instructions):
        image = stage[0].argument.split()[0]
        assert re.fullmatch(r"debian:bookworm(-slim)?", image), image


def test_runtime_stage_installs_what_every_role_needs(instructions: list[Instruction]) -> None:
    runtime = stages(instructions)[-1]
    installed = set(apt_packages(runtime))
    missing = {pkg: why for pkg, why in ROLE_PACKAGES.items() if pkg not in installed}
    assert not missing, f"runtime image lacks {missing}"


def test_every_apt_package_exists_in_debian(instructions: list[Instruction]) -> None:
    packages = sorted(set(apt_packages(instructions)))
    assert packages
    lists = list(Path("/var/lib/apt/lists").glob("*_Packages*"))
    if shutil.which("apt-cache") is None or not lists:
        reason = "needs apt-cache with package lists (run apt-get update)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
        pytest.skip(reason)
    # One call for all; apt-cache prints a record ("Package: NAME") for each one it knows.
    result = SubprocessRunner().run(
        ["apt-cache", "show", "--no-all-versions", *packages], timeout=60.0, check=False
    )
    known = set(re.findall(r"^Package: (\S+)$", result.stdout, flags=re.MULTILINE))
    unknown = [package for package in packages if package not in known]
    assert not unknown, f"not in Debian: {unknown}"


def test_runtime_environment_and_entrypoint(instructions: list[Instruction]) -> None:
    runtime = stages(instructions)[-1]
    env = " ".join(i.argument for i in runtime if i.keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env.split()
    assert "GRPC_ENABLE_FORK_SUPPORT=false" in env.split()
    assert re.search(r"PATH=/opt/sharevol/bin:", env)
    [entrypoint] = [i for i in runtime if i.keyword == "ENTRYPOINT"]
    argv = json.loads(entrypoint.argument)  # exec form: signals reach tini, not a shell
    assert argv == ["/usr/bin/tini", "--", "sharevol"]


def _included(relative: str, ignore_lines: list[str]) -> bool:
    """.dockerignore semantics for our file: the last matching pattern decides."""
    included = True
    for line in ignore_lines:
        negated = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            included = negated
    return included


def test_copied_sources_exist_and_are_sent_to_the_builder(
    instructions: list[Instruction],
) -> None:
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [i for i in instructions if i.keyword == "COPY" and "--from=" not in i.argument]
    assert copies
    for copy in copies:
        *sources, _destination = copy.argument.split()
        for source in sources:
            path = REPO / source
            assert path.exists(), f"line {copy.line}: {source} does not exist"
            assert _included(source.rstrip("/"), ignore), f"{source} is in .dockerignore"
    assert not _included(".venv/bin/python", ignore)
    assert os.access(REPO / "deploy/image/sharevol-pool-mount", os.X_OK)
