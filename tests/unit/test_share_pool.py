"""NFS share pools (kind nfs) with FakeRunner + FakeMounter: the controller's mount of the share
(argv, options, timeout), remount when stale, refusals, the per-volume facts nodes mount from,
and the pools.yaml rules. The kernel mounts themselves are tested in the VM tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.errors import FailedPrecondition, Internal
from sharevol.pools import nfs_share
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from sharevol.pools.factory import make_pool
from sharevol.pools.nfs_share import SharePool
from sharevol.service.nfs_source import nfs_source
from sharevol.service.provisioning import volume_context
from sharevol.sys.fake import FakeMounter, FakeRunner
from sharevol.sys.nfs_mount import Health, Probe

DIRECTORY = "pvc-1"


class Share:
    """A SharePool whose kernel is a FakeMounter; `answers` are the next probe results."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, **options: object) -> None:
        self.runner, self.mounter = FakeRunner(), FakeMounter()
        self.runner.script(
            ["mount", "-t", "nfs4"],
            action=lambda argv: self.mounter.mount(argv[6], argv[7], "nfs4", argv[4].split(",")),
        )
        self.runner.script(["umount"], action=lambda argv: self.mounter.unmount(argv[-1]))
        self.answers: list[Health] = []

        def prober(path: str, timeout: float) -> Probe:
            health = self.answers.pop(0) if self.answers else Health.OK
            if health is Health.OK:
                return Probe(health, statvfs=os.statvfs(path))
            return Probe(health, health.value)

        monkeypatch.setattr(nfs_share, "probe", prober)
        monkeypatch.setattr(nfs_share, "RECHECK_SECONDS", 0.0)
        self.pool = SharePool(
            "nas", root, "192.168.30.147", "/data/k8s",
            runner=self.runner, mounter=self.mounter, mount_timeout=9.0,
            **options,  # type: ignore[arg-type]
        )  # fmt: skip

    def mounts(self) -> list[list[str]]:
        return [c for c in self.runner.calls if c[0] in ("mount", "umount")]


@pytest.fixture
def share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Share:
    return Share(tmp_path / "shares" / "nas", monkeypatch, mount_options=("hard", "port=20490"))


def test_start_mounts_the_share_with_its_options_under_a_timeout(share: Share) -> None:
    share.pool.start()
    root = str(share.pool.root)
    assert share.mounts() == [
        ["mount", "-t", "nfs4", "-o", "vers=4.1,proto=tcp,hard,port=20490", "--",
         "192.168.30.147:/data/k8s", root],
    ]  # fmt: skip
    assert share.runner.timeouts == [9.0]
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    caps = share.pool.capabilities
    assert (caps.enforces_quota, caps.remote_share, caps.node_local) == (False, True, False)


def test_a_mounted_share_is_not_mounted_again(share: Share) -> None:
    share.pool.start()
    share.pool.space()
    share.pool.create_volume(DIRECTORY, 1 << 30)
    assert len(share.mounts()) == 1


def test_a_lost_mount_is_mounted_again_before_the_next_operation(share: Share) -> None:
    share.pool.start()
    share.mounter.unmount(share.pool.root)
    share.pool.create_volume(DIRECTORY, 1 << 30)
    assert [c[0] for c in share.mounts()] == ["mount", "mount"]


def test_a_stale_share_is_unmounted_and_mounted_again(share: Share) -> None:
    share.pool.start()
    share.answers = [Health.STALE]
    share.pool.space()
    assert [c[:2] for c in share.mounts()] == [["mount", "-t"], ["umount", "--"], ["mount", "-t"]]


def test_a_share_that_does_not_answer_fails_in_time(share: Share) -> None:
    share.pool.start()
    share.answers = [Health.HUNG]
    with pytest.raises(Internal, match="does not answer"):
        share.pool.create_volume(DIRECTORY, 1 << 30)


