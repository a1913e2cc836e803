"""Crash safety of provisioning on a real btrfs with qgroups.

Each test kills the "process" at one point of CreateVolume or DeleteVolume (a BaseException
raised from the step, so no error handler runs, as when the process dies), then starts a new
process (fresh pool, catalog and Provisioner over the same filesystem) and retries. The retry
must converge to exactly one correct volume, with no subvolume or qgroup left unowned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.errors import Aborted, Internal
from sharevol.pools.btrfs import BtrfsPool
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.sys import btrfs
from sharevol.sys.runner import SubprocessRunner

pytestmark = pytest.mark.root

MiB = 1024**2
TIMEOUT = 60.0
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
REQUEST = CreateRequest(name="pvc-1", capabilities=(RWX,), required_bytes=64 * MiB)


class Crash(BaseException):
    """The process dies here: no SharevolError handler runs, and nothing after it."""


def crash(*_args: object) -> NoReturn:
    raise Crash


def crash_on_call(number: int, real: Callable[..., object]) -> Callable[..., object]:
    """`real`, except that call `number` (1-based) dies instead of running."""
    calls = 0

    def maybe_crash(*args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == number:
            raise Crash
        return real(*args)

    return maybe_crash


@dataclass
class Process:
    """One controller process: its own pool object, catalog and Provisioner."""

    pool: BtrfsPool
    catalog: Catalog
    provisioner: Provisioner


def start(fs: Path) -> Process:
    """What `sharevol serve` does at start-up for one btrfs pool named "fast" at `fs`."""
    pool = BtrfsPool("fast", fs)
    pool.start()
    catalog = Catalog(fs)
    catalog.ensure()
    provisioner = Provisioner({"fast": PoolHandle(pool, catalog)}, "fast", "node-1")
    return Process(pool, catalog, provisioner)


def settle(fs: Path) -> None:
    """Wait for the cleaner to drop deleted subvolumes, then commit so qgroups are current.

    The commit first wakes the cleaner; without it `subvolume sync` waits for the next periodic
    commit (30 s)."""
    btrfs.sync(fs)
    SubprocessRunner().run(["btrfs", "subvolume", "sync", str(fs)], timeout=TIMEOUT)
    btrfs.sync(fs)


def subvolumes(fs: Path) -> set[int]:
    return {sub.subvolume_id for sub in btrfs.list_subvolumes(fs) if not sub.deleted}


def volume_qgroups(fs: Path) -> set[int]:
    """Level-0 qgroups of subvolumes (not the top-level tree 0/5)."""
    return {
        group.subvolume_id
        for group in btrfs.list_qgroups(fs)
        if group.level == 0 and group.subvolume_id >= btrfs.FIRST_FREE_OBJECTID
    }


def volume_dirs(fs: Path) -> set[str]:
    return {path.name for path in (fs / "volumes").iterdir()}


def assert_converged(fs: Path, expected: list[VolumeRecord]) -> None:
    """The pool holds exactly `expected` (ready, each with its subvolume and limit), nothing
    else: no other record, subvolume, directory or qgroup."""
    settle(fs)
    catalog = Catalog(fs)
    assert sorted(catalog.load_volumes(), key=lambda r: r.uuid) == sorted(
        expected, key=lambda r: r.uuid
    )
    assert volume_dirs(fs) == {record.directory for record in expected}
    ids = {btrfs.subvolume_id(fs / "volumes" / record.directory) for record in expected}
    assert subvolumes(fs) == ids
    assert volume_qgroups(fs) == ids
    for record in expected:
        assert record.state == "ready"
        subvolume_id = btrfs.subvolume_id(fs / "volumes" / record.directory)
        assert record.backend == {"subvolume_id": subvolume_id}
        group = btrfs.qgroup(fs, subvolume_id)
        assert group is not None and group.max_referenced == record.capacity_bytes


def only_record(process: Process) -> VolumeRecord:
    [record] = process.catalog.load_volumes()
    return record


# -- create ------------------------------------------------------------------------------------


def test_crash_after_the_reservation_is_finished_by_the_retry(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = start(btrfs_fs)
    monkeypatch.setattr(crashed.pool, "create_volume", crash)
    with pytest.raises(Crash):
        crashed.provisioner.create_volume(REQUEST)
    reserved = only_record(crashed)
    assert reserved.state == "creating"
    assert subvolumes(btrfs_fs) == set()

    record = start(btrfs_fs).provisioner.create_volume(REQUEST)

    assert record.volume_id == reserved.volume_id
    assert record.capacity_bytes == 64 * MiB
    assert_converged(btrfs_fs, [record])
    assert start(btrfs_fs).provisioner.create_volume(REQUEST) == record


def test_crash_after_the_subvolume_before_its_limit_is_finished_by_the_retry(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = start(btrfs_fs)
    monkeypatch.setattr(btrfs, "set_referenced_limit", crash)
    with pytest.raises(Crash):
        crashed.provisioner.create_volume(REQUEST)
    monkeypatch.undo()
    reserved = only_record(crashed)
    assert reserved.state == "creating"
    [made] = subvolumes(btrfs_fs)
    group = btrfs.qgroup(btrfs_fs, made)
    assert group is not None and group.max_referenced is None  # made without its limit

    record = start(btrfs_fs).provisioner.create_volume(REQUEST)

    assert record.volume_id == reserved.volume_id
    assert record.backend == {"subvolume_id": made}
    assert_converged(btrfs_fs, [record])


def test_crash_after_the_limit_before_marking_ready_is_finished_by_the_retry(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = start(btrfs_fs)
    # put_volume: 1st call writes the reservation, the 2nd would write `ready`.
    dying_put = crash_on_call(2, crashed.catalog.put_volume)
    monkeypatch.setattr(crashed.catalog, "put_volume", dying_put)
    with pytest.raises(Crash):
        crashed.provisioner.create_volume(REQUEST)
    assert only_record(crashed).state == "creating"
    assert len(subvolumes(btrfs_fs)) == 1

    record = start(btrfs_fs).provisioner.create_volume(REQUEST)

    assert_converged(btrfs_fs, [record])


def test_a_failing_pool_create_leaves_nothing_and_a_retry_succeeds(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = start(btrfs_fs)
    real_create = process.pool.create_volume
    calls: list[str] = []

    def fail_once(directory: str, capacity_bytes: int) -> dict[str, int | str]:
        calls.append(directory)
        if len(calls) == 1:
            raise Internal("btrfs said no")
        return real_create(directory, capacity_bytes)

    monkeypatch.setattr(process.pool, "create_volume", fail_once)

    with pytest.raises(Internal, match="btrfs said no"):
        process.provisioner.create_volume(REQUEST)
    assert_converged(btrfs_fs, [])

    record = process.provisioner.create_volume(REQUEST)
    assert_converged(btrfs_fs, [record])


def test_a_failing_limit_removes_the_new_subvolume_and_a_retry_succeeds(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = start(btrfs_fs)
    real_limit = btrfs.set_referenced_limit
    calls: list[int] = []

    def fail_once(fs_path: Path, subvolume_id: int, limit_bytes: int) -> None:
        calls.append(subvolume_id)
        if len(calls) == 1:
            raise Internal("qgroup limit failed")
        real_limit(fs_path, subvolume_id, limit_bytes)

    monkeypatch.setattr(btrfs, "set_referenced_limit", fail_once)

    with pytest.raises(Internal, match="qgroup limit failed"):
        process.provisioner.create_volume(REQUEST)
    assert_converged(btrfs_fs, [])  # the half-made subvolume and its qgroup are gone

    record = process.provisioner.create_volume(REQUEST)
    assert_converged(btrfs_fs, [record])


# -- delete ------------------------------------------------------------------------------------


def test_crash_after_marking_deleting_is_finished_by_the_retry(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = start(btrfs_fs)
    record = first.provisioner.create_volume(REQUEST)
    (first.pool.volume_path(record.directory) / "data").write_bytes(b"x" * MiB)
    monkeypatch.setattr(first.pool, "delete_volume", crash)
    with pytest.raises(Crash):
        first.provisioner.delete_volume(record.volume_id)
    assert only_record(first).state == "deleting"
    assert first.pool.volume_path(record.directory).is_dir()

    restarted = start(btrfs_fs)
    with pytest.raises(Aborted, match="being deleted"):
        restarted.provisioner.create_volume(REQUEST)
    restarted.provisioner.delete_volume(record.volume_id)

    assert_converged(btrfs_fs, [])
    assert restarted.provisioner.index.get(record.volume_id) is None


def test_crash_after_the_subvolume_is_gone_is_finished_by_the_retry(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = start(btrfs_fs)
    record = first.provisioner.create_volume(REQUEST)
    monkeypatch.setattr(first.catalog, "remove_volume", crash)
    with pytest.raises(Crash):
        first.provisioner.delete_volume(record.volume_id)
    assert only_record(first).state == "deleting"
    assert not first.pool.volume_path(record.directory).exists()

    restarted = start(btrfs_fs)
    restarted.provisioner.delete_volume(record.volume_id)

    assert_converged(btrfs_fs, [])
    restarted.provisioner.delete_volume(record.volume_id)  # and again: still OK
    # The name is free: a new create makes a new volume.
    again = restarted.provisioner.create_volume(REQUEST)
    assert again.volume_id != record.volume_id
    assert_converged(btrfs_fs, [again])


def test_crash_before_relabelling_retained_is_finished_by_the_retry(
    btrfs_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retain = CreateRequest(
        name="pvc-1", capabilities=(RWX,), required_bytes=64 * MiB,
        parameters={"onDelete": "retain"},
    )  # fmt: skip
    first = start(btrfs_fs)
    record = first.provisioner.create_volume(retain)
    dying_put = crash_on_call(2, first.catalog.put_volume)
    monkeypatch.setattr(first.catalog, "put_volume", dying_put)
    with pytest.raises(Crash):
        first.provisioner.delete_volume(record.volume_id)  # 1st put: deleting; 2nd: retained
    assert only_record(first).state == "deleting"

    start(btrfs_fs).provisioner.delete_volume(record.volume_id)

    settle(btrfs_fs)
    retained = only_record(start(btrfs_fs))
    assert retained.state == "retained"
    [kept] = subvolumes(btrfs_fs)
    assert kept == btrfs.subvolume_id(btrfs_fs / "volumes" / record.directory)
    group = btrfs.qgroup(btrfs_fs, kept)
    assert group is not None and group.max_referenced == 64 * MiB


def test_crash_after_the_archive_move_is_finished_by_the_retry(btrfs_fs: Path) -> None:
    archive = CreateRequest(
        name="pvc-1", capabilities=(RWX,), required_bytes=64 * MiB,
        parameters={"onDelete": "archive"},
    )  # fmt: skip
    first = start(btrfs_fs)
    record = first.provisioner.create_volume(archive)
    # The attempt that crashed ran at 2020-01-02 03:04:05: record deleting with its archive
    # name, subvolume renamed.
    moved = btrfs_fs / "archive" / f"{record.directory}-20200102T030405Z"
    first.catalog.put_volume(
        record.model_copy(update={"state": "deleting", "archive_name": moved.name})
    )
    (btrfs_fs / "volumes" / record.directory).rename(moved)

    start(btrfs_fs).provisioner.delete_volume(record.volume_id)

    archived = only_record(start(btrfs_fs))
    assert archived.state == "archived"
    assert archived.archive_name == moved.name
    assert btrfs.is_subvolume(moved)
