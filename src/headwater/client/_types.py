"""The values the client API takes and returns, the same on every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Special offsets, Kafka's (and librdkafka's) values, for `seek` and `assign`.
OFFSET_BEGINNING = -2
OFFSET_END = -1
# "No committed offset" in `committed` results.
OFFSET_INVALID = -1001

Headers = Sequence[tuple[str, bytes | None]]


class TopicPartition(NamedTuple):
    """One partition of one topic; hashable, so it keys dicts of offsets."""

    topic: str
    partition: int


class ConsumerRecord(NamedTuple):
    """A consumed record; key and value as the deserializers made them."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: Any
    value: Any
    headers: tuple[tuple[str, bytes | None], ...] = ()
    # True when the topic stamps records with the broker's clock (LogAppendTime).
    log_append_time: bool = False


class RecordMetadata(NamedTuple):
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # what the log stored: the producer's (CreateTime) or the log's clock


@dataclass(frozen=True, slots=True)
class NewTopic:
    """A topic to create; `config` uses Kafka's topic config names (`retention.ms`, ...)."""

    name: str
    partitions: int = 1
    config: dict[str, str] = field(default_factory=dict)
    # Accepted for code written against Kafka; must be 1 on embedded and on `headwater serve`.
    replication_factor: int = 1


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    log_start_offset: int
    high_watermark: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    partitions: list[PartitionDescription]
    internal: bool = False


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    state: str  # Kafka's names: "Empty", "Stable", "PreparingRebalance", ...
    protocol_type: str  # "consumer" for consumer groups


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    client_id: str
    host: str
    group_instance_id: str | None
    assignment: list[TopicPartition]


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol: str  # the assignor chosen ("range", "roundrobin", "cooperative-sticky")
    members: list[MemberDescription]


__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "OFFSET_INVALID",
    "ConsumerRecord",
    "GroupDescription",
    "GroupListing",
    "Headers",
    "MemberDescription",
    "NewTopic",
    "PartitionDescription",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
