"""`headwater serve` end to end with librdkafka (confluent-kafka): the smallest honest check."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from broker_process import ServedBroker, start_broker
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.log.partitioner import partition_for_key

_quiet = logging.getLogger("librdkafka-test")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _config(broker: ServedBroker, **extra: object) -> dict[str, object]:
    return {"bootstrap.servers": broker.bootstrap, "logger": _quiet, **extra}


def test_produce_acks_all_then_consume_by_assignment(headwater_broker: ServedBroker) -> None:
    admin = AdminClient(_config(headwater_broker))
    for future in admin.create_topics([NewTopic("orders", 3, 1)]).values():
        assert future.result(10) is None
    producer = Producer(
        _config(headwater_broker, acks="all", partitioner="murmur2_random", **{"linger.ms": 5})
    )
    delivered: list[tuple[int, int, bytes]] = []

    def on_delivery(error: object, message: object) -> None:
        assert error is None, error
        delivered.append((message.partition(), message.offset(), message.key()))  # type: ignore[attr-defined]

    for number in range(300):
        producer.produce(
            "orders",
            key=b"key-%d" % (number % 17),
            value=b"value-%d" % number,
            on_delivery=on_delivery,
        )
    assert producer.flush(15) == 0
    assert len(delivered) == 300
    for partition, _, key in delivered:
        assert partition == partition_for_key(key, 3)  # Kafka's default partitioner, both sides
    consumer = Consumer(
        _config(headwater_broker, **{"group.id": "unused", "enable.auto.commit": False})
    )
    consumer.assign([TopicPartition("orders", partition, 0) for partition in range(3)])
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    values = set()
    deadline = time.monotonic() + 20
    while sum(map(len, seen.values())) < 300 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        seen[message.partition()].append(message.offset())
        values.add(message.value())
    for partition, offsets in seen.items():
        assert offsets == list(range(len(offsets))), partition
        low, high = consumer.get_watermark_offsets(TopicPartition("orders", partition), timeout=10)
        assert (low, high) == (0, len(offsets))
    assert values == {b"value-%d" % number for number in range(300)}
    consumer.close()


def test_large_fetches_are_sent_by_sendfile(headwater_broker: ServedBroker) -> None:
    """Record bytes go from the segment file to the socket without passing through Python."""
    import re

    producer = Producer(_config(headwater_broker, **{"linger.ms": 20, "batch.size": 1_000_000}))
    value = bytes(range(256)) * 4
    for _ in range(3000):
        producer.produce("bulk", value)
    assert producer.flush(15) == 0
    consumer = Consumer(
        _config(headwater_broker, **{"group.id": "unused", "enable.auto.commit": False})
    )
    consumer.assign([TopicPartition("bulk", 0, 0)])
    received = 0
    deadline = time.monotonic() + 20
    while received < 3000 and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            assert message.error() is None
            assert message.value() == value
            received += 1
    consumer.close()
    assert received == 3000
    assert headwater_broker.stop() == 0
    sent = re.search(r"(\d+) record bytes sent by sendfile", headwater_broker.log_tail())
    assert sent is not None, headwater_broker.log_tail()
    assert int(sent.group(1)) > 1_000_000


def _old_records_low_watermark(broker: ServedBroker, wait_s: float) -> tuple[int, int]:
    """Produce three records stamped 30 days ago to a topic keeping one day, wait up to
    `wait_s` for retention to remove them; the partition's (low, high) watermarks then."""
    admin = AdminClient(_config(broker))
    topic = NewTopic("replayed", 1, 1, config={"retention.ms": "86400000"})
    for future in admin.create_topics([topic]).values():
        assert future.result(10) is None
    producer = Producer(_config(broker, acks="all"))
    stamp = int(time.time() * 1000) - 30 * 86_400_000
    for number in range(3):
        producer.produce("replayed", value=b"old-%d" % number, timestamp=stamp + number)
    assert producer.flush(15) == 0
    consumer = Consumer(_config(broker, **{"group.id": "unused"}))
    try:
        deadline = time.monotonic() + wait_s
        while True:
            low, high = consumer.get_watermark_offsets(TopicPartition("replayed", 0), timeout=10)
            if low == high or time.monotonic() >= deadline:
                return low, high
            time.sleep(0.1)
    finally:
        consumer.close()


def test_retention_waits_for_its_check_interval(tmp_path: Path) -> None:
    """As Kafka's log.retention.check.interval.ms (5 min, the first check 30 s after start):
    records older than retention.ms stay readable until the next check, so replayed history is
    not deleted the second it lands; a short interval set with -c removes them within it."""
    default = start_broker(tmp_path / "default", tmp_path / "default.log")
    try:
        assert _old_records_low_watermark(default, wait_s=3.0) == (0, 3)
    finally:
        assert default.stop() == 0, default.log_tail()
    quick = start_broker(
        tmp_path / "quick", tmp_path / "quick.log", "-c", "log.retention.check.interval.ms=200"
    )
    try:
        assert _old_records_low_watermark(quick, wait_s=20.0) == (3, 3)
    finally:
        assert quick.stop() == 0, quick.log_tail()
