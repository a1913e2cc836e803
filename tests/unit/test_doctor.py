"""doctor without root: the check registry, a plain pool with injected problems (real files in
a tmp dir), and the btrfs stale-qgroup check with the btrfs ioctls faked at the sys boundary."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability, NfsExport, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.errors import InvalidArgument
from sharevol.pools.btrfs import BtrfsPool
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from sharevol.pools.plain import PlainPool
from sharevol.service.doctor import CHECKS, DoctorReport, btrfs_checks, run_doctor
from sharevol.service.doctor.model import DoctorContext, PoolScan
from sharevol.service.doctor.repairs import ServiceRepairs
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.sys import btrfs
from sharevol.sys.tree import remove_tree

MiB = 1024 * 1024
RWX = (Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER),)


def lines(report: DoctorReport, check: str) -> list[tuple[str, str]]:
    return [(line.status, line.subject) for line in report.lines if line.check == check]


def test_every_check_has_a_unique_name_and_says_what_it_checks() -> None:
    names = [check.name for check in CHECKS]

    assert len(names) == len(set(names))
    assert all(check.title for check in CHECKS)
    assert all((check.pool_check is None) != (check.server_check is None) for check in CHECKS)


def age(catalog: Catalog, uuid: str, seconds: float) -> None:
    written = catalog.volume_path(uuid).stat().st_mtime - seconds
    os.utime(catalog.volume_path(uuid), (written, written))


def test_a_plain_pool_with_problems_is_reported_and_fix_repairs_only_the_safe_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pool"
    root.mkdir()
    config = ServerConfig(pools=(PoolConfig(name="plain", path=root, kind="plain"),))
    pool = PlainPool("plain", root)
    pool.start()
    catalog = Catalog(root)
    catalog.ensure()
    provisioner = Provisioner({"plain": PoolHandle(pool, catalog)}, "plain", "node-1")

    def create(name: str, on_delete: str = "delete") -> Path:
        record = provisioner.create_volume(
            CreateRequest(name, RWX, MiB, parameters={"onDelete": on_delete})
        )
        return pool.volume_path(record.directory)

    good = create("good")
    (good / "data.txt").write_text("precious")
    (root / "volumes" / "somebody").mkdir()
    (root / "volumes" / "somebody" / "theirs.txt").write_text("theirs")
    doomed_path = create("doomed")
    doomed = provisioner.get_by_name("doomed")
    catalog.put_volume(doomed.model_copy(update={"state": "deleting"}))
    age(catalog, doomed.uuid, 3600)
    create("archived", "archive")
    provisioner.delete_volume(provisioner.get_by_name("archived").volume_id)
    archived = next(r for r in catalog.load_volumes() if r.name == "archived")
    remove_tree(root / "archive", archived.archive_name or "")

    report = run_doctor(config)

    assert report.problems == 3
    assert lines(report, "orphan-data") == [("problem", "volumes/somebody")]
    assert lines(report, "stuck-records") == [
        ("problem", f"volume doomed ({doomed.volume_id}, deleting)")
    ]
    assert lines(report, "missing-data") == [
        ("problem", f"volume archived ({archived.volume_id}, archived)")
    ]
    assert lines(report, "filesystem")[0][0] == "warning"  # sizes are not enforced here

    fixed = run_doctor(config, fix=True)

    assert fixed.problems == 1
    assert lines(fixed, "orphan-data") == [("problem", "volumes/somebody")]
    assert [s for s, _ in lines(fixed, "stuck-records")] == ["fixed"]
    assert [s for s, _ in lines(fixed, "missing-data")] == ["fixed"]
    assert not doomed_path.exists() and catalog.read_volume(doomed.uuid) is None
    assert catalog.read_volume(archived.uuid) is None
    assert (root / "volumes" / "somebody" / "theirs.txt").read_text() == "theirs"
    assert (good / "data.txt").read_text() == "precious"


def test_an_unknown_pool_name_is_refused(tmp_path: Path) -> None:
    config = ServerConfig(pools=(PoolConfig(name="plain", path=tmp_path, kind="plain"),))

    with pytest.raises(InvalidArgument, match="unknown pool"):
        run_doctor(config, pools=["nope"])


def test_a_pool_that_is_not_mounted_skips_the_data_checks(tmp_path: Path) -> None:
    config = ServerConfig(pools=(PoolConfig(name="gone", path=tmp_path / "nope", kind="plain"),))

    report = run_doctor(config)

    assert lines(report, "filesystem") == [("problem", str(tmp_path / "nope"))]
    assert {s for s, _ in lines(report, "orphan-data")} == {"skipped"}
    assert report.problems == 1


def test_qgroups_whose_subvolume_is_gone_are_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = [btrfs.Qgroup(q, 0, 0, None) for q in (5, 256, 257, 300, (1 << 48) | 7)]
    monkeypatch.setattr(btrfs, "list_qgroups", lambda path: groups)
    monkeypatch.setattr(
        btrfs,
        "list_subvolumes",
        lambda path: [btrfs.Subvolume(256, False), btrfs.Subvolume(257, True)],
    )
    dropped: list[str] = []

    def drop(self: BtrfsPool) -> list[int]:
        dropped.append(self.name)
        return [300]

    monkeypatch.setattr(BtrfsPool, "drop_stale_qgroups", drop)
    pool = BtrfsPool("fast", tmp_path)
    config = ServerConfig(pools=(PoolConfig(name="fast", path=tmp_path, kind="btrfs"),))
    context = DoctorContext(
        config, None, dt.datetime.now(dt.UTC), dt.timedelta(minutes=15), ServiceRepairs(config, {})
    )
    scan = PoolScan(config.pools[0], pool, Catalog(tmp_path), [], [], {}, {}, context)

    findings = list(btrfs_checks.check_stale_qgroups(scan))

    assert [f.subject for f in findings] == ["qgroup 0/300"]
    assert findings[0].fix is not None
    findings[0].fix.apply()
    assert dropped == ["fast"]


def test_nfs_export_ids_are_unique_and_every_volume_of_an_exported_pool_has_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pool"
    root.mkdir()
    config = ServerConfig(
        pools=(PoolConfig(name="plain", path=root, kind="plain"),),
        nfs=NfsConfig(bind="127.0.0.1"),
    )
    PlainPool("plain", root).start()
    catalog = Catalog(root)
    catalog.ensure()
    records = []
    for index, export_id in enumerate((7, 7, None)):
        ref = f"{index:032x}"
        export = None
        if export_id is not None:
            export = NfsExport(
                export_id=export_id, pseudo=f"/plain/{ref}", server="127.0.0.1", port=2049
            )
        record = VolumeRecord(
            volume_id=f"plain/{ref}",
            name=f"v{index}",
            pool="plain",
            uuid=ref,
            directory=ref,
            capacity_bytes=MiB,
            capabilities=RWX,
            state="ready",
            nfs_export=export,
        )
        (root / "volumes" / ref).mkdir()
        catalog.put_volume(record)
        records.append(record)

    report = run_doctor(config)

    found = lines(report, "nfs-exports")
    assert ("problem", f"volume v0 ({records[0].volume_id})") in found
    assert ("problem", f"volume v1 ({records[1].volume_id})") in found
    assert ("problem", f"volume v2 ({records[2].volume_id})") in found
    assert len(found) == 3
