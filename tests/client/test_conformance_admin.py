"""The Admin API, the same on every backend: topics, configs, records, groups."""

from __future__ import annotations

import pytest
from backends import Backend, consume, produce, read_topic, unique, wait_until

from headwater.client import NewTopic, TopicPartition
from headwater.errors import (
    HeadwaterError,
    InvalidPartitionsError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

pytestmark = pytest.mark.timeout(120)

WEEK_MS = "604800000"  # Kafka's default retention.ms


def test_create_list_describe_and_delete_topics(backend: Backend) -> None:
    admin = backend.admin
    topic = backend.topic(partitions=3)
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topic(topic, 3)
    other = unique("batch")
    with pytest.raises(TopicAlreadyExistsError):  # the others are still created
        admin.create_topics([NewTopic(other, 2), NewTopic(topic, 1)])
    listed = admin.list_topics()
    assert {topic, other} <= set(listed)
    assert listed == sorted(listed)
    assert not [name for name in listed if name.startswith("__")], "internal topics listed"
    with backend.producer() as producer:
        produce(producer, topic, [b"d"] * 4, partition=1)
    described = admin.describe_topic(topic)
    assert described.name == topic and not described.internal
    assert [(p.partition, p.log_start_offset, p.high_watermark) for p in described.partitions] == [
        (0, 0, 0),
        (1, 0, 4),
        (2, 0, 0),
    ]
    assert len(admin.describe_topic(other).partitions) == 2
    admin.delete_topics([topic, other])
    wait_until(lambda: not {topic, other} & set(admin.list_topics()), "the topics disappear")
    with pytest.raises(UnknownTopicOrPartitionError):
        admin.describe_topic(topic)


def test_internal_topics_only_when_asked(backend: Backend) -> None:
    topic, group = backend.topic(), unique("internal")
    with backend.producer() as producer:
        produce(producer, topic, [b"x"])
    with backend.consumer(group_id=group) as consumer:
        consumer.subscribe([topic])
        consume(consumer, 1)
        consumer.commit()
    everything = backend.admin.list_topics(internal=True)
    assert "__consumer_offsets" in everything
    assert "__consumer_offsets" not in backend.admin.list_topics()
    assert set(backend.admin.list_topics()) <= set(everything)
    assert backend.admin.describe_topic("__consumer_offsets").internal


def test_create_partitions(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    backend.admin.create_partitions(topic, 5)
    assert [p.partition for p in backend.admin.describe_topic(topic).partitions] == list(range(5))
    with pytest.raises(InvalidPartitionsError):
        backend.admin.create_partitions(topic, 3)
    with backend.producer() as producer:
        assert producer.partitions_for(topic) == list(range(5))
        landed = producer.send(topic, b"new", partition=4).result(30)
    assert (landed.partition, landed.offset) == (4, 0)


def test_describe_and_alter_configs(backend: Backend) -> None:
    admin = backend.admin
    topic = backend.topic(config={"cleanup.policy": "compact", "retention.ms": "3600000"})
    configs = admin.describe_configs(topic)
    assert configs["cleanup.policy"] == "compact"
    assert configs["retention.ms"] == "3600000"
    assert {"max.message.bytes", "segment.bytes", "min.insync.replicas"} <= set(configs)
    admin.alter_configs(topic, set={"max.message.bytes": "20000"}, delete=["retention.ms"])
    configs = admin.describe_configs(topic)
    assert (configs["max.message.bytes"], configs["retention.ms"]) == ("20000", WEEK_MS)
    assert configs["cleanup.policy"] == "compact", "alter_configs must be incremental"
    admin.alter_configs(topic, delete=["cleanup.policy", "max.message.bytes"])
    configs = admin.describe_configs(topic)
    assert (configs["cleanup.policy"], configs["max.message.bytes"]) == ("delete", "1048588")


def test_delete_records_moves_the_log_start(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with backend.producer() as producer:
        produce(producer, topic, [f"r{i}".encode() for i in range(10)], partition=0)
    backend.admin.delete_records({tp0: 4})
    assert backend.admin.watermarks(tp0) == (4, 10)
    assert backend.admin.watermarks(tp1) == (0, 0)
    assert backend.admin.describe_topic(topic).partitions[0].log_start_offset == 4
    records = read_topic(backend, topic, 6)
    assert [r.offset for r in records] == list(range(4, 10))
    assert records[0].value == b"r4"


def test_groups(backend: Backend) -> None:
    admin = backend.admin
    topic, group = backend.topic(partitions=2), unique("admin-group")
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with backend.producer() as producer:
        for p in (0, 1):
            produce(producer, topic, [b"g"] * 5, partition=p)
    member = backend.consumer(group_id=group, enable_auto_commit=False, client_id="member-1")
    member.subscribe([topic])
    consume(member, 10)
    member.commit({tp0: 5, tp1: 2})
    listed = {g.group_id: g for g in admin.list_groups()}
    assert (listed[group].state, listed[group].protocol_type) == ("Stable", "consumer")
    described = admin.describe_group(group)
    assert (described.group_id, described.state, described.protocol) == (group, "Stable", "range")
    (only,) = described.members
    assert (only.client_id, sorted(only.assignment)) == ("member-1", [tp0, tp1])
    assert only.member_id and only.group_instance_id is None
    assert admin.list_group_offsets(group) == {tp0: 5, tp1: 2}
    assert admin.group_lag(group) == {tp0: 0, tp1: 3}
    with pytest.raises(HeadwaterError):  # members are active
        admin.alter_group_offsets(group, {tp0: 0})
    with pytest.raises(HeadwaterError) as refused:
        admin.delete_groups([group])
    assert refused.value.error_code == 68  # NON_EMPTY_GROUP
    assert admin.list_group_offsets(group) == {tp0: 5, tp1: 2}
    member.close()
    assert admin.describe_group(group).state == "Empty"
    admin.alter_group_offsets(group, {tp0: 1, tp1: 0})
    assert admin.list_group_offsets(group) == {tp0: 1, tp1: 0}
    assert admin.group_lag(group) == {tp0: 4, tp1: 5}
    admin.delete_groups([group])
    assert group not in {g.group_id for g in admin.list_groups()}
    assert admin.list_group_offsets(group) == {}
    gone = admin.describe_group(group)
    assert (gone.state, gone.members) == ("Dead", [])
    assert admin.describe_group(unique("never")).state == "Dead"
