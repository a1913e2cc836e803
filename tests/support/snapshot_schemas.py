"""JSON schemas for the VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1), which the core
Kubernetes schemas of kubernetes-validate do not hold.

Written from the CRDs of kubernetes-csi/external-snapshotter v8 (the fields a user writes:
`driver`, `deletionPolicy`, `parameters`; `spec.source` with exactly one of its two keys,
`spec.volumeSnapshotClassName`). Unknown fields are refused, as the API server's structural
schema pruning would silently drop them.
"""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]

_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
_HEAD: dict[str, Any] = {
    "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
    "metadata": _METADATA,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "VolumeSnapshotClass": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "driver", "deletionPolicy"],
        "properties": {
            **_HEAD,
            "kind": {"const": "VolumeSnapshotClass"},
            "driver": {"type": "string", "minLength": 1},
            "deletionPolicy": {"enum": ["Delete", "Retain"]},
            "parameters": _STRING_MAP,
        },
        "additionalProperties": False,
    },
    "VolumeSnapshot": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            **_HEAD,
            "kind": {"const": "VolumeSnapshot"},
            "spec": {
                "type": "object",
                "required": ["source"],
                "properties": {
                    "source": {
                        "type": "object",
                        "properties": {
                            "persistentVolumeClaimName": {"type": "string"},
                            "volumeSnapshotContentName": {"type": "string"},
                        },
                        "additionalProperties": False,
                        "minProperties": 1,
                        "maxProperties": 1,
                    },
                    "volumeSnapshotClassName": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}


def validate_snapshot_object(document: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when a snapshot CRD object is malformed."""
    schema = SCHEMAS[document["kind"]]
    jsonschema.validate(document, schema)
