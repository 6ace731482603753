"""The assignors: Kafka's documented examples, and properties over generated groups."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.client._assignors import (
    ASSIGNORS,
    GroupAssignment,
    MemberSubscription,
    cooperative_sticky_assign,
    range_assign,
    roundrobin_assign,
    sticky_assign,
)
from headwater.client._consumer_protocol import (
    Assignment,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from headwater.client._types import TopicPartition
from headwater.protocol._primitives import MalformedFrameError


def tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


def member(
    member_id: str,
    topics: set[str] | Sequence[str],
    owned: Sequence[TopicPartition] = (),
    generation: int = 1,
    instance: str | None = None,
) -> MemberSubscription:
    return MemberSubscription(member_id, frozenset(topics), frozenset(owned), generation, instance)


def everything(counts: Mapping[str, int], topics: set[str]) -> set[TopicPartition]:
    return {tp(t, p) for t in topics for p in range(counts.get(t, 0))}


# --- Kafka's documented examples (the assignors' javadoc) -------------------------------------


def test_range_javadoc_example() -> None:
    members = [member("C0", {"t0", "t1"}), member("C1", {"t0", "t1"})]
    assert range_assign(members, {"t0": 3, "t1": 3}) == {
        "C0": [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)],
        "C1": [tp("t0", 2), tp("t1", 2)],
    }


def test_roundrobin_javadoc_examples() -> None:
    members = [member("C0", {"t0", "t1"}), member("C1", {"t0", "t1"})]
    assert roundrobin_assign(members, {"t0": 3, "t1": 3}) == {
        "C0": [tp("t0", 0), tp("t0", 2), tp("t1", 1)],
        "C1": [tp("t0", 1), tp("t1", 0), tp("t1", 2)],
    }
    uneven = [member("C0", {"t0"}), member("C1", {"t0", "t1"}), member("C2", {"t0", "t1", "t2"})]
    assert roundrobin_assign(uneven, {"t0": 1, "t1": 2, "t2": 3}) == {
        "C0": [tp("t0", 0)],
        "C1": [tp("t1", 0)],
        "C2": [tp("t1", 1), tp("t2", 0), tp("t2", 1), tp("t2", 2)],
    }


def test_static_members_sort_first_by_instance_id() -> None:
    """Kafka's MemberInfo order: static members (by group.instance.id) before dynamic ones."""
    members = [member("a", {"t"}), member("z", {"t"}, instance="i1")]
    assert range_assign(members, {"t": 2}) == {"z": [tp("t", 0)], "a": [tp("t", 1)]}


def test_sticky_javadoc_example_1() -> None:
    counts = {"t0": 2, "t1": 2, "t2": 2, "t3": 2}
    topics = set(counts)
    first = cooperative_sticky_assign([member(c, topics) for c in ("C0", "C1", "C2")], counts)
    assert first == {
        "C0": [tp("t0", 0), tp("t1", 1), tp("t3", 0)],
        "C1": [tp("t0", 1), tp("t2", 0), tp("t3", 1)],
        "C2": [tp("t1", 0), tp("t2", 1)],
    }
    # C1 leaves: the sticky assignor keeps every previous assignment.
    second = cooperative_sticky_assign(
        [member("C0", topics, first["C0"]), member("C2", topics, first["C2"])], counts
    )
    assert second == {
        "C0": sorted([tp("t0", 0), tp("t1", 1), tp("t3", 0), tp("t2", 0)]),
        "C2": sorted([tp("t1", 0), tp("t2", 1), tp("t0", 1), tp("t3", 1)]),
    }


def test_sticky_javadoc_example_2() -> None:
    counts = {"t0": 1, "t1": 2, "t2": 3}
    c0, c1, c2 = {"t0"}, {"t0", "t1"}, {"t0", "t1", "t2"}
    first = sticky_assign([member("C0", c0), member("C1", c1), member("C2", c2)], counts)
    assert first == {
        "C0": [tp("t0", 0)],
        "C1": [tp("t1", 0), tp("t1", 1)],
        "C2": [tp("t2", 0), tp("t2", 1), tp("t2", 2)],
    }
    # C0 leaves: five of six partitions stay where they were.
    second = sticky_assign([member("C1", c1, first["C1"]), member("C2", c2, first["C2"])], counts)
    assert second == {
        "C1": [tp("t0", 0), tp("t1", 0), tp("t1", 1)],
        "C2": [tp("t2", 0), tp("t2", 1), tp("t2", 2)],
    }


