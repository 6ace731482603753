"""Kafka's consumer protocol: what consumer group members put in JoinGroup and SyncGroup.

A member of a group with protocol type "consumer" offers one protocol per assignor (named like
the assignor: "range", "roundrobin", "cooperative-sticky"), each carrying a
`ConsumerProtocolSubscription`; the leader answers every member with a
`ConsumerProtocolAssignment`. Both are versioned, non-flexible structures (Kafka's
ConsumerProtocolSubscription and ConsumerProtocolAssignment messages), written by hand here:

Subscription:  int16 version, Topics [string], UserData nullable bytes,
               v1+ OwnedPartitions [Topic string, Partitions [int32]],
               v2+ GenerationId int32, v3+ RackId nullable string.
Assignment:    int16 version, AssignedPartitions [Topic string, Partitions [int32]],
               UserData nullable bytes.

As Kafka does, a version newer than we know is read as the newest we know (later versions may
only append fields), and what follows the known fields is ignored for such versions. Decoding is
bounds-checked by `Reader`: a hostile member's metadata raises `MalformedFrameError`, never
allocates more than its own size, and never anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from headwater.client._types import TopicPartition
from headwater.protocol._primitives import MalformedFrameError, Reader, Writer

PROTOCOL_TYPE = "consumer"
# Newest versions we read and write (Kafka 3.5+ clients write 3 for both).
SUBSCRIPTION_VERSION_MAX = 3
ASSIGNMENT_VERSION_MAX = 3
NO_GENERATION = -1


@dataclass(frozen=True, slots=True)
class Subscription:
    """One member's ConsumerProtocolSubscription; a frozen value, owns nothing."""

    topics: list[str]
    user_data: bytes | None = None
    owned_partitions: list[TopicPartition] = field(default_factory=list)  # v1+
    generation_id: int = NO_GENERATION  # v2+
    rack_id: str | None = None  # v3+


@dataclass(frozen=True, slots=True)
class Assignment:
    """One member's ConsumerProtocolAssignment; a frozen value, owns nothing."""

    partitions: list[TopicPartition]
    user_data: bytes | None = None


def _by_topic(partitions: Iterable[TopicPartition]) -> dict[str, list[int]]:
    """Partitions grouped per topic, topics and partitions sorted (a stable encoding)."""
    grouped: dict[str, list[int]] = {}
    for topic, partition in sorted(set(partitions)):
        grouped.setdefault(topic, []).append(partition)
    return grouped


def _write_topic_partitions(writer: Writer, partitions: Iterable[TopicPartition]) -> None:
    grouped = _by_topic(partitions)
    writer.int32(len(grouped))
    for topic, numbers in grouped.items():
        writer.string(topic)
        writer.int32(len(numbers))
        writer.int32_list(numbers)


def _read_topic_partitions(reader: Reader) -> list[TopicPartition]:
    result: list[TopicPartition] = []
    for _ in range(reader.array_len()):
        topic = reader.string()
        # array_len bounds the count by the bytes left; int32_list checks 4 bytes each.
        count = reader.array_len()
        result.extend(TopicPartition(topic, number) for number in reader.int32_list(count))
    return result


def _read_version(reader: Reader, what: str) -> int:
    version = reader.int16()
    if version < 0:
        raise MalformedFrameError(f"{what} version {version} is negative")
    return version


def encode_subscription(
    subscription: Subscription, version: int = SUBSCRIPTION_VERSION_MAX
) -> bytes:
    if not 0 <= version <= SUBSCRIPTION_VERSION_MAX:
        raise ValueError(f"ConsumerProtocolSubscription version {version} is not supported")
    writer = Writer()
    writer.int16(version)
    writer.int32(len(subscription.topics))
    for topic in subscription.topics:
        writer.string(topic)
    writer.nullable_bytes(subscription.user_data)
    if version >= 1:
        _write_topic_partitions(writer, subscription.owned_partitions)
    if version >= 2:
        writer.int32(subscription.generation_id)
    if version >= 3:
        writer.nullable_string(subscription.rack_id)
    return writer.getvalue()


def decode_subscription(data: bytes | bytearray | memoryview) -> Subscription:
    """Raises `MalformedFrameError` for anything that is not a subscription."""
    reader = Reader(data)
    version = _read_version(reader, "ConsumerProtocolSubscription")
    topics = [reader.string() for _ in range(reader.array_len())]
    user_data = reader.nullable_bytes()
    owned: list[TopicPartition] = []
    generation_id = NO_GENERATION
    rack_id: str | None = None
    if version >= 1:
        owned = _read_topic_partitions(reader)
    if version >= 2:
        generation_id = reader.int32()
    if version >= 3:
        rack_id = reader.nullable_string()
    if version <= SUBSCRIPTION_VERSION_MAX:
        reader.expect_end()
    return Subscription(topics, user_data, owned, generation_id, rack_id)


def encode_assignment(assignment: Assignment, version: int = ASSIGNMENT_VERSION_MAX) -> bytes:
    if not 0 <= version <= ASSIGNMENT_VERSION_MAX:
        raise ValueError(f"ConsumerProtocolAssignment version {version} is not supported")
    writer = Writer()
    writer.int16(version)
    _write_topic_partitions(writer, assignment.partitions)
    writer.nullable_bytes(assignment.user_data)
    return writer.getvalue()


def decode_assignment(data: bytes | bytearray | memoryview) -> Assignment:
    """Raises `MalformedFrameError` for anything that is not an assignment. Empty bytes (what
    a coordinator hands a member the leader gave nothing) decode as an empty assignment."""
    if len(data) == 0:
        return Assignment([])
    reader = Reader(data)
    version = _read_version(reader, "ConsumerProtocolAssignment")
    partitions = _read_topic_partitions(reader)
    user_data = reader.nullable_bytes()
    if version <= ASSIGNMENT_VERSION_MAX:
        reader.expect_end()
    return Assignment(partitions, user_data)


__all__ = [
    "ASSIGNMENT_VERSION_MAX",
    "NO_GENERATION",
    "PROTOCOL_TYPE",
    "SUBSCRIPTION_VERSION_MAX",
    "Assignment",
    "Subscription",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
]
