"""NFS benchmark: 256 MiB sequential write and read through a volume's own Ganesha export, next
to the same on the pool directly, in the same run; and how fast exports come and go.

Throughput: a sharevol server (in-process) with its managed NFS server on loopback makes one
1 GiB btrfs volume; nfs-rs (user-space NFSv4.1: this host's kernel has no NFS client) writes
256 MiB of random data through the volume's export (durable when write() returns), then reads
it back; the same bytes are written (with fsync) and read on the volume's folder directly. Page
cache is dropped before each read when /proc/sys/vm/drop_caches is writable. Median of --rounds.

Exports: a standalone Ganesha and 200 (-n) btrfs subvolumes: the full export add (bind mount,
EXPORT file, DBus AddExport) and remove (RemoveExport, unmount), the DBus calls alone, and the
time from SIGKILL of Ganesha to all exports served again by the supervisor.

Run as root:  .venv/bin/python bench/nfs.py [-n 200] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import nfs_rs

from _loopfs import btrfs_image
from sharevol.csi._proto import csi_pb2, csi_pb2_grpc
from sharevol.csi.server import build_server
from sharevol.nfs.conf import ExportSpec, ServerSettings
from sharevol.nfs.exports import NfsExporter
from sharevol.nfs.ganesha import GaneshaServer
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from sharevol.sys import btrfs
from sharevol.sys.mounts import SystemMounter
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under

MiB = 1024 * 1024
IMAGE_BYTES = 64 * 1024**3
"""Sparse: a few hundred MiB of real disk for this run."""
DATA_BYTES = 256 * MiB
NFS_TIMEOUT = 60
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
RWX = csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def drop_caches() -> bool:
    """Write back and drop the page cache so a read comes from the disk; False if refused."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def each(action: Callable[[int], None], n: int) -> float:
    """Seconds to run action(0) .. action(n - 1) one after another."""
    started = time.perf_counter()
    for i in range(n):
        action(i)
    return time.perf_counter() - started


# -- throughput --------------------------------------------------------------------------------


def local_write(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def local_read(path: Path) -> bytes:
    return path.read_bytes()


def nfs_write(client: nfs_rs.Client, name: str, data: bytes) -> None:
    with client.open(name, "wb") as handle:
        handle.write(data)  # returns once every byte is durable (nfs-rs commits)


def nfs_read(client: nfs_rs.Client, name: str) -> bytes:
    with client.open(name, "rb") as handle:
        return handle.read()


def run_throughput(pool: Path, workdir: Path, rounds: int) -> dict[str, Any]:
    """Write and read 256 MiB through the volume's export and on its folder, `rounds` times."""
    port = free_port()
    config = ServerConfig(
        pools=(PoolConfig(name="bench", path=pool, kind="btrfs"),),
        nfs=NfsConfig(bind="127.0.0.1", port=port, clients=("127.0.0.1",)),
    )
    state = workdir / "state"
    server = build_server(config, endpoint=f"unix://{state}/csi.sock", node_id="bench@127.0.0.1",
                          mode="controller", state_dir=state)  # fmt: skip
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{server.socket}") as channel:
            volume = csi_pb2_grpc.ControllerStub(channel).CreateVolume(
                csi_pb2.CreateVolumeRequest(
                    name="bench-data",
                    capacity_range=csi_pb2.CapacityRange(required_bytes=1024**3),
                    volume_capabilities=[csi_pb2.VolumeCapability(
                        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=RWX),
                        mount=csi_pb2.VolumeCapability.MountVolume())],
                    parameters={"mode": "0777"},
                )
            ).volume  # fmt: skip
        context = volume.volume_context
        folder = pool / "volumes" / context["sharevol.csi.io/directory"]
        url = f"nfs://127.0.0.1:{port}{context['sharevol.csi.io/nfs-export']}?version=4.1"
        data = os.urandom(DATA_BYTES)
        digest = hashlib.sha256(data).digest()
        times: dict[str, list[float]] = {k: [] for k in ("nfs write", "nfs read",
                                                          "local write", "local read")}  # fmt: skip
        cold = True
        with nfs_rs.Client.connect(f"{url}&nfsport={port}", uid=0, gid=0, noresvport=True,
                                   connect_timeout=NFS_TIMEOUT,
                                   operation_timeout=NFS_TIMEOUT) as client:  # fmt: skip
            for round_ in range(rounds):
                print(f"throughput round {round_ + 1}/{rounds} ...", file=sys.stderr, flush=True)
                times["nfs write"].append(seconds(lambda: nfs_write(client, "nfs.bin", data)))
                cold &= drop_caches()
                started = time.perf_counter()
                read = nfs_read(client, "nfs.bin")
                times["nfs read"].append(time.perf_counter() - started)
                if hashlib.sha256(read).digest() != digest:
                    raise RuntimeError("data read through NFS differs from what was written")
                times["local write"].append(
                    seconds(lambda: local_write(folder / "local.bin", data))
                )
                cold &= drop_caches()
                started = time.perf_counter()
                read = local_read(folder / "local.bin")
                times["local read"].append(time.perf_counter() - started)
                if hashlib.sha256(read).digest() != digest:
                    raise RuntimeError("data read on the pool differs from what was written")
            client.remove("nfs.bin")
        (folder / "local.bin").unlink()
    finally:
        server.stop(grace=1.0)
    rows = {name: summary(values) for name, values in times.items()}
    return {"rows": rows, "cold_reads": cold, "bytes": DATA_BYTES}


def summary(values: list[float]) -> dict[str, float]:
    median = statistics.median(values)
    return {"median_s": round(median, 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3),
            "mib_per_s": round(DATA_BYTES / MiB / median, 1)}  # fmt: skip


# -- export add/remove ---------------------------------------------------------------------------