def test_cooperative_join_withholds_moving_partitions_for_one_round() -> None:
    counts = {"t": 6}
    a = member("A", {"t"}, [tp("t", p) for p in (0, 1, 2)])
    b = member("B", {"t"}, [tp("t", p) for p in (3, 4, 5)])
    c = member("C", {"t"})
    first = cooperative_sticky_assign([a, b, c], counts)
    assert first == {"A": [tp("t", 0), tp("t", 1)], "B": [tp("t", 3), tp("t", 4)], "C": []}
    # A and B revoked t-2 and t-5 and rejoined with what they kept: C gets them now.
    again = [member(m, {"t"}, first[m], generation=2) for m in ("A", "B", "C")]
    assert cooperative_sticky_assign(again, counts)["C"] == [tp("t", 2), tp("t", 5)]


def test_stale_generation_loses_a_claim() -> None:
    counts = {"t": 2}
    old = member("old", {"t"}, [tp("t", 0)], generation=1)
    new = member("new", {"t"}, [tp("t", 0), tp("t", 1)], generation=2)
    assert sticky_assign([old, new], counts) == {"old": [tp("t", 1)], "new": [tp("t", 0)]}


def test_topics_without_partitions_are_skipped() -> None:
    members = [member("a", {"t", "missing"}), member("b", {"t"})]
    for assignor in ASSIGNORS.values():
        result = assignor(members, {"t": 2})
        assert sorted(result["a"] + result["b"]) == [tp("t", 0), tp("t", 1)]


# --- properties -------------------------------------------------------------------------------

TOPICS = ["t0", "t1", "t2", "t3"]


@st.composite
def groups(
    draw: st.DrawFn, *, equal: bool = False
) -> tuple[list[MemberSubscription], dict[str, int]]:
    counts = {
        t: draw(st.integers(0, 8)) for t in draw(st.sets(st.sampled_from(TOPICS), min_size=1))
    }
    ids = draw(
        st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=7, unique=True)
    )
    shared = frozenset(draw(st.sets(st.sampled_from(TOPICS), min_size=1)))
    members = []
    for member_id in ids:
        topics = shared if equal else frozenset(draw(st.sets(st.sampled_from(TOPICS), min_size=1)))
        static = draw(st.booleans())
        members.append(member(member_id, topics, instance=f"i-{member_id}" if static else None))
    return members, counts


def check_exactly_once(
    members: Sequence[MemberSubscription], counts: Mapping[str, int], result: GroupAssignment
) -> None:
    assert set(result) == {m.member_id for m in members}
    by_id = {m.member_id: m for m in members}
    seen: list[TopicPartition] = []
    for member_id, partitions in result.items():
        for partition in partitions:
            assert partition.topic in by_id[member_id].topics, "assigned an unsubscribed topic"
        seen.extend(partitions)
    assert len(seen) == len(set(seen)), "a partition assigned twice"
    subscribed = set().union(*(m.topics for m in members))
    assert set(seen) == everything(counts, subscribed)


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@given(group=groups())
@settings(max_examples=150, deadline=None)
def test_every_partition_assigned_exactly_once(
    name: str, group: tuple[list[MemberSubscription], dict[str, int]]
) -> None:
    members, counts = group
    check_exactly_once(members, counts, ASSIGNORS[name](members, counts))


@pytest.mark.parametrize("name", ["roundrobin", "cooperative-sticky"])
@given(group=groups(equal=True))
@settings(max_examples=150, deadline=None)
def test_balanced_within_one_for_equal_subscriptions(
    name: str, group: tuple[list[MemberSubscription], dict[str, int]]
) -> None:
    members, counts = group
    sizes = [len(p) for p in ASSIGNORS[name](members, counts).values()]
    assert max(sizes) - min(sizes) <= 1


