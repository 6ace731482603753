"""Producing and reading back, the same on every backend: ordering, partitioning, headers,
timestamps, metadata, send_many, flush, the idempotent producer, and serializers."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest
from backends import Backend, by_partition, consume, produce, read_topic, unique

from headwater.client import OFFSET_BEGINNING, TopicPartition, struct
from headwater.errors import DeserializationError
from headwater.log.partitioner import partition_for_key

pytestmark = pytest.mark.timeout(120)


def assert_contiguous_in_send_order(records: list, sent: list) -> None:
    """Each partition's offsets are 0..n-1 and its values come in the order they were sent."""
    for partition, got in by_partition(records).items():
        assert [r.offset for r in got] == list(range(len(got))), f"partition {partition}"
        positions = [sent.index(r.value) for r in got]
        assert positions == sorted(positions), f"partition {partition} out of send order"


def test_order_per_partition(backend: Backend) -> None:
    topic = backend.topic(partitions=4)
    values = [f"v{i}".encode() for i in range(400)]
    keys = [f"k{i % 40}".encode() for i in range(400)]
    with backend.producer() as producer:
        produce(producer, topic, values, keys)
    records = read_topic(backend, topic, len(values), exactly=True)
    assert sorted(r.value for r in records) == sorted(values)
    assert set(by_partition(records)) == {0, 1, 2, 3}, "40 keys over 4 partitions use them all"
    assert_contiguous_in_send_order(records, values)


def test_keyed_records_land_where_kafkas_murmur2_puts_them(backend: Backend) -> None:
    topic = backend.topic(partitions=7)
    keys = [f"user-{i}".encode() for i in range(60)] + [b"", b"\x00\xff" * 9]
    with backend.producer() as producer:
        landed = produce(producer, topic, [b"x"] * len(keys), keys)
    assert [m.partition for m in landed] == [partition_for_key(k, 7) for k in keys]
    records = read_topic(backend, topic, len(keys))
    assert {(r.key, r.partition) for r in records} == {(k, partition_for_key(k, 7)) for k in keys}


def test_string_keys_are_hashed_as_their_serialized_bytes(backend: Backend) -> None:
    topic = backend.topic(partitions=5)
    keys = [f"order-{i}" for i in range(30)]
    with backend.producer(key_serializer="str") as producer:
        landed = produce(producer, topic, [b"x"] * len(keys), keys)
    assert [m.partition for m in landed] == [partition_for_key(k.encode(), 5) for k in keys]


def test_explicit_partition_headers_and_timestamps(backend: Backend) -> None:
    topic = backend.topic(partitions=3)
    stamp = int(time.time() * 1000) - 600_123  # within retention.ms
    listed = [("trace", b"t-1"), ("trace", b"t-2"), ("null", None), ("blank", b"")]
    with backend.producer() as producer:
        sent = [
            producer.send(topic, b"a", b"k", partition=2, timestamp=stamp, headers=listed),
            producer.send(topic, b"b", partition=2, headers={"source": b"unit"}),
            producer.send(topic, b"c", partition=0),
            producer.send(topic, b"", b"", partition=1),
        ]
        metadata = [future.result(30) for future in sent]
    before_ms = int(time.time() * 1000) - 60_000
    assert [(m.partition, m.offset) for m in metadata] == [(2, 0), (2, 1), (0, 0), (1, 0)]
    assert metadata[0].timestamp == stamp
    records = {r.value: r for r in read_topic(backend, topic, 4)}
    assert records[b""].key == b"", "an empty key is not a null key"
    first = records[b"a"]
    assert (first.partition, first.offset, first.key, first.timestamp) == (2, 0, b"k", stamp)
    assert first.headers == tuple(listed)
    assert not first.log_append_time
    assert records[b"b"].headers == (("source", b"unit"),)
    assert records[b"b"].key is None
    assert records[b"c"].headers == ()
    assert records[b"b"].timestamp == metadata[1].timestamp >= before_ms
    assert records[b"c"].timestamp >= before_ms


def test_metadata_offsets_equal_consumed_offsets(backend: Backend) -> None:
    topic = backend.topic(partitions=3)
    values = [f"m{i}".encode() for i in range(90)]
    with backend.producer() as producer:
        landed = produce(producer, topic, values, [bytes([i % 5]) for i in range(90)])
    assert all(m.topic == topic for m in landed)
    where = {v: (m.partition, m.offset) for v, m in zip(values, landed, strict=True)}
    records = read_topic(
        backend, topic, len(values), isolation_level="read_committed", exactly=True
    )
    assert {r.value: (r.partition, r.offset) for r in records} == where


