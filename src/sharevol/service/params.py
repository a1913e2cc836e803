"""StorageClass parameters: validated against a schema once, at the edge of CreateVolume.

An unknown key is INVALID_ARGUMENT (a typo such as `ondelete` must not silently mean the
default). The `csi.storage.k8s.io/*` keys are what the external-provisioner adds with
`--extra-create-metadata`; they feed the directory name template.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sharevol.catalog.records import OnDelete
from sharevol.errors import InvalidArgument

MAX_MAP_BYTES = 4096
PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"


class VolumeParameters(BaseModel):
    """The parameters of one CreateVolume, as StorageClass authors write them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    on_delete: OnDelete = Field(default=OnDelete.DELETE, alias="onDelete")
    sub_dir: str | None = Field(default=None, alias="subDir", max_length=256)
    pvc_name: str | None = Field(default=None, alias=PVC_NAME, max_length=253)
    pvc_namespace: str | None = Field(default=None, alias=PVC_NAMESPACE, max_length=63)
    pv_name: str | None = Field(default=None, alias=PV_NAME, max_length=253)


def check_map_size(values: Mapping[str, str], what: str) -> None:
    """CSI: a map field is at most 4 KiB."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > MAX_MAP_BYTES:
        raise InvalidArgument(f"{what} is {size} bytes; CSI allows at most {MAX_MAP_BYTES}")


def parse_parameters(values: Mapping[str, str]) -> VolumeParameters:
    """Validate StorageClass parameters; the error names each bad key and what is allowed."""
    check_map_size(values, "parameters")
    try:
        return VolumeParameters.model_validate(dict(values))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "parameters"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown parameter {key!r}")
            else:
                problems.append(f"parameter {key!r}: {error['msg']}")
        allowed = ", ".join(
            field.alias or name for name, field in VolumeParameters.model_fields.items()
        )
        raise InvalidArgument("; ".join(problems) + f" (known parameters: {allowed})") from None
