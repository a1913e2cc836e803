"""NFS settings at the edges: StorageClass parameters, the pools.yaml `nfs:` section, and
`sharevol up --nfs ADDRESS[:PORT]`."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from pydantic import ValidationError

from sharevol.cli.nfs_option import NfsListen, nfs_config
from sharevol.errors import InvalidArgument
from sharevol.pools.config import NfsConfig, PoolConfig, ServerConfig
from sharevol.service.params import parse_parameters

ANY = "0.0.0.0"  # noqa: S104 - the wildcard address is what these tests are about


def test_nfs_parameters_default_to_root_squash_and_no_owner() -> None:
    params = parse_parameters({})

    assert (params.nfs_export, params.root_squash) == (None, "true")
    assert (params.uid, params.gid, params.mode) == (None, None, None)


def test_nfs_parameters_are_parsed() -> None:
    params = parse_parameters(
        {"nfsExport": "true", "rootSquash": "false", "uid": "1000", "gid": "0", "mode": "2770"}
    )

    assert (params.nfs_export, params.root_squash) == ("true", "false")
    assert (params.uid, params.gid, params.mode) == (1000, 0, "2770")


@pytest.mark.parametrize(
    "bad",
    [
        {"rootSquash": "yes"},
        {"nfsExport": "1"},
        {"uid": "1.0"},
        {"uid": "-1"},
        {"gid": "+5"},
        {"uid": "4294967295"},
        {"mode": "0999"},
        {"mode": "77777"},
        {"mode": "rwx"},
    ],
)
def test_bad_nfs_parameters_are_invalid_argument(bad: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument, match=next(iter(bad))):
        parse_parameters(bad)


def pools(*, node_local: bool = False) -> tuple[PoolConfig, ...]:
    return (
        PoolConfig(name="fast", path=Path("/srv/fast")),
        PoolConfig(name="local", path=Path("/srv/local"), node_local=node_local),
    )


def test_exported_pools_default_to_every_pool_that_is_not_node_local() -> None:
    config = ServerConfig(pools=pools(node_local=True), nfs=NfsConfig(bind="10.0.0.1"))

    assert config.nfs_pools() == ("fast",)
    assert ServerConfig(pools=pools()).nfs_pools() == ()
    off = NfsConfig(bind="10.0.0.1", enabled=False)
    assert ServerConfig(pools=pools(), nfs=off).nfs_pools() == ()


def test_nfs_pools_must_name_configured_pools() -> None:
    with pytest.raises(ValidationError, match="unknown pools"):
        ServerConfig(pools=pools(), nfs=NfsConfig(bind="10.0.0.1", pools=("nope",)))


def test_a_wildcard_bind_needs_the_address_nodes_mount_from() -> None:
    with pytest.raises(ValidationError, match=r"set nfs\.address"):
        NfsConfig(bind=ANY)
    config = NfsConfig(bind=ANY, address="nfs.example.com")
    assert config.mount_address == "nfs.example.com"
    assert NfsConfig(bind="10.0.0.1").mount_address == "10.0.0.1"


@pytest.mark.parametrize(
    "changes",
    [{"bind": "localhost"}, {"address": "bad_name!"}, {"clients": ("10.0.0.0/33",)}, {"port": 0}],
)
def test_bad_nfs_config_is_refused(changes: dict[str, object]) -> None:
    values: dict[str, object] = {"bind": "10.0.0.1", **changes}
    with pytest.raises(ValidationError):
        NfsConfig.model_validate(values)


def test_clients_are_normalised_addresses_or_networks() -> None:
    config = NfsConfig(bind="10.0.0.1", clients=("10.0.0.7", "10.1.2.3/16", "fd00::0001"))

    assert config.clients == ("10.0.0.7", "10.1.0.0/16", "fd00::1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:20490", ("127.0.0.1", 20490)),
        (ANY, (ANY, 2049)),
        ("[::1]:20490", ("::1", 20490)),
        ("::1", ("::1", 2049)),
    ],
)
def test_up_nfs_option_parses_address_and_port(text: str, expected: tuple[str, int]) -> None:
    assert NfsListen().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["localhost:2049", "127.0.0.1:0", "127.0.0.1:x", "1.2.3:4"])
def test_up_nfs_option_refuses_bad_values(text: str) -> None:
    with pytest.raises(click.BadParameter):
        NfsListen().convert(text, None, None)


def test_up_on_loopback_lets_the_machine_itself_mount() -> None:
    config = nfs_config(("127.0.0.1", 20490), "")

    assert config is not None
    assert (config.bind, config.port, config.clients) == ("127.0.0.1", 20490, ("127.0.0.1",))
    assert nfs_config(None, "") is None
    lan = nfs_config((ANY, 2049), "192.168.1.0/24")
    assert lan is not None and lan.clients == ("192.168.1.0/24",)
