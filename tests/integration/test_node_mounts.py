"""The node side with real bind mounts: SystemMounter, /proc/self/mountinfo and the kernel's
read-only enforcement, on a volume directory of a real plain pool with a real catalog."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.errors import FailedPrecondition
from sharevol.pools.plain import PlainPool
from sharevol.service.locate import PoolHandle, VolumeLocator
from sharevol.service.publishing import NodePublisher
from sharevol.sys.mounts import SystemMounter
from sharevol.sys.runner import SubprocessRunner

pytestmark = pytest.mark.root

RWO = Capability(access_mode=AccessMode.SINGLE_NODE_WRITER)
RWOP = Capability(access_mode=AccessMode.SINGLE_NODE_SINGLE_WRITER)
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
ROX = Capability(access_mode=AccessMode.MULTI_NODE_READER_ONLY)


@dataclass
class RealNode:
    publisher: NodePublisher
    mounter: SystemMounter
    pool: PlainPool
    catalog: Catalog
    kubelet: Path

    def create_volume(self, uuid: str, *capabilities: Capability) -> str:
        directory = f"pvc-{uuid[:8]}"
        self.pool.create_volume(directory, 1 << 30)
        record = VolumeRecord(
            volume_id=f"tmp/{uuid}",
            name=directory,
            pool="tmp",
            uuid=uuid,
            directory=directory,
            capacity_bytes=1 << 30,
            capabilities=capabilities or (RWO,),
            state="ready",
        )
        self.catalog.put_volume(record)
        return record.volume_id

    def volume_dir(self, volume_id: str) -> Path:
        return self.pool.volume_path(f"pvc-{volume_id.split('/')[1][:8]}")

    def staging(self, volume_id: str) -> Path:
        return self.kubelet / "staging" / volume_id.split("/")[1][:8]

    def target(self, pod: str) -> Path:
        parent = self.kubelet / "pods" / pod / "volumes"
        parent.mkdir(parents=True, exist_ok=True)
        return parent / "mount"

    def mounted_under(self, path: Path) -> list[str]:
        prefix = str(path)
        return [
            entry.mount_point
            for entry in self.mounter.mounts()
            if entry.mount_point == prefix or entry.mount_point.startswith(prefix + "/")
        ]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RealNode]:
    """A node on real bind mounts; every mount under tmp_path is undone even if a test fails."""
    runner = SubprocessRunner()
    mounter = SystemMounter(runner)
    (tmp_path / "pool").mkdir()
    pool = PlainPool("tmp", tmp_path / "pool")
    pool.start()
    catalog = Catalog(pool.root)
    catalog.ensure()
    locator = VolumeLocator({"tmp": PoolHandle(pool, catalog)})
    kubelet = tmp_path / "kubelet"
    (kubelet / "staging").mkdir(parents=True)
    publisher = NodePublisher(locator, mounter, tmp_path / "node-state", "node-1")
    yield RealNode(publisher, mounter, pool, catalog, kubelet)
    prefix = f"{tmp_path}/"
    for _ in range(32):
        inside = [e.mount_point for e in mounter.mounts() if e.mount_point.startswith(prefix)]
        if not inside:
            break
        runner.run(["umount", max(inside, key=len)], timeout=30, check=False)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def test_read_only_publish_refuses_writes_with_erofs_and_the_source_stays_writable(
    node: RealNode,
) -> None:
    volume_id = node.create_volume("a" * 32)
    node.publisher.stage(volume_id, node.staging(volume_id), RWO, {})
    target = node.target("pod1")
    node.publisher.publish(volume_id, node.staging(volume_id), target, RWO, True, {})

    with pytest.raises(OSError) as info:
        _write(target / "denied.txt", "x")
    assert info.value.errno == errno.EROFS
    _write(node.volume_dir(volume_id) / "from-pool.txt", "written on the pool")
    assert (target / "from-pool.txt").read_text() == "written on the pool"
    entry = node.mounter.find(target)
    assert entry is not None
    assert entry.read_only
    assert "rw" in entry.super_options


def test_reader_only_mode_is_enforced_by_the_kernel_even_without_the_flag(
    node: RealNode,
) -> None:
    volume_id = node.create_volume("b" * 32, ROX)
    node.publisher.stage(volume_id, node.staging(volume_id), ROX, {})
    target = node.target("pod1")
    node.publisher.publish(volume_id, node.staging(volume_id), target, ROX, False, {})

    with pytest.raises(OSError) as info:
        _write(target / "denied.txt", "x")
    assert info.value.errno == errno.EROFS


def test_read_write_publish_writes_reach_the_volume_directory(node: RealNode) -> None:
    volume_id = node.create_volume("c" * 32)
    node.publisher.stage(volume_id, node.staging(volume_id), RWO, {})
    target = node.target("pod1")
    node.publisher.publish(volume_id, node.staging(volume_id), target, RWO, False, {})

    _write(target / "data.txt", "hello volume")

    assert (node.volume_dir(volume_id) / "data.txt").read_text() == "hello volume"
    usage, abnormal, _ = node.publisher.stats(volume_id, target)
    assert not abnormal
    # a plain pool counts allocated blocks: the file's one block and the volume directory's
    assert usage.used_inodes == 2
    assert 4096 <= usage.used_bytes <= 3 * 4096


def test_repeated_stage_and_publish_leave_one_mount_each(node: RealNode) -> None:
    volume_id = node.create_volume("d" * 32)
    staging, target = node.staging(volume_id), node.target("pod1")
    for _ in range(3):
        node.publisher.stage(volume_id, staging, RWO, {})
        node.publisher.publish(volume_id, staging, target, RWO, False, {})

    assert node.mounted_under(staging) == [str(staging)]
    assert node.mounted_under(target) == [str(target)]


def test_unpublish_and_unstage_leave_no_mount_and_remove_only_the_target(node: RealNode) -> None:
    volume_id = node.create_volume("e" * 32)
    staging, target = node.staging(volume_id), node.target("pod1")
    node.publisher.stage(volume_id, staging, RWO, {})
    node.publisher.publish(volume_id, staging, target, RWO, False, {})
    _write(target / "kept.txt", "survives unpublish")

    node.publisher.unpublish(volume_id, target)
    node.publisher.unstage(volume_id, staging)

    assert node.mounted_under(node.kubelet) == []
    assert not target.exists()
    assert staging.is_dir(), "the staging dir belongs to the CO"
    assert (node.volume_dir(volume_id) / "kept.txt").read_text() == "survives unpublish"


def test_second_target_for_single_node_single_writer_is_failed_precondition(
    node: RealNode,
) -> None:
    volume_id = node.create_volume("f" * 32, RWOP)
    staging = node.staging(volume_id)
    node.publisher.stage(volume_id, staging, RWOP, {})
    node.publisher.publish(volume_id, staging, node.target("pod1"), RWOP, False, {})

    with pytest.raises(FailedPrecondition):
        node.publisher.publish(volume_id, staging, node.target("pod2"), RWOP, False, {})
    assert node.mounted_under(node.target("pod2")) == []
    assert not node.target("pod2").exists()


def test_second_target_for_multi_node_multi_writer_shares_the_data(node: RealNode) -> None:
    volume_id = node.create_volume("1" * 32, RWX)
    staging = node.staging(volume_id)
    node.publisher.stage(volume_id, staging, RWX, {})
    first, second = node.target("pod1"), node.target("pod2")
    node.publisher.publish(volume_id, staging, first, RWX, False, {})
    node.publisher.publish(volume_id, staging, second, RWX, False, {})

    _write(first / "shared.txt", "both pods see this")

    assert (second / "shared.txt").read_text() == "both pods see this"
    assert len(node.publisher.publications()) == 2


def test_unpublish_after_the_target_dir_was_removed_succeeds(node: RealNode) -> None:
    volume_id = node.create_volume("2" * 32)
    staging, target = node.staging(volume_id), node.target("pod1")
    node.publisher.stage(volume_id, staging, RWO, {})
    node.publisher.publish(volume_id, staging, target, RWO, False, {})
    SubprocessRunner().run(["umount", str(target)])
    target.rmdir()

    node.publisher.unpublish(volume_id, target)
    node.publisher.unpublish(volume_id, target)

    assert not target.exists()
    assert node.publisher.publications() == []


def test_volume_directory_deleted_under_a_live_mount_is_abnormal_and_still_unpublishes(
    node: RealNode,
) -> None:
    volume_id = node.create_volume("3" * 32)
    staging, target = node.staging(volume_id), node.target("pod1")
    node.publisher.stage(volume_id, staging, RWO, {})
    node.publisher.publish(volume_id, staging, target, RWO, False, {})
    node.volume_dir(volume_id).rmdir()
    entry = node.mounter.find(target)
    assert entry is not None
    assert entry.identity.deleted, "the kernel marks the orphaned source //deleted"

    _, abnormal, message = node.publisher.stats(volume_id, target)
    node.publisher.unpublish(volume_id, target)
    node.publisher.unstage(volume_id, staging)

    assert abnormal
    assert "gone" in message
    assert node.mounted_under(node.kubelet) == []
