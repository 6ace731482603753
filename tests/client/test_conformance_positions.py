"""Reading from chosen places, the same on every backend: assign with offsets, the special
offsets, seek, timestamps, position, watermarks, lag, pause and resume."""

from __future__ import annotations

import time

import pytest
from backends import Backend, consume, fill, produce

from headwater.client import OFFSET_BEGINNING, OFFSET_END, TopicPartition

pytestmark = pytest.mark.timeout(120)

# An hour ago: within retention.ms (older records may be deleted by retention at any time).
BASE_MS = (int(time.time()) - 3600) * 1000


def filled(backend: Backend, partitions: int = 1, count: int = 10) -> str:
    """A new topic with `count` records in each partition, value b"p<partition>-<i>",
    timestamp BASE_MS + 1000 * i."""
    topic = backend.topic(partitions)
    fill(backend, topic, partitions, count, timestamp=lambda i: BASE_MS + 1000 * i)
    return topic


def test_assign_at_offsets_and_special_offsets(backend: Backend) -> None:
    topic = filled(backend, partitions=3)
    tps = [TopicPartition(topic, p) for p in range(3)]
    with backend.consumer() as consumer:
        consumer.assign({tps[0]: 6, tps[1]: OFFSET_BEGINNING, tps[2]: OFFSET_END})
        assert consumer.assignment() == set(tps)
        records = consume(consumer, 14)
        assert sorted((r.partition, r.offset) for r in records) == [
            (0, o) for o in range(6, 10)
        ] + [(1, o) for o in range(10)]
        assert consumer.poll(0.3) is None, "OFFSET_END must not return existing records"
        with backend.producer() as producer:
            late = producer.send(topic, b"late", partition=2).result(30)
        (record,) = consume(consumer, 1)
        assert (
            (record.partition, record.offset, record.value)
            == (2, 10, b"late")
            == (
                2,
                late.offset,
                b"late",
            )
        )


def test_assign_without_offsets_follows_auto_offset_reset(backend: Backend) -> None:
    topic = filled(backend, count=4)
    tp = TopicPartition(topic, 0)
    with backend.consumer(auto_offset_reset="earliest") as earliest:
        earliest.assign([tp])
        assert [r.offset for r in consume(earliest, 4)] == [0, 1, 2, 3]
    with backend.consumer(auto_offset_reset="latest") as latest:
        latest.assign([tp])
        assert latest.poll(0.5) is None
        assert latest.position([tp]) == {tp: 4}


