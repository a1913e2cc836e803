"""`sharevol doctor` on a real btrfs pool with injected inconsistencies: it finds each one, a
check run changes nothing, and `--fix` repairs the safe ones without touching good volumes or
data that no record owns."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.cli.main import cli
from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.nfs.conf import ExportSpec, export_conf
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.service.doctor import DoctorReport, run_doctor
from sharevol.sys import btrfs
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.support.csi import MiB, Stubs, mount_cap, running_server

pytestmark = pytest.mark.root

LIMIT = 64 * MiB
OLD = 3600.0  # seconds: far beyond the default --stuck-after of 15 minutes


@pytest.fixture
def config(btrfs_fs: Path) -> ServerConfig:
    return ServerConfig(pools=(PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),))


@pytest.fixture
def config_file(config: ServerConfig, tmp_path: Path) -> Path:
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The server's state dir; any bind mount a test leaves under it is undone."""
    state = tmp_path / "state"
    state.mkdir()
    try:
        yield state
    finally:
        for target in sorted(mounts_under(state), key=len, reverse=True):
            SubprocessRunner().run(["umount", target], timeout=30, check=False)


def create(stubs: Stubs, name: str) -> admin_pb2.VolumeInfo:
    volume = stubs.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=LIMIT),
            volume_capabilities=[mount_cap()],
        )
    ).volume
    return stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(volume_id=volume.volume_id)).volume


def fill(path: Path) -> dict[str, str]:
    """Write a few files into a volume; their checksums by name."""
    (path / "sub").mkdir()
    sums = {}
    for name in ("a.bin", "sub/b.bin"):
        data = os.urandom(256 * 1024)
        (path / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    return sums


def checksums(path: Path, names: dict[str, str]) -> dict[str, str]:
    return {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in names}


def limit_of(fs: Path, volume_path: Path) -> int | None:
    group = btrfs.qgroup(fs, btrfs.subvolume_id(volume_path))
    assert group is not None
    return group.max_referenced


def stuck_reservation(catalog: Catalog) -> VolumeRecord:
    """A `creating` record whose volume was never made (a crash after the reservation),
    written an hour ago."""
    ref = uuid.uuid4().hex
    record = VolumeRecord(
        volume_id=f"fast/{ref}",
        name="half-made",
        pool="fast",
        uuid=ref,
        directory=ref,
        capacity_bytes=32 * MiB,
        capabilities=(Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER),),
        state="creating",
        quota_enforced=True,
    )
    catalog.put_volume(record)
    written = catalog.volume_path(ref).stat().st_mtime - OLD
    os.utime(catalog.volume_path(ref), (written, written))
    return record


def stray_export(state: Path, source: Path) -> tuple[Path, Path]:
    """An export file and its bind mount in the NFS runtime folder that no volume owns."""
    mount_point = state / "nfs" / "mnt" / "fast" / "ghost"
    mount_point.mkdir(parents=True)
    SubprocessRunner().run(["mount", "--bind", str(source), str(mount_point)], timeout=30)
    conf = state / "nfs" / "exports" / "export-77.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(export_conf(ExportSpec(77, mount_point, "/fast/ghost")))
    return conf, mount_point


def by_check(report: DoctorReport, check: str) -> list[tuple[str, str]]:
    return [(line.status, line.subject) for line in report.lines if line.check == check]


def statuses(report: DoctorReport, check: str) -> set[str]:
    return {status for status, _ in by_check(report, check)}


