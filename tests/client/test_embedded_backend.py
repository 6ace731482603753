"""What only the embedded backend has: one shared log manager per data directory, batching in
the producer, the buffer bound, durability of acknowledged records across a SIGKILL, topic
auto-creation, size limits, and consumers woken by appends. The behaviour every backend shares
is in test_conformance_*.py."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import headwater
from headwater.client import OFFSET_BEGINNING, OFFSET_END, NewTopic, TopicPartition
from headwater.client._embedded import EmbeddedClient, _record_body_bytes, _record_bytes
from headwater.errors import (
    ClientClosedError,
    ClientError,
    ConfigError,
    DeserializationError,
    RecordBatchTooLargeError,
)
from headwater.log.compression import Compression
from headwater.log.manager import open_log_manager
from headwater.log.record_batch import (
    BATCH_HEADER_SIZE,
    BatchHeader,
    NewRecord,
    encode_batch,
    iter_batches,
)

pytestmark = pytest.mark.timeout(120)

GROUPS_READY = importlib.util.find_spec("headwater.client._embedded_group") is not None
OS_FLUSH = {"flush.messages": str(2**63 - 1)}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def embedded(data_dir: Path, **settings: object) -> EmbeddedClient:
    return cast(EmbeddedClient, headwater.connect(data_dir.as_uri(), **settings))


def batches(client: EmbeddedClient, topic: str, partition: int = 0) -> list[BatchHeader]:
    """Every batch header in the partition's segments, read from the files."""
    log = client.manager.partition(topic, partition)
    found: list[BatchHeader] = []
    for segment in log.segments:
        found += [header for _, header in iter_batches(segment.read(0, segment.size_bytes))]
    return found


def read_all(client: EmbeddedClient, topic: str, count: int, partition: int = 0) -> list[bytes]:
    with client.consumer() as consumer:
        consumer.assign({TopicPartition(topic, partition): OFFSET_BEGINNING})
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < count and time.monotonic() < deadline:
            values += [record.value for record in consumer.poll_batch(timeout=0.5)]
    return values


# --- the shared data directory ----------------------------------------------------------------


def test_two_connections_share_one_manager_and_the_last_close_unlocks(data_dir: Path) -> None:
    first = embedded(data_dir)
    second = embedded(data_dir)
    assert first.manager is second.manager
    assert first.url == second.url == "file://" + os.path.realpath(data_dir)
    with first.producer() as producer:
        producer.send("shared", b"from-first").result(30)
    assert read_all(second, "shared", 1) == [b"from-first"]
    first.close()
    with second.producer() as producer:  # the manager outlives the first close
        producer.send("shared", b"from-second").result(30)
    second.close()
    # The flock is released: another opener (the CLI, a broker) may take the directory now.
    manager = open_log_manager(str(data_dir))
    assert manager.partition("shared", 0).high_watermark == 2
    manager.close()
    with embedded(data_dir) as third:
        assert read_all(third, "shared", 2) == [b"from-first", b"from-second"]


def test_closing_the_client_closes_what_it_made(data_dir: Path) -> None:
    client = embedded(data_dir)
    producer = client.producer(linger_ms=10_000)
    pending = producer.send("closing", b"queued")
    consumer = client.consumer()
    admin = client.admin()
    client.close()
    assert pending.result(0).offset == 0, "close flushed the queued record"
    assert consumer.closed
    with pytest.raises(ClientClosedError):
        producer.send("closing", b"late")
    with pytest.raises(ClientClosedError):
        admin.list_topics()
    with pytest.raises(ClientClosedError):
        client.producer()
    client.close()  # twice is fine


def test_a_directory_that_is_not_headwaters_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("someone's files")
    with pytest.raises(ConfigError, match="not a Headwater data directory"):
        headwater.connect(tmp_path.as_uri())
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_connection_settings_are_checked_at_connect(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"linger\.ms"):
        embedded(data_dir, linger_ms=-1)
    with embedded(data_dir, linger_ms=0, group_id="g", client_id="app") as client:
        producer = client.producer()  # takes linger.ms and client.id, not group.id
        producer.close()


# --- producing --------------------------------------------------------------------------------


