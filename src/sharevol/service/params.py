"""StorageClass parameters: validated against a schema once, at the edge of CreateVolume.

An unknown key is INVALID_ARGUMENT (a typo such as `ondelete` must not silently mean the
default). The `csi.storage.k8s.io/*` keys are what the external-provisioner adds with
`--extra-create-metadata`; they feed the directory name template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sharevol.catalog.records import OnDelete
from sharevol.errors import InvalidArgument

MAX_MAP_BYTES = 4096
PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"


def _decimal(value: object) -> object:
    """uid/gid as StorageClasses write them: plain decimal digits, not `1.0` or `+5`."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,10}", value):
        raise ValueError("must be a decimal number such as 1000")
    return value


NumericId = Annotated[int, BeforeValidator(_decimal), Field(ge=0, le=4294967294)]
"""A uid or gid (4294967295 is -1, "no change", to chown)."""


class VolumeParameters(BaseModel):
    """The parameters of one CreateVolume, as StorageClass authors write them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    on_delete: OnDelete = Field(default=OnDelete.DELETE, alias="onDelete")
    sub_dir: str | None = Field(default=None, alias="subDir", max_length=256)
    pvc_name: str | None = Field(default=None, alias=PVC_NAME, max_length=253)
    pvc_namespace: str | None = Field(default=None, alias=PVC_NAMESPACE, max_length=63)
    pv_name: str | None = Field(default=None, alias=PV_NAME, max_length=253)
    # NFS export and volume root owner (sharevol.service.exports, sharevol.service.ownership)
    nfs_export: Literal["true", "false"] | None = Field(default=None, alias="nfsExport")
    root_squash: Literal["true", "false"] = Field(default="true", alias="rootSquash")
    uid: NumericId | None = None
    gid: NumericId | None = None
    mode: str | None = Field(default=None, pattern=r"^[0-7]{3,4}$")
    # Image volumes: a filesystem in a sparse image file (sharevol.service.images)
    volume_type: Literal["directory", "image"] = Field(default="directory", alias="type")
    fs_type: Literal["ext4", "xfs"] | None = Field(default=None, alias="fsType")
    # Project-quota pools (xfs, ext4): the volume's inode limit (sharevol.pools._project)
    max_files: Annotated[int, BeforeValidator(_decimal), Field(ge=1)] | None = Field(
        default=None, alias="maxFiles"
    )


ParametersModel = TypeVar("ParametersModel", bound=BaseModel)


def check_map_size(values: Mapping[str, str], what: str) -> None:
    """CSI: a map field is at most 4 KiB."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > MAX_MAP_BYTES:
        raise InvalidArgument(f"{what} is {size} bytes; CSI allows at most {MAX_MAP_BYTES}")


def parse_parameters(values: Mapping[str, str]) -> VolumeParameters:
    """Validate StorageClass parameters; the error names each bad key and what is allowed."""
    return parse_model(VolumeParameters, values)


def parse_model(model: type[ParametersModel], values: Mapping[str, str]) -> ParametersModel:
    """Validate a CSI parameters map into `model` (extra="forbid"): INVALID_ARGUMENT naming each
    bad key and listing the known ones."""
    check_map_size(values, "parameters")
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "parameters"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown parameter {key!r}")
            else:
                problems.append(f"parameter {key!r}: {error['msg']}")
        allowed = ", ".join(field.alias or name for name, field in model.model_fields.items())
        raise InvalidArgument("; ".join(problems) + f" (known parameters: {allowed})") from None
