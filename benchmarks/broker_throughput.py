"""Broker throughput and latency with librdkafka, Headwater beside Apache Kafka.

kcat (librdkafka in C) drives the throughput figures that measure the brokers; confluent-kafka
(librdkafka under a Python loop) gives the same figures as an application sees them, and the
end-to-end latency.

Not a test: it prints numbers. Each case runs against a fresh `headwater serve` and a fresh
Apache Kafka (KRaft, jars from scripts/fetch-kafka.sh) on this machine, in the same run, beside
a plain loopback socket transfer and a plain file write of the same bytes.

    python benchmarks/broker_throughput.py [--records 300000] [--skip-kafka]

The consumer-group section (three confluent-kafka consumers in one group, each in its own
process: group consume throughput, and the time until every partition is consumed again after a
member joins or is SIGKILLed) runs with the rest, or alone:

    python benchmarks/broker_throughput.py --groups-only [--group-records 300000]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from multiprocessing.connection import Connection, wait
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "broker"))

from broker_process import start_broker  # noqa: E402

from kafka_fixture import KafkaBroker  # noqa: E402

_quiet = logging.getLogger("benchmark-librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _create(
    bootstrap: str, topic: str, config: dict[str, str] | None = None, partitions: int = 1
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})
    new_topic = NewTopic(topic, partitions, 1, config=config or {})
    for future in admin.create_topics([new_topic]).values():
        future.result(30)


def _produce(bootstrap: str, topic: str, value: bytes, count: int, acks: str) -> float:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "enable.idempotence": False,
            "logger": _quiet,
        }
    )
    start = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - start
    assert remaining == 0
    return elapsed


def _consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
            "logger": _quiet,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    start = time.perf_counter()
    while seen < count:
        batch = consumer.consume(min(10_000, count - seen), 5.0)
        if not batch:
            raise RuntimeError(f"consumer stalled at {seen} of {count}")
        seen += sum(1 for message in batch if not message.error())
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def _paced_producer(bootstrap: str, topic: str, rate: int, total: int, go: Any) -> None:
    """Runs in its own process so its pacing never competes with the consumer for the GIL."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "1",
            "linger.ms": 0,
            "enable.idempotence": False,
            "logger": _quiet,
        }
    )
    producer.produce(topic, b"warm-up")  # metadata and connection set up before the clock starts
    producer.flush(30)
    go.wait(60)  # until the consumer has seen the warm-up record
    start = time.perf_counter()
    sent = 0
    while sent < total:
        # Send what the schedule owes, then sleep a little: bursts of at most ~1 ms of records.
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            producer.produce(topic, str(time.time_ns()).encode())
            sent += 1
        producer.poll(0)
        time.sleep(0.0005)
    producer.flush(30)


def _latency(bootstrap: str, topic: str, rate: int, seconds: float) -> list[float]:
    """End-to-end latency at a fixed rate: wall-clock stamp in the value, diffed on receipt."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "latency",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "fetch.min.bytes": 1,
            "logger": _quiet,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    total = int(rate * seconds)
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    producer = context.Process(target=_paced_producer, args=(bootstrap, topic, rate, total, go))
    producer.start()
    warm_deadline = time.monotonic() + 60
    while not go.is_set() and time.monotonic() < warm_deadline:
        for message in consumer.consume(10, 0.1):
            if not message.error() and message.value() == b"warm-up":
                go.set()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds + 30
    while len(latencies) < total and time.monotonic() < deadline:
        # A short timeout: consume() otherwise waits to fill its batch, adding its own latency.
        for message in consumer.consume(1000, 0.001):
            if not message.error() and message.value() != b"warm-up":
                latencies.append((time.time_ns() - int(message.value())) / 1e6)
    producer.join(30)
    consumer.close()
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _loopback(size: int) -> float:
    """A plain loopback TCP transfer of `size` bytes (the network floor)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    chunk = os.urandom(1 << 20)

    def sink() -> None:
        connection, _ = server.accept()
        received = 0
        while received < size:
            data = connection.recv(1 << 20)
            if not data:
                break
            received += len(data)
        connection.close()

    thread = threading.Thread(target=sink)
    thread.start()
    client = socket.create_connection(server.getsockname())
    start = time.perf_counter()
    sent = 0
    while sent < size:
        client.sendall(chunk)
        sent += len(chunk)
    client.close()
    thread.join()
    server.close()
    return time.perf_counter() - start


def _file_write(size: int) -> float:
    chunk = os.urandom(1 << 20)
    with tempfile.NamedTemporaryFile() as file:
        start = time.perf_counter()
        written = 0
        while written < size:
            file.write(chunk)
            written += len(chunk)
        file.flush()
        return time.perf_counter() - start


