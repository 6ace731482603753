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
from multiprocessing.connection import Connection, wait
from pathlib import Path
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


# --- consumer groups ------------------------------------------------------------------------------
#
# Every member is a separate process (spawn context): one librdkafka instance each, as real workers
# are. Members talk to the parent through their own one-way pipe and read flags from lock-free
# shared values, so a member killed with SIGKILL cannot leave a lock held that the others need.

GROUP_PARTITIONS = 6
GROUP_MEMBERS = 3
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 500
GROUP_SETTINGS = (
    f"session.timeout.ms={SESSION_TIMEOUT_MS} heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"
)
SETTLE_SECONDS = 1.0  # the group is left stable this long (offsets auto-committed) before an event
RECOVERY_TIMEOUT = 60.0
LAG_SAMPLE_NS = 100_000_000  # a member reports one record's end-to-end lag every 100 ms


def _group_config(bootstrap: str, group: str, strategy: str) -> dict[str, Any]:
    """The one consumer config of the group section, the same on both brokers."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "partition.assignment.strategy": strategy,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "log_level": 0,
        "logger": _quiet,
    }


def _group_reader(
    bootstrap: str,
    topic: str,
    group: str,
    index: int,
    ends: list[int],
    consumed: Any,
    subscribe: Any,
    go: Any,
    conn: Connection,
) -> None:
    """One member of the throughput group: reads until the group as a whole has every record.

    It subscribes when `subscribe` is set and holds what it is assigned paused until `go` is
    set, so the clock runs over a formed group, not over the join rebalances of its startup.
    `consumed[index * partitions + p]` is the highest offset of partition p this member has read;
    the group is done when, for every partition, some member has read the last offset. Each
    member writes only its own slots, so the shared array needs no lock.
    """
    partitions = len(ends)
    consumer = Consumer(_group_config(bootstrap, group, "range"))

    def on_assign(member: Consumer, assigned: list[TopicPartition]) -> None:
        member.assign(assigned)
        if not go.value:
            member.pause(assigned)
        conn.send(("assign", index, [tp.partition for tp in assigned], time.time_ns()))

    def on_revoke(_member: Consumer, revoked: list[TopicPartition]) -> None:
        conn.send(("revoke", index, [tp.partition for tp in revoked], time.time_ns()))

    conn.send(("ready", index, [], time.time_ns()))
    while not subscribe.value:
        time.sleep(0.001)
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    last_ns = delivered = 0
    mine = [-1] * partitions
    paused = True
    deadline = time.monotonic() + 300

    def done() -> bool:
        return all(
            max(consumed[member * partitions + p] for member in range(GROUP_MEMBERS)) >= ends[p] - 1
            for p in range(partitions)
        )

    while not done() and time.monotonic() < deadline:
        if paused and go.value:
            consumer.resume(consumer.assignment())
            paused = False
        # A short timeout: consume() waits to fill its batch, which would stretch the last one.
        batch = consumer.consume(10_000, 0.01)
        if not batch:
            continue
        now = time.time_ns()
        for message in batch:
            if message.error():
                continue
            delivered += 1
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            mine[partition] = max(mine[partition], offset)
        for partition in range(partitions):
            consumed[index * partitions + partition] = mine[partition]
        last_ns = now
    conn.send(("done", index, last_ns, delivered))
    consumer.close()


def _group_consume(bootstrap: str, records: int) -> dict[str, float]:
    """Three members of one group read a pre-filled 6-partition topic of 100 B records.

    All three call subscribe() at once; once each holds its (paused) share of the partitions,
    the go-event resumes them and starts the clock, which stops at the last record delivered.
    So the rate is a formed group's; the time from subscribe() to the formed group (the join
    rebalances) is reported on its own. Records delivered twice (none are expected: the clock
    only starts once the group is stable) are counted once in the rate and reported.
    """
    topic = "group-consume"
    _create(bootstrap, topic, partitions=GROUP_PARTITIONS)
    _produce(bootstrap, topic, os.urandom(100), records, "1")
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "logger": _quiet})
    ends = [
        probe.get_watermark_offsets(TopicPartition(topic, p), 30)[1]
        for p in range(GROUP_PARTITIONS)
    ]
    probe.close()
    assert sum(ends) == records, ends
    context = multiprocessing.get_context("spawn")
    consumed = context.RawArray("q", [-1] * (GROUP_MEMBERS * GROUP_PARTITIONS))
    subscribe = context.RawValue("b", 0)
    go = context.RawValue("b", 0)
    readers: list[Connection] = []
    processes = []
    for index in range(GROUP_MEMBERS):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_group_reader,
            args=(bootstrap, topic, "group-consume", index, ends, consumed, subscribe, go, writer),
        )
        process.start()
        writer.close()
        readers.append(reader)
        processes.append(process)
    everyone = set(range(GROUP_MEMBERS))
    view = _GroupView()
    try:
        if not _pump(readers, view, lambda v: v.ready == everyone, 60):
            raise RuntimeError("the group members did not start")
        subscribe_ns = time.time_ns()
        subscribe.value = 1
        if not _pump(readers, view, lambda v: v.owned_by(everyone), RECOVERY_TIMEOUT):
            raise RuntimeError("the group did not form")
        go_ns = time.time_ns()
        go.value = 1
        stats: dict[int, tuple[Any, ...]] = {}
        deadline = time.monotonic() + 330
        while len(stats) < GROUP_MEMBERS and time.monotonic() < deadline:
            for ready in wait(list(readers), 1.0):
                assert isinstance(ready, Connection)
                try:
                    message = ready.recv()
                except (EOFError, OSError):
                    readers.remove(ready)
                    continue
                if message[0] == "done":
                    stats[message[1]] = message
        if len(stats) < GROUP_MEMBERS:
            raise RuntimeError("a group member did not finish")
    finally:
        _reap(processes)
    last_ns = max(stat[2] for stat in stats.values())
    delivered = sum(stat[3] for stat in stats.values())
    seconds = (last_ns - go_ns) / 1e9
    return {
        "group consume 100 B rec/s": records / seconds,
        "group consume 100 B MB/s": records * 100 / seconds / 1e6,
        "group formation ms": (go_ns - subscribe_ns) / 1e6,
        "group consume duplicates": float(delivered - records),
    }


def _stamped_producer(bootstrap: str, topic: str, rate: int, stop: Any) -> None:
    """Writes `rate` records/s round-robin over the partitions, each its produce time in ns.

    linger.ms=5, not 0: with one record per request (2,000 requests/s over 6 partitions), Kafka
    on a busy 2-core machine fell ~1 s behind (delivery p99 ~1.1 s), which would have been
    counted as rebalance time; 5 ms of linger adds at most 5 ms to a record on both brokers.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "1",
            "linger.ms": 5,
            "enable.idempotence": False,
            "log_level": 0,
            "logger": _quiet,
        }
    )
    start = time.perf_counter()
    sent = 0
    while not stop.value:
        due = int((time.perf_counter() - start) * rate) + 1
        while sent < due:
            producer.produce(topic, str(time.time_ns()).encode(), partition=sent % GROUP_PARTITIONS)
            sent += 1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(10)


