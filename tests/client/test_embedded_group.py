"""Embedded consumer groups: real `EmbeddedGroups` on a real data directory, real threads.

Each member is driven by a `Sim`, a thread doing what the embedded consumer does inside `poll`:
`poll_seen`, `take_events`, apply them (on_revoke may commit), `events_handled`. A shared
`Ledger` checks that no partition ever has two owners while consumers behave.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from headwater.client._embedded_group import EmbeddedGroups, GroupMember
from headwater.client._types import TopicPartition
from headwater.coordinator.group import CoordinatorConfig
from headwater.errors import ClientClosedError, ClientError
from headwater.log.manager import LogManager

GROUP = "g"
WAIT_S = 20.0
FAST: dict[str, Any] = {
    "session.timeout.ms": 2_000,
    "heartbeat.interval.ms": 100,
    "max.poll.interval.ms": 5_000,
}
COORDINATOR = CoordinatorConfig(session_timeout_ms_min=500)
ASSIGNOR_NAMES = ["range", "roundrobin", "cooperative-sticky"]

TP = TopicPartition


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def manager(data_dir: Path) -> Iterator[LogManager]:
    log_manager = LogManager(str(data_dir))
    yield log_manager
    log_manager.close()


@pytest.fixture
def groups(manager: LogManager) -> Iterator[EmbeddedGroups]:
    embedded = EmbeddedGroups(manager, COORDINATOR)
    yield embedded
    embedded.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Ledger:
    """Who owns each partition, as the consumers see it; `strict` records double ownership."""

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self.lock = threading.Lock()
        self.owners: dict[TopicPartition, str] = {}
        self.violations: list[str] = []

    def take(self, name: str, partitions: list[TopicPartition]) -> None:
        with self.lock:
            for partition in partitions:
                other = self.owners.get(partition)
                if self.strict and other not in (None, name):
                    self.violations.append(f"{name} got {partition} still owned by {other}")
                self.owners[partition] = name

    def drop(self, name: str, partitions: list[TopicPartition]) -> None:
        with self.lock:
            for partition in partitions:
                if self.owners.get(partition) == name:
                    del self.owners[partition]


class Sim:
    """A consumer's poll loop for one member, in its own thread."""

    def __init__(
        self,
        name: str,
        member: GroupMember,
        ledger: Ledger,
        *,
        eager: bool,
        on_revoke: Callable[[Sim, list[TopicPartition]], None] | None = None,
    ) -> None:
        self.name = name
        self.member = member
        self.ledger = ledger
        self.eager = eager
        self.on_revoke = on_revoke
        self.lock = threading.Lock()
        self.history: list[tuple[str, list[TopicPartition]]] = []
        self.owned: set[TopicPartition] = set()
        self.problems: list[str] = []
        self.error: ClientError | None = None
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"sim-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            if not self.paused.is_set():
                try:
                    self.member.poll_seen()
                except ClientError as error:  # fatal, as from Kafka's poll
                    self.error = error
                events = self.member.take_events()
                for kind, partitions in events:
                    self._apply(kind, partitions)
                self.member.events_handled()
            time.sleep(0.01)

    def _apply(self, kind: str, partitions: list[TopicPartition]) -> None:
        with self.lock:
            self.history.append((kind, partitions))
            if kind == "assign":
                if set(partitions) & self.owned:
                    self.problems.append(f"assigned {partitions} already owned")
                self.owned |= set(partitions)
                self.ledger.take(self.name, partitions)
                return
            if not set(partitions) <= self.owned:
                self.problems.append(f"{kind} of {partitions} not owned ({self.owned})")
            if kind == "revoke" and self.eager and set(partitions) != self.owned:
                self.problems.append(f"eager revoke of {partitions}, not all of {self.owned}")
        if kind == "revoke" and self.on_revoke is not None:
            self.on_revoke(self, partitions)  # still owned: a commit here must work
        with self.lock:
            self.owned -= set(partitions)
            self.ledger.drop(self.name, partitions)

    def snapshot(self) -> set[TopicPartition]:
        with self.lock:
            return set(self.owned)

    def events(self) -> list[tuple[str, list[TopicPartition]]]:
        with self.lock:
            return list(self.history)

    def close(self) -> None:
        """As a consumer closes: stop polling, give everything up, leave."""
        self.stopped.set()
        self.thread.join()
        with self.lock:
            self.ledger.drop(self.name, sorted(self.owned))
            self.owned.clear()
        self.member.close()


