"""Pool configuration (`pools.yaml`), validated once at start-up into frozen models.

    pools:
      - name: fast
        path: /srv/sharevol/fast      # a mounted filesystem; kind detected when omitted
        kind: btrfs                   # auto | btrfs | xfs | ext4 | plain | nfs
        node_local: false             # true pins volumes to this node (topology)
        overcommit: 1.0               # provisioned sizes may reach total x overcommit
        enforce_quota: true           # xfs/ext4: false starts even with project quota off
      - name: nas                     # an NFS share you already run (kind nfs)
        kind: nfs
        path: /var/lib/sharevol/shares/nas   # where sharevol mounts the share (empty dir)
        server: 192.168.30.147
        share: /data/k8s
        mount_options: [hard]         # added to vers=4.1 (port=N picks another port)
    default_pool: fast
    nfs:                              # optional: the managed NFS server (NFS-Ganesha)
      bind: 0.0.0.0                   # address Ganesha listens on
      port: 2049
      address: 10.0.0.10              # what nodes mount from (required with a wildcard bind)
      pools: [fast]                   # exported pools (default: every pool not node_local)
      clients: []                     # always allowed besides published nodes (IPs, CIDRs)
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sharevol.errors import InvalidArgument
from sharevol.sys.nfs_mount import check_export_path, check_server, merge_options

PoolKind = Literal["auto", "btrfs", "xfs", "ext4", "plain", "nfs"]


class PoolConfig(BaseModel):
    """One pool as the admin wrote it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    path: Path
    kind: PoolKind = "auto"
    node_local: bool = False
    overcommit: float = Field(default=1.0, ge=0.1, le=100.0)
    enforce_quota: bool = True
    """xfs/ext4: refuse to start when the filesystem does not enforce project quotas; with
    false the pool starts anyway and reports its volumes' sizes as not enforced."""

    server: str | None = None
    """kind nfs: the NFS server of the share (IP address or DNS name)."""
    share: str | None = None
    """kind nfs: the exported path on that server; `path` is where sharevol mounts it."""
    mount_options: tuple[str, ...] = ()
    """kind nfs: `mount -t nfs4 -o` options of the controller's mount and of the nodes'."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"pool path {value} must be absolute")
        return value

    @model_validator(mode="after")
    def _share_fields(self) -> PoolConfig:
        """kind nfs needs server and share (checked like a static PV's); others have none."""
        if self.kind != "nfs":
            if self.server is not None or self.share is not None or self.mount_options:
                raise ValueError(
                    f"pool {self.name}: server, share and mount_options are for kind: nfs"
                )
            return self
        if not self.server or not self.share:
            raise ValueError(f"pool {self.name}: kind nfs needs server and share")
        if self.node_local:
            raise ValueError(f"pool {self.name}: an NFS share cannot be node_local")
        try:
            check_server(self.server)
            check_export_path(self.share)
            merge_options(self.mount_options)
        except InvalidArgument as exc:
            raise ValueError(f"pool {self.name}: {exc}") from exc
        return self


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class NfsConfig(BaseModel):
    """The managed NFS server: NFS-Ganesha exporting each volume of the exported pools."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    bind: str = "0.0.0.0"  # noqa: S104 - an NFS server listens on the node's network
    port: int = Field(default=2049, ge=1, le=65535)
    address: str | None = None
    """What nodes mount from: an IP address or DNS name; defaults to `bind` when that is not a
    wildcard."""
    pools: tuple[str, ...] | None = None
    """Exported pools; None means every pool that is not node_local."""
    clients: tuple[str, ...] = ()
    """Addresses or CIDR networks allowed on every export, besides the published nodes."""

    @field_validator("bind")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))

    @field_validator("address")
    @classmethod
    def _mount_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if _DNS_NAME.fullmatch(value):
                return value
        raise ValueError(f"nfs address {value!r} is neither an IP address nor a DNS name")

    @field_validator("clients")
    @classmethod
    def _client_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            str(ipaddress.ip_network(c, strict=False) if "/" in c else ipaddress.ip_address(c))
            for c in value
        )

    @model_validator(mode="after")
    def _reachable(self) -> NfsConfig:
        if self.address is None and ipaddress.ip_address(self.bind).is_unspecified:
            raise ValueError(
                f"nfs.bind {self.bind} is a wildcard: set nfs.address to the address nodes "
                "mount from"
            )
        return self

    @property
    def mount_address(self) -> str:
        """The server address written into each volume's context for the nodes."""
        return self.address or self.bind


class ServerConfig(BaseModel):
    """Everything `sharevol serve --config` reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pools: tuple[PoolConfig, ...] = Field(min_length=1)
    default_pool: str | None = None
    nfs: NfsConfig | None = None

    @model_validator(mode="after")
    def _names(self) -> ServerConfig:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        if self.default_pool is not None and self.default_pool not in names:
            raise ValueError(f"default_pool {self.default_pool!r} is not one of {names}")
        unknown = [p for p in (self.nfs.pools or ()) if p not in names] if self.nfs else []
        if unknown:
            raise ValueError(f"nfs.pools names unknown pools {unknown}; pools are {names}")
        shares = {p.name for p in self.pools if p.kind == "nfs"}
        reexported = [p for p in (self.nfs.pools or ()) if p in shares] if self.nfs else []
        if reexported:
            raise ValueError(
                f"nfs.pools names NFS share pools {reexported}: nodes mount those shares "
                "directly, Ganesha does not re-export them"
            )
        return self

    def nfs_pools(self) -> tuple[str, ...]:
        """The pools the managed NFS server exports (none when it is off)."""
        if self.nfs is None or not self.nfs.enabled:
            return ()
        if self.nfs.pools is not None:
            return self.nfs.pools
        return tuple(p.name for p in self.pools if not p.node_local and p.kind != "nfs")

    @property
    def default(self) -> str:
        return self.default_pool or self.pools[0].name


def load_config(path: Path) -> ServerConfig:
    """Read and validate a pools.yaml; InvalidArgument with the reason when it is wrong."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"cannot read config {path}: {exc}") from exc
    try:
        return ServerConfig.model_validate(raw)
    except ValidationError as exc:
        raise InvalidArgument(f"invalid config {path}: {exc}") from exc
