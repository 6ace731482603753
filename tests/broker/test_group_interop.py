"""Consumer groups, differential: each scenario runs against Headwater and a real Kafka 4.1.1.

Every test is parametrized over the backend ("headwater": this module's `headwater serve`
process; "kafka": the session's Apache Kafka broker) and asserts the same observable outcome
on both, so a test that passes on Kafka and fails on Headwater is a Headwater bug:

* three librdkafka consumers under the range, roundrobin and cooperative-sticky assignors split
  a 6-partition topic and consume every record exactly once;
* a member in its own process, committing after every record, is SIGKILLed mid-stream: its
  partitions move to the survivors once its session expires, they resume from its commits, and
  nothing is lost (a record is read twice only if the kill fell between reading and committing);
* a static member (group.instance.id) closes and comes back within its session: it gets its
  partitions back and the other member sees no rebalance;
* kafka-python, aiokafka, kcat -G and the Java client (kafka-clients 4.1) consume as group
  members, commit, and a later member of the group resumes from the committed offsets;
* OffsetCommit and Heartbeat from unknown members and stale generations get Kafka's error codes.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from test_differential import create_topic, unique
from test_groups import PARTITIONS, Member, balanced, consumer_config, produce, wait_until
from test_java_client import JVM_FLAGS, MAIN_CLASS, SOURCE
from test_robustness import RawClient

from headwater.protocol import messages as m
from kafka_fixture import FETCH_HINT, default_libs_dir

pytestmark = pytest.mark.timeout(120)

SETTLE = 30.0  # seconds to wait for an assignment or for records


def committed(bootstrap: str, group: str, topic: str) -> list[int]:
    """The group's committed offset of each partition (-1001 where none), without joining."""
    check = Consumer(consumer_config(bootstrap, group))
    try:
        found = check.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
    finally:
        check.close()
    return [tp.offset for tp in found]


# --- 1. three librdkafka members per assignor --------------------------------------------------


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_three_members_split_partitions_and_consume_each_record_once(
    bootstrap: str, assignor: str
) -> None:
    topic, group = unique(f"split-{assignor}"), unique("split-group")
    create_topic(bootstrap, topic, PARTITIONS)
    config = consumer_config(bootstrap, group, **{"partition.assignment.strategy": assignor})
    members = [Member(config, topic) for _ in range(3)]
    try:
        # Nothing is committed, so records must arrive after the assignment settles (a
        # partition moving before its records are read would hand them to a second owner).
        wait_until(lambda: balanced(members), SETTLE, "a balanced assignment")
        produce(bootstrap, topic, 600)
        wait_until(lambda: sum(len(x.consumed) for x in members) >= 600, SETTLE, "every record")
        time.sleep(0.5)  # any duplicate would show up now
        assert sorted(len(member.partitions()) for member in members) == [2, 2, 2]
        consumed = [record for member in members for record in member.consumed]
        assert sorted(int(value) for _, _, value in consumed) == list(range(600))
        for member in members:  # each read only the partitions it owns
            assert {p for p, _, _ in member.consumed} == member.partitions()
        assert not [error for member in members for error in member.errors]
    finally:
        for member in members:
            member.close()


# --- 2. a member process killed mid-stream -----------------------------------------------------


@dataclass
class MemberLog:
    """What a `group_member.py` process wrote to its file, parsed."""

    assigned: set[int] = field(default_factory=set)
    consumed: list[tuple[int, int, int]] = field(default_factory=list)  # partition, offset, value
    commits: dict[int, int] = field(default_factory=dict)  # partition -> last committed offset
    commit_count: int = 0
    errors: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> MemberLog:
        log = cls()
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a line cut by SIGKILL
            kind, *rest = line.split()
            if kind in ("A", "R"):
                partitions = {int(p) for p in rest[0].split(",") if p != "-"}
                log.assigned = (
                    log.assigned | partitions if kind == "A" else log.assigned - partitions
                )
            elif kind == "C":
                log.consumed.append((int(rest[0]), int(rest[1]), int(rest[2])))
            elif kind == "K":
                log.commits[int(rest[0])] = int(rest[1])
                log.commit_count += 1
            elif kind == "E":
                log.errors.append(rest[0])
        return log


