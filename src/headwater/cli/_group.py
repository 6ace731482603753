"""`headwater group list|describe|delete|seek`: consumer groups, like rpk's.

Two places hold groups. With `--brokers` the commands speak the Kafka protocol through
librdkafka's admin client to any Kafka broker (`headwater serve` or Apache Kafka); without, they
open the data directory and read its `__consumer_offsets` log through the same coordinator the
broker runs. A data directory is locked while a broker or an embedded client has it open, so
its groups have no live members: their sessions ended when that process did. As with the topic
commands, every failure becomes one "error: ..." line on stderr and exit status 1.

`seek` rewrites a group's committed offsets, which Kafka allows only while the group has no
active members (a live consumer would overwrite them with its own commits anyway).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec
import typer

from headwater.cli._common import (
    BrokersOption,
    DataDirOption,
    error_line,
    open_data_dir,
    plain_table,
    print_table,
    remember_brokers,
    remember_data_dir,
    reporting_errors,
    resolve_brokers,
)
from headwater.errors import ConfigError, HeadwaterError

if TYPE_CHECKING:
    from confluent_kafka import KafkaException

    from headwater.cli._remote import Cluster
    from headwater.coordinator.store import GroupStore
    from headwater.log.manager import LogManager

# confluent-kafka is imported only by the commands that use it, as the topic commands do: it
# is slow to load, and `headwater --help` or a data directory command should not pay for it.

group_app = typer.Typer(
    name="group",
    help="List, describe, delete and seek consumer groups (a data directory, or --brokers).",
    no_args_is_help=True,
)

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
def _group_group(
    ctx: typer.Context, data_dir: DataDirOption = None, brokers: BrokersOption = None
) -> None:
    """List, describe, delete and seek consumer groups (a data directory, or --brokers)."""
    remember_data_dir(ctx, data_dir)
    remember_brokers(ctx, brokers)


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="Output format.", case_sensitive=False)
]


class GroupCommandError(HeadwaterError):
    """A group command's refusal (unknown group, active members), for the "error:" line."""


def _write_json(value: object) -> None:
    typer.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _state_name(state: object) -> str:
    name = getattr(state, "name", None)  # a ConsumerGroupState
    if isinstance(name, str):
        return _STATE_NAMES.get(name, name.title())
    return "Unknown" if state is None else str(state)


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


class _Groups(Protocol):
    """What the commands need of wherever the groups are; one implementation per place."""

    def all_groups(self) -> list[tuple[str, str, str]]:
        """(group, state, protocol type) of every group, sorted."""
        ...

    def describe(self, group: str) -> _Group: ...

    def committed(self, group: str) -> dict[tuple[str, int], int]: ...

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]: ...

    def partitions(self, topic: str) -> list[int]: ...

    def offsets_for_time(
        self, partitions: Sequence[tuple[str, int]], timestamp: int
    ) -> dict[tuple[str, int], int]:
        """The first offset at or after `timestamp` per partition, -1 where there is none."""
        ...

    def alter_offsets(self, group: str, targets: dict[tuple[str, int], int]) -> None: ...

    def delete(self, group: str) -> str | None:
        """Delete `group`; the reason when it was refused."""
        ...


@contextmanager
def _open_groups(
    ctx: typer.Context, data_dir: str | None, brokers: str | None, command: str
) -> Iterator[_Groups]:
    """The brokers' groups when brokers are named, else the data directory's."""
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        from headwater.cli import _remote

        with _remote.open_cluster(remote) as cluster:
            yield _RemoteGroups(cluster)
        return
    with open_data_dir(ctx, data_dir, f"headwater group {command}") as manager:
        yield _LocalGroups(manager)


# --- groups in a data directory ----------------------------------------------------------------


