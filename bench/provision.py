"""Provisioning benchmark: CreateVolume/DeleteVolume over real gRPC against the floor.

The floor is the same btrfs work (subvolume create, id lookup, qgroup limit; then destroy) done
directly with `sharevol.sys.btrfs`, no gRPC and no catalog, on the same filesystem in the same
run, so the ratio end-to-end/floor is what sharevol's own layers cost on this machine.

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
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

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
TARGET_RATIO = 1 / 3
TARGET_P99_CREATE_MS = 20.0


@dataclass(frozen=True)
class Phase:
    """The figures of one measured phase: `ops` operations in `seconds` of wall time."""

    name: str
    clients: int
    ops: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the per-operation latencies, in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "clients": self.clients, "ops": self.ops,
            "seconds": round(self.seconds, 4), "ops_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile_ms(50), 3), "p99_ms": round(self.percentile_ms(99), 3),
        }  # fmt: skip


def cycle_rate(create: Phase, delete: Phase) -> float:
    """Volumes per second through a full create + delete cycle (N / (t_create + t_delete))."""
    return create.ops / (create.seconds + delete.seconds)


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


def progress(phase: str) -> None:
    """A line on stderr per phase: a 1000-volume run takes a while and stdout is the report."""
    print(f"running {phase} ...", file=sys.stderr, flush=True)


def timed(name: str, clients: int, calls: Sequence[Callable[[], object]]) -> Phase:
    """Run `calls` one after another in this thread; wall time and per-call latencies."""
    progress(name)
    latencies: list[float] = []
    started = time.perf_counter()
    for call in calls:
        before = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - before)
    return Phase(name, clients, len(calls), time.perf_counter() - started, tuple(latencies))


def timed_concurrently(name: str, shares: Sequence[Sequence[Callable[[], object]]]) -> Phase:
    """Run each share of calls in its own thread, all released at once; the phase lasts from
    the release to the end of the slowest thread. The first error is re-raised."""
    progress(name)
    barrier = threading.Barrier(len(shares) + 1)
    latencies: list[list[float]] = [[] for _ in shares]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        barrier.wait()
        try:
            for call in shares[index]:
                before = time.perf_counter()
                call()
                latencies[index].append(time.perf_counter() - before)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(shares))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    flat = tuple(x for share in latencies for x in share)
    return Phase(name, len(shares), len(flat), seconds, flat)


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


# -- report -------------------------------------------------------------------------------------


def verdicts(phases: dict[str, Phase], clients: int) -> list[dict[str, Any]]:
    """The issue's targets, each with its figure and PASS/FAIL."""
    floor = cycle_rate(phases["floor create"], phases["floor delete"])
    seq = cycle_rate(phases["gRPC create seq"], phases["gRPC delete seq"])
    par = cycle_rate(phases[f"gRPC create x{clients}"], phases[f"gRPC delete x{clients}"])
    rows = [
        ("create+delete rate, 1 client / floor", seq / floor, f"{seq:.0f} vs {floor:.0f} vol/s",
         ">=", TARGET_RATIO),
        (f"create+delete rate, {clients} clients / floor", par / floor,
         f"{par:.0f} vs {floor:.0f} vol/s", ">=", TARGET_RATIO),
        ("p99 CreateVolume, 1 client (ms)", phases["gRPC create seq"].percentile_ms(99), "",
         "<", TARGET_P99_CREATE_MS),
        (f"p99 CreateVolume, {clients} clients (ms)",
         phases[f"gRPC create x{clients}"].percentile_ms(99), "", "<", TARGET_P99_CREATE_MS),
    ]  # fmt: skip
    return [
        {"target": name, "value": round(value, 3), "detail": detail, "op": op, "bound": bound,
         "pass": value >= bound if op == ">=" else value < bound}
        for name, value, detail, op, bound in rows
    ]  # fmt: skip