class Group:
    """Members of one group on one `EmbeddedGroups`, with their sims."""

    def __init__(self, groups: EmbeddedGroups, manager: LogManager, *, strict: bool = True) -> None:
        self.groups = groups
        self.manager = manager
        self.ledger = Ledger(strict=strict)
        self.sims: list[Sim] = []

    def list_topics(self) -> list[str]:
        return [info.name for info in self.manager.topics()]

    def partition_count(self, topic: str) -> int:
        return self.manager.topic(topic).partition_count

    def add(
        self,
        name: str,
        strategy: str,
        topics: list[str] | None = None,
        *,
        pattern: str | None = None,
        on_revoke: Callable[[Sim, list[TopicPartition]], None] | None = None,
        **settings: Any,
    ) -> Sim:
        config = {**FAST, "partition.assignment.strategy": (strategy,)}
        config.update({key.replace("_", "."): value for key, value in settings.items()})
        member = self.groups.member(GROUP, config, self.list_topics, self.partition_count)
        member.subscribe(topics, re.compile(pattern) if pattern is not None else None)
        sim = Sim(
            name, member, self.ledger, eager=strategy != "cooperative-sticky", on_revoke=on_revoke
        )
        self.sims.append(sim)
        return sim

    def remove(self, sim: Sim) -> None:
        sim.close()
        self.sims.remove(sim)

    def settled(self, everything: set[TopicPartition]) -> bool:
        """Stable, every live member in it, and their partitions split `everything` exactly."""
        described = self.groups.describe_group(GROUP)
        if described.state != "Stable" or len(described.members) != len(self.sims):
            return False
        assigned = {m.member_id: set(m.assignment) for m in described.members}
        owned = []
        for sim in self.sims:
            mine = sim.snapshot()
            if assigned.get(sim.member.member_id) != mine:
                return False
            owned.append(mine)
        return sum(map(len, owned)) == len(everything) and set().union(*owned) == everything

    def wait_settled(self, everything: set[TopicPartition]) -> None:
        wait_for(lambda: self.settled(everything), f"{len(self.sims)} members to settle")

    def check(self) -> None:
        assert self.ledger.violations == []
        for sim in self.sims:
            assert sim.problems == [], sim.name

    def close(self) -> None:
        for sim in list(self.sims):
            self.remove(sim)


@pytest.fixture
def group(groups: EmbeddedGroups, manager: LogManager) -> Iterator[Group]:
    made = Group(groups, manager)
    yield made
    made.close()


def partitions(manager: LogManager, *topics: str) -> set[TopicPartition]:
    return {TP(t, p) for t in topics for p in range(manager.topic(t).partition_count)}


# --- assignment and movement ----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ASSIGNOR_NAMES)
def test_three_members_split_partitions_exactly_once(
    manager: LogManager, group: Group, groups: EmbeddedGroups, strategy: str
) -> None:
    manager.create_topic("a", 4)
    manager.create_topic("b", 3)
    everything = partitions(manager, "a", "b")
    for name in ("m1", "m2", "m3"):
        group.add(name, strategy, ["a", "b"])
    group.wait_settled(everything)
    group.check()
    described = groups.describe_group(GROUP)
    assert (described.protocol_type, described.protocol) == ("consumer", strategy)
    assert sorted(len(sim.snapshot()) for sim in group.sims) == [2, 2, 3]
    listing = groups.list_groups()
    assert [(g.group_id, g.state, g.protocol_type) for g in listing] == [
        (GROUP, "Stable", "consumer")
    ]


@pytest.mark.parametrize("strategy", ASSIGNOR_NAMES)
def test_a_member_that_closes_gives_its_partitions_to_the_others(
    manager: LogManager, group: Group, strategy: str
) -> None:
    manager.create_topic("a", 6)
    everything = partitions(manager, "a")
    for name in ("m1", "m2", "m3"):
        group.add(name, strategy, ["a"])
    group.wait_settled(everything)
    leaving = group.sims[1]
    given_up = leaving.snapshot()
    assert given_up
    group.remove(leaving)
    group.wait_settled(everything)
    group.check()
    assert given_up <= set().union(*(sim.snapshot() for sim in group.sims))


