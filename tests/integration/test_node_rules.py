"""The CSI node rules and the end-to-end promises of the driver core, over real gRPC: quotas seen
through a published path, stats, read-only publishing, and a restart that loses nothing."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import ROX, RWO, RWOP, RWX, MiB, Stubs, code_of, mount_cap, running_server

pytestmark = pytest.mark.root

C = grpc.StatusCode


@pytest.fixture
def config(btrfs_fs: Path, tmp_path: Path) -> ServerConfig:
    plain = tmp_path / "plain"
    plain.mkdir()
    return ServerConfig(
        pools=(
            PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),
            PoolConfig(name="plain", path=plain, kind="plain"),
        )
    )


@pytest.fixture
def stubs(config: ServerConfig, tmp_path: Path) -> Iterator[Stubs]:
    with running_server(config, tmp_path / "state") as (_server, stubs):
        yield stubs


class Mounted:
    """A volume staged and published at `target`, torn down at the end of the test."""

    def __init__(self, stubs: Stubs, tmp_path: Path, name: str, size: int, mode: int, pool: str):
        self.stubs = stubs
        self.cap = mount_cap(mode)
        self.volume = stubs.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=name,
                capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capabilities=[self.cap],
                parameters={"pool": pool},
            )
        ).volume
        self.staging = tmp_path / f"{name}-staging"
        self.staging.mkdir()
        self.targets: list[Path] = []
        stubs.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=self.volume.volume_id,
                staging_target_path=str(self.staging),
                volume_capability=self.cap,
            )
        )

    def publish(self, target: Path, *, readonly: bool = False) -> None:
        self.stubs.node.NodePublishVolume(self.publish_request(target, readonly=readonly))
        self.targets.append(target)

    def publish_request(
        self, target: Path, *, readonly: bool = False
    ) -> csi_pb2.NodePublishVolumeRequest:
        return csi_pb2.NodePublishVolumeRequest(
            volume_id=self.volume.volume_id,
            staging_target_path=str(self.staging),
            target_path=str(target),
            volume_capability=self.cap,
            readonly=readonly,
        )

    def unpublish(self, target: Path) -> None:
        self.stubs.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(
                volume_id=self.volume.volume_id, target_path=str(target)
            )
        )

    def close(self) -> None:
        for target in self.targets:
            self.unpublish(target)
        self.stubs.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(
                volume_id=self.volume.volume_id, staging_target_path=str(self.staging)
            )
        )


@pytest.fixture
def mounted(stubs: Stubs, tmp_path: Path) -> Iterator[list[Mounted]]:
    made: list[Mounted] = []
    yield made
    for item in made:
        item.close()


def mount(
    stubs: Stubs,
    tmp_path: Path,
    made: list[Mounted],
    name: str,
    size: int = 32 * MiB,
    mode: int = RWX,
    pool: str = "fast",
) -> Mounted:
    item = Mounted(stubs, tmp_path, name, size, mode, pool)
    made.append(item)
    return item


def write_until_error(path: Path, limit: int) -> tuple[int, int | None]:
    """Write 1 MiB chunks (fsync'd) until an error or `limit` bytes; (written, errno or None)."""
    chunk = b"\xa5" * MiB
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while written < limit:
            try:
                written += os.write(fd, chunk)
                os.fsync(fd)
            except OSError as exc:
                return written, exc.errno
    finally:
        os.close(fd)
    return written, None


def test_write_past_requested_size_fails_with_edquot_on_btrfs(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    volume = mount(stubs, tmp_path, mounted, "db", 32 * MiB)
    volume.publish(tmp_path / "pod")
    written, error = write_until_error(tmp_path / "pod" / "fill", 64 * MiB)
    assert error == errno.EDQUOT
    assert 28 * MiB <= written <= 32 * MiB


def test_write_past_requested_size_succeeds_on_plain(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    volume = mount(stubs, tmp_path, mounted, "logs", 4 * MiB, pool="plain")
    volume.publish(tmp_path / "pod")
    written, error = write_until_error(tmp_path / "pod" / "fill", 8 * MiB)
    assert error is None and written == 8 * MiB


@pytest.mark.parametrize("pool", ["fast", "plain"])
def test_stats_match_what_was_written_within_one_block(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted], pool: str
) -> None:
    volume = mount(stubs, tmp_path, mounted, f"stats-{pool}", 64 * MiB, pool=pool)
    target = tmp_path / "pod"
    volume.publish(target)
    before = stubs.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=volume.volume.volume_id, volume_path=str(target)
        )
    )
    (target / "data").write_bytes(os.urandom(10 * MiB))
    for index in range(5):
        (target / f"small-{index}").write_bytes(b"x")
    os.sync()
    after = stubs.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=volume.volume.volume_id, volume_path=str(target)
        )
    )
    units = {u.unit: u for u in after.usage}
    old = {u.unit: u for u in before.usage}
    grown = units[csi_pb2.VolumeUsage.BYTES].used - old[csi_pb2.VolumeUsage.BYTES].used
    # 10 MiB of data plus five 1-byte files: one 4 KiB block each on plain; btrfs inlines
    # tiny files into metadata, which is accounted in 16 KiB nodes.
    assert abs(grown - 10 * MiB) <= 5 * 4096 + 16384
    assert units[csi_pb2.VolumeUsage.BYTES].total == 64 * MiB
    assert units[csi_pb2.VolumeUsage.INODES].used - old[csi_pb2.VolumeUsage.INODES].used == 6
    assert not after.volume_condition.abnormal


