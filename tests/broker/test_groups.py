"""Consumer groups end to end: real librdkafka consumers against a real broker process.

Three consumers share a 6-partition topic (range and cooperative-sticky assignors): every
partition is assigned exactly once and every record consumed exactly once; committed offsets
let a newcomer resume; a closed consumer's partitions move to the others; committed offsets
survive a broker restart.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import ServedBroker, free_port, start_broker
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 6
RECORDS = 600


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ServedBroker]:
    served = start_broker(tmp_path / "data", tmp_path / "broker.log")
    yield served
    code = served.stop(signal.SIGTERM)
    assert code == 0, served.log_tail()
    assert "Traceback" not in served.log_path.read_text(errors="replace"), served.log_tail()


def quiet(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 0, **extra}


def consumer_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    return quiet(
        bootstrap,
        **{
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "fetch.wait.max.ms": 50,
            "topic.metadata.refresh.interval.ms": 1000,
            **extra,
        },
    )


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient(quiet(bootstrap))
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=15)


def produce(bootstrap: str, topic: str, count: int, start: int = 0) -> None:
    producer = Producer(quiet(bootstrap, **{"enable.idempotence": False, "linger.ms": 5}))
    for i in range(start, start + count):
        producer.produce(
            topic, key=str(i).encode(), value=str(i).encode(), partition=i % PARTITIONS
        )
    assert producer.flush(30) == 0


class Member:
    """A consumer polled by its own thread, recording what it consumed and was assigned."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self.assigned: set[int] = set()
        self.consumed: list[tuple[int, int, bytes]] = []
        self.errors: list[KafkaError] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._commit_on_close = False
        self.consumer = Consumer(config)
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned |= {tp.partition for tp in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned -= {tp.partition for tp in partitions}

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.1)
            if message is None:
                continue
            if message.error() is not None:
                self.errors.append(message.error())
                continue
            value = message.value()
            assert value is not None
            with self._lock:
                self.consumed.append((message.partition(), message.offset(), value))
        if self._commit_on_close:
            self.consumer.commit(asynchronous=False)
        self.consumer.close()
        self._closed.set()

    def partitions(self) -> set[int]:
        with self._lock:
            return set(self.assigned)

    def close(self, *, commit: bool = False) -> None:
        self._commit_on_close = commit
        self._stop.set()
        assert self._closed.wait(30), "consumer did not close"


def wait_until(condition: Any, timeout: float = 45, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def balanced(members: list[Member]) -> bool:
    sets = [member.partitions() for member in members]
    union = set().union(*sets)
    return union == set(range(PARTITIONS)) and sum(len(s) for s in sets) == PARTITIONS and all(sets)


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_three_consumers_share_partitions_and_consume_once(
    broker: ServedBroker, assignor: str
) -> None:
    topic = f"shared-{assignor}"
    create_topic(broker.bootstrap, topic)
    config = consumer_config(
        broker.bootstrap, f"group-{assignor}", **{"partition.assignment.strategy": assignor}
    )
    members = [Member(config, topic) for _ in range(3)]
    try:
        # Nothing is committed, so records must arrive after the assignment settles: Kafka too
        # would hand them to a second owner otherwise.
        wait_until(lambda: balanced(members), what="a balanced assignment")
        produce(broker.bootstrap, topic, RECORDS)
        wait_until(
            lambda: sum(len(member.consumed) for member in members) >= RECORDS,
            what="every record",
        )
        time.sleep(0.5)  # any duplicate would show up now
        consumed = [record for member in members for record in member.consumed]
        assert len(consumed) == RECORDS
        assert sorted(int(value) for _, _, value in consumed) == list(range(RECORDS))
        assert all(len(member.partitions()) == 2 for member in members)
    finally:
        for member in members:
            member.close()


def test_commit_then_a_new_consumer_resumes(broker: ServedBroker) -> None:
    topic = "resume"
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, 60)
    config = consumer_config(broker.bootstrap, "resumers")
    first = Member(config, topic)
    wait_until(lambda: len(first.consumed) >= 60, what="the first 60 records")
    first.close(commit=True)
    produce(broker.bootstrap, topic, 30, start=60)
    second = Member(config, topic)
    try:
        wait_until(lambda: len(second.consumed) >= 30, what="the next 30 records")
        time.sleep(0.5)
        assert sorted(int(v) for _, _, v in second.consumed) == list(range(60, 90))
    finally:
        second.close()


