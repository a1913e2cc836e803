"""NodePublisher against the FakeMounter: the CSI node idempotency tables, row by row."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.errors import (
    AlreadyExists,
    CommandFailed,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from sharevol.pools.base import ContentRef, CopyOutcome, PoolCapabilities, PoolSpace, VolumeUsage
from sharevol.service.locate import LocatedVolume
from sharevol.service.publishing import NodePublisher, Publication, capability_covered
from sharevol.sys.fake import FakeMounter
from sharevol.sys.tree_copy import CopyControl

RWO = Capability(access_mode=AccessMode.SINGLE_NODE_WRITER)
RWOP = Capability(access_mode=AccessMode.SINGLE_NODE_SINGLE_WRITER)
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
ROX = Capability(access_mode=AccessMode.MULTI_NODE_READER_ONLY)
SNMW = Capability(access_mode=AccessMode.SINGLE_NODE_MULTI_WRITER)
VOL_A = "pool/" + "a" * 32
VOL_B = "pool/" + "b" * 32


@dataclass
class FakePool:
    """Just enough of a Pool for the node side: a root folder and usage."""

    root: Path
    name: str = "pool"
    kind: str = "fake"
    capabilities: PoolCapabilities = field(
        default_factory=lambda: PoolCapabilities(enforces_quota=True, reports_usage=True)
    )

    def start(self) -> None:
        raise NotImplementedError

    def volume_path(self, directory: str) -> Path:
        return self.root / "volumes" / directory

    def create_volume(self, directory: str, capacity_bytes: int) -> dict[str, int | str]:
        raise NotImplementedError

    def delete_volume(self, directory: str, backend: dict[str, int | str]) -> None:
        raise NotImplementedError

    def archive_volume(self, directory: str, archive_name: str) -> None:
        raise NotImplementedError

    def set_limit(self, directory: str, capacity_bytes: int, backend: dict[str, int | str]) -> None:
        raise NotImplementedError

    def usage(
        self, directory: str, capacity_bytes: int, backend: dict[str, int | str]
    ) -> VolumeUsage:
        if not self.volume_path(directory).is_dir():
            raise FileNotFoundError(self.volume_path(directory))
        return VolumeUsage(capacity_bytes, 4096, capacity_bytes - 4096, 1000, 3, 997)

    def space(self) -> PoolSpace:
        raise NotImplementedError

    def snapshot_path(self, directory: str) -> Path:
        raise NotImplementedError

    def create_snapshot(
        self,
        volume_directory: str,
        snapshot_directory: str,
        size_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        raise NotImplementedError

    def delete_snapshot(self, snapshot_directory: str) -> None:
        raise NotImplementedError

    def clone_volume(
        self,
        source: ContentRef,
        directory: str,
        capacity_bytes: int,
        control: CopyControl | None = None,
    ) -> CopyOutcome:
        raise NotImplementedError


class FakeLocator:
    """Volumes by ID, like VolumeLocator reading the pool's catalog."""

    def __init__(self, pool: FakePool) -> None:
        self.pool = pool
        self.volumes: dict[str, LocatedVolume] = {}

    def add(self, volume_id: str, *capabilities: Capability) -> LocatedVolume:
        uuid = volume_id.split("/")[1]
        record = VolumeRecord(
            volume_id=volume_id,
            name=f"pvc-{uuid[:4]}",
            pool="pool",
            uuid=uuid,
            directory=f"pvc-{uuid[:4]}",
            capacity_bytes=1 << 30,
            capabilities=capabilities or (RWO,),
            state="ready",
        )
        path = self.pool.volume_path(record.directory)
        path.mkdir(parents=True)
        located = LocatedVolume(self.pool, record, path)
        self.volumes[volume_id] = located
        return located

    def locate(self, volume_id: str) -> LocatedVolume:
        try:
            return self.volumes[volume_id]
        except KeyError:
            raise NotFound(f"volume {volume_id!r} not found") from None


