"""Consumer groups, the same on every backend: assignors split partitions exactly once, a
killed member's partitions move without loss, rebalance callbacks, commits and resuming."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from backends import (
    SETTLE,
    Backend,
    assigned_partitions,
    by_partition,
    consume,
    fill,
    poll_round,
    poll_until,
    produce,
    split_exactly,
    unique,
    wait_until,
)

from headwater.client import Consumer, ConsumerRecord, TopicPartition

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 6
PER_PARTITION = 10
MEMBER_SCRIPT = Path(__file__).resolve().parent / "member_process.py"


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_three_members_split_partitions_and_consume_each_record_once(
    backend: Backend, assignor: str
) -> None:
    topic, group = backend.topic(PARTITIONS), unique("split")
    members = [
        backend.consumer(group_id=group, partition_assignment_strategy=assignor) for _ in range(3)
    ]
    for member in members:
        member.subscribe([topic])
    seen: list[list[ConsumerRecord]] = [[], [], []]
    poll_until(members, seen, lambda: split_exactly(members, PARTITIONS), "a 2/2/2 split")
    assert seen == [[], [], []]
    described = backend.admin.describe_group(group)
    assert (described.state, described.protocol_type, described.protocol) == (
        "Stable",
        "consumer",
        assignor,
    )
    assert sorted(len(m.assignment) for m in described.members) == [2, 2, 2]
    assert {tp for m in described.members for tp in m.assignment} == {
        TopicPartition(topic, p) for p in range(PARTITIONS)
    }
    expected = fill(backend, topic, PARTITIONS, PER_PARTITION)
    poll_until(members, seen, lambda: sum(map(len, seen)) >= len(expected), "every record")
    for member, records in zip(members, seen, strict=True):
        assert {r.partition for r in records} <= {tp.partition for tp in member.assignment()}
    everything = [(r.partition, r.offset) for records in seen for r in records]
    assert sorted(everything) == sorted(expected), "a record was lost or read twice"
    for member in members:
        member.close()


class ProcessMember:
    """A member in its own process (member_process.py); `kill()` is SIGKILL."""

    def __init__(self, backend: Backend, group: str, topic: str, directory: Path) -> None:
        self.out = directory / "member.out"
        self.log = directory / "member.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(MEMBER_SCRIPT),
                    backend.url,
                    group,
                    topic,
                    str(self.out),
                    "150",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.killed = False

    def _events(self) -> list[tuple[str, list[int]]]:
        """(kind, numbers) per line: A/R list partitions, C/K a partition and an offset."""
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        events = []
        for line in lines:
            kind, _, rest = line.partition(" ")
            events.append((kind, [int(n) for n in re.split("[ ,]", rest) if n not in ("", "-")]))
        return events

    @property
    def assigned(self) -> set[int]:
        current: set[int] = set()
        for kind, numbers in self._events():
            if kind == "A":
                current |= set(numbers)
            elif kind == "R":
                current -= set(numbers)
        return current

    @property
    def consumed(self) -> list[tuple[int, int]]:
        return [(n[0], n[1]) for kind, n in self._events() if kind == "C"]

    @property
    def commits(self) -> dict[int, int]:
        return {n[0]: n[1] for kind, n in self._events() if kind == "K"}

    def step(self) -> None:
        if not self.killed and self.process.poll() is not None:
            raise AssertionError(f"the member process exited: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        self.killed = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


class StalledMember:
    """Embedded (one process by design): a member this thread polls until `kill()`, then never
    again, so `max.poll.interval.ms` expires it."""

    def __init__(self, backend: Backend, group: str, topic: str) -> None:
        self.topic = topic
        self.consumer = backend.consumer(
            group_id=group, enable_auto_commit=False, max_poll_interval_ms=3000
        )
        self.assigned: set[int] = set()
        self.consumed: list[tuple[int, int]] = []
        self.commits: dict[int, int] = {}
        self.killed = False
        self.consumer.subscribe(
            [topic],
            on_assign=lambda _, tps: self.assigned.update(tp.partition for tp in tps),
            on_revoke=lambda _, tps: self.assigned.difference_update(tp.partition for tp in tps),
        )

    def step(self) -> None:
        if self.killed:
            return
        record = self.consumer.poll(0.05)
        if record is not None:
            self.consumed.append((record.partition, record.offset))
            self.consumer.commit({TopicPartition(self.topic, record.partition): record.offset + 1})
            self.commits[record.partition] = record.offset + 1

    def kill(self) -> None:
        self.killed = True

    def close(self) -> None:
        pass  # the stalled consumer closes with the backend's connection


def test_killed_member_partitions_move_and_nothing_is_lost(
    backend: Backend, tmp_path: Path
) -> None:
    topic, group = backend.topic(PARTITIONS), unique("kill")
    member: ProcessMember | StalledMember
    if backend.name == "embedded":
        member = StalledMember(backend, group, topic)
    else:
        member = ProcessMember(backend, group, topic, tmp_path)
    survivors = [backend.consumer(group_id=group, enable_auto_commit=False) for _ in range(2)]
    seen: list[list[ConsumerRecord]] = [[], []]
    try:
        for survivor in survivors:
            survivor.subscribe([topic])

        def run_until(predicate: Callable[[], object], message: str) -> None:
            def step() -> bool:
                for survivor, records in zip(survivors, seen, strict=True):
                    record = survivor.poll(0.05)
                    if record is not None:
                        records.append(record)
                        partition = TopicPartition(topic, record.partition)
                        survivor.commit({partition: record.offset + 1})
                member.step()
                return bool(predicate())

            wait_until(step, message, timeout=SETTLE)

        def three_way() -> bool:
            theirs = assigned_partitions(survivors)
            return (
                len(member.assigned) == 2
                and sorted(map(len, theirs)) == [2, 2]
                and (member.assigned | theirs[0] | theirs[1] == set(range(PARTITIONS)))
            )

        run_until(three_way, "the member and two survivors split the partitions 2/2/2")
        doomed = set(member.assigned)
        expected = fill(backend, topic, PARTITIONS, PER_PARTITION)
        run_until(lambda: len(member.consumed) >= 3, "the member reads a few records")
        member.kill()
        read_by_member = list(member.consumed)
        commits = member.commits
        assert {p for p, _ in read_by_member} <= doomed
        assert len(read_by_member) < 2 * PER_PARTITION, "the member finished before the kill"

        def survivors_done() -> bool:
            got = {(r.partition, r.offset) for records in seen for r in records}
            return got | set(read_by_member) == expected

        run_until(survivors_done, "the survivors take over and read every remaining record")
        theirs = assigned_partitions(survivors)
        assert theirs[0] | theirs[1] == set(range(PARTITIONS)) and not theirs[0] & theirs[1]
        taken_over = by_partition(r for records in seen for r in records)
        for partition in doomed:
            read_before = [o for p, o in read_by_member if p == partition]
            first = taken_over[partition][0].offset if partition in taken_over else PER_PARTITION
            resume_points = {commits.get(partition, 0)}
            if backend.name != "embedded" and read_before:  # killed between commit and its line
                resume_points.add(max(read_before) + 1)
            assert first in resume_points, (
                f"partition {partition}: survivors started at {first}, the member committed "
                f"{commits.get(partition)} after reading {read_before}"
            )
        survivor_reads = [(r.partition, r.offset) for records in seen for r in records]
        assert len(survivor_reads) == len(set(survivor_reads)), "a survivor read a record twice"
        duplicates = len(survivor_reads) + len(read_by_member) - len(expected)
        assert 0 <= duplicates <= (0 if backend.name == "embedded" else len(doomed))
    finally:
        member.close()
        for survivor in survivors:
            survivor.close()


def callbacks_into(
    events: list[tuple[str, set[int]]], threads: set[int]
) -> dict[str, Callable[[Consumer, list[TopicPartition]], None]]:
    def record(kind: str) -> Callable[[Consumer, list[TopicPartition]], None]:
        def callback(_: Consumer, partitions: list[TopicPartition]) -> None:
            threads.add(threading.get_ident())
            if partitions:  # cooperative rounds may report nothing new
                events.append((kind, {tp.partition for tp in partitions}))

        return callback

    return {"on_assign": record("assign"), "on_revoke": record("revoke")}


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_rebalance_callbacks(backend: Backend, assignor: str) -> None:
    topic, group = backend.topic(PARTITIONS), unique("callbacks")
    threads: set[int] = set()
    events_a: list[tuple[str, set[int]]] = []
    events_b: list[tuple[str, set[int]]] = []
    settings = {"group_id": group, "partition_assignment_strategy": assignor}
    first = backend.consumer(**settings)
    first.subscribe([topic], **callbacks_into(events_a, threads))
    poll_until([first], [[]], lambda: len(first.assignment()) == PARTITIONS, "one member")
    assert events_a == [("assign", set(range(PARTITIONS)))]
    second = backend.consumer(**settings)
    second.subscribe([topic], **callbacks_into(events_b, threads))
    poll_until(
        [first, second], [[], []], lambda: split_exactly([first, second], PARTITIONS), "a 3/3 split"
    )
    kept, moved = assigned_partitions([first, second])
    if assignor == "range":  # eager: everything is revoked, then the new assignment comes
        assert events_a == [
            ("assign", set(range(PARTITIONS))),
            ("revoke", set(range(PARTITIONS))),
            ("assign", kept),
        ]
    else:  # cooperative: only the partitions that move are revoked
        assert events_a == [("assign", set(range(PARTITIONS))), ("revoke", moved)]
    assert events_b == [("assign", moved)]
    second.close()
    assert events_b == [("assign", moved), ("revoke", moved)], "close revokes (commit point)"
    poll_until([first], [[]], lambda: len(first.assignment()) == PARTITIONS, "the rest return")
    if assignor == "range":
        assert events_a[3:] == [("revoke", kept), ("assign", set(range(PARTITIONS)))]
    else:
        assert events_a[2:] == [("assign", moved)]
    assert threads == {threading.get_ident()}, "callbacks must run inside poll/close"
    first.close()


def test_commit_sync_async_committed_and_resume(backend: Backend) -> None:
    topic, group = backend.topic(2), unique("commit")
    with backend.producer() as producer:
        for p in (0, 1):
            produce(producer, topic, [b"r"] * 10, partition=p)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with backend.consumer(group_id=group, enable_auto_commit=False) as consumer:
        consumer.subscribe([topic])
        assert consumer.committed([tp0, tp1], timeout=SETTLE) == {tp0: None, tp1: None}
        consume(consumer, 20)
        consumer.commit({tp0: 4})
        assert consumer.committed([tp0, tp1], timeout=SETTLE) == {tp0: 4, tp1: None}
        consumer.commit()
        assert consumer.committed([tp0, tp1], timeout=SETTLE) == {tp0: 10, tp1: 10}
        future = consumer.commit({tp0: 6, tp1: 7}, asynchronous=True)
        assert future is not None and future.result(SETTLE) == {tp0: 6, tp1: 7}
        assert consumer.committed([tp0, tp1], timeout=SETTLE) == {tp0: 6, tp1: 7}
    with backend.consumer(group_id=group, enable_auto_commit=False) as resumed:
        resumed.subscribe([topic])
        records = consume(resumed, 7)
        assert sorted((r.partition, r.offset) for r in records) == [
            (0, o) for o in range(6, 10)
        ] + [(1, o) for o in range(7, 10)]
        assert resumed.poll(0.3) is None
    assert backend.admin.list_group_offsets(group) == {tp0: 6, tp1: 7}
    assert backend.admin.group_lag(group) == {tp0: 4, tp1: 3}


def test_auto_commit_on_close(backend: Backend) -> None:
    topic, group = backend.topic(), unique("auto")
    with backend.producer() as producer:
        produce(producer, topic, [f"a{i}".encode() for i in range(10)])
    tp = TopicPartition(topic, 0)
    settings = {"group_id": group, "enable_auto_commit": True, "auto_commit_interval_ms": 60_000}
    with backend.consumer(**settings) as consumer:
        consumer.subscribe([topic])
        assert [r.offset for r in consume(consumer, 4)] == [0, 1, 2, 3]
    assert backend.admin.list_group_offsets(group) == {tp: 4}
    with backend.consumer(**settings) as later:
        later.subscribe(topic)
        assert [r.value for r in consume(later, 6)] == [f"a{i}".encode() for i in range(4, 10)]


def test_subscribe_to_a_pattern(backend: Backend) -> None:
    prefix = unique("pattern")
    topics = [backend.topic(prefix=f"{prefix}-{n}") for n in ("a", "b")]
    with backend.producer() as producer:
        for topic in topics:
            produce(producer, topic, [topic.encode()])
    revoked: list[TopicPartition] = []
    with backend.consumer(group_id=unique("pattern-group")) as consumer:
        consumer.subscribe(f"^{prefix}-.*", on_revoke=lambda _, tps: revoked.extend(tps))
        records = consume(consumer, 2)
        consumer.unsubscribe()
        assert consumer.assignment() == set()
        assert sorted(revoked) == [TopicPartition(topic, 0) for topic in sorted(topics)]
    assert sorted(r.topic for r in records) == sorted(topics)
    assert all(r.value == r.topic.encode() for r in records)


def test_static_member_rejoins_without_a_rebalance(backend: Backend) -> None:
    topic, group = backend.topic(4), unique("static")
    threads: set[int] = set()
    events_b: list[tuple[str, set[int]]] = []
    b = backend.consumer(group_id=group, group_instance_id="static-b")
    b.subscribe([topic], **callbacks_into(events_b, threads))
    a = backend.consumer(group_id=group, group_instance_id="static-a")
    a.subscribe([topic])
    poll_until([a, b], [[], []], lambda: split_exactly([a, b], 4), "a 2/2 split")
    held, settled = assigned_partitions([a])[0], list(events_b)
    described = backend.admin.describe_group(group)
    assert sorted(m.group_instance_id or "" for m in described.members) == ["static-a", "static-b"]
    a.close()  # a static member's close does not leave the group: its session holds its place
    back = backend.consumer(group_id=group, group_instance_id="static-a")
    back.subscribe([topic])
    poll_until([back, b], [[], []], lambda: split_exactly([back, b], 4), "the member is back")
    assert assigned_partitions([back])[0] == held, "the static member gets its partitions back"
    for _ in range(10):  # a rebalance would surface in b's callbacks within these polls
        poll_round([back, b], [[], []])
    assert events_b == settled, "the other member saw a rebalance"
    back.close()
    b.close()


@pytest.mark.parametrize(("assignor", "sizes"), [("range", [2, 4]), ("roundrobin", [3, 3])])
def test_assignors_over_two_topics(backend: Backend, assignor: str, sizes: list[int]) -> None:
    topics, group = [backend.topic(3), backend.topic(3)], unique("two-topics")
    members = [
        backend.consumer(group_id=group, partition_assignment_strategy=assignor) for _ in range(2)
    ]
    for member in members:
        member.subscribe(topics)

    def settled() -> bool:
        held = [member.assignment() for member in members]
        return all(held) and sum(map(len, held)) == 6 and not held[0] & held[1]

    poll_until(members, [[], []], settled, "six partitions split between two members")
    held = [member.assignment() for member in members]
    assert sorted(map(len, held)) == sizes  # range: per topic, the first member gets 2 of 3
    if assignor == "range":
        for topic in topics:
            per_member = sorted(len({tp for tp in h if tp.topic == topic}) for h in held)
            assert per_member == [1, 2]
    for member in members:
        member.close()
