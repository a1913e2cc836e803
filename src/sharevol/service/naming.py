"""The directory a volume gets in its pool: a template rendered from PVC metadata, sanitised.

Syntax (as csi-driver-nfs, so StorageClasses carry over): `${pvc.metadata.namespace}`,
`${pvc.metadata.name}`, `${pv.metadata.name}` between literal text of `[A-Za-z0-9._-]`.
Values must be Kubernetes names (DNS-1123). The result is ONE path component: nested
directories are refused, because cleaning up empty parents of nested volume paths is how
other provisioners deleted whole shares (csi-driver-nfs#855).
"""

from __future__ import annotations

import re

from sharevol.errors import InvalidArgument
from sharevol.service.params import VolumeParameters

_PLACEHOLDER = re.compile(r"\$\{([a-z.]+)\}")
_LITERAL = re.compile(r"^[A-Za-z0-9._-]*$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DIRECTORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _values(params: VolumeParameters) -> dict[str, str | None]:
    return {
        "pvc.metadata.name": params.pvc_name,
        "pvc.metadata.namespace": params.pvc_namespace,
        "pv.metadata.name": params.pv_name,
    }


def render_directory(params: VolumeParameters, default: str) -> str:
    """The volume's directory name: the rendered `subDir` template, or `default` (the uuid)."""
    template = params.sub_dir
    if template is None:
        return default
    values = _values(params)
    pieces: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        pieces.append(_literal(template[position : match.start()], template))
        key = match.group(1)
        if key not in values:
            known = ", ".join("${" + k + "}" for k in values)
            raise InvalidArgument(f"subDir {template!r}: unknown placeholder ${{{key}}} ({known})")
        value = values[key]
        if value is None:
            raise InvalidArgument(
                f"subDir {template!r} uses ${{{key}}} but the request does not carry it: run the "
                "external-provisioner with --extra-create-metadata"
            )
        if not _K8S_NAME.fullmatch(value):
            raise InvalidArgument(f"{key} {value!r} is not a valid Kubernetes name")
        pieces.append(value)
        position = match.end()
    pieces.append(_literal(template[position:], template))
    directory = "".join(pieces)
    if not _DIRECTORY.fullmatch(directory) or directory in (".", ".."):
        raise InvalidArgument(
            f"subDir {template!r} renders to {directory!r}, which is not one directory name "
            "(letters, digits, '.', '_', '-'; starts with a letter or digit; at most 128)"
        )
    return directory


def _literal(text: str, template: str) -> str:
    if not _LITERAL.fullmatch(text):
        raise InvalidArgument(
            f"subDir {template!r}: only letters, digits, '.', '_', '-' and placeholders allowed"
        )
    return text
