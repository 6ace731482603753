"""Kafka's consumer partition assignors as pure functions: range, roundrobin, cooperative-sticky.

The group leader runs one of these over every member's subscription (subscribed topics and,
for the sticky assignor, the partitions the member owns now) and the partition count of every
subscribed topic; the result maps every member id to its partitions (possibly none). Topics
without a positive partition count are skipped, as Kafka skips topics missing from metadata.

* range (Kafka's RangeAssignor): per topic, the subscribed members in Kafka's member order
  (static members by group.instance.id first, then member ids) take consecutive ranges, the
  first `count % members` of them one partition more.
* roundrobin (Kafka's RoundRobinAssignor): every subscribed topic-partition, sorted by topic
  then partition, dealt in turn to the members in Kafka's member order, skipping members not
  subscribed to the partition's topic.
* cooperative-sticky (Kafka's CooperativeStickyAssignor): a balanced assignment that keeps as
  many owned partitions where they are as balance allows (no member has two partitions more
  than another member that could take one of them; with equal subscriptions, counts differ by
  at most one), then Kafka's cooperative adjustment: a partition moving away from a member that
  still claims it is left out of this round altogether. Its owner revokes it, rejoins, and the
  follow-up rebalance hands it to its new owner, so no partition ever has two owners.

Cost: O(partitions x members) per balancing pass; the coordinator bounds members per group
(`GROUP_MEMBERS_MAX`) and the log bounds partitions per topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from headwater.client._types import TopicPartition

NO_GENERATION = -1


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    """What the leader knows of one member (a frozen value): its subscription and what it owns,
    and since which generation, so a stale claim loses to a current one."""

    member_id: str
    topics: frozenset[str]
    owned: frozenset[TopicPartition] = frozenset()
    generation: int = NO_GENERATION
    group_instance_id: str | None = None


GroupAssignment = dict[str, list[TopicPartition]]
Assignor = Callable[[Sequence[MemberSubscription], Mapping[str, int]], GroupAssignment]


def _kafka_order(members: Iterable[MemberSubscription]) -> list[MemberSubscription]:
    """Kafka's MemberInfo order: static members by instance id first, then member ids."""
    return sorted(
        members,
        key=lambda m: (m.group_instance_id is None, m.group_instance_id or "", m.member_id),
    )


def _check_unique(members: Sequence[MemberSubscription]) -> None:
    if len({m.member_id for m in members}) != len(members):
        raise ValueError("member ids must be unique")


def _finish(assignment: Mapping[str, Iterable[TopicPartition]]) -> GroupAssignment:
    return {member_id: sorted(partitions) for member_id, partitions in assignment.items()}


def range_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Kafka's RangeAssignor (without rack awareness)."""
    _check_unique(members)
    result: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
    by_topic: dict[str, list[str]] = {}
    for member in _kafka_order(members):
        for topic in member.topics:
            by_topic.setdefault(topic, []).append(member.member_id)
    for topic, consumers in sorted(by_topic.items()):
        count = partition_counts.get(topic, 0)
        if count <= 0:
            continue
        per_member, extra = divmod(count, len(consumers))
        for index, member_id in enumerate(consumers):
            start = per_member * index + min(index, extra)
            length = per_member + (1 if index < extra else 0)
            result[member_id].extend(TopicPartition(topic, p) for p in range(start, start + length))
    return _finish(result)


def roundrobin_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Kafka's RoundRobinAssignor."""
    _check_unique(members)
    result: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
    ordered = _kafka_order(members)
    topics = sorted(
        {t for m in members for t in m.topics if partition_counts.get(t, 0) > 0},
    )
    position = 0
    for topic in topics:
        for partition in range(partition_counts[topic]):
            # Some member subscribes to `topic`, so this ends within one turn of the circle.
            while topic not in ordered[position % len(ordered)].topics:
                position += 1
            result[ordered[position % len(ordered)].member_id].append(
                TopicPartition(topic, partition)
            )
            position += 1
    return _finish(result)