def test_a_member_that_stops_polling_leaves_and_sees_lost(
    manager: LogManager, groups: EmbeddedGroups
) -> None:
    manager.create_topic("a", 6)
    everything = partitions(manager, "a")
    group = Group(groups, manager, strict=False)  # the stuck one owns until it polls again
    try:
        group.add("m1", "range", ["a"])
        group.add("m2", "range", ["a"])
        stuck = group.add("m3", "range", ["a"], max_poll_interval_ms=1_500)
        group.wait_settled(everything)
        held = stuck.snapshot()
        assert held
        stuck.paused.set()  # no more polls
        others = group.sims[:2]
        wait_for(
            lambda: (
                set().union(*(sim.snapshot() for sim in others)) == everything
                and len(groups.describe_group(GROUP).members) == 2
            ),
            "the others to take over",
        )
        assert stuck.events()[-1][0] == "assign"  # nothing reached it while it was stuck
        stuck.paused.clear()
        group.wait_settled(everything)  # it rejoined
        events = stuck.events()
        assert [kind for kind, _ in events] == ["assign", "lost", "assign"]  # never a revoke
        assert events[1][1] == sorted(held)
        assert stuck.snapshot()
    finally:
        group.close()


def test_static_member_restart_keeps_its_partitions_without_rebalance(
    manager: LogManager, group: Group, groups: EmbeddedGroups
) -> None:
    manager.create_topic("a", 6)
    everything = partitions(manager, "a")
    group.add("m1", "range", ["a"])
    static = group.add("s1", "range", ["a"], group_instance_id="instance-1")
    group.add("m3", "range", ["a"])
    group.wait_settled(everything)
    held = static.snapshot()
    generation = static.member.generation_id
    others = [sim for sim in group.sims if sim is not static]
    seen = {sim.name: len(sim.events()) for sim in others}

    group.remove(static)  # a static member does not leave: the group stays as it is
    assert groups.describe_group(GROUP).state == "Stable"
    assert len(groups.describe_group(GROUP).members) == 3
    back = group.add("s1-again", "range", ["a"], group_instance_id="instance-1")
    wait_for(lambda: back.snapshot() == held, "the static member's partitions")
    group.wait_settled(everything)
    group.check()
    assert back.events() == [("assign", sorted(held))]
    assert back.member.generation_id == generation
    for sim in others:  # nobody else noticed
        assert len(sim.events()) == seen[sim.name], sim.name
        assert sim.member.generation_id == generation


def test_cooperative_join_revokes_only_what_moves(manager: LogManager, group: Group) -> None:
    manager.create_topic("c", 6)
    everything = partitions(manager, "c")
    first = group.add("m1", "cooperative-sticky", ["c"])
    group.wait_settled(everything)
    second = group.add("m2", "cooperative-sticky", ["c"])
    group.wait_settled(everything)
    before = {sim.name: sim.snapshot() for sim in (first, second)}
    marks = {sim.name: len(sim.events()) for sim in (first, second)}
    third = group.add("m3", "cooperative-sticky", ["c"])
    group.wait_settled(everything)
    group.check()

    moved: set[TopicPartition] = set()
    for sim in (first, second):
        kept = sim.snapshot()
        assert kept <= before[sim.name]  # survivors gained nothing, kept the rest
        for kind, tps in sim.events()[marks[sim.name] :]:
            assert kind in ("revoke", "assign")
            if kind == "revoke":
                assert not set(tps) & kept, f"{sim.name} revoked what it keeps"
                moved |= set(tps)
            else:
                assert tps == []
    assert moved == third.snapshot()
    assert len(moved) == 2
    # Over the whole run, nobody ever got back a partition it had revoked.
    for sim in group.sims:
        revoked: set[TopicPartition] = set()
        for kind, tps in sim.events():
            if kind == "revoke":
                revoked |= set(tps)
            elif kind == "assign":
                assert not set(tps) & revoked, sim.name


