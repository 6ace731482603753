"""`headwater topic ...`: create, list, describe, alter and delete topics, like `rpk topic`.

Every command opens the data directory itself, so none of them needs a running server; the
directory lock makes them wait for nobody and fail at once if a server or another command holds
it. With `--brokers HOST:PORT` (or `$HEADWATER_BROKERS`) the same commands talk to a running
broker over the Kafka protocol instead (`headwater serve` or Apache Kafka; see `_remote`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Annotated

import msgspec
import typer

from headwater.cli._common import (
    BrokersOption,
    DataDirOption,
    error_line,
    open_data_dir,
    parse_key_values,
    plain_table,
    print_table,
    remember_brokers,
    remember_data_dir,
    reporting_errors,
    resolve_brokers,
)
from headwater.cli._consume import consume
from headwater.cli._produce import produce
from headwater.errors import ConfigError, HeadwaterError
from headwater.log.manager import LogManager, TopicInfo

topic_app = typer.Typer(
    name="topic",
    help="Create, inspect, produce to and consume from topics in a data directory or on brokers.",
    no_args_is_help=True,
)


@topic_app.callback()
def _topic_group(
    ctx: typer.Context, data_dir: DataDirOption = None, brokers: BrokersOption = None
) -> None:
    """Create, inspect, produce to and consume from topics in a data directory (no server), or
    on running brokers with --brokers.
    """
    remember_data_dir(ctx, data_dir)
    remember_brokers(ctx, brokers)


class OutputFormat(enum.StrEnum):
    """How listing commands print: a table for people or JSON for programs."""

    TABLE = "table"
    JSON = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="Output format.", case_sensitive=False)
]


def _owner(command: str) -> str:
    return f"headwater topic {command}"


def _write_json(value: object) -> None:
    typer.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


# --- create and delete -------------------------------------------------------------------------


@topic_app.command("create")
def create(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Topics to create.")],
    partitions: Annotated[
        int, typer.Option("--partitions", "-p", min=1, help="Partitions per topic.")
    ] = 1,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            metavar="KEY=VALUE",
            help="Topic config override, e.g. -c cleanup.policy=compact (repeatable).",
        ),
    ] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option(
            "--replicas",
            "-r",
            min=1,
            help="Replication factor (brokers only; a data directory has exactly one copy).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Create topics; an existing one is an error, the others are still created."""
    with reporting_errors():
        configs = parse_key_values(config, "config")
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        from headwater.cli import _remote

        _remote.create_topics(remote, names, partitions, replication_factor or 1, configs)
        return
    if replication_factor not in (None, 1):
        raise typer.BadParameter(
            "a data directory keeps one copy: the replication factor must be 1",
            param_hint="'--replicas'",
        )
    failed = False
    with open_data_dir(ctx, data_dir, _owner("create"), create=True) as manager:
        for name in names:
            try:
                info = manager.create_topic(name, partitions, configs)
            except HeadwaterError as error:
                error_line(error)
                failed = True
                continue
            plural = "partition" if info.partition_count == 1 else "partitions"
            typer.echo(f"created topic {name} ({info.partition_count} {plural})")
    if failed:
        raise typer.Exit(1)


