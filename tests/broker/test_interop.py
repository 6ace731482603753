"""Real Kafka clients against a real `headwater serve`: librdkafka, kafka-python, aiokafka, kcat.

Every client produces and consumes by manual assignment (Headwater has no group coordinator
yet) and with idempotence off (no InitProducerId yet). librdkafka's own logging is silenced
(`log_level` 0) so a failing test prints assertions, not connection chatter.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from headwater.log.partitioner import partition_for_key

pytestmark = pytest.mark.timeout(60)

PARTITIONS = 3
# Recent timestamps: records older than retention.ms (7 days) may be deleted at any moment.
BASE_TS = (int(time.time()) - 3600) * 1000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rdkafka_conf(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 0, **extra}


def producer(bootstrap: str, **extra: Any) -> Producer:
    return Producer(
        rdkafka_conf(
            bootstrap,
            **{"enable.idempotence": False, "partitioner": "murmur2_random", **extra},
        )
    )


def consumer(bootstrap: str, **extra: Any) -> Consumer:
    return Consumer(
        rdkafka_conf(
            bootstrap,
            **{
                "group.id": unique("unused"),  # librdkafka wants one; nothing is committed
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 50,
                **extra,
            },
        )
    )


def admin(bootstrap: str) -> AdminClient:
    return AdminClient(rdkafka_conf(bootstrap))


def create_topic(
    bootstrap: str, topic: str, partitions: int = PARTITIONS, config: dict[str, str] | None = None
) -> None:
    client = admin(bootstrap)  # must outlive the future
    futures = client.create_topics(
        [NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=10
    )
    futures[topic].result(timeout=15)


def consume(
    bootstrap: str,
    assignments: list[TopicPartition],
    count: int,
    timeout: float = 15.0,
    **extra: Any,
) -> list[Any]:
    """Assign (no group) and read `count` messages, failing on any consumer error."""
    client = consumer(bootstrap, **extra)
    try:
        client.assign(assignments)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(messages) < count and time.monotonic() < deadline:
            message = client.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {message.error()}")
            messages.append(message)
        assert len(messages) == count, f"consumed {len(messages)} of {count} messages"
        return messages
    finally:
        client.close()


def from_beginning(topic: str, partitions: int = PARTITIONS) -> list[TopicPartition]:
    return [TopicPartition(topic, index, OFFSET_BEGINNING) for index in range(partitions)]


# --- confluent-kafka (librdkafka): every acks level x every codec --------------------------------


def sample_records(count: int) -> list[dict[str, Any]]:
    records = []
    for n in range(count):
        key = f"key-{n % 7}".encode() if n % 3 else None
        value = f"value-{n}-".encode() * (1 + n % 5)
        if n == 4:
            value = b""  # empty, not null
        if n == 5:
            value = bytes(range(256)) * 200  # 51 KiB: several KiB compressed or not
        headers = [("n", str(n).encode()), ("kind", b"keyed" if key else b"keyless")]
        if n % 4 == 0:
            headers.append(("n", b"again"))  # repeated header keys keep their order
        records.append({"key": key, "value": value, "headers": headers, "timestamp": BASE_TS + n})
    return records


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_confluent_round_trip(shared_headwater: Any, acks: str, compression: str) -> None:
    bootstrap = shared_headwater.bootstrap
    topic = unique(f"rt-{acks}-{compression}")
    create_topic(bootstrap, topic)
    records = sample_records(40)
    reports: list[tuple[Any, int, int, bytes]] = []

    def delivered(error: Any, message: Any) -> None:
        reports.append((error, message.partition(), message.offset(), message.value()))

    client = producer(bootstrap, acks=acks, **{"compression.type": compression, "linger.ms": 5})
    for record in records:
        client.produce(topic, on_delivery=delivered, **record)
        client.poll(0)
    assert client.flush(15) == 0
    assert all(error is None for error, *_ in reports), reports

    messages = consume(bootstrap, from_beginning(topic), len(records))
    by_value: dict[bytes, Any] = {}
    offsets: dict[int, list[int]] = defaultdict(list)
    for message in messages:
        assert message.value() not in by_value
        by_value[message.value()] = message
        offsets[message.partition()].append(message.offset())
    for partition_offsets in offsets.values():
        assert partition_offsets == list(range(len(partition_offsets)))
    for record in records:
        message = by_value[record["value"]]
        assert message.key() == record["key"]
        assert message.headers() == record["headers"]
        assert message.timestamp() == (1, record["timestamp"])  # CreateTime, as sent
        if record["key"] is not None:
            assert message.partition() == partition_for_key(record["key"], PARTITIONS)
    if acks != "0":  # acks=0 gets no offsets back
        for _, partition, offset, value in reports:
            assert (by_value[value].partition(), by_value[value].offset()) == (partition, offset)
    # One producer, no retries: each partition holds its records in send order.
    order = {record["value"]: n for n, record in enumerate(records)}
    for partition in offsets:
        sent = [order[m.value()] for m in messages if m.partition() == partition]
        assert sent == sorted(sent)


def test_null_value_and_null_key(shared_headwater: Any) -> None:
    bootstrap = shared_headwater.bootstrap
    topic = unique("nulls")
    create_topic(bootstrap, topic, 1)
    client = producer(bootstrap)
    client.produce(topic, key=b"k", value=None)
    client.produce(topic, key=None, value=b"v")
    client.produce(topic, key=b"", value=b"")
    assert client.flush(10) == 0
    messages = consume(bootstrap, from_beginning(topic, 1), 3)
    assert [(m.key(), m.value(), m.headers()) for m in messages] == [
        (b"k", None, None),
        (None, b"v", None),
        (b"", b"", None),
    ]


# --- kafka-python and aiokafka -------------------------------------------------------------------


# kafka-python's lz4/zstd/snappy codecs need packages the venv does not have.
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_kafka_python_round_trip(shared_headwater: Any, compression: str | None) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition

    bootstrap = shared_headwater.bootstrap
    topic = unique("kp")
    create_topic(bootstrap, topic)
    client = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        compression_type=compression,
        linger_ms=5,
    )
    sent = []
    try:
        futures = [
            client.send(
                topic,
                key=f"key-{n % 5}".encode(),
                value=f"value-{n}".encode(),
                headers=[("n", str(n).encode())],
                timestamp_ms=BASE_TS + n,
            )
            for n in range(30)
        ]
        client.flush(timeout=15)
        sent = [future.get(timeout=10) for future in futures]
    finally:
        client.close(timeout=5)
    for n, metadata in enumerate(sent):
        assert metadata.partition == partition_for_key(f"key-{n % 5}".encode(), PARTITIONS)

    reader = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        fetch_max_wait_ms=50,
    )
    try:
        partitions = [KTopicPartition(topic, index) for index in range(PARTITIONS)]
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        got = []
        for record in reader:
            got.append(record)
            if len(got) == len(sent):
                break
    finally:
        reader.close()
    assert len(got) == len(sent)
    placed = {(m.partition, m.offset): n for n, m in enumerate(sent)}
    for record in got:
        n = placed[(record.partition, record.offset)]
        assert record.key == f"key-{n % 5}".encode()
        assert record.value == f"value-{n}".encode()
        assert record.headers == [("n", str(n).encode())]
        assert record.timestamp == BASE_TS + n


def test_aiokafka_round_trip(shared_headwater: Any) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATopicPartition

    bootstrap = shared_headwater.bootstrap
    topic = unique("aio")
    create_topic(bootstrap, topic)

    async def scenario() -> tuple[list[Any], list[Any]]:
        writer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", compression_type="gzip", linger_ms=5
        )
        await writer.start()
        try:
            futures = [
                await writer.send(
                    topic,
                    key=f"key-{n % 5}".encode(),
                    value=f"value-{n}".encode(),
                    headers=[("n", str(n).encode())],
                    timestamp_ms=BASE_TS + n,
                )
                for n in range(30)
            ]
            sent = list(await asyncio.gather(*futures))
        finally:
            await writer.stop()
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await reader.start()
        got: list[Any] = []
        try:
            partitions = [ATopicPartition(topic, index) for index in range(PARTITIONS)]
            reader.assign(partitions)
            for partition in partitions:  # explicit positions: no ListOffsets (see below)
                reader.seek(partition, 0)
            async with asyncio.timeout(15):
                while len(got) < len(sent):
                    batches = await reader.getmany(timeout_ms=200)
                    for records in batches.values():
                        got.extend(records)
        finally:
            await reader.stop()
        return sent, got

    sent, got = asyncio.run(scenario())
    assert len(got) == len(sent) == 30
    placed = {(m.partition, m.offset): n for n, m in enumerate(sent)}
    assert len(placed) == 30
    for record in got:
        n = placed[(record.partition, record.offset)]
        assert record.key == f"key-{n % 5}".encode()
        assert record.value == f"value-{n}".encode()
        assert list(record.headers) == [("n", str(n).encode())]
        assert record.timestamp == BASE_TS + n
        assert record.partition == partition_for_key(record.key, PARTITIONS)


def test_aiokafka_list_offsets_v3(shared_headwater: Any) -> None:
    """aiokafka 0.14 resets positions with ListOffsets v3 (it knows no later version)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATopicPartition

    bootstrap = shared_headwater.bootstrap
    topic = unique("aio-lo")
    create_topic(bootstrap, topic, 1)
    writer = producer(bootstrap)
    for n in range(3):
        writer.produce(topic, value=f"v{n}".encode())
    assert writer.flush(10) == 0

    async def scenario() -> tuple[int, int, list[bytes]]:
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=3000
        )
        await reader.start()
        try:
            partition = ATopicPartition(topic, 0)
            async with asyncio.timeout(10):
                earliest = (await reader.beginning_offsets([partition]))[partition]
                latest = (await reader.end_offsets([partition]))[partition]
                reader.assign([partition])
                await reader.seek_to_beginning(partition)
                batch = await reader.getmany(partition, timeout_ms=3000)
        finally:
            await reader.stop()
        return earliest, latest, [record.value for record in batch.get(partition, [])]

    assert asyncio.run(scenario()) == (0, 3, [b"v0", b"v1", b"v2"])


