"""The Kafka backend's own mapping onto librdkafka: config translation, error mapping, the
passthrough, and the places where it corrects librdkafka to behave as Kafka's Java client.

The conformance suite checks the behaviour every backend shares; these tests check how this
backend gets there, against a `headwater serve` process and a real Apache Kafka broker.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))

from broker_process import start_broker

import headwater
from headwater.client import OFFSET_BEGINNING, Client, NewTopic, TopicPartition
from headwater.client._config import Role, parse_config
from headwater.client._kafka import _translate, map_error
from headwater.errors import (
    ClientError,
    ConfigError,
    InvalidPartitionsError,
    KafkaTimeoutError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from headwater.log.partitioner import partition_for_key

pytestmark = pytest.mark.timeout(120)

QUICK_GROUP = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 300,
    "fetch.max.wait.ms": 50,
    "auto.offset.reset": "earliest",
}


def translated(role: Role, **settings: Any) -> dict[str, Any]:
    return _translate(role, parse_config(role, settings))


# --- configuration, without a broker ------------------------------------------------------------


def test_producer_defaults_are_kafkas_not_librdkafkas() -> None:
    options = translated(Role.PRODUCER)
    assert options["partitioner"] == "murmur2_random"  # keyed records land as Java puts them
    assert options["enable.idempotence"] is True
    assert options["acks"] == "all"
    assert options["delivery.timeout.ms"] == 120_000
    assert options["max.in.flight"] == 5
    assert options["message.max.bytes"] == 1_048_576  # max.request.size
    assert options["queue.buffering.max.kbytes"] == 32 * 1024  # buffer.memory
    assert options["client.id"] == "headwater"
    assert "batch.size" not in options  # librdkafka's own batching stays


def test_producer_keys_are_renamed_and_idempotence_yields_as_in_java() -> None:
    options = translated(
        Role.PRODUCER,
        acks=1,
        linger_ms=20,
        max_request_size=5000,
        buffer_memory=10_000,
        compression_type="zstd",
        request_timeout_ms=7000,
    )
    assert options["acks"] == "1"
    assert options["enable.idempotence"] is False  # not asked for, and acks=1 conflicts
    assert options["linger.ms"] == 20
    assert options["message.max.bytes"] == 5000
    assert options["queue.buffering.max.kbytes"] == 10  # rounded up
    assert options["compression.type"] == "zstd"
    assert options["request.timeout.ms"] == 7000


def test_consumer_defaults_and_renamed_keys() -> None:
    options = translated(Role.CONSUMER, group_id="g")
    assert options["isolation.level"] == "read_uncommitted"  # librdkafka: read_committed
    assert options["auto.offset.reset"] == "latest"
    assert options["partition.assignment.strategy"] == "range"  # librdkafka: range,roundrobin
    assert options["check.crcs"] is True
    assert options["enable.auto.commit"] is True
    assert options["enable.partition.eof"] is False
    assert "socket.timeout.ms" not in options

    options = translated(
        Role.CONSUMER,
        group_id="g",
        auto_offset_reset="none",
        partition_assignment_strategy="roundrobin,range",
        fetch_max_wait_ms=50,
        request_timeout_ms=9000,
        max_poll_records=7,  # no librdkafka key: poll_batch's default, in the wrapper
    )
    assert options["auto.offset.reset"] == "error"
    assert options["partition.assignment.strategy"] == "roundrobin,range"
    assert options["fetch.wait.max.ms"] == 50
    assert options["socket.timeout.ms"] == 9000
    assert not any("poll.records" in key for key in options)


def test_consumer_without_a_group_gets_one_that_never_commits() -> None:
    options = translated(Role.CONSUMER)
    assert options["group.id"].startswith("headwater-no-group-")
    assert options["enable.auto.commit"] is False
    with pytest.raises(ConfigError, match=r"group\.id"):
        translated(Role.CONSUMER, enable_auto_commit=True)


def test_small_fetch_max_bytes_lowers_librdkafkas_request_limit_with_it() -> None:
    options = translated(Role.CONSUMER, group_id="g", fetch_max_bytes=5000)
    assert options["fetch.max.bytes"] == options["message.max.bytes"] == 5000


def test_librdkafka_keys_pass_through_and_win() -> None:
    options = translated(
        Role.PRODUCER,
        **{"librdkafka.partitioner": "consistent", "librdkafka.queue.buffering.max.messages": 9},
    )
    assert options["partitioner"] == "consistent"
    assert options["queue.buffering.max.messages"] == 9
    options = translated(Role.CONSUMER, group_id="g", **{"librdkafka.group.protocol": "consumer"})
    assert "partition.assignment.strategy" not in options  # KIP-848: the broker assigns


# --- error mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "error_code"),
    [
        (KafkaError.UNKNOWN_TOPIC_OR_PART, UnknownTopicOrPartitionError, 3),
        (KafkaError._UNKNOWN_PARTITION, UnknownTopicOrPartitionError, 3),
        (KafkaError.TOPIC_ALREADY_EXISTS, TopicAlreadyExistsError, 36),
        (KafkaError.INVALID_PARTITIONS, InvalidPartitionsError, 37),
        (KafkaError.MSG_SIZE_TOO_LARGE, RecordBatchTooLargeError, 10),
        (KafkaError.OFFSET_OUT_OF_RANGE, OffsetOutOfRangeError, 1),
        (KafkaError._AUTO_OFFSET_RESET, OffsetOutOfRangeError, 1),
        (KafkaError.INVALID_CONFIG, ConfigError, 40),
        (KafkaError._MSG_TIMED_OUT, KafkaTimeoutError, 7),
        (KafkaError.NON_EMPTY_GROUP, ClientError, 68),
        (KafkaError._TRANSPORT, ClientError, -1),
    ],
)
def test_kafka_errors_map_to_typed_errors_with_kafkas_code(
    code: int, kind: type[Exception], error_code: int
) -> None:
    error = map_error(KafkaError(code, "what librdkafka said"), "doing something")
    assert isinstance(error, kind)
    assert isinstance(error, ClientError)  # one type catches every client failure
    assert error.error_code == error_code
    assert str(error).startswith("doing something: what librdkafka said")


def test_librdkafka_internal_codes_are_named_and_retriability_kept() -> None:
    error = map_error(KafkaError(KafkaError._TRANSPORT, "broker went away"))
    assert error.error_code == -1
    assert "_TRANSPORT" in str(error)
    assert error.retriable
    assert not map_error(KafkaError(KafkaError.NON_EMPTY_GROUP, "busy")).retriable


# --- against brokers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def headwater_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("kafka-backend")
    broker = start_broker(directory / "data", directory / "broker.log")
    yield broker.bootstrap
    code = broker.stop()
    assert code == 0, f"headwater serve did not shut down cleanly ({code}): {broker.log_tail()}"


@pytest.fixture(params=["headwater", "kafka"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    if request.param == "headwater":
        bootstrap = request.getfixturevalue("headwater_bootstrap")
    else:
        bootstrap = request.getfixturevalue("kafka_broker").bootstrap
    with headwater.connect(f"kafka://{bootstrap}") as connection:
        yield connection


def new_topic(client: Client, partitions: int = 1, **config: str) -> str:
    name = f"kafka-backend-{uuid.uuid4().hex[:10]}"
    with client.admin() as admin:
        admin.create_topics([NewTopic(name, partitions, dict(config))])
    return name


def test_keyed_records_land_where_kafkas_partitioner_puts_them(client: Client) -> None:
    topic = new_topic(client, partitions=7)
    keys = [f"key-{i}".encode() for i in range(200)]
    with client.producer() as producer:
        placed = producer.send_many(topic, [b"v"] * len(keys), keys=keys).result(30)
        one = producer.send(topic, b"v", key=b"alone").result(30)
    assert [metadata.partition for metadata in placed] == [
        partition_for_key(key, 7) for key in keys
    ]
    assert one.partition == partition_for_key(b"alone", 7)


def test_passthrough_reaches_librdkafka(client: Client) -> None:
    topic = new_topic(client, partitions=5)
    keys = [f"key-{i}".encode() for i in range(50)]
    with client.producer({"librdkafka.partitioner": "consistent"}) as producer:
        placed = producer.send_many(topic, [b"v"] * len(keys), keys=keys).result(30)
    assert [metadata.partition for metadata in placed] == [
        confluent_kafka.consistent(key, 5) for key in keys
    ]
    with pytest.raises(ConfigError, match=r"no\.such\.knob"):
        client.producer({"librdkafka.no.such.knob": 1})


def test_send_refusals_are_typed(client: Client) -> None:
    topic = new_topic(client, partitions=2)
    with client.producer(max_request_size=2000) as producer:
        with pytest.raises(UnknownTopicOrPartitionError):
            producer.send(topic, b"x", partition=2)
        too_large = producer.send(topic, b"x" * 5000).exception(30)
        assert isinstance(too_large, RecordBatchTooLargeError)
        assert isinstance(too_large, ClientError)
        assert too_large.error_code == 10
        assert producer.send(topic, b"fits").result(30).offset == 0


def test_send_many_fails_as_a_whole_on_a_refused_record(client: Client) -> None:
    """One record librdkafka refuses fails the call's future, keyless (one callback for the
    call) or keyed (one per record); the producer goes on."""
    topic = new_topic(client, partitions=2)
    with client.producer(max_request_size=2000) as producer:
        keyless = producer.send_many(topic, [b"ok", b"x" * 5000, b"ok too"])
        keyed = producer.send_many(topic, [b"ok", b"x" * 5000], keys=[b"a", b"b"])
        for future in (keyless, keyed):
            failure = future.exception(30)
            assert isinstance(failure, RecordBatchTooLargeError) and failure.error_code == 10
        placed = producer.send_many(topic, [b"after"] * 3).result(30)
    assert len(placed) == 3 and all(metadata.offset >= 0 for metadata in placed)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_seek_inside_on_assign_and_before_fetching(client: Client, strategy: str) -> None:
    """librdkafka refuses to seek a partition it is not fetching yet ("Erroneous state"):
    right after assign(), and inside on_assign (it assigns only after the callback)."""
    topic = new_topic(client, partitions=2)
    with client.producer() as producer:
        for partition in (0, 1):
            producer.send_many(topic, [b"%d" % i for i in range(10)], partition=partition)
        assert producer.flush(30) == 0
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    with client.consumer(**QUICK_GROUP) as consumer:
        consumer.assign([tp0, tp1])
        consumer.seek(tp0, 7)
        assert consumer.position([tp0]) == {tp0: 7}
        firsts = first_offsets(consumer, 2)
    assert firsts == {0: 7, 1: 0}

    def on_assign(member: Any, partitions: list[TopicPartition]) -> None:
        assert tp0 in member.assignment()  # assigned before the callback, as in Java
        if tp0 in partitions:
            member.seek(tp0, 4)

    group = f"seek-{strategy}-{uuid.uuid4().hex[:8]}"
    with client.consumer(
        group_id=group, partition_assignment_strategy=strategy, **QUICK_GROUP
    ) as consumer:
        consumer.subscribe([topic], on_assign=on_assign)
        firsts = first_offsets(consumer, 2)
    assert firsts == {0: 4, 1: 0}


def first_offsets(consumer: Any, partitions: int) -> dict[int, int]:
    firsts: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while len(firsts) < partitions and time.monotonic() < deadline:
        record = consumer.poll(0.2)
        if record is not None:
            firsts.setdefault(record.partition, record.offset)
    return firsts


def test_async_commit_completes_without_polling_and_unsubscribe_revokes(client: Client) -> None:
    topic = new_topic(client)
    with client.producer() as producer:
        producer.send_many(topic, [b"a", b"b", b"c"]).result(30)
    tp = TopicPartition(topic, 0)
    revoked: list[list[TopicPartition]] = []
    group = f"commit-{uuid.uuid4().hex[:8]}"
    with client.consumer(group_id=group, enable_auto_commit=False, **QUICK_GROUP) as consumer:
        consumer.subscribe([topic], on_revoke=lambda _, partitions: revoked.append(partitions))
        assert first_offsets(consumer, 1) == {0: 0}
        # librdkafka acknowledges asynchronous commits inside poll(); this one must not wait.
        future = consumer.commit({tp: 2}, asynchronous=True)
        assert future is not None
        assert future.result(30) == {tp: 2}
        assert consumer.committed([tp]) == {tp: 2}
        consumer.unsubscribe()
        assert revoked == [[tp]]  # before unsubscribe returned, as Java does
        consumer.assign({tp: OFFSET_BEGINNING})  # not undone by a late revoke
        assert first_offsets(consumer, 1) == {0: 0}
        assert consumer.assignment() == {tp}