@dataclass
class Node:
    publisher: NodePublisher
    mounter: FakeMounter
    locator: FakeLocator
    kubelet: Path
    state_dir: Path

    def staging(self, volume_id: str) -> Path:
        return self.kubelet / "staging" / volume_id.split("/")[1][:8]

    def target(self, pod: str) -> Path:
        parent = self.kubelet / "pods" / pod
        parent.mkdir(parents=True, exist_ok=True)
        return parent / "mount"

    def stage(self, volume_id: str, capability: Capability = RWO) -> Path:
        staging = self.staging(volume_id)
        self.publisher.stage(volume_id, staging, capability, {})
        return staging

    def publish(
        self,
        volume_id: str,
        pod: str,
        capability: Capability = RWO,
        readonly: bool = False,
    ) -> Path:
        target = self.target(pod)
        self.publisher.publish(volume_id, self.staging(volume_id), target, capability, readonly, {})
        return target

    def mounts_at(self, path: Path) -> int:
        return sum(1 for entry in self.mounter.mounts() if entry.mount_point == str(path))


@pytest.fixture
def node(tmp_path: Path) -> Node:
    locator = FakeLocator(FakePool(tmp_path / "pool"))
    locator.add(VOL_A, RWO, RWOP, RWX, SNMW, ROX)
    locator.add(VOL_B, RWO, RWOP, RWX, SNMW, ROX)
    mounter = FakeMounter()
    kubelet = tmp_path / "kubelet"
    (kubelet / "staging").mkdir(parents=True)
    state_dir = tmp_path / "state"
    publisher = NodePublisher(locator, mounter, state_dir, node_id="node-1")
    return Node(publisher, mounter, locator, kubelet, state_dir)


# ---- capability coverage --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "offered", "covered"),
    [
        (RWO, (RWX,), True),
        (ROX, (RWX,), True),
        (RWOP, (RWO,), True),
        (RWO, (RWOP,), False),
        (RWO, (ROX,), False),
        (Capability(access_mode=AccessMode.SINGLE_NODE_READER_ONLY), (ROX,), True),
        (ROX, (RWO,), False),
        (Capability(access_mode=AccessMode.MULTI_NODE_SINGLE_WRITER), (RWX,), True),
        (Capability(access_mode=AccessMode.SINGLE_NODE_WRITER, access_type="block"), (RWX,), False),
    ],
)
def test_capability_may_not_exceed_what_the_volume_was_created_for(
    requested: Capability, offered: tuple[Capability, ...], covered: bool
) -> None:
    assert capability_covered(requested, offered) is covered


# ---- stage / unstage ------------------------------------------------------------------------


def test_stage_binds_the_volume_directory_and_creates_the_staging_dir(node: Node) -> None:
    staging = node.stage(VOL_A)
    entry = node.mounter.find(staging)
    assert entry is not None
    assert entry.root == str(node.locator.locate(VOL_A).path)
    assert not entry.read_only


def test_stage_twice_identically_is_ok_and_mounts_once(node: Node) -> None:
    staging = node.stage(VOL_A)
    node.stage(VOL_A)
    assert node.mounts_at(staging) == 1


def test_stage_reader_only_mode_is_a_read_only_mount(node: Node) -> None:
    staging = node.stage(VOL_A, ROX)
    entry = node.mounter.find(staging)
    assert entry is not None
    assert entry.read_only


def test_stage_same_path_other_capability_is_already_exists(node: Node) -> None:
    node.stage(VOL_A, RWO)
    with pytest.raises(AlreadyExists, match="already staged"):
        node.stage(VOL_A, RWX)


def test_stage_other_volume_on_a_staged_path_is_already_exists(node: Node) -> None:
    staging = node.stage(VOL_A)
    with pytest.raises(AlreadyExists, match="another mount"):
        node.publisher.stage(VOL_B, staging, RWO, {})
    assert node.mounts_at(staging) == 1