def test_linger_gathers_records_into_few_batches(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        client.admin().create_topic("lingered", 1, OS_FLUSH)
        with client.producer(linger_ms=300, batch_size=1_000_000, acks=1) as producer:
            futures = [producer.send("lingered", b"x" * 100) for _ in range(200)]
            assert producer.flush(30) == 0
        assert [future.result().offset for future in futures] == list(range(200))
        found = batches(client, "lingered")
        assert sum(header.record_count for header in found) == 200
        assert len(found) <= 3, f"{len(found)} batches for 200 records sent within linger.ms"


def test_batch_size_bounds_every_batch(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        with client.producer(linger_ms=1_000, batch_size=1_000) as producer:
            for _ in range(100):
                producer.send("small-batches", b"y" * 100)
            producer.send_many("small-batches", [b"z" * 100] * 100).result(30)
            producer.flush(30)
        found = batches(client, "small-batches")
        assert sum(header.record_count for header in found) == 200
        assert all(header.size_bytes <= 1_000 for header in found)
        assert len(found) >= 20  # about nine 100-byte records fit in 1000 bytes


def test_send_many_writes_one_batch_per_batch_size(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        with client.producer(batch_size=16_384) as producer:
            landed = producer.send_many("many", [b"v" * 100] * 1_000).result(30)
        assert [m.offset for m in landed] == list(range(1_000))
        found = batches(client, "many")
        assert all(header.size_bytes <= 16_384 for header in found)
        assert len(found) <= 8, f"{len(found)} batches for 1000 records of 100 B"


def test_a_full_buffer_blocks_the_sender_until_records_are_appended(data_dir: Path) -> None:
    settings = {"buffer_memory": 2_500, "linger_ms": 500, "batch_size": 100_000}
    with embedded(data_dir) as client, client.producer(**settings) as producer:
        value = b"b" * 1_000
        first = [producer.send("buffered", value) for _ in range(2)]
        assert not any(future.done() for future in first), "lingering, not yet appended"
        started = time.monotonic()
        third = producer.send("buffered", value)  # 3 x ~1 KB > 2500: waits for the linger
        blocked = time.monotonic() - started
        assert blocked > 0.2, f"send returned after {blocked:.3f} s with the buffer full"
        assert all(future.done() for future in first), "space came from appending them"
        assert [f.result(30).offset for f in [*first, third]] == [0, 1, 2]
        with pytest.raises(RecordBatchTooLargeError):  # could never fit in the buffer
            producer.send("buffered", b"c" * 3_000).result(30)


ACKED_WRITER = textwrap.dedent(
    """
    import sys
    import headwater

    with headwater.connect(sys.argv[1]) as client:
        producer = client.producer(acks="all", linger_ms=20)
        futures = [producer.send("durable", b"one-%d" % i) for i in range(300)]
        for future in futures:
            future.result(30)
        producer.send_many("durable", [b"many-%d" % i for i in range(700)]).result(30)
        print("acked", flush=True)
        producer.send("durable", b"never-waited-for")  # may or may not survive
        sys.stdin.read()  # until killed
    """
)


def test_acks_all_records_survive_a_sigkill(data_dir: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", ACKED_WRITER, data_dir.as_uri()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"acked\n", child.stderr.read() if child.stderr else line
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    with embedded(data_dir) as client:
        values = read_all(client, "durable", 1_000)
    expected = [b"one-%d" % i for i in range(300)] + [b"many-%d" % i for i in range(700)]
    assert values[:1_000] == expected


def test_acks_zero_and_one_answer_before_the_fsync_and_stay_readable(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        for acks in (0, 1):
            topic = f"acks-{acks}"
            with client.producer(acks=acks) as producer:
                single = producer.send(topic, b"single").result(30)
                many = producer.send_many(topic, [b"a", b"b"]).result(30)
                producer.flush(30)
            expected_offsets = [-1, -1, -1] if acks == 0 else [0, 1, 2]
            assert [single.offset, *(m.offset for m in many)] == expected_offsets
            assert read_all(client, topic, 3) == [b"single", b"a", b"b"]


def test_topics_are_auto_created_on_produce_with_one_partition(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        with client.producer() as producer:
            assert producer.send("auto-send", b"1").result(30).partition == 0
            assert producer.send_many("auto-many", [b"1", b"2"]).result(30)[1].offset == 1
            assert producer.partitions_for("auto-listed") == [0]
            bad = producer.send("no spaces allowed", b"1")
            assert bad.exception(30) is not None
        admin = client.admin()
        assert {"auto-send", "auto-many", "auto-listed"} <= set(admin.list_topics())
        assert len(admin.describe_topic("auto-send").partitions) == 1


@pytest.mark.skipif(not GROUPS_READY, reason="headwater.client._embedded_group is not there yet")
def test_topics_are_auto_created_on_subscribe(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        with client.consumer(group_id="auto-group") as consumer:
            consumer.subscribe(["auto-subscribed"])
        assert "auto-subscribed" in client.admin().list_topics()


def test_records_larger_than_max_message_bytes_fail_their_future(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        client.admin().create_topic("limited", 1, {"max.message.bytes": "1000"})
        outcomes: list[BaseException | None] = []
        with client.producer(batch_size=1_000_000) as producer:
            too_big = producer.send(
                "limited", b"x" * 2_000, on_delivery=lambda _, error: outcomes.append(error)
            )
            error = too_big.exception(30)
            assert isinstance(error, RecordBatchTooLargeError) and error.error_code == 10
            assert outcomes == [error]
            many = producer.send_many("limited", [b"ok", b"x" * 2_000])
            assert isinstance(many.exception(30), RecordBatchTooLargeError)
            fits = [producer.send("limited", b"y" * 300) for _ in range(10)]
            assert producer.flush(30) == 0
            assert [future.result().offset for future in fits] == list(range(10))
        # batches stay within the topic's limit although batch.size is far larger
        assert all(header.size_bytes <= 1_000 for header in batches(client, "limited"))


def test_compression_is_the_producers_unless_the_topic_sets_one(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        client.admin().create_topic("topic-codec", 1, {"compression.type": "lz4"})
        with client.producer(compression_type="gzip", linger_ms=0) as producer:
            producer.send("producer-codec", b"p" * 500).result(30)
            producer.send_many("producer-codec", [b"q" * 500] * 3).result(30)
            producer.send("topic-codec", b"t" * 500).result(30)
            producer.send_many("topic-codec", [b"u" * 500] * 3).result(30)
        assert {h.compression for h in batches(client, "producer-codec")} == {Compression.GZIP}
        assert {h.compression for h in batches(client, "topic-codec")} == {Compression.LZ4}
        assert read_all(client, "producer-codec", 4) == [b"p" * 500] + [b"q" * 500] * 3


def test_replication_factor_must_be_one(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        admin = client.admin()
        with pytest.raises(ClientError) as refused:
            admin.create_topics([NewTopic("replicated", 1, replication_factor=3), NewTopic("ok")])
        assert refused.value.error_code == 38  # INVALID_REPLICATION_FACTOR
        assert admin.list_topics() == ["ok"], "the other topics are still created"


def test_log_append_time_topics_report_the_logs_clock(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        client.admin().create_topic("stamped", 1, {"message.timestamp.type": "LogAppendTime"})
        before = int(time.time() * 1000)
        with client.producer() as producer:
            sent = producer.send("stamped", b"s", timestamp=1_000).result(30)
        assert sent.timestamp >= before
        with client.consumer() as consumer:
            consumer.assign({TopicPartition("stamped", 0): 0})
            record = consumer.poll(30)
        assert record is not None and record.log_append_time
        assert record.timestamp == sent.timestamp


# --- consuming --------------------------------------------------------------------------------


def test_a_bad_payload_is_raised_after_the_good_records_before_it(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        with client.producer() as producer:
            producer.send_many("payloads", [b'{"n": 0}', b"{oops", b'{"n": 2}']).result(30)
        tp = TopicPartition("payloads", 0)
        with client.consumer(value_deserializer="json") as consumer:
            consumer.assign({tp: 0})
            assert [r.value for r in consumer.poll_batch(10, timeout=30)] == [{"n": 0}]
            with pytest.raises(DeserializationError) as raised:
                consumer.poll_batch(10, timeout=30)
            assert (raised.value.partition, raised.value.offset) == (0, 1)
            assert consumer.position([tp]) == {tp: 2}
            assert [r.value for r in consumer.poll_batch(10, timeout=30)] == [{"n": 2}]
            assert consumer.position([tp]) == {tp: 3}


def test_poll_wakes_promptly_when_another_thread_appends(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        client.admin().create_topic("wake", 1)
        sent_at: list[float] = []

        def produce_later() -> None:
            time.sleep(0.3)
            with client.producer(linger_ms=0) as producer:
                sent_at.append(time.monotonic())
                producer.send("wake", b"now").result(30)

        with client.consumer() as consumer:
            consumer.assign({TopicPartition("wake", 0): OFFSET_END})
            writer = threading.Thread(target=produce_later)
            writer.start()
            started = time.monotonic()
            record = consumer.poll(20)
            received_at = time.monotonic()
            writer.join()
        assert record is not None and record.value == b"now"
        latency = received_at - sent_at[0]
        assert received_at - started < 10, "poll waited for its timeout, not for the append"
        assert latency < 2.0, f"delivered {latency * 1000:.0f} ms after the send"


def test_close_from_another_thread_ends_a_waiting_poll(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        consumer = client.consumer()
        consumer.assign({TopicPartition("idle", 0): OFFSET_END})
        threading.Timer(0.3, consumer.close).start()
        started = time.monotonic()
        assert consumer.poll(20) is None
        assert time.monotonic() - started < 10
        with pytest.raises(ClientClosedError):
            consumer.poll(0)


def test_an_out_of_range_position_resets_per_auto_offset_reset(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        with client.producer() as producer:
            producer.send_many("trimmed", [b"%d" % i for i in range(10)]).result(30)
        tp = TopicPartition("trimmed", 0)
        client.admin().delete_records({tp: 6})
        with client.consumer(auto_offset_reset="earliest") as earliest:
            earliest.assign({tp: 2})
            assert [r.offset for r in earliest.poll_batch(timeout=30)] == [6, 7, 8, 9]
        with client.consumer(auto_offset_reset="latest") as latest:
            latest.assign({tp: 2})
            assert latest.poll(0.2) is None and latest.position() == {tp: 10}
        with client.consumer(auto_offset_reset="none") as strict:
            strict.assign({tp: 2})
            with pytest.raises(ClientError) as raised:
                strict.poll(0.2)
            assert raised.value.error_code == 1
            strict.seek(tp, 7)
            record = strict.poll(30)
            assert record is not None and record.offset == 7
        with client.consumer(auto_offset_reset="none") as unpositioned:
            unpositioned.assign([tp])  # no group, no committed offset, nowhere to start
            with pytest.raises(ClientError) as raised:
                unpositioned.poll(0.2)
            assert raised.value.error_code == 1


def test_partitions_are_read_in_turn(data_dir: Path) -> None:
    with embedded(data_dir) as client:
        client.admin().create_topics([NewTopic("fair", 3)])
        with client.producer() as producer:
            for partition in range(3):
                producer.send_many("fair", [b"r"] * 50, partition=partition).result(30)
        with client.consumer(max_poll_records=10) as consumer:
            consumer.assign({TopicPartition("fair", p): 0 for p in range(3)})
            first_three = [consumer.poll_batch(timeout=30) for _ in range(3)]
        assert [{r.partition for r in batch} for batch in first_three] == [{0}, {1}, {2}]


# Lengths around every varint width boundary (64 and 8192 bytes, zigzag-encoded), and small ones
# so record bodies land on both sides of 64 too.
_FIELD = st.one_of(
    st.none(),
    st.integers(0, 80).map(bytes),
    st.sampled_from([8191, 8192, 8193]).map(bytes),
)
_HEADERS = st.lists(
    st.tuples(st.text(max_size=70), st.one_of(st.none(), st.integers(0, 70).map(bytes))),
    max_size=3,
)
_DELTA = st.one_of(st.integers(-200, 200), st.integers(-(2**40), 2**40))


@given(
    base=st.integers(0, 2**41),
    records=st.lists(st.tuples(_FIELD, _FIELD, _DELTA, _HEADERS), min_size=1, max_size=80),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_producer_size_accounting_is_what_encode_batch_writes(
    base: int,
    records: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]],
) -> None:
    """The accumulator sizes each record in arithmetic (batch.size and buffer.memory depend on
    it); it must equal the bytes `encode_batch` then writes, deltas and varint widths included."""
    stamps = [base] + [base + delta for _, _, delta, _ in records[1:]]
    accounted = BATCH_HEADER_SIZE + sum(
        _record_bytes(_record_body_bytes(key, value, headers), index, stamp - base)
        for index, ((key, value, _, headers), stamp) in enumerate(zip(records, stamps, strict=True))
    )
    batch = encode_batch(
        [
            NewRecord(key, value, stamp, tuple(headers))
            for (key, value, _, headers), stamp in zip(records, stamps, strict=True)
        ]
    )
    assert accounted == len(batch)
