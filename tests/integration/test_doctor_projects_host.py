"""`sharevol doctor` on a real XFS pool on the host, where project IDs work (FS_IOC_FSSETXATTR)
but no quota does (`enforce_quota: false`): a volume folder whose project ID differs from its
record is found, `--fix` gives the whole tree its recorded ID back without following a symlink
out of the volume, and an unsafe mismatch is left as it is. Limits are checked in the VM tier
(tests/vm/test_doctor_quota.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.cli.main import cli
from sharevol.pools._project_ids import PROJECT_KEY
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.pools.xfs import XfsPool
from sharevol.service.doctor import DoctorReport, run_doctor
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.sys import quota
from tests.support.loopfs import loop_filesystem

pytestmark = pytest.mark.root("mkfs.xfs")

MiB = 1024 * 1024
RWX = (Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER),)


@dataclass
class XfsSetup:
    fs: Path
    config: ServerConfig
    provisioner: Provisioner
    pool: XfsPool

    def create(self, name: str) -> VolumeRecord:
        return self.provisioner.create_volume(CreateRequest(name, RWX, 8 * MiB))

    def path(self, record: VolumeRecord) -> Path:
        return self.pool.volume_path(record.directory)


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[XfsSetup]:
    """Pool "fast" of kind xfs (not enforcing) on a fresh loop-mounted XFS."""
    with loop_filesystem(tmp_path, "xfs", 512 * MiB) as fs:
        config = ServerConfig(
            pools=(PoolConfig(name="fast", path=fs, kind="xfs", enforce_quota=False),)
        )
        pool = XfsPool("fast", fs, enforce_quota=False)
        pool.start()
        catalog = Catalog(fs)
        catalog.ensure()
        provisioner = Provisioner({"fast": PoolHandle(pool, catalog)}, "fast", "node-1")
        yield XfsSetup(fs, config, provisioner, pool)


def project_of_file(path: Path) -> int:
    """The project ID of any inode (quota.get_project opens directories only)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return quota.get_fsxattr(fd, path)[1]
    finally:
        os.close(fd)


def recorded(record: VolumeRecord) -> int:
    return int(record.backend[PROJECT_KEY])


def lines(report: DoctorReport, check: str) -> list[tuple[str, str]]:
    return [(line.status, line.subject) for line in report.lines if line.check == check]


def subject(record: VolumeRecord) -> str:
    return f"volume {record.name} ({record.volume_id})"


def test_a_volume_tree_in_the_wrong_project_gets_its_recorded_id_back_without_leaving_it(
    xfs: XfsSetup, tmp_path: Path
) -> None:
    good, wrong = xfs.create("good"), xfs.create("wrong")
    volume = xfs.path(wrong)
    (volume / "sub" / "deeper").mkdir(parents=True)
    (volume / "sub" / "deeper" / "data.bin").write_bytes(os.urandom(64 * 1024))
    (volume / "top.txt").write_text("kept")
    outside = xfs.fs / "outside"  # on the same filesystem, not in any volume
    outside.mkdir()
    (outside / "theirs.txt").write_text("not the volume's")
    (volume / "escape").symlink_to(outside)
    # What copying the data back by hand leaves: every inode in project 0.
    quota.set_project(volume, 0)
    for path in (volume / "sub", volume / "sub" / "deeper"):
        quota.set_project(path, 0)
    for path in (volume / "top.txt", volume / "sub" / "deeper" / "data.bin"):
        fd = os.open(path, os.O_RDONLY)
        quota.set_fsxattr_project(fd, path, 0, inherit=False)
        os.close(fd)

    report = run_doctor(xfs.config)

    assert lines(report, "project-ids") == [("problem", subject(wrong))]
    assert lines(report, "project-limits") == [("skipped", "")]  # no quota on this kernel
    assert report.problems == 1

    fixed = run_doctor(xfs.config, fix=True)

    assert lines(fixed, "project-ids") == [("fixed", subject(wrong))]
    assert fixed.problems == 0
    for path in (
        volume,
        volume / "sub",
        volume / "sub" / "deeper",
        volume / "top.txt",
        volume / "sub" / "deeper" / "data.bin",
    ):
        assert project_of_file(path) == recorded(wrong), path
    assert (volume / "top.txt").read_text() == "kept"
    assert project_of_file(outside) == 0  # the symlink was not followed
    assert project_of_file(outside / "theirs.txt") == 0
    assert quota.get_project(xfs.path(good)) == recorded(good)


def test_swapped_project_ids_are_found_and_fix_leaves_them_alone(
    xfs: XfsSetup, tmp_path: Path
) -> None:
    a, b = xfs.create("a"), xfs.create("b")
    quota.set_project(xfs.path(a), recorded(b))
    quota.set_project(xfs.path(b), recorded(a))
    config_file = tmp_path / "pools.yaml"
    config_file.write_text(yaml.safe_dump(xfs.config.model_dump(mode="json")))

    result = CliRunner().invoke(cli, ["doctor", "--config", str(config_file), "--fix"])

    assert result.exit_code == 1, result.output
    assert "not repaired automatically" in result.output
    assert quota.get_project(xfs.path(a)) == recorded(b)
    assert quota.get_project(xfs.path(b)) == recorded(a)
