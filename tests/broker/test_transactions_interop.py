"""Transactions with other real clients, differential: each scenario runs against Headwater and
a real Kafka 4.1.1 and asserts the same observable outcome on both (a test that passes on Kafka
and fails on Headwater is a Headwater bug).

All three clients play the same scenario on a 2-partition sink topic, record i of a batch going
to partition i % 2, after a plain producer wrote SOURCE_COUNT records to a 1-partition source:

1. a committed transaction of COMMITTED records;
2. an aborted transaction of ABORTED records (delivered before the abort);
3. consume-transform-produce: TAKE source records read with a read-committed consumer, written
   transformed to the sink, their offsets sent to the transaction for GROUP, committed;
4. the same again claiming the rest of the source, with one record, aborted.

Read-committed consumers of each client then see records 1 and 3 only, at the offsets Kafka
gives them (every marker takes one), read-uncommitted ones see all four, and the group's
committed source offset is TAKE (the abort in 4 does not move it).

* the Java client (kafka-clients 4.1): `KafkaProducer` with `transactional.id`,
  `sendOffsetsToTransaction(offsets, new ConsumerGroupMetadata(group))`, `KafkaConsumer`s with
  `isolation.level` read_committed and read_uncommitted, `committed()` of the group; the Java
  source is inline below, compiled once per module with `javac` against the cached Kafka jars;
* aiokafka: `AIOKafkaProducer(transactional_id=...)`, `async with producer.transaction()`
  (an exception inside aborts), `send_offsets_to_transaction`; `AIOKafkaConsumer`s with
  `isolation_level`;
* kafka-python (>= 2.1 has transactions): `KafkaProducer(transactional_id=...)`,
  `init_transactions`, `begin/commit/abort_transaction`, `send_offsets_to_transaction`;
  `KafkaConsumer`s with `isolation_level`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Producer
from test_differential import create_topic, unique
from test_java_client import JVM_FLAGS

from kafka_fixture import FETCH_HINT, default_libs_dir

pytestmark = pytest.mark.timeout(180)

SINK_PARTITIONS = 2
SOURCE_COUNT = 10
COMMITTED = 10
ABORTED = 6
TAKE = 7
READ_WAIT_S = 30.0

Record = tuple[int, int, str]  # partition, offset, value


# --- the scenario's expected outcome, the same for every client and broker ---------------------


def source_values() -> list[str]:
    return [f"src-{i}" for i in range(SOURCE_COUNT)]


def transformed(value: str) -> str:
    return f"ctp-{value}"


def expected_sink() -> tuple[list[Record], list[Record], list[int]]:
    """(read-committed records, read-uncommitted records, high watermarks) of the sink."""
    committed: list[Record] = []
    everything: list[Record] = []
    next_offset = [0] * SINK_PARTITIONS

    def transaction(values: list[str], *, kept: bool) -> None:
        touched: set[int] = set()
        for i, value in enumerate(values):
            partition = i % SINK_PARTITIONS
            record = (partition, next_offset[partition], value)
            next_offset[partition] += 1
            touched.add(partition)
            everything.append(record)
            if kept:
                committed.append(record)
        for partition in touched:  # the commit or abort marker
            next_offset[partition] += 1

    transaction([f"committed-{i}" for i in range(COMMITTED)], kept=True)
    transaction([f"aborted-{i}" for i in range(ABORTED)], kept=False)
    transaction([transformed(v) for v in source_values()[:TAKE]], kept=True)
    transaction(["never"], kept=False)
    return sorted(committed), sorted(everything), next_offset


def test_the_expected_sink_is_what_kafka_documents() -> None:
    """The helper's arithmetic, spelled out: every marker takes an offset."""
    committed, everything, ends = expected_sink()
    assert ends == [17, 14]  # p0: 5+m, 3+m, 4+m, 1+m; p1: 5+m, 3+m, 3+m
    assert [(p, o) for p, o, _ in committed] == [
        *((0, o) for o in [0, 1, 2, 3, 4, 10, 11, 12, 13]),
        *((1, o) for o in [0, 1, 2, 3, 4, 10, 11, 12]),
    ]
    assert len(everything) == COMMITTED + ABORTED + TAKE + 1


