"""NFS volumes on the node (NodePublisher -> NfsStager) against FakeRunner + FakeMounter: the
mount argv, options and timeouts, idempotency, stale-handle remounts, a hung server, unpublish
and unstage, stats, and the strict checks of static PV attributes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sharevol.catalog.records import AccessMode, Capability
from sharevol.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound
from sharevol.pools.base import PoolCapabilities
from sharevol.service.locate import LocatedVolume
from sharevol.service.publishing import NodePublisher
from sharevol.sys.fake import FakeMounter, FakeRunner
from sharevol.sys.nfs_mount import Health, Probe
from tests.unit.test_publishing import FakeLocator, FakePool

RWO = Capability(access_mode=AccessMode.SINGLE_NODE_MULTI_WRITER)
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
ROX = Capability(access_mode=AccessMode.MULTI_NODE_READER_ONLY)
STATIC_ID = "static-nfs-192.168.30.147-data-k8s-pv1"
STATIC = {"server": "192.168.30.147", "share": "/data/k8s", "subdir": "pv1"}
"""examples/seed/10-pv1.yaml's volume attributes."""
SHAREVOL_ID = "fast/" + "c" * 32
MANAGED = {
    "sharevol.csi.io/pool": "fast",
    "sharevol.csi.io/nfs-server": "10.0.0.10",
    "sharevol.csi.io/nfs-port": "20490",
    "sharevol.csi.io/nfs-export": "/fast/pvc-1",
    "sharevol.csi.io/nfs-mount-options": "vers=4.1,proto=tcp,port=20490,sec=sys",
    "sharevol.csi.io/nfs-root-squash": "true",
}
"""What CreateVolume answers for a volume of the managed NFS server."""
TIMEOUT = 7.5


@dataclass
class Node:
    publisher: NodePublisher
    runner: FakeRunner
    mounter: FakeMounter
    kubelet: Path
    health: dict[str, list[Health]] = field(default_factory=dict)
    """Per path, the answers the next probes give (then OK)."""

    def staging(self, name: str = "vol") -> Path:
        path = self.kubelet / "staging" / name
        path.mkdir(parents=True, exist_ok=True)  # the CO creates the staging directory
        return path

    def target(self, pod: str) -> Path:
        parent = self.kubelet / "pods" / pod
        parent.mkdir(parents=True, exist_ok=True)
        return parent / "mount"

    def at(self, path: Path) -> list[tuple[str, str, str]]:
        """(fs type, source, ro/rw) of each mount stacked at `path`."""
        return [
            (e.fs_type, e.source, "ro" if e.read_only else "rw")
            for e in self.mounter.mounts()
            if e.mount_point == str(path)
        ]

    def nfs_calls(self) -> list[list[str]]:
        return [call for call in self.runner.calls if call[0] in ("mount", "umount")]

    def stage_static(self, capability: Capability = RWO, flags: tuple[str, ...] = ()) -> Path:
        staging = self.staging()
        cap = capability.model_copy(update={"mount_flags": flags})
        self.publisher.stage(STATIC_ID, staging, cap, STATIC)
        return staging


class NoVolumes:
    """A node that serves no pool: every volume is unknown to the catalog here."""

    def locate(self, volume_id: str) -> LocatedVolume:
        raise NotFound(f"volume {volume_id!r} not found")


def _node(tmp_path: Path, locator: object) -> Node:
    runner, mounter = FakeRunner(), FakeMounter()

    def kernel_mount(argv: list[str]) -> None:  # mount -t nfs4 -o OPTS -- DEVICE TARGET
        mounter.mount(argv[6], argv[7], "nfs4", argv[4].split(","))

    runner.script(["mount", "-t", "nfs4"], action=kernel_mount)
    runner.script(["umount"], action=lambda argv: mounter.unmount(argv[-1]))
    publisher = NodePublisher(
        locator,  # type: ignore[arg-type]
        mounter,
        tmp_path / "state",
        "node-1@10.0.0.7",
        runner=runner,
        mount_timeout=TIMEOUT,
    )
    node = Node(publisher, runner, mounter, tmp_path / "kubelet")

    def prober(path: str, timeout: float) -> Probe:
        answers = node.health.get(path, [])
        health = answers.pop(0) if answers else Health.OK
        if health is Health.OK:
            return Probe(health, statvfs=os.statvfs(tmp_path))
        return Probe(health, f"{path}: {health.value}")

    publisher.nfs.prober = prober
    return node


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return _node(tmp_path, NoVolumes())


# ---- stage --------------------------------------------------------------------------------


