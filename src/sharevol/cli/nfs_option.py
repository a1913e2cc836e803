"""`sharevol up --nfs ADDRESS[:PORT]`: the managed NFS server of the all-in-one machine."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import click
from pydantic import ValidationError

from sharevol.pools.config import NfsConfig

DEFAULT_PORT = 2049


class NfsListen(click.ParamType[tuple[str, int]]):
    """`127.0.0.1:20490`, `[::1]:20490`, `0.0.0.0` (port 2049) -> (address, port)."""

    name = "ADDRESS[:PORT]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return (str(value[0]), int(value[1]))  # already converted (a default)
        text = str(value)
        host, port = text, str(DEFAULT_PORT)
        if text.startswith("["):
            host, _bracket, rest = text[1:].partition("]")
            if rest:
                port = rest.removeprefix(":")
        elif text.count(":") == 1:
            host, port = text.split(":")
        try:
            address = str(ipaddress.ip_address(host))
            number = int(port)
        except ValueError:
            self.fail(f"{text!r} is not ADDRESS[:PORT], for example 127.0.0.1:20490", param, ctx)
        if not 1 <= number <= 65535:
            self.fail(f"port {number} is not between 1 and 65535", param, ctx)
        return address, number


def nfs_config(listen: tuple[str, int] | None, clients: str) -> NfsConfig | None:
    """The `nfs:` section for `up`: every volume exported; clients as given, else loopback
    (the machine itself) when Ganesha listens on loopback."""
    if listen is None:
        return None
    address, port = listen
    bind = ipaddress.ip_address(address)
    allowed = [c.strip() for c in clients.split(",") if c.strip()]
    if not allowed and bind.is_loopback:
        allowed = [address]
    try:
        return NfsConfig(
            bind=address,
            port=port,
            address=socket.gethostname() if bind.is_unspecified else address,
            clients=tuple(allowed),
        )
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--nfs/--nfs-clients") from None
