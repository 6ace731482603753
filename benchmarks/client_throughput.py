"""Produce and consume through `headwater.connect`, embedded and against a broker.

Not a test: it prints numbers. In the same run and on the same machine:
- embedded (`file://`): `send_many` in chunks (the fast path), `send` per record, and
  `poll_batch`, beside a plain Python loop writing the same bytes to a file;
- broker (`kafka://` to a fresh `headwater serve`): `send` per record, `send_many` and
  `poll_batch` through the client API, beside raw confluent-kafka with the same librdkafka
  settings driven by the same kind of loop on the same broker, interleaved, so the ratio is what
  the wrapper costs.

    python benchmarks/client_throughput.py [--records 300000] [--sizes 100,1024]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "broker"))

from broker_process import start_broker  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka import TopicPartition as RawTopicPartition  # noqa: E402

import headwater  # noqa: E402
from headwater.client import NewTopic, TopicPartition  # noqa: E402

CHUNK_RECORDS = 1_000  # records per send_many call
SERVE_EVERY_RECORDS = 256  # how often `send` serves delivery reports while sending
# Leave flushing to the OS for the throughput rows, as Kafka does by default.
OS_FLUSH = {"flush.messages": str(2**63 - 1)}


def _quiet() -> logging.Logger:
    logger = logging.getLogger("benchmark.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _best(runs: int, measure: Callable[[], float]) -> float:
    """The shortest of `runs` timings (seconds): the least disturbed on a shared machine."""
    return min(measure() for _ in range(runs))


def _row(name: str, records: int, size: int, seconds: float, reference: float | None) -> None:
    rate = records / seconds
    megabytes = records * size / seconds / 1e6
    ratio = "" if reference is None else f"{100 * reference / seconds:7.1f}% of reference"
    print(f"  {name:<48} {rate:>13,.0f} rec/s {megabytes:>9,.1f} MB/s  {ratio}")


# --- embedded ---------------------------------------------------------------------------------


def _plain_write(directory: str, values: list[bytes]) -> float:
    """A Python loop writing the values' bytes in chunks to a file: the floor of any log."""
    path = os.path.join(directory, "plain.bin")
    start = time.perf_counter()
    with open(path, "wb") as file:
        for index in range(0, len(values), CHUNK_RECORDS):
            file.write(b"".join(values[index : index + CHUNK_RECORDS]))
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return elapsed


