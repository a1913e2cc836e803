"""Provisioning benchmark: CreateVolume/DeleteVolume over real gRPC against the floor.

The floor is the same btrfs work (subvolume create, id lookup, qgroup limit; then destroy) done
directly with `sharevol.sys.btrfs`, no gRPC and no catalog, on the same filesystem in the same
run: end-to-end/floor is what sharevol adds to the kernel's work (gRPC, the service, and the
catalog's durable writes), and the reference rows split that up. See docs/benchmarks.md.

Run as root:  .venv/bin/python bench/provision.py [-n 1000] [--clients 16] [--json] [--check]
It makes a sparse btrfs image on a loop device with quotas on, serves sharevol in-process on a
unix socket, and removes everything at the end (also on Ctrl-C, SIGTERM or failure).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from _figures import Phase, context, cycle_rate, print_report, timed, timed_concurrently, verdicts
from _loopfs import btrfs_image, settle
from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.csi._proto import csi_pb2, csi_pb2_grpc
from sharevol.csi.server import build_server
from sharevol.pools.base import VOLUMES_DIR
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys import btrfs

MiB = 1024 * 1024
VOLUME_BYTES = 64 * MiB
IMAGE_BYTES = 1024**4
"""1 TiB sparse: a few MiB of real disk, and room for 16,000 volumes of 64 MiB without any
overcommit (the pool refuses to promise more than the filesystem size)."""
RPC_TIMEOUT = 60.0
WARMUP = 5
FLOOR_ROUNDS = 3


# -- checks -------------------------------------------------------------------------------------


def check_volumes(volumes: Path, fs_root: Path, expected: int) -> None:
    """Sanity: `expected` subvolumes under `volumes`, the first one limited to VOLUME_BYTES."""
    names = sorted(os.listdir(volumes))
    if len(names) != expected:
        raise RuntimeError(f"{volumes} holds {len(names)} entries, expected {expected}")
    if names:
        group = btrfs.qgroup(fs_root, btrfs.subvolume_id(volumes / names[0]))
        if group is None or group.max_referenced != VOLUME_BYTES:
            raise RuntimeError(f"{volumes / names[0]} has qgroup {group}, expected a 64 MiB limit")


# -- the floor: sys.btrfs only ------------------------------------------------------------------


def floor_create(parent: Path, fs_root: Path, name: str) -> None:
    """What BtrfsPool.create_volume does in the kernel: create, look up the id, set the limit."""
    btrfs.create_subvolume(parent, name)
    subvolume_id = btrfs.subvolume_id(parent / name)
    btrfs.set_referenced_limit(fs_root, subvolume_id, VOLUME_BYTES)


def run_floor(mount_point: Path, n: int) -> tuple[Phase, Phase]:
    """Create then destroy `n` limited subvolumes, sequentially, timing each call; the best of
    FLOOR_ROUNDS rounds (it takes a tenth of a second, and one stall elsewhere on the machine
    would otherwise halve it; the best round is also the strictest floor to compare against)."""
    parent = mount_point / "floor"
    parent.mkdir()
    for i in range(WARMUP):
        floor_create(parent, mount_point, f"warm-{i}")
        btrfs.destroy_subvolume(parent, f"warm-{i}")
    rounds: list[tuple[Phase, Phase]] = []
    for round_ in range(FLOOR_ROUNDS):
        names = [f"floor-{round_}-{i}" for i in range(n)]
        create = timed("floor create", 1, [partial(floor_create, parent, mount_point, name)
                                           for name in names])  # fmt: skip
        check_volumes(parent, mount_point, n)
        delete = timed("floor delete", 1, [partial(btrfs.destroy_subvolume, parent, name)
                                           for name in names])  # fmt: skip
        check_volumes(parent, mount_point, 0)
        settle(mount_point)
        rounds.append((create, delete))
    parent.rmdir()
    return max(rounds, key=lambda pair: cycle_rate(*pair))


def record(i: int) -> VolumeRecord:
    """A volume record the size of the server's own (same fields filled in)."""
    return VolumeRecord(
        volume_id=f"bench/{uuid.uuid4().hex}", name=f"ref-{i}", pool="bench",
        uuid=uuid.uuid4().hex, directory=f"ref-{i}", capacity_bytes=VOLUME_BYTES,
        capabilities=(Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER),),
        quota_enforced=True,
    )  # fmt: skip


def run_catalog_reference(mount_point: Path, n: int) -> list[Phase]:
    """What durability costs alone, on the same filesystem with the server's own Catalog:
    one record write; and the floor plus exactly the catalog writes a create (reservation,
    ready) and a delete (deleting mark, removal) make, with no gRPC and no service layer."""
    catalog = Catalog(mount_point / "reference")
    catalog.ensure()
    records = [record(i) for i in range(n)]
    write = timed("ref catalog write", 1, [partial(catalog.put_volume, r) for r in records])
    for each in records:
        catalog.remove_volume(each.uuid)
    parent = mount_point / "durable"
    parent.mkdir()

    def create(each: VolumeRecord) -> None:
        catalog.put_volume(each)
        floor_create(parent, mount_point, each.directory)
        catalog.put_volume(each.model_copy(update={"state": "ready"}))

    def delete(each: VolumeRecord) -> None:
        catalog.put_volume(each.model_copy(update={"state": "deleting"}))
        btrfs.destroy_subvolume(parent, each.directory)
        catalog.remove_volume(each.uuid)

    created = timed("ref durable create", 1, [partial(create, r) for r in records])
    deleted = timed("ref durable delete", 1, [partial(delete, r) for r in records])
    parent.rmdir()
    return [write, created, deleted]


