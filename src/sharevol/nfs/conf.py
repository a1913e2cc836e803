"""The text NFS-Ganesha and its private dbus-daemon read: rendered from typed values, checked so
that nothing a request carried can inject a config statement.

Measured facts behind the choices (test-machine-storage.md, section 5): NFSv4 only with NLM,
RQUOTA and UDP off needs no rpcbind (with v3 or RQUOTA on and no rpcbind, Ganesha 4.3 exits);
`Attr_Expiration_Time = 0` makes changes made on the server visible at once; a CLIENT block
without `Protocols = 4` makes Ganesha log a warning on every export it adds.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from sharevol.errors import InvalidArgument

ANONYMOUS_ID = 65534
"""The uid and gid squashed users become (nobody/nogroup on Debian)."""

_PSEUDO = re.compile(r"^(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){1,4}$")
_UNSAFE_PATH_CHARS = re.compile(r'["\\\x00-\x1f\x7f]')


@dataclass(frozen=True)
class ServerSettings:
    """How Ganesha listens and where it keeps its files."""

    bind: str
    port: int
    runtime_dir: Path
    lease_seconds: int = 60

    def __post_init__(self) -> None:
        check_address(self.bind, "bind address")
        if not 1 <= self.port <= 65535:
            raise InvalidArgument(f"NFS port {self.port} is not between 1 and 65535")
        quoted_path(self.runtime_dir)


@dataclass(frozen=True)
class ExportSpec:
    """One volume's export: what Ganesha serves, at which pseudo path, to whom."""

    export_id: int
    path: Path
    """A mount point (Ganesha exports btrfs subvolumes only when they are mount points)."""
    pseudo: str
    root_squash: bool = True
    rw_clients: tuple[str, ...] = ()
    ro_clients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.export_id <= 65535:
            raise InvalidArgument(f"export id {self.export_id} is not between 1 and 65535")
        if not _PSEUDO.fullmatch(self.pseudo):
            raise InvalidArgument(f"invalid NFS pseudo path {self.pseudo!r}")
        quoted_path(self.path)
        for client in (*self.rw_clients, *self.ro_clients):
            check_client(client)


def check_address(value: str, what: str) -> str:
    """An IPv4 or IPv6 address, as Ganesha's Bind_addr and CLIENT lists take it."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"{what} {value!r} is not an IP address") from None


def check_client(value: str) -> str:
    """An address or a CIDR network (`10.0.0.0/24`): nothing else reaches a CLIENT block (an
    IPv6 zone such as `%eth0` neither: Ganesha's parser refuses `%`)."""
    if "%" in value:
        raise InvalidArgument(f"NFS client {value!r}: an IPv6 zone (%...) cannot be a client")
    try:
        if "/" in value:
            return str(ipaddress.ip_network(value, strict=False))
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(
            f"NFS client {value!r} is not an IP address or a CIDR network"
        ) from None


def quoted_path(path: Path) -> str:
    """A path as a quoted config string; refuses quotes, backslashes and control characters."""
    text = str(path)
    if not path.is_absolute() or _UNSAFE_PATH_CHARS.search(text):
        raise InvalidArgument(f"path {text!r} cannot be written into a Ganesha config")
    return f'"{text}"'


def ganesha_conf(settings: ServerSettings) -> str:
    """The main config: NFSv4.1/4.2 over TCP only, no rpcbind, no grace period, no exports
    (every export is added over DBus, so a restart rebuilds them from the catalog)."""
    recovery = quoted_path(settings.runtime_dir / "recovery")
    return f"""# Written by sharevol at every start; exports are added at runtime over DBus.
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {settings.port};
    Bind_addr = {settings.bind};
    Enable_NLM = false;
    Enable_UDP = false;
    Enable_RQUOTA = false;
}}
NFSv4 {{
    Graceless = true;
    Minor_Versions = 1, 2;
    Lease_Lifetime = {settings.lease_seconds};
    RecoveryRoot = {recovery};
    Only_Numeric_Owners = true;
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
LOG {{
    Default_Log_Level = EVENT;
    COMPONENTS {{
        PNFS = CRIT;
    }}
}}
"""


def export_conf(spec: ExportSpec) -> str:
    """One EXPORT block for AddExport/UpdateExport. Everyone not listed gets no access at all
    (`Access_Type = None`), so an export is invisible to nodes it is not published to."""
    squash = "Root_Squash" if spec.root_squash else "No_Root_Squash"
    clients = ""
    for access, addresses in (("RW", spec.rw_clients), ("RO", spec.ro_clients)):
        if addresses:
            listed = ", ".join(check_client(a) for a in addresses)
            clients += (
                f"    CLIENT {{ Clients = {listed}; Access_Type = {access}; Protocols = 4; }}\n"
            )
    return f"""EXPORT {{
    Export_Id = {spec.export_id};
    Path = {quoted_path(spec.path)};
    Pseudo = "{spec.pseudo}";
    Access_Type = None;
    Squash = {squash};
    Anonymous_Uid = {ANONYMOUS_ID};
    Anonymous_Gid = {ANONYMOUS_ID};
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    Attr_Expiration_Time = 0;
{clients}    FSAL {{
        Name = VFS;
    }}
}}
"""


def dbus_conf(socket_path: Path) -> str:
    """A private system-type bus on a unix socket inside a 0700 directory: only this machine's
    root can reach it, and nothing else on the host's real system bus sees Ganesha."""
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={_xml_path(socket_path)}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def _xml_path(path: Path) -> str:
    quoted_path(path)  # the same character rules
    if any(c in str(path) for c in "<>&',;="):
        raise InvalidArgument(f"path {path} cannot be written into a dbus config")
    return str(path)
