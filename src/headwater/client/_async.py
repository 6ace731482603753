"""asyncio flavours of the client API: every call that may block runs off the event loop.

Each wrapper owns one worker thread and runs its sync object's calls there, in order. One thread
per object keeps a `Consumer` on a single thread (as Kafka requires) and keeps call order; the
event loop only awaits. Delivery futures of the sync producer are bridged with
`asyncio.wrap_future`, so awaiting an acknowledgement costs no thread of its own.

Thread-safety: an async wrapper belongs to the event loop that first used it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self, TypeVar

from headwater.client._api import Admin, Consumer, Producer, RebalanceCallback
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

T = TypeVar("T")


class _Worker:
    """One thread that runs a sync object's calls in submission order."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False)


class AsyncProducer:
    """A `Producer` for asyncio code; `send` resolves when the record is acknowledged."""

    def __init__(self, producer: Producer) -> None:
        self.sync = producer
        self._worker = _Worker("headwater-async-producer")

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | Mapping[str, bytes | None] | None = None,
    ) -> RecordMetadata:
        """Queue the record and wait for its acknowledgement."""
        return await asyncio.wrap_future(
            await self.enqueue(
                topic, value, key, partition=partition, timestamp=timestamp, headers=headers
            )
        )

    async def enqueue(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | Mapping[str, bytes | None] | None = None,
    ) -> Future[RecordMetadata]:
        """Queue the record (waiting off the loop if the buffer is full); the delivery future
        is returned without waiting for it, so many records can be in flight."""
        return await self._worker.run(
            self.sync.send,
            topic,
            value,
            key,
            partition=partition,
            timestamp=timestamp,
            headers=headers,
        )

    async def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> list[RecordMetadata]:
        future = await self._worker.run(
            self.sync.send_many, topic, values, keys, partition=partition, timestamp=timestamp
        )
        return await asyncio.wrap_future(future)

    async def flush(self, timeout: float | None = None) -> int:
        return await self._worker.run(self.sync.flush, timeout)

    async def partitions_for(self, topic: str) -> list[int]:
        return await self._worker.run(self.sync.partitions_for, topic)

    async def close(self, timeout: float | None = None) -> None:
        try:
            await self._worker.run(self.sync.close, timeout)
        finally:
            self._worker.shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncConsumer:
    """A `Consumer` for asyncio code; rebalance callbacks run on its worker thread."""

    def __init__(self, consumer: Consumer) -> None:
        self.sync = consumer
        self._worker = _Worker("headwater-async-consumer")

    async def subscribe(
        self,
        topics: Sequence[str] | str,
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        await self._worker.run(
            self.sync.subscribe, topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost
        )

    async def unsubscribe(self) -> None:
        await self._worker.run(self.sync.unsubscribe)

    async def assign(
        self, partitions: Sequence[TopicPartition] | Mapping[TopicPartition, int]
    ) -> None:
        await self._worker.run(self.sync.assign, partitions)

    async def assignment(self) -> set[TopicPartition]:
        return await self._worker.run(self.sync.assignment)

    async def poll(self, timeout: float | None = None) -> ConsumerRecord | None:
        return await self._worker.run(self.sync.poll, timeout)

    async def poll_batch(
        self, max_records: int | None = None, timeout: float | None = None
    ) -> list[ConsumerRecord]:
        return await self._worker.run(self.sync.poll_batch, max_records, timeout)

    async def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        """Records until `close`; each wait is a bounded poll, so closing is noticed."""
        while not self.sync.closed:
            for record in await self.poll_batch(timeout=0.5):
                yield record

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        await self._worker.run(self.sync.seek, partition, offset)

    async def seek_to_beginning(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        await self._worker.run(self.sync.seek_to_beginning, partitions)

    async def seek_to_end(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        await self._worker.run(self.sync.seek_to_end, partitions)

    async def seek_to_timestamp(
        self, timestamp: int, partitions: Sequence[TopicPartition] | None = None
    ) -> None:
        await self._worker.run(self.sync.seek_to_timestamp, timestamp, partitions)

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        return await self._worker.run(self.sync.offsets_for_times, timestamps)

    async def position(
        self, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        return await self._worker.run(self.sync.position, partitions)

    async def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        return await self._worker.run(self.sync.watermarks, partition)

    async def lag(
        self, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        return await self._worker.run(self.sync.lag, partitions)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit and wait for the outcome (raises on failure)."""
        await self._worker.run(self.sync.commit, offsets)

    async def committed(
        self, partitions: Sequence[TopicPartition], timeout: float | None = None
    ) -> dict[TopicPartition, int | None]:
        return await self._worker.run(self.sync.committed, partitions, timeout)

    async def pause(self, partitions: Sequence[TopicPartition]) -> None:
        await self._worker.run(self.sync.pause, partitions)

    async def resume(self, partitions: Sequence[TopicPartition]) -> None:
        await self._worker.run(self.sync.resume, partitions)

    async def paused(self) -> set[TopicPartition]:
        return await self._worker.run(self.sync.paused)

    async def close(self) -> None:
        try:
            await self._worker.run(self.sync.close)
        finally:
            self._worker.shutdown()

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncAdmin:
    """An `Admin` for asyncio code."""

    def __init__(self, admin: Admin) -> None:
        self.sync = admin
        self._worker = _Worker("headwater-async-admin")

    async def create_topics(self, topics: Sequence[NewTopic]) -> None:
        await self._worker.run(self.sync.create_topics, topics)

    async def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> None:
        await self._worker.run(self.sync.create_topic, name, partitions, config)

    async def delete_topics(self, names: Sequence[str]) -> None:
        await self._worker.run(self.sync.delete_topics, names)

    async def list_topics(self, *, internal: bool = False) -> list[str]:
        return await self._worker.run(self.sync.list_topics, internal=internal)

    async def describe_topic(self, name: str) -> TopicDescription:
        return await self._worker.run(self.sync.describe_topic, name)

    async def create_partitions(self, name: str, total: int) -> None:
        await self._worker.run(self.sync.create_partitions, name, total)

    async def describe_configs(self, name: str) -> dict[str, str]:
        return await self._worker.run(self.sync.describe_configs, name)

    async def alter_configs(
        self, name: str, set: Mapping[str, str] | None = None, delete: Sequence[str] = ()
    ) -> None:
        await self._worker.run(self.sync.alter_configs, name, set, delete)

    async def delete_records(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._worker.run(self.sync.delete_records, offsets)

    async def list_groups(self) -> list[GroupListing]:
        return await self._worker.run(self.sync.list_groups)

    async def describe_group(self, group_id: str) -> GroupDescription:
        return await self._worker.run(self.sync.describe_group, group_id)

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        return await self._worker.run(self.sync.list_group_offsets, group_id)

    async def group_lag(self, group_id: str) -> dict[TopicPartition, int]:
        return await self._worker.run(self.sync.group_lag, group_id)

    async def alter_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, int]
    ) -> None:
        await self._worker.run(self.sync.alter_group_offsets, group_id, offsets)

    async def delete_groups(self, group_ids: Sequence[str]) -> None:
        await self._worker.run(self.sync.delete_groups, group_ids)

    async def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        return await self._worker.run(self.sync.watermarks, partition)

    async def close(self) -> None:
        try:
            await self._worker.run(self.sync.close)
        finally:
            self._worker.shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


__all__ = ["AsyncAdmin", "AsyncConsumer", "AsyncProducer"]