def test_closed_consumer_partitions_move_to_the_others(broker: ServedBroker) -> None:
    topic = "handover"
    create_topic(broker.bootstrap, topic)
    config = consumer_config(broker.bootstrap, "handover")
    members = [Member(config, topic) for _ in range(3)]
    try:
        wait_until(lambda: balanced(members), what="three-way balance")
        members[0].close()
        rest = members[1:]
        wait_until(lambda: balanced(rest), what="the two survivors taking every partition")
        produce(broker.bootstrap, topic, 60)
        wait_until(lambda: sum(len(m.consumed) for m in rest) >= 60, what="records after handover")
    finally:
        for member in members[1:]:
            member.close()


def test_committed_offsets_survive_a_restart(tmp_path: Path) -> None:
    data, log, port = tmp_path / "data", tmp_path / "broker.log", free_port()
    served = start_broker(data, log, port=port)
    try:
        create_topic(served.bootstrap, "durable")
        produce(served.bootstrap, "durable", 60)
        config = consumer_config(served.bootstrap, "durable-group")
        first = Member(config, "durable")
        wait_until(lambda: len(first.consumed) >= 60, what="the first 60 records")
        first.close(commit=True)
    finally:
        assert served.stop() == 0, served.log_tail()
    served = start_broker(data, log, port=port)
    try:
        produce(served.bootstrap, "durable", 12, start=60)
        check = Consumer(consumer_config(served.bootstrap, "durable-group"))
        committed = check.committed(
            [TopicPartition("durable", p) for p in range(PARTITIONS)], timeout=15
        )
        check.close()
        assert [tp.offset for tp in committed] == [10] * PARTITIONS
        second = Member(config, "durable")
        try:
            wait_until(lambda: len(second.consumed) >= 12, what="the records after the restart")
            time.sleep(0.5)
            assert sorted(int(v) for _, _, v in second.consumed) == list(range(60, 72))
        finally:
            second.close()
    finally:
        assert served.stop() == 0, served.log_tail()


def test_admin_lists_and_describes_a_stable_group(broker: ServedBroker) -> None:
    topic = "described"
    create_topic(broker.bootstrap, topic)
    member = Member(consumer_config(broker.bootstrap, "described-group"), topic)
    try:
        wait_until(lambda: len(member.partitions()) == PARTITIONS, what="the assignment")
        admin = AdminClient(quiet(broker.bootstrap))
        listed = admin.list_consumer_groups().result(timeout=15)
        assert "described-group" in {group.group_id for group in listed.valid}
        described = admin.describe_consumer_groups(["described-group"])["described-group"].result(
            timeout=15
        )
        assert str(described.state).endswith("STABLE")
        assert described.partition_assignor == "range"
        [only] = described.members
        assert {tp.partition for tp in only.assignment.topic_partitions} == set(range(PARTITIONS))
    finally:
        member.close()


def test_static_member_restart_keeps_its_partitions(broker: ServedBroker) -> None:
    topic = "static"
    create_topic(broker.bootstrap, topic)
    configs = [
        consumer_config(broker.bootstrap, "static-group", **{"group.instance.id": f"static-{i}"})
        for i in range(2)
    ]
    members = [Member(config, topic) for config in configs]
    try:
        wait_until(lambda: balanced(members), what="two-way balance")
        before = members[0].partitions()
        members[0].close()  # a static member sends no LeaveGroup: the group keeps its place
        other = members[1].partitions()
        members[0] = Member(configs[0], topic)
        wait_until(lambda: members[0].partitions() == before, what="the same partitions back")
        assert members[1].partitions() == other
    finally:
        for member in members:
            member.close()


