"""Shared helpers for the client conformance suite (`test_conformance_*.py`).

A `Backend` is one place the client API runs: "embedded" (a data directory in this process),
"headwater" (a `headwater serve` process) or "kafka" (a real Apache Kafka broker). Every test
takes the `backend` fixture (conftest.py) and runs once per backend with the same assertions,
so a test that passes on one backend and fails on another names a bug in the failing one.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import headwater
from headwater.client import (
    OFFSET_BEGINNING,
    Admin,
    Client,
    Consumer,
    ConsumerRecord,
    Producer,
    RecordMetadata,
    TopicPartition,
)

BACKENDS = ("embedded", "headwater", "kafka")
SETTLE = 30.0  # seconds to wait for an assignment, a rebalance or records

# Quick group membership and fetches: a 2-core machine runs three backends.
FAST_CONSUMER: dict[str, Any] = {
    "session.timeout.ms": 6000,  # the brokers' group.min.session.timeout.ms
    "heartbeat.interval.ms": 300,
    "fetch.max.wait.ms": 50,
    "auto.offset.reset": "earliest",
}

_sequence = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same broker) uses."""
    return f"{prefix}-{os.getpid()}-{next(_sequence)}-{uuid.uuid4().hex[:6]}"


@dataclass
class Backend:
    name: str
    url: str
    clients: list[Client] = field(default_factory=list)
    _client: Client | None = None
    _admin: Admin | None = None

    def connect(self, **settings: Any) -> Client:
        """A new connection, closed when the test ends."""
        client = headwater.connect(self.url, **settings)
        self.clients.append(client)
        return client

    @property
    def client(self) -> Client:
        """The test's default connection."""
        if self._client is None:
            self._client = self.connect()
        return self._client

    @property
    def admin(self) -> Admin:
        if self._admin is None:
            self._admin = self.client.admin()
        return self._admin

    def producer(self, **settings: Any) -> Producer:
        return self.client.producer(**settings)

    def consumer(self, **settings: Any) -> Consumer:
        """A consumer with `FAST_CONSUMER` settings, overridable."""
        return self.client.consumer(**{**FAST_CONSUMER, **settings})

    def topic(
        self, partitions: int = 1, config: dict[str, str] | None = None, prefix: str = "topic"
    ) -> str:
        """A fresh topic with `partitions` partitions, created through the Admin API."""
        name = unique(prefix)
        self.admin.create_topic(name, partitions, config)
        return name

    def close(self) -> None:
        for client in reversed(self.clients):
            client.close()
        self.clients.clear()


def wait_until(predicate: Callable[[], object], message: str, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s: {message}")
        time.sleep(0.05)


def consume(consumer: Consumer, count: int, timeout: float = SETTLE) -> list[ConsumerRecord]:
    """Exactly the next `count` records (fails if fewer arrive within `timeout`)."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(records)} of {count} records within {timeout:.0f} s")
        record = consumer.poll(0.2)
        if record is not None:
            records.append(record)
    return records


def partitions_of(backend: Backend, topic: str) -> list[TopicPartition]:
    described = backend.admin.describe_topic(topic)
    return [TopicPartition(topic, p.partition) for p in described.partitions]


def read_topic(
    backend: Backend, topic: str, count: int, *, exactly: bool = False, **settings: Any
) -> list[ConsumerRecord]:
    """Every partition from the beginning, without a group: `count` records (and, `exactly`,
    no more)."""
    with backend.consumer(**settings) as consumer:
        consumer.assign(dict.fromkeys(partitions_of(backend, topic), OFFSET_BEGINNING))
        records = consume(consumer, count)
        extra = consumer.poll(0.3) if exactly else None
    assert extra is None, f"a record beyond the {count} expected: {extra}"
    return records


def produce(
    producer: Producer,
    topic: str,
    values: Iterable[Any],
    keys: Sequence[Any] | None = None,
    **options: Any,
) -> list[RecordMetadata]:
    """Send every value (with its key), flush, and return where each landed, in send order."""
    futures = [
        producer.send(topic, value, None if keys is None else keys[i], **options)
        for i, value in enumerate(values)
    ]
    assert producer.flush(SETTLE) == 0, "records left unacknowledged after flush"
    return [future.result(SETTLE) for future in futures]


def fill(
    backend: Backend,
    topic: str,
    partitions: int,
    count: int,
    timestamp: Callable[[int], int] | None = None,
) -> set[tuple[int, int]]:
    """`count` records in each partition, value b"p<partition>-<i>" (timestamp `timestamp(i)`
    if given); returns every (partition, offset) written."""
    with backend.producer() as producer:
        for p in range(partitions):
            for i in range(count):
                stamp = None if timestamp is None else timestamp(i)
                producer.send(topic, f"p{p}-{i}".encode(), partition=p, timestamp=stamp)
        assert producer.flush(SETTLE) == 0, "records left unacknowledged after flush"
    return {(p, o) for p in range(partitions) for o in range(count)}


def by_partition(records: Iterable[ConsumerRecord]) -> dict[int, list[ConsumerRecord]]:
    grouped: dict[int, list[ConsumerRecord]] = defaultdict(list)
    for record in records:
        grouped[record.partition].append(record)
    return dict(grouped)


def poll_round(consumers: Sequence[Consumer], into: Sequence[list[ConsumerRecord]]) -> None:
    """One short poll of each consumer (all in this thread), records appended per consumer."""
    for consumer, records in zip(consumers, into, strict=True):
        record = consumer.poll(0.05)
        if record is not None:
            records.append(record)


def poll_until(
    consumers: Sequence[Consumer],
    into: Sequence[list[ConsumerRecord]],
    predicate: Callable[[], object],
    message: str,
    timeout: float = SETTLE,
) -> None:
    """Poll every consumer in turn until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            assigned = [sorted(p.partition for p in c.assignment()) for c in consumers]
            raise AssertionError(f"timed out after {timeout:.0f} s: {message}; {assigned=}")
        poll_round(consumers, into)


def assigned_partitions(consumers: Sequence[Consumer]) -> list[set[int]]:
    return [{tp.partition for tp in consumer.assignment()} for consumer in consumers]


def split_exactly(consumers: Sequence[Consumer], partitions: int) -> bool:
    """Whether the consumers' assignments are disjoint, cover every partition, and balanced."""
    sets = assigned_partitions(consumers)
    sizes = {len(s) for s in sets}
    union = set().union(*sets)
    return (
        union == set(range(partitions))
        and sum(len(s) for s in sets) == partitions
        and max(sizes) - min(sizes) <= 1
    )
