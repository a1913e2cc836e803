"""`sharevol gc` against a real server: a dry run changes nothing; `--yes` purges exactly the
archived volumes older than the age (btrfs and plain), never retained ones, and the pools'
provisioned bytes drop at once."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sharevol.catalog.records import VolumeRecord
from sharevol.cli.main import cli
from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.csi.server import CsiServer
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys import btrfs
from tests.support.csi import MiB, Stubs, mount_cap, running_server

pytestmark = pytest.mark.root


@pytest.fixture
def served(btrfs_fs: Path, tmp_path: Path) -> Iterator[tuple[CsiServer, Stubs]]:
    plain = tmp_path / "plain"
    plain.mkdir()
    config = ServerConfig(
        pools=(
            PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),
            PoolConfig(name="plain", path=plain, kind="plain"),
        ),
        default_pool="fast",
    )
    with running_server(config, tmp_path / "state") as pair:
        yield pair


def make(stubs: Stubs, name: str, on_delete: str, pool: str = "fast") -> None:
    """Create a volume with a 1 MiB file of its own, then delete it."""
    volume = stubs.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MiB),
            volume_capabilities=[mount_cap()],
            parameters={"pool": pool, "onDelete": on_delete},
        )
    ).volume
    info = stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(volume_id=volume.volume_id)).volume
    Path(info.path, "data").write_bytes(os.urandom(MiB))
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))


def backdate(server: CsiServer, name: str, days: int) -> VolumeRecord:
    """Make a deleted volume look deleted `days` ago, on disk and in the controller's index."""
    assert server.provisioner is not None
    (record,) = [r for r in server.provisioner.index.records() if r.name == name]
    assert record.deleted_at is not None
    old = record.model_copy(update={"deleted_at": record.deleted_at - dt.timedelta(days=days)})
    server.provisioner.pools()[record.pool].catalog.put_volume(old)
    server.provisioner.index.put(old)
    return old


def gc(server: CsiServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["gc", "--endpoint", f"unix://{server.socket}", *args])
    return result.exit_code, result.output


def provisioned(stubs: Stubs) -> dict[str, int]:
    pools = stubs.admin.ListPools(admin_pb2.ListPoolsRequest()).pools
    return {pool.name: pool.provisioned_bytes for pool in pools}


def archive_path(server: CsiServer, record: VolumeRecord) -> Path:
    assert server.provisioner is not None and record.archive_name is not None
    return server.provisioner.pools()[record.pool].pool.root / "archive" / record.archive_name


def test_gc_dry_run_changes_nothing_and_yes_purges_only_old_archived_volumes(
    served: tuple[CsiServer, Stubs], btrfs_fs: Path
) -> None:
    server, stubs = served
    assert server.provisioner is not None
    for name, on_delete, pool in [
        ("old-btrfs", "archive", "fast"),
        ("old-plain", "archive", "plain"),
        ("young", "archive", "fast"),
        ("kept", "retain", "fast"),
    ]:
        make(stubs, name, on_delete, pool)
    old_btrfs = backdate(server, "old-btrfs", 10)
    old_plain = backdate(server, "old-plain", 10)
    kept = backdate(server, "kept", 30)
    (young,) = [r for r in server.provisioner.index.records() if r.name == "young"]
    btrfs.sync(btrfs_fs)
    before = provisioned(stubs)
    catalog_files = sorted(p.name for p in (btrfs_fs / ".sharevol/catalog/volumes").iterdir())

    code, out = gc(server, "--older-than", "7d")

    assert code == 0, out
    assert "old-btrfs" in out and "old-plain" in out
    assert "young" not in out and "kept" not in out
    assert "would purge 2 archived volume(s)" in out and "--yes" in out
    listed = stubs.admin.ListArchived(admin_pb2.ListArchivedRequest(older_than_seconds=7 * 86400))
    assert {v.name: v.used_bytes >= MiB for v in listed.volumes} == {
        "old-btrfs": True,
        "old-plain": True,
    }
    assert archive_path(server, old_btrfs).is_dir() and archive_path(server, old_plain).is_dir()
    assert provisioned(stubs) == before
    assert sorted(p.name for p in (btrfs_fs / ".sharevol/catalog/volumes").iterdir()) == (
        catalog_files
    )

    code, out = gc(server, "--older-than", "7d", "--yes")

    assert code == 0, out
    assert "purged 2 archived volume(s)" in out
    assert not os.path.lexists(archive_path(server, old_btrfs))
    assert not os.path.lexists(archive_path(server, old_plain))
    assert server.provisioner.index.get(old_btrfs.volume_id) is None
    handles = server.provisioner.pools()
    assert handles["fast"].catalog.read_volume(old_btrfs.uuid) is None
    assert handles["plain"].catalog.read_volume(old_plain.uuid) is None
    assert provisioned(stubs) == {"fast": before["fast"] - 64 * MiB, "plain": 0}
    assert archive_path(server, young).is_dir()
    kept_data = handles["fast"].pool.volume_path(kept.directory) / "data"
    assert kept_data.is_file()

    code, out = gc(server, "--older-than", "0", "--yes")

    assert code == 0, out
    assert "purged 1 archived volume(s)" in out and "young" in out
    assert not os.path.lexists(archive_path(server, young))
    assert kept_data.is_file()  # retained volumes are never gc's
    assert handles["fast"].catalog.read_volume(kept.uuid) == kept

    code, out = gc(server, "--older-than", "0")
    assert code == 0 and "nothing to purge" in out


def test_gc_of_an_unknown_pool_is_a_one_line_error(served: tuple[CsiServer, Stubs]) -> None:
    server, _ = served

    code, out = gc(server, "--older-than", "7d", "--pool", "nope")

    assert code == 1
    assert "unknown pool 'nope'" in out and "INVALID_ARGUMENT" in out