def test_seek_and_position(backend: Backend) -> None:
    topic = filled(backend, partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with backend.consumer() as consumer:
        consumer.assign({tp0: 0, tp1: 0})
        consume(consumer, 20)
        assert consumer.position() == {tp0: 10, tp1: 10}
        consumer.seek(tp0, 3)
        assert consumer.position([tp0]) == {tp0: 3}
        assert [(r.partition, r.offset, r.value) for r in consume(consumer, 2)] == [
            (0, 3, b"p0-3"),
            (0, 4, b"p0-4"),
        ]
        assert consumer.position([tp0]) == {tp0: 5}
        consumer.seek_to_beginning([tp1])
        again = consume(consumer, 15)
        assert sorted((r.partition, r.offset) for r in again) == [(0, o) for o in range(5, 10)] + [
            (1, o) for o in range(10)
        ]
        consumer.seek_to_beginning()
        assert len(consume(consumer, 20)) == 20
        consumer.seek(tp1, OFFSET_BEGINNING)
        assert consume(consumer, 1)[0][1:3] == (1, 0)
        consumer.seek_to_end()
        assert consumer.poll(0.3) is None
        assert consumer.position() == {tp0: 10, tp1: 10}


def test_offsets_for_times_and_seek_to_timestamp(backend: Backend) -> None:
    topic = filled(backend, partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with backend.consumer() as consumer:
        consumer.assign([tp0, tp1])
        found = consumer.offsets_for_times({tp0: BASE_MS + 2500, tp1: BASE_MS + 60_000})
        assert found == {tp0: 3, tp1: None}
        assert consumer.offsets_for_times({tp0: BASE_MS + 7000}) == {tp0: 7}
        assert consumer.offsets_for_times({tp1: 0}) == {tp1: 0}
        consumer.seek_to_timestamp(BASE_MS + 8000)
        records = consume(consumer, 4)
        assert sorted((r.partition, r.offset, r.timestamp) for r in records) == [
            (0, 8, BASE_MS + 8000),
            (0, 9, BASE_MS + 9000),
            (1, 8, BASE_MS + 8000),
            (1, 9, BASE_MS + 9000),
        ]
        consumer.seek_to_timestamp(BASE_MS + 99_000, [tp0])
        assert consumer.position([tp0]) == {tp0: 10}


def test_watermarks_and_lag(backend: Backend) -> None:
    topic = filled(backend, partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with backend.consumer() as consumer:
        consumer.assign({tp0: 0, tp1: 8})
        assert consumer.watermarks(tp0) == (0, 10)
        consume(consumer, 5)
        lag = consumer.lag()
        assert sum(lag.values()) == 7 and set(lag) == {tp0, tp1}
        consume(consumer, 7)
        assert consumer.lag() == {tp0: 0, tp1: 0}
        with backend.producer() as producer:
            produce(producer, topic, [b"more"] * 3, partition=1)
        assert consumer.watermarks(tp1) == (0, 13)
        assert consumer.lag([tp1]) == {tp1: 3}
    assert backend.admin.watermarks(tp1) == (0, 13)


def test_pause_and_resume(backend: Backend) -> None:
    topic = filled(backend, partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with backend.consumer() as consumer:
        consumer.assign({tp0: 0, tp1: 0})
        consumer.pause([tp0])
        assert consumer.paused() == {tp0}
        flowing = consume(consumer, 10)
        assert {r.partition for r in flowing} == {1}
        assert consumer.poll(0.5) is None, "a paused partition returned a record"
        with backend.producer() as producer:
            produce(producer, topic, [b"while-paused"], partition=1)
        assert consume(consumer, 1)[0].value == b"while-paused"
        consumer.resume([tp0])
        assert consumer.paused() == set()
        resumed = consume(consumer, 10)
        assert [(r.partition, r.offset) for r in resumed] == [(0, o) for o in range(10)]


def test_poll_batch(backend: Backend) -> None:
    topic = filled(backend, count=30)
    tp = TopicPartition(topic, 0)
    with backend.consumer(max_poll_records=8) as consumer:
        consumer.assign({tp: 0})
        got: list = []
        while len(got) < 30:
            batch = consumer.poll_batch(timeout=10)
            assert 0 < len(batch) <= 8, f"batch of {len(batch)} with max.poll.records 8"
            got.extend(batch)
        assert [r.offset for r in got] == list(range(30))
        assert consumer.poll_batch(5, timeout=0.3) == []
        consumer.seek(tp, 20)
        batch = consumer.poll_batch(3, timeout=10)
        assert [r.offset for r in batch] == list(range(20, 20 + len(batch)))
        assert 1 <= len(batch) <= 3


@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_seek_past_the_end_follows_auto_offset_reset(backend: Backend, reset: str) -> None:
    topic = filled(backend, count=3)
    tp = TopicPartition(topic, 0)
    with backend.consumer(auto_offset_reset=reset) as consumer:
        consumer.assign({tp: OFFSET_END})
        consumer.assign({tp: 1})  # a new assignment replaces the old one
        assert consume(consumer, 1)[0].offset == 1
        consumer.seek(tp, 100)
        if reset == "earliest":
            assert consume(consumer, 1)[0].offset == 0
            return
        assert consumer.poll(1.0) is None
        assert consumer.position([tp]) == {tp: 3}, "reset to the end: the next offset is 3"
        with backend.producer() as producer:
            produce(producer, topic, [b"after"], partition=0)
        record = consume(consumer, 1)[0]
        assert (record.offset, record.value) == (3, b"after")


def test_tiny_fetch_sizes_still_return_whole_records(backend: Backend) -> None:
    topic = backend.topic()
    values = [b"small", b"L" * 600_000, b"after"]
    with backend.producer(linger_ms=0) as producer:
        produce(producer, topic, values)
    tp = TopicPartition(topic, 0)
    with backend.consumer(fetch_max_bytes=1, max_partition_fetch_bytes=1) as consumer:
        consumer.assign({tp: OFFSET_BEGINNING})
        assert [r.value for r in consume(consumer, 3)] == values
