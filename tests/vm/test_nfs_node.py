"""The kernel NFS client in the VM: the node plugin (`serve --mode node`, over gRPC) stages and
publishes an NFS volume of a real sharevol server on the host (Ganesha, btrfs quota), a
non-root writer hits its quota, a static PV on an existing share path mounts, an NFS share
pool keeps its share mounted and nodes mount each volume's folder (a stale one is mounted
again), and nothing is left mounted afterwards. tests/vm/nfs_host.py starts the host side.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.csi.server import CsiServer, build_server
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys.mounts import MountEntry, parse_mountinfo, top_mount_at
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from tests.conftest import in_ci
from tests.support.csi import RWX, MiB, Stubs, mount_cap, stubs_for
from tests.vm.nfs_host import ENV_SPEC, ENV_UNAVAILABLE

pytestmark = pytest.mark.vm

TIMEOUT = 60.0
NODE_ID = "vm@10.0.2.15"
NFS_TYPES = ("nfs", "nfs4")


@pytest.fixture(scope="module")
def spec() -> dict[str, dict[str, object]]:
    """What the host made for these tests (tests/vm/nfs_host.py)."""
    raw = os.environ.get(ENV_SPEC)
    if raw is None:
        reason = os.environ.get(ENV_UNAVAILABLE) or "no NFS server was started for the VM"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the NFS VM tests must run)", pytrace=False)
        pytest.skip(reason)
    loaded: dict[str, dict[str, object]] = json.loads(raw)
    return loaded


@dataclass
class Served:
    server: CsiServer
    stubs: Stubs
    root: Path

    def path(self, *names: str) -> Path:
        path = self.root.joinpath(*names)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def stage(self, volume_id: str, context: dict[str, str], *flags: str) -> Path:
        staging = self.path("staging", volume_id.replace("/", "_"))
        staging.mkdir(exist_ok=True)  # the CO creates the staging directory
        capability = mount_cap(RWX)
        capability.mount.mount_flags.extend(flags)
        self.stubs.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                volume_capability=capability,
                volume_context=context,
            ),
            timeout=TIMEOUT * 2,
        )
        return staging

    def publish(
        self,
        volume_id: str,
        context: dict[str, str],
        staging: Path,
        pod: str,
        readonly: bool = False,
    ) -> Path:
        target = self.path("pods", pod, "mount")
        self.stubs.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=mount_cap(RWX),
                readonly=readonly,
                volume_context=context,
            ),
            timeout=TIMEOUT * 2,
        )
        return target

    def unpublish(self, volume_id: str, target: Path) -> None:
        self.stubs.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)),
            timeout=TIMEOUT * 2,
        )

    def unstage(self, volume_id: str, staging: Path) -> None:
        self.stubs.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging)),
            timeout=TIMEOUT * 2,
        )


def _serve(config: ServerConfig, root: Path, mode: str) -> Iterator[Served]:
    """A sharevol server in the guest; afterwards nothing may stay mounted under `root`."""
    socket = root / "csi.sock"
    server = build_server(config, endpoint=f"unix://{socket}", node_id=NODE_ID, mode=mode,
                          state_dir=root / "state", mount_timeout=TIMEOUT)  # fmt: skip
    server.start()
    try:
        with stubs_for(socket) as stubs:
            yield Served(server, stubs, root)
    finally:
        server.stop(grace=1.0)
        left = mounts_under(root)
        for target in sorted(left, key=len, reverse=True):
            SubprocessRunner().run(["umount", "-l", target], timeout=TIMEOUT, check=False)
        assert not left, f"mounts left behind: {left}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Served]:
    """`serve --mode node` with the controller's pool absent here (skipped at start)."""
    for folder in (tmp_path, *tmp_path.parents[:1]):  # pytest makes them 0700; pods are not root
        folder.chmod(0o755)
    config = ServerConfig(pools=(PoolConfig(name="fast", path=tmp_path / "absent", kind="btrfs"),))
    yield from _serve(config, tmp_path / "node", "node")


def _mount_at(path: Path) -> MountEntry | None:
    return top_mount_at(parse_mountinfo(Path("/proc/self/mountinfo").read_bytes()), path)


def _nfs_mounts() -> list[str]:
    entries = parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
    return [f"{e.source} at {e.mount_point}" for e in entries if e.fs_type in NFS_TYPES]


