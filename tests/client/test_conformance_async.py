"""The asyncio wrappers, the same on every backend: produce, consume in a group, commit, admin."""

from __future__ import annotations

import asyncio

import pytest
from backends import SETTLE, Backend, unique

from headwater.client import TopicPartition
from headwater.client._async import AsyncAdmin, AsyncConsumer, AsyncProducer

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