def test_static_pv_stages_with_mount_t_nfs4_of_server_share_subdir(node: Node) -> None:
    staging = node.stage_static(flags=("nfsvers=4.1", "hard"))
    assert node.nfs_calls() == [
        ["mount", "-t", "nfs4", "-o", "vers=4.1,hard", "--", "192.168.30.147:/data/k8s/pv1",
         str(staging)],
    ]  # fmt: skip
    assert node.runner.timeouts[-1] == TIMEOUT
    assert node.at(staging) == [("nfs4", "192.168.30.147:/data/k8s/pv1", "rw")]


def test_static_pv_without_mount_options_mounts_nfs_4_1(node: Node) -> None:
    node.stage_static()
    assert node.nfs_calls()[0][4] == "vers=4.1"


def test_sharevol_volume_mounts_the_export_on_its_port_with_class_mount_options(node: Node) -> None:
    staging = node.staging()
    capability = RWX.model_copy(update={"mount_flags": ("nfsvers=4.2", "hard", "timeo=600")})
    node.publisher.stage(SHAREVOL_ID, staging, capability, MANAGED)
    assert node.nfs_calls() == [
        ["mount", "-t", "nfs4", "-o", "proto=tcp,sec=sys,port=20490,vers=4.2,hard,timeo=600",
         "--", "10.0.0.10:/fast/pvc-1", str(staging)],
    ]  # fmt: skip


def test_reader_only_mode_stages_read_only(node: Node) -> None:
    staging = node.stage_static(ROX, flags=("rw",))
    assert node.nfs_calls()[0][4] == "vers=4.1,ro"
    assert node.at(staging) == [("nfs4", "192.168.30.147:/data/k8s/pv1", "ro")]


def test_stage_twice_identically_mounts_once(node: Node) -> None:
    node.stage_static()
    node.stage_static()
    assert len(node.nfs_calls()) == 1


def test_stage_again_with_other_options_is_already_exists(node: Node) -> None:
    node.stage_static()
    with pytest.raises(AlreadyExists, match="already staged"):
        node.stage_static(flags=("soft",))


def test_stage_over_another_mount_is_already_exists(node: Node) -> None:
    staging = node.staging()
    node.mounter.mount("other:/x", staging, "nfs4")
    with pytest.raises(AlreadyExists, match="already holds another mount"):
        node.publisher.stage(STATIC_ID, staging, RWO, STATIC)


def test_failed_mount_leaves_no_stage_record(node: Node) -> None:
    node.runner.script(["mount", "-t", "nfs4"], returncode=32, stderr="mount.nfs4: No route")
    with pytest.raises(Internal, match="No route"):
        node.stage_static()
    assert node.publisher.nfs.stages.get(str(node.staging())) is None


def test_hung_mount_fails_in_time_with_the_timeout_in_the_message(node: Node) -> None:
    node.runner.script(["mount", "-t", "nfs4"], timed_out=True)
    with pytest.raises(Internal, match=r"within 7.5s and was killed"):
        node.stage_static()
    assert node.at(node.staging()) == []


def test_stale_stage_is_mounted_again_when_staged_again(node: Node) -> None:
    staging = node.stage_static()
    node.health[str(staging)] = [Health.STALE]
    node.stage_static()
    assert [call[:2] for call in node.nfs_calls()] == [
        ["mount", "-t"], ["umount", "--"], ["mount", "-t"]
    ]  # fmt: skip
    assert len(node.at(staging)) == 1


def test_block_access_is_refused_for_nfs_volumes(node: Node) -> None:
    block = Capability(access_mode=AccessMode.SINGLE_NODE_WRITER, access_type="block")
    with pytest.raises(FailedPrecondition, match="does not apply"):
        node.publisher.stage(STATIC_ID, node.staging(), block, STATIC)


