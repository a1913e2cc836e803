"""Render requests for logs with every CSI secret replaced (the csi_secret field option).

The Go sidecars use protosanitizer for this; the rule is "never log secrets" (CSI spec)."""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

from sharevol.csi._proto import csi_pb2

REDACTED = "***stripped***"


def _is_secret(field: Any) -> bool:
    options = field.GetOptions()
    return bool(options.HasExtension(csi_pb2.csi_secret) and options.Extensions[csi_pb2.csi_secret])


def _strip(message: Message) -> None:
    for field, value in message.ListFields():
        if _is_secret(field):
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                # The whole map, keys too, as the Go protosanitizer strips it: a key can be as
                # telling as its value (a secret's field names come from the admin's Secret).
                value.clear()
                value[REDACTED] = REDACTED
            else:
                setattr(message, field.name, REDACTED)
        elif field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue
            if field.is_repeated:
                for item in value:
                    _strip(item)
            else:
                _strip(value)


def redacted(message: Message) -> str:
    """One-line text of `message` with secret fields stripped; the message itself is untouched."""
    copy = type(message)()
    copy.CopyFrom(message)
    _strip(copy)
    return text_format.MessageToString(copy, as_one_line=True)
