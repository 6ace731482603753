"""The idempotent producer (librdkafka's and Java's default) against `headwater serve`."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from broker_process import free_port, start_broker
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def _quiet(bootstrap: str, **extra: object) -> dict[str, object]:
    return {"bootstrap.servers": bootstrap, "log_level": 0, **extra}


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int, bytes]]:
    consumer = Consumer(_quiet(bootstrap, **{"group.id": "check", "enable.auto.commit": False}))
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(partitions)
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + 30
    while len(out) < sum(ends.values()) and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            if message.error() is None:
                out.append((message.partition(), message.offset(), message.value()))
    consumer.close()
    return out


def test_idempotent_producer_survives_broker_kills_without_duplicates(tmp_path: Path) -> None:
    """acks=all, enable.idempotence=true; the broker is SIGKILLed and restarted twice while the
    producer keeps sending: every acknowledged record is present exactly once."""
    data, log, port = tmp_path / "data", tmp_path / "broker.log", free_port()
    broker = start_broker(data, log, port=port)
    bootstrap = broker.bootstrap
    admin = AdminClient(_quiet(bootstrap))
    for future in admin.create_topics([NewTopic("idem", 2, 1)]).values():
        future.result(10)
    producer = Producer(
        _quiet(
            bootstrap,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 60_000,
                "retry.backoff.ms": 100,
            },
        )
    )
    acknowledged: dict[bytes, tuple[int, int]] = {}
    errors: list[object] = []

    def on_delivery(error: object, message: object) -> None:
        if error is not None:
            errors.append(error)
        else:
            acknowledged[message.value()] = (message.partition(), message.offset())  # type: ignore[attr-defined]

    stop = threading.Event()

    def produce() -> None:
        number = 0
        while not stop.is_set():
            try:
                producer.produce(
                    "idem",
                    key=b"k%d" % (number % 13),
                    value=b"v%08d" % number,
                    on_delivery=on_delivery,
                )
                number += 1
            except BufferError:
                pass
            producer.poll(0.001)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        for _ in range(2):
            time.sleep(1.0)
            broker.stop(signal.SIGKILL)
            broker = start_broker(data, log, port=port)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
    assert producer.flush(60) == 0
    assert errors == [], errors[:3]
    assert len(acknowledged) > 100
    stored = _read_all(bootstrap, "idem", 2)
    values = [value for _, _, value in stored]
    assert len(values) == len(set(values)), "a record was stored twice"
    where = {value: (partition, offset) for partition, offset, value in stored}
    for value, position in acknowledged.items():
        assert where.get(value) == position, value
    assert broker.stop() == 0
    assert "Traceback" not in log.read_text(errors="replace")
