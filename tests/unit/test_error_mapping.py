"""The interceptor over a real in-process gRPC server: every domain error reaches the client as
its CSI code and message, with empty status details; per-key locks answer ABORTED at once."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sharevol import errors
from sharevol.csi._proto import csi_pb2, csi_pb2_grpc
from sharevol.csi.interceptor import ErrorMappingInterceptor
from sharevol.csi.locking import LOCK_KEYS, KeyLocks

CREATE = "/csi.v1.Controller/CreateVolume"
WAIT = 10.0
"""Upper bound for waiting on a condition; never slept, only a timeout for Event.wait."""

EXPECTED: dict[type[errors.SharevolError], grpc.StatusCode] = {
    errors.SharevolError: grpc.StatusCode.INTERNAL,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
    errors.CommandFailed: grpc.StatusCode.INTERNAL,
}
"""Written out by hand (not read from the interceptor's table) so a wrong mapping fails here."""


def make_error(name: str) -> errors.SharevolError:
    """An instance of the sharevol.errors class called `name`, with a recognisable message."""
    cls = getattr(errors, name)
    if cls is errors.CommandFailed:
        return errors.CommandFailed(["mkfs.btrfs", "-f"], 1, "some output\nERROR: disk is busy\n")
    error: errors.SharevolError = cls(f"{name} happened: do the thing")
    return error


@dataclass
class Behaviour:
    """What the test servicer's CreateVolume does, chosen by the request's name."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0


class RaisingController(csi_pb2_grpc.ControllerServicer):
    """CreateVolume does what its `name` says: `raise:<ErrorClass>`, `boom`, `notimpl`,
    `block...` (hold the lock key until released), anything else succeeds."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        self.behaviour.calls += 1
        name = request.name
        if name.startswith("raise:"):
            raise make_error(name.removeprefix("raise:"))
        if name == "boom":
            raise RuntimeError("boom: something nobody expected")
        if name == "notimpl":
            raise NotImplementedError("not yet")
        if name.startswith("block"):
            self.behaviour.entered.set()
            if not self.behaviour.release.wait(WAIT):
                raise RuntimeError("test never released the blocked call")
        return csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(volume_id=f"pool/{name}"))