@given(group=groups())
@settings(max_examples=150, deadline=None)
def test_sticky_is_balanced_where_a_move_is_possible(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    """Kafka's balance: no member could take a partition from one with two more than it."""
    members, counts = group
    result = sticky_assign(members, counts)
    by_id = {m.member_id: m for m in members}
    for donor, partitions in result.items():
        for partition in partitions:
            for other in members:
                if partition.topic in other.topics:
                    assert len(result[donor]) - len(result[other.member_id]) <= 1, (donor, other)
    assert set(result) == set(by_id)


@st.composite
def rebalances(draw: st.DrawFn) -> tuple[list[MemberSubscription], dict[str, int]]:
    """A balanced equal-subscription group after members came and went: survivors own what a
    previous sticky round gave them."""
    members, counts = draw(groups(equal=True))
    previous = sticky_assign(members, counts)
    survivors = [m for m in members if draw(st.booleans())] or members[:1]
    newcomers = draw(st.lists(st.text("xyz", min_size=1, max_size=3), max_size=3, unique=True))
    topics = members[0].topics
    after = [member(m.member_id, topics, previous[m.member_id], 1) for m in survivors]
    after += [member(f"new-{n}", topics, (), -1) for n in newcomers]
    return after, counts


@given(group=rebalances())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_sticky_keeps_what_balance_allows(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    members, counts = group
    result = sticky_assign(members, counts)
    total = len(everything(counts, set(members[0].topics)))
    min_quota = total // len(members)
    for m in members:
        kept = set(result[m.member_id]) & m.owned
        assert len(kept) >= min(len(m.owned), min_quota), m.member_id


@given(group=rebalances())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_cooperative_two_phases(group: tuple[list[MemberSubscription], dict[str, int]]) -> None:
    """Round one never hands a member a partition another still owns and never takes from a
    member what the sticky assignment keeps; once owners dropped what they lost, round two
    completes the assignment without revoking anything."""
    members, counts = group
    first = cooperative_sticky_assign(members, counts)
    sticky = sticky_assign(members, counts)
    owned_by = {p: m.member_id for m in members for p in m.owned}
    for m in members:
        for partition in first[m.member_id]:
            assert owned_by.get(partition, m.member_id) == m.member_id
        assert set(sticky[m.member_id]) & m.owned <= set(first[m.member_id])
    second_members = [
        member(m.member_id, m.topics, first[m.member_id], generation=2) for m in members
    ]
    second = cooperative_sticky_assign(second_members, counts)
    check_exactly_once(second_members, counts, second)
    for member_id, partitions in first.items():
        assert set(partitions) <= set(second[member_id]), "round two revoked something"


# --- the consumer protocol ------------------------------------------------------------------


@given(
    topics=st.lists(st.text(min_size=1, max_size=20)),
    user_data=st.none() | st.binary(max_size=20),
    owned=st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 2**31 - 1))),
    generation=st.integers(-1, 2**31 - 1),
    rack=st.none() | st.text(max_size=10),
    version=st.integers(0, 3),
)
def test_subscription_round_trip(
    topics: list[str],
    user_data: bytes | None,
    owned: list[tuple[str, int]],
    generation: int,
    rack: str | None,
    version: int,
) -> None:
    owned_tps = sorted({tp(t, p) for t, p in owned})
    subscription = Subscription(topics, user_data, owned_tps, generation, rack)
    decoded = decode_subscription(encode_subscription(subscription, version))
    assert decoded.topics == topics
    assert decoded.user_data == user_data
    assert decoded.owned_partitions == (owned_tps if version >= 1 else [])
    assert decoded.generation_id == (generation if version >= 2 else -1)
    assert decoded.rack_id == (rack if version >= 3 else None)


def test_subscription_bytes_are_kafkas() -> None:
    """v1, hand-assembled from Kafka's schema: version, topics, null user data, owned."""
    expected = (
        b"\x00\x01"  # version 1
        + b"\x00\x00\x00\x01\x00\x01t"  # topics ["t"]
        + b"\xff\xff\xff\xff"  # user data null
        + b"\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x03"
    )
    subscription = Subscription(["t"], None, [tp("t", 3), tp("t", 0)])
    assert encode_subscription(subscription, 1) == expected
    assert decode_subscription(expected).owned_partitions == [tp("t", 0), tp("t", 3)]


def test_newer_versions_read_as_the_newest_known() -> None:
    data = encode_subscription(Subscription(["t"], None, [], 7, "r"), 3)
    future = b"\x00\x09" + data[2:] + b"new fields"
    decoded = decode_subscription(future)
    assert (decoded.topics, decoded.generation_id, decoded.rack_id) == (["t"], 7, "r")
    assignment = encode_assignment(Assignment([tp("t", 1)], b"u"))
    assert decode_assignment(b"\x00\x07" + assignment[2:] + b"x").partitions == [tp("t", 1)]


@given(
    partitions=st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 1000))),
    user_data=st.none() | st.binary(max_size=10),
    version=st.integers(0, 3),
)
def test_assignment_round_trip(
    partitions: list[tuple[str, int]], user_data: bytes | None, version: int
) -> None:
    tps = sorted({tp(t, p) for t, p in partitions})
    decoded = decode_assignment(encode_assignment(Assignment(tps, user_data), version))
    assert (decoded.partitions, decoded.user_data) == (tps, user_data)


@given(data=st.binary(max_size=64))
def test_garbage_raises_malformed_only(data: bytes) -> None:
    for decode in (decode_subscription, decode_assignment):
        with contextlib.suppress(MalformedFrameError):
            decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x7f\xff\xff\xff",  # two billion topics in six bytes
        b"\x00\x01\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x01\x00\x01t\x7f\xff\xff\xff",
        b"\xff\xff\x00\x00\x00\x00",  # negative version
        encode_subscription(Subscription(["t"]), 0) + b"\x00",  # trailing bytes, known version
    ],
)
def test_hostile_subscriptions_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        decode_subscription(data)


def test_empty_assignment_bytes_mean_no_partitions() -> None:
    assert decode_assignment(b"").partitions == []
