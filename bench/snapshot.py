"""Snapshot benchmark: sharevol CreateSnapshot (btrfs and XFS reflink) against `tar czf`.

Builds a volume of 1 GiB in 1000 files (`--gib`, `--files`) on a btrfs pool and on an XFS pool
(reflink=1), then times, in the same run: CreateSnapshot over gRPC on each (the median of
`--repeat` snapshots, caches dropped before each), a restore (CreateVolume from the snapshot),
and `tar czf` of the same data, which is how the popular NFS provisioner snapshots. With
`--scale` it grows the data 4x (same number of files, 4x bigger) and times the snapshots again.
Targets: snapshots at least 100x faster than tar.gz; snapshot time at most 2x when data grows 4x.

Run as root:  .venv/bin/python bench/snapshot.py [--gib 1] [--files 1000] [--scale] [--json]
It makes sparse images on loop devices, serves sharevol in-process on a unix socket, and removes
everything at the end (also on Ctrl-C, SIGTERM or failure).
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
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from _loopfs import btrfs_image, signals_ignored
from sharevol.csi._proto import admin_pb2, admin_pb2_grpc, csi_pb2, csi_pb2_grpc
from sharevol.csi.server import build_server
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys.runner import SubprocessRunner
from sharevol.sys.statfs import mounts_under
from sharevol.sys.tree_copy import sync_filesystem

MiB = 1024 * 1024
GiB = 1024 * MiB
COMMAND_TIMEOUT = 120.0
TAR_TIMEOUT = 3600.0
RPC_TIMEOUT = 600.0
TARGET_TAR_RATIO = 100.0
TARGET_SCALE_RATIO = 2.0
RANDOM_POOL = 8 * MiB
DIRECTORIES = 10


@dataclass(frozen=True)
class Timing:
    """Wall seconds of one measured operation, repeated."""

    name: str
    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "median_s": round(self.median, 6),
                "runs_s": [round(s, 6) for s in self.seconds]}  # fmt: skip


# -- filesystems and data -------------------------------------------------------------------------


@contextlib.contextmanager
def xfs_image(workdir: Path, size: int) -> Iterator[Path]:
    """A sparse XFS image (reflink=1) loop-mounted at `workdir/xfs`; always undone."""
    runner = SubprocessRunner()
    image, mount_point = workdir / "xfs.img", workdir / "xfs"
    mount_point.mkdir()
    with image.open("wb") as handle:
        handle.truncate(size)
    loop = ""
    try:
        runner.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)],
                   timeout=COMMAND_TIMEOUT)  # fmt: skip
        loop = runner.run(
            ["losetup", "--find", "--show", str(image)], timeout=COMMAND_TIMEOUT
        ).stdout.strip()
        runner.run(["mount", loop, str(mount_point)], timeout=COMMAND_TIMEOUT)
        yield mount_point
    finally:
        with signals_ignored():
            for target in sorted(mounts_under(mount_point), key=len, reverse=True):
                if runner.run(["umount", target], timeout=COMMAND_TIMEOUT, check=False).returncode:
                    runner.run(["umount", "--lazy", target], timeout=COMMAND_TIMEOUT, check=False)
            if loop:
                runner.run(["losetup", "-d", loop], timeout=COMMAND_TIMEOUT, check=False)
            image.unlink(missing_ok=True)
            if not mounts_under(mount_point):
                mount_point.rmdir()


def fill(volume: Path, total_bytes: int, files: int) -> int:
    """Write `files` files of incompressible data (total `total_bytes`) in 10 folders; returns
    the bytes written. The data is random, as in the measured facts (gzip cannot shrink it)."""
    size = max(1, total_bytes // files)
    pool = os.urandom(RANDOM_POOL + size)
    written = 0
    for index in range(files):
        folder = volume / f"dir{index % DIRECTORIES:02d}"
        folder.mkdir(exist_ok=True)
        offset = (index * 7919 * 4096) % RANDOM_POOL
        (folder / f"file{index:05d}").write_bytes(pool[offset : offset + size])
        written += size
    sync_filesystem(volume)
    return written


def drop_caches() -> None:
    """Cold caches before each timed operation, as the facts were measured."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


# -- the server -----------------------------------------------------------------------------------