# --- kcat ----------------------------------------------------------------------------------------


def kcat(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kcat", *args, "-X", "log_level=0"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert result.returncode == 0, f"kcat {args} exited {result.returncode}: {result.stderr}"
    return result.stdout


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_list_produce_consume(shared_headwater: Any) -> None:
    bootstrap = shared_headwater.bootstrap
    topic = unique("kcat")
    create_topic(bootstrap, topic, 1)
    listing = kcat("-b", bootstrap, "-L")
    assert f'topic "{topic}" with 1 partitions' in listing
    assert "partition 0, leader 1" in listing

    lines = [f"line {n}" for n in range(25)]
    kcat("-b", bootstrap, "-P", "-t", topic, "-k", "the-key", stdin="\n".join(lines) + "\n")
    keyed = kcat("-b", bootstrap, "-P", "-t", topic, "-K", ":", stdin="a:1\nb:2\n")
    assert keyed == ""
    # Absolute offsets here; `-o beginning` (ListOffsets v2) has its own test below.
    out = kcat("-b", bootstrap, "-C", "-t", topic, "-e", "-o", "0", "-f", "%o %k %s\n")
    expected = [f"{n} the-key line {n}" for n in range(25)] + ["25 a 1", "26 b 2"]
    assert out.splitlines() == expected
    # From an offset, and the tail.
    tail = kcat("-b", bootstrap, "-C", "-t", topic, "-e", "-o", "20", "-f", "%o %s\n")
    assert tail.splitlines() == [f"{n} line {n}" for n in range(20, 25)] + ["25 1", "26 2"]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_from_beginning(shared_headwater: Any) -> None:
    bootstrap = shared_headwater.bootstrap
    topic = unique("kcat-lo")
    create_topic(bootstrap, topic, 1)
    kcat("-b", bootstrap, "-P", "-t", topic, stdin="x\ny\n")
    out = kcat("-b", bootstrap, "-C", "-t", topic, "-e", "-o", "beginning", "-f", "%o %s\n")
    assert out.splitlines() == ["0 x", "1 y"]


# --- AdminClient ---------------------------------------------------------------------------------


def test_admin_topics_and_configs(shared_headwater: Any) -> None:
    bootstrap = shared_headwater.bootstrap
    client = admin(bootstrap)
    topic = unique("admin")
    futures = client.create_topics(
        [NewTopic(topic, 2, 1, config={"retention.ms": "3600000", "cleanup.policy": "delete"})]
    )
    futures[topic].result(timeout=10)

    metadata = client.list_topics(timeout=10)
    assert topic in metadata.topics
    described = metadata.topics[topic]
    assert described.error is None
    assert sorted(described.partitions) == [0, 1]
    assert all(part.leader == 1 for part in described.partitions.values())
    assert list(metadata.brokers) == [1]

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = client.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"
    assert configs["segment.bytes"].is_default

    change = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry("max.message.bytes", "200000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    client.incremental_alter_configs([change])[change].result(timeout=10)
    configs = client.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].is_default
    assert configs["max.message.bytes"].value == "200000"
    assert not configs["max.message.bytes"].is_default

    client.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=10)
    assert sorted(client.list_topics(topic, timeout=10).topics[topic].partitions) == [0, 1, 2, 3]

    # Produce to every partition, then delete records below offset 3 on partition 2.
    writer = producer(bootstrap)
    for n in range(20):
        writer.produce(topic, value=f"v{n}".encode(), partition=n % 4)
    assert writer.flush(10) == 0
    deleted = client.delete_records([TopicPartition(topic, 2, 3)])
    result = next(iter(deleted.values())).result(timeout=10)
    assert result.low_watermark == 3
    messages = consume(bootstrap, [TopicPartition(topic, 2, OFFSET_BEGINNING)], 2)
    assert [m.offset() for m in messages] == [3, 4]

    client.delete_topics([topic], operation_timeout=10)[topic].result(timeout=10)
    assert topic not in client.list_topics(timeout=10).topics