def test_pattern_subscription_and_partition_growth(manager: LogManager, group: Group) -> None:
    manager.create_topic("p-one", 2)
    manager.create_topic("other", 2)
    group.add("m1", "range", pattern=r"^p-")
    group.add("m2", "range", pattern=r"^p-")
    group.wait_settled(partitions(manager, "p-one"))
    manager.create_topic("p-two", 2)  # members see it at their next metadata refresh
    group.wait_settled(partitions(manager, "p-one", "p-two"))
    manager.create_partitions("p-one", 4)  # the leader notices the count change
    group.wait_settled(partitions(manager, "p-one", "p-two"))
    group.check()


def test_unsubscribe_revokes_then_leaves(manager: LogManager, group: Group) -> None:
    manager.create_topic("a", 4)
    everything = partitions(manager, "a")
    stays = group.add("m1", "cooperative-sticky", ["a"])
    goes = group.add("m2", "cooperative-sticky", ["a"])
    group.wait_settled(everything)
    held = goes.snapshot()
    goes.member.subscribe(None, None)
    wait_for(lambda: stays.snapshot() == everything, "the other member to take everything")
    assert goes.events()[-1] == ("revoke", sorted(held))
    assert goes.snapshot() == set()
    assert len(group.groups.describe_group(GROUP).members) == 1
    goes.member.subscribe(["a"], None)  # and back
    group.wait_settled(everything)
    group.check()


def test_a_fenced_static_member_fails_for_good(manager: LogManager, group: Group) -> None:
    manager.create_topic("a", 2)
    everything = partitions(manager, "a")
    old = group.add("old", "range", ["a"], group_instance_id="same")
    group.wait_settled(everything)
    new = group.add("new", "range", ["a"], group_instance_id="same")  # a second process
    wait_for(lambda: old.error is not None, "the old instance to be fenced")
    assert old.error is not None and old.error.error_code == 82  # FENCED_INSTANCE_ID
    wait_for(lambda: new.snapshot() == everything, "the new instance to take over")
    assert old.events()[-1] == ("lost", sorted(everything))
    with pytest.raises(ClientError) as caught:
        old.member.commit({TP("a", 0): 1})
    assert caught.value.error_code == 82
    group.remove(old)


def test_an_invalid_session_timeout_is_raised_from_poll(manager: LogManager, group: Group) -> None:
    manager.create_topic("a", 1)
    sim = group.add("m1", "range", ["a"], session_timeout_ms=100)  # below the minimum
    wait_for(lambda: sim.error is not None, "the join to fail")
    assert sim.error is not None and sim.error.error_code == 26  # INVALID_SESSION_TIMEOUT
    assert sim.events() == []


# --- offsets --------------------------------------------------------------------------------


def test_commits_in_on_revoke_use_the_old_generation(
    manager: LogManager, group: Group, groups: EmbeddedGroups
) -> None:
    manager.create_topic("a", 4)
    everything = partitions(manager, "a")
    failures: list[BaseException] = []
    commits: list[int] = []

    def commit_on_revoke(sim: Sim, tps: list[TopicPartition]) -> None:
        try:
            sim.member.commit({tp: 100 + len(commits) for tp in tps})
            commits.append(len(tps))
        except ClientError as error:
            failures.append(error)

    group.add("m1", "range", ["a"], on_revoke=commit_on_revoke)
    group.wait_settled(everything)
    group.add("m2", "range", ["a"], on_revoke=commit_on_revoke)
    group.wait_settled(everything)
    assert failures == []
    assert commits == [4]  # m1 revoked everything (eager) and committed before rejoining
    assert groups.committed(GROUP, sorted(everything)) == dict.fromkeys(everything, 100)