def test_stats_of_a_path_that_is_not_the_volume_is_not_found(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    volume = mount(stubs, tmp_path, mounted, "v")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    request = csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=volume.volume.volume_id, volume_path=str(elsewhere)
    )
    assert code_of(lambda: stubs.node.NodeGetVolumeStats(request)) == C.NOT_FOUND


def test_readonly_publish_refuses_writes_and_source_stays_writable(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    volume = mount(stubs, tmp_path, mounted, "cfg", mode=RWX)
    volume.publish(tmp_path / "writer")
    volume.publish(tmp_path / "reader", readonly=True)
    (tmp_path / "writer" / "app.conf").write_text("x=1")
    assert (tmp_path / "reader" / "app.conf").read_text() == "x=1"
    with pytest.raises(OSError) as err:
        (tmp_path / "reader" / "new").write_text("no")
    assert err.value.errno == errno.EROFS


def test_rox_volume_is_published_read_only(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    volume = mount(stubs, tmp_path, mounted, "shared-config", mode=ROX)
    volume.publish(tmp_path / "pod")
    with pytest.raises(OSError) as err:
        (tmp_path / "pod" / "x").write_text("no")
    assert err.value.errno == errno.EROFS


def test_publish_rules_for_second_target(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    single = mount(stubs, tmp_path, mounted, "rwop", mode=RWOP)
    single.publish(tmp_path / "a")
    again = single.publish_request(tmp_path / "a")
    assert code_of(lambda: stubs.node.NodePublishVolume(again)) == C.OK
    other_params = single.publish_request(tmp_path / "a", readonly=True)
    assert code_of(lambda: stubs.node.NodePublishVolume(other_params)) == C.ALREADY_EXISTS
    second = single.publish_request(tmp_path / "b")
    assert code_of(lambda: stubs.node.NodePublishVolume(second)) == C.FAILED_PRECONDITION
    assert not (tmp_path / "b").exists()

    multi = mount(stubs, tmp_path, mounted, "rwo", mode=RWO)
    multi.publish(tmp_path / "c")
    multi.publish(tmp_path / "d")


def test_publish_request_errors(stubs: Stubs, tmp_path: Path, mounted: list[Mounted]) -> None:
    volume = mount(stubs, tmp_path, mounted, "v")
    no_staging = volume.publish_request(tmp_path / "t")
    no_staging.ClearField("staging_target_path")
    assert code_of(lambda: stubs.node.NodePublishVolume(no_staging)) == C.FAILED_PRECONDITION
    for field in ("volume_id", "target_path", "volume_capability"):
        request = volume.publish_request(tmp_path / "t")
        request.ClearField(field)
        assert code_of(lambda r=request: stubs.node.NodePublishVolume(r)) == C.INVALID_ARGUMENT
    unknown = volume.publish_request(tmp_path / "t")
    unknown.volume_id = "fast/" + "e" * 32
    assert code_of(lambda: stubs.node.NodePublishVolume(unknown)) == C.NOT_FOUND


def test_unpublish_removes_the_target_and_repeats_fine(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    volume = mount(stubs, tmp_path, mounted, "v")
    target = tmp_path / "pod"
    volume.publish(target)
    (target / "keep").write_text("data")
    volume.targets.remove(target)
    for _ in range(2):
        volume.unpublish(target)
    assert not target.exists()
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(target) not in mountinfo
    assert (
        code_of(
            lambda: stubs.node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id="fast/" + "e" * 32, target_path=str(target)
                )
            )
        )
        == C.OK
    )


def test_unstage_of_a_volume_never_staged_is_ok(stubs: Stubs, tmp_path: Path) -> None:
    request = csi_pb2.NodeUnstageVolumeRequest(
        volume_id="fast/" + "e" * 32, staging_target_path=str(tmp_path / "nothing")
    )
    assert code_of(lambda: stubs.node.NodeUnstageVolume(request)) == C.OK


def test_node_info_and_capabilities(stubs: Stubs) -> None:
    info = stubs.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == "node-1"
    caps = stubs.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    RPC = csi_pb2.NodeServiceCapability.RPC
    kinds = {c.rpc.type for c in caps.capabilities}
    assert {RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.SINGLE_NODE_MULTI_WRITER} <= kinds


def test_server_restart_loses_nothing(config: ServerConfig, tmp_path: Path) -> None:
    state = tmp_path / "state"
    target = tmp_path / "pod"
    staging = tmp_path / "staging"
    staging.mkdir()
    with running_server(config, state) as (_server, stubs):
        volume = stubs.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name="survivor",
                capacity_range=csi_pb2.CapacityRange(required_bytes=16 * MiB),
                volume_capabilities=[mount_cap(RWOP)],
            )
        ).volume
        for pool in ("plain",):
            stubs.controller.CreateVolume(
                csi_pb2.CreateVolumeRequest(
                    name=f"other-{pool}",
                    volume_capabilities=[mount_cap()],
                    parameters={"pool": pool},
                )
            )
        stubs.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=str(staging),
                volume_capability=mount_cap(RWOP),
            )
        )
        stubs.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=mount_cap(RWOP),
            )
        )
        (target / "f").write_text("before restart")
    with running_server(config, state) as (_server, stubs):
        listed = stubs.controller.ListVolumes(csi_pb2.ListVolumesRequest())
        assert {e.volume.volume_id for e in listed.entries} >= {volume.volume_id}
        assert len(listed.entries) == 2
        same = stubs.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name="survivor",
                capacity_range=csi_pb2.CapacityRange(required_bytes=16 * MiB),
                volume_capabilities=[mount_cap(RWOP)],
            )
        ).volume
        assert same == volume
        # the single-writer rule still knows the publication made before the restart
        second = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume.volume_id,
            staging_target_path=str(staging),
            target_path=str(tmp_path / "pod2"),
            volume_capability=mount_cap(RWOP),
        )
        assert code_of(lambda: stubs.node.NodePublishVolume(second)) == C.FAILED_PRECONDITION
        publications = stubs.admin.ListPublications(admin_pb2.ListPublicationsRequest())
        assert [p.target_path for p in publications.publications] == [str(target)]
        assert (target / "f").read_text() == "before restart"
        stubs.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target))
        )
        stubs.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(
                volume_id=volume.volume_id, staging_target_path=str(staging)
            )
        )


