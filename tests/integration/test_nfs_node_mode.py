"""The node plugin over gRPC with the real runner: `serve --mode node` starts without the
controller's pools, and an NFS mount to a server that does not answer fails within the
configured timeout and leaves no process behind.

This host has no kernel NFS client (a real `mount -t nfs4` fails at once), so a fake `mount`
on PATH plays the hung mount: it and a child of it sleep until killed. The kernel-client tests
are in the VM tier (tests/vm/test_nfs_node.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sharevol.csi._proto import csi_pb2
from sharevol.csi.server import CsiServer, build_server
from sharevol.errors import FailedPrecondition
from sharevol.pools.config import PoolConfig, ServerConfig
from tests.support.csi import RWO, Stubs, mount_cap, stubs_for

pytestmark = pytest.mark.root

MOUNT_TIMEOUT = 2.0
STATIC_ID = "static-nfs-192.0.2.1-data-k8s-pv1"
STATIC = {"server": "192.0.2.1", "share": "/data/k8s", "subdir": "pv1"}
"""192.0.2.0/24 is TEST-NET-1: nothing answers there."""

_HANGING_MOUNT = """#!/bin/sh
# A mount(8) that hangs like a mount of an NFS server that does not answer: it and a child it
# started sleep until they are killed. Their pids go to the file the test checks.
echo $$ >> '{pids}'
sleep 300 &
echo $! >> '{pids}'
wait
"""


def _config(tmp_path: Path) -> ServerConfig:
    """The controller's pool, which is not on this node (its path does not exist here)."""
    return ServerConfig(pools=(PoolConfig(name="fast", path=tmp_path / "absent", kind="btrfs"),))


@pytest.fixture
def hanging_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the hanging `mount` first on PATH; returns the file its pids are written to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "mount.pids"
    script = bin_dir / "mount"
    script.write_text(_HANGING_MOUNT.format(pids=pids))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return pids


@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[tuple[CsiServer, Stubs]]:
    socket = tmp_path / "csi.sock"
    server = build_server(
        _config(tmp_path),
        endpoint=f"unix://{socket}",
        node_id="node-1@192.0.2.7",
        mode="node",
        state_dir=tmp_path / "state",
        mount_timeout=MOUNT_TIMEOUT,
    )
    server.start()
    try:
        with stubs_for(socket) as stubs:
            yield server, stubs
    finally:
        server.stop(grace=1.0)


def test_node_mode_starts_without_the_controllers_pools(
    node_server: tuple[CsiServer, Stubs],
) -> None:
    server, stubs = node_server
    assert server.provisioner is None and server.publisher is not None
    capabilities = stubs.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    assert capabilities.capabilities


def test_controller_mode_still_refuses_a_missing_pool(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition):
        build_server(
            _config(tmp_path),
            endpoint=f"unix://{tmp_path / 'csi.sock'}",
            node_id="controller",
            mode="controller",
            state_dir=tmp_path / "state",
        )


def test_hung_nfs_mount_fails_within_the_timeout_and_leaves_no_process(
    node_server: tuple[CsiServer, Stubs], hanging_mount: Path, tmp_path: Path
) -> None:
    _, stubs = node_server
    staging = tmp_path / "staging"
    staging.mkdir()
    request = csi_pb2.NodeStageVolumeRequest(
        volume_id=STATIC_ID,
        staging_target_path=str(staging),
        volume_capability=mount_cap(RWO),
        volume_context=STATIC,
    )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failure:
        stubs.node.NodeStageVolume(request, timeout=60)
    elapsed = time.monotonic() - started
    error: grpc.Call = failure.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INTERNAL
    assert f"did not finish within {MOUNT_TIMEOUT:g}s and was killed" in str(error.details())
    assert MOUNT_TIMEOUT <= elapsed < MOUNT_TIMEOUT + 3, elapsed
    pids = [int(line) for line in hanging_mount.read_text().split()]
    assert len(pids) == 2, "the fake mount did not run"
    _wait_gone(pids, deadline=5.0)
    assert not os.path.ismount(staging)
    stubs.node.NodeUnstageVolume(  # nothing was staged: OK, and no record is left to trip on
        csi_pb2.NodeUnstageVolumeRequest(volume_id=STATIC_ID, staging_target_path=str(staging))
    )
    assert not list((tmp_path / "state" / "node" / "nfs-staged").glob("*.json"))


def _wait_gone(pids: list[int], deadline: float) -> None:
    """Wait until no pid is a live process (gone, or a zombie waiting for init to reap it)."""
    end = time.monotonic() + deadline
    alive = pids
    while alive and time.monotonic() < end:
        alive = [pid for pid in alive if _alive(pid)]
        if alive:
            time.sleep(0.05)  # a killed process's exit has no event to wait on from here
    assert not alive, f"processes of the hung mount are still running: {alive}"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