def _group_member(
    bootstrap: str,
    topic: str,
    group: str,
    strategy: str,
    index: int,
    go: Any,
    stop: Any,
    event_ns: Any,
    marks_event: bool,
    conn: Connection,
) -> None:
    """A member of the rebalance groups; tells the parent what it is given and what it reads.

    Sent: ("assign"|"revoke"|"lost", index, partitions, ns) from the rebalance callbacks (the
    incremental sets under cooperative-sticky); ("first", index, partition, ns, offset) for the
    first record of a partition after each assignment of it; ("after", index, partition, ns,
    produced) for the first record of a partition produced after `event_ns` (per assignment of
    it), received at ns; ("lag", index, partition, ns, produced) for a record now and then.
    """
    consumer = Consumer(_group_config(bootstrap, group, strategy))
    first: set[int] = set()
    after: set[int] = set()

    def on_assign(_consumer: Consumer, assigned: list[TopicPartition]) -> None:
        partitions = [tp.partition for tp in assigned]
        first.difference_update(partitions)
        after.difference_update(partitions)
        conn.send(("assign", index, partitions, time.time_ns()))

    def on_revoke(_consumer: Consumer, revoked: list[TopicPartition]) -> None:
        conn.send(("revoke", index, [tp.partition for tp in revoked], time.time_ns()))

    def on_lost(_consumer: Consumer, lost: list[TopicPartition]) -> None:
        conn.send(("lost", index, [tp.partition for tp in lost], time.time_ns()))

    conn.send(("ready", index, [], time.time_ns()))
    while not go.value and not stop.value:
        time.sleep(0.001)
    sampled_ns = 0
    if marks_event:
        event_ns.value = time.time_ns()  # the join: the instant this member calls subscribe()
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    while not stop.value:
        # A short timeout: consume() waits to fill its batch, which would delay the receipt time.
        batch = consumer.consume(1000, 0.005)
        now = time.time_ns()
        event = event_ns.value
        for message in batch:
            if message.error():
                continue
            partition = message.partition()
            assert partition is not None
            if now - sampled_ns > LAG_SAMPLE_NS:
                sampled_ns = now
                conn.send(("lag", index, partition, now, int(message.value() or 0)))
            if partition not in first:
                first.add(partition)
                conn.send(("first", index, partition, now, message.offset()))
            if event and partition not in after:
                produced = int(message.value() or 0)
                if produced > event:
                    after.add(partition)
                    conn.send(("after", index, partition, now, produced))
    consumer.close()


