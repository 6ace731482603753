"""Plumbing the example demos share (not the point of the examples): creating topics, printing
an output topic live as records arrive, waiting for the runtime to consume its input."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from headwater.client import Client, TopicPartition


def ensure_topics(client: Client, topics: Mapping[str, tuple[int, Mapping[str, str]]]) -> None:
    """Create each `{name: (partitions, config)}` topic that does not exist yet."""
    admin = client.admin()
    try:
        existing = set(admin.list_topics())
        for name, (partitions, config) in topics.items():
            if name not in existing:
                admin.create_topic(name, partitions, config)
    finally:
        admin.close()


class LivePrinter(threading.Thread):
    """Prints each record of `topic` written from now on, as it arrives, with
    `show(key, value)`; `finish()` prints what the topic holds by then and stops. Owns its
    consumer."""

    def __init__(self, client: Client, topic: str, show: Callable[[Any, Any], str]) -> None:
        super().__init__(name=f"print-{topic}", daemon=True)
        self._client = client
        admin = client.admin()
        try:
            described = admin.describe_topic(topic)
        finally:
            admin.close()
        self._partitions = [TopicPartition(topic, p.partition) for p in described.partitions]
        self._consumer = client.consumer(key_deserializer="str", value_deserializer="json")
        # From each partition's end as of now: earlier runs' records are not this run's.
        self._consumer.assign(
            {
                p: d.high_watermark
                for p, d in zip(self._partitions, described.partitions, strict=True)
            }
        )
        self._show = show
        self._until: dict[TopicPartition, int] | None = None
        self.printed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        consumer = self._consumer
        try:
            while True:
                record = consumer.poll(0.2)
                if record is not None:
                    print(self._show(record.key, record.value), flush=True)
                    self.printed += 1
                    continue
                until = self._until
                if until is not None:
                    positions = consumer.position(list(until))
                    if all(positions[p] >= end for p, end in until.items()):
                        return
        except BaseException as error:  # reported by finish()
            self.error = error
        finally:
            consumer.close()

    def finish(self, timeout: float = 60.0) -> None:
        """Print every record the topic holds now, then stop the thread."""
        admin = self._client.admin()
        try:
            self._until = {p: admin.watermarks(p)[1] for p in self._partitions}
        finally:
            admin.close()
        self.join(timeout)
        if self.error is not None:
            raise self.error
        if self.is_alive():
            raise TimeoutError("the printer did not reach the end of its topic")


def wait_until_consumed(runner: Any, records: int, timeout: float) -> None:
    """Block until `runner` has consumed `records` records since it started (it fails or
    `timeout` seconds pass: raise)."""
    deadline = time.monotonic() + timeout
    while runner.metrics()["records-consumed"] < records:
        if runner.failed is not None:
            raise RuntimeError("the streams runner failed") from runner.failed
        if time.monotonic() > deadline:
            raise TimeoutError(f"the runner consumed fewer than {records} records in {timeout} s")
        time.sleep(0.05)
