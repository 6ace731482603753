"""Errors, the same types on every backend: bad config, too-large records, unknown topics and
partitions, and use after close."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from backends import Backend, consume, produce, unique

import headwater
from headwater.client import OFFSET_BEGINNING, TopicPartition
from headwater.errors import (
    ClientClosedError,
    ClientError,
    ConfigError,
    HeadwaterError,
    InvalidPartitionsError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

pytestmark = pytest.mark.timeout(120)


def test_unknown_or_misplaced_config_keys_are_refused_by_name(backend: Backend) -> None:
    client = backend.client
    with pytest.raises(ConfigError, match=r"no\.such\.key"):
        client.consumer(no_such_key=1)
    with pytest.raises(ConfigError, match=r"linger\.mss"):
        client.producer({"linger.mss": 5})
    with pytest.raises(ConfigError, match=r"group\.id"):
        client.producer(group_id="wrong-role")
    with pytest.raises(ConfigError, match=r"session\.timeout\.ms"):
        client.consumer(session_timeout_ms="soon")
    with pytest.raises(ConfigError, match=r"bogus\.setting"):
        headwater.connect(backend.url, bogus_setting=True)
    with pytest.raises(ConfigError, match="acks"):
        client.producer(enable_idempotence=True, acks=1)


def test_record_over_max_message_bytes_fails_with_kafka_code_10(backend: Backend) -> None:
    topic = backend.topic(config={"max.message.bytes": "2000"})
    reports: list[tuple[object, object]] = []
    with backend.producer() as producer:
        future = producer.send(topic, b"x" * 5000, on_delivery=lambda *r: reports.append(r))
        error = future.exception(30)
        assert isinstance(error, RecordBatchTooLargeError), f"{type(error).__name__}: {error}"
        assert error_kinds(error) == expected_kinds(RecordBatchTooLargeError, 10)
        small = producer.send(topic, b"fits").result(30)
    assert reports == [(None, error)], "on_delivery reports the failure"
    assert small.offset == 0, "the refused record must not take an offset"


def raised(action: Callable[[], object]) -> tuple[str, ...] | str:
    """The Headwater error types (and Kafka code) `action` raises, or "no error"."""
    try:
        action()
    except HeadwaterError as error:
        return error_kinds(error)
    except Exception as error:  # shown in the table instead of ending the test
        return f"{type(error).__name__}: {error}"
    return "no error"


def error_kinds(error: BaseException) -> tuple[str, ...]:
    names = sorted(c.__name__ for c in type(error).__mro__ if c.__module__ == "headwater.errors")
    return (*names, f"code {getattr(error, 'error_code', None)}")


def expected_kinds(kind: type[HeadwaterError], code: int) -> tuple[str, ...]:
    """`kind` and `ClientError` (every backend's errors are both: see headwater.errors)."""
    names = {c.__name__ for c in (*kind.__mro__, ClientError) if c.__module__ == "headwater.errors"}
    return (*sorted(names), f"code {code}")


def test_the_same_error_types_and_codes_on_every_backend(backend: Backend) -> None:
    admin, topic, group = backend.admin, backend.topic(partitions=2), unique("errors")
    missing = unique("missing")
    tp0 = TopicPartition(topic, 0)
    with backend.producer() as producer:
        produce(producer, topic, [b"e"] * 4, partition=0)
        on_send = raised(lambda: producer.send(topic, b"x", partition=7))
    member = backend.consumer(group_id=group, enable_auto_commit=False)
    member.subscribe([topic])
    consume(member, 4)
    member.commit()
    strict = backend.consumer(auto_offset_reset="none")
    strict.assign({tp0: 50})
    got = {
        "send to an unknown partition": on_send,
        "describe_topic(unknown)": raised(lambda: admin.describe_topic(missing)),
        "describe_configs(unknown)": raised(lambda: admin.describe_configs(missing)),
        "delete_topics(unknown)": raised(lambda: admin.delete_topics([missing])),
        "create_partitions(unknown)": raised(lambda: admin.create_partitions(missing, 3)),
        "watermarks(unknown)": raised(lambda: admin.watermarks(TopicPartition(missing, 0))),
        "create an existing topic": raised(lambda: admin.create_topic(topic)),
        "0 partitions": raised(lambda: admin.create_topic(unique("zero"), 0)),
        "fewer partitions": raised(lambda: admin.create_partitions(topic, 1)),
        "bad topic name": raised(lambda: admin.create_topic("bad name!")),
        "bad topic config": raised(
            lambda: admin.create_topic(unique("c"), 1, {"retention.ms": "x"})
        ),
        "unknown topic config": raised(
            lambda: admin.create_topic(unique("c"), 1, {"no.such": "1"})
        ),
        "delete_records past the end": raised(lambda: admin.delete_records({tp0: 99})),
        "alter offsets of an active group": raised(
            lambda: admin.alter_group_offsets(group, {tp0: 0})
        ),
        "delete an active group": raised(lambda: admin.delete_groups([group])),
        "delete an unknown group": raised(lambda: admin.delete_groups([unique("nope")])),
        "offset out of range, reset none": raised(lambda: consume(strict, 1, timeout=10)),
        "alter_configs(unknown key)": raised(lambda: admin.alter_configs(topic, {"no.such": "1"})),
        "alter_configs(unknown topic)": raised(
            lambda: admin.alter_configs(missing, {"retention.ms": "1000"})
        ),
        "seek an unassigned partition": raised(lambda: strict.seek(TopicPartition(topic, 1), 0)),
    }
    member.close()
    strict.close()
    unknown = expected_kinds(UnknownTopicOrPartitionError, 3)
    expected = {
        "send to an unknown partition": unknown,
        "describe_topic(unknown)": unknown,
        "describe_configs(unknown)": unknown,
        "delete_topics(unknown)": unknown,
        "create_partitions(unknown)": unknown,
        "watermarks(unknown)": unknown,
        "create an existing topic": expected_kinds(TopicAlreadyExistsError, 36),
        "0 partitions": expected_kinds(InvalidPartitionsError, 37),
        "fewer partitions": expected_kinds(InvalidPartitionsError, 37),
        "bad topic name": expected_kinds(InvalidTopicError, 17),
        "bad topic config": expected_kinds(ConfigError, 40),
        "unknown topic config": expected_kinds(ConfigError, 40),
        "delete_records past the end": expected_kinds(OffsetOutOfRangeError, 1),
        "alter offsets of an active group": expected_kinds(ClientError, 25),  # UNKNOWN_MEMBER_ID
        "delete an active group": expected_kinds(ClientError, 68),  # NON_EMPTY_GROUP
        "delete an unknown group": expected_kinds(ClientError, 69),  # GROUP_ID_NOT_FOUND
        "offset out of range, reset none": expected_kinds(OffsetOutOfRangeError, 1),
        "alter_configs(unknown key)": expected_kinds(ConfigError, 40),
        "alter_configs(unknown topic)": unknown,
        # refused by the consumer itself: no Kafka protocol code applies (Java: IllegalState)
        "seek an unassigned partition": expected_kinds(ClientError, -1),
    }
    wrong = [
        f"{case}: {got[case]}, expected {want}"
        for case, want in expected.items()
        if got[case] != want
    ]
    assert not wrong, "\n".join(wrong)


def test_use_after_close_raises_client_closed(backend: Backend) -> None:
    topic = backend.topic()
    client = headwater.connect(backend.url)  # closed below, by the test
    producer = client.producer()
    produce(producer, topic, [b"before"])
    producer.close()
    with pytest.raises(ClientClosedError):
        producer.send(topic, b"after")
    consumer = client.consumer(auto_offset_reset="earliest")
    consumer.assign({TopicPartition(topic, 0): OFFSET_BEGINNING})
    consumer.close()
    assert consumer.closed
    with pytest.raises(ClientClosedError):
        consumer.poll(0.1)
    admin = client.admin()
    admin.close()
    with pytest.raises(ClientClosedError):
        admin.list_topics()
    survivor = client.producer()
    client.close()
    with pytest.raises(ClientClosedError):
        survivor.send(topic, b"after the client closed")
    with pytest.raises(ClientClosedError):
        client.consumer()


def test_close_from_another_thread_ends_a_poll(backend: Backend) -> None:
    topic = backend.topic()
    consumer = backend.consumer(group_id=unique("closing"))
    consumer.subscribe([topic])
    outcome: list[str] = []

    def poll_forever() -> None:
        try:
            while not consumer.closed:
                consumer.poll(5.0)
        except ClientClosedError:
            pass
        except Exception as error:  # reported below
            outcome.append(repr(error))
        outcome.append("ended")

    thread = threading.Thread(target=poll_forever)
    thread.start()
    time.sleep(1.0)
    consumer.close()
    thread.join(5)
    assert not thread.is_alive(), "poll(5.0) did not end within 5 s of close()"
    assert outcome == ["ended"] and consumer.closed
