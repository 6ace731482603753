"""Transactions with librdkafka, Headwater beside Apache Kafka.

Not a test: it prints numbers. Against a fresh `headwater serve` and a fresh Apache Kafka
(KRaft, jars from scripts/fetch-kafka.sh) on this machine, in the same run:

* commit latency: begin, produce a few records, commit, one after another (each commit waits
  for the decision and the markers to be on disk);
* transactional throughput: records per second with one commit every N records, beside the
  same records sent by a plain idempotent producer (the reference: what a transaction costs);
* read_committed consume throughput of what was committed, beside read_uncommitted.

    python benchmarks/transactions.py [--records 200000] [--commits 200] [--skip-kafka]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "broker"))

from broker_process import start_broker  # noqa: E402

from kafka_fixture import KafkaBroker  # noqa: E402

_quiet = logging.getLogger("benchmark-librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

VALUE = b"x" * 100
PARTITIONS = 3


def _create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)
    time.sleep(0.5)


def _producer(bootstrap: str, **extra: object) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "logger": _quiet, **extra})


def commit_latency_ms(bootstrap: str, commits: int) -> list[float]:
    topic = f"txn-latency-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic)
    producer = _producer(bootstrap, **{"transactional.id": f"bench-{uuid.uuid4().hex[:6]}"})
    producer.init_transactions(30)
    latencies = []
    for number in range(commits):
        began = time.perf_counter()
        producer.begin_transaction()
        for partition in range(PARTITIONS):
            producer.produce(topic, VALUE, partition=partition)
        producer.commit_transaction(30)
        latencies.append((time.perf_counter() - began) * 1000)
        if number == 0:
            latencies.clear()  # the first one finds the coordinator
    return latencies


def produce_rate(bootstrap: str, records: int, per_commit: int | None) -> float:
    """Records per second; `per_commit` None: a plain idempotent producer (the reference)."""
    topic = f"txn-rate-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic)
    if per_commit is None:
        producer = _producer(bootstrap, **{"enable.idempotence": True})
    else:
        producer = _producer(bootstrap, **{"transactional.id": f"bench-{uuid.uuid4().hex[:6]}"})
        producer.init_transactions(30)
    began = time.perf_counter()
    sent = 0
    while sent < records:
        chunk = min(per_commit or records, records - sent)
        if per_commit is not None:
            producer.begin_transaction()
        for _ in range(chunk):
            while True:
                try:
                    producer.produce(topic, VALUE)
                    break
                except BufferError:
                    producer.poll(0.01)
        sent += chunk
        if per_commit is not None:
            producer.commit_transaction(60)
    producer.flush(60)
    return records / (time.perf_counter() - began)


def consume_rate(bootstrap: str, records: int, isolation: str) -> float:
    topic = f"txn-read-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic)
    producer = _producer(bootstrap, **{"transactional.id": f"bench-{uuid.uuid4().hex[:6]}"})
    producer.init_transactions(30)
    for start in range(0, records, 1000):
        producer.begin_transaction()
        for _ in range(min(1000, records - start)):
            producer.produce(topic, VALUE)
        # Every fifth transaction aborts: read_committed must drop those records. Flushed
        # first, or librdkafka would purge what it had not sent yet.
        if (start // 1000) % 5 == 4:
            producer.flush(60)
            producer.abort_transaction(60)
        else:
            producer.commit_transaction(60)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "logger": _quiet,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    aborted = sum(
        min(1000, records - start) for start in range(0, records, 1000) if (start // 1000) % 5 == 4
    )
    wanted = records - aborted if isolation == "read_committed" else records
    seen = 0
    began = time.perf_counter()
    deadline = began + 120
    while seen < wanted and time.perf_counter() < deadline:
        for message in consumer.consume(1000, 0.5):
            if message.error() is None:
                seen += 1
    elapsed = time.perf_counter() - began
    consumer.close()
    if seen != wanted:
        raise SystemExit(f"{isolation}: read {seen} records, expected {wanted}")
    return seen / elapsed


def run(name: str, bootstrap: str, args: argparse.Namespace) -> None:
    latencies = commit_latency_ms(bootstrap, args.commits)
    print(
        f"{name:10} commit latency ({PARTITIONS} partitions, 1 record each): "
        f"p50 {statistics.median(latencies):6.1f} ms  "
        f"p99 {statistics.quantiles(latencies, n=100)[98]:6.1f} ms"
    )
    produce_rate(bootstrap, args.records, None)  # warm-up: the first run is the slowest
    reference = produce_rate(bootstrap, args.records, None)
    print(f"{name:10} idempotent producer (reference)      {reference:10,.0f} rec/s")
    for per_commit in (100, 1000, 10_000):
        rate = produce_rate(bootstrap, args.records, per_commit)
        print(
            f"{name:10} transactional, commit every {per_commit:>6}  {rate:10,.0f} rec/s "
            f"({rate / reference:5.0%} of reference)"
        )
    again = produce_rate(bootstrap, args.records, None)
    print(f"{name:10} idempotent producer, measured again  {again:10,.0f} rec/s")
    for isolation in ("read_uncommitted", "read_committed"):
        rate = consume_rate(bootstrap, args.records, isolation)
        print(f"{name:10} consume {isolation:17}         {rate:10,.0f} rec/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--skip-kafka", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        broker = start_broker(Path(directory) / "data", Path(directory) / "broker.log")
        try:
            run("headwater", broker.bootstrap, args)
        finally:
            broker.stop()
    if not args.skip_kafka:
        kafka = KafkaBroker()
        kafka.start()
        try:
            run("kafka", kafka.bootstrap, args)
        finally:
            kafka.stop()


if __name__ == "__main__":
    main()
