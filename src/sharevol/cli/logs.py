"""How `sharevol serve` and `sharevol up` log: text lines for people, or JSON lines for log
pipelines (`--log-format json`), to stderr, with CSI secrets never printed.

A JSON line holds `time` (UTC, RFC 3339), `level`, `logger`, `message`, the structured fields a
log call passed with `extra=` (the interceptor adds `rpc_service`, `rpc_method`, `grpc_code`,
`duration_ms` and, at debug level, the redacted `request`), and `exception` for tracebacks.
Requests are only ever logged through sharevol.csi.redact; as a second line of defence every
protobuf message that reaches a log record (as an argument or a field) is redacted here too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import IO, Any, Literal

from google.protobuf.message import Message

from sharevol.csi.redact import redacted

__all__ = ["LOG_FORMATS", "JsonFormatter", "RedactingFilter", "configure_logging"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_STANDARD_FIELDS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_OURS = "_sharevol_handler"


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the log call passed with `extra=`: every non-standard attribute of the record."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_FIELDS and not key.startswith("_")
    }


def _safe(value: Any) -> Any:
    return redacted(value) if isinstance(value, Message) else value


class RedactingFilter(logging.Filter):
    """Replace any protobuf message in a record's arguments or extra fields by its redacted
    text, so that even a request logged by mistake shows `***stripped***` for its secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            if any(isinstance(arg, Message) for arg in record.args):
                record.args = tuple(_safe(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _safe(value) for key, value in record.args.items()}
        if isinstance(record.msg, Message):
            record.msg = redacted(record.msg)
        for key, value in _extra_fields(record).items():
            if isinstance(value, Message):
                setattr(record, key, redacted(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values that JSON cannot hold are printed with str()."""

    def format(self, record: logging.LogRecord) -> str:
        created = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    level: str, log_format: str = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record at `level` and above to `stream` (stderr) in `log_format`.

    Replaces the handler an earlier call installed (and only that one); returns the new one."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