# ---- static PV attributes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"server": "nas", "share": "data/k8s"}, "must be an absolute path"),
        ({"server": "nas", "share": "/data/../etc"}, r"no empty, `.` or `..`"),
        ({"server": "nas", "share": "/data", "subdir": "../etc"}, r"no empty, `.` or `..`"),
        ({"server": "nas", "share": "/data", "subdir": "/abs"}, "must be a relative path"),
        ({"server": "nas;reboot", "share": "/data"}, "neither an IP address nor a DNS name"),
        ({"server": "nas", "share": "/d", "path": "/x"}, r"unknown volume attributes \['path'\]"),
        ({"share": "/data"}, "needs the volume attributes server and share"),
    ],
)
def test_static_pv_attributes_are_checked_strictly(
    node: Node, attributes: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        node.publisher.stage(STATIC_ID, node.staging(), RWO, attributes)
    assert node.nfs_calls() == []


def test_static_attributes_on_a_sharevol_id_are_refused(node: Node) -> None:
    with pytest.raises(InvalidArgument, match="for static PVs"):
        node.publisher.stage(SHAREVOL_ID, node.staging(), RWO, STATIC)


def test_pod_info_keys_of_kubernetes_are_not_static_attributes(node: Node) -> None:
    staging = node.stage_static()
    context = {**STATIC, "csi.storage.k8s.io/pod.name": "web-0"}
    node.publisher.publish(STATIC_ID, staging, node.target("web-0"), RWO, False, context)


def test_unknown_volume_without_nfs_context_is_not_found(node: Node) -> None:
    with pytest.raises(NotFound):
        node.publisher.stage(STATIC_ID, node.staging(), RWO, {})


# ---- publish ------------------------------------------------------------------------------


def test_publish_binds_the_stage_read_write_and_read_only(node: Node) -> None:
    staging = node.stage_static(RWX)
    rw, ro = node.target("writer"), node.target("reader")
    node.publisher.publish(STATIC_ID, staging, rw, RWX, False, STATIC)
    node.publisher.publish(STATIC_ID, staging, ro, RWX, True, STATIC)
    device = "192.168.30.147:/data/k8s/pv1"
    assert node.at(rw) == [("nfs4", device, "rw")]
    assert node.at(ro) == [("nfs4", device, "ro")]
    assert [p.target_path for p in node.publisher.publications()] == sorted([str(rw), str(ro)])


def test_publish_twice_identically_is_ok_and_other_flags_already_exists(node: Node) -> None:
    staging = node.stage_static()
    target = node.target("web")
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    assert len(node.at(target)) == 1
    with pytest.raises(AlreadyExists, match="readonly flag"):
        node.publisher.publish(STATIC_ID, staging, target, RWO, True, STATIC)


def test_publish_without_a_stage_is_failed_precondition(node: Node) -> None:
    with pytest.raises(FailedPrecondition, match="is not staged"):
        node.publisher.publish(STATIC_ID, node.staging(), node.target("web"), RWO, False, STATIC)


def test_second_target_of_a_single_writer_volume_is_failed_precondition(node: Node) -> None:
    rwop = Capability(access_mode=AccessMode.SINGLE_NODE_SINGLE_WRITER)
    staging = node.stage_static(rwop)
    node.publisher.publish(STATIC_ID, staging, node.target("a"), rwop, False, STATIC)
    with pytest.raises(FailedPrecondition, match="does not allow another target"):
        node.publisher.publish(STATIC_ID, staging, node.target("b"), rwop, False, STATIC)


def test_stale_handle_on_publish_remounts_the_stage_then_binds(node: Node) -> None:
    staging = node.stage_static()
    before = node.mounter.find(staging)
    node.health[str(staging)] = [Health.STALE]
    target = node.target("web")
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    after = node.mounter.find(staging)
    assert before is not None and after is not None and after.device != before.device
    bound = node.mounter.find(target)
    assert bound is not None and bound.device == after.device
    assert node.runner.calls.count(["umount", "--", str(staging)]) == 1


def test_target_on_an_older_mount_of_the_stage_is_bound_again(node: Node) -> None:
    staging = node.stage_static()
    target = node.target("web")
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    node.health[str(staging)] = [Health.STALE]
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    stage_top, bound = node.mounter.find(staging), node.mounter.find(target)
    assert stage_top is not None and bound is not None
    assert bound.device == stage_top.device
    assert len(node.at(target)) == 1


def test_publish_to_a_server_that_does_not_answer_fails_without_binding(node: Node) -> None:
    staging = node.stage_static()
    node.health[str(staging)] = [Health.HUNG]
    target = node.target("web")
    with pytest.raises(Internal, match="does not work"):
        node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    assert node.at(target) == []


# ---- unpublish / unstage ------------------------------------------------------------------


def test_unpublish_and_unstage_leave_no_mount_and_no_target(node: Node) -> None:
    staging = node.stage_static()
    target = node.target("web")
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    node.publisher.unpublish(STATIC_ID, target)
    assert not target.exists()
    node.publisher.unstage(STATIC_ID, staging)
    assert node.at(staging) == [] and node.at(target) == []
    assert node.publisher.nfs.stages.get(str(staging)) is None
    node.publisher.unpublish(STATIC_ID, target)  # repeated calls succeed
    node.publisher.unstage(STATIC_ID, staging)


def test_stuck_unpublish_and_unstage_escalate_to_forced_unmounts(node: Node) -> None:
    staging = node.stage_static()
    target = node.target("web")
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    node.runner.script(["umount", "--"], timed_out=True)
    node.runner.script(["umount", "-f"], action=lambda argv: node.mounter.unmount(argv[-1]))
    node.publisher.unpublish(STATIC_ID, target)
    node.publisher.unstage(STATIC_ID, staging)
    assert node.at(staging) == [] and node.at(target) == []
    forced = [call for call in node.runner.calls if call[:2] == ["umount", "-f"]]
    assert forced == [["umount", "-f", "--", str(target)], ["umount", "-f", "--", str(staging)]]
    assert set(node.runner.timeouts[-4:]) == {TIMEOUT}


def test_unstage_leaves_a_foreign_mount_alone(node: Node) -> None:
    staging = node.stage_static()
    node.mounter.mount("/dev/sdz", staging, "ext4")
    with pytest.raises(FailedPrecondition, match="leaving it alone"):
        node.publisher.unstage(STATIC_ID, staging)


# ---- stats --------------------------------------------------------------------------------


def test_stats_of_an_nfs_volume_come_from_statvfs(node: Node, tmp_path: Path) -> None:
    staging = node.stage_static()
    target = node.target("web")
    node.publisher.publish(STATIC_ID, staging, target, RWO, False, STATIC)
    usage, abnormal, message = node.publisher.stats(STATIC_ID, target)
    expected = os.statvfs(tmp_path)
    assert (abnormal, message) == (False, "")
    assert usage.capacity_bytes == expected.f_blocks * expected.f_frsize
    assert usage.total_inodes == expected.f_files
    assert node.publisher.is_block(STATIC_ID) is False


@pytest.mark.parametrize(
    ("health", "message"),
    [(Health.HUNG, "does not answer"), (Health.STALE, "publishing or staging it again")],
)
def test_stats_of_a_dead_or_stale_mount_are_abnormal(
    node: Node, health: Health, message: str
) -> None:
    staging = node.stage_static()
    node.health[str(staging)] = [health]
    usage, abnormal, text = node.publisher.stats(STATIC_ID, staging)
    assert abnormal and message in text
    assert usage.capacity_bytes == 0


def test_stats_at_an_unknown_path_is_not_found(node: Node) -> None:
    with pytest.raises(NotFound):
        node.publisher.stats(STATIC_ID, node.target("nobody"))


# ---- local pools versus NFS ---------------------------------------------------------------


def _served_locally(tmp_path: Path, remote: bool) -> tuple[Node, Callable[[], Path]]:
    pool = FakePool(
        tmp_path / "pool",
        name="fast",
        capabilities=PoolCapabilities(
            enforces_quota=not remote, reports_usage=False, remote_share=remote
        ),
    )
    locator = FakeLocator(pool)
    locator.add(SHAREVOL_ID, RWX)
    node = _node(tmp_path, locator)

    def stage() -> Path:
        staging = node.staging()
        node.publisher.stage(SHAREVOL_ID, staging, RWX, MANAGED)
        return staging

    return node, stage


def test_volume_of_a_pool_this_node_serves_is_bound_not_mounted_over_nfs(tmp_path: Path) -> None:
    node, stage = _served_locally(tmp_path, remote=False)
    staging = stage()
    assert node.nfs_calls() == []
    assert node.at(staging)[0][0] == "fakefs"


def test_volume_of_a_share_pool_is_mounted_over_nfs_even_where_the_pool_is(
    tmp_path: Path,
) -> None:
    node, stage = _served_locally(tmp_path, remote=True)
    staging = stage()
    assert node.at(staging) == [("nfs4", "10.0.0.10:/fast/pvc-1", "rw")]


def test_the_seed_static_pv_is_what_the_node_mounts(node: Node) -> None:
    """examples/seed/10-pv1.yaml as kubelet hands it over: attributes and mountOptions."""
    seed = Path(__file__).resolve().parents[2] / "examples" / "seed" / "10-pv1.yaml"
    pv = yaml.safe_load(seed.read_text())
    csi = pv["spec"]["csi"]
    staging = node.staging()
    capability = RWO.model_copy(update={"mount_flags": tuple(pv["spec"]["mountOptions"])})
    node.publisher.stage(csi["volumeHandle"], staging, capability, csi["volumeAttributes"])
    assert node.nfs_calls() == [
        ["mount", "-t", "nfs4", "-o", "vers=4.1,hard", "--", "192.168.30.147:/data/k8s/pv1",
         str(staging)],
    ]  # fmt: skip
