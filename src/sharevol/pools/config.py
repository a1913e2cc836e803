"""Pool configuration (`pools.yaml`), validated once at start-up into frozen models.

    pools:
      - name: fast
        path: /srv/sharevol/fast      # a mounted filesystem; kind detected when omitted
        kind: btrfs                   # auto | btrfs | plain
        node_local: false             # true pins volumes to this node (topology)
        overcommit: 1.0               # provisioned sizes may reach total x overcommit
    default_pool: fast
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sharevol.errors import InvalidArgument

PoolKind = Literal["auto", "btrfs", "plain"]


class PoolConfig(BaseModel):
    """One pool as the admin wrote it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    path: Path
    kind: PoolKind = "auto"
    node_local: bool = False
    overcommit: float = Field(default=1.0, ge=0.1, le=100.0)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"pool path {value} must be absolute")
        return value


class ServerConfig(BaseModel):
    """Everything `sharevol serve --config` reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pools: tuple[PoolConfig, ...] = Field(min_length=1)
    default_pool: str | None = None

    @model_validator(mode="after")
    def _names(self) -> ServerConfig:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        if self.default_pool is not None and self.default_pool not in names:
            raise ValueError(f"default_pool {self.default_pool!r} is not one of {names}")
        return self

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
