"""A real gRPC server on a unix socket with small fake servicers, for the CLI's unit tests.

The fakes record every request and answer from canned data, so a test can assert exactly what
a command sent. Node publications are tracked so that `mount` and `unmount` see what a real
node would report through Admin.ListPublications.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from click.testing import CliRunner, Result
from google.protobuf.message import Message

from sharevol.cli.volume_cmd import volume
from sharevol.csi._proto import admin_pb2, admin_pb2_grpc, csi_pb2, csi_pb2_grpc


@dataclass
class Calls:
    """What the fakes received, what they answer, and the failures a test injected."""

    requests: list[tuple[str, Message]] = field(default_factory=list)
    failures: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    volumes: list[admin_pb2.VolumeInfo] = field(default_factory=list)
    publications: list[admin_pb2.Publication] = field(default_factory=list)
    created: csi_pb2.Volume = field(default_factory=csi_pb2.Volume)
    hang: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)

    def of(self, method: str) -> list[Message]:
        """The requests one RPC received, in order."""
        return [request for name, request in self.requests if name == method]

    def methods(self) -> list[str]:
        return [name for name, _ in self.requests]

    def fail(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.failures[method] = (code, details)

    def enter(self, method: str, request: Message, context: grpc.ServicerContext) -> None:
        """Record the request, then hang or abort if the test asked for it."""
        self.requests.append((method, request))
        if method in self.hang:
            self.release.wait(timeout=30)
        if method in self.failures:
            code, details = self.failures[method]
            context.abort(code, details)


class FakeController(csi_pb2_grpc.ControllerServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        self.calls.enter("CreateVolume", request, context)
        return csi_pb2.CreateVolumeResponse(volume=self.calls.created)

    def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteVolumeResponse:
        self.calls.enter("DeleteVolume", request, context)
        return csi_pb2.DeleteVolumeResponse()


class FakeNode(csi_pb2_grpc.NodeServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeStageVolumeResponse:
        self.calls.enter("NodeStageVolume", request, context)
        return csi_pb2.NodeStageVolumeResponse()

    def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        self.calls.enter("NodeUnstageVolume", request, context)
        return csi_pb2.NodeUnstageVolumeResponse()

    def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        self.calls.enter("NodePublishVolume", request, context)
        self.calls.publications.append(
            admin_pb2.Publication(
                volume_id=request.volume_id,
                target_path=request.target_path,
                staging_path=request.staging_target_path,
                readonly=request.readonly,
            )
        )
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        self.calls.enter("NodeUnpublishVolume", request, context)
        self.calls.publications[:] = [
            p for p in self.calls.publications if p.target_path != request.target_path
        ]
        return csi_pb2.NodeUnpublishVolumeResponse()


class FakeAdmin(admin_pb2_grpc.AdminServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def ListVolumes(
        self, request: admin_pb2.ListVolumesRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListVolumesResponse:
        self.calls.enter("ListVolumes", request, context)
        return admin_pb2.ListVolumesResponse(volumes=self.calls.volumes)

    def GetVolume(
        self, request: admin_pb2.GetVolumeRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetVolumeResponse:
        self.calls.enter("GetVolume", request, context)
        for info in self.calls.volumes:
            if (request.name and info.name == request.name) or (
                request.volume_id and info.volume_id == request.volume_id
            ):
                return admin_pb2.GetVolumeResponse(volume=info)
        context.abort(grpc.StatusCode.NOT_FOUND, f'volume "{request.name}" not found')

    def ListPools(
        self, request: admin_pb2.ListPoolsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListPoolsResponse:
        self.calls.enter("ListPools", request, context)
        return admin_pb2.ListPoolsResponse()

    def ListPublications(
        self, request: admin_pb2.ListPublicationsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListPublicationsResponse:
        self.calls.enter("ListPublications", request, context)
        return admin_pb2.ListPublicationsResponse(publications=self.calls.publications)


@dataclass
class FakeServer:
    """A running server: its socket, what it recorded, and a way to drive the CLI at it."""

    directory: Path
    socket: Path
    calls: Calls

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def run(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        """Invoke `sharevol volume --endpoint <this server> ARGS`."""
        return run_cli(["--endpoint", self.endpoint, *args], env=env)


def run_cli(args: Sequence[str], env: dict[str, str | None] | None = None) -> Result:
    """Run the `volume` group; a crash (anything but a clean exit) fails the test here."""
    result = CliRunner().invoke(volume, list(args), env={"SHAREVOL_ENDPOINT": None, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the command crashed: {result.exception!r}") from result.exception
    return result


@contextmanager
def running_server(socket_name: str = "csi.sock") -> Iterator[FakeServer]:
    """Serve the fakes on `<short temp dir>/<socket_name>`.

    Unix socket paths are limited to 107 bytes, so pytest's long tmp_path names are avoided.
    """
    with tempfile.TemporaryDirectory(prefix="svcli-", dir="/tmp") as temp:
        base = Path(temp)
        socket = base / socket_name
        socket.parent.mkdir(parents=True, exist_ok=True)
        calls = Calls()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        # The generated servicer bases are abstract in the stubs; the fakes implement only
        # what the CLI calls, and gRPC answers UNIMPLEMENTED for the rest.
        csi_pb2_grpc.add_ControllerServicer_to_server(FakeController(calls), server)  # type: ignore[abstract]
        csi_pb2_grpc.add_NodeServicer_to_server(FakeNode(calls), server)  # type: ignore[abstract]
        admin_pb2_grpc.add_AdminServicer_to_server(FakeAdmin(calls), server)  # type: ignore[abstract]
        server.add_insecure_port(f"unix://{socket}")
        server.start()
        try:
            yield FakeServer(directory=base, socket=socket, calls=calls)
        finally:
            calls.release.set()
            server.stop(grace=None).wait(timeout=10)


def volume_info(
    name: str = "data",
    volume_id: str = "default/0123456789abcdef",
    **fields: object,
) -> admin_pb2.VolumeInfo:
    """A ready, enforced 1Gi RWO volume unless a test says otherwise."""
    values: dict[str, object] = {
        "volume_id": volume_id,
        "name": name,
        "pool": "default",
        "capacity_bytes": 1 << 30,
        "used_bytes": 0,
        "quota_enforced": True,
        "access_modes": ["SINGLE_NODE_MULTI_WRITER"],
        "access_type": "mount",
        "on_delete": "delete",
        "state": "ready",
        "path": f"/pool/{name}",
    }
    values.update(fields)
    return admin_pb2.VolumeInfo(**values)  # type: ignore[arg-type]


def only_request(server: FakeServer, method: str) -> Message:
    requests = server.calls.of(method)
    assert len(requests) == 1, f"{method} was called {len(requests)} times"
    return requests[0]


def key_values(stdout: str) -> dict[str, str]:
    """`get`/`stats` output as a dict: keys and values are three or more spaces apart."""
    pairs = [re.split(r"\s{3,}", line, maxsplit=1) for line in stdout.splitlines()]
    assert all(len(pair) == 2 for pair in pairs), stdout
    return {key: value for key, value in pairs}


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
