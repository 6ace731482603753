"""`headwater group list|describe|delete|seek --brokers HOST:PORT`: consumer groups, like rpk's.

Over the Kafka protocol only, through librdkafka's admin client against any Kafka broker
(`headwater serve` or Apache Kafka); a data directory has no groups to show yet. As with the
topic commands, every failure becomes one "error: ..." line on stderr and exit status 1.

`seek` rewrites a group's committed offsets, which Kafka allows only while the group has no
active members (a live consumer would overwrite them with its own commits anyway).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer

from headwater.cli._common import (
    BrokersOption,
    error_line,
    plain_table,
    print_table,
    remember_brokers,
    reporting_errors,
    resolve_brokers,
)
from headwater.errors import ConfigError

if TYPE_CHECKING:
    from confluent_kafka import KafkaException

# confluent-kafka is imported only by the commands that use it, as the topic commands do: it
# is slow to load, and `headwater --help` or a data directory command should not pay for it.

group_app = typer.Typer(
    name="group",
    help="List, describe, delete and seek consumer groups on running brokers (--brokers).",
    no_args_is_help=True,
)

NEED_BROKERS = "group commands need --brokers (a running broker) for now"

# librdkafka's "no committed offset" (OFFSET_INVALID).
_NO_OFFSET = -1001

_STATE_NAMES = {
    "UNKNOWN": "Unknown",
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
    "STABLE": "Stable",
    "DEAD": "Dead",
    "EMPTY": "Empty",
}


@group_app.callback()
def _group_group(ctx: typer.Context, brokers: BrokersOption = None) -> None:
    """List, describe, delete and seek consumer groups on running brokers (--brokers)."""
    remember_brokers(ctx, brokers)


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="Output format.", case_sensitive=False)
]


def _need_brokers(ctx: typer.Context, brokers: str | None) -> str:
    remote = resolve_brokers(ctx, brokers)
    if remote is None:
        error_line(NEED_BROKERS)
        raise typer.Exit(1)
    return remote


def _write_json(value: object) -> None:
    typer.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _state_name(state: object) -> str:
    name = getattr(state, "name", None)  # a ConsumerGroupState
    if isinstance(name, str):
        return _STATE_NAMES.get(name, name.title())
    return "Unknown" if state is None else str(state)


# --- talking to the brokers --------------------------------------------------------------------


def _group_error(group: str, exception: KafkaException, action: str) -> str:
    from confluent_kafka import KafkaError

    from headwater.cli import _remote

    code = _remote._code(exception)
    if code == KafkaError.NON_EMPTY_GROUP:
        return f"group {group!r} has active members; stop its consumers before you {action} it"
    if code == KafkaError.GROUP_ID_NOT_FOUND:
        return f"unknown group {group!r}"
    if code in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS):
        return f"group {group!r} has active members; stop its consumers before you {action} it"
    if code in (KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION):
        return f"cannot {action} group {group!r}: the broker does not support it"
    return f"cannot {action} group {group!r}: {_remote._describe(exception)}"


def _result(future: Any, group: str, action: str) -> Any:
    from confluent_kafka import KafkaException

    from headwater.cli import _remote

    try:
        return future.result()
    except KafkaException as exception:
        raise _remote.RemoteError(_group_error(group, exception, action)) from None


@dataclass(slots=True)
class _Member:
    member_id: str
    client_id: str
    host: str
    partitions: list[tuple[str, int]]


@dataclass(slots=True)
class _Group:
    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: list[_Member] = field(default_factory=list)


def _describe_group(cluster: Any, group: str) -> _Group:
    """The group's state and members; a group the broker does not know is "Dead", as Kafka
    reports it (newer brokers answer GROUP_ID_NOT_FOUND instead)."""
    from confluent_kafka import KafkaError, KafkaException

    from headwater.cli import _remote

    futures = cluster.admin.describe_consumer_groups(
        [group], request_timeout=_remote._REQUEST_TIMEOUT_S
    )
    try:
        description = futures[group].result()
    except KafkaException as exception:
        if _remote._code(exception) == KafkaError.GROUP_ID_NOT_FOUND:
            return _Group(group, "Dead", "", "")
        raise _remote.RemoteError(_group_error(group, exception, "describe")) from None
    members = [
        _Member(
            member.member_id,
            member.client_id or "",
            member.host or "",
            sorted(
                (tp.topic, tp.partition)
                for tp in (member.assignment.topic_partitions if member.assignment else [])
            ),
        )
        for member in description.members or []
    ]
    return _Group(
        group,
        _state_name(description.state),
        "" if description.is_simple_consumer_group else "consumer",
        description.partition_assignor or "",
        sorted(members, key=lambda member: member.member_id),
    )


def _committed(cluster: Any, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets per (topic, partition)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    from headwater.cli import _remote

    futures = cluster.admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=_remote._REQUEST_TIMEOUT_S
    )
    result = _result(futures[group], group, "read the offsets of")
    offsets: dict[tuple[str, int], int] = {}
    for tp in result.topic_partitions or []:
        if tp.error is not None:
            raise _remote.RemoteError(
                f"cannot read the offset of group {group!r} on {tp.topic}/{tp.partition}: "
                f"{_remote._error_text(tp.error)}"
            )
        if tp.offset >= 0:
            offsets[(tp.topic, tp.partition)] = int(tp.offset)
    return offsets


def _require_inactive(group: _Group, action: str) -> None:
    if group.members:
        count = len(group.members)
        plural = "member" if count == 1 else "members"
        from headwater.cli import _remote

        raise _remote.RemoteError(
            f"group {group.group_id!r} has {count} active {plural} (state {group.state}); "
            f"stop its consumers before you {action} it"
        )


# --- list --------------------------------------------------------------------------------------


@group_app.command("list")
def list_groups(
    ctx: typer.Context, output: FormatOption = OutputFormat.TABLE, brokers: BrokersOption = None
) -> None:
    """List consumer groups with their states and protocol types."""
    remote = _need_brokers(ctx, brokers)
    from confluent_kafka import KafkaError

    from headwater.cli import _remote

    with _remote.open_cluster(remote) as cluster:
        future = cluster.admin.list_consumer_groups(request_timeout=_remote._REQUEST_TIMEOUT_S)
        result = _result(future, "*", "list")
        for error in result.errors or []:
            text = _remote._error_text(error) if isinstance(error, KafkaError) else str(error)
            error_line(f"a broker did not list its groups: {text}")
        rows = sorted(
            (
                listing.group_id,
                _state_name(getattr(listing, "state", None)),
                "" if listing.is_simple_consumer_group else "consumer",
            )
            for listing in result.valid or []
        )
    if output is OutputFormat.JSON:
        _write_json(
            [{"group": group, "state": state, "protocol_type": kind} for group, state, kind in rows]
        )
        return
    table = plain_table("GROUP", "STATE", "PROTOCOL-TYPE")
    for row in rows:
        table.add_row(*row)
    print_table(table)


# --- describe ----------------------------------------------------------------------------------


@group_app.command("describe")
def describe(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(metavar="GROUP", help="Group to describe.")],
    output: FormatOption = OutputFormat.TABLE,
    brokers: BrokersOption = None,
) -> None:
    """Show a group's state, members, and per partition its committed offset and lag."""
    remote = _need_brokers(ctx, brokers)
    from headwater.cli import _remote

    with _remote.open_cluster(remote) as cluster:
        info = _describe_group(cluster, group)
        committed = _committed(cluster, group)
        if info.state == "Dead" and not info.members and not committed:
            raise _remote.RemoteError(f"unknown group {group!r}")
        owners = {tp: member for member in info.members for tp in member.partitions}
        partitions = sorted(set(committed) | set(owners))
        rows: list[dict[str, Any]] = []
        for topic, partition in partitions:
            _, high = cluster.watermarks(topic, partition)
            offset = committed.get((topic, partition))
            owner = owners.get((topic, partition))
            rows.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "committed_offset": offset,
                    "log_end_offset": high,
                    "lag": None if offset is None else max(0, high - offset),
                    "member_id": owner.member_id if owner else None,
                    "client_id": owner.client_id if owner else None,
                    "host": owner.host if owner else None,
                }
            )
    total_lag = sum(row["lag"] for row in rows if row["lag"] is not None)
    if output is OutputFormat.JSON:
        _write_json(
            {
                "group": info.group_id,
                "state": info.state,
                "protocol_type": info.protocol_type,
                "protocol": info.protocol,
                "total_lag": total_lag,
                "members": [
                    {
                        "member_id": member.member_id,
                        "client_id": member.client_id,
                        "host": member.host,
                        "partitions": [
                            {"topic": topic, "partition": partition}
                            for topic, partition in member.partitions
                        ],
                    }
                    for member in info.members
                ],
                "partitions": rows,
            }
        )
        return
    summary = plain_table("SUMMARY", "")
    summary.show_header = False
    summary.add_row("GROUP", info.group_id)
    summary.add_row("STATE", info.state)
    summary.add_row("PROTOCOL-TYPE", info.protocol_type or "-")
    summary.add_row("PROTOCOL", info.protocol or "-")
    summary.add_row("MEMBERS", str(len(info.members)))
    summary.add_row("TOTAL-LAG", str(total_lag))
    typer.echo("SUMMARY\n=======")
    print_table(summary)
    typer.echo("\nMEMBERS\n=======")
    members = plain_table("MEMBER-ID", "CLIENT-ID", "HOST", "PARTITIONS")
    for member in info.members:
        assigned = ",".join(f"{topic}/{partition}" for topic, partition in member.partitions)
        members.add_row(member.member_id, member.client_id, member.host, assigned or "-")
    print_table(members)
    typer.echo("\nPARTITIONS\n==========")
    table = plain_table(
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER-ID", "CLIENT-ID"
    )

    def text(value: object) -> str:
        return "-" if value is None else str(value)

    for row in rows:
        table.add_row(
            row["topic"],
            str(row["partition"]),
            text(row["committed_offset"]),
            str(row["log_end_offset"]),
            text(row["lag"]),
            text(row["member_id"]),
            text(row["client_id"]),
        )
    print_table(table)