def test_list_offsets(shared_headwater: Any) -> None:
    bootstrap = shared_headwater.bootstrap
    topic = unique("offsets")
    create_topic(bootstrap, topic, 1)
    writer = producer(bootstrap, **{"linger.ms": 0})
    for n in range(10):
        writer.produce(topic, value=f"v{n}".encode(), timestamp=BASE_TS + 10 * n)
        writer.flush(5)  # one batch each, so the time index sees each record
    for n in range(10, 20):
        writer.produce(topic, value=f"v{n}".encode(), timestamp=BASE_TS + 10 * n)
    assert writer.flush(10) == 0  # the tail in fewer batches

    reader = consumer(bootstrap)
    try:
        assert reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=5) == (0, 20)
        probes = {
            BASE_TS - 1: 0,  # before everything: the first record
            BASE_TS: 0,
            BASE_TS + 1: 1,  # between records: the next one
            BASE_TS + 50: 5,
            BASE_TS + 155: 16,  # inside a multi-record batch
            BASE_TS + 190: 19,
            BASE_TS + 191: -1,  # after everything: no offset
        }
        for timestamp, offset in probes.items():
            [answer] = reader.offsets_for_times([TopicPartition(topic, 0, timestamp)], timeout=5)
            assert answer.error is None
            assert answer.offset == offset, timestamp
    finally:
        reader.close()

    client = admin(bootstrap)
    partition = TopicPartition(topic, 0)
    specs = {
        "earliest": (OffsetSpec.earliest(), 0),
        "latest": (OffsetSpec.latest(), 20),
        "max": (OffsetSpec.max_timestamp(), 19),
        "time": (OffsetSpec.for_timestamp(BASE_TS + 95), 10),
    }
    for name, (spec, offset) in specs.items():
        result = client.list_offsets({partition: spec})[partition].result(timeout=10)
        assert result.offset == offset, name
    result = client.list_offsets({partition: OffsetSpec.max_timestamp()})[partition].result(10)
    assert result.timestamp == BASE_TS + 190


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_fetch_from_inside_a_batch(shared_headwater: Any, compression: str) -> None:
    bootstrap = shared_headwater.bootstrap
    topic = unique("mid")
    create_topic(bootstrap, topic, 1)
    writer = producer(bootstrap, **{"linger.ms": 200, "compression.type": compression})
    reports: list[int] = []
    for n in range(10):
        writer.produce(topic, value=f"v{n}".encode(), on_delivery=lambda e, m: reports.append(1))
    assert writer.flush(10) == 0
    assert len(reports) == 10

    messages = consume(bootstrap, [TopicPartition(topic, 0, 6)], 4)
    assert [(m.offset(), m.value()) for m in messages] == [
        (n, f"v{n}".encode()) for n in range(6, 10)
    ]
    if compression not in ("none", "gzip"):
        return  # kafka-python has no lz4/zstd/snappy codec in this venv

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, consumer_timeout_ms=3000)
    try:
        partition = KTopicPartition(topic, 0)
        reader.assign([partition])
        reader.seek(partition, 7)
        got = []
        for record in reader:
            got.append((record.offset, record.value))
            if record.offset == 9:
                break
    finally:
        reader.close()
    assert got == [(n, f"v{n}".encode()) for n in range(7, 10)]