def spawn_member(
    bootstrap: str, group: str, topic: str, out: Path, delay_ms: int = 0
) -> subprocess.Popen[bytes]:
    script = Path(__file__).resolve().parent / "group_member.py"
    command = [sys.executable, str(script), bootstrap, group, topic, str(out), str(delay_ms)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the member closes and exits 0), SIGKILL if it hangs; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(10)


def test_a_killed_member_partitions_resume_from_its_commits(bootstrap: str, tmp_path: Path) -> None:
    topic, group = unique("killed"), unique("killed-group")
    create_topic(bootstrap, topic, PARTITIONS)
    outs = [tmp_path / f"member-{i}.log" for i in range(3)]
    # The victim sleeps 20 ms per record: a kill after 30 commits is mid-stream for sure.
    processes = [spawn_member(bootstrap, group, topic, outs[0], delay_ms=20)]
    processes += [spawn_member(bootstrap, group, topic, out) for out in outs[1:]]
    try:

        def logs() -> list[MemberLog]:
            return [MemberLog.read(out) for out in outs]

        wait_until(
            lambda: (
                sorted(len(log.assigned) for log in logs()) == [2, 2, 2]
                and set().union(*(log.assigned for log in logs())) == set(range(PARTITIONS))
            ),
            SETTLE,
            "a three-way split",
        )
        produce(bootstrap, topic, 600)
        wait_until(lambda: logs()[0].commit_count >= 30, SETTLE, "the victim's first commits")
        processes[0].send_signal(signal.SIGKILL)
        assert processes[0].wait(10) == -signal.SIGKILL
        victim = MemberLog.read(outs[0])
        produce(bootstrap, topic, 300, start=600)  # while the victim's partitions are orphaned
        wait_until(
            lambda: (
                {v for log in logs()[1:] for _, _, v in log.consumed}
                | {v for _, _, v in victim.consumed}
                >= set(range(900))
            ),
            SETTLE,
            "every record, the victim's backlog included",
        )
        time.sleep(0.5)
    finally:
        codes = [stop(process) for process in processes]
        errors = [process.stderr.read().decode() for process in processes if process.stderr]
    assert codes == [-signal.SIGKILL, 0, 0], errors

    rest = [MemberLog.read(out) for out in outs[1:]]
    lost = victim.assigned
    assert len(lost) == 2 and len(victim.consumed) < 200, "the victim was not killed mid-stream"
    reads = collections.Counter((p, o) for log in [victim, *rest] for p, o, _ in log.consumed)
    assert {v for log in [victim, *rest] for _, _, v in log.consumed} == set(range(900))
    # A record is read twice only where the kill fell between reading and committing it.
    twice = {key for key, count in reads.items() if count > 1}
    assert max(reads.values()) <= 2
    assert twice <= {(p, victim.commits.get(p, 0)) for p in lost}, (twice, victim.commits)
    # The survivors picked up each lost partition at the victim's last committed offset (or one
    # past it, if the kill fell after the commit but before its line was written).
    for p in lost:
        first = min(o for log in rest for q, o, _ in log.consumed if q == p)
        assert first in (victim.commits.get(p, 0), victim.commits.get(p, 0) + 1), (p, first)
    assert any(o < 100 for log in rest for q, o, _ in log.consumed if q in lost)  # the backlog
    assert not [error for log in rest for error in log.errors]
    assert committed(bootstrap, group, topic) == [150] * PARTITIONS


# --- 3. static membership ------------------------------------------------------------------------