def _embedded(records: int, size: int, runs: int) -> None:
    values = [os.urandom(size) for _ in range(min(records, 10_000))]
    values = (values * (records // len(values) + 1))[:records]
    directory = tempfile.mkdtemp(prefix="headwater-client-bench-")
    try:
        plain = _best(runs, lambda: _plain_write(directory, values))
        print(f"embedded, {records:,} records of {size} B")
        _row("plain file write (Python loop, chunks)", records, size, plain, None)
        with headwater.connect(Path(directory) / "data") as client:
            admin = client.admin()

            def fresh(config: dict[str, str]) -> str:
                topic = f"bench-{uuid.uuid4().hex[:8]}"
                admin.create_topics([NewTopic(topic, 1, config)])
                return topic

            def send_many(acks: str, config: dict[str, str]) -> float:
                topic = fresh(config)
                with client.producer(acks=acks) as producer:
                    start = time.perf_counter()
                    for index in range(0, records, CHUNK_RECORDS):
                        producer.send_many(topic, values[index : index + CHUNK_RECORDS])
                    producer.flush()
                    return time.perf_counter() - start

            def send_each() -> float:
                topic = fresh(OS_FLUSH)
                with client.producer(acks="1") as producer:
                    send = producer.send  # bound once, as the raw loop binds produce
                    start = time.perf_counter()
                    for value in values:
                        send(topic, value)
                    producer.flush()
                    return time.perf_counter() - start

            _row(
                "send_many, acks=1, OS flush",
                records,
                size,
                _best(runs, lambda: send_many("1", OS_FLUSH)),
                plain,
            )
            _row(
                "send_many, acks=all, fsync per append",
                records,
                size,
                _best(runs, lambda: send_many("all", {})),
                plain,
            )
            _row("send per record, acks=1, OS flush", records, size, _best(runs, send_each), plain)

            topic = fresh(OS_FLUSH)
            with client.producer(acks="1") as producer:
                for index in range(0, records, CHUNK_RECORDS):
                    producer.send_many(topic, values[index : index + CHUNK_RECORDS])

            def consume() -> float:
                with client.consumer() as consumer:
                    consumer.assign({TopicPartition(topic, 0): 0})
                    seen = 0
                    start = time.perf_counter()
                    while seen < records:
                        seen += len(consumer.poll_batch(10_000, timeout=5.0))
                    return time.perf_counter() - start

            _row("poll_batch (assign)", records, size, _best(runs, consume), plain)
            admin.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- against a broker -------------------------------------------------------------------------


# librdkafka settings both sides share: the client API's defaults (acks=all, idempotent,
# Kafka's partitioner) with a 5 ms linger.
RAW_PRODUCER = {
    "linger.ms": 5,
    "acks": "all",
    "enable.idempotence": True,
    "partitioner": "murmur2_random",
}


class _BareFuture(Future[object]):
    """The least a `concurrent.futures.Future` per record can cost: made without a condition,
    completed by storing the report, and nothing else (no waiter could ever be woken)."""

    __slots__ = ("_done_with",)
    __init__ = object.__init__

    def __call__(self, error: object, message: object) -> None:
        self._done_with = message


def _raw_produce(bootstrap: str, topic: str, values: list[bytes], reports: str) -> float:
    """A raw confluent-kafka loop, its fastest form (positional arguments: keywords cost
    librdkafka's binding about 0.5 us a call). `reports`: "none"; "count", one callback that
    counts (the least an application that checks deliveries needs); "future", a bare Future per
    record as the callback (the floor for any API that returns one, as `send` does); "served",
    the same with reports served every 256 records, as `send` serves them (left alone, librdkafka
    holds reports until its queue of 100,000 records is full); "keep", a callback per record
    keeping its report, as an application wanting each record's result."""
    producer = Producer({"bootstrap.servers": bootstrap, "logger": _quiet(), **RAW_PRODUCER})
    delivered = [0]

    def count(error: object, message: object) -> None:
        delivered[0] += 1

    kept: list[object] = [None] * len(values)

    def keep(index: int, error: object, message: object) -> None:
        kept[index] = message
        delivered[0] += 1

    # Warmed up first, as the API's producers are: an idempotent producer's first records wait
    # for its producer id (up to ~0.5 s in librdkafka), which is not what is measured here.
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    produce = producer.produce
    callback: Callable[[object, object], None] | None = count if reports == "count" else None
    start = time.perf_counter()
    served = reports == "served"
    for index, value in enumerate(values):
        if reports == "future" or served:
            callback = _BareFuture()
        elif reports == "keep":
            callback = functools.partial(keep, index)
        while True:
            try:
                produce(topic, value, None, -1, callback)
                break
            except BufferError:
                producer.poll(0.01)
        if served and index % SERVE_EVERY_RECORDS == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - start
    assert remaining == 0
    assert reports not in ("count", "keep") or delivered[0] == len(values)
    return elapsed


def _raw_consume(bootstrap: str, topic: str, records: int, *, every_field: bool = False) -> float:
    """A raw confluent-kafka loop reading each record's value, asking for exactly what is
    left (consume() waits for a full batch or its timeout); with `every_field`, keeping each
    batch's records as tuples of all their fields, as `poll_batch` returns them."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "logger": _quiet(),
            # The client API's defaults (Kafka's), where librdkafka's differ.
            "check.crcs": True,
            "isolation.level": "read_uncommitted",
        }
    )
    consumer.assign([RawTopicPartition(topic, 0, 0)])
    seen = 0
    start = time.perf_counter()
    while seen < records:
        messages = consumer.consume(min(10_000, records - seen), timeout=5.0)
        if every_field:
            kept = [
                (
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.timestamp(),
                    message.key(),
                    message.value(),
                    message.headers(),
                )
                for message in messages
                if message.error() is None
            ]
            seen += len(kept)
        else:
            for message in messages:
                message.value()
                seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` (0: this one) onto `cpus`; threads made later inherit."""
    tasks = os.listdir(f"/proc/{pid or os.getpid()}/task")
    for task in tasks:
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), cpus)