class _LocalGroups:
    """The groups of a closed data directory, through the coordinator the broker runs."""

    def __init__(self, manager: LogManager) -> None:
        from headwater.coordinator.group import SESSION_TIMEOUT_MS_MAX_DEFAULT
        from headwater.coordinator.store import GroupStore

        self.manager = manager
        now_ms = time.time_ns() // 1_000_000
        self.store: GroupStore = GroupStore(manager, now_ms=now_ms)
        # The process that ran the members is gone (it held the lock we now hold): let every
        # session run out, as a broker would after its last heartbeat. What that changes is
        # written only by a command that writes anything (`seek`, `delete`).
        self.store.coordinator.tick(now_ms + SESSION_TIMEOUT_MS_MAX_DEFAULT + 1)

    def all_groups(self) -> list[tuple[str, str, str]]:
        return sorted(
            (group_id, state, kind)
            for group_id, kind, state in self.store.coordinator.list_groups()
        )

    def describe(self, group: str) -> _Group:
        summary = self.store.coordinator.describe(group)
        return _Group(group, summary.state, summary.protocol_type, summary.protocol_name)

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        return {
            (topic, partition): entry.offset
            for topic, partition, entry in self.store.coordinator.fetch_offsets(group, None)
            if entry is not None and entry.offset >= 0
        }

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        log = self.manager.partition(topic, partition)
        return log.log_start_offset, log.high_watermark

    def partitions(self, topic: str) -> list[int]:
        return list(range(self.manager.topic(topic).partition_count))

    def offsets_for_time(
        self, partitions: Sequence[tuple[str, int]], timestamp: int
    ) -> dict[tuple[str, int], int]:
        found: dict[tuple[str, int], int] = {}
        for topic, partition in partitions:
            hit = self.manager.partition(topic, partition).offset_for_timestamp(timestamp)
            found[(topic, partition)] = -1 if hit is None else hit[0]
        return found

    def alter_offsets(self, group: str, targets: dict[tuple[str, int], int]) -> None:
        errors = self.store.coordinator.commit_offsets(
            time.time_ns() // 1_000_000,
            group_id=group,
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            offsets=[(t, p, offset, -1, "") for (t, p), offset in targets.items()],
        )
        self.store.persist()
        failed = [key for key, code in zip(targets, errors, strict=True) if code != 0]
        if failed:
            raise GroupCommandError(f"cannot seek group {group!r} on {len(failed)} partitions")

    def delete(self, group: str) -> str | None:
        from headwater.coordinator.group import GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP

        (code,) = self.store.coordinator.delete_groups([group])
        self.store.persist()
        if code == GROUP_ID_NOT_FOUND:
            return f"unknown group {group!r}"
        if code == NON_EMPTY_GROUP:
            return f"group {group!r} has active members; stop its consumers before you delete it"
        return None if code == 0 else f"cannot delete group {group!r} (error code {code})"


# --- groups on brokers -------------------------------------------------------------------------


def _group_error(group: str, exception: KafkaException, action: str) -> str:
    from confluent_kafka import KafkaError

    from headwater.cli import _remote

    code = _remote._code(exception)
    if code in (
        KafkaError.NON_EMPTY_GROUP,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
    ):
        return f"group {group!r} has active members; stop its consumers before you {action} it"
    if code == KafkaError.GROUP_ID_NOT_FOUND:
        return f"unknown group {group!r}"
    if code in (KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION):
        return f"cannot {action} group {group!r}: the broker does not support it"
    return f"cannot {action} group {group!r}: {_remote._describe(exception)}"


def _result(future: Any, group: str, action: str) -> Any:
    from confluent_kafka import KafkaException

    try:
        return future.result()
    except KafkaException as exception:
        raise GroupCommandError(_group_error(group, exception, action)) from None


