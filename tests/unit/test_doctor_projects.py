"""doctor on XFS/ext4 project-quota pools without root: the pools run over the fake quota layer
(sharevol.sys.fake_quota) in a tmp dir, and doctor runs end to end (`run_doctor`), with only the
filesystem type said to be XFS. The real ioctls are proven in tests/integration (project IDs on
a real XFS) and tests/vm (limits)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.pools._project_ids import FIRST_PROJECT_ID, PROJECT_KEY
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.pools.xfs import XfsPool
from sharevol.service.doctor import DoctorReport, pool_checks, run_doctor, runner, scan
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.sys.fake_quota import FakeProjectQuotas
from sharevol.sys.quota import QuotaState

MiB = 1024 * 1024
RWX = (Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER),)


@dataclass
class Setup:
    root: Path
    config: ServerConfig
    quotas: FakeProjectQuotas
    pool: XfsPool
    catalog: Catalog
    provisioner: Provisioner

    def create(self, name: str, size: int = 8 * MiB) -> VolumeRecord:
        return self.provisioner.create_volume(CreateRequest(name, RWX, size))

    def path(self, record: VolumeRecord) -> Path:
        return self.pool.volume_path(record.directory)

    def doctor(self, fix: bool = False) -> DoctorReport:
        return run_doctor(self.config, fix=fix)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """Pool "fast" of kind xfs in a tmp dir over one fake quota layer, which doctor reopens."""
    root = tmp_path / "pool"
    root.mkdir()
    quotas = FakeProjectQuotas()
    config = ServerConfig(pools=(PoolConfig(name="fast", path=root, kind="xfs"),))

    def open_pool(pool_config: PoolConfig) -> tuple[PoolHandle, str]:
        pool = XfsPool(
            pool_config.name,
            pool_config.path,
            quotas=quotas,
            enforce_quota=pool_config.enforce_quota,
        )
        pool.start()
        return PoolHandle(pool, Catalog(pool.root), pool_config.overcommit), ""

    monkeypatch.setattr(runner, "open_pool", open_pool)
    monkeypatch.setattr(scan, "filesystem_type", lambda path: "xfs")
    monkeypatch.setattr(pool_checks, "filesystem_type", lambda path: "xfs")
    handle, _ = open_pool(config.pools[0])
    assert isinstance(handle.pool, XfsPool)
    handle.catalog.ensure()
    provisioner = Provisioner({"fast": handle}, "fast", "node-1")
    yield Setup(root, config, quotas, handle.pool, handle.catalog, provisioner)


def lines(report: DoctorReport, check: str) -> list[tuple[str, str]]:
    return [(line.status, line.subject) for line in report.lines if line.check == check]


def message(report: DoctorReport, check: str, subject: str) -> str:
    [line] = [x for x in report.lines if x.check == check and x.subject == subject]
    return line.message


def subject(record: VolumeRecord) -> str:
    return f"volume {record.name} ({record.volume_id})"


def project_of(record: VolumeRecord) -> int:
    return int(record.backend[PROJECT_KEY])


def test_a_healthy_project_pool_passes_every_project_check(setup: Setup) -> None:
    setup.create("a")
    setup.create("b")

    report = setup.doctor()

    assert report.problems == 0
    for check in ("project-ids", "project-limits", "stray-projects"):
        assert {status for status, _ in lines(report, check)} == {"ok"}, check


def test_a_volume_folder_in_another_project_is_given_its_recorded_one_back_with_its_files(
    setup: Setup,
) -> None:
    good, wrong = setup.create("good"), setup.create("wrong")
    (setup.path(wrong) / "sub").mkdir()
    (setup.path(wrong) / "sub" / "data.bin").write_bytes(b"x" * 1000)
    setup.quotas.set_tree_project(setup.path(wrong), 0, 10)  # e.g. data restored by hand
    setup.quotas.set_limits(project_of(wrong), block_bytes=0)

    report = setup.doctor()

    assert lines(report, "project-ids") == [("problem", subject(wrong))]
    [line] = [x for x in report.lines if x.check == "project-ids"]
    assert f"is project 0, the record says {project_of(wrong)}" in line.message
    assert line.fix.startswith("give ")

    fixed = setup.doctor(fix=True)

    assert ("fixed", subject(wrong)) in lines(fixed, "project-ids")
    assert fixed.problems == 0
    for path in (setup.path(wrong), setup.path(wrong) / "sub", setup.path(wrong) / "sub/data.bin"):
        assert setup.quotas.get_project(path) == project_of(wrong), path
    assert setup.quotas.get(project_of(wrong)).block_limit_bytes == 8 * MiB  # the limit too
    assert setup.quotas.get_project(setup.path(good)) == project_of(good)


def test_swapped_project_ids_are_reported_and_left_alone(setup: Setup) -> None:
    a, b = setup.create("a"), setup.create("b")
    setup.quotas.set_project(setup.path(a), project_of(b))
    setup.quotas.set_project(setup.path(b), project_of(a))

    report = setup.doctor(fix=True)

    assert sorted(lines(report, "project-ids")) == sorted(
        [("problem", subject(a)), ("problem", subject(b))]
    )
    assert "not repaired automatically" in message(report, "project-ids", subject(a))
    assert f"carries project {project_of(a)}" in message(report, "project-ids", subject(a))
    assert setup.quotas.get_project(setup.path(a)) == project_of(b)
    assert setup.quotas.get_project(setup.path(b)) == project_of(a)


def test_a_recorded_project_the_filesystem_charges_elsewhere_is_not_taken(setup: Setup) -> None:
    record = setup.create("a")
    setup.quotas.set_project(setup.path(record), FIRST_PROJECT_ID + 50)
    setup.quotas.charge(project_of(record), used_bytes=4096, used_inodes=1)

    report = setup.doctor(fix=True)

    assert lines(report, "project-ids") == [("problem", subject(record))]
    assert "charges 4Ki in 1 file(s)" in message(report, "project-ids", subject(record))
    assert setup.quotas.get_project(setup.path(record)) == FIRST_PROJECT_ID + 50


def test_two_records_holding_one_project_id_are_a_problem(setup: Setup) -> None:
    a, b = setup.create("a"), setup.create("b")
    setup.catalog.put_volume(b.model_copy(update={"backend": dict(a.backend)}))

    report = setup.doctor()

    project = f"project {project_of(a)}"
    assert ("problem", project) in lines(report, "project-ids")
    text = message(report, "project-ids", project)
    assert subject(a) in text and subject(b) in text


def test_a_wrong_limit_is_set_again_and_good_volumes_are_not_touched(setup: Setup) -> None:
    good, small = setup.create("good"), setup.create("small")
    setup.quotas.set_limits(project_of(small), block_bytes=MiB)
    setup.quotas.calls.clear()

    report = setup.doctor()

    assert lines(report, "project-limits") == [("problem", subject(small))]
    assert "size limit is 1Mi, the record says 8Mi" in message(
        report, "project-limits", subject(small)
    )
    fixed = setup.doctor(fix=True)
    assert lines(fixed, "project-limits") == [("fixed", subject(small))]
    assert setup.quotas.get(project_of(small)).block_limit_bytes == 8 * MiB
    assert ("set_limits", project_of(good)) not in setup.quotas.calls


def test_a_wrong_file_limit_is_reported(setup: Setup) -> None:
    record = setup.create("a")
    backend = setup.pool.set_file_limit(record.directory, 100, record.backend)
    setup.catalog.put_volume(record.model_copy(update={"backend": backend}))
    setup.quotas.set_limits(project_of(record), inodes=5)

    report = setup.doctor(fix=True)

    assert lines(report, "project-limits") == [("fixed", subject(record))]
    assert "file limit is 5, the record says 100" in message(
        report, "project-limits", subject(record)
    )
    assert setup.quotas.get(project_of(record)).inode_limit == 100


def test_projects_charged_without_a_record_are_reported_from_sharevols_range_only(
    setup: Setup,
) -> None:
    setup.create("a")
    stray = FIRST_PROJECT_ID + 77
    setup.quotas.charge(stray, used_bytes=3 * MiB, used_inodes=2)
    setup.quotas.set_limits(42, block_bytes=MiB)  # an admin's own project

    report = setup.doctor(fix=True)

    assert lines(report, "stray-projects") == [("warning", f"project {stray}")]
    assert "charged 3Mi in 2 file(s)" in message(report, "stray-projects", f"project {stray}")
    assert report.problems == 0


def test_without_quota_accounting_the_limit_checks_are_skipped_but_ids_are_checked(
    setup: Setup,
) -> None:
    record = setup.create("a")
    setup.quotas.set_project(setup.path(record), 0)
    setup.quotas.quota_state = QuotaState(False, False, no_quota=True)
    setup.config = ServerConfig(
        pools=(PoolConfig(name="fast", path=setup.root, kind="xfs", enforce_quota=False),)
    )

    report = setup.doctor()

    assert lines(report, "project-limits") == [("skipped", "")]
    assert lines(report, "stray-projects") == [("skipped", "")]
    assert lines(report, "project-ids") == [("problem", subject(record))]
    assert os.path.isdir(setup.path(record))