def test_aiokafka_group_consumer(broker: ServedBroker) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    topic = "aiokafka-group"
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, 30)

    async def consume() -> list[int]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id="aiokafka",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        seen: list[int] = []
        try:
            while len(seen) < 30:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=200), 30)
                seen += [int(r.value) for records in batches.values() for r in records]
            await consumer.commit()
        finally:
            await consumer.stop()
        return seen

    assert sorted(asyncio.run(consume())) == list(range(30))
    check = Consumer(consumer_config(broker.bootstrap, "aiokafka"))
    committed = check.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
    check.close()
    assert [tp.offset for tp in committed] == [5] * PARTITIONS


def test_admin_deletes_an_empty_group_but_not_an_active_one(broker: ServedBroker) -> None:
    topic = "deleted"
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, 12)
    gone = Member(consumer_config(broker.bootstrap, "gone-group"), topic)
    wait_until(lambda: len(gone.consumed) >= 12, what="the 12 records")
    gone.close(commit=True)
    busy = Member(consumer_config(broker.bootstrap, "busy-group"), topic)
    try:
        wait_until(lambda: len(busy.partitions()) == PARTITIONS, what="the busy assignment")
        admin = AdminClient(quiet(broker.bootstrap))
        listed = admin.list_consumer_groups().result(timeout=15)
        assert {"gone-group", "busy-group"} <= {group.group_id for group in listed.valid}
        admin.delete_consumer_groups(["gone-group"])["gone-group"].result(timeout=15)
        listed = admin.list_consumer_groups().result(timeout=15)
        names = {group.group_id for group in listed.valid}
        assert "gone-group" not in names and "busy-group" in names
        check = Consumer(consumer_config(broker.bootstrap, "gone-group"))
        committed = check.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15
        )
        check.close()
        assert [tp.offset for tp in committed] == [-1001] * PARTITIONS  # OFFSET_INVALID
        with pytest.raises(KafkaException) as refused:
            admin.delete_consumer_groups(["busy-group"])["busy-group"].result(timeout=15)
        assert refused.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    finally:
        busy.close()


def test_offsets_expire_after_the_group_empties(tmp_path: Path) -> None:
    """offsets.retention (here in ms) counts from when the group emptied; then the group is
    gone, across a restart too."""
    settings = [
        "-c",
        "offsets.retention.ms=1500",
        "-c",
        "offsets.retention.check.interval.ms=100",
    ]
    served = start_broker(tmp_path / "data", tmp_path / "broker.log", *settings)
    topic, group = "expiring", "short-lived"
    try:
        create_topic(served.bootstrap, topic)
        produce(served.bootstrap, topic, 12)
        member = Member(consumer_config(served.bootstrap, group), topic)
        wait_until(lambda: len(member.consumed) == 12, what="every record consumed")
        member.close(commit=True)
        probe = Consumer(consumer_config(served.bootstrap, group))
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = probe.committed(partitions, timeout=10)
        assert sorted(tp.offset for tp in committed) == [2] * PARTITIONS
        admin = AdminClient(quiet(served.bootstrap))

        def listed() -> set[str]:
            groups = admin.list_consumer_groups().result(timeout=10)
            return {listing.group_id for listing in groups.valid}

        assert group in listed()
        wait_until(lambda: group not in listed(), timeout=20, what="the group to expire")
        assert [tp.offset for tp in probe.committed(partitions, timeout=10)] == [-1001] * 6
        probe.close()
    finally:
        assert served.stop() == 0, served.log_tail()
    again = start_broker(tmp_path / "data", tmp_path / "broker.log")
    try:
        admin = AdminClient(quiet(again.bootstrap))
        groups = admin.list_consumer_groups().result(timeout=10)
        assert group not in {listing.group_id for listing in groups.valid}
    finally:
        assert again.stop() == 0, again.log_tail()


def test_an_unknown_broker_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"unknown broker setting 'offsets\.retention\.hours'"):
        start_broker(tmp_path / "data", tmp_path / "broker.log", "-c", "offsets.retention.hours=1")