def test_publish_onto_a_target_the_co_already_made_works(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    """csi-sanity creates the target directory itself before NodePublishVolume."""
    volume = mount(stubs, tmp_path, mounted, "precreated")
    target = tmp_path / "made-by-co"
    target.mkdir()
    volume.publish(target)
    (target / "f").write_text("ok")
    stats = stubs.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=volume.volume.volume_id, volume_path=str(target)
        )
    )
    assert not stats.volume_condition.abnormal
    volume.targets.remove(target)
    volume.unpublish(target)
    assert str(target) not in Path("/proc/self/mountinfo").read_text()


def test_stats_and_expand_at_a_relative_path_are_not_found(
    stubs: Stubs, tmp_path: Path, mounted: list[Mounted]
) -> None:
    """csi-sanity sends volume_path "some/path" and expects NOT_FOUND: no volume can be there."""
    volume = mount(stubs, tmp_path, mounted, "rel")
    volume.publish(tmp_path / "pod")
    for volume_id in (volume.volume.volume_id, "fake-vol-id"):
        stats = csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path="some/path")
        assert code_of(lambda r=stats: stubs.node.NodeGetVolumeStats(r)) == C.NOT_FOUND
        expand = csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume_id,
            volume_path="some/path",
            capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MiB),
        )
        assert code_of(lambda r=expand: stubs.node.NodeExpandVolume(r)) == C.NOT_FOUND
    empty = csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume.volume.volume_id)
    assert code_of(lambda: stubs.node.NodeGetVolumeStats(empty)) == C.INVALID_ARGUMENT


def test_a_second_server_on_a_live_endpoint_stops_before_touching_any_pool(
    config: ServerConfig, tmp_path: Path
) -> None:
    """It must not resume copies, re-apply limits or start pools of the running server: the
    endpoint is claimed first. A pool path that does not exist proves the order."""
    from sharevol.csi.server import build_server
    from sharevol.errors import FailedPrecondition

    state = tmp_path / "state"
    with running_server(config, state):
        missing = ServerConfig(pools=(PoolConfig(name="gone", path=tmp_path / "nowhere"),))
        with pytest.raises(FailedPrecondition, match="another sharevol server"):
            build_server(
                missing,
                endpoint=f"unix://{state / 'csi.sock'}",
                node_id="node-2",
                mode="all",
                state_dir=state,
            )
    # once the first one stopped, the endpoint is free again
    with running_server(config, state) as (_server, stubs):
        assert stubs.identity.Probe(csi_pb2.ProbeRequest()).ready.value