class CountingMember(Member):
    """A `Member` that counts its assign and revoke callbacks (each one is a rebalance)."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self.callbacks = 0
        super().__init__(config, topic)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.callbacks += 1
        super()._on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.callbacks += 1
        super()._on_revoke(consumer, partitions)


def test_a_static_member_comes_back_to_its_partitions_without_a_rebalance(bootstrap: str) -> None:
    topic, group = unique("static"), unique("static-group")
    create_topic(bootstrap, topic, PARTITIONS)
    configs = [
        consumer_config(bootstrap, group, **{"group.instance.id": f"{group}-{i}"}) for i in range(2)
    ]
    members = [CountingMember(config, topic) for config in configs]
    try:
        wait_until(lambda: balanced(members), SETTLE, "a two-way split")
        time.sleep(1)  # heartbeats would have told of any rebalance still pending
        before, other = members[0].partitions(), members[1].partitions()
        callbacks = members[1].callbacks
        members[0].close()  # a static member sends no LeaveGroup: its place is kept
        members[0] = CountingMember(configs[0], topic)
        wait_until(lambda: members[0].partitions() == before, SETTLE, "the same partitions back")
        produce(bootstrap, topic, 60)
        wait_until(lambda: sum(len(x.consumed) for x in members) >= 60, SETTLE, "the records")
        time.sleep(1)
        assert members[1].partitions() == other
        assert members[1].callbacks == callbacks, "the other member went through a rebalance"
        assert members[0].callbacks == 1  # one assign, no revoke
        for member, owned in ((members[0], before), (members[1], other)):
            assert sorted(int(v) for _, _, v in member.consumed) == [
                i for i in range(60) if i % PARTITIONS in owned
            ]
    finally:
        for member in members:
            member.close()


# --- 4. kafka-python -------------------------------------------------------------------------------


def test_kafka_python_members_commit_and_resume(bootstrap: str) -> None:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition as KafkaPartition

    topic, group = unique("kafka-python"), unique("kafka-python-group")
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, 60)
    partitions = [KafkaPartition(topic, p) for p in range(PARTITIONS)]

    def consume(count: int) -> tuple[list[int], list[int | None]]:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=50,
            metadata_max_age_ms=1000,
        )
        # kafka-python's leader assigns from the metadata it has when the group forms; if the
        # topic is not in it yet (a slow machine), it assigns nothing and, its snapshot empty,
        # never rejoins when the metadata comes (a client race, on Kafka too). Subscribe once
        # the client knows the topic's partitions.
        deadline = time.monotonic() + SETTLE
        while len(consumer.partitions_for_topic(topic) or ()) < PARTITIONS:
            assert time.monotonic() < deadline, "kafka-python never saw the topic's partitions"
            time.sleep(0.1)
        consumer.subscribe([topic])
        seen: list[int] = []
        try:
            deadline = time.monotonic() + SETTLE
            while len(seen) < count and time.monotonic() < deadline:
                batches = consumer.poll(timeout_ms=200)
                seen += [int(r.value) for records in batches.values() for r in records]
            for _ in range(3):  # anything beyond `count` would be a re-read
                batches = consumer.poll(timeout_ms=200)
                seen += [int(r.value) for records in batches.values() for r in records]
            consumer.commit()
            offsets = [consumer.committed(tp) for tp in partitions]
        finally:
            consumer.close()
        return sorted(seen), offsets

    assert consume(60) == (list(range(60)), [10] * PARTITIONS)
    produce(bootstrap, topic, 30, start=60)
    assert consume(30) == (list(range(60, 90)), [15] * PARTITIONS)
    assert committed(bootstrap, group, topic) == [15] * PARTITIONS


# --- 5. aiokafka -----------------------------------------------------------------------------------


def test_aiokafka_members_commit_and_resume(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AioPartition

    topic, group = unique("aiokafka"), unique("aiokafka-group")
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, 30)

    async def consume(count: int) -> tuple[list[int], list[int | None]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=50,
            metadata_max_age_ms=1000,
        )
        await consumer.start()
        seen: list[int] = []
        try:
            deadline = time.monotonic() + SETTLE
            while len(seen) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                seen += [int(r.value) for records in batches.values() for r in records]
            for _ in range(3):  # anything beyond `count` would be a re-read
                batches = await consumer.getmany(timeout_ms=200)
                seen += [int(r.value) for records in batches.values() for r in records]
            await consumer.commit()
            offsets = [await consumer.committed(AioPartition(topic, p)) for p in range(PARTITIONS)]
        finally:
            await consumer.stop()
        return sorted(seen), offsets

    assert asyncio.run(consume(30)) == (list(range(30)), [5] * PARTITIONS)
    produce(bootstrap, topic, 12, start=30)
    assert asyncio.run(consume(12)) == (list(range(30, 42)), [7] * PARTITIONS)
    assert committed(bootstrap, group, topic) == [7] * PARTITIONS


# --- 6. kcat -G ------------------------------------------------------------------------------------


def kcat_group(bootstrap: str, group: str, topic: str) -> list[tuple[int, int, int]]:
    """`kcat -G` until every assigned partition is at its end; (partition, offset, value)s.

    Not `-o beginning`: in -G mode kcat seeks every assigned partition to it, committed offsets
    or not (on Kafka too), so a second run would re-read; auto.offset.reset only fills gaps.
    """
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is not installed (apt-get install kcat)"
    command = [kcat, "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest", "-e", "-q"]
    command += ["-f", "%p %o %s\\n", "-X", "log_level=0", "-X", "session.timeout.ms=6000"]
    command += ["-X", "heartbeat.interval.ms=500", "-X", "fetch.wait.max.ms=50", topic]
    result = subprocess.run(command, capture_output=True, text=True, timeout=40, check=False)
    assert result.returncode == 0, result.stderr
    fields = [line.split() for line in result.stdout.splitlines()]
    return [(int(p), int(o), int(v)) for p, o, v in fields]


def test_kcat_group_consumer_commits_what_it_read(bootstrap: str) -> None:
    topic, group = unique("kcat"), unique("kcat-group")
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, 120)
    first = kcat_group(bootstrap, group, topic)
    assert sorted(value for _, _, value in first) == list(range(120))
    assert all(value % PARTITIONS == p for p, _, value in first)
    assert committed(bootstrap, group, topic) == [20] * PARTITIONS  # the end offsets
    produce(bootstrap, topic, 30, start=120)
    second = kcat_group(bootstrap, group, topic)
    assert sorted(value for _, _, value in second) == list(range(120, 150))
    assert committed(bootstrap, group, topic) == [25] * PARTITIONS


# --- 7. the Java client ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`HeadwaterJavaClient` compiled against the cached kafka-clients jar: (classes, libs)."""
    libs = default_libs_dir()
    if not any(libs.glob("kafka-clients-*.jar")):
        pytest.fail(f"no kafka-clients jar in {libs}: {FETCH_HINT}", pytrace=False)
    classes = tmp_path_factory.mktemp("java-group-client")
    result = subprocess.run(
        ["javac", "-cp", f"{libs}/*", "-d", str(classes), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"javac failed:\n{result.stdout}\n{result.stderr}"
    return classes, libs


def java_group(
    java_classes: tuple[Path, Path], bootstrap: str, group: str, topic: str, count: int
) -> tuple[list[tuple[int, int, int]], dict[int, int]]:
    """One run of the Java client's group mode: the records it read, its committed offsets."""
    classes, libs = java_classes
    command = ["java", *JVM_FLAGS, "-cp", f"{classes}:{libs}/*", MAIN_CLASS, "group"]
    command += [bootstrap, topic, group, str(count)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[-1] == ["DONE"], result.stdout[-2000:]
    records = [(int(p), int(o), int(v)) for kind, p, o, v in (x for x in lines if x[0] == "C")]
    offsets = {int(x[1]): int(x[2]) for x in lines if x[0] == "K"}
    return records, offsets


def test_java_group_consumer_commits_and_resumes(
    bootstrap: str, java_classes: tuple[Path, Path]
) -> None:
    topic, group = unique("java-group"), unique("java-group")
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, 120)
    records, offsets = java_group(java_classes, bootstrap, group, topic, 120)
    assert sorted(value for _, _, value in records) == list(range(120))
    assert offsets == dict.fromkeys(range(PARTITIONS), 20)
    produce(bootstrap, topic, 30, start=120)
    records, offsets = java_group(java_classes, bootstrap, group, topic, 30)
    assert sorted(value for _, _, value in records) == list(range(120, 150))
    assert sorted(o for _, o, _ in records) == sorted([20, 21, 22, 23, 24] * PARTITIONS)
    assert offsets == dict.fromkeys(range(PARTITIONS), 25)
    assert committed(bootstrap, group, topic) == [25] * PARTITIONS


# --- error codes of OffsetCommit and Heartbeat -----------------------------------------------------

NONE, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, MEMBER_ID_REQUIRED = 0, 22, 25, 79


def _subscription(topic: str) -> bytes:
    """ConsumerProtocolSubscription v0: version, [topic], null user data."""
    name = topic.encode()
    return b"\x00\x00" + b"\x00\x00\x00\x01" + len(name).to_bytes(2, "big") + name + b"\xff" * 4


def _assignment(topic: str) -> bytes:
    """ConsumerProtocolAssignment v0: version, [(topic, [partitions])], null user data."""
    name = topic.encode()
    partitions = b"".join(p.to_bytes(4, "big") for p in range(PARTITIONS))
    body = len(name).to_bytes(2, "big") + name + PARTITIONS.to_bytes(4, "big") + partitions
    return b"\x00\x00" + b"\x00\x00\x00\x01" + body + b"\xff" * 4


def test_commit_and_heartbeat_error_codes(bootstrap: str) -> None:
    topic, group = unique("codes"), unique("codes-group")
    create_topic(bootstrap, topic, PARTITIONS)
    port = int(bootstrap.rsplit(":", 1)[1])
    with RawClient(SimpleNamespace(port=port)) as client:  # type: ignore[arg-type]
        deadline = time.monotonic() + SETTLE
        while True:  # Kafka creates __consumer_offsets on the first FindCoordinator
            found = client.request(10, 3, m.FindCoordinatorRequest(key=group, key_type=0))
            if found.error_code == NONE or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found.error_code == NONE

        def join(member_id: str) -> Any:
            protocol = m.JoinGroupRequestJoinGroupRequestProtocol(
                name="range", metadata=_subscription(topic)
            )
            request = m.JoinGroupRequest(
                group_id=group,
                session_timeout_ms=6000,
                rebalance_timeout_ms=6000,
                member_id=member_id,
                protocol_type="consumer",
                protocols=[protocol],
            )
            return client.request(11, 5, request)

        first = join("")
        assert first.error_code == MEMBER_ID_REQUIRED and first.member_id
        joined = join(first.member_id)
        assert (joined.error_code, joined.generation_id, joined.leader) == (
            NONE,
            1,
            first.member_id,
        )
        me, generation = first.member_id, joined.generation_id
        synced = client.request(
            14,
            3,
            m.SyncGroupRequest(
                group_id=group,
                generation_id=generation,
                member_id=me,
                assignments=[
                    m.SyncGroupRequestSyncGroupRequestAssignment(
                        member_id=me, assignment=_assignment(topic)
                    )
                ],
            ),
        )
        assert synced.error_code == NONE

        def commit(generation_id: int, member_id: str) -> int:
            partition = m.OffsetCommitRequestOffsetCommitRequestPartition(
                partition_index=0, committed_offset=7, committed_metadata=""
            )
            request = m.OffsetCommitRequest(
                group_id=group,
                generation_id_or_member_epoch=generation_id,
                member_id=member_id,
                topics=[
                    m.OffsetCommitRequestOffsetCommitRequestTopic(
                        name=topic, partitions=[partition]
                    )
                ],
            )
            [answer] = client.request(8, 7, request).topics
            return int(answer.partitions[0].error_code)

        def heartbeat(generation_id: int, member_id: str) -> int:
            request = m.HeartbeatRequest(
                group_id=group, generation_id=generation_id, member_id=member_id
            )
            return int(client.request(12, 3, request).error_code)

        stable = {
            "commit": commit(generation, me),
            "commit, stale generation": commit(generation - 1, me),
            "commit, future generation": commit(generation + 1, me),
            "commit, unknown member": commit(generation, "nobody"),
            "commit, no member (simple) in an active group": commit(-1, ""),
            "heartbeat": heartbeat(generation, me),
            "heartbeat, stale generation": heartbeat(generation - 1, me),
            "heartbeat, unknown member": heartbeat(generation, "nobody"),
        }
        assert stable == {
            "commit": NONE,
            "commit, stale generation": ILLEGAL_GENERATION,
            "commit, future generation": ILLEGAL_GENERATION,
            "commit, unknown member": UNKNOWN_MEMBER_ID,
            "commit, no member (simple) in an active group": UNKNOWN_MEMBER_ID,
            "heartbeat": NONE,
            "heartbeat, stale generation": ILLEGAL_GENERATION,
            "heartbeat, unknown member": UNKNOWN_MEMBER_ID,
        }
        left = client.request(
            13,
            3,
            m.LeaveGroupRequest(
                group_id=group, members=[m.LeaveGroupRequestMemberIdentity(member_id=me)]
            ),
        )
        assert (left.error_code, [x.error_code for x in left.members]) == (NONE, [NONE])
        empty = {
            "commit, old member": commit(generation, me),
            "commit, no member (simple)": commit(-1, ""),
            "heartbeat, old member": heartbeat(generation, me),
        }
        assert empty == {
            "commit, old member": UNKNOWN_MEMBER_ID,
            "commit, no member (simple)": NONE,
            "heartbeat, old member": UNKNOWN_MEMBER_ID,
        }
    assert committed(bootstrap, group, topic)[0] == 7