def test_stage_onto_an_unrelated_mount_is_already_exists(node: Node) -> None:
    staging = node.staging(VOL_A)
    staging.mkdir()
    node.mounter.mount("tmpfs", staging, "tmpfs")
    with pytest.raises(AlreadyExists, match="tmpfs"):
        node.stage(VOL_A)


def test_stage_unknown_volume_is_not_found(node: Node) -> None:
    with pytest.raises(NotFound):
        node.publisher.stage("pool/" + "c" * 32, node.kubelet / "staging" / "x", RWO, {})


def test_stage_writer_mode_on_a_read_only_volume_is_failed_precondition(node: Node) -> None:
    volume_id = "pool/" + "d" * 32
    node.locator.add(volume_id, ROX)
    with pytest.raises(FailedPrecondition, match="exceeds"):
        node.stage(volume_id, RWX)
    assert node.mounter.find(node.staging(volume_id)) is None


def test_stage_block_access_of_a_directory_volume_is_failed_precondition(node: Node) -> None:
    block = Capability(access_mode=AccessMode.SINGLE_NODE_WRITER, access_type="block")
    volume_id = "pool/" + "e" * 32
    node.locator.add(volume_id, block)  # a directory record: only CreateVolume makes block ones
    with pytest.raises(FailedPrecondition, match="block"):
        node.stage(volume_id, block)
    assert node.mounter.find(node.staging(volume_id)) is None


def test_stage_relative_path_is_invalid_argument(node: Node) -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        node.publisher.stage(VOL_A, "relative/staging", RWO, {})


def test_stage_found_mounted_without_a_record_is_adopted(node: Node) -> None:
    staging = node.stage(VOL_A)
    for record in (node.state_dir / "staged").iterdir():
        record.unlink()
    node.stage(VOL_A)
    assert node.mounts_at(staging) == 1
    with pytest.raises(AlreadyExists):
        node.stage(VOL_A, RWX)


def test_unstage_unmounts_and_keeps_the_staging_dir(node: Node) -> None:
    staging = node.stage(VOL_A)
    node.publisher.unstage(VOL_A, staging)
    assert node.mounter.find(staging) is None
    assert staging.is_dir()
    assert list((node.state_dir / "staged").iterdir()) == []


def test_unstage_twice_and_unstage_of_never_staged_are_ok(node: Node) -> None:
    staging = node.stage(VOL_A)
    node.publisher.unstage(VOL_A, staging)
    node.publisher.unstage(VOL_A, staging)
    node.publisher.unstage(VOL_B, node.kubelet / "staging" / "never")


def test_unstage_leaves_a_foreign_mount_alone(node: Node) -> None:
    staging = node.staging(VOL_A)
    staging.mkdir()
    node.mounter.mount("tmpfs", staging, "tmpfs")
    with pytest.raises(FailedPrecondition, match="leaving it alone"):
        node.publisher.unstage(VOL_A, staging)
    assert node.mounter.find(staging) is not None


def test_stage_after_stale_record_mounts_again(node: Node) -> None:
    staging = node.stage(VOL_A)
    node.mounter.unmount(staging)  # e.g. a reboot: mounts gone, records kept
    node.stage(VOL_A, RWX)
    assert node.mounts_at(staging) == 1


# ---- publish: the CSI idempotency table -----------------------------------------------------


