"""The connection every `sharevol volume ...` and `sharevol snapshot ...` command makes: the
group's endpoint settings and a client whose failures leave as one-line `error: ...` CliErrors
(exit code 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from sharevol.cli.client import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT, ClientError, SharevolClient
from sharevol.cli.common import CliError
from sharevol.errors import SharevolError


@dataclass(frozen=True)
class Settings:
    """What the group's options say: where the server is and how long to wait."""

    endpoint: str
    timeout: float


@contextmanager
def session(ctx: click.Context) -> Iterator[SharevolClient]:
    """A connected client; client and OS failures leave as one-line CliErrors."""
    settings = ctx.find_object(Settings)
    if settings is None:  # only when a command is invoked without its group
        settings = Settings(DEFAULT_ENDPOINT, DEFAULT_TIMEOUT)
    try:
        with SharevolClient(settings.endpoint, settings.timeout) as client:
            yield client
    except (ClientError, SharevolError) as error:
        raise CliError(str(error)) from None
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        raise CliError(f"{error.strerror or error}{where}") from None


Command = TypeVar("Command", bound=Callable[..., Any])


def server_options(command: Command) -> Command:
    """`--endpoint` and `--timeout`, the same on every command that talks to the server."""
    command = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds to wait for each call to the server.",
    )(command)
    return click.option(
        "--endpoint",
        envvar="SHAREVOL_ENDPOINT",
        default=DEFAULT_ENDPOINT,
        show_default=True,
        show_envvar=True,
        help="The server's socket, as `sharevol up` serves it.",
    )(command)
