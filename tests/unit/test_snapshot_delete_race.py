"""DeleteSnapshot (lock key snapshot:<id>) and a CreateSnapshot retry (snapshot-name:, volume:)
share no CSI lock key. A retry that lands while the delete cancels the background copy must be
ABORTED, never start the copy again: that copy would write a snapshot folder no record owns."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability
from sharevol.catalog.store import Catalog
from sharevol.errors import Aborted
from sharevol.pools.plain import PlainPool
from sharevol.service.copy_jobs import CopyJobs
from sharevol.service.images import ImageFiles
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.service.snapshots import SnapshotService
from sharevol.sys.fake import FakeRunner

MiB = 1024 * 1024


def test_create_snapshot_retry_during_its_delete_is_aborted_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pool"
    root.mkdir()
    pool = PlainPool("plain", root)
    pool.start()
    catalog = Catalog(root)
    catalog.ensure()
    provisioner = Provisioner(
        {"plain": PoolHandle(pool, catalog)}, "plain", "node-1", images=ImageFiles(FakeRunner())
    )
    volume = provisioner.create_volume(
        CreateRequest(
            name="v",
            capabilities=(Capability(access_mode=AccessMode.SINGLE_NODE_WRITER),),
            required_bytes=8 * MiB,
        )
    )
    (pool.volume_path(volume.directory) / "f").write_bytes(b"x" * 3 * MiB)
    jobs = CopyJobs()
    snapshots = SnapshotService(provisioner, jobs)
    assert pool.capabilities.snapshot_method == "copy"
    retries: list[BaseException] = []
    with jobs.paused():
        view = snapshots.create("snap", volume.volume_id, {})
        assert not view.ready_to_use
        cancel = jobs.cancel

        def cancel_then_retry(key: str) -> None:
            cancel(key)
            try:
                snapshots.create("snap", volume.volume_id, {})  # the concurrent retry
            except Aborted as exc:
                retries.append(exc)

        monkeypatch.setattr(jobs, "cancel", cancel_then_retry)
        snapshots.delete(view.record.snapshot_id)
        monkeypatch.setattr(jobs, "cancel", cancel)
    assert jobs.wait_all(10)

    assert len(retries) == 1
    assert catalog.load_snapshots() == []
    assert not (root / "snapshots" / view.record.directory).exists()
