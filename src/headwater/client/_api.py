"""The client API every backend implements: `Client`, `Producer`, `Consumer`, `Admin`.

Application code is written against these classes only; `headwater.connect` picks the backend
(embedded log, or any Kafka-protocol cluster through librdkafka). Semantics are Kafka's: where a
backend could differ from a Kafka client talking to a Kafka broker, the backend is wrong.

Thread-safety: a `Producer` may be shared by threads (as Kafka's is); a `Consumer` belongs to
one thread at a time (as Kafka's does), except `close`, and `wakeup`-free polling with timeouts.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Self

from headwater.client._types import (
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    Headers,
    NewTopic,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)
from headwater.errors import ClientClosedError

if TYPE_CHECKING:
    from headwater.client._async import AsyncAdmin, AsyncConsumer, AsyncProducer

# on_assign(consumer, partitions), on_revoke(consumer, partitions), on_lost(consumer, partitions)
RebalanceCallback = Callable[["Consumer", list[TopicPartition]], None]
DeliveryCallback = Callable[[RecordMetadata | None, BaseException | None], None]


class Producer(abc.ABC):
    """Sends records; Kafka's default partitioner (murmur2 of the key) on every backend."""

    @abc.abstractmethod
    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | Mapping[str, bytes | None] | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> Future[RecordMetadata]:
        """Queue one record; the future resolves when it is acknowledged per `acks`.

        Serialization errors, an unknown explicit partition and a closed producer raise here;
        broker-side failures (unknown topic after auto-create, too large) fail the future.
        `on_delivery(metadata, error)` runs once the outcome is known, in a producer thread.
        """

    @abc.abstractmethod
    def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Future[list[RecordMetadata]]:
        """Queue many records at once (the fast path); one future for all of them, in order."""

    @abc.abstractmethod
    def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued record is acknowledged or failed; returns how many are left
        (0 unless `timeout`, in seconds, ran out)."""

    @abc.abstractmethod
    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids (auto-creating it where the backend does)."""

    @abc.abstractmethod
    def close(self, timeout: float | None = None) -> None:
        """Flush, then release everything; later calls raise `ClientClosedError`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Consumer(abc.ABC):
    """Reads records: within a group (`subscribe`) or from partitions it picks (`assign`)."""

    # --- membership -----------------------------------------------------------------------

    @abc.abstractmethod
    def subscribe(
        self,
        topics: Sequence[str] | str,
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Join the group (`group.id`) for these topics; a string starting with "^" is a regular
        expression matched against topic names (as librdkafka does). Callbacks run inside
        `poll`: on_revoke before partitions go (commit there), on_assign after new ones come,
        on_lost when partitions were taken without a revoke (the session expired)."""

    @abc.abstractmethod
    def unsubscribe(self) -> None: ...

    @abc.abstractmethod
    def assign(self, partitions: Sequence[TopicPartition] | Mapping[TopicPartition, int]) -> None:
        """Read exactly these partitions, no group membership; a mapping also sets where
        (an offset, `OFFSET_BEGINNING` or `OFFSET_END`); else the committed offset, else
        `auto.offset.reset`."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    # --- reading --------------------------------------------------------------------------

    @abc.abstractmethod
    def poll(self, timeout: float | None = None) -> ConsumerRecord | None:
        """The next record, or None if none came within `timeout` seconds (None: wait forever).

        Raises `DeserializationError` for a bad payload (the position has moved past it) and
        `ClientError` for a consumer error such as an offset out of range with
        `auto.offset.reset=none`.
        """

    @abc.abstractmethod
    def poll_batch(
        self, max_records: int | None = None, timeout: float | None = None
    ) -> list[ConsumerRecord]:
        """Up to `max_records` (default `max.poll.records`) records, waiting at most `timeout`
        seconds for the first; an empty list when none came."""

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Records forever (until `close`, from any thread), polling in between."""
        while not self.closed:
            try:
                record = self.poll(0.5)
            except ClientClosedError:
                return  # closed by another thread while this one waited
            if record is not None:
                yield record

    # --- positions ------------------------------------------------------------------------

    @abc.abstractmethod
    def seek(self, partition: TopicPartition, offset: int) -> None:
        """The next `poll` for `partition` returns `offset` (or `OFFSET_BEGINNING`/`_END`)."""

    @abc.abstractmethod
    def seek_to_beginning(self, partitions: Sequence[TopicPartition] | None = None) -> None: ...

    @abc.abstractmethod
    def seek_to_end(self, partitions: Sequence[TopicPartition] | None = None) -> None: ...

    @abc.abstractmethod
    def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        """The first offset with a timestamp at or after each given one; None where none."""

    def seek_to_timestamp(
        self, timestamp: int, partitions: Sequence[TopicPartition] | None = None
    ) -> None:
        """Seek each partition (default: the assignment) to the first record at or after
        `timestamp` (ms), or to the end where there is none."""
        chosen = list(partitions) if partitions is not None else sorted(self.assignment())
        found = self.offsets_for_times(dict.fromkeys(chosen, timestamp))
        ends: list[TopicPartition] = []
        for partition in chosen:
            offset = found.get(partition)
            if offset is None:
                ends.append(partition)
            else:
                self.seek(partition, offset)
        if ends:
            self.seek_to_end(ends)

    @abc.abstractmethod
    def position(
        self, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """The offset of the next record each partition will return (assigned ones only)."""

    @abc.abstractmethod
    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        """(log start offset, high watermark) of `partition`."""

    def lag(self, partitions: Sequence[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Records between each position and the high watermark."""
        return {
            partition: max(0, self.watermarks(partition)[1] - offset)
            for partition, offset in self.position(partitions).items()
        }

    # --- offsets --------------------------------------------------------------------------

    @abc.abstractmethod
    def commit(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        *,
        asynchronous: bool = False,
    ) -> Future[dict[TopicPartition, int]] | None:
        """Commit `offsets` (the next offset to read, as Kafka defines a commit), else every
        assigned partition's position. Synchronous by default (raises on failure); with
        `asynchronous=True` returns a future of what was committed."""

    @abc.abstractmethod
    def committed(
        self, partitions: Sequence[TopicPartition], timeout: float | None = None
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offset for each partition; None where nothing is committed."""

    # --- flow -----------------------------------------------------------------------------

    @abc.abstractmethod
    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...

    @abc.abstractmethod
    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...

    @abc.abstractmethod
    def paused(self) -> set[TopicPartition]: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Commit if auto-commit is on, leave the group, release everything."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Admin(abc.ABC):
    """Topics and groups."""

    # --- topics ---------------------------------------------------------------------------

    @abc.abstractmethod
    def create_topics(self, topics: Sequence[NewTopic]) -> None:
        """Create every topic or raise for the first that failed (`TopicAlreadyExistsError`,
        `InvalidPartitionsError`, `ConfigError`, ...); the others are still created."""

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> None:
        self.create_topics([NewTopic(name, partitions, dict(config or {}))])

    @abc.abstractmethod
    def delete_topics(self, names: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def list_topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted; internal ones (`__consumer_offsets`) only if asked."""

    @abc.abstractmethod
    def describe_topic(self, name: str) -> TopicDescription: ...

    @abc.abstractmethod
    def create_partitions(self, name: str, total: int) -> None:
        """Grow `name` to `total` partitions."""

    @abc.abstractmethod
    def describe_configs(self, name: str) -> dict[str, str]:
        """Every config of topic `name` (defaults included) by Kafka's names."""

    @abc.abstractmethod
    def alter_configs(
        self,
        name: str,
        set: Mapping[str, str] | None = None,
        delete: Sequence[str] = (),
    ) -> None:
        """Set and delete (back to the default) topic config overrides, incrementally."""

    @abc.abstractmethod
    def delete_records(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Move each partition's log start offset up to the given offset."""

    # --- groups ---------------------------------------------------------------------------

    @abc.abstractmethod
    def list_groups(self) -> list[GroupListing]: ...

    @abc.abstractmethod
    def describe_group(self, group_id: str) -> GroupDescription:
        """State and members; an unknown group is state "Dead" with no members, as Kafka says."""

    @abc.abstractmethod
    def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """Every committed offset of the group."""

    def group_lag(self, group_id: str) -> dict[TopicPartition, int]:
        """Per committed partition, records between the committed offset and the high
        watermark."""
        return {
            partition: max(0, self.watermarks(partition)[1] - offset)
            for partition, offset in self.list_group_offsets(group_id).items()
        }

    @abc.abstractmethod
    def alter_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Set committed offsets (reset a group); refused while the group has members."""

    @abc.abstractmethod
    def delete_groups(self, group_ids: Sequence[str]) -> None:
        """Delete groups and their offsets; a group with members raises (NON_EMPTY_GROUP)."""

    @abc.abstractmethod
    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        """(log start offset, high watermark)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Client(abc.ABC):
    """A connection to one place records live: an embedded data directory or a cluster.

    Makes producers, consumers and admin clients that share the connection's configuration;
    closing the client closes everything it made.
    """

    url: str

    @abc.abstractmethod
    def producer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_serializer: Any = None,
        value_serializer: Any = None,
        **settings: Any,
    ) -> Producer: ...

    @abc.abstractmethod
    def consumer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        **settings: Any,
    ) -> Consumer: ...

    @abc.abstractmethod
    def admin(self, config: Mapping[str, Any] | None = None, **settings: Any) -> Admin: ...

    # The asyncio flavours wrap the sync objects: one implementation per backend, not two.

    def async_producer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_serializer: Any = None,
        value_serializer: Any = None,
        **settings: Any,
    ) -> AsyncProducer:
        from headwater.client._async import AsyncProducer

        return AsyncProducer(
            self.producer(
                config, key_serializer=key_serializer, value_serializer=value_serializer, **settings
            )
        )

    def async_consumer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        **settings: Any,
    ) -> AsyncConsumer:
        from headwater.client._async import AsyncConsumer

        return AsyncConsumer(
            self.consumer(
                config,
                key_deserializer=key_deserializer,
                value_deserializer=value_deserializer,
                **settings,
            )
        )

    def async_admin(self, config: Mapping[str, Any] | None = None, **settings: Any) -> AsyncAdmin:
        from headwater.client._async import AsyncAdmin

        return AsyncAdmin(self.admin(config, **settings))

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "Admin",
    "Client",
    "Consumer",
    "DeliveryCallback",
    "Producer",
    "RebalanceCallback",
]