def test_commit_with_an_old_generation_fails(
    manager: LogManager, group: Group, groups: EmbeddedGroups
) -> None:
    manager.create_topic("a", 4)
    everything = partitions(manager, "a")
    one = group.add("m1", "range", ["a"])
    group.add("m2", "range", ["a"])
    group.wait_settled(everything)
    mine = sorted(one.snapshot())[0]
    one.member.commit({mine: 5})
    old_generation, member_id = one.member.generation_id, one.member.member_id
    group.add("m3", "range", ["a"])
    group.wait_settled(everything)
    assert one.member.generation_id > old_generation
    # What the member sends when its generation is stale (a zombie that missed a rebalance).
    with pytest.raises(ClientError) as caught:
        groups._commit(GROUP, old_generation, member_id, None, {mine: 6})
    assert caught.value.error_code == 22  # ILLEGAL_GENERATION
    with pytest.raises(ClientError) as caught:
        groups._commit(GROUP, one.member.generation_id, "nobody", None, {mine: 6})
    assert caught.value.error_code == 25  # UNKNOWN_MEMBER_ID
    with pytest.raises(ClientError) as caught:
        one.member.commit({TP("a", 99): 1})
    assert caught.value.error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert groups.committed(GROUP, [mine]) == {mine: 5}
    one.member.commit({mine: 7})
    assert groups.committed(GROUP, [mine]) == {mine: 7}


def test_admin_operations_and_their_errors(
    manager: LogManager, group: Group, groups: EmbeddedGroups
) -> None:
    manager.create_topic("a", 2)
    everything = partitions(manager, "a")
    described = groups.describe_group("nobody")
    assert (described.state, described.members) == ("Dead", [])
    sim = group.add("m1", "roundrobin", ["a"], client_id="reader")
    group.wait_settled(everything)
    (member,) = groups.describe_group(GROUP).members
    assert (member.client_id, member.assignment) == ("reader", sorted(everything))

    with pytest.raises(ClientError) as caught:
        groups.alter_offsets(GROUP, {TP("a", 0): 1})
    assert caught.value.error_code == 25  # members: Kafka's UNKNOWN_MEMBER_ID
    with pytest.raises(ClientError) as caught:
        groups.commit_offsets(GROUP, {TP("a", 0): 1})
    assert caught.value.error_code == 25
    with pytest.raises(ClientError) as caught:
        groups.delete_groups([GROUP])
    assert caught.value.error_code == 68  # NON_EMPTY_GROUP
    with pytest.raises(ClientError) as caught:
        groups.delete_groups(["nobody"])
    assert caught.value.error_code == 69  # GROUP_ID_NOT_FOUND

    group.remove(sim)
    wait_for(lambda: groups.describe_group(GROUP).state == "Empty", "the group to empty")
    groups.alter_offsets(GROUP, {TP("a", 0): 3, TP("a", 1): 4})
    assert groups.list_offsets(GROUP) == {TP("a", 0): 3, TP("a", 1): 4}
    groups.delete_groups([GROUP])
    assert groups.list_groups() == []
    assert groups.committed(GROUP, [TP("a", 0)]) == {TP("a", 0): None}


def test_offsets_survive_reopening_the_data_directory(data_dir: Path) -> None:
    manager = LogManager(str(data_dir))
    manager.create_topic("a", 3)
    groups = EmbeddedGroups(manager, COORDINATOR)
    group = Group(groups, manager)
    sim = group.add("m1", "range", ["a"])
    group.wait_settled(partitions(manager, "a"))
    sim.member.commit({TP("a", 0): 10, TP("a", 1): 11})
    groups.commit_offsets("simple", {TP("a", 2): 12})
    group.close()
    groups.close()
    manager.close()

    manager = LogManager(str(data_dir))
    groups = EmbeddedGroups(manager, COORDINATOR)
    try:
        assert groups.committed(GROUP, [TP("a", 0), TP("a", 1), TP("a", 2)]) == {
            TP("a", 0): 10,
            TP("a", 1): 11,
            TP("a", 2): None,
        }
        assert groups.list_offsets("simple") == {TP("a", 2): 12}
        assert {(g.group_id, g.state) for g in groups.list_groups()} == {
            (GROUP, "Empty"),
            ("simple", "Empty"),
        }
    finally:
        groups.close()
        manager.close()


def test_closed_objects_refuse_work(manager: LogManager, groups: EmbeddedGroups) -> None:
    manager.create_topic("a", 1)
    member = groups.member(GROUP, dict(FAST), list, lambda topic: 1)
    member.close()
    member.close()
    with pytest.raises(ClientClosedError):
        member.subscribe(["a"], None)
    with pytest.raises(ClientClosedError):
        member.commit({TP("a", 0): 1})
    groups.close()
    groups.close()
    with pytest.raises(ClientClosedError):
        groups.list_groups()