# --- delete ------------------------------------------------------------------------------------


@group_app.command("delete")
def delete(
    ctx: typer.Context,
    groups: Annotated[list[str], typer.Argument(metavar="GROUP...", help="Groups to delete.")],
    brokers: BrokersOption = None,
) -> None:
    """Delete groups and their committed offsets; a group with active members is refused."""
    remote = _need_brokers(ctx, brokers)
    from confluent_kafka import KafkaException

    from headwater.cli import _remote

    failed = False
    with _remote.open_cluster(remote) as cluster:
        futures = cluster.admin.delete_consumer_groups(
            list(dict.fromkeys(groups)), request_timeout=_remote._REQUEST_TIMEOUT_S
        )
        for group, future in futures.items():
            try:
                future.result()
            except KafkaException as exception:
                error_line(_group_error(group, exception, "delete"))
                failed = True
                continue
            typer.echo(f"deleted group {group}")
    if failed:
        raise typer.Exit(1)


# --- seek --------------------------------------------------------------------------------------


def _parse_timestamp(value: str) -> int:
    """Milliseconds since the epoch, or an ISO 8601 date and time (UTC unless it says)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        millis = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"timestamp {value!r} is neither milliseconds since the epoch nor ISO 8601"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        millis = int(moment.timestamp() * 1000)
    if millis < 0:
        raise ConfigError(f"timestamp {value!r} is before the epoch")
    return millis


def _seek_partitions(
    cluster: Any, group: str, topics: Sequence[str], committed: dict[tuple[str, int], int]
) -> list[tuple[str, int]]:
    """The partitions to move: every partition of the named topics, else those committed."""
    if not topics:
        if not committed:
            from headwater.cli import _remote

            raise _remote.RemoteError(
                f"group {group!r} has no committed offsets; name the topics with --topic"
            )
        return sorted(committed)
    chosen: list[tuple[str, int]] = []
    for topic in dict.fromkeys(topics):
        description = cluster.topic(topic)
        chosen.extend((topic, info.id) for info in description.partitions)
    return sorted(chosen)


def _targets(
    cluster: Any,
    partitions: Sequence[tuple[str, int]],
    *,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_timestamp: int | None,
) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    from headwater.cli import _remote

    targets: dict[tuple[str, int], int] = {}
    by_time: dict[tuple[str, int], int] = {}
    if to_timestamp is not None and partitions:
        with _remote._kafka_errors("cannot look up offsets by timestamp"):
            found = cluster.consumer().offsets_for_times(
                [TopicPartition(topic, partition, to_timestamp) for topic, partition in partitions],
                timeout=_remote._REQUEST_TIMEOUT_S,
            )
        for tp in found:
            if tp.error is not None:
                raise _remote.RemoteError(
                    f"cannot look up offsets by timestamp on {tp.topic}/{tp.partition}: "
                    f"{_remote._error_text(tp.error)}"
                )
            by_time[(tp.topic, tp.partition)] = int(tp.offset)
    for topic, partition in partitions:
        low, high = cluster.watermarks(topic, partition)
        if to_earliest:
            target = low
        elif to_latest:
            target = high
        elif to_offset is not None:
            target = min(max(to_offset, low), high)  # clamped to the log, as rpk does
        else:
            found_offset = by_time.get((topic, partition), -1)
            target = high if found_offset < 0 else found_offset  # nothing that late: the end
        targets[(topic, partition)] = target
    return targets


@group_app.command("seek")
def seek(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(metavar="GROUP", help="Group whose offsets to move.")],
    to_earliest: Annotated[
        bool, typer.Option("--to-earliest", help="To each partition's log start offset.")
    ] = False,
    to_latest: Annotated[
        bool, typer.Option("--to-latest", help="To each partition's log end offset.")
    ] = False,
    to_offset: Annotated[
        int | None,
        typer.Option(
            "--to-offset",
            metavar="N",
            min=0,
            help="To offset N (clamped to each partition's log).",
            show_default=False,
        ),
    ] = None,
    to_timestamp: Annotated[
        str | None,
        typer.Option(
            "--to-timestamp",
            metavar="T",
            help="To the first record at or after T (milliseconds since the epoch, or ISO 8601).",
            show_default=False,
        ),
    ] = None,
    topics: Annotated[
        list[str] | None,
        typer.Option(
            "--topic",
            "-t",
            metavar="TOPIC",
            help="Only this topic, all its partitions (repeatable; default: the group's topics).",
            show_default=False,
        ),
    ] = None,
    brokers: BrokersOption = None,
) -> None:
    """Move a group's committed offsets; the group must have no active members."""
    chosen = [to_earliest, to_latest, to_offset is not None, to_timestamp is not None]
    if sum(chosen) != 1:
        raise typer.BadParameter(
            "give exactly one of --to-earliest, --to-latest, --to-offset, --to-timestamp"
        )
    with reporting_errors():
        timestamp = _parse_timestamp(to_timestamp) if to_timestamp is not None else None
    remote = _need_brokers(ctx, brokers)
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition

    from headwater.cli import _remote

    with _remote.open_cluster(remote) as cluster:
        info = _describe_group(cluster, group)
        _require_inactive(info, "seek")
        committed = _committed(cluster, group)
        partitions = _seek_partitions(cluster, group, topics or [], committed)
        targets = _targets(
            cluster,
            partitions,
            to_earliest=to_earliest,
            to_latest=to_latest,
            to_offset=to_offset,
            to_timestamp=timestamp,
        )
        request = ConsumerGroupTopicPartitions(
            group,
            [
                TopicPartition(topic, partition, offset)
                for (topic, partition), offset in targets.items()
            ],
        )
        futures = cluster.admin.alter_consumer_group_offsets(
            [request], request_timeout=_remote._REQUEST_TIMEOUT_S
        )
        result = _result(futures[group], group, "seek")
        for tp in result.topic_partitions or []:
            if tp.error is not None:
                error = tp.error
                if isinstance(error, KafkaError) and error.code() in (
                    KafkaError.UNKNOWN_MEMBER_ID,
                    KafkaError.REBALANCE_IN_PROGRESS,
                ):
                    raise _remote.RemoteError(
                        f"group {group!r} has active members; stop its consumers before you seek it"
                    )
                raise _remote.RemoteError(
                    f"cannot seek group {group!r} on {tp.topic}/{tp.partition}: "
                    f"{_remote._error_text(error) if isinstance(error, KafkaError) else error}"
                )
    table = plain_table("TOPIC", "PARTITION", "PRIOR-OFFSET", "CURRENT-OFFSET")
    for (topic, partition), offset in targets.items():
        prior = committed.get((topic, partition))
        table.add_row(topic, str(partition), "-" if prior is None else str(prior), str(offset))
    print_table(table)


__all__ = ["NEED_BROKERS", "group_app"]
