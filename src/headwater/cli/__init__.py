"""The `headwater` command line: topics and logs in a data directory, no server needed.

Shaped like Redpanda's `rpk topic`: `headwater topic create|list|describe|delete|alter-config|
add-partitions|produce|consume`, plus `headwater log verify` to scrub the logs.
"""

from __future__ import annotations

import typer

from headwater.cli._common import (
    BrokersOption,
    DataDirOption,
    error_line,
    remember_brokers,
    remember_data_dir,
)
from headwater.cli._group import group_app
from headwater.cli._log import log_app
from headwater.cli._serve import serve_command
from headwater.cli._topic import topic_app
from headwater.errors import HeadwaterError

app = typer.Typer(
    name="headwater",
    help="Headwater: a log-centric event-streaming platform that speaks Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(topic_app)
app.add_typer(group_app)
app.add_typer(log_app)
app.command("serve")(serve_command)


@app.callback()
def _root(
    ctx: typer.Context, data_dir: DataDirOption = None, brokers: BrokersOption = None
) -> None:
    """Headwater: a log-centric event-streaming platform that speaks Kafka."""
    remember_data_dir(ctx, data_dir)
    remember_brokers(ctx, brokers)


def main() -> None:
    """The console script: run the app, reporting any stray Headwater error in one line."""
    try:
        app(prog_name="headwater")
    except HeadwaterError as error:  # every command reports its own; this is the backstop
        error_line(error)
        raise SystemExit(1) from None


__all__ = ["app", "main"]