def run_exports(pool: Path, workdir: Path, n: int) -> dict[str, Any]:
    """Add and remove `n` exports on a standalone Ganesha, whole and DBus-only; restart time."""
    parent = pool / "exports-bench"
    parent.mkdir()
    names = [f"v{i:04d}" for i in range(n)]
    for name in names:
        btrfs.create_subvolume(parent, name)
    runtime = workdir / "ganesha"
    ganesha = GaneshaServer(ServerSettings("127.0.0.1", free_port(), runtime))
    exporter = NfsExporter(runtime, ganesha.bus, SystemMounter(SubprocessRunner()))
    specs = [ExportSpec(export_id=i + 1, path=exporter.mount_point("bench", name),
                        pseudo=f"/bench/{name}", rw_clients=("127.0.0.1",))
             for i, name in enumerate(names)]  # fmt: skip

    def rebuild() -> None:
        exporter.forget()
        for spec, name in zip(specs, names, strict=True):
            exporter.apply(spec, parent / name)

    ganesha.on_restart = rebuild
    exporter.reset()
    ganesha.start()
    figures: dict[str, float] = {}
    try:
        print(f"exports: {n} full adds and removes ...", file=sys.stderr, flush=True)
        sources = [parent / name for name in names]
        figures["full add"] = each(lambda i: exporter.apply(specs[i], sources[i]), n)
        figures["full remove"] = each(
            lambda i: exporter.remove(specs[i].export_id, specs[i].path), n
        )
        rebuild()  # bind mounts and EXPORT files in place: time DBus alone
        for spec in specs:
            ganesha.bus.remove_export(spec.export_id)
        confs = [exporter.conf_dir / f"export-{s.export_id}.conf" for s in specs]
        figures["dbus add"] = each(lambda i: ganesha.bus.add_export(confs[i], i + 1), n)
        figures["dbus remove"] = each(lambda i: ganesha.bus.remove_export(i + 1), n)
        rebuild()
        print(f"exports: SIGKILL Ganesha with {n} exports ...", file=sys.stderr, flush=True)
        pid = ganesha.pid
        if pid is None:
            raise RuntimeError("Ganesha is not running")
        started = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        if not ganesha.wait_restarted(1, 120):
            raise RuntimeError("Ganesha was not restarted within 120 s")
        figures["restart + rebuild"] = time.perf_counter() - started
        if len(ganesha.bus.export_ids()) != n:
            raise RuntimeError("not every export came back after the restart")
        exporter.remove_all()
    finally:
        ganesha.stop()
        exporter.remove_all()
        for name in names:
            btrfs.destroy_subvolume(parent, name)
        parent.rmdir()
    rates = {k: round(n / v, 1) for k, v in figures.items() if k != "restart + rebuild"}
    return {"n": n, "seconds": {k: round(v, 3) for k, v in figures.items()}, "per_s": rates}


# -- report --------------------------------------------------------------------------------------


def print_report(env: dict[str, Any], throughput: dict[str, Any], exports: dict[str, Any]) -> None:
    print(f"sharevol NFS benchmark, {env['date']}, kernel {env['kernel']}, {env['cpus']} CPUs")
    cache = "cold (page cache dropped)" if throughput["cold_reads"] else "warm (could not drop)"
    print(f"\n256 MiB sequential, median of {env['rounds']} rounds; reads {cache}")
    print(f"{'path':<14}{'median s':>10}{'min s':>8}{'max s':>8}{'MiB/s':>9}")
    for name, row in throughput["rows"].items():
        print(f"{name:<14}{row['median_s']:>10}{row['min_s']:>8}{row['max_s']:>8}"
              f"{row['mib_per_s']:>9}")  # fmt: skip
    rows = throughput["rows"]
    for op in ("write", "read"):
        ratio = rows[f"nfs {op}"]["median_s"] / rows[f"local {op}"]["median_s"]
        print(f"nfs/local {op}: {ratio:.2f}x")
    print(f"\n{exports['n']} exports (bind mount + EXPORT file + DBus; DBus alone)")
    for name, value in exports["seconds"].items():
        rate = exports["per_s"].get(name)
        print(f"{name:<18}{value:>8} s" + (f"{rate:>10} /s" if rate else ""))


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` (exports, mounts, image) runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="exports to add and remove (200)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: loop device, btrfs, bind mounts and Ganesha")
    if not 1 <= args.n <= 65535 or args.rounds < 1:
        parser.error("-n must be 1..65535 and --rounds at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    env = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "kernel": platform.release(), "cpus": os.cpu_count(), "rounds": args.rounds,
           "nfs_rs": nfs_rs.__version__}  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="sharevol-nfs-bench-"))
    try:
        with btrfs_image(workdir, IMAGE_BYTES) as pool:
            throughput = run_throughput(pool, workdir, args.rounds)
            exports = run_exports(pool, workdir, args.n)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for target in sorted(mounts_under(workdir), key=len, reverse=True):
            SubprocessRunner().run(["umount", "--lazy", target], timeout=60, check=False)
        with contextlib.suppress(OSError):
            _remove_state(workdir)
    print_report(env, throughput, exports)
    if args.json:
        print(json.dumps({"environment": env, "throughput": throughput, "exports": exports},
                         indent=1))  # fmt: skip
    return 0


def _remove_state(workdir: Path) -> None:
    """The server's and Ganesha's small files (configs, logs, sockets); only once nothing is
    mounted below, and file by file: never a recursive delete near volume data."""
    if mounts_under(workdir):
        return
    for folder in sorted((p for p in workdir.rglob("*") if p.is_dir()), key=lambda p: -len(
            str(p))):  # fmt: skip
        for entry in folder.iterdir():
            if not entry.is_dir():
                entry.unlink()
        folder.rmdir()
    workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