def _kcat(
    bootstrap: str, topic: str, value_bytes: int, count: int, acks: str
) -> tuple[float, float]:
    """Produce `count` records with kcat (librdkafka, C), then consume them; seconds each."""
    with tempfile.NamedTemporaryFile() as lines:
        line = (b"x" * (value_bytes - 1)) + b"\n"  # kcat sends each line without its newline
        lines.write(line * count)
        lines.flush()
        lines.seek(0)
        start = time.perf_counter()
        subprocess.run(
            [
                "kcat",
                "-P",
                "-b",
                bootstrap,
                "-t",
                topic,
                "-p",
                "0",
                "-X",
                f"acks={acks}",
                "-X",
                "linger.ms=20",
                "-X",
                "batch.size=1000000",
                "-X",
                "batch.num.messages=100000",
                "-X",
                "queue.buffering.max.kbytes=2000000",
                "-X",
                "enable.idempotence=false",
            ],
            stdin=lines,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        produced = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run(
        [
            "kcat",
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-c",
            str(count),
            "-X",
            "fetch.max.bytes=52428800",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return produced, time.perf_counter() - start


def _run(name: str, bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    results: dict[str, float] = {}
    for value_bytes in (100, 1024):
        count = args.kcat_records if value_bytes == 100 else args.kcat_records // 4
        for acks in ("1", "all"):
            topic = f"kcat-{value_bytes}-{acks}"
            _create(bootstrap, topic)
            produced, consumed = _kcat(bootstrap, topic, value_bytes, count, acks)
            results[f"kcat produce {value_bytes} B acks={acks} rec/s"] = count / produced
            results[f"kcat produce {value_bytes} B acks={acks} MB/s"] = (
                count * value_bytes / produced / 1e6
            )
            if acks == "1":
                results[f"kcat consume {value_bytes} B rec/s"] = count / consumed
                results[f"kcat consume {value_bytes} B MB/s"] = count * value_bytes / consumed / 1e6
    for value_bytes in (100, 1024):
        count = args.records if value_bytes == 100 else args.records // 4
        value = os.urandom(value_bytes)
        for acks in ("1", "all"):
            topic = f"bench-{value_bytes}-{acks}"
            _create(bootstrap, topic)
            elapsed = _produce(bootstrap, topic, value, count, acks)
            results[f"produce {value_bytes} B acks={acks} rec/s"] = count / elapsed
            results[f"produce {value_bytes} B acks={acks} MB/s"] = (
                count * value_bytes / elapsed / 1e6
            )
        elapsed = _consume(bootstrap, f"bench-{value_bytes}-1", count)
        results[f"consume {value_bytes} B rec/s"] = count / elapsed
        results[f"consume {value_bytes} B MB/s"] = count * value_bytes / elapsed / 1e6
    # Default topic configs (Headwater fsyncs every append, Kafka leaves it to the OS), then
    # both with flushing left to the OS: the same durability on both sides.
    for label, config in (("", {}), (" (OS flush)", {"flush.messages": str(2**63 - 1)})):
        topic = "latency-os" if config else "latency"
        _create(bootstrap, topic, config)
        latencies = _latency(bootstrap, topic, args.rate, args.seconds)
        if latencies:
            results[f"e2e{label} p50 ms"] = statistics.median(latencies)
            results[f"e2e{label} p99 ms"] = _percentile(latencies, 0.99)
            results[f"e2e{label} p99.9 ms"] = _percentile(latencies, 0.999)
    print(f"  {name}: done", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=20_000, help="records/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--kcat-records", type=int, default=1_000_000)
    parser.add_argument("--skip-kafka", action="store_true")
    args = parser.parse_args()
    size = args.records * 100
    loopback = _loopback(size)
    plain = _file_write(size)
    print(
        f"plain loopback TCP: {size / loopback / 1e6:,.0f} MB/s; plain file write: {size / plain / 1e6:,.0f} MB/s"
    )
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        served = start_broker(Path(directory) / "data", Path(directory) / "broker.log")
        try:
            columns["headwater"] = _run("headwater", served.bootstrap, args)
        finally:
            served.stop()
    if not args.skip_kafka:
        with KafkaBroker() as kafka:
            columns["kafka"] = _run("kafka", kafka.bootstrap, args)
    print(f"\n{'metric':<32}{'headwater':>14}{'kafka':>14}{'ratio':>9}")
    for metric, value in columns["headwater"].items():
        kafka_value = columns.get("kafka", {}).get(metric)
        ratio = ""
        if kafka_value:
            ratio = f"{(kafka_value / value if 'ms' in metric.split()[-1] else value / kafka_value):8.0%}"
        kafka_text = f"{kafka_value:14,.1f}" if kafka_value else f"{'-':>14}"
        print(f"{metric:<32}{value:14,.1f}{kafka_text}{ratio:>9}")


if __name__ == "__main__":
    main()