def test_long_poll_wakes_on_produce(shared_headwater: Any) -> None:
    """A consumer parked in a long fetch (max wait 10 s) sees a new record well within 1 s."""
    bootstrap = shared_headwater.bootstrap
    topic = unique("longpoll")
    create_topic(bootstrap, topic, 1)
    writer = producer(bootstrap, **{"linger.ms": 0})
    writer.produce(topic, value=b"warm-up")
    assert writer.flush(10) == 0

    reader = consumer(bootstrap, **{"fetch.wait.max.ms": 10_000})
    try:
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        first = None
        deadline = time.monotonic() + 10
        while first is None and time.monotonic() < deadline:
            first = reader.poll(0.2)
        assert first is not None and first.value() == b"warm-up"
        time.sleep(1.0)  # the next fetch is now parked at the broker

        arrived: dict[str, float] = {}

        def send_later() -> None:
            arrived["sent"] = time.monotonic()
            writer.produce(topic, value=b"wake-up")
            writer.flush(5)

        sender = threading.Timer(0.3, send_later)
        sender.start()
        message = None
        deadline = time.monotonic() + 8
        while message is None and time.monotonic() < deadline:
            message = reader.poll(0.05)
            if message is not None and message.error() is not None:
                message = None
        received = time.monotonic()
        sender.join()
    finally:
        reader.close()
    assert message is not None and message.value() == b"wake-up"
    latency = received - arrived["sent"]
    assert latency < 1.0, f"the parked fetch answered {latency:.2f} s after the produce"
