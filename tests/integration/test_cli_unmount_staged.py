"""`sharevol volume unmount` of a staging path: what `sharevol up` tells an operator to run when
a volume is only staged (its pod-side mount gone) and the pool cannot be detached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sharevol.cli.volume_cmd import volume
from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import Stubs, running_server

pytestmark = pytest.mark.root


@pytest.fixture
def served(btrfs_fs: Path, tmp_path: Path) -> Iterator[tuple[Path, Stubs]]:
    config = ServerConfig(pools=(PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),))
    state = tmp_path / "state"
    with running_server(config, state) as (_server, stubs):
        yield state, stubs


def test_unmount_of_a_staging_path_unstages_the_volume(
    served: tuple[Path, Stubs], tmp_path: Path
) -> None:
    state, stubs = served
    endpoint = ["--endpoint", f"unix://{state / 'csi.sock'}"]
    runner = CliRunner()
    assert runner.invoke(volume, [*endpoint, "create", "data", "--size", "64Mi"]).exit_code == 0
    target = tmp_path / "pod"
    assert runner.invoke(volume, [*endpoint, "mount", "data", str(target)]).exit_code == 0
    [publication] = stubs.admin.ListPublications(admin_pb2.ListPublicationsRequest()).publications
    stubs.node.NodeUnpublishVolume(  # the pod's mount goes; the stage stays
        csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=publication.volume_id, target_path=publication.target_path
        )
    )
    stage = Path(publication.staging_path)
    assert stage.is_mount()

    result = runner.invoke(volume, [*endpoint, "unmount", str(stage)])

    assert result.exit_code == 0, result.output
    assert "unstaged" in result.output
    assert not stage.exists()
    assert str(stage) not in Path("/proc/self/mountinfo").read_text()
