"""Differential tests: the same client scenario against Headwater and a real Apache Kafka 4.1.

Each scenario is a function of a bootstrap address that returns what a client can observe
(offsets, watermarks, error names, metadata); the test runs it on both brokers and asserts
Headwater's answer equals Kafka's; the one deliberate difference (the default flush policy) is
asserted as documented in the README.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

pytestmark = pytest.mark.timeout(120)

BASE_TS = (int(time.time()) - 3600) * 1000  # recent: old timestamps invite retention


@pytest.fixture(scope="module")
def brokers(kafka_broker: Any, shared_headwater: Any) -> dict[str, str]:
    return {"kafka": kafka_broker.bootstrap, "headwater": shared_headwater.bootstrap}


def differential(brokers: dict[str, str], scenario: Callable[[str], Any]) -> None:
    """Run `scenario` on both brokers; Headwater must observe exactly what Kafka does."""
    kafka = scenario(brokers["kafka"])
    ours = scenario(brokers["headwater"])
    if os.environ.get("HEADWATER_DIFF_VERBOSE"):  # show what was compared (run with -s)
        print(f"\n  kafka:     {kafka!r}\n  headwater: {ours!r}")
    assert ours == kafka, f"Headwater: {ours!r}\nKafka:     {kafka!r}"


# --- client helpers ------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def conf(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 0, **extra}


_ADMINS: dict[str, AdminClient] = {}


def admin(bootstrap: str) -> AdminClient:
    """One AdminClient per broker, kept alive: a collected client fails its futures (_DESTROY)."""
    if bootstrap not in _ADMINS:
        _ADMINS[bootstrap] = AdminClient(conf(bootstrap))
    return _ADMINS[bootstrap]


def producer(bootstrap: str, **extra: Any) -> Producer:
    return Producer(
        conf(bootstrap, **{"enable.idempotence": False, "partitioner": "murmur2_random", **extra})
    )


def consumer(bootstrap: str, **extra: Any) -> Consumer:
    return Consumer(
        conf(
            bootstrap,
            **{
                "group.id": unique("unused"),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 50,
                **extra,
            },
        )
    )


def error_name(error: BaseException | KafkaError | None) -> str | None:
    """A KafkaException / KafkaError as its name ("TOPIC_ALREADY_EXISTS"), None for success."""
    if error is None:
        return None
    if isinstance(error, KafkaException):
        error = error.args[0]
    if isinstance(error, KafkaError):
        # Client-side failures say nothing about the broker; never compare them.
        assert error.code() not in (KafkaError._DESTROY, KafkaError._TIMED_OUT), error
        return str(error.name())
    return type(error).__name__


def outcome(future: Any, timeout: float = 15) -> tuple[str | None, Any]:
    try:
        return None, future.result(timeout=timeout)
    except KafkaException as error:
        return error_name(error), None


def wait_for_leaders(client: AdminClient, topic: str, partitions: int) -> None:
    """Kafka elects leaders just after CreateTopics answers; wait so produce/list work at once."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metadata = client.list_topics(topic, timeout=5).topics.get(topic)
        if (
            metadata is not None
            and metadata.error is None
            and len(metadata.partitions) == partitions
            and all(part.leader >= 0 for part in metadata.partitions.values())
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"{topic} has no leaders for its {partitions} partitions")