def prepare(bootstrap: str, label: str) -> tuple[str, str, str, str]:
    """A fresh sink, a source holding SOURCE_COUNT records, a group and a transactional id."""
    sink, source = unique(f"{label}-sink"), unique(f"{label}-source")
    group, transactional_id = unique(f"{label}-group"), unique(f"{label}-tx")
    create_topic(bootstrap, sink, SINK_PARTITIONS)
    create_topic(bootstrap, source, 1)
    plain = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for value in source_values():
        plain.produce(source, value.encode(), partition=0)
    assert plain.flush(20) == 0
    return sink, source, group, transactional_id


# --- 1. the Java client -----------------------------------------------------------------------

JAVA_CLASS = "TxnScenario"
JAVA_SOURCE = r"""
// Usage: java -cp 'CLASSES:LIBS/*' TxnScenario BOOTSTRAP SINK SOURCE GROUP TXID COMMITTED ABORTED TAKE
// Prints, space-separated:
//   P partition offset value      a record of the committed transaction, acknowledged
//   A partition offset value      a record of the aborted transaction, acknowledged
//   S offset value                a source record the consume-transform-produce step read
//   C partition offset value      a record a read_committed consumer read from SINK
//   U partition offset value      a record a read_uncommitted consumer read from SINK
//   EC partition offset           endOffsets under read_committed (the last stable offset)
//   EU partition offset           endOffsets under read_uncommitted (the high watermark)
//   K partition offset            GROUP's committed offset of SOURCE (-1 = none)
//   DONE
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class TxnScenario {
    private static final int PARTITIONS = 2;
    private static final long DEADLINE_MS = 40_000;

    public static void main(String[] args) {
        int code = 0;
        try {
            run(args);
        } catch (Throwable error) {
            error.printStackTrace();
            code = 1;
        }
        System.out.flush();
        System.exit(code);
    }

    private static Properties consumerProps(String bootstrap, String isolation, String group) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "50");
        props.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        if (group != null) {
            props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        }
        return props;
    }

    private static void run(String[] args) throws Exception {
        String bootstrap = args[0], sink = args[1], source = args[2], group = args[3], txid = args[4];
        int committed = Integer.parseInt(args[5]);
        int aborted = Integer.parseInt(args[6]);
        int take = Integer.parseInt(args[7]);
        TopicPartition sourcePartition = new TopicPartition(source, 0);

        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txid);
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            producer.initTransactions();

            // 1. a committed transaction
            producer.beginTransaction();
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < committed; i++) {
                acks.add(producer.send(new ProducerRecord<>(sink, i % PARTITIONS, "k" + i, "committed-" + i)));
            }
            producer.commitTransaction();
            for (int i = 0; i < committed; i++) {
                RecordMetadata meta = acks.get(i).get();
                System.out.println("P " + meta.partition() + " " + meta.offset() + " committed-" + i);
            }

            // 2. an aborted transaction, its records delivered first
            producer.beginTransaction();
            acks.clear();
            for (int i = 0; i < aborted; i++) {
                acks.add(producer.send(new ProducerRecord<>(sink, i % PARTITIONS, "k" + i, "aborted-" + i)));
            }
            producer.flush();
            for (int i = 0; i < aborted; i++) {
                RecordMetadata meta = acks.get(i).get();
                System.out.println("A " + meta.partition() + " " + meta.offset() + " aborted-" + i);
            }
            producer.abortTransaction();

            // 3. consume-transform-produce, committed with the source offsets
            List<ConsumerRecord<String, String>> taken = new ArrayList<>();
            long sourceEnd;
            try (KafkaConsumer<String, String> consumer =
                    new KafkaConsumer<>(consumerProps(bootstrap, "read_committed", null))) {
                consumer.assign(Collections.singletonList(sourcePartition));
                consumer.seekToBeginning(Collections.singletonList(sourcePartition));
                sourceEnd = consumer.endOffsets(Collections.singletonList(sourcePartition)).get(sourcePartition);
                long deadline = System.currentTimeMillis() + DEADLINE_MS;
                while (taken.size() < take) {
                    if (System.currentTimeMillis() > deadline) {
                        throw new IllegalStateException("read " + taken.size() + " of " + take + " source records");
                    }
                    for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(200))) {
                        if (taken.size() < take) {
                            taken.add(record);
                        }
                    }
                }
            }
            producer.beginTransaction();
            for (int i = 0; i < taken.size(); i++) {
                ConsumerRecord<String, String> record = taken.get(i);
                System.out.println("S " + record.offset() + " " + record.value());
                producer.send(new ProducerRecord<>(sink, i % PARTITIONS, record.key(), "ctp-" + record.value()));
            }
            long next = taken.get(taken.size() - 1).offset() + 1;
            producer.sendOffsetsToTransaction(
                    Map.of(sourcePartition, new OffsetAndMetadata(next)), new ConsumerGroupMetadata(group));
            producer.commitTransaction();

            // 4. the rest of the source claimed, then aborted: the group's offset stays put
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(sink, 0, "k", "never"));
            producer.sendOffsetsToTransaction(
                    Map.of(sourcePartition, new OffsetAndMetadata(sourceEnd)), new ConsumerGroupMetadata(group));
            producer.flush();
            producer.abortTransaction();
        }

        readBack(bootstrap, sink, "read_committed", "C", "EC");
        readBack(bootstrap, sink, "read_uncommitted", "U", "EU");

        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(consumerProps(bootstrap, "read_committed", group))) {
            Map<TopicPartition, OffsetAndMetadata> found =
                    consumer.committed(Collections.singleton(sourcePartition), Duration.ofSeconds(30));
            OffsetAndMetadata offset = found.get(sourcePartition);
            System.out.println("K 0 " + (offset == null ? -1 : offset.offset()));
        }
        System.out.println("DONE");
    }

    private static void readBack(String bootstrap, String topic, String isolation, String tag, String endTag) {
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(consumerProps(bootstrap, isolation, null))) {
            List<TopicPartition> partitions = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                partitions.add(new TopicPartition(topic, p));
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> ends = new HashMap<>(consumer.endOffsets(partitions));
            for (TopicPartition tp : partitions) {
                System.out.println(endTag + " " + tp.partition() + " " + ends.get(tp));
            }
            long deadline = System.currentTimeMillis() + DEADLINE_MS;
            while (true) {
                boolean done = true;
                for (TopicPartition tp : partitions) {
                    done &= consumer.position(tp) >= ends.get(tp);
                }
                if (done) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException(isolation + ": positions never reached " + ends);
                }
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(200))) {
                    System.out.println(tag + " " + record.partition() + " " + record.offset() + " " + record.value());
                }
            }
        }
    }
}
"""


