"""What every command shares: finding the data directory (or the brokers), opening it, and
reporting errors.

Each `HeadwaterError` becomes one line, "error: ...", on stderr and exit status 1: a command
line tool's user wants the reason, not a traceback. The log manager is always closed, because
closing is what writes the clean-shutdown marker that spares the next open a recovery scan.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from headwater.errors import ConfigError, HeadwaterError
from headwater.log.manager import META_DIRECTORY, LogManager, open_log_manager

DATA_DIR_ENV = "HEADWATER_DATA_DIR"
BROKERS_ENV = "HEADWATER_BROKERS"
DEFAULT_DATA_DIR = "./headwater-data"
# The directory whose presence marks a data directory as Headwater's own.
_META_ROOT = os.path.normpath(META_DIRECTORY).split(os.sep)[0]

# Wide enough that a table piped to a file or another program is never folded or truncated.
_PIPE_WIDTH = 1000

DataDirOption = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help=f"Data directory (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}).",
        show_default=False,
    ),
]

BrokersOption = Annotated[
    str | None,
    typer.Option(
        "--brokers",
        metavar="HOST:PORT[,HOST:PORT]",
        help=f"Talk to these Kafka brokers (headwater serve or Apache Kafka) instead of a data "
        f"directory (default: ${BROKERS_ENV}; either wins over --data-dir).",
        show_default=False,
    ),
]


@dataclass(slots=True)
class CliState:
    """A `--data-dir` or `--brokers` given before the subcommand (`headwater topic --data-dir D
    list`)."""

    data_dir: str | None = None
    brokers: str | None = None


def remember_data_dir(ctx: typer.Context, data_dir: str | None) -> None:
    """Record a group-level `--data-dir`; an inner group's value wins over an outer one's."""
    if data_dir is not None:
        ctx.ensure_object(CliState).data_dir = data_dir


def remember_brokers(ctx: typer.Context, brokers: str | None) -> None:
    """Record a group-level `--brokers`; an inner group's value wins over an outer one's."""
    if brokers is not None:
        ctx.ensure_object(CliState).brokers = brokers


def resolve_brokers(ctx: typer.Context, brokers: str | None) -> str | None:
    """The brokers to talk to, if any: the command's option, a group's, else the environment.

    None means the data directory: brokers, when given, take precedence over it.
    """
    if brokers is not None:
        return brokers
    state = ctx.find_object(CliState)
    if state is not None and state.brokers is not None:
        return state.brokers
    return os.environ.get(BROKERS_ENV, "").strip() or None


def resolve_data_dir(ctx: typer.Context, data_dir: str | None) -> str:
    """The command's own option, else a group's, else the environment, else the default."""
    if data_dir is not None:
        return data_dir
    state = ctx.find_object(CliState)
    if state is not None and state.data_dir is not None:
        return state.data_dir
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def error_line(message: object) -> None:
    """Print one "error: ..." line on stderr (no markup: messages quote user input)."""
    typer.echo(f"error: {message}", err=True)


def fail(message: object) -> NoReturn:
    error_line(message)
    raise typer.Exit(1)


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a `HeadwaterError` raised inside into "error: ..." and exit status 1."""
    try:
        yield
    except HeadwaterError as error:
        fail(error)


def _check_data_dir(path: str, *, create: bool) -> None:
    """Refuse a directory that is neither a Headwater data directory nor new (or empty).

    Opening a directory makes it a data directory, and loading one removes any `NAME-N`
    subdirectory it has no topic for; pointed at the wrong place by a typo, that would delete
    someone's files. So only a directory Headwater made, or one it may make, is opened.
    """
    if os.path.isdir(os.path.join(path, _META_ROOT)):
        return
    hint = f"create a topic first, or set --data-dir or ${DATA_DIR_ENV}"
    if not os.path.exists(path):
        if create:
            return
        raise ConfigError(f"data directory {path} does not exist ({hint})")
    if not os.path.isdir(path):
        raise ConfigError(f"data directory {path} is not a directory")
    if create and not os.listdir(path):
        return
    if create:
        raise ConfigError(
            f"{path} is not a Headwater data directory and is not empty; refusing to use it"
        )
    raise ConfigError(f"{path} is not a Headwater data directory ({hint})")


@contextmanager
def open_data_dir(
    ctx: typer.Context, data_dir: str | None, owner: str, *, create: bool = False
) -> Iterator[LogManager]:
    """Open the data directory under an exclusive lock, and always close it.

    Only commands that make topics (`create=True`) may create the directory: a typo in
    `--data-dir` should say so, not silently show an empty, new directory.
    """
    path = resolve_data_dir(ctx, data_dir)
    with reporting_errors():
        _check_data_dir(path, create=create)
        manager = open_log_manager(path, owner=owner)
        try:
            yield manager
        finally:
            manager.close()


def parse_key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    """Parse repeated `key=value` arguments; raise `ConfigError` on one without '='."""
    result: dict[str, str] = {}
    for pair in pairs or ():
        key, separator, value = pair.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"{what} {pair!r} is not of the form key=value")
        result[key] = value
    return result


def stdout_console() -> Console:
    """A console for tables on stdout, made per call so it follows a redirected `sys.stdout`."""
    width = None if sys.stdout.isatty() else _PIPE_WIDTH
    return Console(highlight=False, markup=False, width=width, soft_wrap=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, markup=False)


def plain_table(*columns: str) -> Table:
    """A borderless table with upper-case headers, like rpk's, easy to read and to `awk`."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="fold")
    return table


def print_table(table: Table) -> None:
    """Print a table on stdout without the trailing blanks rich pads its last column with."""
    console = stdout_console()
    with console.capture() as capture:
        console.print(table)
    lines = capture.get().splitlines()
    typer.echo("\n".join(line.rstrip() for line in lines))


def format_bytes(size: int) -> str:
    """Bytes in binary units for people (e.g. "1.5 MiB"); exact counts go in JSON output."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "BROKERS_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "BrokersOption",
    "CliState",
    "DataDirOption",
    "error_line",
    "fail",
    "format_bytes",
    "open_data_dir",
    "parse_key_values",
    "plain_table",
    "print_table",
    "remember_brokers",
    "remember_data_dir",
    "reporting_errors",
    "resolve_brokers",
    "resolve_data_dir",
    "stderr_console",
    "stdout_console",
]
