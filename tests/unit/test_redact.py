"""Secrets never reach logs: redacted() strips every csi_secret field and keeps the rest."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from sharevol.csi._proto import csi_pb2
from sharevol.csi.redact import REDACTED, redacted

PASSWORD = "hunter2-very-secret"
TOKEN = "tok-4f1d9a-also-secret"
SECRETS = {"password": PASSWORD, "token": TOKEN}


def capability() -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=5),  # type: ignore[arg-type]
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type="xfs", mount_flags=["noatime"]),
    )


def create_volume() -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name="pvc-1234",
        capacity_range=csi_pb2.CapacityRange(required_bytes=1073741824),
        volume_capabilities=[capability()],
        parameters={"pool": "fast", "onDelete": "retain"},
        secrets=SECRETS,
    )


def node_stage() -> csi_pb2.NodeStageVolumeRequest:
    return csi_pb2.NodeStageVolumeRequest(
        volume_id="fast/0123456789abcdef0123456789abcdef",
        staging_target_path="/var/lib/kubelet/staging/pv-1",
        volume_capability=capability(),
        secrets=SECRETS,
        volume_context={"sharevol.csi.io/pool": "fast"},
    )


def node_publish() -> csi_pb2.NodePublishVolumeRequest:
    return csi_pb2.NodePublishVolumeRequest(
        volume_id="fast/0123456789abcdef0123456789abcdef",
        staging_target_path="/var/lib/kubelet/staging/pv-1",
        target_path="/var/lib/kubelet/pods/p/volumes/pv-1/mount",
        volume_capability=capability(),
        readonly=True,
        secrets=SECRETS,
        volume_context={"sharevol.csi.io/directory": "team-a-data"},
    )


def create_snapshot() -> csi_pb2.CreateSnapshotRequest:
    return csi_pb2.CreateSnapshotRequest(
        source_volume_id="fast/0123456789abcdef0123456789abcdef",
        name="snap-1",
        secrets=SECRETS,
        parameters={"class": "gold"},
    )


CASES = {
    "CreateVolume": (create_volume, ["pvc-1234", "1073741824", "fast", "retain", "xfs", "noatime"]),
    "NodeStageVolume": (
        node_stage,
        ["fast/0123456789abcdef0123456789abcdef", "/var/lib/kubelet/staging/pv-1", "xfs"],
    ),
    "NodePublishVolume": (
        node_publish,
        ["/var/lib/kubelet/pods/p/volumes/pv-1/mount", "readonly: true", "team-a-data"],
    ),
    "CreateSnapshot": (create_snapshot, ["snap-1", "gold", "0123456789abcdef"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_secret_values_are_replaced(case: str) -> None:
    build, _ = CASES[case]

    text = redacted(build())

    assert PASSWORD not in text
    assert TOKEN not in text
    assert not any(key in text for key in SECRETS)  # the whole map goes, keys too
    assert f'secrets {{ key: "{REDACTED}" value: "{REDACTED}" }}' in text


@pytest.mark.parametrize("case", list(CASES))
def test_other_fields_stay_in_the_output(case: str) -> None:
    build, visible = CASES[case]

    text = redacted(build())

    for value in visible:
        assert value in text


@pytest.mark.parametrize("case", list(CASES))
def test_the_original_message_is_untouched(case: str) -> None:
    build, _ = CASES[case]
    message: Message = build()
    before = message.SerializeToString(deterministic=True)

    redacted(message)

    assert message.SerializeToString(deterministic=True) == before
    assert dict(message.secrets) == SECRETS  # type: ignore[attr-defined]


def test_the_output_is_one_line() -> None:
    assert "\n" not in redacted(create_volume())


def test_a_message_without_secrets_is_printed_whole() -> None:
    request = csi_pb2.DeleteVolumeRequest(volume_id="fast/0123456789abcdef0123456789abcdef")

    assert redacted(request) == 'volume_id: "fast/0123456789abcdef0123456789abcdef"'


def test_an_empty_secrets_map_prints_nothing_for_it() -> None:
    request = csi_pb2.CreateVolumeRequest(name="pvc-1")

    assert redacted(request) == 'name: "pvc-1"'
