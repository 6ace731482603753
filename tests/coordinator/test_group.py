"""The classic group protocol state machine, driven by hand with a fake clock."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest

from headwater.coordinator.group import (
    FENCED_INSTANCE_ID,
    GROUP_ID_NOT_FOUND,
    GROUP_MAX_SIZE_REACHED,
    GROUP_SUBSCRIBED_TO_TOPIC,
    ILLEGAL_GENERATION,
    INCONSISTENT_GROUP_PROTOCOL,
    INVALID_SESSION_TIMEOUT,
    MEMBER_ID_REQUIRED,
    NON_EMPTY_GROUP,
    NONE,
    OFFSET_METADATA_TOO_LARGE,
    REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID,
    Completion,
    CoordinatorConfig,
    GroupCoordinator,
    GroupState,
    JoinResult,
    SyncResult,
    offset_key,
)

SESSION = 10_000
REBALANCE = 30_000
GROUP = "g"


class Harness:
    """A coordinator, a clock, and the answers delivered so far by token."""

    def __init__(self, **config: Any) -> None:
        self.now = 1_000_000
        self.coordinator = GroupCoordinator(CoordinatorConfig(**config))
        self.answers: dict[int, JoinResult | SyncResult] = {}
        self._tokens = itertools.count(1)

    def _take(self, completions: list[Completion]) -> None:
        for token, result in completions:
            assert token not in self.answers, f"token {token} answered twice"
            self.answers[token] = result

    def join(
        self,
        member_id: str = "",
        *,
        instance: str | None = None,
        protocols: list[tuple[str, bytes]] | None = None,
        known_required: bool = True,
        session: int = SESSION,
    ) -> int:
        token = next(self._tokens)
        self._take(
            self.coordinator.join(
                token,
                self.now,
                group_id=GROUP,
                member_id=member_id,
                group_instance_id=instance,
                client_id="client",
                client_host="",
                session_timeout_ms=session,
                rebalance_timeout_ms=REBALANCE,
                protocol_type="consumer",
                protocols=protocols or [("range", b"m")],
                require_known_member_id=known_required,
            )
        )
        return token

    def join_new(self, **kwargs: Any) -> int:
        """A v4+ first join: MEMBER_ID_REQUIRED, then the join with the given id."""
        first = self.join(**kwargs)
        result = self.join_result(first)
        assert result.error_code == MEMBER_ID_REQUIRED
        return self.join(result.member_id, **kwargs)

    def join_result(self, token: int) -> JoinResult:
        result = self.answers[token]
        assert isinstance(result, JoinResult)
        return result

    def sync(
        self,
        member_id: str,
        generation: int,
        assignments: dict[str, bytes] | None = None,
        instance: str | None = None,
    ) -> int:
        token = next(self._tokens)
        self._take(
            self.coordinator.sync(
                token,
                self.now,
                group_id=GROUP,
                generation_id=generation,
                member_id=member_id,
                group_instance_id=instance,
                protocol_type="consumer",
                protocol_name=None,
                assignments=list((assignments or {}).items()),
            )
        )
        return token

    def sync_result(self, token: int) -> SyncResult:
        result = self.answers[token]
        assert isinstance(result, SyncResult)
        return result

    def heartbeat(self, member_id: str, generation: int, instance: str | None = None) -> int:
        return self.coordinator.heartbeat(
            self.now,
            group_id=GROUP,
            generation_id=generation,
            member_id=member_id,
            group_instance_id=instance,
        )

    def leave(self, *members: tuple[str, str | None]) -> list[int]:
        errors, completions = self.coordinator.leave(self.now, group_id=GROUP, members=members)
        self._take(completions)
        return errors

    def tick(self, advance_ms: int) -> None:
        self.now += advance_ms
        self._take(self.coordinator.tick(self.now))

    def state(self) -> GroupState:
        return self.coordinator.groups[GROUP].state

    def commit(self, member_id: str, generation: int, offset: int, **kwargs: Any) -> int:
        errors = self.coordinator.commit_offsets(
            self.now,
            group_id=GROUP,
            generation_id=generation,
            member_id=member_id,
            group_instance_id=kwargs.get("instance"),
            offsets=[("t", 0, offset, -1, kwargs.get("metadata", "meta"))],
        )
        return errors[0]


def stable_pair(h: Harness) -> tuple[str, str, int]:
    """Two members in a Stable generation: (leader, follower, generation)."""
    a = h.join_new()
    leader = h.join_result(a).member_id
    h.sync(leader, h.join_result(a).generation_id, {leader: b"all"})
    b = h.join_new()
    assert b not in h.answers  # waits for the leader to rejoin
    assert h.heartbeat(leader, 1) == REBALANCE_IN_PROGRESS
    a2 = h.join(leader)
    follower = h.join_result(b).member_id
    generation = h.join_result(a2).generation_id
    assert generation == 2
    s_follower = h.sync(follower, generation)
    assert s_follower not in h.answers
    h.sync(leader, generation, {leader: b"L", follower: b"F"})
    assert h.sync_result(s_follower).assignment == b"F"
    assert h.state() is GroupState.STABLE
    return leader, follower, generation


# --- JoinGroup, SyncGroup ----------------------------------------------------------------------


def test_first_join_needs_a_member_id_then_leads_generation_one() -> None:
    h = Harness()
    first = h.join_result(h.join())
    assert first.error_code == MEMBER_ID_REQUIRED
    assert first.member_id.startswith("client-")
    result = h.join_result(h.join(first.member_id))
    assert result.error_code == NONE
    assert (result.generation_id, result.leader, result.member_id) == (
        1,
        first.member_id,
        first.member_id,
    )
    assert [m.member_id for m in result.members] == [first.member_id]
    assert result.protocol_name == "range"
    assert h.state() is GroupState.COMPLETING_REBALANCE
    sync = h.sync_result(h.sync(first.member_id, 1, {first.member_id: b"x"}))
    assert (sync.error_code, sync.assignment, sync.protocol_name) == (NONE, b"x", "range")
    assert h.state() is GroupState.STABLE


def test_old_clients_join_without_member_id_round_trip() -> None:
    h = Harness()
    result = h.join_result(h.join(known_required=False))
    assert result.error_code == NONE and result.generation_id == 1


def test_second_member_triggers_a_rebalance_and_followers_get_assignments() -> None:
    h = Harness()
    leader, follower, generation = stable_pair(h)
    assert h.heartbeat(leader, generation) == NONE
    assert h.heartbeat(follower, generation) == NONE
    assert h.heartbeat(follower, generation - 1) == ILLEGAL_GENERATION
    assert h.heartbeat("nobody", generation) == UNKNOWN_MEMBER_ID


def test_sync_errors() -> None:
    h = Harness()
    _, follower, generation = stable_pair(h)
    assert h.sync_result(h.sync("nobody", generation)).error_code == UNKNOWN_MEMBER_ID
    assert h.sync_result(h.sync(follower, generation + 5)).error_code == ILLEGAL_GENERATION
    # Stable: the current assignment again.
    assert h.sync_result(h.sync(follower, generation)).assignment == b"F"
    h.join_new()  # a third member: rebalance pending
    assert h.sync_result(h.sync(follower, generation)).error_code == REBALANCE_IN_PROGRESS


def test_protocol_selection_by_votes() -> None:
    h = Harness()
    a = h.join_new(protocols=[("range", b"ra"), ("sticky", b"sa")])
    leader = h.join_result(a).member_id
    h.sync(leader, 1)
    b = h.join_new(protocols=[("sticky", b"sb"), ("range", b"rb")])
    c = h.join_new(protocols=[("sticky", b"sc")])
    rejoin = h.join(leader, protocols=[("range", b"ra"), ("sticky", b"sa")])
    answers = [h.join_result(t) for t in (b, c, rejoin)]
    assert {r.protocol_name for r in answers} == {"sticky"}
    leader_answer = h.join_result(rejoin)
    assert {m.metadata for m in leader_answer.members} == {b"sa", b"sb", b"sc"}


def test_inconsistent_protocols_and_bad_session_timeouts_are_refused() -> None:
    h = Harness()
    a = h.join_new(protocols=[("range", b"")])
    h.sync(h.join_result(a).member_id, 1)
    assert (
        h.join_result(h.join(protocols=[("other", b"")])).error_code == INCONSISTENT_GROUP_PROTOCOL
    )
    assert h.join_result(h.join(session=10)).error_code == INVALID_SESSION_TIMEOUT
    assert h.join_result(h.join("made-up")).error_code == UNKNOWN_MEMBER_ID


def test_group_size_is_bounded() -> None:
    h = Harness(group_members_max=2)
    h.join_new()
    h.join()  # a pending member counts too
    assert h.join_result(h.join()).error_code == GROUP_MAX_SIZE_REACHED


def test_rebalance_timeout_drops_members_that_did_not_rejoin() -> None:
    h = Harness()
    leader, follower, _ = stable_pair(h)
    c = h.join_new()
    h.join(leader)
    # The follower neither heartbeats nor rejoins; its session runs out first and the
    # rebalance completes without it.
    h.tick(SESSION + 1)
    result = h.join_result(c)
    assert result.error_code == NONE and result.generation_id == 3
    group = h.coordinator.groups[GROUP]
    assert follower not in group.members and set(group.members) == {leader, result.member_id}


def test_rebalance_completes_at_its_deadline_even_with_live_laggards() -> None:
    h = Harness()
    leader, follower, _ = stable_pair(h)
    c = h.join_new()
    h.join(leader)
    for _ in range(REBALANCE // 1000):
        h.tick(1000)
        h.heartbeat(follower, 2)  # alive, but never rejoins
    h.tick(1000)
    assert h.join_result(c).generation_id == 3
    assert follower not in h.coordinator.groups[GROUP].members


def test_initial_rebalance_delay_gathers_members() -> None:
    h = Harness(initial_rebalance_delay_ms=3000)
    a = h.join_new()
    assert a not in h.answers
    h.tick(1000)
    b = h.join_new()
    h.tick(2500)
    assert a not in h.answers  # extended by the second member
    h.tick(600)
    assert h.join_result(a).generation_id == h.join_result(b).generation_id == 1


# --- sessions, leaving ---------------------------------------------------------------------------


def test_session_expiry_removes_the_member_and_rebalances() -> None:
    h = Harness()
    leader, follower, generation = stable_pair(h)
    h.tick(SESSION // 2)
    assert h.heartbeat(leader, generation) == NONE
    h.tick(SESSION // 2 + 1)  # the follower is gone, the leader is not
    assert h.state() is GroupState.PREPARING_REBALANCE
    assert h.heartbeat(follower, generation) == UNKNOWN_MEMBER_ID
    assert h.heartbeat(leader, generation) == REBALANCE_IN_PROGRESS
    rejoin = h.join_result(h.join(leader))
    assert rejoin.generation_id == generation + 1 and [m.member_id for m in rejoin.members] == [
        leader
    ]


def test_everyone_expiring_empties_the_group() -> None:
    h = Harness()
    stable_pair(h)
    h.tick(SESSION + 1)
    assert h.state() is GroupState.EMPTY


def test_pending_member_ids_expire() -> None:
    h = Harness()
    h.join()
    h.tick(SESSION + 1)
    assert not h.coordinator.groups[GROUP].pending_members


def test_leave_rebalances_and_batch_leave_reports_each_member() -> None:
    h = Harness()
    leader, follower, generation = stable_pair(h)
    assert h.leave((follower, None), ("nobody", None)) == [NONE, UNKNOWN_MEMBER_ID]
    assert h.state() is GroupState.PREPARING_REBALANCE
    assert h.join_result(h.join(leader)).generation_id == generation + 1
    assert h.leave((leader, None)) == [NONE]
    assert h.state() is GroupState.EMPTY  # nobody left to wait for


def test_leave_during_completing_rebalance_fails_waiting_syncs() -> None:
    h = Harness()
    a = h.join_new()
    leader = h.join_result(a).member_id
    h.sync(leader, 1)
    b = h.join_new()
    h.join(leader)
    follower = h.join_result(b).member_id
    waiting = h.sync(follower, 2)
    h.leave((leader, None))
    assert h.sync_result(waiting).error_code == REBALANCE_IN_PROGRESS


# --- static membership ---------------------------------------------------------------------------


def test_static_member_rejoin_replaces_without_a_rebalance() -> None:
    h = Harness()
    a = h.join(instance="i-1")  # static members get their id at once
    first = h.join_result(a)
    assert first.error_code == NONE
    h.sync(first.member_id, 1, {first.member_id: b"mine"})
    rejoin = h.join_result(h.join(instance="i-1"))
    assert rejoin.error_code == NONE and rejoin.generation_id == 1
    assert rejoin.member_id != first.member_id and rejoin.leader == rejoin.member_id
    assert rejoin.skip_assignment
    assert h.state() is GroupState.STABLE
    assert h.sync_result(h.sync(rejoin.member_id, 1, instance="i-1")).assignment == b"mine"
    # The old incarnation is fenced.
    assert h.heartbeat(first.member_id, 1, instance="i-1") == FENCED_INSTANCE_ID
    assert h.join_result(h.join(first.member_id, instance="i-1")).error_code == FENCED_INSTANCE_ID


def test_static_member_with_new_subscription_bytes_keeps_its_place() -> None:
    """Kafka rebalances a static rejoin only if the group's protocol would change: a restarted
    client whose subscription bytes differ (it now reports owned partitions) does not."""
    h = Harness()
    first = h.join_result(h.join(instance="i-1"))
    h.sync(first.member_id, 1)
    t = h.join(instance="i-1", protocols=[("range", b"changed")])
    assert h.join_result(t).generation_id == 1
    assert h.join_result(t).skip_assignment
    assert h.state() is GroupState.STABLE


def test_static_member_whose_protocols_change_the_choice_rebalances() -> None:
    h = Harness()
    both = [("range", b"m"), ("roundrobin", b"m")]
    first = h.join_result(h.join(instance="i-1", protocols=both))
    assert first.protocol_name == "range"
    h.sync(first.member_id, 1)
    t = h.join(instance="i-1", protocols=list(reversed(both)))
    assert h.join_result(t).generation_id == 2
    assert h.join_result(t).protocol_name == "roundrobin"


def test_static_leave_by_instance_id() -> None:
    h = Harness()
    first = h.join_result(h.join(instance="i-1"))
    h.sync(first.member_id, 1)
    assert h.leave(("other-id", "i-1")) == [FENCED_INSTANCE_ID]
    assert h.leave(("", "i-1")) == [NONE]
    h.tick(0)
    assert h.state() is GroupState.EMPTY


# --- offsets --------------------------------------------------------------------------------------


def test_commit_rules() -> None:
    h = Harness()
    # A group nobody joined: simple commits only.
    assert h.commit("", 3, 5) == ILLEGAL_GENERATION
    assert h.commit("", -1, 5) == NONE
    leader, follower, generation = stable_pair(h)
    assert h.commit("", -1, 6) == UNKNOWN_MEMBER_ID  # the group has members now
    assert h.commit("nobody", generation, 6) == UNKNOWN_MEMBER_ID
    assert h.commit(follower, generation - 1, 6) == ILLEGAL_GENERATION
    assert h.commit(follower, generation, 7) == NONE
    assert h.commit(follower, generation, 8, metadata="x" * 5000) == OFFSET_METADATA_TOO_LARGE
    # During PreparingRebalance the previous generation may still commit (Kafka allows it).
    c = h.join_new()
    assert h.commit(leader, generation, 9) == NONE
    h.join(leader)
    h.join(follower)
    assert h.join_result(c).generation_id == generation + 1
    assert h.commit(leader, generation + 1, 10) == 27  # CompletingRebalance
    [(topic, partition, entry)] = h.coordinator.fetch_offsets(GROUP, None)
    assert (topic, partition) == ("t", 0)
    assert entry is not None and (entry.offset, entry.metadata) == (9, "meta")
    [(_, _, missing)] = h.coordinator.fetch_offsets(GROUP, [("t", 1)])
    assert missing is None


def test_records_rebuild_offsets_and_groups() -> None:
    h = Harness()
    leader, follower, generation = stable_pair(h)
    assert h.commit(leader, generation, 42, metadata="m") == NONE
    records = h.coordinator.drain_records()
    assert records and not h.coordinator.drain_records()
    restored = GroupCoordinator()
    for key, value in records:
        restored.replay(key, value, h.now)
    group = restored.groups[GROUP]
    assert group.state is GroupState.STABLE and group.generation_id == generation
    assert set(group.members) == {leader, follower} and group.leader == leader
    assert group.members[follower].assignment == b"F"
    [(_, _, entry)] = restored.fetch_offsets(GROUP, [("t", 0)])
    assert entry is not None and entry.offset == 42
    # Members carry on heartbeating after the restore...
    assert (
        restored.heartbeat(
            h.now,
            group_id=GROUP,
            generation_id=generation,
            member_id=follower,
            group_instance_id=None,
        )
        == NONE
    )
    # ...and the ones that do not, expire.
    later = h.now + SESSION // 2
    assert restored.tick(later) == []
    assert (
        restored.heartbeat(
            later,
            group_id=GROUP,
            generation_id=generation,
            member_id=follower,
            group_instance_id=None,
        )
        == NONE
    )
    assert restored.tick(h.now + SESSION + 1) == []
    assert leader not in restored.groups[GROUP].members
    assert restored.groups[GROUP].state is GroupState.PREPARING_REBALANCE


def test_list_and_describe() -> None:
    h = Harness()
    leader, _, _ = stable_pair(h)
    assert h.coordinator.list_groups() == [(GROUP, "consumer", "Stable")]
    assert h.coordinator.list_groups(["Empty"]) == []
    summary = h.coordinator.describe(GROUP)
    assert summary.state == "Stable" and summary.protocol_name == "range"
    assert {member.member_id: a for member, _, a in summary.members}[leader] == b"L"
    assert h.coordinator.describe("unknown").state == "Dead"


@pytest.mark.parametrize("groups_max", [1])
def test_group_count_is_bounded(groups_max: int) -> None:
    h = Harness(groups_max=groups_max)
    h.join_new()
    errors = h.coordinator.commit_offsets(
        h.now,
        group_id="other",
        generation_id=-1,
        member_id="",
        group_instance_id=None,
        offsets=[("t", 0, 1, -1, None)],
    )
    assert errors == [GROUP_MAX_SIZE_REACHED]


# --- DeleteGroups, OffsetDelete -------------------------------------------------------------------


def subscription(*topics: str) -> bytes:
    """A ConsumerProtocolSubscription v0: version, topics, null user data."""
    body = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        body += struct.pack(">h", len(topic)) + topic.encode()
    return body + struct.pack(">i", -1)


def commit_simple(h: Harness, *offsets: tuple[str, int, int]) -> list[int]:
    return h.coordinator.commit_offsets(
        h.now,
        group_id=GROUP,
        generation_id=-1,
        member_id="",
        group_instance_id=None,
        offsets=[(t, p, o, -1, None) for t, p, o in offsets],
    )


def restored(records: list[tuple[bytes, bytes | None]], now: int) -> GroupCoordinator:
    coordinator = GroupCoordinator()
    for key, value in records:
        coordinator.replay(key, value, now)
    return coordinator


def test_delete_groups() -> None:
    h = Harness()
    leader, follower, generation = stable_pair(h)
    assert h.commit(leader, generation, 42) == NONE
    assert h.coordinator.delete_groups([GROUP, "unknown", ""]) == [
        NON_EMPTY_GROUP,
        GROUP_ID_NOT_FOUND,
        24,  # INVALID_GROUP_ID
    ]
    assert h.leave((leader, None), (follower, None)) == [NONE, NONE]
    assert h.state() is GroupState.EMPTY
    before = h.coordinator.drain_records()
    assert GROUP in restored(before, h.now).groups  # the empty group survives a restart
    assert h.coordinator.delete_groups([GROUP]) == [NONE]
    assert GROUP not in h.coordinator.groups
    assert h.coordinator.list_groups() == []
    assert h.coordinator.fetch_offsets(GROUP, None) == []
    assert h.coordinator.describe(GROUP).state == "Dead"
    tombstones = h.coordinator.drain_records()
    assert tombstones and all(value is None for _, value in tombstones)
    assert h.coordinator.delete_groups([GROUP]) == [GROUP_ID_NOT_FOUND]
    # A restart replays the tombstones: neither the group nor its offsets come back.
    after = restored(before + tombstones, h.now)
    assert GROUP not in after.groups
    assert after.fetch_offsets(GROUP, None) == []
    assert after.list_groups() == []


def test_delete_a_group_of_simple_commits_survives_replay() -> None:
    h = Harness()
    assert commit_simple(h, ("t", 0, 5), ("t", 1, 6)) == [NONE, NONE]
    assert h.coordinator.delete_groups([GROUP]) == [NONE]
    records = h.coordinator.drain_records()
    assert restored(records, h.now).groups == {}
    # A commit after the deletion recreates the group, on restart too.
    assert commit_simple(h, ("t", 0, 7)) == [NONE]
    again = restored(records + h.coordinator.drain_records(), h.now)
    [(_, _, entry)] = again.fetch_offsets(GROUP, [("t", 0)])
    assert entry is not None and entry.offset == 7
    assert again.fetch_offsets(GROUP, [("t", 1)])[0][2] is None


def test_offset_delete_spares_subscribed_topics() -> None:
    h = Harness()
    assert commit_simple(h, ("t", 0, 1), ("u", 0, 2), ("u", 1, 3)) == [NONE] * 3
    token = h.join_new(protocols=[("range", subscription("t"))])
    member = h.join_result(token).member_id
    h.sync(member, h.join_result(token).generation_id, {member: b"a"})
    assert h.state() is GroupState.STABLE
    assert h.coordinator.delete_offsets("unknown", [("t", 0)]) == (GROUP_ID_NOT_FOUND, [])
    records = h.coordinator.drain_records()
    assert h.coordinator.delete_offsets(GROUP, [("t", 0), ("u", 0), ("u", 9)]) == (
        NONE,
        [GROUP_SUBSCRIBED_TO_TOPIC, NONE, NONE],
    )
    remaining = {(t, p) for t, p, _ in h.coordinator.fetch_offsets(GROUP, None)}
    assert remaining == {("t", 0), ("u", 1)}
    first = h.coordinator.drain_records()
    assert first == [(offset_key(GROUP, "u", 0), None)]
    records += first
    # Once the member leaves, the topic it subscribed to can go too.
    assert h.leave((member, None)) == [NONE]
    records += h.coordinator.drain_records()
    assert h.coordinator.delete_offsets(GROUP, [("t", 0)]) == (NONE, [NONE])
    tombstones = h.coordinator.drain_records()
    assert tombstones == [(offset_key(GROUP, "t", 0), None)]
    again = restored(records + tombstones, h.now)
    assert again.groups[GROUP].state is GroupState.EMPTY
    assert {(t, p) for t, p, _ in again.fetch_offsets(GROUP, None)} == {("u", 1)}


def test_offset_delete_is_conservative_with_undecodable_subscriptions() -> None:
    h = Harness()
    assert commit_simple(h, ("t", 0, 1), ("u", 0, 2)) == [NONE, NONE]
    stable_pair(h)  # metadata b"m": not a consumer subscription
    assert h.coordinator.delete_offsets(GROUP, [("t", 0), ("u", 0)]) == (
        NONE,
        [GROUP_SUBSCRIBED_TO_TOPIC, GROUP_SUBSCRIBED_TO_TOPIC],
    )
    assert len(h.coordinator.fetch_offsets(GROUP, None)) == 2


# --- offset expiry -----------------------------------------------------------------------------

RETENTION = 60_000
CHECK = 1_000


def expiring() -> Harness:
    return Harness(offsets_retention_ms=RETENTION, offsets_retention_check_interval_ms=CHECK)


def stay_alive(h: Harness, duration_ms: int, generation: int, *members: str) -> None:
    """Let time pass with every member heartbeating within its session."""
    for _ in range(duration_ms // (SESSION // 2)):
        h.tick(SESSION // 2)
        for member in members:
            assert h.heartbeat(member, generation) == NONE


def committed_keys(h: Harness) -> set[tuple[str, int]]:
    return {(t, p) for t, p, _ in h.coordinator.fetch_offsets(GROUP, None)}


def test_an_empty_consumer_group_expires_retention_after_it_emptied() -> None:
    h = expiring()
    leader, follower, generation = stable_pair(h)
    assert h.commit(leader, generation, 42) == NONE
    stay_alive(h, RETENTION * 2, generation, leader, follower)  # nothing expires meanwhile
    assert committed_keys(h) == {("t", 0)}
    assert h.leave((leader, None), (follower, None)) == [NONE, NONE]
    assert h.state() is GroupState.EMPTY
    records = h.coordinator.drain_records()
    h.tick(RETENTION - CHECK)  # the commit is old, but the group has been empty only this long
    assert committed_keys(h) == {("t", 0)}
    h.tick(2 * CHECK)
    assert GROUP not in h.coordinator.groups
    assert h.coordinator.describe(GROUP).state == "Dead"
    tombstones = h.coordinator.drain_records()
    assert set(tombstones) == {(offset_key(GROUP, "t", 0), None), (b'["group","g"]', None)}
    assert restored(records + tombstones, h.now).groups == {}


def test_simple_commits_expire_one_by_one_from_their_commit_time() -> None:
    h = expiring()
    assert commit_simple(h, ("t", 0, 1)) == [NONE]
    h.tick(RETENTION // 2)
    assert commit_simple(h, ("t", 1, 2)) == [NONE]
    h.tick(RETENTION // 2 + CHECK)
    assert committed_keys(h) == {("t", 1)}
    assert h.coordinator.drain_records()[-1] == (offset_key(GROUP, "t", 0), None)
    h.tick(RETENTION // 2)
    assert GROUP not in h.coordinator.groups


def test_a_stable_group_keeps_subscribed_topics_and_loses_the_others() -> None:
    h = expiring()
    assert commit_simple(h, ("t", 0, 1), ("u", 0, 2)) == [NONE, NONE]
    token = h.join_new(protocols=[("range", subscription("t"))])
    member = h.join_result(token).member_id
    generation = h.join_result(token).generation_id
    h.sync(member, generation, {member: b"a"})
    stay_alive(h, RETENTION * 2, generation, member)
    assert committed_keys(h) == {("t", 0)}
    assert h.state() is GroupState.STABLE
    assert h.coordinator.expire_offsets(h.now) == 0


def test_expiry_waits_for_the_check_interval() -> None:
    h = Harness(offsets_retention_ms=10, offsets_retention_check_interval_ms=RETENTION)
    assert commit_simple(h, ("t", 0, 1)) == [NONE]
    h.tick(100)
    h.tick(100)
    assert committed_keys(h) == {("t", 0)}
    h.tick(RETENTION)
    assert committed_keys(h) == set()


# --- transactional offsets (TxnOffsetCommit) ---------------------------------------------------


def test_transactional_offsets_wait_for_their_transaction_and_survive_replay() -> None:
    h = Harness()
    leader, _, generation = stable_pair(h)
    c = h.coordinator
    # Without member info (TxnOffsetCommit v0-2, aiokafka) Kafka accepts it on a Stable group.
    assert c.commit_transactional_offsets(
        h.now,
        producer_id=7,
        group_id=GROUP,
        generation_id=-1,
        member_id="",
        group_instance_id=None,
        offsets=[("t", 0, 5, -1, None)],
    ) == [NONE]
    # With member info it is checked as a plain commit.
    assert c.commit_transactional_offsets(
        h.now,
        producer_id=8,
        group_id=GROUP,
        generation_id=generation + 1,
        member_id=leader,
        group_instance_id=None,
        offsets=[("t", 1, 9, -1, None)],
    ) == [ILLEGAL_GENERATION]
    assert c.fetch_offsets(GROUP, [("t", 0)]) == [("t", 0, None)]  # not before the commit
    assert c.has_pending_offset(GROUP, "t", 0) and not c.has_pending_offset(GROUP, "t", 1)
    records = c.drain_records()
    # A restart before the transaction ends finds the offset pending again.
    again = restored(records, h.now)
    assert again.has_pending_offset(GROUP, "t", 0)
    assert again.complete_transaction(7, True, h.now) == 1
    assert again.complete_transaction(7, True, h.now) == 0  # a marker written twice
    (entry,) = [e for _, _, e in again.fetch_offsets(GROUP, [("t", 0)])]
    assert entry is not None and entry.offset == 5
    assert not again.has_pending_offset(GROUP, "t", 0)
    after = restored(records + again.drain_records(), h.now)
    assert [e.offset for _, _, e in after.fetch_offsets(GROUP, [("t", 0)]) if e] == [5]
    assert not after.has_pending_offset(GROUP, "t", 0)
    # An abort drops them.
    assert c.complete_transaction(7, False, h.now) == 1
    assert c.fetch_offsets(GROUP, [("t", 0)]) == [("t", 0, None)]
    assert restored(records + c.drain_records(), h.now).pending_transactional == {}


def test_a_plain_commit_after_a_transactional_one_wins_as_in_kafka() -> None:
    """Kafka keeps the later of the two commits (by log position): a transaction's offset
    that a plain commit came after is not applied when the transaction commits."""
    c = GroupCoordinator()

    def txn(producer_id: int, offset: int) -> None:
        assert c.commit_transactional_offsets(
            0,
            producer_id=producer_id,
            group_id=GROUP,
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            offsets=[("t", 0, offset, -1, None)],
        ) == [NONE]

    def plain(offset: int) -> None:
        assert c.commit_offsets(
            0,
            group_id=GROUP,
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            offsets=[("t", 0, offset, -1, None)],
        ) == [NONE]

    def committed(coordinator: GroupCoordinator) -> int | None:
        ((_, _, entry),) = coordinator.fetch_offsets(GROUP, [("t", 0)])
        return None if entry is None else entry.offset

    txn(7, 5)
    plain(8)
    records = c.drain_records()
    assert c.complete_transaction(7, True, 0) == 1
    assert committed(c) == 8
    records += c.drain_records()
    assert committed(restored(records, 0)) == 8
    # The other order: the transaction's commit is the later one and wins.
    plain(3)
    txn(9, 6)
    assert c.complete_transaction(9, True, 0) == 1
    assert committed(c) == 6
    records += c.drain_records()
    assert committed(restored(records, 0)) == 6
    # Replayed while still pending, the supersession is remembered too.
    txn(10, 1)
    plain(2)
    again = restored(records + c.drain_records(), 0)
    assert again.complete_transaction(10, True, 0) == 1
    assert committed(again) == 2
