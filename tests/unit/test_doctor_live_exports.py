"""doctor's live-exports check without a Ganesha: when the managed NFS server is not running
(no bus socket, or a socket nobody answers on) it says so instead of reporting every volume's
export as missing. The comparison itself runs against a real Ganesha in
tests/integration/nfs/test_doctor_live.py."""

from __future__ import annotations

import socket
from pathlib import Path

from sharevol.nfs.conf import dbus_conf
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from sharevol.service.doctor import DoctorReport, run_doctor
from sharevol.service.doctor.live_exports import bus_socket


def live(report: DoctorReport) -> list[tuple[str, str, str]]:
    return [
        (line.status, line.subject, line.message)
        for line in report.lines
        if line.check == "live-exports"
    ]


def config(tmp_path: Path) -> ServerConfig:
    root = tmp_path / "pool"
    root.mkdir(exist_ok=True)
    return ServerConfig(
        pools=(PoolConfig(name="plain", path=root, kind="plain"),),
        nfs=NfsConfig(bind="127.0.0.1"),
    )


def test_without_a_running_nfs_server_the_live_check_is_skipped_saying_why(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    (state / "nfs").mkdir(parents=True)

    [(status, _subject, message)] = live(run_doctor(config(tmp_path), state_dir=state))

    assert status == "skipped"
    assert "the managed NFS server is not running" in message


def test_a_bus_socket_nobody_answers_on_is_a_warning(tmp_path: Path) -> None:
    runtime = tmp_path / "state" / "nfs"
    runtime.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as stale:  # left by a killed dbus-daemon
        stale.bind(str(runtime / "dbus.sock"))

    [(status, subject, message)] = live(run_doctor(config(tmp_path), state_dir=tmp_path / "state"))

    assert (status, subject) == ("warning", str(runtime / "dbus.sock"))
    assert "Ganesha does not answer" in message


def test_the_bus_socket_is_where_the_servers_dbus_conf_says(tmp_path: Path) -> None:
    """A long state dir puts the socket under /tmp (sharevol.nfs.ganesha); dbus.conf names it."""
    runtime = tmp_path / "nfs"
    runtime.mkdir()
    elsewhere = tmp_path / "short" / "dbus.sock"
    elsewhere.parent.mkdir()
    (runtime / "dbus.conf").write_text(dbus_conf(elsewhere))

    assert bus_socket(runtime) is None
    elsewhere.touch()
    assert bus_socket(runtime) == elsewhere


def test_with_the_nfs_server_off_in_pools_yaml_the_live_check_says_so(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    root.mkdir()
    plain = ServerConfig(pools=(PoolConfig(name="plain", path=root, kind="plain"),))

    [(status, _subject, message)] = live(run_doctor(plain, state_dir=tmp_path))

    assert status == "skipped"
    assert "turns the managed NFS server off" in message