# -- end to end: a real server over gRPC --------------------------------------------------------


def create_request(name: str) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=VOLUME_BYTES),
        volume_capabilities=[
            csi_pb2.VolumeCapability(
                access_mode=csi_pb2.VolumeCapability.AccessMode(
                    mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
                ),
                mount=csi_pb2.VolumeCapability.MountVolume(),
            )
        ],
    )


class Client:
    """One CSI client with its own channel to the server's unix socket (as a sidecar has)."""

    def __init__(self, socket: Path) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.volume_ids: dict[str, str] = {}

    def probe(self) -> None:
        self.identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)

    def create(self, name: str) -> None:
        response = self.controller.CreateVolume(create_request(name), timeout=RPC_TIMEOUT)
        self.volume_ids[name] = response.volume.volume_id

    def delete(self, name: str) -> None:
        request = csi_pb2.DeleteVolumeRequest(volume_id=self.volume_ids.pop(name))
        self.controller.DeleteVolume(request, timeout=RPC_TIMEOUT)


def run_grpc(socket: Path, volumes: Path, fs_root: Path, n: int, clients: int) -> list[Phase]:
    """CreateVolume then DeleteVolume of `n` volumes, over 1 client and over `clients`."""
    pool = [Client(socket) for _ in range(clients)]
    try:
        for i in range(WARMUP):
            for client in pool:
                client.create(f"warm-{i}")
                client.delete(f"warm-{i}")
        names = [f"bench-seq-{i}" for i in range(n)]
        one = pool[0]
        phases = [timed("ref gRPC Probe", 1, [one.probe] * n)]
        phases.append(timed("gRPC create seq", 1, [partial(one.create, x) for x in names]))
        check_volumes(volumes, fs_root, n)
        phases.append(timed("gRPC delete seq", 1, [partial(one.delete, x) for x in names]))
        check_volumes(volumes, fs_root, 0)
        settle(fs_root)
        names = [f"bench-par-{i}" for i in range(n)]
        shares = [names[k::clients] for k in range(clients)]
        phases.append(timed_concurrently(f"gRPC create x{clients}", [
            [partial(c.create, x) for x in share] for c, share in zip(pool, shares, strict=True)]))
        check_volumes(volumes, fs_root, n)
        phases.append(timed_concurrently(f"gRPC delete x{clients}", [
            [partial(c.delete, x) for x in share] for c, share in zip(pool, shares, strict=True)]))
        check_volumes(volumes, fs_root, 0)
        return phases  # fmt: skip
    finally:
        for client in pool:
            client.channel.close()


def environment(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from sharevol.sys.statfs import filesystem_type

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "volumes": args.n, "clients": args.clients, "image": f"{IMAGE_BYTES // 1024**4} TiB",
        "backing_fs": filesystem_type(workdir), "kernel": platform.release(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__,
        "load_before": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    env = environment(args, workdir)
    with btrfs_image(workdir, IMAGE_BYTES) as mount_point:
        floor = run_floor(mount_point, args.n)
        reference = run_catalog_reference(mount_point, args.n)
        settle(mount_point)
        config = ServerConfig(pools=(PoolConfig(name="bench", path=mount_point, kind="btrfs"),))
        state = workdir / "state"
        server = build_server(config, endpoint=f"unix://{state}/csi.sock", node_id="bench-node",
                              mode="all", state_dir=state)  # fmt: skip
        server.start()
        try:
            grpc_phases = run_grpc(server.socket, mount_point / VOLUMES_DIR, mount_point,
                                   args.n, args.clients)  # fmt: skip
        finally:
            server.stop(grace=1.0)
    phases = [*floor, *reference, *grpc_phases]
    env["load_after"] = round(os.getloadavg()[0], 2)
    results = verdicts({p.name: p for p in phases}, args.clients)
    print_report(env, phases, results)
    if args.json:
        doc = {"environment": env, "phases": [p.as_dict() for p in phases], "targets": results,
               "context": context(phases, args.clients)}  # fmt: skip
        print(json.dumps(doc, indent=1))
    return 3 if args.check and not all(row["pass"] for row in results) else 0


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` (unmount, detach) runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="volumes per phase (default 1000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--check", action="store_true", help="exit 3 when a target fails")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the sparse image goes (default: a new folder in $TMPDIR)")
    args = parser.parse_args(argv)  # fmt: skip
    if args.n < 1 or args.clients < 1:
        parser.error("-n and --clients must be at least 1")
    if args.n * VOLUME_BYTES > IMAGE_BYTES:
        parser.error(f"-n {args.n} volumes of 64 MiB do not fit the {IMAGE_BYTES} byte image")
    if os.geteuid() != 0:
        parser.error("needs root: it makes a loop device and mounts btrfs")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="sharevol-bench-", dir=args.workdir))
    try:
        return benchmark(args, workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        # Only the socket folder and the empty mount point are left here; the pool's data went
        # with the image, so this never deletes volume data.
        shutil.rmtree(workdir / "state", ignore_errors=True)
        with contextlib.suppress(OSError):
            workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
