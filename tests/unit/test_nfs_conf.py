"""The Ganesha, EXPORT and dbus config text: the measured settings, and no way to inject a
statement through a path, a pseudo path or a client."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharevol.errors import InvalidArgument
from sharevol.nfs.conf import ExportSpec, ServerSettings, dbus_conf, export_conf, ganesha_conf


def spec(**changes: object) -> ExportSpec:
    values: dict[str, object] = {
        "export_id": 7,
        "path": Path("/var/lib/sharevol/nfs/mnt/fast/data"),
        "pseudo": "/fast/data",
    }
    values.update(changes)
    return ExportSpec(**values)  # type: ignore[arg-type]


def test_server_config_is_nfsv4_only_without_rpcbind_services_and_graceless() -> None:
    text = ganesha_conf(ServerSettings("127.0.0.1", 20490, Path("/run/sv")))

    for line in (
        "Protocols = 4;",
        "NFS_Port = 20490;",
        "Bind_addr = 127.0.0.1;",
        "Enable_NLM = false;",
        "Enable_UDP = false;",
        "Enable_RQUOTA = false;",
        "Graceless = true;",
        "Minor_Versions = 1, 2;",
        'RecoveryRoot = "/run/sv/recovery";',
    ):
        assert line in text
    assert "EXPORT" not in text  # every export is added over DBus


def test_export_gives_access_only_to_listed_clients_and_no_attribute_cache() -> None:
    text = export_conf(spec(rw_clients=("10.0.0.5", "10.1.0.0/16"), ro_clients=("10.0.0.9",)))

    assert "Export_Id = 7;" in text
    assert 'Path = "/var/lib/sharevol/nfs/mnt/fast/data";' in text
    assert 'Pseudo = "/fast/data";' in text
    assert "    Access_Type = None;" in text
    assert "Attr_Expiration_Time = 0;" in text
    assert "CLIENT { Clients = 10.0.0.5, 10.1.0.0/16; Access_Type = RW; Protocols = 4; }" in text
    assert "CLIENT { Clients = 10.0.0.9; Access_Type = RO; Protocols = 4; }" in text


def test_export_without_clients_has_no_client_block() -> None:
    assert "CLIENT" not in export_conf(spec())


def test_root_squash_is_the_default_and_can_be_turned_off() -> None:
    assert "Squash = Root_Squash;" in export_conf(spec())
    assert "Squash = No_Root_Squash;" in export_conf(spec(root_squash=False))
    assert "Anonymous_Uid = 65534;" in export_conf(spec())


@pytest.mark.parametrize(
    "changes",
    [
        {"rw_clients": ("10.0.0.5; Access_Type = RW",)},
        {"rw_clients": ("*",)},
        {"ro_clients": ("host.example",)},
        {"path": Path('/srv/a"; Squash = No_Root_Squash; "')},
        {"path": Path("/srv/a\nEXPORT")},
        {"path": Path("relative/path")},
        {"pseudo": "/fast/../etc"},
        {"pseudo": 'fast"x'},
        {"export_id": 0},
        {"export_id": 65536},
    ],
)
def test_anything_that_could_inject_config_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        export_conf(spec(**changes))


def test_server_settings_refuse_a_bad_address_or_port() -> None:
    with pytest.raises(InvalidArgument):
        ServerSettings("localhost", 2049, Path("/run/sv"))
    with pytest.raises(InvalidArgument):
        ServerSettings("127.0.0.1", 0, Path("/run/sv"))


def test_private_bus_listens_on_its_socket_only() -> None:
    text = dbus_conf(Path("/run/sv/dbus.sock"))

    assert "<type>system</type>" in text
    assert "<listen>unix:path=/run/sv/dbus.sock</listen>" in text
    assert '<allow user="root"/>' in text