def test_publish_creates_the_target_and_binds_the_staged_volume(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    entry = node.mounter.find(target)
    assert target.is_dir()
    assert entry is not None
    assert entry.root == str(node.locator.locate(VOL_A).path)
    assert not entry.read_only
    assert node.publisher.publications() == [
        Publication(VOL_A, str(target), str(node.staging(VOL_A)), False)
    ]


def test_publish_same_target_same_params_is_ok(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.publish(VOL_A, "pod1")
    assert node.mounts_at(target) == 1


@pytest.mark.parametrize(
    ("capability", "readonly"),
    [(RWO, True), (RWX, False), (ROX, False)],
    ids=["readonly-flag", "capability", "reader-only-capability"],
)
def test_publish_same_target_different_params_is_already_exists(
    node: Node, capability: Capability, readonly: bool
) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1", RWO, readonly=False)
    with pytest.raises(AlreadyExists, match="already published"):
        node.publish(VOL_A, "pod1", capability, readonly=readonly)
    assert node.mounts_at(target) == 1


def test_publish_other_volume_on_same_target_is_already_exists(node: Node) -> None:
    node.stage(VOL_A)
    node.stage(VOL_B)
    target = node.publish(VOL_A, "pod1")
    with pytest.raises(AlreadyExists, match="another mount"):
        node.publish(VOL_B, "pod1")
    entry = node.mounter.find(target)
    assert entry is not None
    assert entry.root == str(node.locator.locate(VOL_A).path)


@pytest.mark.parametrize("capability", [RWOP, RWO], ids=["RWOP", "SINGLE_NODE_WRITER"])
def test_publish_second_target_without_many_target_mode_is_failed_precondition(
    node: Node, capability: Capability
) -> None:
    node.stage(VOL_A, capability)
    node.publish(VOL_A, "pod1", capability)
    with pytest.raises(FailedPrecondition, match="does not allow another target"):
        node.publish(VOL_A, "pod2", capability)
    assert not node.target("pod2").exists()


@pytest.mark.parametrize("capability", [RWX, SNMW, ROX], ids=["RWX", "SNMW", "ROX"])
def test_publish_second_target_with_many_target_mode_is_ok(
    node: Node, capability: Capability
) -> None:
    node.stage(VOL_A, capability)
    first = node.publish(VOL_A, "pod1", capability)
    second = node.publish(VOL_A, "pod2", capability)
    assert node.mounter.find(first) is not None
    assert node.mounter.find(second) is not None
    assert len(node.publisher.publications()) == 2


def test_publish_many_target_request_next_to_an_rwop_publication_is_failed_precondition(
    node: Node,
) -> None:
    node.stage(VOL_A, RWX)
    node.publish(VOL_A, "pod1", RWOP)
    with pytest.raises(FailedPrecondition):
        node.publish(VOL_A, "pod2", RWX)


def test_publish_rwop_to_new_target_after_unpublish_is_ok(node: Node) -> None:
    node.stage(VOL_A, RWOP)
    first = node.publish(VOL_A, "pod1", RWOP)
    node.publisher.unpublish(VOL_A, first)
    node.publish(VOL_A, "pod2", RWOP)


def test_publish_rwop_ignores_a_stale_record_without_a_mount(node: Node) -> None:
    node.stage(VOL_A, RWOP)
    first = node.publish(VOL_A, "pod1", RWOP)
    node.mounter.unmount(first)
    node.publish(VOL_A, "pod2", RWOP)


def test_publish_not_staged_is_failed_precondition(node: Node) -> None:
    with pytest.raises(FailedPrecondition, match="not staged"):
        node.publish(VOL_A, "pod1")
    assert not node.target("pod1").exists()


def test_publish_staged_from_another_volume_is_failed_precondition(node: Node) -> None:
    node.stage(VOL_B)
    with pytest.raises(FailedPrecondition, match="not staged"):
        node.publisher.publish(VOL_A, node.staging(VOL_B), node.target("pod1"), RWO, False, {})


def test_publish_without_staging_path_is_failed_precondition(node: Node) -> None:
    with pytest.raises(FailedPrecondition, match="STAGE_UNSTAGE"):
        node.publisher.publish(VOL_A, "", node.target("pod1"), RWO, False, {})


def test_publish_unknown_volume_is_not_found(node: Node) -> None:
    with pytest.raises(NotFound):
        node.publish("pool/" + "c" * 32, "pod1")


def test_publish_writer_mode_on_reader_only_volume_is_failed_precondition(node: Node) -> None:
    volume_id = "pool/" + "d" * 32
    node.locator.add(volume_id, ROX)
    node.stage(volume_id, ROX)
    with pytest.raises(FailedPrecondition, match="exceeds"):
        node.publish(volume_id, "pod1", RWO)


@pytest.mark.parametrize(
    ("capability", "readonly"), [(RWO, True), (ROX, False)], ids=["flag", "reader-only-mode"]
)
def test_publish_read_only_when_flag_or_mode_says_so(
    node: Node, capability: Capability, readonly: bool
) -> None:
    node.stage(VOL_A, capability)
    target = node.publish(VOL_A, "pod1", capability, readonly=readonly)
    entry = node.mounter.find(target)
    assert entry is not None
    assert entry.read_only


def test_publish_read_write_from_a_read_only_stage_is_failed_precondition(node: Node) -> None:
    node.stage(VOL_A, ROX)
    with pytest.raises(FailedPrecondition, match="staged read-only"):
        node.publish(VOL_A, "pod1", RWX)


def test_publish_onto_an_existing_file_is_failed_precondition(node: Node) -> None:
    node.stage(VOL_A)
    node.target("pod1").write_text("not a directory")
    with pytest.raises(FailedPrecondition, match="not a directory"):
        node.publish(VOL_A, "pod1")


def test_publish_found_mounted_without_record_is_adopted_when_ro_matches(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1", readonly=True)
    for record in (node.state_dir / "published").iterdir():
        record.unlink()
    with pytest.raises(AlreadyExists, match="read-only"):
        node.publish(VOL_A, "pod1", readonly=False)
    node.publish(VOL_A, "pod1", readonly=True)
    assert node.mounts_at(target) == 1
    assert len(node.publisher.publications()) == 1


def test_publish_again_restores_read_only_after_someone_made_it_writable(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1", readonly=True)
    node.mounter.make_writable(target)
    node.publish(VOL_A, "pod1", readonly=True)
    entry = node.mounter.find(target)
    assert entry is not None
    assert entry.read_only


def test_corrupt_publish_record_falls_back_to_the_mount(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    for record in (node.state_dir / "published").iterdir():
        record.write_text("{not json")
    node.publish(VOL_A, "pod1")
    assert node.publisher.publications() == [
        Publication(VOL_A, str(target), str(node.staging(VOL_A)), False)
    ]


def test_failed_bind_leaves_no_target_and_no_record(node: Node) -> None:
    class FailingMounter(FakeMounter):
        def bind(
            self, source: str | os.PathLike[str], target: str | os.PathLike[str], readonly: bool
        ) -> None:
            if "pods" in os.fspath(target):
                raise CommandFailed(["mount"], 32, "mount: permission denied")
            super().bind(source, target, readonly)

    mounter = FailingMounter()
    publisher = NodePublisher(node.locator, mounter, node.state_dir, "node-1")
    staging = node.staging(VOL_A)
    publisher.stage(VOL_A, staging, RWO, {})
    with pytest.raises(CommandFailed):
        publisher.publish(VOL_A, staging, node.target("pod1"), RWO, False, {})
    assert not node.target("pod1").exists()
    assert list((node.state_dir / "published").iterdir()) == []


# ---- unpublish ------------------------------------------------------------------------------


def test_unpublish_unmounts_and_removes_the_target_dir(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.publisher.unpublish(VOL_A, target)
    assert node.mounter.find(target) is None
    assert not target.exists()
    assert node.publisher.publications() == []


def test_unpublish_repeated_and_with_target_gone_is_ok(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.publisher.unpublish(VOL_A, target)
    node.publisher.unpublish(VOL_A, target)
    node.publisher.unpublish(VOL_B, node.target("never"))


def test_unpublish_never_deletes_a_non_empty_directory(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.mounter.unmount(target)
    (target / "precious").write_text("user data")
    with pytest.raises(Internal, match="not empty"):
        node.publisher.unpublish(VOL_A, target)
    assert (target / "precious").read_text() == "user data"


def test_unpublish_does_not_rmdir_when_the_unmount_did_not_take(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.mounter.stuck.add(str(target))
    with pytest.raises(Internal, match="still there"):
        node.publisher.unpublish(VOL_A, target)
    assert target.is_dir()
    assert node.mounter.find(target) is not None


def test_unpublish_busy_target_fails_and_keeps_everything(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.mounter.busy.add(str(target))
    with pytest.raises(CommandFailed, match="busy"):
        node.publisher.unpublish(VOL_A, target)
    assert node.mounter.find(target) is not None
    assert len(node.publisher.publications()) == 1


def test_unpublish_refuses_a_mount_of_something_else(node: Node) -> None:
    node.stage(VOL_B)
    target = node.publish(VOL_B, "pod1")
    with pytest.raises(FailedPrecondition, match="not volume"):
        node.publisher.unpublish(VOL_A, target)
    assert node.mounter.find(target) is not None
    assert target.is_dir()


def test_unpublish_removes_every_stacked_mount_of_the_volume(node: Node) -> None:
    staging = node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.mounter.bind(staging, target, readonly=False)  # a racing retry stacked a second bind
    node.publisher.unpublish(VOL_A, target)
    assert node.mounter.find(target) is None
    assert not target.exists()


def test_unpublish_after_the_volume_was_deleted_uses_the_record(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    del node.locator.volumes[VOL_A]
    node.publisher.unpublish(VOL_A, target)
    assert node.mounter.find(target) is None
    assert not target.exists()


# ---- stats ----------------------------------------------------------------------------------


def test_stats_of_a_published_volume_is_normal(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    usage, abnormal, message = node.publisher.stats(VOL_A, target)
    assert usage.capacity_bytes == 1 << 30
    assert usage.used_bytes == 4096
    assert not abnormal
    assert message == ""


def test_stats_of_a_staging_path_is_answered(node: Node) -> None:
    staging = node.stage(VOL_A)
    _, abnormal, _ = node.publisher.stats(VOL_A, staging)
    assert not abnormal


def test_stats_of_a_path_that_does_not_exist_is_not_found(node: Node) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        node.publisher.stats(VOL_A, node.kubelet / "nowhere")


def test_stats_of_a_path_holding_another_volume_is_not_found(node: Node) -> None:
    node.stage(VOL_B)
    target = node.publish(VOL_B, "pod1")
    with pytest.raises(NotFound, match="neither staged nor published"):
        node.publisher.stats(VOL_A, target)


def test_stats_of_an_unknown_volume_is_not_found(node: Node) -> None:
    with pytest.raises(NotFound):
        node.publisher.stats("pool/" + "c" * 32, node.kubelet)


def test_stats_when_the_volume_directory_is_gone_is_abnormal(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.locator.locate(VOL_A).path.rmdir()
    usage, abnormal, message = node.publisher.stats(VOL_A, target)
    assert abnormal
    assert "gone" in message
    assert usage.capacity_bytes == 1 << 30


def test_stats_when_the_mount_vanished_is_abnormal(node: Node) -> None:
    node.stage(VOL_A)
    target = node.publish(VOL_A, "pod1")
    node.mounter.unmount(target)
    _, abnormal, message = node.publisher.stats(VOL_A, target)
    assert abnormal
    assert "no longer holds" in message


def test_unpublish_of_a_path_that_never_held_the_volume_deletes_nothing(tmp_path: Path) -> None:
    """No publication record and no mount of the volume at the target: whatever is there is
    not ours, so a mistaken or hostile NodeUnpublishVolume must not delete it."""
    pool = FakePool(tmp_path / "pool")
    publisher = NodePublisher(FakeLocator(pool), FakeMounter(), tmp_path / "state", "node-1")
    victim_file = tmp_path / "important.db"
    victim_file.write_text("precious data")
    victim_dir = tmp_path / "empty-but-someone-elses"
    victim_dir.mkdir()
    publisher.unpublish("not-a-volume-id", victim_file)
    publisher.unpublish("pool/" + "a" * 32, victim_dir)
    assert victim_file.read_text() == "precious data"
    assert victim_dir.is_dir()
