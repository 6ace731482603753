"""The real-Kafka fixture works: topics, keyed produce, consume by assignment, ListOffsets.

Driven by kafka-python, by confluent-kafka (librdkafka) and by kcat, so the differential tests
that build on `kafka_broker` can trust every client they use against the reference broker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections import defaultdict

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from kafka_fixture import KafkaBroker, probe

PARTITIONS = 3
RECORDS = [(f"key-{n % 4}".encode(), f"value-{n}".encode()) for n in range(10)]


def optional_tool(available: bool, what: str) -> None:
    """Skip when a secondary client is missing locally; in CI (CI=true) a missing one fails."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI", pytrace=False)
    pytest.skip(f"{what} is not installed")


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(broker: KafkaBroker, topic: str, partitions: int = PARTITIONS) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="fixture-test")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = admin.describe_topics([topic])
            parts = described[0]["partitions"] if described else []
            # kafka-python 3.x says leader_id, 2.x said leader.
            leaders = [part.get("leader_id", part.get("leader")) for part in parts]
            if len(leaders) == partitions and all(leader == 1 for leader in leaders):
                return
            time.sleep(0.1)
        raise AssertionError(f"topic {topic} did not get {partitions} led partitions")
    finally:
        admin.close()


def expected_by_partition(
    placed: list[tuple[int, int, bytes, bytes]],
) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """(partition, offset, key, value) as produced -> per partition, in offset order."""
    grouped: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    for partition, offset, key, value in placed:
        grouped[partition].append((offset, key, value))
    for rows in grouped.values():
        rows.sort()
    return dict(grouped)


def check_placement(placed: list[tuple[int, int, bytes, bytes]]) -> None:
    """Each partition got offsets 0..n-1, in send order; equal keys share a partition."""
    by_partition = expected_by_partition(placed)
    assert sum(len(rows) for rows in by_partition.values()) == len(RECORDS)
    for rows in by_partition.values():
        assert [offset for offset, _, _ in rows] == list(range(len(rows)))
    partition_of_key: dict[bytes, int] = {}
    for partition, _, key, _ in placed:
        assert partition_of_key.setdefault(key, partition) == partition
    assert set(partition_of_key.values()) <= set(range(PARTITIONS))


def test_broker_answers_probe(kafka_broker: KafkaBroker) -> None:
    host, port = kafka_broker.bootstrap.split(":")
    assert host == "127.0.0.1"
    assert probe(host, int(port))
    assert kafka_broker.log_file.exists()


def test_kafka_python_roundtrip(kafka_broker: KafkaBroker) -> None:
    topic = unique_topic("kafka-python")
    create_topic(kafka_broker, topic)

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=0)
    try:
        futures = [
            (producer.send(topic, key=key, value=value), key, value) for key, value in RECORDS
        ]
        producer.flush(timeout=30)
        placed = []
        for future, key, value in futures:
            metadata = future.get(timeout=30)
            placed.append((metadata.partition, metadata.offset, key, value))
    finally:
        producer.close(timeout=10)
    check_placement(placed)

    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        got: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < len(RECORDS) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp.partition].extend((r.offset, r.key, r.value) for r in records)
        assert dict(got) == expected_by_partition(placed)

        counts = {p: len(rows) for p, rows in expected_by_partition(placed).items()}
        earliest = consumer.beginning_offsets(partitions)
        latest = consumer.end_offsets(partitions)
        assert {tp.partition: offset for tp, offset in earliest.items()} == dict.fromkeys(
            range(PARTITIONS), 0
        )
        assert {tp.partition: offset for tp, offset in latest.items()} == {
            p: counts.get(p, 0) for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def test_confluent_kafka_roundtrip(kafka_broker: KafkaBroker) -> None:
    try:
        import confluent_kafka
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.admin import NewTopic as ConfluentNewTopic
    except ImportError:
        optional_tool(False, "confluent_kafka")
        return

    topic = unique_topic("confluent")
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for future in admin.create_topics([ConfluentNewTopic(topic, PARTITIONS, 1)]).values():
        future.result(timeout=30)

    placed: list[tuple[int, int, bytes, bytes]] = []
    errors: list[object] = []

    def delivered(error: object, message: confluent_kafka.Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            placed.append((message.partition(), message.offset(), message.key(), message.value()))

    # murmur2_random is the Java client's partitioner, so keys land where kafka-python puts them.
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "acks": "all",
            "partitioner": "murmur2_random",
        }
    )
    for key, value in RECORDS:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    placed.sort(key=lambda row: RECORDS.index((row[2], row[3])))
    check_placement(placed)

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"unused-{topic}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(PARTITIONS)
            ]
        )
        got: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < len(RECORDS) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            got[message.partition()].append((message.offset(), message.key(), message.value()))
        assert dict(got) == expected_by_partition(placed)

        counts = {p: len(rows) for p, rows in expected_by_partition(placed).items()}
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, p), timeout=10, cached=False
            )
            assert (low, high) == (0, counts.get(p, 0))
    finally:
        consumer.close()


def test_partitioning_agrees_across_clients(kafka_broker: KafkaBroker) -> None:
    """kafka-python's and librdkafka's murmur2 put each key in the same partition."""
    try:
        import confluent_kafka
    except ImportError:
        optional_tool(False, "confluent_kafka")
        return
    topic = unique_topic("partitioning")
    create_topic(kafka_broker, topic)
    keys = [f"k{n}".encode() for n in range(12)]

    python_producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        by_python = {key: python_producer.send(topic, key=key, value=b"p") for key in keys}
        python_producer.flush(timeout=30)
        python_partitions = {key: f.get(timeout=30).partition for key, f in by_python.items()}
    finally:
        python_producer.close(timeout=10)

    rd_partitions: dict[bytes, int] = {}
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2_random"}
    )
    for key in keys:
        producer.produce(
            topic,
            key=key,
            value=b"c",
            on_delivery=lambda _err, msg: rd_partitions.__setitem__(msg.key(), msg.partition()),
        )
    assert producer.flush(30) == 0
    assert rd_partitions == python_partitions


def test_kcat_lists_topic(kafka_broker: KafkaBroker) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    optional_tool(kcat is not None, "kcat (apt-get install -y kcat)")
    assert kcat is not None
    topic = unique_topic("kcat")
    create_topic(kafka_broker, topic)
    listing = subprocess.run(
        [kcat, "-b", kafka_broker.bootstrap, "-L", "-m", "15"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f'topic "{topic}" with {PARTITIONS} partitions' in listing
    assert "1 brokers:" in listing
