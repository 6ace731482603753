"""The asyncio wrappers, the same on every backend: produce, consume in a group, commit, admin."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from backends import SETTLE, Backend, unique

from headwater.client import TopicPartition
from headwater.client._async import AsyncAdmin, AsyncConsumer, AsyncProducer
from headwater.errors import UnknownTopicOrPartitionError

pytestmark = pytest.mark.timeout(120)


def test_async_produce_consume_commit(backend: Backend) -> None:
    topic, group = backend.topic(partitions=2), unique("async")

    async def scenario() -> None:
        async with AsyncProducer(backend.producer(value_serializer="json")) as producer:
            first = await producer.send(topic, {"n": 0}, b"k", partition=0)
            rest = await producer.send_many(topic, [{"n": i} for i in range(1, 20)], partition=1)
            assert (first.partition, first.offset) == (0, 0)
            assert [(m.partition, m.offset) for m in rest] == [(1, i) for i in range(19)]
            assert await producer.partitions_for(topic) == [0, 1]
        consumer = AsyncConsumer(backend.consumer(group_id=group, value_deserializer="json"))
        async with consumer:
            await consumer.subscribe([topic])
            values = []
            async for record in consumer:
                values.append((record.partition, record.value["n"]))
                if len(values) == 20:
                    break
            assert sorted(values) == [(0, 0)] + [(1, i) for i in range(1, 20)]
            await consumer.commit()
            tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            assert await consumer.committed(tps) == dict(zip(tps, [1, 19], strict=True))
        async with AsyncAdmin(backend.client.admin()) as admin:
            assert topic in await admin.list_topics()
            assert await admin.group_lag(group) == dict.fromkeys(tps, 0)

    asyncio.run(asyncio.wait_for(scenario(), SETTLE * 2))


def test_async_waits_never_block_the_event_loop(backend: Backend) -> None:
    """A poll that waits a second, a flush and admin calls all wait off the loop: a task ticking
    every 10 ms keeps ticking throughout."""
    topic = backend.topic(partitions=1)

    async def scenario() -> None:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        async with AsyncConsumer(backend.consumer()) as consumer:
            await consumer.assign({TopicPartition(topic, 0): 0})
            started = time.monotonic()
            assert await consumer.poll(timeout=1.0) is None  # nothing to read: waits it out
            waited = time.monotonic() - started
        async with AsyncProducer(backend.producer(linger_ms=200)) as producer:
            sent = asyncio.ensure_future(producer.send(topic, b"late"))
            assert await producer.flush(30) == 0
            assert (await sent).offset == 0
        async with AsyncAdmin(backend.client.admin()) as admin:
            assert (await admin.describe_topic(topic)).partitions[0].high_watermark == 1
        stop.set()
        await ticking
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        assert waited >= 0.9
        assert len([tick for tick in ticks if started <= tick <= started + waited]) >= 30
        assert max(gaps) < 0.5, f"the loop stalled for {max(gaps):.2f} s"

    asyncio.run(asyncio.wait_for(scenario(), SETTLE * 2))


def test_async_positions_pause_and_typed_errors(backend: Backend) -> None:
    """Seeking, pausing and positions through the asyncio consumer, and the sync API's typed
    errors raised from an await."""
    topic = backend.topic(partitions=1)
    partition = TopicPartition(topic, 0)
    base = int(time.time() * 1000) - 600_000  # recent: older records invite retention

    async def scenario() -> None:
        async with AsyncProducer(backend.producer()) as producer:
            stamped = [
                await producer.send(topic, b"%d" % i, timestamp=base + 1_000 * i) for i in range(5)
            ]
            assert [m.offset for m in stamped] == list(range(5))
            with pytest.raises(UnknownTopicOrPartitionError):
                await producer.send(topic, b"nowhere", partition=7)
        async with AsyncConsumer(backend.consumer()) as consumer:
            await consumer.assign({partition: 0})
            await consumer.seek_to_timestamp(base + 2_000, [partition])
            assert await consumer.position([partition]) == {partition: 2}
            await consumer.pause([partition])
            assert await consumer.paused() == {partition}
            assert await consumer.poll_batch(timeout=0.3) == []
            await consumer.resume([partition])
            batch = await consumer.poll_batch(timeout=SETTLE)
            assert [record.value for record in batch][:1] == [b"2"]
            await consumer.seek_to_end()
            assert await consumer.position([partition]) == {partition: 5}
            assert await consumer.watermarks(partition) == (0, 5)

    asyncio.run(asyncio.wait_for(scenario(), SETTLE * 2))
