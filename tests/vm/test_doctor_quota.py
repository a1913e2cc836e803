"""`sharevol doctor` on XFS and ext4 pools with real project quotas, in the VM (the host kernel
has none): a wrong limit is found and set again, a project the filesystem charges without a
record is reported (GETNEXTQUOTA), and a volume tree moved to another project is given its own
back, with its usage, so its size holds again (the host tests cover project IDs alone)."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.pools._project import ProjectQuotaPool
from sharevol.pools._project_ids import FIRST_PROJECT_ID, PROJECT_KEY
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.pools.factory import PROJECT_POOLS
from sharevol.service.doctor import DoctorReport, run_doctor
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from tests.vm.guest import EXT4_DISK, XFS_DISK
from tests.vm.project_quota import MiB, project_fs, write_as_pod

pytestmark = pytest.mark.vm

RWX = (Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER),)
DISKS = {"xfs": XFS_DISK, "ext4": EXT4_DISK}
NO_SPACE = {"xfs": errno.ENOSPC, "ext4": errno.EDQUOT}


@dataclass
class Quota:
    fs_type: str
    config: ServerConfig
    pool: ProjectQuotaPool
    provisioner: Provisioner

    def create(self, name: str, size: int = 8 * MiB) -> VolumeRecord:
        return self.provisioner.create_volume(CreateRequest(name, RWX, size))

    def path(self, record: VolumeRecord) -> Path:
        return self.pool.volume_path(record.directory)


@pytest.fixture(params=["xfs", "ext4"])
def setup(
    request: pytest.FixtureRequest, vm_disk: Callable[[str], Path], tmp_path: Path
) -> Iterator[Quota]:
    """Pool "fast" on a fresh XFS, then ext4, made and mounted for project quota."""
    fs_type = request.param
    with project_fs(vm_disk(DISKS[fs_type]), fs_type, tmp_path) as fs:
        config = ServerConfig(pools=(PoolConfig(name="fast", path=fs, kind=fs_type),))
        pool = PROJECT_POOLS[fs_type]("fast", fs)
        pool.start()
        catalog = Catalog(fs)
        catalog.ensure()
        provisioner = Provisioner({"fast": PoolHandle(pool, catalog)}, "fast", "vm")
        yield Quota(fs_type, config, pool, provisioner)


def statuses(report: DoctorReport, check: str) -> list[tuple[str, str]]:
    return sorted((line.status, line.subject) for line in report.lines if line.check == check)


def subject(record: VolumeRecord) -> str:
    return f"volume {record.name} ({record.volume_id})"


def project(record: VolumeRecord) -> int:
    return int(record.backend[PROJECT_KEY])


def test_doctor_sets_a_wrong_limit_again_and_reports_a_stray_project(setup: Quota) -> None:
    good, small = setup.create("good"), setup.create("small")
    quotas = setup.pool.quotas
    quotas.set_limits(project(small), block_bytes=2 * MiB)
    stray_dir = setup.pool.root / "not-a-volume"
    stray_dir.mkdir()
    stray = FIRST_PROJECT_ID + 500
    quotas.set_project(stray_dir, stray)
    (stray_dir / "data").write_bytes(b"x" * MiB)

    report = run_doctor(setup.config)

    assert statuses(report, "project-limits") == [("problem", subject(small))]
    assert statuses(report, "stray-projects") == [("warning", f"project {stray}")]
    assert statuses(report, "project-ids") == [("ok", "")]

    fixed = run_doctor(setup.config, fix=True)

    assert statuses(fixed, "project-limits") == [("fixed", subject(small))]
    assert fixed.problems == 0
    assert quotas.get(project(small)).block_limit_bytes == 8 * MiB
    assert quotas.get(project(good)).block_limit_bytes == 8 * MiB
    assert quotas.get(stray).used_bytes >= MiB  # reported, never touched


def test_doctor_gives_a_tree_its_project_back_and_its_size_holds_again(setup: Quota) -> None:
    record = setup.create("moved")
    volume = setup.path(record)
    (volume / "sub").mkdir()
    assert write_as_pod(volume / "sub" / "first", 4 * MiB).error is None
    quotas = setup.pool.quotas
    quotas.set_tree_project(volume, 0, 60)  # what copying the data back by hand leaves
    assert quotas.get(project(record)).used_bytes == 0  # its usage moved away with it

    report = run_doctor(setup.config)

    assert statuses(report, "project-ids") == [("problem", subject(record))]

    fixed = run_doctor(setup.config, fix=True)

    assert statuses(fixed, "project-ids") == [("fixed", subject(record))]
    charged = quotas.get(project(record))
    assert charged.used_bytes >= 4 * MiB  # the usage came back with the tree
    assert charged.block_limit_bytes == 8 * MiB
    written = write_as_pod(volume / "sub" / "second", 8 * MiB)
    assert written.error == NO_SPACE[setup.fs_type]
    assert written.bytes <= 4 * MiB + 64 * 1024