class _RemoteGroups:
    """Groups on Kafka brokers, through librdkafka's admin client."""

    def __init__(self, cluster: Cluster) -> None:
        from headwater.cli import _remote

        self.cluster = cluster
        self.timeout_s = _remote._REQUEST_TIMEOUT_S

    def all_groups(self) -> list[tuple[str, str, str]]:
        from confluent_kafka import KafkaError

        from headwater.cli import _remote

        future = self.cluster.admin.list_consumer_groups(request_timeout=self.timeout_s)
        result = _result(future, "*", "list")
        for error in result.errors or []:
            text = _remote._error_text(error) if isinstance(error, KafkaError) else str(error)
            error_line(f"a broker did not list its groups: {text}")
        return sorted(
            (
                listing.group_id,
                _state_name(getattr(listing, "state", None)),
                "" if listing.is_simple_consumer_group else "consumer",
            )
            for listing in result.valid or []
        )

    def describe(self, group: str) -> _Group:
        """A group the broker does not know is "Dead", as Kafka reports it (newer brokers
        answer GROUP_ID_NOT_FOUND instead)."""
        from confluent_kafka import KafkaError, KafkaException

        from headwater.cli import _remote

        futures = self.cluster.admin.describe_consumer_groups(
            [group], request_timeout=self.timeout_s
        )
        try:
            description = futures[group].result()
        except KafkaException as exception:
            if _remote._code(exception) == KafkaError.GROUP_ID_NOT_FOUND:
                return _Group(group, "Dead", "", "")
            raise GroupCommandError(_group_error(group, exception, "describe")) from None
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

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        from headwater.cli import _remote

        futures = self.cluster.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout_s
        )
        result = _result(futures[group], group, "read the offsets of")
        offsets: dict[tuple[str, int], int] = {}
        for tp in result.topic_partitions or []:
            if tp.error is not None:
                raise GroupCommandError(
                    f"cannot read the offset of group {group!r} on {tp.topic}/{tp.partition}: "
                    f"{_remote._error_text(tp.error)}"
                )
            if tp.offset >= 0:
                offsets[(tp.topic, tp.partition)] = int(tp.offset)
        return offsets

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        return self.cluster.watermarks(topic, partition)

    def partitions(self, topic: str) -> list[int]:
        return [info.id for info in self.cluster.topic(topic).partitions]

    def offsets_for_time(
        self, partitions: Sequence[tuple[str, int]], timestamp: int
    ) -> dict[tuple[str, int], int]:
        from confluent_kafka import TopicPartition

        from headwater.cli import _remote

        with _remote._kafka_errors("cannot look up offsets by timestamp"):
            found = self.cluster.consumer().offsets_for_times(
                [TopicPartition(topic, partition, timestamp) for topic, partition in partitions],
                timeout=self.timeout_s,
            )
        result: dict[tuple[str, int], int] = {}
        for tp in found:
            if tp.error is not None:
                raise GroupCommandError(
                    f"cannot look up offsets by timestamp on {tp.topic}/{tp.partition}: "
                    f"{_remote._error_text(tp.error)}"
                )
            result[(tp.topic, tp.partition)] = int(tp.offset)
        return result

    def alter_offsets(self, group: str, targets: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition

        from headwater.cli import _remote

        request = ConsumerGroupTopicPartitions(
            group,
            [
                TopicPartition(topic, partition, offset)
                for (topic, partition), offset in targets.items()
            ],
        )
        futures = self.cluster.admin.alter_consumer_group_offsets(
            [request], request_timeout=self.timeout_s
        )
        result = _result(futures[group], group, "seek")
        for tp in result.topic_partitions or []:
            error = tp.error
            if error is None:
                continue
            if isinstance(error, KafkaError) and error.code() in (
                KafkaError.UNKNOWN_MEMBER_ID,
                KafkaError.REBALANCE_IN_PROGRESS,
            ):
                raise GroupCommandError(
                    f"group {group!r} has active members; stop its consumers before you seek it"
                )
            text = _remote._error_text(error) if isinstance(error, KafkaError) else str(error)
            raise GroupCommandError(
                f"cannot seek group {group!r} on {tp.topic}/{tp.partition}: {text}"
            )

    def delete(self, group: str) -> str | None:
        from confluent_kafka import KafkaException

        futures = self.cluster.admin.delete_consumer_groups([group], request_timeout=self.timeout_s)
        try:
            futures[group].result()
        except KafkaException as exception:
            return _group_error(group, exception, "delete")
        return None


def _require_inactive(group: _Group, action: str) -> None:
    if group.members:
        count = len(group.members)
        plural = "member" if count == 1 else "members"
        raise GroupCommandError(
            f"group {group.group_id!r} has {count} active {plural} (state {group.state}); "
            f"stop its consumers before you {action} it"
        )


# --- list --------------------------------------------------------------------------------------


@group_app.command("list")
def list_groups(
    ctx: typer.Context,
    output: FormatOption = OutputFormat.TABLE,
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """List consumer groups with their states and protocol types."""
    with _open_groups(ctx, data_dir, brokers, "list") as groups:
        rows = groups.all_groups()
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
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Show a group's state, members, and per partition its committed offset and lag."""
    with _open_groups(ctx, data_dir, brokers, "describe") as groups:
        info = groups.describe(group)
        committed = groups.committed(group)
        if info.state == "Dead" and not info.members and not committed:
            raise GroupCommandError(f"unknown group {group!r}")
        owners = {tp: member for member in info.members for tp in member.partitions}
        partitions = sorted(set(committed) | set(owners))
        rows: list[dict[str, Any]] = []
        for topic, partition in partitions:
            _, high = groups.watermarks(topic, partition)
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
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Delete groups and their committed offsets; a group with active members is refused."""
    failed = False
    with _open_groups(ctx, data_dir, brokers, "delete") as place:
        for group in dict.fromkeys(groups):
            refusal = place.delete(group)
            if refusal is not None:
                error_line(refusal)
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
    groups: _Groups, group: str, topics: Sequence[str], committed: dict[tuple[str, int], int]
) -> list[tuple[str, int]]:
    """The partitions to move: every partition of the named topics, else those committed."""
    if not topics:
        if not committed:
            raise GroupCommandError(
                f"group {group!r} has no committed offsets; name the topics with --topic"
            )
        return sorted(committed)
    return sorted(
        (topic, partition)
        for topic in dict.fromkeys(topics)
        for partition in groups.partitions(topic)
    )


def _targets(
    groups: _Groups,
    partitions: Sequence[tuple[str, int]],
    *,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_timestamp: int | None,
) -> dict[tuple[str, int], int]:
    by_time: dict[tuple[str, int], int] = {}
    if to_timestamp is not None and partitions:
        by_time = groups.offsets_for_time(partitions, to_timestamp)
    targets: dict[tuple[str, int], int] = {}
    for topic, partition in partitions:
        low, high = groups.watermarks(topic, partition)
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
    data_dir: DataDirOption = None,
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
    with _open_groups(ctx, data_dir, brokers, "seek") as groups:
        _require_inactive(groups.describe(group), "seek")
        committed = groups.committed(group)
        partitions = _seek_partitions(groups, group, topics or [], committed)
        targets = _targets(
            groups,
            partitions,
            to_earliest=to_earliest,
            to_latest=to_latest,
            to_offset=to_offset,
            to_timestamp=timestamp,
        )
        groups.alter_offsets(group, targets)
    table = plain_table("TOPIC", "PARTITION", "PRIOR-OFFSET", "CURRENT-OFFSET")
    for (topic, partition), offset in targets.items():
        prior = committed.get((topic, partition))
        table.add_row(topic, str(partition), "-" if prior is None else str(prior), str(offset))
    print_table(table)


__all__ = ["GroupCommandError", "group_app"]