def _sticky_owners(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> dict[TopicPartition, str]:
    """The previous owner of each partition a member may keep: the claim of the highest
    generation wins; equal claims at that generation leave the partition without an owner.
    Claims of partitions that do not exist or that the claimant no longer subscribes to do
    not count."""
    best: dict[TopicPartition, tuple[int, list[str]]] = {}
    for member in members:
        for tp in member.owned:
            if tp.topic not in member.topics or not 0 <= tp.partition < partition_counts.get(
                tp.topic, 0
            ):
                continue
            known = best.get(tp)
            if known is None or member.generation > known[0]:
                best[tp] = (member.generation, [member.member_id])
            elif member.generation == known[0]:
                known[1].append(member.member_id)
    return {tp: claimants[0] for tp, (_, claimants) in best.items() if len(claimants) == 1}


def sticky_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Kafka's sticky assignment (the eager half of cooperative-sticky): balanced, and every
    owned partition stays with its owner unless balance needs it elsewhere."""
    _check_unique(members)
    by_id = {m.member_id: m for m in members}
    order = {member_id: index for index, member_id in enumerate(sorted(by_id))}
    eligible: dict[str, list[str]] = {}  # topic -> members that may take its partitions
    for member_id in sorted(by_id):
        for topic in by_id[member_id].topics:
            if partition_counts.get(topic, 0) > 0:
                eligible.setdefault(topic, []).append(member_id)
    everything = [
        TopicPartition(topic, partition)
        for topic in sorted(eligible)
        for partition in range(partition_counts[topic])
    ]
    owners = _sticky_owners(members, partition_counts)
    assignment: dict[str, set[TopicPartition]] = {member_id: set() for member_id in by_id}

    # 1. Keep what members own. With equal subscriptions, trim to Kafka's quotas at once:
    # each member keeps at most `ceil(P/C)` and only `P % C` members may keep that many.
    kept: dict[str, list[TopicPartition]] = {member_id: [] for member_id in by_id}
    for tp, owner in owners.items():
        kept[owner].append(tp)
    subscribed = [frozenset(t for t in m.topics if t in eligible) for m in members]
    equal = bool(members) and all(s == subscribed[0] for s in subscribed)
    if equal and everything:
        min_quota, over = divmod(len(everything), len(members))
        for member_id in sorted(by_id):
            owned = sorted(kept[member_id])
            if len(owned) > min_quota and over > 0:
                quota = min_quota + 1
                over -= 1
            else:
                quota = min_quota
            assignment[member_id].update(owned[:quota])
    else:
        for member_id, owned in kept.items():
            assignment[member_id].update(owned)
    counts = {member_id: len(tps) for member_id, tps in assignment.items()}

    # 2. Everything else goes, the partitions with fewest candidates first, to the candidate
    # with the fewest partitions (ties to the lowest member id).
    taken = set().union(*assignment.values()) if assignment else set()
    unassigned = [tp for tp in everything if tp not in taken]
    unassigned.sort(key=lambda tp: (len(eligible[tp.topic]), tp))
    for tp in unassigned:
        receiver = min(eligible[tp.topic], key=lambda m: (counts[m], order[m]))
        assignment[receiver].add(tp)
        counts[receiver] += 1

    # 3. Balance (only needed when subscriptions differ): move a partition from a member to a
    # candidate with at least two fewer until no such move is left. Each move lowers the sum
    # of squared counts, so this ends; moved first are partitions the donor did not own.
    while True:
        moved = False
        for donor in sorted(assignment, key=lambda m: (-counts[m], order[m])):
            held = assignment[donor]
            fresh = sorted((tp for tp in held if owners.get(tp) != donor), reverse=True)
            sticky = sorted((tp for tp in held if owners.get(tp) == donor), reverse=True)
            for tp in fresh + sticky:
                receiver = min(eligible[tp.topic], key=lambda m: (counts[m], order[m]))
                if counts[donor] - counts[receiver] >= 2:
                    held.discard(tp)
                    assignment[receiver].add(tp)
                    counts[donor] -= 1
                    counts[receiver] += 1
                    moved = True
        if not moved:
            break
    return _finish(assignment)


def cooperative_sticky_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Kafka's CooperativeStickyAssignor: the sticky assignment, less every partition that
    some other member still claims (it is revoked first and assigned in the next round)."""
    assignment = sticky_assign(members, partition_counts)
    claimants: dict[TopicPartition, set[str]] = {}
    for member in members:
        for tp in member.owned:
            claimants.setdefault(tp, set()).add(member.member_id)
    return {
        member_id: [tp for tp in partitions if not (claimants.get(tp, set()) - {member_id})]
        for member_id, partitions in assignment.items()
    }


ASSIGNORS: dict[str, Assignor] = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "cooperative-sticky": cooperative_sticky_assign,
}
# Assignors that follow Kafka's cooperative rebalance protocol (the others are eager).
COOPERATIVE = frozenset({"cooperative-sticky"})


def assign(
    name: str, members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Run the assignor called `name` (KeyError for one we do not have)."""
    return ASSIGNORS[name](members, partition_counts)


__all__ = [
    "ASSIGNORS",
    "COOPERATIVE",
    "NO_GENERATION",
    "Assignor",
    "GroupAssignment",
    "MemberSubscription",
    "assign",
    "cooperative_sticky_assign",
    "range_assign",
    "roundrobin_assign",
    "sticky_assign",
]