@topic_app.command("delete")
def delete(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Topics to delete.")],
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Delete topics and all their records; an unknown one is an error, the others still go."""
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        from headwater.cli import _remote

        _remote.delete_topics(remote, names)
        return
    failed = False
    with open_data_dir(ctx, data_dir, _owner("delete")) as manager:
        for name in names:
            try:
                manager.delete_topic(name)
            except HeadwaterError as error:
                error_line(error)
                failed = True
                continue
            typer.echo(f"deleted topic {name}")
    if failed:
        raise typer.Exit(1)


# --- list and describe -------------------------------------------------------------------------


@topic_app.command("list")
def list_topics(
    ctx: typer.Context,
    output: FormatOption = OutputFormat.TABLE,
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """List topics with their partition counts and cleanup policies."""
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        _list_remote(remote, output)
        return
    with open_data_dir(ctx, data_dir, _owner("list")) as manager:
        topics = manager.topics()
    if output is OutputFormat.JSON:
        _write_json(
            [
                {
                    "name": info.name,
                    "topic_id": str(info.topic_id),
                    "partitions": info.partition_count,
                    "cleanup_policy": info.config.cleanup_policy,
                }
                for info in topics
            ]
        )
        return
    table = plain_table("NAME", "PARTITIONS", "CLEANUP-POLICY")
    for info in topics:
        table.add_row(info.name, str(info.partition_count), info.config.cleanup_policy)
    print_table(table)


def _list_remote(brokers: str, output: OutputFormat) -> None:
    from headwater.cli import _remote

    topics = _remote.list_topics(brokers)
    if output is OutputFormat.JSON:
        _write_json(
            [
                {
                    "name": topic.name,
                    "topic_id": topic.topic_id,
                    "partitions": topic.partitions,
                    "cleanup_policy": topic.cleanup_policy,
                }
                for topic in topics
            ]
        )
        return
    table = plain_table("NAME", "PARTITIONS", "CLEANUP-POLICY")
    for topic in topics:
        table.add_row(topic.name, str(topic.partitions), topic.cleanup_policy)
    print_table(table)


def _partition_rows(manager: LogManager, name: str) -> list[dict[str, int]]:
    return [
        {
            "partition": log.partition,
            "log_start_offset": log.log_start_offset,
            "high_watermark": log.high_watermark,
            "log_end_offset": log.log_end_offset,
            "size_bytes": log.size_bytes,
        }
        for log in manager.partitions(name)
    ]


def _config_rows(info: TopicInfo) -> list[dict[str, str]]:
    return [
        {"name": key, "value": value, "source": "default" if is_default else "override"}
        for key, value, is_default, _ in info.config.describe()
    ]


@topic_app.command("describe")
def describe(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to describe.")],
    output: FormatOption = OutputFormat.TABLE,
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Show a topic's id, its partitions' offsets and sizes, and every config with its source."""
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        _describe_remote(remote, name, output)
        return
    with open_data_dir(ctx, data_dir, _owner("describe")) as manager:
        info = manager.topic(name)
        partitions = _partition_rows(manager, name)
    configs = _config_rows(info)
    if output is OutputFormat.JSON:
        _write_json(
            {
                "name": info.name,
                "topic_id": str(info.topic_id),
                "partitions": partitions,
                "configs": configs,
            }
        )
        return
    summary = plain_table("SUMMARY", "")
    summary.show_header = False
    summary.add_row("NAME", info.name)
    summary.add_row("TOPIC-ID", str(info.topic_id))
    summary.add_row("PARTITIONS", str(info.partition_count))
    typer.echo("SUMMARY\n=======")
    print_table(summary)
    typer.echo("\nPARTITIONS\n==========")
    table = plain_table("PARTITION", "LOG-START-OFFSET", "HIGH-WATERMARK", "SIZE-BYTES")
    for row in partitions:
        table.add_row(
            str(row["partition"]),
            str(row["log_start_offset"]),
            str(row["high_watermark"]),
            str(row["size_bytes"]),
        )
    print_table(table)
    _print_configs(configs)


def _describe_remote(brokers: str, name: str, output: OutputFormat) -> None:
    """Like `describe`, from a broker: partition leaders instead of sizes (not in the protocol
    the clients use)."""
    from headwater.cli import _remote

    details = _remote.describe_topic(brokers, name)
    if output is OutputFormat.JSON:
        _write_json(
            {
                "name": details.name,
                "topic_id": details.topic_id,
                "partitions": details.partitions,
                "configs": details.configs,
            }
        )
        return
    summary = plain_table("SUMMARY", "")
    summary.show_header = False
    summary.add_row("NAME", details.name)
    summary.add_row("TOPIC-ID", details.topic_id)
    summary.add_row("PARTITIONS", str(len(details.partitions)))
    typer.echo("SUMMARY\n=======")
    print_table(summary)
    typer.echo("\nPARTITIONS\n==========")
    table = plain_table("PARTITION", "LEADER", "LOG-START-OFFSET", "HIGH-WATERMARK")
    for row in details.partitions:
        table.add_row(
            str(row["partition"]),
            str(row["leader"]),
            str(row["log_start_offset"]),
            str(row["high_watermark"]),
        )
    print_table(table)
    _print_configs(details.configs)


# --- changes -------------------------------------------------------------------------------


@topic_app.command("alter-config")
def alter_config(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to change.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="KEY=VALUE", help="Set a config (repeatable)."),
    ] = None,
    delete_: Annotated[
        list[str] | None,
        typer.Option(
            "--delete", "-d", metavar="KEY", help="Restore a config's default (repeatable)."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Set or restore topic configs; every change is validated before any is applied."""
    if not set_ and not delete_:
        raise typer.BadParameter("give at least one --set or --delete")
    with reporting_errors():
        changes: dict[str, str | None] = dict(parse_key_values(set_, "config"))
        for key in delete_ or ():
            if key in changes:
                raise ConfigError(f"config {key!r} is both set and deleted")
            changes[key] = None
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        from headwater.cli import _remote

        _remote.alter_config(remote, name, changes)
        return
    with open_data_dir(ctx, data_dir, _owner("alter-config")) as manager:
        info = manager.alter_topic_config(name, changes)
    for key, value in changes.items():
        if value is None:
            typer.echo(f"{name}: restored {key} to its default")
        else:
            typer.echo(f"{name}: set {key}={info.config.overrides.get(key, value)}")


@topic_app.command("add-partitions")
def add_partitions(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to grow.")],
    num: Annotated[
        int, typer.Option("--num", "-n", min=1, help="How many partitions to ADD (not the total).")
    ],
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Add partitions to a topic (Kafka never removes them; keyed records may move)."""
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        from headwater.cli import _remote

        _remote.add_partitions(remote, name, num)
        return
    with open_data_dir(ctx, data_dir, _owner("add-partitions")) as manager:
        current = manager.topic(name).partition_count
        info = manager.create_partitions(name, current + num)
    typer.echo(f"added {num} partitions to {name}: now {info.partition_count}")


topic_app.command("produce")(produce)
topic_app.command("consume")(consume)


def _print_configs(configs: Iterable[Mapping[str, str]]) -> None:
    """The CONFIGS section of `topic describe`, the same for a data directory and brokers."""
    typer.echo("\nCONFIGS\n=======")
    table = plain_table("KEY", "VALUE", "SOURCE")
    for config in configs:
        table.add_row(config["name"], config["value"], config["source"])
    print_table(table)


__all__ = ["OutputFormat", "topic_app"]
