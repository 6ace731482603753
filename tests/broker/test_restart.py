"""Crash and restart: a SIGKILLed broker keeps every record it acknowledged with acks=all, and a
SIGTERMed one shuts down cleanly (exit code 0) with everything it accepted.

A real `headwater serve` subprocess, a librdkafka producer sending from a thread, and a consumer
by assignment that reads the partitions back after the restart on the same port and data dir.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.timeout(90)

PARTITIONS = 3


def quiet(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 0, **extra}


def create_topic(bootstrap: str, topic: str) -> None:
    client = AdminClient(quiet(bootstrap))
    client.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=15)


def read_back(bootstrap: str, topic: str) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """Every record of `topic`, by (partition, offset), read by assignment up to the end."""
    client = Consumer(
        quiet(
            bootstrap,
            **{
                "group.id": "unused",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            },
        )
    )
    records: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    try:
        client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(at_end) < PARTITIONS and time.monotonic() < deadline:
            message = client.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            place = (message.partition(), message.offset())
            assert place not in records, f"offset {place} delivered twice"
            records[place] = (message.key(), message.value())
        assert len(at_end) == PARTITIONS, "did not reach the end of every partition"
    finally:
        client.close()
    return records


class SteadyProducer:
    """Sends keyed records with acks=all from a thread until stopped; keeps every ack."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            quiet(
                bootstrap,
                **{
                    "acks": "all",
                    "enable.idempotence": False,
                    "linger.ms": 2,
                    "message.timeout.ms": 20_000,
                    "reconnect.backoff.ms": 50,
                    "reconnect.backoff.max.ms": 200,
                    "partitioner": "murmur2_random",
                },
            )
        )
        self.acked: dict[tuple[bytes, bytes], tuple[int, int]] = {}
        self.failed = 0
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, error: Any, message: Any) -> None:
        with self._lock:
            if error is None:
                self.acked[(message.key(), message.value())] = (
                    message.partition(),
                    message.offset(),
                )
            else:
                self.failed += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.sent
            try:
                self.producer.produce(
                    self.topic,
                    key=f"key-{n % 17}".encode(),
                    value=f"value-{n}".encode(),
                    on_delivery=self._delivered,
                )
                self.sent += 1
            except BufferError:
                self.producer.poll(0.01)
                continue
            self.producer.poll(0)
            if n % 50 == 49:
                time.sleep(0.002)  # yield now and then: steady, not one burst

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self, flush_timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.producer.flush(flush_timeout)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_sigkill_loses_no_acknowledged_record(tmp_path: Path, launch_broker: Any) -> None:
    data, log = tmp_path / "data", tmp_path / "broker.log"
    broker = launch_broker(data, log)
    topic = "crash"
    create_topic(broker.bootstrap, topic)

    sender = SteadyProducer(broker.bootstrap, topic).start()
    wait_for(lambda: sender.acked_count() >= 200, 15, "the first acknowledgements")
    time.sleep(1.0)
    acked_before_kill = sender.acked_count()
    assert broker.stop(signal.SIGKILL) == -signal.SIGKILL

    # Same port and data dir; the producer keeps retrying into the new process.
    restarted = launch_broker(data, log, port=broker.port)
    time.sleep(0.5)
    sender.stop(flush_timeout=25)
    assert sender.acked_count() >= acked_before_kill

    records = read_back(restarted.bootstrap, topic)
    print(
        f"sent {sender.sent}, acked {len(sender.acked)} ({acked_before_kill} before the kill), "
        f"failed {sender.failed}, stored {len(records)}"
    )
    lost = [
        (key, value, place)
        for (key, value), place in sender.acked.items()
        if records.get(place) != (key, value)
    ]
    assert lost == [], f"{len(lost)} acknowledged records missing or moved, e.g. {lost[:5]}"
    for partition in range(PARTITIONS):  # no holes: offsets run 0..n-1 in every partition
        offsets = sorted(offset for p, offset in records if p == partition)
        assert offsets == list(range(len(offsets)))
    assert restarted.stop() == 0, restarted.log_tail()


def test_sigterm_shuts_down_cleanly_and_keeps_everything(
    tmp_path: Path, launch_broker: Any
) -> None:
    data, log = tmp_path / "data", tmp_path / "broker.log"
    broker = launch_broker(data, log)
    topic = "graceful"
    create_topic(broker.bootstrap, topic)

    expected: dict[tuple[int, int], tuple[bytes, bytes]] = {}

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        expected[(message.partition(), message.offset())] = (message.key(), message.value())

    for acks in ("all", "1"):  # acks=1 leaves appends unsynced until the shutdown flush
        client = Producer(
            quiet(broker.bootstrap, acks=acks, **{"enable.idempotence": False, "linger.ms": 5})
        )
        for n in range(500):
            client.produce(
                topic,
                key=f"{acks}-{n % 13}".encode(),
                value=f"{acks}-value-{n}".encode(),
                on_delivery=delivered,
            )
            client.poll(0)
        assert client.flush(15) == 0
    assert len(expected) == 1000

    assert broker.stop(signal.SIGTERM) == 0, broker.log_tail()
    assert "Traceback" not in broker.log_tail()

    restarted = launch_broker(data, log, port=broker.port)
    assert read_back(restarted.bootstrap, topic) == expected
    assert restarted.stop(signal.SIGTERM) == 0, restarted.log_tail()