@dataclass
class Served:
    stub: csi_pb2_grpc.ControllerStub
    locks: KeyLocks
    behaviour: Behaviour
    observed: list[tuple[str, grpc.StatusCode, float]]


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real grpc server on a unix socket (short tmp path: sun_path is 108 bytes)."""
    socket = Path(tmp_path_factory.mktemp("grpc")) / "csi.sock"
    locks = KeyLocks()
    observed: list[tuple[str, grpc.StatusCode, float]] = []
    behaviour = Behaviour()

    def observe(method: str, code: grpc.StatusCode, seconds: float) -> None:
        observed.append((method, code, seconds))

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[ErrorMappingInterceptor(locks, [observe])],
    )
    # The stubs declare every method abstract; the ones not overridden are meant to stay the
    # generated UNIMPLEMENTED ones.
    servicer = RaisingController(behaviour)  # type: ignore[abstract]
    csi_pb2_grpc.add_ControllerServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield Served(csi_pb2_grpc.ControllerStub(channel), locks, behaviour, observed)
    finally:
        behaviour.release.set()
        channel.close()
        server.stop(None).wait()


def create(served: Served, name: str) -> csi_pb2.CreateVolumeResponse:
    response: csi_pb2.CreateVolumeResponse = served.stub.CreateVolume(
        csi_pb2.CreateVolumeRequest(name=name), timeout=WAIT
    )
    return response


def rpc_error(served: Served, name: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        create(served, name)
    return caught.value


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str | None]:
    return error.code(), error.details()


def test_the_table_covers_every_class_of_the_errors_module() -> None:
    classes = {
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, errors.SharevolError)
    }

    assert classes == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda cls: cls.__name__)
def test_each_domain_error_reaches_the_client_as_its_code_with_its_message(
    served: Served, cls: type[errors.SharevolError]
) -> None:
    error = rpc_error(served, f"raise:{cls.__name__}")

    assert status_of(error) == (EXPECTED[cls], str(make_error(cls.__name__)))


def test_command_failed_message_names_the_command_and_its_last_error_line(
    served: Served,
) -> None:
    error = rpc_error(served, "raise:CommandFailed")

    assert status_of(error) == (
        grpc.StatusCode.INTERNAL,
        "mkfs.btrfs exited 1: ERROR: disk is busy",
    )


def test_an_unexpected_exception_is_internal_with_its_message(served: Served) -> None:
    error = rpc_error(served, "boom")

    assert status_of(error) == (
        grpc.StatusCode.INTERNAL,
        "internal error: boom: something nobody expected",
    )


def test_not_implemented_error_is_unimplemented(served: Served) -> None:
    error = rpc_error(served, "notimpl")

    assert status_of(error) == (grpc.StatusCode.UNIMPLEMENTED, f"{CREATE} is not implemented")


def test_a_method_the_servicer_does_not_override_is_unimplemented(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest(), timeout=WAIT
        )

    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("name", ["raise:NotFound", "raise:Internal", "boom", "notimpl"])
def test_error_statuses_carry_no_details(served: Served, name: str) -> None:
    error = rpc_error(served, name)

    keys = {item.key for item in error.trailing_metadata() or ()}
    assert "grpc-status-details-bin" not in keys


def test_a_successful_call_passes_the_response_through(served: Served) -> None:
    assert create(served, "fine").volume.volume_id == "pool/fine"


def test_observers_see_every_call_with_its_code(served: Served) -> None:
    create(served, "fine")
    rpc_error(served, "raise:OutOfRange")

    assert [(method, code) for method, code, _ in served.observed] == [
        (CREATE, grpc.StatusCode.OK),
        (CREATE, grpc.StatusCode.OUT_OF_RANGE),
    ]
    assert all(seconds >= 0 for _, _, seconds in served.observed)


def test_a_second_call_on_a_held_key_is_aborted_at_once(served: Served) -> None:
    pool = futures.ThreadPoolExecutor(max_workers=1)
    try:
        first = pool.submit(create, served, "block-a")
        assert served.behaviour.entered.wait(WAIT), "the first call never reached the servicer"

        error = rpc_error(served, "block-a")

        assert error.code() is grpc.StatusCode.ABORTED
        assert "name:block-a" in (error.details() or "")
        assert "already in progress" in (error.details() or "")
        assert served.locks.aborted_total == 1
        assert served.behaviour.calls == 1, "the aborted call must not reach the servicer"
        assert not first.done()
    finally:
        served.behaviour.release.set()
        response = first.result(timeout=WAIT)
        pool.shutdown()
    assert response.volume.volume_id == "pool/block-a"


def test_other_keys_go_through_while_one_is_held(served: Served) -> None:
    pool = futures.ThreadPoolExecutor(max_workers=1)
    try:
        first = pool.submit(create, served, "block-a")
        assert served.behaviour.entered.wait(WAIT)

        assert create(served, "other").volume.volume_id == "pool/other"
        assert served.locks.aborted_total == 0
    finally:
        served.behaviour.release.set()
        first.result(timeout=WAIT)
        pool.shutdown()


def test_the_key_is_free_again_after_a_call_completes(served: Served) -> None:
    served.behaviour.release.set()  # "block" calls return at once
    create(served, "block-a")

    assert create(served, "block-a").volume.volume_id == "pool/block-a"
    assert served.locks.aborted_total == 0


@pytest.mark.parametrize("name", ["raise:Internal", "raise:AlreadyExists", "boom", "notimpl"])
def test_keys_are_released_after_errors(served: Served, name: str) -> None:
    first = rpc_error(served, name)
    second = rpc_error(served, name)

    assert second.code() is first.code() is not grpc.StatusCode.ABORTED
    assert served.locks.aborted_total == 0


def test_hold_takes_no_key_when_any_key_is_busy() -> None:
    locks = KeyLocks()
    with locks.hold(["volume:a"]):
        refused = locks.hold(["snapshot-name:s", "volume:a"])
        with pytest.raises(errors.Aborted, match="volume:a"), refused:
            pass
        # the free key of the refused attempt was not left held
        with locks.hold(["snapshot-name:s"]):
            pass
    assert locks.aborted_total == 1


def test_hold_releases_its_keys_when_the_body_raises() -> None:
    locks = KeyLocks()
    with pytest.raises(ValueError, match="inside"), locks.hold(["k1", "k2"]):
        raise ValueError("inside")

    with locks.hold(["k1", "k2"]):
        pass
    assert locks.aborted_total == 0


def test_volume_operations_share_the_volume_key() -> None:
    volume_id = "pool/" + "a" * 32
    delete = LOCK_KEYS["/csi.v1.Controller/DeleteVolume"](
        csi_pb2.DeleteVolumeRequest(volume_id=volume_id)
    )
    expand = LOCK_KEYS["/csi.v1.Controller/ControllerExpandVolume"](
        csi_pb2.ControllerExpandVolumeRequest(volume_id=volume_id)
    )
    snapshot = LOCK_KEYS["/csi.v1.Controller/CreateSnapshot"](
        csi_pb2.CreateSnapshotRequest(name="snap", source_volume_id=volume_id)
    )

    assert set(delete) & set(expand) & set(snapshot) == {f"volume:{volume_id}"}


def test_a_restore_or_clone_holds_its_source_key() -> None:
    """CreateVolume from a snapshot or a volume excludes DeleteSnapshot / DeleteVolume of it."""
    snapshot_id, volume_id = "pool/" + "b" * 32, "pool/" + "c" * 32
    restore = csi_pb2.CreateVolumeRequest(name="r")
    restore.volume_content_source.snapshot.snapshot_id = snapshot_id
    clone = csi_pb2.CreateVolumeRequest(name="c")
    clone.volume_content_source.volume.volume_id = volume_id
    create = LOCK_KEYS["/csi.v1.Controller/CreateVolume"]

    assert create(restore) == ["name:r", f"snapshot:{snapshot_id}"]
    assert create(clone) == ["name:c", f"volume:{volume_id}"]
    assert create(csi_pb2.CreateVolumeRequest(name="plain")) == ["name:plain"]
    delete_snapshot = LOCK_KEYS["/csi.v1.Controller/DeleteSnapshot"](
        csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id)
    )
    delete_volume = LOCK_KEYS["/csi.v1.Controller/DeleteVolume"](
        csi_pb2.DeleteVolumeRequest(volume_id=volume_id)
    )
    assert set(create(restore)) & set(delete_snapshot) == {f"snapshot:{snapshot_id}"}
    assert set(create(clone)) & set(delete_volume) == {f"volume:{volume_id}"}


def test_publish_holds_the_stage_key_so_unstage_cannot_run_underneath() -> None:
    """An unstage between publish's check of the staging mount and its bind would leave the
    target bound to an empty staging directory."""
    publish_keys = LOCK_KEYS["/csi.v1.Node/NodePublishVolume"](
        csi_pb2.NodePublishVolumeRequest(volume_id="fast/" + "a" * 32)
    )
    unstage_keys = LOCK_KEYS["/csi.v1.Node/NodeUnstageVolume"](
        csi_pb2.NodeUnstageVolumeRequest(volume_id="fast/" + "a" * 32)
    )
    locks = KeyLocks()
    with locks.hold(publish_keys), pytest.raises(errors.Aborted), locks.hold(unstage_keys):
        pass