def test_start_refuses_to_mount_over_data(share: Share) -> None:
    share.pool.root.mkdir(parents=True)
    (share.pool.root / "precious").write_text("x")
    with pytest.raises(FailedPrecondition, match="is not empty"):
        share.pool.start()
    assert share.mounts() == []


def test_start_refuses_a_path_that_holds_another_mount(share: Share) -> None:
    share.pool.root.mkdir(parents=True)
    share.mounter.mount("/dev/sdz", share.pool.root, "ext4")
    with pytest.raises(FailedPrecondition, match="holds another mount"):
        share.pool.start()


def test_each_volume_records_where_nodes_mount_its_folder(share: Share) -> None:
    share.pool.start()
    backend = share.pool.create_volume(DIRECTORY, 1 << 30)
    assert backend == {
        "nfs_server": "192.168.30.147",
        "nfs_port": 20490,
        "nfs_export": "/data/k8s/volumes/pvc-1",
        "nfs_mount_options": "vers=4.1,proto=tcp,hard,port=20490",
    }
    assert (share.pool.root / "volumes" / DIRECTORY).is_dir()


def test_volume_context_of_a_share_volume_tells_nodes_to_mount_its_folder(share: Share) -> None:
    share.pool.start()
    rwx = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
    record = VolumeRecord(
        volume_id="nas/" + "d" * 32, name="pvc", pool="nas", uuid="d" * 32,
        directory=DIRECTORY, capacity_bytes=1 << 30, capabilities=(rwx,), state="ready",
        backend=share.pool.create_volume(DIRECTORY, 1 << 30),
    )  # fmt: skip
    context = volume_context(record)
    assert context["sharevol.csi.io/quota"] == "not enforced"
    source = nfs_source(record.volume_id, context)
    assert source is not None and not source.static
    assert source.device == "192.168.30.147:/data/k8s/volumes/pvc-1"
    assert source.options == ("vers=4.1", "proto=tcp", "hard", "port=20490")
    image = record.model_copy(update={"kind": "image"})
    assert nfs_source(image.volume_id, volume_context(image)) is None  # staged from the share


def test_default_port_is_2049(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = Share(tmp_path / "nas", monkeypatch).pool
    assert pool.node_location(DIRECTORY)["nfs_port"] == 2049


# ---- pools.yaml ---------------------------------------------------------------------------


def _nas(**fields: object) -> PoolConfig:
    values: dict[str, object] = {
        "name": "nas", "path": "/var/lib/sharevol/shares/nas", "kind": "nfs",
        "server": "192.168.30.147", "share": "/data/k8s", **fields,
    }  # fmt: skip
    return PoolConfig.model_validate(values)


def test_config_of_a_share_pool_builds_a_share_pool() -> None:
    pool = make_pool(_nas(mount_options=["hard"]))
    assert isinstance(pool, SharePool)
    assert pool.options == ["vers=4.1", "proto=tcp", "hard"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"server": None}, "needs server and share"),
        ({"share": "data"}, "must be an absolute path"),
        ({"server": "a b"}, "neither an IP address"),
        ({"mount_options": ["nfsvers=3"]}, "NFSv4 only"),
        ({"node_local": True}, "cannot be node_local"),
        ({"kind": "plain"}, "are for kind: nfs"),
    ],
)
def test_config_of_a_share_pool_is_checked(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _nas(**fields)


def test_share_pools_are_not_exported_by_the_managed_nfs_server() -> None:
    fast = PoolConfig(name="fast", path=Path("/srv/fast"), kind="btrfs")
    config = ServerConfig(pools=(fast, _nas()), nfs=NfsConfig(bind="127.0.0.1"))
    assert config.nfs_pools() == ("fast",)
    with pytest.raises(ValidationError, match="Ganesha does not re-export"):
        ServerConfig(pools=(fast, _nas()), nfs=NfsConfig(bind="127.0.0.1", pools=("nas",)))