class Client:
    """CSI Controller and Admin stubs on the in-process server's socket."""

    def __init__(self, socket: Path) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)

    def create_volume(self, name: str, pool: str, size: int) -> Path:
        capability = csi_pb2.VolumeCapability(
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER
            ),
            mount=csi_pb2.VolumeCapability.MountVolume(),
        )
        self.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=size),
                volume_capabilities=[capability], parameters={"pool": pool},
            ),
            timeout=RPC_TIMEOUT,
        )  # fmt: skip
        info = self.admin.GetVolume(admin_pb2.GetVolumeRequest(name=name), timeout=RPC_TIMEOUT)
        return Path(info.volume.path)

    def volume_id(self, name: str) -> str:
        info = self.admin.GetVolume(admin_pb2.GetVolumeRequest(name=name), timeout=RPC_TIMEOUT)
        return info.volume.volume_id

    def snapshot(self, name: str, volume_id: str) -> csi_pb2.Snapshot:
        request = csi_pb2.CreateSnapshotRequest(name=name, source_volume_id=volume_id)
        return self.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT).snapshot

    def restore(self, name: str, snapshot_id: str) -> None:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            volume_capabilities=[csi_pb2.VolumeCapability(
                access_mode=csi_pb2.VolumeCapability.AccessMode(
                    mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER),
                mount=csi_pb2.VolumeCapability.MountVolume())],
            volume_content_source=csi_pb2.VolumeContentSource(
                snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snapshot_id)),
        )  # fmt: skip
        self.controller.CreateVolume(request, timeout=RPC_TIMEOUT)


def time_snapshots(client: Client, volume: str, label: str, repeat: int) -> Timing:
    """CreateSnapshot of `volume`, `repeat` times with cold caches; every one must be ready."""
    volume_id = client.volume_id(volume)
    runs = []
    for index in range(repeat):
        drop_caches()
        started = time.monotonic()
        made = client.snapshot(f"{volume}-snap-{index}", volume_id)
        runs.append(time.monotonic() - started)
        if not made.ready_to_use:
            raise RuntimeError(f"{label}: the snapshot is not ready at once (a real copy?)")
    return Timing(label, tuple(runs))


def time_restore(client: Client, volume: str, label: str) -> Timing:
    drop_caches()
    snapshot_id = client.snapshot(f"{volume}-snap-0", client.volume_id(volume)).snapshot_id
    started = time.monotonic()
    client.restore(f"{volume}-restored", snapshot_id)
    return Timing(label, (time.monotonic() - started,))


def time_tar(source: Path, archive: Path) -> Timing:
    """`tar czf` of the volume, written next to it on the same filesystem, then synced: what
    csi-driver-nfs does for a snapshot."""
    drop_caches()
    started = time.monotonic()
    SubprocessRunner().run(["tar", "-C", str(source), "-czf", str(archive), "."],
                           timeout=TAR_TIMEOUT)  # fmt: skip
    sync_filesystem(archive.parent)
    seconds = time.monotonic() - started
    archive.unlink()
    return Timing("tar czf", (seconds,))


