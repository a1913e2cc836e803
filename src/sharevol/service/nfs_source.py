"""What a node mounts over NFS, read from a volume's context alone (no catalog, no pool):

- volumes of the managed NFS server and of NFS share pools carry the keys of
  `sharevol.csi.io/nfs-*` (server, port, export, mount options) written by the controller;
- static PVs (a `volumeHandle` that is not a sharevol ID) name an existing path on any NFS
  server with the attributes `server`, `share` and `subdir` (examples/seed/10-pv1.yaml).

Everything is validated strictly before it reaches `mount`: the server is an IP address or a
DNS name, paths are absolute (share) or relative (subdir) and made of plain names, never `..`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sharevol.catalog.records import VolumeRecord
from sharevol.errors import InvalidArgument
from sharevol.pools.nfs_share import BACKEND_EXPORT, BACKEND_OPTIONS, BACKEND_PORT, BACKEND_SERVER
from sharevol.service.ids import parse_volume_id
from sharevol.sys.nfs_mount import (
    check_export_path,
    check_server,
    check_subdir,
    nfs_device,
    split_options,
)

CONTEXT_PREFIX = "sharevol.csi.io/"
SERVER_KEY = f"{CONTEXT_PREFIX}nfs-server"
PORT_KEY = f"{CONTEXT_PREFIX}nfs-port"
EXPORT_KEY = f"{CONTEXT_PREFIX}nfs-export"
OPTIONS_KEY = f"{CONTEXT_PREFIX}nfs-mount-options"
STATIC_KEYS = ("server", "share", "subdir")
"""Volume attributes of a static PV (examples/seed/10-pv1.yaml)."""
CO_PREFIX = "csi.storage.k8s.io/"
"""Keys Kubernetes adds to a publish's context (pod info); never ours to check."""


@dataclass(frozen=True)
class NfsSource:
    """An NFS directory to mount: `server:path`, with the options that reach it."""

    server: str
    path: str
    options: tuple[str, ...] = ()
    static: bool = False

    @property
    def device(self) -> str:
        return nfs_device(self.server, self.path)


def nfs_source(volume_id: str, context: Mapping[str, str]) -> NfsSource | None:
    """The NFS directory the context names, or None when it names none (a local volume)."""
    if any(key in context for key in STATIC_KEYS):
        return _static(volume_id, context)
    if SERVER_KEY in context or EXPORT_KEY in context:
        return _dynamic(context)
    return None


def _static(volume_id: str, context: Mapping[str, str]) -> NfsSource:
    if parse_volume_id(volume_id) is not None:
        raise InvalidArgument(
            f"volume {volume_id} is a sharevol volume; the attributes server/share/subdir are "
            "for static PVs (a volumeHandle of your own)"
        )
    unknown = sorted(k for k in context if k not in STATIC_KEYS and not k.startswith(CO_PREFIX))
    if unknown:
        raise InvalidArgument(
            f"static NFS volume {volume_id}: unknown volume attributes {unknown}; "
            f"use {', '.join(STATIC_KEYS)}"
        )
    if not context.get("server") or not context.get("share"):
        raise InvalidArgument(
            f"static NFS volume {volume_id} needs the volume attributes server and share "
            "(and optionally subdir)"
        )
    server = check_server(context["server"], "server")
    share = check_export_path(context["share"], "share")
    subdir = check_subdir(context.get("subdir", ""), "subdir")
    path = share if not subdir else f"{share.rstrip('/')}/{subdir}"
    return NfsSource(server, path, static=True)


def _dynamic(context: Mapping[str, str]) -> NfsSource:
    missing = [k for k in (SERVER_KEY, PORT_KEY, EXPORT_KEY) if not context.get(k)]
    if missing:
        raise InvalidArgument(f"the volume context lacks {missing}; was it edited by hand?")
    server = check_server(context[SERVER_KEY], SERVER_KEY)
    export = check_export_path(context[EXPORT_KEY], EXPORT_KEY)
    port_text = context[PORT_KEY]
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidArgument(f"{PORT_KEY} {port_text[:16]!r} is not a TCP port")
    options = split_options([context.get(OPTIONS_KEY, "")], OPTIONS_KEY)
    options = [o for o in options if not o.startswith("port=")] + [f"port={int(port_text)}"]
    return NfsSource(server, export, tuple(options))


def share_context(record: VolumeRecord) -> dict[str, str]:
    """The volume-context keys of a volume on an NFS share pool (the same keys as the managed
    NFS server's, sharevol.service.exports.nfs_context): nodes mount its folder directly."""
    backend = record.backend
    if record.kind != "directory" or BACKEND_SERVER not in backend:
        return {}
    return {
        SERVER_KEY: str(backend[BACKEND_SERVER]),
        PORT_KEY: str(backend[BACKEND_PORT]),
        EXPORT_KEY: str(backend[BACKEND_EXPORT]),
        OPTIONS_KEY: str(backend[BACKEND_OPTIONS]),
    }