def test_doctor_finds_each_injected_inconsistency_and_fix_repairs_only_the_safe_ones(
    config: ServerConfig, config_file: Path, state_dir: Path, btrfs_fs: Path, tmp_path: Path
) -> None:
    with running_server(config, state_dir) as (_server, stubs):
        good = [create(stubs, "good-1"), create(stubs, "good-2")]
        lost = create(stubs, "lost")
        limited = create(stubs, "limited")
    good_sums = {v.name: fill(Path(v.path)) for v in good}
    catalog = Catalog(btrfs_fs)
    volumes = btrfs_fs / "volumes"
    # 1. a subvolume without a record, holding someone's data
    btrfs.create_subvolume(volumes, "stray")
    (volumes / "stray" / "keep.txt").write_text("not sharevol's to delete")
    # 2. a record without data
    btrfs.destroy_subvolume(volumes, Path(lost.path).name)
    # 3. a record stuck in creating
    half = stuck_reservation(catalog)
    # 4. a wrong limit
    limited_path = Path(limited.path)
    btrfs.set_referenced_limit(btrfs_fs, btrfs.subvolume_id(limited_path), 8 * MiB)
    # 5. a stray export (a qgroup without a subvolume cannot be made on kernels from 6.7 on,
    # which drop it themselves: tests/unit/test_doctor.py covers that check)
    export_source = tmp_path / "ghost-data"
    export_source.mkdir()
    conf, export_mount = stray_export(state_dir, export_source)

    report = run_doctor(config, state_dir=state_dir)

    assert report.problems == 6
    assert ("problem", "volumes/stray") in by_check(report, "orphan-data")
    assert ("problem", f"volume lost ({lost.volume_id}, ready)") in by_check(report, "missing-data")
    assert ("problem", f"volume half-made ({half.volume_id}, creating)") in by_check(
        report, "stuck-records"
    )
    assert ("problem", f"volume limited ({limited.volume_id})") in by_check(report, "volume-limits")
    assert ("problem", str(conf)) in by_check(report, "stray-exports")
    assert ("problem", str(export_mount)) in by_check(report, "stray-exports")
    assert statuses(report, "filesystem") == {"ok"} and statuses(report, "quota") == {"ok"}
    # a check run changes nothing
    assert limit_of(btrfs_fs, limited_path) == 8 * MiB
    assert catalog.read_volume(half.uuid) == half
    assert not os.path.lexists(volumes / half.directory)

    result = CliRunner().invoke(
        cli, ["doctor", "--config", str(config_file), "--state-dir", str(state_dir), "--fix"]
    )

    assert result.exit_code == 1, result.output  # the unsafe problems remain
    assert "FIXED" in result.output and "PROBLEM" in result.output
    assert limit_of(btrfs_fs, limited_path) == LIMIT
    finished = catalog.read_volume(half.uuid)
    assert finished is not None and finished.state == "ready"
    assert limit_of(btrfs_fs, volumes / half.directory) == 32 * MiB
    # what doctor cannot attribute or decide stays as it was
    assert (volumes / "stray" / "keep.txt").read_text() == "not sharevol's to delete"
    assert catalog.read_volume(Path(lost.path).name) is not None
    assert conf.is_file() and mounts_under(export_mount) == [str(export_mount)]
    for volume in good:
        assert checksums(Path(volume.path), good_sums[volume.name]) == good_sums[volume.name]
        assert limit_of(btrfs_fs, Path(volume.path)) == LIMIT

    after = run_doctor(config, state_dir=state_dir)

    assert statuses(after, "volume-limits") == {"ok"}
    assert statuses(after, "stuck-records") == {"ok"}
    assert statuses(after, "stale-qgroups") == {"ok"}
    assert {s for s, _ in by_check(after, "orphan-data")} == {"problem"}
    # The operator settles the rest: the stray data moved away, the lost volume deleted, the
    # stray export removed. Then doctor is clean and exits 0.
    os.rename(volumes / "stray", btrfs_fs / "stray-moved")
    with running_server(config, state_dir) as (_server, stubs):
        stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=lost.volume_id))
    SubprocessRunner().run(["umount", str(export_mount)], timeout=30)
    conf.unlink()

    clean = CliRunner().invoke(
        cli, ["doctor", "--config", str(config_file), "--state-dir", str(state_dir)]
    )

    assert clean.exit_code == 0, clean.output
    assert "0 problem(s)" in clean.output


def test_stuck_records_are_left_alone_while_they_may_still_be_in_progress(
    config: ServerConfig, btrfs_fs: Path, state_dir: Path
) -> None:
    with running_server(config, state_dir):
        pass
    catalog = Catalog(btrfs_fs)
    half = stuck_reservation(catalog)

    report = run_doctor(config, state_dir=state_dir, fix=True, stuck_after=dt.timedelta(hours=2))

    assert by_check(report, "stuck-records") == [
        ("warning", f"volume half-made ({half.volume_id}, creating)")
    ]
    assert catalog.read_volume(half.uuid) == half


def test_doctor_checks_snapshots_against_their_data_and_finishes_a_stuck_snapshot_delete(
    config: ServerConfig, btrfs_fs: Path, state_dir: Path
) -> None:
    with running_server(config, state_dir) as (_server, stubs):
        source = create(stubs, "source")
        snapshots = [
            stubs.controller.CreateSnapshot(
                csi_pb2.CreateSnapshotRequest(source_volume_id=source.volume_id, name=name)
            ).snapshot
            for name in ("kept", "lost", "dying")
        ]
    catalog = Catalog(btrfs_fs)
    records = {r.name: r for r in catalog.load_snapshots()}
    kept, lost, dying = records["kept"], records["lost"], records["dying"]
    snapshots_dir = btrfs_fs / "snapshots"
    btrfs.destroy_subvolume(snapshots_dir, lost.directory)  # a snapshot record without data
    btrfs.create_subvolume(snapshots_dir, "unowned")  # snapshot data without a record
    catalog.put_snapshot(dying.model_copy(update={"state": "deleting"}))  # a crashed delete
    written = catalog.snapshot_path(dying.uuid).stat().st_mtime - OLD
    os.utime(catalog.snapshot_path(dying.uuid), (written, written))

    report = run_doctor(config, state_dir=state_dir, fix=True)

    assert by_check(report, "snapshot-data") == [
        ("problem", f"snapshot lost ({lost.snapshot_id}, ready)")
    ]
    assert by_check(report, "orphan-snapshots") == [("problem", "snapshots/unowned")]
    assert by_check(report, "stuck-snapshots") == [
        ("fixed", f"snapshot dying ({dying.snapshot_id}, deleting)")
    ]
    assert catalog.read_snapshot(dying.uuid) is None
    assert not os.path.lexists(snapshots_dir / dying.directory)
    assert btrfs.is_subvolume(snapshots_dir / kept.directory)
    assert btrfs.is_subvolume(snapshots_dir / "unowned")
    assert [s.snapshot_id for s in snapshots if s.snapshot_id == kept.snapshot_id]