def _broker(records: int, size: int, runs: int) -> None:
    values = [os.urandom(size) for _ in range(min(records, 10_000))]
    values = (values * (records // len(values) + 1))[:records]
    directory = Path(tempfile.mkdtemp(prefix="headwater-client-bench-"))
    broker = start_broker(directory / "data", directory / "broker.log")
    before = os.sched_getaffinity(0)
    if len(before) >= 2:
        # The broker on one core, this process (Python and librdkafka's threads) on another: the
        # two no longer take turns on the same cores, so the rows measure the client's own cost
        # (and vary far less from run to run on a shared machine).
        first, second, *_ = sorted(before)
        _pin(broker.process.pid, {second})
        _pin(0, {first})
        print(f"(broker pinned to CPU {second}, this process to CPU {first})")
    try:
        print(f"headwater serve, {records:,} records of {size} B, acks=all, idempotent, OS flush")
        with headwater.connect(f"kafka://{broker.bootstrap}") as client:
            admin = client.admin()

            def fresh() -> str:
                topic = f"bench-{uuid.uuid4().hex[:8]}"
                admin.create_topics([NewTopic(topic, 1, OS_FLUSH)])
                return topic

            def api_produce() -> float:
                topic = fresh()
                with client.producer(linger_ms=5) as producer:
                    producer.send(topic, b"warm-up")
                    producer.flush()
                    send = producer.send  # bound once, as the raw loop binds produce
                    start = time.perf_counter()
                    for value in values:
                        send(topic, value)
                    producer.flush()
                    return time.perf_counter() - start

            def api_send_many() -> float:
                topic = fresh()
                with client.producer(linger_ms=5) as producer:
                    producer.send(topic, b"warm-up")
                    producer.flush()
                    start = time.perf_counter()
                    for index in range(0, records, CHUNK_RECORDS):
                        producer.send_many(topic, values[index : index + CHUNK_RECORDS])
                    producer.flush()
                    return time.perf_counter() - start

            # Interleaved, best of `runs` each: this shared machine drifts between runs.
            timings: dict[str, float] = {}

            def raw(reports: str) -> Callable[[], float]:
                return lambda: _raw_produce(broker.bootstrap, fresh(), values, reports)

            kinds = ("none", "count", "future", "served", "keep")
            measures = {reports: raw(reports) for reports in kinds}
            measures["send"] = api_produce
            measures["send_many"] = api_send_many
            for _ in range(runs):
                for name, measure in measures.items():
                    timings[name] = min(timings.get(name, float("inf")), measure())
            count, future, keep = timings["count"], timings["future"], timings["keep"]
            send = timings["send"]
            _row("raw produce, no reports", records, size, timings["none"], None)
            _row("raw produce + one counting callback (ref)", records, size, count, None)
            _row(
                "client API send_many (chunks), against that",
                records,
                size,
                timings["send_many"],
                count,
            )
            _row("client API send (a future each), against that", records, size, send, count)
            _row("raw produce + a bare Future per record (ref)", records, size, future, None)
            _row("client API send, against that", records, size, send, future)
            served = timings["served"]
            _row("the same, reports served as send does (ref)", records, size, served, None)
            _row("client API send, against that", records, size, send, served)
            _row("raw produce + a callback per record, kept (ref)", records, size, keep, None)
            _row("client API send, against that", records, size, send, keep)

            topic = fresh()
            _raw_produce(broker.bootstrap, topic, values, "none")

            def api_consume() -> float:
                with client.consumer(group_id=f"api-{uuid.uuid4().hex[:8]}") as consumer:
                    consumer.assign({TopicPartition(topic, 0): 0})
                    seen = 0
                    start = time.perf_counter()
                    while seen < records:
                        seen += len(consumer.poll_batch(min(10_000, records - seen), timeout=5.0))
                    return time.perf_counter() - start

            consumed: dict[str, float] = {}
            for _ in range(runs):
                for name, measure in (
                    ("raw", lambda: _raw_consume(broker.bootstrap, topic, records)),
                    (
                        "raw_fields",
                        lambda: _raw_consume(broker.bootstrap, topic, records, every_field=True),
                    ),
                    ("api", api_consume),
                ):
                    consumed[name] = min(consumed.get(name, float("inf")), measure())
            _row("raw confluent-kafka consume, value read", records, size, consumed["raw"], None)
            _row("client API poll_batch", records, size, consumed["api"], consumed["raw"])
            fields = consumed["raw_fields"]
            _row("raw consume, every field kept as a tuple", records, size, fields, None)
            _row("client API poll_batch, against that", records, size, consumed["api"], fields)
            admin.close()
    finally:
        broker.stop()
        _pin(0, before)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--sizes", default="100,1024")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--skip-broker", action="store_true")
    args = parser.parse_args()
    for size in (int(text) for text in args.sizes.split(",")):
        records = args.records if size <= 100 else max(1, args.records // 4)
        _embedded(records, size, args.runs)
        if not args.skip_broker:
            _broker(records, size, args.runs)


if __name__ == "__main__":
    main()
