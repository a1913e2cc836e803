"""The CSI controller rules of the checklist, over real gRPC on a unix socket, against a real
loop-mounted btrfs pool and a plain pool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import admin_pb2, csi_pb2
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import (
    ROX,
    RWO,
    RWX,
    GiB,
    MiB,
    Stubs,
    block_cap,
    code_of,
    mount_cap,
    running_server,
)

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
        ),
        default_pool="fast",
    )


@pytest.fixture
def stubs(config: ServerConfig, tmp_path: Path) -> Iterator[Stubs]:
    with running_server(config, tmp_path / "state") as (_server, stubs):
        yield stubs


def create(
    stubs: Stubs,
    name: str,
    size: int = 64 * MiB,
    *,
    caps: list[csi_pb2.VolumeCapability] | None = None,
    limit: int = 0,
    extra: dict[str, str] | None = None,
    **params: str,
) -> csi_pb2.Volume:
    response = stubs.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size, limit_bytes=limit),
            volume_capabilities=caps or [mount_cap(RWX)],
            parameters={**params, **(extra or {})},
        )
    )
    return response.volume


def create_code(stubs: Stubs, request: csi_pb2.CreateVolumeRequest) -> grpc.StatusCode:
    return code_of(lambda: stubs.controller.CreateVolume(request))


# -- CreateVolume ----------------------------------------------------------------------------


def test_create_returns_volume_with_requested_size_and_context(stubs: Stubs) -> None:
    volume = create(stubs, "pvc-a", 100 * MiB)
    assert volume.capacity_bytes == 100 * MiB
    assert volume.volume_id.startswith("fast/")
    assert volume.volume_context["sharevol.csi.io/quota"] == "enforced"


def test_create_same_name_same_request_returns_same_volume(stubs: Stubs) -> None:
    first = create(stubs, "pvc-a")
    second = create(stubs, "pvc-a")
    assert first == second


def test_create_same_name_bigger_size_is_already_exists(stubs: Stubs) -> None:
    create(stubs, "pvc-a", 64 * MiB)
    with pytest.raises(grpc.RpcError) as err:
        create(stubs, "pvc-a", 128 * MiB)
    assert err.value.code() == C.ALREADY_EXISTS


def test_create_same_name_range_containing_size_is_ok(stubs: Stubs) -> None:
    first = create(stubs, "pvc-a", 64 * MiB)
    again = create(stubs, "pvc-a", 32 * MiB, limit=128 * MiB)
    assert again.volume_id == first.volume_id


def test_create_same_name_other_capabilities_is_already_exists(stubs: Stubs) -> None:
    create(stubs, "pvc-a", caps=[mount_cap(RWX)])
    with pytest.raises(grpc.RpcError) as err:
        create(stubs, "pvc-a", caps=[mount_cap(RWO)])
    assert err.value.code() == C.ALREADY_EXISTS


def test_create_same_name_other_parameters_is_already_exists(stubs: Stubs) -> None:
    create(stubs, "pvc-a", onDelete="delete")
    with pytest.raises(grpc.RpcError) as err:
        create(stubs, "pvc-a", onDelete="retain")
    assert err.value.code() == C.ALREADY_EXISTS


@pytest.mark.parametrize(
    "request_",
    [
        csi_pb2.CreateVolumeRequest(volume_capabilities=[mount_cap()]),
        csi_pb2.CreateVolumeRequest(name="x"),
        csi_pb2.CreateVolumeRequest(name="x", volume_capabilities=[csi_pb2.VolumeCapability()]),
        csi_pb2.CreateVolumeRequest(
            name="x",
            volume_capabilities=[
                csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume())
            ],
        ),
        csi_pb2.CreateVolumeRequest(name="x" * 129, volume_capabilities=[mount_cap()]),
        csi_pb2.CreateVolumeRequest(
            name="x", volume_capabilities=[mount_cap()], parameters={"bogus": "1"}
        ),
        csi_pb2.CreateVolumeRequest(
            name="x", volume_capabilities=[mount_cap()], parameters={"pool": "nope"}
        ),
        csi_pb2.CreateVolumeRequest(
            name="x", volume_capabilities=[mount_cap()], parameters={"onDelete": "shred"}
        ),
        csi_pb2.CreateVolumeRequest(
            name="x", volume_capabilities=[mount_cap()], parameters={"k" * 10: "v" * 5000}
        ),
    ],
    ids=[
        "no-name",
        "no-capabilities",
        "capability-without-anything",
        "capability-without-access-mode",
        "name-over-128-bytes",
        "unknown-parameter",
        "unknown-pool",
        "bad-onDelete",
        "parameters-over-4KiB",
    ],
)
def test_create_with_bad_request_is_invalid_argument(
    stubs: Stubs, request_: csi_pb2.CreateVolumeRequest
) -> None:
    assert create_code(stubs, request_) == C.INVALID_ARGUMENT


def test_create_limit_below_required_is_out_of_range(stubs: Stubs) -> None:
    request = csi_pb2.CreateVolumeRequest(
        name="x",
        capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB, limit_bytes=GiB),
        volume_capabilities=[mount_cap()],
    )
    assert create_code(stubs, request) == C.OUT_OF_RANGE


def test_create_larger_than_pool_is_resource_exhausted_and_leaves_nothing(
    stubs: Stubs, btrfs_fs: Path
) -> None:
    before = sorted(os.listdir(btrfs_fs / "volumes"))
    request = csi_pb2.CreateVolumeRequest(
        name="huge",
        capacity_range=csi_pb2.CapacityRange(required_bytes=1024 * GiB),
        volume_capabilities=[mount_cap()],
    )
    assert create_code(stubs, request) == C.RESOURCE_EXHAUSTED
    assert sorted(os.listdir(btrfs_fs / "volumes")) == before
    assert code_of(lambda: stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(name="huge"))) == (
        C.NOT_FOUND
    )


def test_pool_fills_up_then_refuses(stubs: Stubs) -> None:
    capacity = stubs.controller.GetCapacity(csi_pb2.GetCapacityRequest()).available_capacity
    create(stubs, "big", capacity - 16 * MiB)
    request = csi_pb2.CreateVolumeRequest(
        name="one-more",
        capacity_range=csi_pb2.CapacityRange(required_bytes=32 * MiB),
        volume_capabilities=[mount_cap()],
    )
    assert create_code(stubs, request) == C.RESOURCE_EXHAUSTED


def test_block_modes_a_loop_device_cannot_honour_are_refused_clearly(stubs: Stubs) -> None:
    msw = csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_SINGLE_WRITER
    with pytest.raises(grpc.RpcError) as err:
        create(stubs, "blk", caps=[block_cap(msw)])
    assert err.value.code() == C.INVALID_ARGUMENT
    assert "block" in str(err.value.details())
    assert create(stubs, "blk", caps=[block_cap()]).capacity_bytes > 0  # RWO block is offered


def test_error_status_has_no_details(stubs: Stubs) -> None:
    call = stubs.controller.CreateVolume.with_call
    with pytest.raises(grpc.RpcError) as err:
        call(csi_pb2.CreateVolumeRequest())
    trailers = [item.key for item in err.value.trailing_metadata() or ()]
    assert "grpc-status-details-bin" not in trailers
    assert err.value.details()


# -- sub directory template and path safety ---------------------------------------------------


K8S = {
    "csi.storage.k8s.io/pvc/name": "data",
    "csi.storage.k8s.io/pvc/namespace": "shop",
    "csi.storage.k8s.io/pv/name": "pvc-1234",
}


def test_subdir_template_names_the_directory(stubs: Stubs, btrfs_fs: Path) -> None:
    volume = create(
        stubs,
        "pvc-1234",
        subDir="${pvc.metadata.namespace}-${pvc.metadata.name}",
        extra=K8S,
    )
    assert volume.volume_context["sharevol.csi.io/directory"] == "shop-data"
    assert (btrfs_fs / "volumes" / "shop-data").is_dir()


def test_subdir_template_collision_is_already_exists(stubs: Stubs) -> None:
    create(stubs, "a", subDir="fixed")
    with pytest.raises(grpc.RpcError) as err:
        create(stubs, "b", subDir="fixed")
    assert err.value.code() == C.ALREADY_EXISTS


@pytest.mark.parametrize(
    "params",
    [
        {"subDir": "../../etc"},
        {"subDir": "/etc"},
        {"subDir": "a/b"},
        {"subDir": "x\0y"},
        {"subDir": "${pvc.metadata.name}", "csi.storage.k8s.io/pvc/name": "../../etc"},
        {"subDir": "${pvc.metadata.name}", "csi.storage.k8s.io/pvc/name": "a/b"},
        {"subDir": "${pvc.metadata.name}"},
        {"subDir": "${env.HOME}"},
        {"subDir": ".."},
        {"subDir": "a" * 10240},
        {"pool": "../fast"},
    ],
)
def test_unsafe_templates_and_parameters_are_refused_and_touch_nothing(
    stubs: Stubs, btrfs_fs: Path, tmp_path: Path, params: dict[str, str]
) -> None:
    before = sorted(os.listdir(btrfs_fs / "volumes")), sorted(os.listdir(tmp_path))
    request = csi_pb2.CreateVolumeRequest(
        name="evil", volume_capabilities=[mount_cap()], parameters=params
    )
    assert create_code(stubs, request) == C.INVALID_ARGUMENT
    assert (sorted(os.listdir(btrfs_fs / "volumes")), sorted(os.listdir(tmp_path))) == before


@pytest.mark.parametrize(
    "volume_id",
    ["../../etc", "/etc/passwd", "fast/../../etc", "fast/" + "0" * 31 + "/", "a\0b", "x" * 10240],
)
def test_hostile_volume_ids_touch_nothing(stubs: Stubs, tmp_path: Path, volume_id: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("data")
    delete = code_of(
        lambda: stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
    )
    assert delete in (C.OK, C.INVALID_ARGUMENT)
    validate = code_of(
        lambda: stubs.controller.ValidateVolumeCapabilities(
            csi_pb2.ValidateVolumeCapabilitiesRequest(
                volume_id=volume_id, volume_capabilities=[mount_cap()]
            )
        )
    )
    assert validate in (C.NOT_FOUND, C.INVALID_ARGUMENT)
    stage = code_of(
        lambda: stubs.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(tmp_path / "stage"),
                volume_capability=mount_cap(),
            )
        )
    )
    assert stage in (C.NOT_FOUND, C.INVALID_ARGUMENT)
    assert (victim / "keep").read_text() == "data"


# -- DeleteVolume ----------------------------------------------------------------------------


def test_delete_unknown_volume_is_ok(stubs: Stubs) -> None:
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="fast/" + "ab" * 16))
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="nopool/" + "ab" * 16))


def test_delete_without_id_is_invalid_argument(stubs: Stubs) -> None:
    assert code_of(lambda: stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest())) == (
        C.INVALID_ARGUMENT
    )


def test_delete_removes_data_and_is_idempotent(stubs: Stubs, btrfs_fs: Path) -> None:
    volume = create(stubs, "gone")
    directory = btrfs_fs / "volumes" / volume.volume_context["sharevol.csi.io/directory"]
    assert directory.is_dir()
    for _ in range(2):
        stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert not directory.exists()
    assert (
        code_of(
            lambda: stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(volume_id=volume.volume_id))
        )
        == C.NOT_FOUND
    )


def test_delete_then_create_same_name_makes_a_new_volume(stubs: Stubs) -> None:
    first = create(stubs, "again")
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id))
    second = create(stubs, "again")
    assert second.volume_id != first.volume_id


def test_delete_retain_keeps_the_data(stubs: Stubs, btrfs_fs: Path) -> None:
    volume = create(stubs, "keep", onDelete="retain")
    directory = btrfs_fs / "volumes" / volume.volume_context["sharevol.csi.io/directory"]
    (directory / "f").write_text("precious")
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert (directory / "f").read_text() == "precious"
    listed = stubs.controller.ListVolumes(csi_pb2.ListVolumesRequest())
    assert volume.volume_id not in [e.volume.volume_id for e in listed.entries]


def test_delete_archive_moves_the_data_to_the_archive(stubs: Stubs, btrfs_fs: Path) -> None:
    volume = create(stubs, "old", onDelete="archive")
    directory = btrfs_fs / "volumes" / volume.volume_context["sharevol.csi.io/directory"]
    (directory / "f").write_text("history")
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert not directory.exists()
    archived = list((btrfs_fs / "archive").iterdir())
    assert len(archived) == 1
    assert (archived[0] / "f").read_text() == "history"


def test_delete_of_a_mounted_volume_is_failed_precondition_and_keeps_it(
    stubs: Stubs, tmp_path: Path
) -> None:
    volume = create(stubs, "busy")
    staging, target = tmp_path / "staging", tmp_path / "target"
    staging.mkdir()
    stubs.node.NodeStageVolume(
        csi_pb2.NodeStageVolumeRequest(
            volume_id=volume.volume_id,
            staging_target_path=str(staging),
            volume_capability=mount_cap(),
        )
    )
    try:
        delete = code_of(
            lambda: stubs.controller.DeleteVolume(
                csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id)
            )
        )
        assert delete == C.FAILED_PRECONDITION
        stubs.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=mount_cap(),
            )
        )
    finally:
        stubs.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target))
        )
        stubs.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(
                volume_id=volume.volume_id, staging_target_path=str(staging)
            )
        )
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))


# -- ValidateVolumeCapabilities ---------------------------------------------------------------


def test_validate_unknown_volume_is_not_found(stubs: Stubs) -> None:
    request = csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="fast/" + "cd" * 16, volume_capabilities=[mount_cap()]
    )
    assert code_of(lambda: stubs.controller.ValidateVolumeCapabilities(request)) == C.NOT_FOUND


def test_validate_without_capabilities_is_invalid_argument(stubs: Stubs) -> None:
    volume = create(stubs, "v")
    request = csi_pb2.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id)
    assert code_of(lambda: stubs.controller.ValidateVolumeCapabilities(request)) == (
        C.INVALID_ARGUMENT
    )


def test_validate_supported_capability_is_confirmed(stubs: Stubs) -> None:
    volume = create(stubs, "v", caps=[mount_cap(RWX)])
    response = stubs.controller.ValidateVolumeCapabilities(
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[mount_cap(RWX), mount_cap(ROX)]
        )
    )
    assert response.HasField("confirmed")
    assert len(response.confirmed.volume_capabilities) == 2


def test_validate_unsupported_capability_is_ok_without_confirmed(stubs: Stubs) -> None:
    volume = create(stubs, "v", caps=[mount_cap(RWO)])
    response = stubs.controller.ValidateVolumeCapabilities(
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[block_cap(RWO)]
        )
    )
    assert not response.HasField("confirmed")
    assert response.message


# -- ListVolumes, GetCapacity, capabilities ---------------------------------------------------


def test_list_volumes_pages_through_everything_once(stubs: Stubs) -> None:
    created = {
        create(stubs, f"v{i}", pool="plain" if i % 2 else "fast").volume_id for i in range(5)
    }
    seen: list[str] = []
    token = ""
    while True:
        page = stubs.controller.ListVolumes(
            csi_pb2.ListVolumesRequest(max_entries=2, starting_token=token)
        )
        assert len(page.entries) <= 2
        seen += [e.volume.volume_id for e in page.entries]
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(created)


def test_list_volumes_token_survives_deletion_of_last_entry(stubs: Stubs) -> None:
    for i in range(4):
        create(stubs, f"v{i}")
    page = stubs.controller.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2))
    last = page.entries[-1].volume.volume_id
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=last))
    rest = stubs.controller.ListVolumes(
        csi_pb2.ListVolumesRequest(max_entries=10, starting_token=page.next_token)
    )
    assert len(rest.entries) == 2


def test_list_volumes_bad_token_is_aborted(stubs: Stubs) -> None:
    request = csi_pb2.ListVolumesRequest(starting_token="not-a-token")
    assert code_of(lambda: stubs.controller.ListVolumes(request)) == C.ABORTED


def test_plain_pool_volumes_say_not_enforced(stubs: Stubs) -> None:
    volume = create(stubs, "p", pool="plain")
    assert volume.volume_context["sharevol.csi.io/quota"] == "not enforced"
    info = stubs.admin.GetVolume(admin_pb2.GetVolumeRequest(name="p")).volume
    assert not info.quota_enforced


def test_get_capacity_shrinks_by_what_was_provisioned(stubs: Stubs) -> None:
    before = stubs.controller.GetCapacity(csi_pb2.GetCapacityRequest()).available_capacity
    create(stubs, "c", 256 * MiB)
    after = stubs.controller.GetCapacity(csi_pb2.GetCapacityRequest()).available_capacity
    assert before - after == 256 * MiB


def test_get_capacity_unknown_pool_is_invalid_argument(stubs: Stubs) -> None:
    request = csi_pb2.GetCapacityRequest(parameters={"pool": "nope"})
    assert code_of(lambda: stubs.controller.GetCapacity(request)) == C.INVALID_ARGUMENT


def test_unoffered_rpcs_are_unimplemented(stubs: Stubs) -> None:
    assert (
        code_of(
            lambda: stubs.controller.ControllerPublishVolume(
                csi_pb2.ControllerPublishVolumeRequest()
            )
        )
        == C.UNIMPLEMENTED
    )


def test_identity_and_capabilities(stubs: Stubs) -> None:
    info = stubs.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "sharevol.csi.io" and info.vendor_version
    assert stubs.identity.Probe(csi_pb2.ProbeRequest()).ready.value
    plugin = stubs.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    services = [c.service.type for c in plugin.capabilities if c.HasField("service")]
    assert csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE in services
    controller = stubs.controller.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest()
    )
    rpcs = {c.rpc.type for c in controller.capabilities}
    RPC = csi_pb2.ControllerServiceCapability.RPC
    assert {RPC.CREATE_DELETE_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY} <= rpcs
