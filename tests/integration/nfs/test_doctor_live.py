"""`sharevol doctor` against a running NFS-Ganesha (the managed NFS server of a real sharevol
server on loopback): it asks Ganesha over its private DBus what it serves, finds an export whose
volume record is gone and a volume whose export is missing, and `--fix` removes the one and
re-adds the other (reachable again over NFS) without touching good exports or one it did not
make."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharevol.catalog.store import Catalog
from sharevol.csi._proto import csi_pb2
from sharevol.nfs.bus import GaneshaBus
from sharevol.nfs.conf import ExportSpec, export_conf
from sharevol.service.doctor import DoctorReport, run_doctor
from sharevol.service.doctor.live_exports import bus_socket
from sharevol.sys.statfs import mounts_under
from tests.integration.nfs.conftest import NFS_TOOLS, NfsServed
from tests.support.nfs import nfs_client, read_file, write_file

pytestmark = pytest.mark.root(*NFS_TOOLS)

CTX = "sharevol.csi.io/"


def live(report: DoctorReport) -> list[tuple[str, str]]:
    return sorted(
        (line.status, line.subject) for line in report.lines if line.check == "live-exports"
    )


def served(nfs: NfsServed) -> dict[int, str]:
    assert nfs.server.nfs is not None and nfs.server.nfs.ganesha is not None
    return nfs.server.nfs.ganesha.bus.exports()


def bus_of(nfs: NfsServed) -> GaneshaBus:
    assert nfs.server.nfs is not None and nfs.server.nfs.ganesha is not None
    return nfs.server.nfs.ganesha.bus


def test_doctor_finds_the_running_servers_bus_from_the_state_dir(nfs: NfsServed) -> None:
    assert bus_socket(nfs.state_dir / "nfs") == bus_of(nfs).socket_path

    report = run_doctor(nfs.config, state_dir=nfs.state_dir)

    assert live(report) == [("ok", "")]


def test_doctor_removes_an_export_without_volume_and_re_adds_a_missing_one(
    nfs: NfsServed, btrfs_fs: Path, tmp_path: Path
) -> None:
    keep = nfs.create("keep", mode="0777")
    lost = nfs.create("lost", mode="0777")
    nfs.create("ghost", mode="0777")
    catalog = Catalog(btrfs_fs)
    records = {r.name: r for r in catalog.load_volumes()}
    ids = {name: r.nfs_export.export_id for name, r in records.items() if r.nfs_export}
    with nfs_client(nfs.port, lost.volume_context[f"{CTX}nfs-export"]) as client:
        write_file(client, "kept.txt", b"still here\n")
    before = served(nfs)
    # 1. the volume record of "ghost" is gone (a hand-made delete): its export still serves
    catalog.remove_volume(records["ghost"].uuid)
    # 2. the export of "lost" is gone from Ganesha, its record is intact
    bus_of(nfs).remove_export(ids["lost"])
    # 3. an export someone added by hand, not one of sharevol's bind mounts
    foreign_dir = tmp_path / "foreign"
    foreign_dir.mkdir()
    foreign_conf = tmp_path / "export-999.conf"
    foreign_conf.write_text(export_conf(ExportSpec(999, foreign_dir, "/foreign")))
    bus_of(nfs).add_export(foreign_conf, 999)
    ghost_mount = Path(before[ids["ghost"]])
    lost_subject = f"volume lost ({lost.volume_id})"
    ghost_subject = f"export {ids['ghost']} ({ghost_mount})"
    foreign_subject = f"export 999 ({foreign_dir})"

    report = run_doctor(nfs.config, state_dir=nfs.state_dir)

    assert live(report) == sorted(
        [("problem", lost_subject), ("problem", ghost_subject), ("warning", foreign_subject)]
    )
    fixes = {line.subject: line.fix for line in report.lines if line.check == "live-exports"}
    assert fixes[foreign_subject] == ""
    unchanged = {k: v for k, v in before.items() if k != ids["lost"]}
    assert served(nfs) == {**unchanged, 999: str(foreign_dir)}

    fixed = run_doctor(nfs.config, state_dir=nfs.state_dir, fix=True)

    assert live(fixed) == sorted(
        [("fixed", lost_subject), ("fixed", ghost_subject), ("warning", foreign_subject)]
    )
    now = served(nfs)
    assert ids["ghost"] not in now
    assert now[ids["keep"]] == before[ids["keep"]]
    assert now[ids["lost"]] == before[ids["lost"]]
    assert now[999] == str(foreign_dir)
    assert str(ghost_mount) not in mounts_under(nfs.state_dir / "nfs" / "mnt")
    assert (btrfs_fs / "volumes" / records["ghost"].directory).is_dir()  # data left alone
    with nfs_client(nfs.port, lost.volume_context[f"{CTX}nfs-export"]) as client:
        assert read_file(client, "kept.txt") == b"still here\n"
    with nfs_client(nfs.port, keep.volume_context[f"{CTX}nfs-export"]) as client:
        write_file(client, "ok.txt", b"ok\n")
    bus_of(nfs).remove_export(999)
    nfs.stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=lost.volume_id))
    assert ids["lost"] not in served(nfs)  # the server's own bookkeeping still works