@dataclass
class JavaRun:
    """What one run of `TxnScenario` printed, parsed."""

    acked: list[Record] = field(default_factory=list)
    acked_aborted: list[Record] = field(default_factory=list)
    source: list[tuple[int, str]] = field(default_factory=list)
    committed: list[Record] = field(default_factory=list)
    uncommitted: list[Record] = field(default_factory=list)
    stable_ends: dict[int, int] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    group_offsets: dict[int, int] = field(default_factory=dict)
    done: bool = False


def parse_java(stdout: str) -> JavaRun:
    run = JavaRun()
    lists = {"P": run.acked, "A": run.acked_aborted, "C": run.committed, "U": run.uncommitted}
    maps = {"EC": run.stable_ends, "EU": run.ends, "K": run.group_offsets}
    for line in stdout.splitlines():
        kind, *fields = line.split()
        if kind in lists:
            lists[kind].append((int(fields[0]), int(fields[1]), fields[2]))
        elif kind in maps:
            maps[kind][int(fields[0])] = int(fields[1])
        elif kind == "S":
            run.source.append((int(fields[0]), fields[1]))
        elif kind == "DONE":
            run.done = True
        else:
            raise AssertionError(f"unexpected output line from TxnScenario: {line!r}")
    return run


@pytest.fixture(scope="module")
def java_scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`TxnScenario` compiled against the cached kafka-clients jar: (classes, libs)."""
    libs = default_libs_dir()
    if not any(libs.glob("kafka-clients-*.jar")):
        pytest.fail(f"no kafka-clients jar in {libs}: {FETCH_HINT}", pytrace=False)
    for tool in ("javac", "java"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` (JDK 17+) is not on PATH; the Java scenario needs it")
    directory = tmp_path_factory.mktemp("java-txn")
    source = directory / f"{JAVA_CLASS}.java"
    source.write_text(JAVA_SOURCE)
    classes = directory / "classes"
    result = subprocess.run(
        ["javac", "-cp", f"{libs}/*", "-d", str(classes), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"javac failed:\n{result.stdout}\n{result.stderr}"
    return classes, libs


def test_java_client_transactions(bootstrap: str, java_scenario: tuple[Path, Path]) -> None:
    sink, source, group, transactional_id = prepare(bootstrap, "java-txn")
    classes, libs = java_scenario
    command = ["java", *JVM_FLAGS, "-cp", f"{classes}:{libs}/*", JAVA_CLASS]
    command += [bootstrap, sink, source, group, transactional_id]
    command += [str(COMMITTED), str(ABORTED), str(TAKE)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"TxnScenario timed out\nstdout:\n{error.stdout!r}\nstderr:\n{error.stderr!r}"
        ) from None
    assert result.returncode == 0, (
        f"TxnScenario exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
    )
    run = parse_java(result.stdout)
    assert run.done, result.stdout[-3000:]

    committed, everything, ends = expected_sink()
    aborted = [r for r in everything if r[2].startswith("aborted-")]
    assert sorted(run.acked) == [r for r in committed if r[2].startswith("committed-")]
    assert sorted(run.acked_aborted) == aborted
    assert run.source == list(enumerate(source_values()[:TAKE]))
    # Only the committed and the consume-transform-produce records, where Kafka puts them.
    assert sorted(run.committed) == committed
    assert sorted(run.uncommitted) == everything
    assert run.ends == dict(enumerate(ends))
    assert run.stable_ends == dict(enumerate(ends))  # no transaction left open
    assert run.group_offsets == {0: TAKE}


# --- 2. aiokafka --------------------------------------------------------------------------------


class Abort(Exception):
    """Raised inside `producer.transaction()` to abort it."""


async def aiokafka_read(
    bootstrap: str, topic: str, partitions: int, isolation: str, *, expect: int, quiet_s: float = 1
) -> list[Record]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    seen: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + READ_WAIT_S
        while len(seen) < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            seen += [
                (r.partition, r.offset, r.value.decode()) for rs in batches.values() for r in rs
            ]
        quiet = time.monotonic() + quiet_s
        while time.monotonic() < quiet:  # anything more would be a wrong extra
            batches = await consumer.getmany(timeout_ms=200)
            seen += [
                (r.partition, r.offset, r.value.decode()) for rs in batches.values() for r in rs
            ]
    finally:
        await consumer.stop()
    return sorted(seen)


async def aiokafka_scenario(
    bootstrap: str, sink: str, source: str, group: str, transactional_id: str
) -> tuple[list[Record], list[Record], int | None]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    source_partition = TopicPartition(source, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    await producer.start()
    try:
        # 1. committed
        async with producer.transaction():
            for i in range(COMMITTED):
                await producer.send_and_wait(
                    sink, f"committed-{i}".encode(), partition=i % SINK_PARTITIONS
                )
        # 2. aborted: an exception inside the transaction's block aborts it
        with pytest.raises(Abort):
            async with producer.transaction():
                for i in range(ABORTED):
                    await producer.send_and_wait(
                        sink, f"aborted-{i}".encode(), partition=i % SINK_PARTITIONS
                    )
                raise Abort
        # 3. consume-transform-produce
        taken = await aiokafka_read(bootstrap, source, 1, "read_committed", expect=SOURCE_COUNT)
        assert [(o, v) for _, o, v in taken] == list(enumerate(source_values()))
        async with producer.transaction():
            for i, (_, _, value) in enumerate(taken[:TAKE]):
                await producer.send_and_wait(
                    sink, transformed(value).encode(), partition=i % SINK_PARTITIONS
                )
            await producer.send_offsets_to_transaction({source_partition: TAKE}, group)
        # 4. the rest claimed, then aborted
        with pytest.raises(Abort):
            async with producer.transaction():
                await producer.send_and_wait(sink, b"never", partition=0)
                await producer.send_offsets_to_transaction({source_partition: SOURCE_COUNT}, group)
                raise Abort
    finally:
        await producer.stop()

    committed = await aiokafka_read(
        bootstrap, sink, SINK_PARTITIONS, "read_committed", expect=COMMITTED + TAKE
    )
    everything = await aiokafka_read(
        bootstrap, sink, SINK_PARTITIONS, "read_uncommitted", expect=COMMITTED + ABORTED + TAKE + 1
    )
    checker = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await checker.start()
    try:
        offset = await checker.committed(source_partition)
    finally:
        await checker.stop()
    return committed, everything, offset


def test_aiokafka_transactions(bootstrap: str) -> None:
    sink, source, group, transactional_id = prepare(bootstrap, "aiokafka-txn")
    committed, everything, offset = asyncio.run(
        aiokafka_scenario(bootstrap, sink, source, group, transactional_id)
    )
    expected_committed, expected_everything, _ = expected_sink()
    assert committed == expected_committed
    assert everything == expected_everything
    assert offset == TAKE


# --- 3. kafka-python ----------------------------------------------------------------------------


def kafka_python_read(
    bootstrap: str, topic: str, partitions: int, isolation: str, *, expect: int, quiet_s: float = 1
) -> list[Record]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    seen: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()

        def poll() -> None:
            batches = consumer.poll(timeout_ms=200)
            seen.extend(
                (r.partition, r.offset, r.value.decode()) for rs in batches.values() for r in rs
            )

        deadline = time.monotonic() + READ_WAIT_S
        while len(seen) < expect and time.monotonic() < deadline:
            poll()
        quiet = time.monotonic() + quiet_s
        while time.monotonic() < quiet:
            poll()
    finally:
        consumer.close()
    return sorted(seen)


def test_kafka_python_transactions(bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

    assert "transactional_id" in KafkaProducer.DEFAULT_CONFIG
    sink, source, group, transactional_id = prepare(bootstrap, "kafka-python-txn")
    source_partition = TopicPartition(source, 0)
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    try:
        producer.init_transactions()
        # 1. committed
        producer.begin_transaction()
        for i in range(COMMITTED):
            producer.send(sink, f"committed-{i}".encode(), partition=i % SINK_PARTITIONS)
        producer.commit_transaction()
        # 2. aborted, its records delivered first
        producer.begin_transaction()
        futures = [
            producer.send(sink, f"aborted-{i}".encode(), partition=i % SINK_PARTITIONS)
            for i in range(ABORTED)
        ]
        producer.flush(timeout=20)
        assert all(future.succeeded() for future in futures)
        producer.abort_transaction()
        # 3. consume-transform-produce
        taken = kafka_python_read(bootstrap, source, 1, "read_committed", expect=SOURCE_COUNT)
        assert [(o, v) for _, o, v in taken] == list(enumerate(source_values()))
        producer.begin_transaction()
        for i, (_, _, value) in enumerate(taken[:TAKE]):
            producer.send(sink, transformed(value).encode(), partition=i % SINK_PARTITIONS)
        producer.send_offsets_to_transaction(
            {source_partition: OffsetAndMetadata(TAKE, "", -1)}, group
        )
        producer.commit_transaction()
        # 4. the rest claimed, then aborted
        producer.begin_transaction()
        producer.send(sink, b"never", partition=0)
        producer.send_offsets_to_transaction(
            {source_partition: OffsetAndMetadata(SOURCE_COUNT, "", -1)}, group
        )
        producer.flush(timeout=20)
        producer.abort_transaction()
    finally:
        producer.close(timeout=10)

    expected_committed, expected_everything, _ = expected_sink()
    committed = kafka_python_read(
        bootstrap, sink, SINK_PARTITIONS, "read_committed", expect=COMMITTED + TAKE
    )
    assert committed == expected_committed
    everything = kafka_python_read(
        bootstrap, sink, SINK_PARTITIONS, "read_uncommitted", expect=len(expected_everything)
    )
    assert everything == expected_everything
    checker = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert checker.committed(source_partition) == TAKE
    finally:
        checker.close()
