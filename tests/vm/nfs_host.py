"""The host half of the VM tier's NFS tests: a real sharevol server with its managed NFS server
(Ganesha on 127.0.0.1) over a loop-mounted btrfs pool, started before the VM boots and stopped
after it. The guest reaches Ganesha at 10.0.2.100:2049 (qemu guestfwd to 127.0.0.1:<port>).

Before the boot it makes what the guest tests use and hands it over in one environment
variable, `SHAREVOL_VM_NFS` (JSON):

- `quota`: a 16 MiB volume owned by uid/gid 1000 (mode 0770, root squashed), with the volume
  context CreateVolume answered, its address rewritten to what the guest dials (10.0.2.100,
  port 2049): the guest's node plugin stages it through the kernel client;
- `share`: a 256 MiB volume without root squash that plays an existing NAS share: the guest
  runs an NFS share pool on it, and mounts its `static/pv1` (made here, holding `hello.txt`)
  as a static PV.

Where this cannot run (not root, no Ganesha), `SHAREVOL_VM_NFS_UNAVAILABLE` says why instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sharevol.csi._proto import csi_pb2
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from tests.integration.conftest import destroy_btrfs, make_btrfs
from tests.support.csi import RWX, MiB, Stubs, mount_cap, running_server
from tests.support.nfs import free_port
from tests.vm.runner import NFS_PORT

ENV_SPEC = "SHAREVOL_VM_NFS"
ENV_UNAVAILABLE = "SHAREVOL_VM_NFS_UNAVAILABLE"
GUEST_SERVER = "10.0.2.100"
GUEST_PORT = 2049
"""What the guest dials; qemu forwards it to the host's Ganesha."""
STATIC_SUBDIR = "static/pv1"
STATIC_FILE = "hello.txt"
STATIC_TEXT = "written on the NFS server before the VM booted\n"
TOOLS = ("ganesha.nfsd", "dbus-daemon", "mkfs.btrfs", "btrfs", "losetup")


@dataclass
class HostNfs:
    """Where guest NFS traffic goes, and what to tell the guest tests."""

    port: int = NFS_PORT
    env: dict[str, str] = field(default_factory=dict)


def unavailable() -> str | None:
    """Why the host cannot serve NFS to the VM (the guest tests' skip reason), or None."""
    if os.geteuid() != 0:
        return f"the host NFS server for the VM needs root, not uid {os.geteuid()}"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the host NFS server for the VM needs {', '.join(missing)} (scripts/bootstrap)"
    return None


@contextlib.contextmanager
def host_nfs(workdir: Path) -> Iterator[HostNfs]:
    """Serve NFS for one VM run from `workdir` (made here); everything is undone after."""
    reason = unavailable()
    if reason is not None:
        yield HostNfs(env={ENV_UNAVAILABLE: reason})
        return
    workdir.mkdir(parents=True, exist_ok=True)
    mount_point, loop = make_btrfs(workdir)
    try:
        port = free_port()
        config = ServerConfig(
            pools=(PoolConfig(name="fast", path=mount_point, kind="btrfs"),),
            nfs=NfsConfig(bind="127.0.0.1", port=port, clients=("127.0.0.1",)),
        )
        # Guest connections reach Ganesha from 127.0.0.1 (each through a `busybox nc`).
        with running_server(config, workdir / "state", node_id="host@127.0.0.1") as (_, stubs):
            spec = {"quota": _quota_volume(stubs), "share": _share_volume(stubs, mount_point)}
            yield HostNfs(port, {ENV_SPEC: json.dumps(spec)})
    finally:
        destroy_btrfs(mount_point, loop)


def _create(stubs: Stubs, name: str, size: int, **parameters: str) -> csi_pb2.Volume:
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=size),
        volume_capabilities=[mount_cap(RWX)],
        parameters=parameters,
    )
    return stubs.controller.CreateVolume(request).volume


def _quota_volume(stubs: Stubs) -> dict[str, object]:
    volume = _create(stubs, "vm-quota", 16 * MiB, uid="1000", gid="1000", mode="0770")
    return {
        "volume_id": volume.volume_id,
        "capacity_bytes": volume.capacity_bytes,
        "context": guest_context(dict(volume.volume_context)),
    }


def _share_volume(stubs: Stubs, pool_root: Path) -> dict[str, object]:
    volume = _create(stubs, "vm-share", 256 * MiB, rootSquash="false")
    context = dict(volume.volume_context)
    folder = pool_root / "volumes" / context["sharevol.csi.io/directory"]
    static = folder / STATIC_SUBDIR
    static.mkdir(parents=True)
    (static / STATIC_FILE).write_text(STATIC_TEXT)
    return {
        "server": GUEST_SERVER,
        "share": context["sharevol.csi.io/nfs-export"],
        "static_subdir": STATIC_SUBDIR,
        "static_file": STATIC_FILE,
        "static_text": STATIC_TEXT,
    }


def guest_context(context: dict[str, str]) -> dict[str, str]:
    """The volume context as the guest must dial it: qemu's 10.0.2.100:2049 stands for the
    host's 127.0.0.1:<port> (a NAT between the host and its guest, nothing else changes)."""
    options = [
        f"port={GUEST_PORT}" if option.startswith("port=") else option
        for option in context["sharevol.csi.io/nfs-mount-options"].split(",")
    ]
    return {
        **context,
        "sharevol.csi.io/nfs-server": GUEST_SERVER,
        "sharevol.csi.io/nfs-port": str(GUEST_PORT),
        "sharevol.csi.io/nfs-mount-options": ",".join(options),
    }
