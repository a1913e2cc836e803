"""Volume exports and ControllerPublish over a real PlainPool in a tmp dir (no root), with fakes
at the boundary: a fake Ganesha ExportMgr bus and the FakeMounter for the bind mounts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability, OnDelete, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from sharevol.nfs.bus import ExportAlreadyActive, ExportUnknown
from sharevol.nfs.exports import NfsExporter
from sharevol.pools.config import NfsConfig
from sharevol.pools.plain import PlainPool
from sharevol.service.exports import VolumeExports, nfs_context
from sharevol.service.locate import PoolHandle
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.service.publications import ControllerPublisher
from sharevol.sys.fake import FakeMounter

RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
RWO = Capability(access_mode=AccessMode.SINGLE_NODE_MULTI_WRITER)
ROX = Capability(access_mode=AccessMode.MULTI_NODE_READER_ONLY)


@dataclass
class FakeBus:
    """Ganesha's ExportMgr as far as sharevol uses it: IDs served, calls made."""

    served: dict[int, str] = field(default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)
    fail_add: bool = False
    on_add: list[object] = field(default_factory=list)

    def add_export(self, conf_path: Path, export_id: int) -> None:
        self.calls.append(("add", export_id))
        for check in self.on_add:
            assert callable(check)
            check(export_id)
        if self.fail_add:
            raise Internal("AddExport failed: resolve_posix_filesystem returned ENOENT")
        if export_id in self.served:
            raise ExportAlreadyActive("already active!!!")
        self.served[export_id] = conf_path.read_text()

    def update_export(self, conf_path: Path, export_id: int) -> None:
        self.calls.append(("update", export_id))
        if export_id not in self.served:
            raise ExportUnknown("Export id not found")
        self.served[export_id] = conf_path.read_text()

    def remove_export(self, export_id: int) -> None:
        self.calls.append(("remove", export_id))
        if self.served.pop(export_id, None) is None:
            raise ExportUnknown("lookup_export failed with Export id not found")


@dataclass
class World:
    provisioner: Provisioner
    exports: VolumeExports
    publisher: ControllerPublisher
    bus: FakeBus
    mounter: FakeMounter
    catalog: Catalog
    runtime: Path

    def create(self, name: str, cap: Capability = RWX, **params: str) -> VolumeRecord:
        return self.provisioner.create_volume(
            CreateRequest(name=name, capabilities=(cap,), required_bytes=1024**2, parameters=params)
        )

    def mounted(self) -> list[str]:
        prefix = str(self.runtime / "mnt") + "/"
        return [e.mount_point for e in self.mounter.mounts() if e.mount_point.startswith(prefix)]