def print_report(env: dict[str, Any], phases: list[Phase], results: list[dict[str, Any]]) -> None:
    print(f"sharevol provisioning benchmark, {env['date']}")
    print(f"  {env['volumes']} volumes of 64 MiB; btrfs with quotas on a loop device "
          f"({env['image']} sparse image on {env['backing_fs']}); server mode all, in-process")
    print(f"  kernel {env['kernel']}, {env['cpus']} CPUs, Python {env['python']}, "
          f"grpcio {env['grpcio']}")
    print(f"  load average (1 min) {env['load_before']} before, {env['load_after']} after: "
          "other work on the machine shows up in the figures")
    print()
    print(f"{'phase':<20}{'clients':>8}{'ops':>7}{'seconds':>9}{'ops/s':>9}"
          f"{'p50 ms':>9}{'p99 ms':>9}")
    measured = [p for p in phases if not p.name.startswith("ref ")]
    reference = [p for p in phases if p.name.startswith("ref ")]
    for phase in [*measured, *reference]:
        if phase is reference[0]:
            print("reference (not targets): one RPC; one durable record; floor + catalog writes")
        print(f"{phase.name:<20}{phase.clients:>8}{phase.ops:>7}{phase.seconds:>9.3f}"
              f"{phase.rate:>9.0f}{phase.percentile_ms(50):>9.3f}{phase.percentile_ms(99):>9.3f}")
    print()
    print("targets (create+delete rate = N / (create seconds + delete seconds); "
          "the target of record is the 1-client one)")
    for row in results:
        verdict = "PASS" if row["pass"] else "FAIL"
        detail = f"  ({row['detail']})" if row["detail"] else ""
        bound = f"{row['bound']:.3f}" if row["op"] == ">=" else f"{row['bound']:g}"
        print(f"  {row['target']:<38} {row['value']:>8.3f} {row['op']} {bound:<6} "
              f"{verdict}{detail}")
    print("context (not targets)")
    for line in context_lines(context(phases, env["clients"])):
        print(f"  {line}")


def context(phases: list[Phase], clients: int) -> dict[str, float]:
    """Why the rate target is where it is: the time budget it allows per create+delete, what
    one RPC and one durable record cost, and end-to-end against a floor that is durable too."""
    by_name = {p.name: p for p in phases}
    floor = cycle_rate(by_name["floor create"], by_name["floor delete"])
    durable = cycle_rate(by_name["ref durable create"], by_name["ref durable delete"])
    seq = cycle_rate(by_name["gRPC create seq"], by_name["gRPC delete seq"])
    par = cycle_rate(by_name[f"gRPC create x{clients}"], by_name[f"gRPC delete x{clients}"])
    return {
        "budget_ms_per_cycle_at_target": round(1000 / (TARGET_RATIO * floor), 3),
        "probe_p50_ms": round(by_name["ref gRPC Probe"].percentile_ms(50), 3),
        "record_write_p50_ms": round(by_name["ref catalog write"].percentile_ms(50), 3),
        "durable_floor_cycle_rate": round(durable, 1),
        "seq_over_durable_floor": round(seq / durable, 3),
        "concurrent_over_durable_floor": round(par / durable, 3),
    }


def context_lines(figures: dict[str, float]) -> list[str]:
    return [
        f"budget per create+delete at the rate target: {figures['budget_ms_per_cycle_at_target']}"
        f" ms; the cycle makes 2 RPCs (Probe p50 {figures['probe_p50_ms']} ms), 3 durable record"
        f" writes (p50 {figures['record_write_p50_ms']} ms each) and a durable unlink",
        f"durable floor (floor + the same catalog writes, no gRPC): "
        f"{figures['durable_floor_cycle_rate']:.0f} vol/s; end-to-end over it: "
        f"{figures['seq_over_durable_floor']} with 1 client, "
        f"{figures['concurrent_over_durable_floor']} concurrent",
    ]


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
