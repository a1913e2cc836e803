"""Click plumbing shared by CLI commands: one-line `error:` messages, exit code 1, size values.

kubectl's habit: every failure, usage mistakes included, is one line on stderr and exit 1.
"""

from __future__ import annotations

from typing import IO, Any, NoReturn

import click

from sharevol.errors import SharevolError
from sharevol.units import parse_size

__all__ = ["CliError", "Command", "Group", "Size", "fail"]


class CliError(click.ClickException):
    """A failure the user can act on: printed as one `error: ...` line, exit code 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    """Stop the command with a one-line error."""
    raise CliError(message)


def _usage_error(error: click.UsageError) -> CliError:
    message = error.format_message().rstrip(".")
    message = message[:1].lower() + message[1:]
    if error.ctx is not None:
        message += f" (see `{error.ctx.command_path} --help`)"
    return CliError(message)


class Command(click.Command):
    """A command whose usage errors follow the one-line `error:` / exit 1 rule too."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # shows the help text, which is what the user needs here
        except click.UsageError as error:
            raise _usage_error(error) from None


class Group(click.Group):
    """A group whose own usage errors, and those of its commands, become `error:` lines."""

    command_class = Command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as error:
            raise _usage_error(error) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as error:
            raise _usage_error(error) from None


class Size(click.ParamType[int]):
    """A size such as 1Gi, 500Mi, 1G or plain bytes, converted to int bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            size = parse_size(str(value))
        except SharevolError as error:
            self.fail(str(error), param, ctx)
        if size <= 0:
            self.fail(f"size {value!r} must be more than 0 bytes", param, ctx)
        return size