def create_topic(
    bootstrap: str, topic: str, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    client = admin(bootstrap)
    futures = client.create_topics(
        [NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=10
    )
    futures[topic].result(timeout=15)
    wait_for_leaders(client, topic, partitions)


def produce_all(
    bootstrap: str, topic: str, records: list[dict[str, Any]], **extra: Any
) -> list[tuple[str | None, int, int]]:
    """Produce and flush; per record, in send order: (error name, partition, offset)."""
    reports: dict[int, tuple[str | None, int, int]] = {}
    client = producer(bootstrap, **{"linger.ms": 5, **extra})
    for n, record in enumerate(records):

        def delivered(error: Any, message: Any, n: int = n) -> None:
            reports[n] = (error_name(error), message.partition(), message.offset())

        client.produce(topic, on_delivery=delivered, **record)
        client.poll(0)
    assert client.flush(20) == 0
    return [reports[n] for n in range(len(records))]


def watermarks(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int]]:
    client = consumer(bootstrap)
    try:
        return [
            tuple(client.get_watermark_offsets(TopicPartition(topic, index), timeout=10))
            for index in range(partitions)
        ]
    finally:
        client.close()


# --- produce offsets, watermarks, ListOffsets ----------------------------------------------------


def test_produce_offsets_and_watermarks(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("offsets")
        create_topic(bootstrap, topic, 3)
        keyed = [
            {"key": f"key-{n % 11}".encode(), "value": f"v{n}".encode(), "timestamp": BASE_TS + n}
            for n in range(60)
        ]
        first = produce_all(bootstrap, topic, keyed, acks="all")
        second = produce_all(bootstrap, topic, keyed[:20], acks="1", **{"compression.type": "gzip"})
        return first, second, watermarks(bootstrap, topic, 3)

    differential(brokers, scenario)


def test_offsets_for_times_and_list_offsets(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("times")
        create_topic(bootstrap, topic, 1)
        singles = [{"value": f"v{n}".encode(), "timestamp": BASE_TS + 10 * n} for n in range(8)]
        for record in singles:  # one batch each
            produce_all(bootstrap, topic, [record], **{"linger.ms": 0})
        batch = [{"value": f"v{n}".encode(), "timestamp": BASE_TS + 10 * n} for n in range(8, 16)]
        produce_all(bootstrap, topic, batch, **{"linger.ms": 100})
        client = consumer(bootstrap)
        try:
            probes = [BASE_TS - 5, BASE_TS, BASE_TS + 1, BASE_TS + 75, BASE_TS + 150]
            probes += [BASE_TS + 151, BASE_TS + 500]
            by_time = [
                (error_name(answer.error), answer.offset)
                for stamp in probes
                for answer in client.offsets_for_times([TopicPartition(topic, 0, stamp)], 10)
            ]
        finally:
            client.close()
        partition = TopicPartition(topic, 0)
        listed = []
        for spec in (
            OffsetSpec.earliest(),
            OffsetSpec.latest(),
            OffsetSpec.max_timestamp(),
            OffsetSpec.for_timestamp(BASE_TS + 95),
        ):
            result = admin(bootstrap).list_offsets({partition: spec})[partition].result(10)
            listed.append((result.offset, result.timestamp))
        return by_time, listed, watermarks(bootstrap, topic, 1)

    differential(brokers, scenario)


def test_empty_topic_offsets(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("empty")
        create_topic(bootstrap, topic, 1)
        client = consumer(bootstrap)
        try:
            [answer] = client.offsets_for_times([TopicPartition(topic, 0, BASE_TS)], 10)
        finally:
            client.close()
        partition = TopicPartition(topic, 0)
        spec = OffsetSpec.max_timestamp()
        result = admin(bootstrap).list_offsets({partition: spec})[partition].result(10)
        return answer.offset, (result.offset, result.timestamp), watermarks(bootstrap, topic, 1)

    differential(brokers, scenario)


def test_max_timestamp_inside_a_batch(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("maxts")
        create_topic(bootstrap, topic, 1)
        ordered = [{"value": f"v{n}".encode(), "timestamp": BASE_TS + n} for n in range(16)]
        produce_all(bootstrap, topic, ordered, **{"linger.ms": 50})
        # One batch whose largest timestamp is on its first record, not its last.
        odd = [
            {"value": b"late", "timestamp": BASE_TS + 500},
            {"value": b"x", "timestamp": BASE_TS},
        ]
        produce_all(bootstrap, topic, odd, **{"linger.ms": 100})
        partition = TopicPartition(topic, 0)
        futures = admin(bootstrap).list_offsets({partition: OffsetSpec.max_timestamp()})
        result = futures[partition].result(10)
        client = consumer(bootstrap)
        try:
            [after] = client.offsets_for_times([TopicPartition(topic, 0, BASE_TS + 400)], 10)
        finally:
            client.close()
        return (result.offset, result.timestamp - BASE_TS), after.offset

    differential(brokers, scenario)


# --- metadata and topic admin errors -------------------------------------------------------------


def topic_shape(bootstrap: str, topic: str) -> tuple[str | None, int, list[Any]]:
    metadata = admin(bootstrap).list_topics(topic, timeout=10).topics[topic]
    return (
        error_name(metadata.error),
        len(metadata.partitions),
        [
            (part.id, part.leader >= 0, len(part.replicas), len(part.isrs))
            for part in sorted(metadata.partitions.values(), key=lambda part: part.id)
        ],
    )


def test_topic_metadata(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("meta")
        create_topic(bootstrap, topic, 4)
        return topic_shape(bootstrap, topic)

    differential(brokers, scenario)


def test_auto_create_on_produce(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("auto")
        reports = produce_all(bootstrap, topic, [{"value": b"first"}, {"value": b"second"}])
        return reports, topic_shape(bootstrap, topic)

    differential(brokers, scenario)


def test_unknown_topic_metadata_without_auto_create(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("absent")
        client = consumer(bootstrap, **{"allow.auto.create.topics": False})
        try:
            seen = client.list_topics(topic, timeout=10).topics[topic]
            error = error_name(seen.error)
        finally:
            client.close()
        listed = topic in admin(bootstrap).list_topics(timeout=10).topics
        return error, listed

    differential(brokers, scenario)


def create_error(bootstrap: str, topic: NewTopic, validate_only: bool = False) -> str | None:
    futures = admin(bootstrap).create_topics(
        [topic], operation_timeout=10, validate_only=validate_only
    )
    error, _ = outcome(futures[topic.topic])
    return error


def test_create_existing_topic(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("twice")
        create_topic(bootstrap, topic, 2)
        again = create_error(bootstrap, NewTopic(topic, 2, 1))
        validated = create_error(bootstrap, NewTopic(topic, 2, 1), validate_only=True)
        return again, validated, topic_shape(bootstrap, topic)[1]

    differential(brokers, scenario)


@pytest.mark.parametrize(
    "name",
    ["bad name!", "..", ".", "a" * 250, "with/slash", "ok.name_with-chars"],
    ids=["space", "dotdot", "dot", "too-long", "slash", "valid"],
)
def test_topic_names(brokers: dict[str, str], name: str) -> None:
    def scenario(bootstrap: str) -> Any:
        actual = name if name != "ok.name_with-chars" else unique(name)
        return create_error(bootstrap, NewTopic(actual, 1, 1), validate_only=True)

    differential(brokers, scenario)


def test_replication_factor_too_large(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("rf")
        error = create_error(bootstrap, NewTopic(topic, 1, 3))
        exists = topic in admin(bootstrap).list_topics(timeout=10).topics
        return error, exists

    differential(brokers, scenario)


def test_invalid_partition_count(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("zero")
        error = create_error(bootstrap, NewTopic(topic, 0, 1))
        return error, topic in admin(bootstrap).list_topics(timeout=10).topics

    differential(brokers, scenario)


def test_invalid_partition_count_validate_only(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        return create_error(bootstrap, NewTopic(unique("zero"), 0, 1), validate_only=True)

    differential(brokers, scenario)


@pytest.mark.parametrize(
    "config",
    [
        {"retention.ms": "abc"},
        {"cleanup.policy": "bogus"},
        {"segment.bytes": "10"},
        {"max.message.bytes": "-5"},
        {"retention.ms": "-1", "cleanup.policy": "compact,delete"},
    ],
    ids=["not-a-number", "bad-enum", "below-minimum", "negative", "valid"],
)
def test_topic_config_values(brokers: dict[str, str], config: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("cfg")
        error = create_error(bootstrap, NewTopic(topic, 1, 1, config=config))
        exists = topic in admin(bootstrap).list_topics(timeout=10).topics
        return error, exists

    differential(brokers, scenario)


def test_unknown_config_key(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("cfgkey")
        return create_error(bootstrap, NewTopic(topic, 1, 1, config={"no.such.config": "1"}))

    differential(brokers, scenario)


def test_create_partitions(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("grow")
        create_topic(bootstrap, topic, 3)
        client = admin(bootstrap)
        results = []
        for count in (2, 3, 5):
            futures = client.create_partitions([NewPartitions(topic, count)], operation_timeout=10)
            results.append(outcome(futures[topic])[0])
        absent = unique("absent")
        futures = client.create_partitions([NewPartitions(absent, 2)], operation_timeout=10)
        results.append(outcome(futures[absent])[0])
        wait_for_leaders(client, topic, 5)
        return results, topic_shape(bootstrap, topic)

    differential(brokers, scenario)


def test_delete_topics(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("gone")
        create_topic(bootstrap, topic, 1)
        client = admin(bootstrap)
        first = outcome(client.delete_topics([topic], operation_timeout=10)[topic])[0]
        absent = unique("never")
        missing = outcome(client.delete_topics([absent], operation_timeout=10)[absent])[0]
        return first, missing

    differential(brokers, scenario)


# --- configs -------------------------------------------------------------------------------------


def describe(bootstrap: str, topic: str) -> tuple[str | None, dict[str, Any]]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    error, entries = outcome(admin(bootstrap).describe_configs([resource])[resource])
    return error, entries or {}


def test_describe_configs_defaults(brokers: dict[str, str]) -> None:
    """Every config Headwater describes exists in Kafka, with Kafka's default value."""
    topic = unique("defaults")
    create_topic(brokers["headwater"], topic)
    create_topic(brokers["kafka"], topic)
    _, ours = describe(brokers["headwater"], topic)
    _, kafka = describe(brokers["kafka"], topic)
    assert ours
    unknown = sorted(set(ours) - set(kafka))
    assert unknown == []
    mismatched = {
        name: (entry.value, kafka[name].value)
        for name, entry in ours.items()
        if entry.value != kafka[name].value and name != "flush.messages"
    }
    assert mismatched == {}
    assert all(entry.is_default for entry in ours.values())


def test_describe_configs_flush_messages_default(brokers: dict[str, str]) -> None:
    """A documented, deliberate difference (README, "Durability"): one node has no replicas to
    fall back on, so Headwater fsyncs every append by default where Kafka leaves it to the OS."""
    results = {}
    for name, bootstrap in brokers.items():
        topic = unique("flush")
        create_topic(bootstrap, topic)
        _, entries = describe(bootstrap, topic)
        results[name] = (entries["flush.messages"].value, entries["flush.messages"].is_default)
    assert results == {"kafka": ("9223372036854775807", True), "headwater": ("1", True)}


def test_alter_and_describe_configs(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("alter")
        create_topic(bootstrap, topic, 1, {"retention.ms": "3600000"})
        client = admin(bootstrap)
        results = []
        for entries in (
            [ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)],
            [ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE)],
            [ConfigEntry("retention.ms", "x", incremental_operation=AlterConfigOpType.SET)],
            [ConfigEntry("cleanup.policy", "nope", incremental_operation=AlterConfigOpType.SET)],
        ):
            change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
            results.append(outcome(client.incremental_alter_configs([change])[change])[0])
        absent = ConfigResource(
            ConfigResource.Type.TOPIC,
            unique("absent"),
            incremental_configs=[
                ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        results.append(outcome(client.incremental_alter_configs([absent])[absent])[0])
        error, entries = describe(bootstrap, topic)
        seen = {
            name: (entries[name].value, entries[name].is_default, entries[name].source)
            for name in ("retention.ms", "segment.ms", "cleanup.policy")
        }
        missing_error, _ = describe(bootstrap, unique("absent"))
        return results, error, seen, missing_error

    differential(brokers, scenario)


# --- fetch and delete-records errors -------------------------------------------------------------


def first_consumer_event(
    bootstrap: str, topic: str, offset: int, **extra: Any
) -> tuple[str | None, int | None]:
    """The first message or error a consumer assigned at `offset` sees: (error, offset)."""
    client = consumer(bootstrap, **extra)
    try:
        client.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = client.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return error_name(message.error()), None
            return None, message.offset()
        return "timeout", None
    finally:
        client.close()


def test_fetch_out_of_range(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("range")
        create_topic(bootstrap, topic, 1)
        produce_all(bootstrap, topic, [{"value": f"v{n}".encode()} for n in range(5)])
        beyond = first_consumer_event(bootstrap, topic, 50, **{"auto.offset.reset": "error"})
        reset_early = first_consumer_event(
            bootstrap, topic, 50, **{"auto.offset.reset": "earliest"}
        )
        inside = first_consumer_event(bootstrap, topic, 3)
        return beyond, reset_early, inside

    differential(brokers, scenario)


def test_delete_records(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("trim")
        create_topic(bootstrap, topic, 1)
        produce_all(bootstrap, topic, [{"value": f"v{n}".encode()} for n in range(10)])
        client = admin(bootstrap)
        results = []
        for offset in (4, 2, 11, 10):
            futures = client.delete_records([TopicPartition(topic, 0, offset)])
            error, deleted = outcome(next(iter(futures.values())))
            results.append((error, deleted.low_watermark if deleted else None))
            if offset == 4:
                results.append(watermarks(bootstrap, topic, 1))
                below = first_consumer_event(bootstrap, topic, 1, **{"auto.offset.reset": "error"})
                results.append(below)
                results.append(first_consumer_event(bootstrap, topic, OFFSET_BEGINNING))
        results.append(watermarks(bootstrap, topic, 1))
        return results

    differential(brokers, scenario)


def test_message_too_large(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("big")
        create_topic(bootstrap, topic, 1, {"max.message.bytes": "2000"})
        small = {"value": b"s" * 100}
        big = {"value": bytes(range(256)) * 40}  # 10 KiB
        reports = produce_all(bootstrap, topic, [small], acks="all")
        reports += produce_all(bootstrap, topic, [big], acks="all", retries=0)
        return [(error, offset if error is None else None) for error, _, offset in reports]

    differential(brokers, scenario)


def test_log_append_time(brokers: dict[str, str]) -> None:
    def scenario(bootstrap: str) -> Any:
        topic = unique("appendtime")
        create_topic(bootstrap, topic, 1, {"message.timestamp.type": "LogAppendTime"})
        before = int(time.time() * 1000)
        produce_all(bootstrap, topic, [{"value": b"v", "timestamp": BASE_TS}])
        after = int(time.time() * 1000)
        client = consumer(bootstrap)
        try:
            client.assign([TopicPartition(topic, 0, 0)])
            message = None
            deadline = time.monotonic() + 10
            while message is None and time.monotonic() < deadline:
                message = client.poll(0.2)
        finally:
            client.close()
        assert message is not None and message.error() is None
        kind, stamp = message.timestamp()
        return kind, before - 1000 <= stamp <= after + 1000

    differential(brokers, scenario)


def test_create_topics_with_a_name_twice(brokers: dict[str, str]) -> None:
    """A CreateTopics naming a topic twice: one answer per name (the response is a map),
    INVALID_REQUEST for the doubled one, which is not created; the other is."""
    import socket

    from test_robustness import decode_response, encode_request, framed

    from headwater.protocol import messages as m

    def scenario(bootstrap: str) -> Any:
        doubled, single = unique("doubled"), unique("single")
        topics = [
            m.CreateTopicsRequestCreatableTopic(name=name, num_partitions=1, replication_factor=1)
            for name in (doubled, single, doubled)
        ]
        request = m.CreateTopicsRequest(topics=topics, timeout_ms=15_000)
        host, port = bootstrap.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(framed(encode_request(19, 5, 1, request)))
            size = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
            payload = sock.recv(size, socket.MSG_WAITALL)
        _, response = decode_response(payload, 19, 5)
        answers = [
            (topic.name == doubled, topic.error_code)
            for topic in response.topics  # type: ignore[attr-defined]
        ]
        time.sleep(0.5)  # Kafka's metadata catches up with its controller
        listed = admin(bootstrap).list_topics(timeout=10).topics
        return sorted(answers), doubled in listed, single in listed

    differential(brokers, scenario)