class _GroupView:
    """The group as the parent sees it from the members' reports, in arrival order.

    A partition counts as flowing again after the event once its current owner (the member that
    was last assigned it and has not given it up) has delivered a record produced after the event.
    Under range (eager) every partition is revoked and reassigned, so each must come back from its
    new generation; under cooperative-sticky a partition that never moved keeps flowing.
    """

    def __init__(self) -> None:
        self.ready: set[int] = set()
        self.owner: dict[int, int] = {}
        self.flowing: set[int] = set()
        self.after: dict[int, int] = {}
        self.lags: list[float] = []  # ms, receipt minus produce time

    def apply(self, message: tuple[Any, ...]) -> None:
        kind, index, what, at = message[:4]
        if kind == "lag":
            self.lags.append((at - message[4]) / 1e6)
        elif kind == "ready":
            self.ready.add(index)
        elif kind == "assign":
            for partition in what:
                self.owner[partition] = index
                self.flowing.discard(partition)
                self.after.pop(partition, None)
        elif kind in ("revoke", "lost"):
            for partition in what:
                if self.owner.get(partition) == index:
                    del self.owner[partition]
                    self.flowing.discard(partition)
                    self.after.pop(partition, None)
        elif kind == "first" and self.owner.get(what) == index:
            self.flowing.add(what)
        elif kind == "after" and self.owner.get(what) == index:
            self.after.setdefault(what, at)

    def owned_by(self, members: set[int]) -> bool:
        return len(self.owner) == GROUP_PARTITIONS and set(self.owner.values()) == members

    def stable(self, members: set[int]) -> bool:
        return self.owned_by(members) and len(self.flowing) == GROUP_PARTITIONS

    def recovered(self, members: set[int]) -> bool:
        return self.owned_by(members) and len(self.after) == GROUP_PARTITIONS