def build(tmp_path: Path, *, enabled: bool = True, bus: FakeBus | None = None) -> World:
    root = tmp_path / "pool"
    root.mkdir(parents=True, exist_ok=True)
    pool = PlainPool("plain", root)
    pool.start()
    catalog = Catalog(root)
    catalog.ensure()
    handles = {"plain": PoolHandle(pool, catalog)}
    bus = bus or FakeBus()
    mounter = FakeMounter()
    runtime = tmp_path / "nfs"
    if enabled:
        config = NfsConfig(bind="10.0.0.1", port=2049, clients=("10.9.0.0/16",))
        exporter = NfsExporter(runtime, bus, mounter)
        exporter.reset()
        exports = VolumeExports(handles, config, ("plain",), exporter)
    else:
        exports = VolumeExports(handles)
    provisioner = Provisioner(
        handles, "plain", "controller", mounts_of=lambda record: exports.in_use(record, [])
    )
    provisioner.hooks.append(exports)
    return World(
        provisioner,
        exports,
        ControllerPublisher(provisioner, exports),
        bus,
        mounter,
        catalog,
        runtime,
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield build(tmp_path)


def test_a_new_volume_is_bind_mounted_and_exported_under_its_pool_and_directory(
    world: World,
) -> None:
    record = world.create("a")

    assert record.nfs_export is not None
    assert record.nfs_export.export_id == 1
    assert record.nfs_export.pseudo == f"/plain/{record.directory}"
    assert world.mounted() == [str(world.runtime / "mnt" / "plain" / record.directory)]
    conf = world.bus.served[1]
    assert f'Pseudo = "/plain/{record.directory}";' in conf
    assert "CLIENT { Clients = 10.9.0.0/16; Access_Type = RW; Protocols = 4; }" in conf
    assert world.catalog.read_volume(record.uuid) == record


def test_volume_context_names_server_port_export_and_options(world: World) -> None:
    record = world.create("ctx")

    assert nfs_context(record) == {
        "sharevol.csi.io/nfs-server": "10.0.0.1",
        "sharevol.csi.io/nfs-port": "2049",
        "sharevol.csi.io/nfs-export": f"/plain/{record.directory}",
        "sharevol.csi.io/nfs-mount-options": "vers=4.1,proto=tcp,port=2049,sec=sys",
        "sharevol.csi.io/nfs-root-squash": "true",
    }


def test_the_export_id_is_in_the_catalog_before_ganesha_hears_of_it(world: World) -> None:
    seen: list[int | None] = []

    def recorded(export_id: int) -> None:
        (record,) = world.catalog.load_volumes()
        seen.append(record.nfs_export.export_id if record.nfs_export else None)

    world.bus.on_add.append(recorded)
    world.create("durable")

    assert seen == [1]


def test_ids_are_unique_and_a_deleted_volumes_id_is_reused(world: World) -> None:
    first, second = world.create("one"), world.create("two")
    assert first.nfs_export and second.nfs_export
    assert (first.nfs_export.export_id, second.nfs_export.export_id) == (1, 2)

    world.provisioner.delete_volume(first.volume_id)
    third = world.create("three")

    assert ("remove", 1) in world.bus.calls
    assert third.nfs_export is not None and third.nfs_export.export_id == 1
    assert sorted(world.bus.served) == [1, 2]


def test_delete_removes_the_export_and_its_bind_mount_before_the_data(world: World) -> None:
    record = world.create("gone")
    path = world.provisioner.pools()["plain"].pool.volume_path(record.directory)
    order: list[str] = []
    world.bus.on_add.clear()
    original = world.bus.remove_export

    def remove(export_id: int) -> None:
        order.append(f"remove {export_id}, data there: {path.exists()}")
        original(export_id)

    world.bus.remove_export = remove  # type: ignore[method-assign]
    world.provisioner.delete_volume(record.volume_id)

    assert order == ["remove 1, data there: True"]
    assert world.bus.served == {}
    assert world.mounted() == []
    assert not path.exists()


def test_retained_volume_loses_its_export_but_keeps_the_record_of_it(world: World) -> None:
    record = world.create("kept", onDelete=OnDelete.RETAIN.value)

    world.provisioner.delete_volume(record.volume_id)

    assert world.bus.served == {}
    kept = world.catalog.read_volume(record.uuid)
    assert kept is not None and kept.state == "retained" and kept.nfs_export is not None


def test_a_failed_add_export_leaves_no_volume_mount_or_id_behind(tmp_path: Path) -> None:
    world = build(tmp_path, bus=FakeBus(fail_add=True))

    with pytest.raises(Internal, match="AddExport failed"):
        world.create("broken")

    assert world.catalog.load_volumes() == []
    assert world.mounted() == []
    assert list((tmp_path / "pool" / "volumes").iterdir()) == []
    world.bus.fail_add = False
    record = world.create("fine")
    assert record.nfs_export is not None and record.nfs_export.export_id == 1


def test_rebuild_adds_every_export_again_from_the_catalog(world: World) -> None:
    records = [world.create(f"v{i}") for i in range(3)]
    world.bus.served.clear()  # Ganesha restarted with no exports

    assert world.exports.rebuild() == 3

    assert sorted(world.bus.served) == sorted(
        r.nfs_export.export_id for r in records if r.nfs_export
    )


def test_a_restarted_controller_rebuilds_with_the_same_ids(tmp_path: Path) -> None:
    first = build(tmp_path)
    records = [first.create(f"v{i}") for i in range(2)]

    again = build(tmp_path)  # a new process: reset (no mounts), then rebuild
    assert again.exports.rebuild() == 2

    assert sorted(again.bus.served) == [1, 2]
    assert again.create("v2").nfs_export is not None
    assert sorted(again.bus.served) == [1, 2, 3]
    assert {r.name for r in records} == {"v0", "v1"}


def test_nfs_export_false_opts_out_and_true_without_a_server_is_refused(
    world: World, tmp_path: Path
) -> None:
    assert world.create("out", nfsExport="false").nfs_export is None

    off = build(tmp_path / "off", enabled=False)
    with pytest.raises(InvalidArgument, match="NFS server is off"):
        off.create("wants", nfsExport="true")
    assert off.catalog.load_volumes() == []
    assert off.create("fine").nfs_export is None


def test_root_squash_false_is_recorded_and_rendered(world: World) -> None:
    record = world.create("trusted", rootSquash="false")

    assert record.nfs_export is not None and not record.nfs_export.root_squash
    assert "Squash = No_Root_Squash;" in world.bus.served[record.nfs_export.export_id]


# -- ControllerPublish ---------------------------------------------------------------------


def clients_of(world: World, record: VolumeRecord) -> str:
    assert record.nfs_export is not None
    conf = world.bus.served[record.nfs_export.export_id]
    return " ".join(line.strip() for line in conf.splitlines() if "CLIENT" in line)


def test_publish_puts_the_node_on_the_client_list_rw_or_ro(world: World) -> None:
    record = world.create("pub")

    world.publisher.publish(record.volume_id, "n1@10.0.0.11", RWX, False)
    world.publisher.publish(record.volume_id, "n2@10.0.0.12", RWX, True)

    assert clients_of(world, record) == (
        "CLIENT { Clients = 10.9.0.0/16, 10.0.0.11; Access_Type = RW; Protocols = 4; } "
        "CLIENT { Clients = 10.0.0.12; Access_Type = RO; Protocols = 4; }"
    )
    world.publisher.unpublish(record.volume_id, "n1@10.0.0.11")
    assert "10.0.0.11" not in clients_of(world, record)


def test_publish_rules(world: World) -> None:
    rwo = world.create("rwo", RWO)
    publish = world.publisher.publish

    publish(rwo.volume_id, "n1@10.0.0.11", RWO, False)
    publish(rwo.volume_id, "n1@10.0.0.11", RWO, False)  # idempotent
    with pytest.raises(AlreadyExists):
        publish(rwo.volume_id, "n1@10.0.0.11", RWO, True)
    with pytest.raises(FailedPrecondition):
        publish(rwo.volume_id, "n2@10.0.0.12", RWO, False)
    with pytest.raises(NotFound):
        publish(rwo.volume_id, "n3", RWO, False)
    with pytest.raises(NotFound):
        publish("plain/" + "0" * 32, "n1@10.0.0.11", RWO, False)
    with pytest.raises(InvalidArgument):
        publish(rwo.volume_id, "n1@10.0.0.11", RWX, False)  # not what it was created for


def test_a_reader_only_mode_is_published_read_only(world: World) -> None:
    record = world.create("rox", ROX)

    world.publisher.publish(record.volume_id, "n1@10.0.0.11", ROX, False)

    assert "CLIENT { Clients = 10.0.0.11; Access_Type = RO; Protocols = 4; }" in clients_of(
        world, record
    )


def test_a_published_volume_cannot_be_deleted(world: World) -> None:
    record = world.create("busy")
    world.publisher.publish(record.volume_id, "n1@10.0.0.11", RWX, False)

    with pytest.raises(FailedPrecondition, match=r"NFS client n1@10\.0\.0\.11"):
        world.provisioner.delete_volume(record.volume_id)
    assert world.bus.served  # untouched

    world.publisher.unpublish(record.volume_id, "")
    world.provisioner.delete_volume(record.volume_id)
    assert world.bus.served == {}


def test_publications_survive_a_controller_restart(tmp_path: Path) -> None:
    first = build(tmp_path)
    record = first.create("p")
    first.publisher.publish(record.volume_id, "n1@10.0.0.11", RWX, False)

    again = build(tmp_path)
    again.exports.rebuild()

    assert "10.0.0.11" in clients_of(again, record)


def test_unpublish_of_unknown_volumes_and_nodes_is_fine(world: World) -> None:
    record = world.create("u")

    world.publisher.unpublish("plain/" + "0" * 32, "n1@10.0.0.11")
    world.publisher.unpublish(record.volume_id, "n9@10.0.0.99")
    world.publisher.unpublish(record.volume_id, "")


def test_a_publish_between_a_ganesha_restart_and_the_rebuild_adds_the_export(
    world: World,
) -> None:
    record = world.create("early")
    world.bus.served.clear()  # Ganesha restarted; the supervisor has not rebuilt yet

    world.publisher.publish(record.volume_id, "n1@10.0.0.11", RWX, False)

    assert "10.0.0.11" in clients_of(world, record)
