"""Log lines: JSON lines with the standard and structured fields, and no secret ever, whatever
reaches a log record (a request passed as an argument or a field by mistake)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sharevol.cli.logs import JsonFormatter, RedactingFilter, configure_logging
from sharevol.csi._proto import csi_pb2

SECRET = "s3cr3t-token-value"


def request_with_secret() -> csi_pb2.NodeStageVolumeRequest:
    return csi_pb2.NodeStageVolumeRequest(
        volume_id="fast/0123456789abcdef0123456789abcdef", secrets={"token": SECRET}
    )


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """configure_logging at debug into a buffer; the root logger is put back afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("debug", "json", stream)
    try:
        yield stream, logging.getLogger("sharevol.test")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_and_the_extra_fields(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, log = captured

    log.info("volume %s created", "pvc-1", extra={"rpc_method": "CreateVolume", "bytes": 5})

    (line,) = lines(stream)
    assert line["level"] == "info"
    assert line["logger"] == "sharevol.test"
    assert line["message"] == "volume pvc-1 created"
    assert line["rpc_method"] == "CreateVolume" and line["bytes"] == 5
    assert isinstance(line["time"], str) and line["time"].endswith("Z")


def test_an_exception_goes_into_its_own_field(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, log = captured
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")

    (line,) = lines(stream)
    assert line["level"] == "error"
    assert "ValueError: boom" in str(line["exception"])


def test_a_request_passed_as_an_argument_or_a_field_is_redacted(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, log = captured

    log.warning("got %s", request_with_secret())
    log.warning("got it", extra={"request": request_with_secret()})
    log.warning(request_with_secret())

    assert SECRET not in stream.getvalue()
    assert len(lines(stream)) == 3
    assert all("***stripped***" in json.dumps(line) for line in lines(stream))


def test_text_format_redacts_too() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", "text", stream)
    try:
        logging.getLogger("sharevol.test").info("got %s", request_with_secret())
    finally:
        logging.getLogger().removeHandler(handler)
    assert SECRET not in stream.getvalue()
    assert "INFO sharevol.test: got volume_id" in stream.getvalue()


def test_configuring_again_replaces_only_our_own_handler() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    first = configure_logging("info", "text", io.StringIO())
    second = configure_logging("info", "json", io.StringIO())
    try:
        assert first not in root.handlers
        assert second in root.handlers and other in root.handlers
    finally:
        root.removeHandler(second)
        root.removeHandler(other)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml", io.StringIO())


def test_values_json_cannot_hold_are_printed_as_text() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.where = {1, 2}

    line = json.loads(JsonFormatter().format(record))

    assert line["where"] == "{1, 2}"


def test_the_filter_keeps_every_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (request_with_secret(),), None)

    assert RedactingFilter().filter(record)
    assert SECRET not in record.getMessage()