def _pump(readers: list[Connection], view: _GroupView, until: Any, seconds: float) -> bool:
    """Applies member reports until `until(view)` holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while True:
        if until(view):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not readers:
            return False
        for reader in wait(list(readers), min(remaining, 0.05)):
            assert isinstance(reader, Connection)
            try:
                view.apply(reader.recv())
            except (EOFError, OSError):  # the member exited (or was killed)
                readers.remove(reader)


def _reap(processes: list[Any]) -> None:
    for process in processes:
        process.join(20)
        if process.is_alive():
            process.kill()
            process.join(5)


def _rebalance(
    bootstrap: str, strategy: str, scenario: str, rate: int
) -> tuple[float | None, list[float]]:
    """Milliseconds from the event until every partition delivers records again (None if the
    group never got there), and the end-to-end lags (ms) sampled while the group was stable
    before the event: the rebalance time includes one such lag, the last record's.

    "join": two members are consuming, a third calls subscribe() (the event);
    "kill": three members are consuming, one is SIGKILLed (the event: just before the kill).
    A paced producer writes `rate` records/s over the 6 partitions throughout, each stamped with
    its produce time; the end is the receipt of the last partition's first record produced after
    the event by the member that owns it once the group is whole again (see `_GroupView`).
    """
    topic = f"rebalance-{scenario}-{strategy}"
    group = topic
    _create(bootstrap, topic, partitions=GROUP_PARTITIONS)
    context = multiprocessing.get_context("spawn")
    stop = context.RawValue("b", 0)
    event_ns = context.RawValue("q", 0)
    producer = context.Process(target=_stamped_producer, args=(bootstrap, topic, rate, stop))
    producer.start()
    readers: list[Connection] = []
    members = []
    gos = []
    for index in range(GROUP_MEMBERS):
        joiner = scenario == "join" and index == GROUP_MEMBERS - 1
        go = context.RawValue("b", 0 if joiner else 1)
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_group_member,
            args=(bootstrap, topic, group, strategy, index, go, stop, event_ns, joiner, writer),
        )
        process.start()
        writer.close()
        readers.append(reader)
        members.append(process)
        gos.append(go)
    everyone = set(range(GROUP_MEMBERS))
    before = everyone - {GROUP_MEMBERS - 1} if scenario == "join" else everyone
    after = everyone if scenario == "join" else everyone - {GROUP_MEMBERS - 1}
    view = _GroupView()
    try:
        if not _pump(
            readers, view, lambda v: v.stable(before) and v.ready == everyone, RECOVERY_TIMEOUT
        ):
            return None, []
        view.lags.clear()
        _pump(readers, view, lambda v: False, SETTLE_SECONDS)
        lags = list(view.lags)
        if not view.stable(before):
            return None, lags
        if scenario == "join":
            gos[-1].value = 1  # the joiner stamps event_ns itself as it calls subscribe()
        else:
            event_ns.value = time.time_ns()
            assert members[-1].pid is not None
            os.kill(members[-1].pid, signal.SIGKILL)
        if not _pump(readers, view, lambda v: v.recovered(after), RECOVERY_TIMEOUT):
            return None, lags
        return (max(view.after.values()) - event_ns.value) / 1e6, lags
    finally:
        stop.value = 1
        _reap([producer, *members])


def _run_groups(name: str, bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    results = _group_consume(bootstrap, args.group_records)
    lags: list[float] = []
    for strategy in args.strategies.split(","):
        for scenario in ("join", "kill"):
            milliseconds, stable_lags = _rebalance(bootstrap, strategy, scenario, args.group_rate)
            lags += stable_lags
            metric = f"rebalance {scenario} {strategy} ms"
            if milliseconds is None:
                print(f"  {name}: {metric}: the group did not settle", flush=True)
            else:
                results[metric] = milliseconds
    if lags:  # the floor under the rebalance times: a stable group's end-to-end lag
        results["rebalance stable e2e p50 ms"] = statistics.median(lags)
        results["rebalance stable e2e p99 ms"] = _percentile(lags, 0.99)
    return results


def _run(name: str, bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    results: dict[str, float] = {}
    if not args.groups_only:
        results.update(_run_clients(bootstrap, args))
    if not args.skip_groups:
        results.update(_run_groups(name, bootstrap, args))
    print(f"  {name}: done", flush=True)
    return results


def _run_clients(bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
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
    return results


def _ratio(metric: str, value: float, kafka_value: float | None) -> str:
    """Headwater as a share of Kafka: above 100% is better, for rates and for times alike."""
    unit = metric.split()[-1]
    if not kafka_value or not value or unit not in ("rec/s", "MB/s", "ms"):
        return ""
    return f"{(kafka_value / value if unit == 'ms' else value / kafka_value):8.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=20_000, help="records/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--kcat-records", type=int, default=1_000_000)
    parser.add_argument("--skip-kafka", action="store_true")
    groups = parser.add_mutually_exclusive_group()
    groups.add_argument(
        "--groups-only", action="store_true", help="only the consumer-group section"
    )
    groups.add_argument("--skip-groups", action="store_true", help="no consumer-group section")
    parser.add_argument(
        "--group-records", type=int, default=300_000, help="records for the group consume run"
    )
    parser.add_argument(
        "--group-rate", type=int, default=2_000, help="records/s while the groups rebalance"
    )
    parser.add_argument(
        "--strategies",
        default="range,cooperative-sticky",
        help="partition.assignment.strategy values for the rebalance runs, comma-separated",
    )
    args = parser.parse_args()
    if not args.groups_only:
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
    width = max(32, *(len(metric) + 2 for metric in columns["headwater"]))
    print(f"\n{'metric':<{width}}{'headwater':>14}{'kafka':>14}{'ratio':>9}")
    for metric, value in columns["headwater"].items():
        kafka_value = columns.get("kafka", {}).get(metric)
        kafka_text = f"{kafka_value:14,.1f}" if kafka_value is not None else f"{'-':>14}"
        note = (
            f"  {GROUP_SETTINGS}" if metric.startswith(("rebalance join", "rebalance kill")) else ""
        )
        print(
            f"{metric:<{width}}{value:14,.1f}{kafka_text}{_ratio(metric, value, kafka_value):>9}{note}"
        )


if __name__ == "__main__":
    main()