# -- the run --------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    base = int(args.gib * GiB)
    data_total = base * (5 if args.scale else 1)
    image_size = int(data_total * 1.5) + 2 * GiB
    env = environment(args, workdir)
    timings: list[Timing] = []
    with (
        btrfs_image(workdir, image_size) as btrfs_root,
        xfs_image(workdir, image_size + base) as xfs_root,
    ):
        config = ServerConfig(
            pools=(PoolConfig(name="btrfs", path=btrfs_root, kind="btrfs"),
                   PoolConfig(name="xfs", path=xfs_root, kind="plain")),
        )  # fmt: skip
        state = workdir / "state"
        server = build_server(config, endpoint=f"unix://{state}/csi.sock", node_id="bench",
                              mode="all", state_dir=state)  # fmt: skip
        server.start()
        client = Client(server.socket)
        try:
            sizes = [("1x", base)] + ([("4x", 4 * base)] if args.scale else [])
            for tag, size in sizes:
                for pool in ("btrfs", "xfs"):
                    path = client.create_volume(f"{pool}-{tag}", pool, size + size // 4 + 64 * MiB)
                    fill(path, size, args.files)
            for tag, _size in sizes:
                for pool in ("btrfs", "xfs"):
                    label = f"{pool} snapshot {tag}"
                    timings.append(time_snapshots(client, f"{pool}-{tag}", label, args.repeat))
            for pool in ("btrfs", "xfs"):
                timings.append(time_restore(client, f"{pool}-1x", f"{pool} restore 1x"))
            xfs_data = Path(client.admin.GetVolume(admin_pb2.GetVolumeRequest(name="xfs-1x"),
                                                   timeout=RPC_TIMEOUT).volume.path)  # fmt: skip
            timings.append(time_tar(xfs_data, xfs_root / "bench-snapshot.tar.gz"))
        finally:
            client.channel.close()
            server.stop(grace=1.0)
    env["load_after"] = round(os.getloadavg()[0], 2)
    by_name = {t.name: t for t in timings}
    results = verdicts(by_name, args.scale)
    print_report(env, timings, results)
    if args.json:
        print(json.dumps({"environment": env, "timings": [t.as_dict() for t in timings],
                          "targets": results}, indent=1))  # fmt: skip
    return 3 if args.check and not all(row["pass"] for row in results) else 0


def verdicts(by_name: dict[str, Timing], scale: bool) -> list[dict[str, Any]]:
    """Each target with its measured value: tar.gz over snapshot (>= 100), 4x over 1x (<= 2)."""
    tar = by_name["tar czf"].median
    rows = []
    for pool in ("btrfs", "xfs"):
        snap = by_name[f"{pool} snapshot 1x"].median
        rows.append({"target": f"tar czf / {pool} snapshot", "value": round(tar / snap, 1),
                     "want": f">= {TARGET_TAR_RATIO:g}",
                     "pass": tar / snap >= TARGET_TAR_RATIO})  # fmt: skip
        if scale:
            grown = by_name[f"{pool} snapshot 4x"].median / snap
            rows.append({"target": f"{pool} snapshot 4x data / 1x", "value": round(grown, 2),
                         "want": f"<= {TARGET_SCALE_RATIO:g}",
                         "pass": grown <= TARGET_SCALE_RATIO})  # fmt: skip
    return rows


def print_report(env: dict[str, Any], timings: list[Timing], results: list[dict[str, Any]]) -> None:
    print(f"sharevol snapshot benchmark, {env['date']}: {env['data']} in {env['files']} files "
          f"per volume, kernel {env['kernel']}, {env['cpus']} CPUs")  # fmt: skip
    print(f"{'operation':<22} {'median s':>10} {'runs s':>30}")
    for timing in timings:
        runs = ", ".join(f"{s:.4f}" for s in timing.seconds)
        print(f"{timing.name:<22} {timing.median:>10.4f} {runs:>30}")
    print(f"{'target':<32} {'value':>8} {'want':>8}  verdict")
    for row in results:
        verdict = "PASS" if row["pass"] else "FAIL"
        print(f"{row['target']:<32} {row['value']:>8} {row['want']:>8}  {verdict}")


def environment(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from sharevol.sys.statfs import filesystem_type

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "data": f"{args.gib:g} GiB", "files": args.files, "repeat": args.repeat,
        "scale": args.scale, "backing_fs": filesystem_type(workdir),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_before": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` (unmount, detach) runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="data per volume in GiB (1)")
    parser.add_argument("--files", type=int, default=1000, help="files per volume (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="snapshots timed per volume (3)")
    parser.add_argument("--scale", action="store_true", help="also time 4x the data")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--check", action="store_true", help="exit 3 when a target fails")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the sparse images go (default: a new folder in $TMPDIR)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.gib <= 0 or args.files < 1 or args.repeat < 1:
        parser.error("--gib must be positive, --files and --repeat at least 1")
    if os.geteuid() != 0:
        parser.error("needs root: it makes loop devices and mounts btrfs and XFS")
    missing = [tool for tool in ("mkfs.btrfs", "mkfs.xfs", "tar", "gzip") if not shutil.which(tool)]
    if missing:
        parser.error(f"needs {', '.join(missing)} (scripts/bootstrap installs them)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="sharevol-snapbench-", dir=args.workdir))
    try:
        return benchmark(args, workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        # Only the socket folder and empty mount points are left here; the data went with the
        # images, so this never deletes volume data.
        shutil.rmtree(workdir / "state", ignore_errors=True)
        with contextlib.suppress(OSError):
            workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