def _as_uid_1000(*argv: str) -> subprocess.CompletedProcess[str]:
    """A command run like a non-root pod: uid and gid 1000, no supplementary groups."""
    return subprocess.run(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", *argv],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def test_node_plugin_stages_publishes_and_a_writer_hits_the_quota(
    node: Served, spec: dict[str, dict[str, object]]
) -> None:
    quota = spec["quota"]
    volume_id, context = str(quota["volume_id"]), dict(quota["context"])  # type: ignore[call-overload]
    staging = node.stage(volume_id, context, "hard")
    entry = _mount_at(staging)
    assert entry is not None and entry.fs_type == "nfs4", entry
    assert entry.source == f"10.0.2.100:{context['sharevol.csi.io/nfs-export']}"
    writer = node.publish(volume_id, context, staging, "writer")
    reader = node.publish(volume_id, context, staging, "reader", readonly=True)

    small = _as_uid_1000("dd", "if=/dev/zero", f"of={writer}/small", "bs=1M", "count=4",
                         "conv=fsync")  # fmt: skip
    assert small.returncode == 0, small.stderr
    big = _as_uid_1000("dd", "if=/dev/zero", f"of={writer}/big", "bs=1M", "count=32",
                       "conv=fsync")  # fmt: skip
    assert big.returncode != 0 and "Disk quota exceeded" in big.stderr, big.stderr
    denied = _as_uid_1000("touch", f"{reader}/nope")
    assert "Read-only file system" in denied.stderr, denied.stderr
    size = _as_uid_1000("stat", "--format=%s", f"{reader}/small")  # root is squashed: not root
    assert size.stdout.strip() == str(4 * MiB), size.stderr

    stats = node.stubs.node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(writer))
    )
    assert not stats.volume_condition.abnormal, stats.volume_condition.message
    assert stats.usage[0].total > 0

    node.unpublish(volume_id, writer)
    node.unpublish(volume_id, reader)
    node.unstage(volume_id, staging)
    assert not writer.exists() and not reader.exists()
    assert _nfs_mounts() == []


def test_static_pv_on_an_existing_share_path_mounts(
    node: Served, spec: dict[str, dict[str, object]]
) -> None:
    share = spec["share"]
    context = {"server": str(share["server"]), "share": str(share["share"]),
               "subdir": str(share["static_subdir"])}  # fmt: skip
    volume_id = "static-nfs-vm-pv1"
    staging = node.stage(volume_id, context, "nfsvers=4.1", "hard")
    entry = _mount_at(staging)
    assert entry is not None and entry.source == f"10.0.2.100:{share['share']}/static/pv1"
    target = node.publish(volume_id, context, staging, "web", readonly=True)
    assert (target / str(share["static_file"])).read_text() == share["static_text"]
    node.unpublish(volume_id, target)
    node.unstage(volume_id, staging)
    assert _nfs_mounts() == []


@pytest.fixture
def share_pool(tmp_path: Path, spec: dict[str, dict[str, object]]) -> Iterator[Served]:
    """`serve --mode all` over an NFS share pool on the host's share volume."""
    share = spec["share"]
    pool = PoolConfig(name="nas", kind="nfs", path=tmp_path / "shares" / "nas",
                      server=str(share["server"]), share=str(share["share"]))  # fmt: skip
    yield from _serve(ServerConfig(pools=(pool,)), tmp_path, "all")


def test_share_pool_makes_folders_on_the_share_that_nodes_mount_directly(
    share_pool: Served,
) -> None:
    pool_root = share_pool.root / "shares" / "nas"
    assert (entry := _mount_at(pool_root)) is not None and entry.fs_type == "nfs4", entry
    created = share_pool.stubs.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name="vm-nas-1",
            capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MiB),
            volume_capabilities=[mount_cap(RWX)],
        ),
        timeout=TIMEOUT,
    ).volume
    volume_id, context = created.volume_id, dict(created.volume_context)
    assert context["sharevol.csi.io/quota"] == "not enforced"
    folder = pool_root / "volumes" / context["sharevol.csi.io/directory"]
    assert context["sharevol.csi.io/nfs-export"].endswith(f"/volumes/{folder.name}")

    staging = share_pool.stage(volume_id, context)
    staged = _mount_at(staging)
    assert staged is not None and staged.source.endswith(f"/volumes/{folder.name}"), staged
    first = share_pool.publish(volume_id, context, staging, "first")
    (first / "from-node.txt").write_text("node")
    assert (folder / "from-node.txt").read_text() == "node"  # seen through the share mount

    # The folder is made again on the server: the node's mount of it goes stale, and the
    # next publish mounts the stage again instead of handing out a dead handle.
    (folder / "from-node.txt").unlink()
    folder.rmdir()
    folder.mkdir()
    (folder / "again.txt").write_text("again")
    second = share_pool.publish(volume_id, context, staging, "second")
    assert (second / "again.txt").read_text() == "again"
    restaged = _mount_at(staging)
    assert restaged is not None and restaged.mount_id != staged.mount_id, "not mounted again"

    for target in (first, second):
        share_pool.unpublish(volume_id, target)
    share_pool.unstage(volume_id, staging)
    share_pool.stubs.controller.DeleteVolume(
        csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=TIMEOUT
    )
    assert not folder.exists()
    assert [m for m in _nfs_mounts() if not m.endswith(str(pool_root))] == []
    SubprocessRunner().run(["umount", str(pool_root)], timeout=TIMEOUT)