def test_send_many(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    stamp = int(time.time() * 1000) - 600_000  # within retention.ms
    with backend.producer(value_serializer="str") as producer:
        placed = producer.send_many(topic, [f"p{i}" for i in range(50)], partition=1).result(30)
        keyed = producer.send_many(
            topic, ["a", "b", "c"], keys=[b"x", b"y", b"x"], timestamp=stamp
        ).result(30)
    assert [(m.partition, m.offset) for m in placed] == [(1, i) for i in range(50)]
    assert [m.partition for m in keyed] == [partition_for_key(k, 2) for k in (b"x", b"y", b"x")]
    assert {m.timestamp for m in keyed} == {stamp}
    records = read_topic(backend, topic, 53, value_deserializer="str", exactly=True)
    in_one = [r.value for r in records if r.partition == 1 and r.value.startswith("p")]
    assert in_one == [f"p{i}" for i in range(50)]
    assert sorted((r.key, r.value) for r in records if r.key) == [
        (b"x", "a"),
        (b"x", "c"),
        (b"y", "b"),
    ]


def test_keyless_send_many_says_where_each_record_went(backend: Backend) -> None:
    """Keyless records spread over partitions batch by batch (the sticky partitioner), and the
    metadata, record by record in send order, names the partition and offset that hold it."""
    topic = backend.topic(partitions=3)
    values = [b"r%04d" % i + b"." * 95 for i in range(300)]
    with backend.producer(batch_size=2_000) as producer:
        placed = producer.send_many(topic, values).result(30)
        with_tombstone = producer.send_many(topic, (b"before", None, b"after")).result(30)
    assert len(placed) == len(values) and len(with_tombstone) == 3
    assert len({m.partition for m in placed}) > 1, "sticky partitioning moves on per batch"
    records = read_topic(backend, topic, len(values) + 3, exactly=True)
    held = {(r.partition, r.offset): r.value for r in records}
    assert [held[(m.partition, m.offset)] for m in placed] == values
    assert [held[(m.partition, m.offset)] for m in with_tombstone] == [b"before", None, b"after"]


def test_acks_0_metadata_has_no_offset(backend: Backend) -> None:
    """As Kafka's producers report it: with acks=0 nothing comes back, so each record's
    metadata names its partition and timestamp but offset -1, on every path of the API."""
    topic = backend.topic(partitions=2)
    before = int(time.time() * 1000) - 1_000
    with backend.producer(acks="0") as producer:
        one = producer.send(topic, b"one", partition=1).result(30)
        keyless = producer.send_many(topic, [b"a", b"b"], partition=0).result(30)
        keyed = producer.send_many(topic, [b"c", b"d"], keys=[b"x", b"y"]).result(30)
    placed = [one, *keyless, *keyed]
    assert [m.offset for m in placed] == [-1] * 5
    keyed_partitions = [partition_for_key(key, 2) for key in (b"x", b"y")]
    assert [m.partition for m in placed] == [1, 0, 0, *keyed_partitions]
    assert all(m.timestamp >= before for m in placed)
    assert len(read_topic(backend, topic, 5, exactly=True)) == 5


def test_flush_waits_for_every_record_and_delivery_callbacks(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    delivered: list[tuple[object, object]] = []
    lock = threading.Lock()

    def on_delivery(metadata: object, error: object) -> None:
        with lock:
            delivered.append((metadata, error))

    with backend.producer(linger_ms=50) as producer:
        futures = [
            producer.send(topic, f"f{i}".encode(), on_delivery=on_delivery) for i in range(200)
        ]
        assert producer.flush(30) == 0
        assert all(future.done() for future in futures), "flush returned before acks"
        assert len(delivered) == 200 and all(error is None for _, error in delivered)
        assert sorted(m.offset for m, _ in delivered) == sorted(f.result().offset for f in futures)
        assert producer.partitions_for(topic) == [0, 1]
    assert len(read_topic(backend, topic, 200, exactly=True)) == 200


def test_close_flushes_queued_records(backend: Backend) -> None:
    topic = backend.topic()
    producer = backend.producer(linger_ms=200)
    futures = [producer.send(topic, f"q{i}".encode()) for i in range(50)]
    producer.close()
    assert all(future.done() and future.exception() is None for future in futures)
    assert [r.value for r in read_topic(backend, topic, 50, exactly=True)] == [
        f"q{i}".encode() for i in range(50)
    ]


def test_threads_share_a_producer(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    with backend.producer() as producer:

        def sender(thread: int) -> None:
            for i in range(100):
                producer.send(topic, f"{thread}-{i}".encode(), partition=thread % 2)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert producer.flush(30) == 0
    records = read_topic(backend, topic, 400, exactly=True)
    for thread in range(4):
        mine = [r for r in records if r.value.startswith(f"{thread}-".encode())]
        assert [r.value for r in mine] == [f"{thread}-{i}".encode() for i in range(100)]
        assert {r.partition for r in mine} == {thread % 2}


def test_idempotent_producer_writes_each_record_once(backend: Backend) -> None:
    topic = backend.topic(partitions=3)
    values = [f"i{i}".encode() for i in range(600)]
    keys = [f"key{i % 31}".encode() for i in range(600)]
    with backend.producer(enable_idempotence=True, acks="all", linger_ms=2) as producer:
        landed = produce(producer, topic, values, keys)
    assert len({(m.partition, m.offset) for m in landed}) == 600
    records = read_topic(backend, topic, 600, exactly=True)
    assert sorted(r.value for r in records) == sorted(values)
    assert_contiguous_in_send_order(records, values)


class Reading(msgspec.Struct):
    sensor: str
    celsius: float
    tags: list[str] = []


ROUND_TRIPS = {
    "str": ("str", "str", ["héllo", "", "wörld"]),
    "json": ("json", "json", [{"a": 1, "b": [1, 2.5, None]}, [1, "x"], "s", 7]),
    "msgpack": ("msgpack", "msgpack", [{"a": b"\x00raw", "n": -3}, [True, None], 1.5]),
    "struct": (*struct(Reading), [Reading("s1", 21.5, ["x"]), Reading("s2", -4.0)]),
    "struct-type": (Reading, Reading, [Reading("s3", 0.5)]),
    "struct-msgpack": (*struct(Reading, format="msgpack"), [Reading("s4", 1.0, ["a", "b"])]),
}


@pytest.mark.parametrize("kind", list(ROUND_TRIPS))
def test_serializer_round_trips(backend: Backend, kind: str) -> None:
    serializer, deserializer, values = ROUND_TRIPS[kind]
    topic = backend.topic()
    with backend.producer(key_serializer=serializer, value_serializer=serializer) as producer:
        produce(producer, topic, [*values, None], keys=[*values[::-1], None])
    records = read_topic(
        backend,
        topic,
        len(values) + 1,
        key_deserializer=deserializer,
        value_deserializer=deserializer,
    )
    assert [r.value for r in records] == [*values, None]
    assert [r.key for r in records] == [*values[::-1], None]


def test_bad_payload_raises_deserialization_error_then_reading_goes_on(backend: Backend) -> None:
    topic = backend.topic()
    payloads = [b'{"n": 0}', b"not json {", b'{"n": 2}', b"\xff\xfe", b'{"n": 4}']
    with backend.producer() as producer:
        produce(producer, topic, payloads)
    tp = TopicPartition(topic, 0)
    got: list[object] = []
    with backend.consumer(value_deserializer="json") as consumer:
        consumer.assign({tp: OFFSET_BEGINNING})
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            try:
                record = consumer.poll(0.2)
            except DeserializationError as error:
                assert (error.topic, error.partition) == (topic, 0)
                assert f"offset {error.offset}" in str(error) and topic in str(error)
                got.append(("bad", error.offset))
                continue
            if record is not None:
                got.append((record.offset, record.value))
        assert consumer.position([tp]) == {tp: 5}
    assert got == [(0, {"n": 0}), ("bad", 1), (2, {"n": 2}), ("bad", 3), (4, {"n": 4})]


def test_consumed_records_carry_topic_and_keyless_records_use_valid_partitions(
    backend: Backend,
) -> None:
    topic = backend.topic(partitions=3)
    with backend.producer() as producer:
        landed = produce(producer, topic, [b"n"] * 30)
    assert {m.partition for m in landed} <= {0, 1, 2}
    with backend.consumer() as consumer:
        consumer.assign({TopicPartition(topic, p): OFFSET_BEGINNING for p in range(3)})
        records = consume(consumer, 30)
    assert {r.topic for r in records} == {topic}
    assert sorted((r.partition, r.offset) for r in records) == sorted(
        (m.partition, m.offset) for m in landed
    )


def test_log_append_time_topics_stamp_the_log_clock(backend: Backend) -> None:
    topic = backend.topic(config={"message.timestamp.type": "LogAppendTime"})
    before_ms = int(time.time() * 1000) - 5_000
    with backend.producer() as producer:
        landed = producer.send(topic, b"stamped", timestamp=1_000).result(30)
    assert before_ms <= landed.timestamp <= int(time.time() * 1000) + 5_000
    (record,) = read_topic(backend, topic, 1)
    assert (record.timestamp, record.log_append_time) == (landed.timestamp, True)


def test_compressed_batches_round_trip(backend: Backend) -> None:
    codecs = ("gzip", "snappy", "lz4", "zstd")
    topics = {codec: backend.topic(partitions=2, prefix=codec) for codec in codecs}
    sent = {codec: [f"{codec}-{i}-".encode() * 40 for i in range(100)] for codec in codecs}
    for codec, topic in topics.items():
        with backend.producer(compression_type=codec, linger_ms=20) as producer:
            produce(producer, topic, sent[codec], [bytes([i % 7]) for i in range(100)])
    with backend.consumer() as consumer:
        consumer.assign(
            {TopicPartition(t, p): OFFSET_BEGINNING for t in topics.values() for p in (0, 1)}
        )
        records = consume(consumer, 400)
    for codec, topic in topics.items():
        got = [r for r in records if r.topic == topic]
        assert sorted(r.value for r in got) == sorted(sent[codec]), codec
        assert_contiguous_in_send_order(got, sent[codec])


def test_sending_to_a_new_topic_creates_it(backend: Backend) -> None:
    topic = unique("auto-created")
    with backend.producer() as producer:
        landed = producer.send(topic, b"first").result(30)
    assert (landed.topic, landed.partition, landed.offset) == (topic, 0, 0)
    assert topic in backend.admin.list_topics()
    assert [r.value for r in read_topic(backend, topic, 1)] == [b"first"]
