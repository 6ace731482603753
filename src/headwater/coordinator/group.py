"""Kafka's classic consumer group protocol as a plain state machine: no sockets, no asyncio.

Time comes in as `now_ms`; `tick(now_ms)` expires sessions and rebalances. JoinGroup and
SyncGroup may have to wait for other members, so every call that can answer one returns a list
of `Completion`s: (token, result) pairs, where the token is the one the caller passed with the
request. The caller (the broker glue) owns the futures; this module never awaits. A call may
complete its own token at once, other members' tokens, or none.

Group states follow Kafka: Empty -> PreparingRebalance -> CompletingRebalance -> Stable, and
back to PreparingRebalance when membership or protocols change. Dead is only reported for
groups we do not know (as Kafka's DescribeGroups does).

Persistence: the machine queues records for the internal compacted topic `__consumer_offsets`
(`drain_records`) and rebuilds its state from them (`replay`). The encoding is ours, JSON via
msgspec:

* offset commit: key `["offset", group, topic, partition]`,
  value `{"offset", "leader_epoch", "metadata", "commit_timestamp_ms"}`;
* group metadata: key `["group", group]`, value `GroupRecord` (protocol type and name,
  generation, leader, and per member: ids, client, timeouts, selected-protocol metadata and
  assignment), written whenever a generation's assignment is settled or the group empties;
* transactional offset commit (TxnOffsetCommit), pending until its transaction ends: key
  `["txn-offset", producer id, group, topic, partition]`, the offset commit's value. When the
  transaction coordinator completes the transaction here (`complete_transaction`), a commit
  rewrites each as an offset commit, unless a plain commit of the same partition came after it
  (the later commit wins, as in Kafka); either way each pending key gets a tombstone. A restart
  between the two finds them pending again, and the coordinator drives the completion again.

Records with a null value are tombstones: DeleteGroups writes one for each of a group's offset
keys and for its group key, OffsetDelete one for each deleted offset key. Replay drops what a
tombstone names, and a group left with neither metadata nor offsets.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

# --- Kafka error codes this module answers with --------------------------------------------
NONE = 0
COORDINATOR_NOT_AVAILABLE = 15
OFFSET_METADATA_TOO_LARGE = 12
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
GROUP_SUBSCRIBED_TO_TOPIC = 86
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81
FENCED_INSTANCE_ID = 82
UNSTABLE_OFFSET_COMMIT = 88
UNKNOWN_SERVER_ERROR = -1

# --- bounds and defaults (Kafka's names in comments) ----------------------------------------
# group.max.size: members per group; bounds the memory and the JoinGroup response size.
GROUP_MEMBERS_MAX = 1_000
# Groups this coordinator keeps; a new group past it is refused (GROUP_MAX_SIZE_REACHED is the
# closest code a client understands), so a client inventing group ids cannot exhaust memory.
GROUPS_MAX = 10_000
# Committed partitions per group; commits for new partitions past it are refused.
OFFSETS_PER_GROUP_MAX = 100_000
# offset.metadata.max.bytes
OFFSET_METADATA_BYTES_MAX = 4096
# Transactional offset commits waiting for their transactions, over all producers: past it a
# TxnOffsetCommit is refused, so open transactions cannot grow the coordinator without bound.
PENDING_TRANSACTIONAL_OFFSETS_MAX = 100_000
# Protocols one member may offer and bytes of metadata per protocol: bound a hostile join.
PROTOCOLS_PER_MEMBER_MAX = 64
PROTOCOL_METADATA_BYTES_MAX = 1024 * 1024
# group.min.session.timeout.ms / group.max.session.timeout.ms
SESSION_TIMEOUT_MS_MIN_DEFAULT = 6_000
SESSION_TIMEOUT_MS_MAX_DEFAULT = 1_800_000
# group.initial.rebalance.delay.ms: Kafka's default is 3000; one node with tests that start
# consumers together does not need it, and 0 makes the first generation immediate.
INITIAL_REBALANCE_DELAY_MS_DEFAULT = 0
# Kafka's offsets.retention.minutes (7 days) and offsets.retention.check.interval.ms (10 min).
OFFSETS_RETENTION_MS_DEFAULT = 7 * 24 * 60 * 60 * 1000
OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT = 10 * 60 * 1000


class GroupState(enum.Enum):
    """Kafka's classic group states; the values are the names DescribeGroups reports."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    session_timeout_ms_min: int = SESSION_TIMEOUT_MS_MIN_DEFAULT
    session_timeout_ms_max: int = SESSION_TIMEOUT_MS_MAX_DEFAULT
    initial_rebalance_delay_ms: int = INITIAL_REBALANCE_DELAY_MS_DEFAULT
    group_members_max: int = GROUP_MEMBERS_MAX
    groups_max: int = GROUPS_MAX
    offsets_per_group_max: int = OFFSETS_PER_GROUP_MAX
    offset_metadata_bytes_max: int = OFFSET_METADATA_BYTES_MAX
    offsets_retention_ms: int = OFFSETS_RETENTION_MS_DEFAULT
    offsets_retention_check_interval_ms: int = OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(slots=True)
class JoinResult:
    error_code: int
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: list[JoinedMember] = field(default_factory=list)
    skip_assignment: bool = False


@dataclass(slots=True)
class SyncResult:
    error_code: int
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


Completion = tuple[int, JoinResult | SyncResult]


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    heartbeat_deadline_ms: int = 0
    join_token: int | None = None  # awaiting a JoinGroup answer
    sync_token: int | None = None  # awaiting a SyncGroup answer

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def same_protocols(self, protocols: Sequence[tuple[str, bytes]]) -> bool:
        return list(protocols) == self.protocols


@dataclass(frozen=True, slots=True)
class OffsetEntry:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int


@dataclass(slots=True)
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)  # join order
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    pending_members: dict[str, int] = field(default_factory=dict)  # member id -> expiry
    offsets: dict[tuple[str, int], OffsetEntry] = field(default_factory=dict)
    rebalance_deadline_ms: int = 0
    delay_until_ms: int = 0  # group.initial.rebalance.delay: no completion before this
    delay_limit_ms: int = 0  # ... and never extended past this
    empty_since_ms: int = 0  # when the group last became Empty: its offsets expire from then

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def all_joined(self) -> bool:
        return not self.pending_members and all(
            m.join_token is not None for m in self.members.values()
        )


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    members: list[tuple[Member, bytes, bytes]]  # member, metadata, assignment


# --- records ----------------------------------------------------------------------------------


class _OffsetValue(msgspec.Struct, frozen=True):
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int


class _MemberRecord(msgspec.Struct, frozen=True):
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    metadata: bytes
    assignment: bytes


class GroupRecord(msgspec.Struct, frozen=True):
    protocol_type: str | None
    protocol_name: str | None
    generation_id: int
    leader: str | None
    members: list[_MemberRecord]


_encoder = msgspec.json.Encoder()


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return _encoder.encode(["offset", group_id, topic, partition])


def group_key(group_id: str) -> bytes:
    return _encoder.encode(["group", group_id])


def transactional_offset_key(producer_id: int, group_id: str, topic: str, partition: int) -> bytes:
    return _encoder.encode(["txn-offset", producer_id, group_id, topic, partition])


_KeyParts = list[Any]


_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


def _subscription_topics(metadata: bytes) -> set[str] | None:
    """The topics of a ConsumerProtocolSubscription (any version: every version starts with
    int16 version, then Topics as an int32-counted array of int16-length strings); None if
    the bytes do not parse."""
    try:
        (version,) = _INT16.unpack_from(metadata, 0)
        (count,) = _INT32.unpack_from(metadata, 2)
        if version < 0 or count < 0 or count > len(metadata):
            return None
        position = 6
        topics: set[str] = set()
        for _ in range(count):
            (length,) = _INT16.unpack_from(metadata, position)
            position += 2
            if length < 0 or position + length > len(metadata):
                return None
            topics.add(metadata[position : position + length].decode())
            position += length
    except (struct.error, UnicodeDecodeError):
        return None
    return topics


# --- the coordinator ----------------------------------------------------------------------------


class GroupCoordinator:
    """All groups of one broker. Not thread-safe: one owner (the event loop) calls it."""

    def __init__(self, config: CoordinatorConfig | None = None) -> None:
        self.config = config or CoordinatorConfig()
        self.groups: dict[str, Group] = {}
        # producer id -> (group, topic, partition) -> offset committed in its open transaction
        self.pending_transactional: dict[int, dict[tuple[str, str, int], OffsetEntry]] = {}
        self._pending_count = 0
        # (producer id, group, topic, partition) of pending offsets a plain commit came after:
        # as in Kafka, the later commit wins, so the transaction's is not applied.
        self._superseded: set[tuple[int, str, str, int]] = set()
        self._records: list[tuple[bytes, bytes | None]] = []
        self._next_expiry_check_ms: int | None = None

    # --- persistence ----------------------------------------------------------------------

    def drain_records(self) -> list[tuple[bytes, bytes | None]]:
        """Records queued since the last drain, for the caller to append to __consumer_offsets."""
        records, self._records = self._records, []
        return records

    def _persist_group(self, group: Group) -> None:
        record = GroupRecord(
            protocol_type=group.protocol_type,
            protocol_name=group.protocol_name,
            generation_id=group.generation_id,
            leader=group.leader,
            members=[
                _MemberRecord(
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.client_host,
                    m.session_timeout_ms,
                    m.rebalance_timeout_ms,
                    m.metadata(group.protocol_name),
                    m.assignment,
                )
                for m in group.members.values()
            ],
        )
        self._records.append((group_key(group.group_id), _encoder.encode(record)))

    def replay(self, key: bytes, value: bytes | None, now_ms: int) -> None:
        """Apply one record of __consumer_offsets at startup (later records win).

        A restored group with members is Stable at its stored generation, and every member gets
        a fresh session: clients that keep heartbeating carry on without a rebalance, as after a
        coordinator move in Kafka; the others expire.
        """
        try:
            parts: _KeyParts = msgspec.json.decode(key)
        except msgspec.DecodeError:
            return  # not ours
        if parts[:1] == ["offset"] and len(parts) == 4:
            _, group_id, topic, partition = parts
            if value is None:
                known = self.groups.get(group_id)
                if known is not None:
                    known.offsets.pop((topic, partition), None)
                    self._drop_if_blank(known)
                return
            group = self.groups.get(group_id) or self._new_group(group_id)
            stored = msgspec.json.decode(value, type=_OffsetValue)
            group.offsets[(topic, partition)] = OffsetEntry(
                stored.offset, stored.leader_epoch, stored.metadata, stored.commit_timestamp_ms
            )
            self._supersede_pending(group_id, topic, partition)
        elif parts[:1] == ["txn-offset"] and len(parts) == 5:
            _, producer_id, group_id, topic, partition = parts
            self._superseded.discard((producer_id, group_id, topic, partition))
            pending = self.pending_transactional.setdefault(producer_id, {})
            if value is None:
                self._pending_count -= pending.pop((group_id, topic, partition), None) is not None
            else:
                stored = msgspec.json.decode(value, type=_OffsetValue)
                self._pending_count += (group_id, topic, partition) not in pending
                pending[(group_id, topic, partition)] = OffsetEntry(
                    stored.offset, stored.leader_epoch, stored.metadata, stored.commit_timestamp_ms
                )
            if not pending:
                del self.pending_transactional[producer_id]
        elif parts[:1] == ["group"] and len(parts) == 2:
            group_id = parts[1]
            if value is None:
                known = self.groups.get(group_id)
                if known is not None:
                    known.members.clear()
                    known.static_members.clear()
                    known.generation_id = 0
                    known.protocol_type = known.protocol_name = known.leader = None
                    known.state = GroupState.EMPTY
                    known.empty_since_ms = now_ms
                    self._drop_if_blank(known)
                return
            group = self.groups.get(group_id) or self._new_group(group_id)
            group.members.clear()
            group.static_members.clear()
            record = msgspec.json.decode(value, type=GroupRecord)
            group.protocol_type = record.protocol_type
            group.protocol_name = record.protocol_name
            group.generation_id = record.generation_id
            group.leader = record.leader
            for stored_member in record.members:
                member = Member(
                    stored_member.member_id,
                    stored_member.group_instance_id,
                    stored_member.client_id,
                    stored_member.client_host,
                    stored_member.session_timeout_ms,
                    stored_member.rebalance_timeout_ms,
                    [(record.protocol_name or "", stored_member.metadata)],
                    stored_member.assignment,
                    heartbeat_deadline_ms=now_ms + stored_member.session_timeout_ms,
                )
                group.members[member.member_id] = member
                if member.group_instance_id is not None:
                    group.static_members[member.group_instance_id] = member.member_id
            group.state = GroupState.STABLE if group.members else GroupState.EMPTY
            group.empty_since_ms = now_ms  # not stored: a restart restarts the retention clock

    def _drop_if_blank(self, group: Group) -> None:
        """Replay only: forget a group that tombstones left without metadata or offsets."""
        if (
            not group.offsets
            and not group.members
            and group.generation_id == 0
            and group.protocol_type is None
        ):
            del self.groups[group.group_id]

    # --- helpers --------------------------------------------------------------------------

    def _new_group(self, group_id: str) -> Group:
        group = Group(group_id)
        self.groups[group_id] = group
        return group

    def _room_for_group(self) -> bool:
        return len(self.groups) < self.config.groups_max

    def _add_member(self, group: Group, member: Member, now_ms: int) -> None:
        group.members[member.member_id] = member
        if member.group_instance_id is not None:
            group.static_members[member.group_instance_id] = member.member_id
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms

    def _remove_member(
        self, group: Group, member_id: str, error: int, completions: list[Completion]
    ) -> Member | None:
        member = group.members.pop(member_id, None)
        if member is None:
            return None
        instance_id = member.group_instance_id
        if instance_id is not None and group.static_members.get(instance_id) == member_id:
            del group.static_members[instance_id]
        if member.join_token is not None:
            completions.append((member.join_token, JoinResult(error, member_id=member_id)))
            member.join_token = None
        if member.sync_token is not None:
            completions.append((member.sync_token, SyncResult(error)))
            member.sync_token = None
        if group.leader == member_id:
            group.leader = None
        return member

    def _select_protocol(self, group: Group) -> str | None:
        """Kafka's choice: among protocols every member supports, the one most members list
        first (of those candidates); ties go to the earliest in the leader's order."""
        members = list(group.members.values())
        if not members:
            return None
        candidates = {name for name, _ in members[0].protocols}
        for member in members[1:]:
            candidates &= {name for name, _ in member.protocols}
        if not candidates:
            return None
        votes: dict[str, int] = dict.fromkeys(candidates, 0)
        for member in members:
            for name, _ in member.protocols:
                if name in candidates:
                    votes[name] += 1
                    break
        leader = group.members.get(group.leader or "") or members[0]
        order = [name for name, _ in leader.protocols if name in candidates]
        return max(order, key=lambda name: (votes[name], -order.index(name)))

    def _supports_group_protocols(
        self, group: Group, protocols: Sequence[tuple[str, bytes]]
    ) -> bool:
        """A new member must share at least one protocol with every current member."""
        names = {name for name, _ in protocols}
        if not names:
            return False
        if not group.members:
            return True
        common = set(names)
        for member in group.members.values():
            common &= {name for name, _ in member.protocols}
        return bool(common)

    def _prepare_rebalance(self, group: Group, now_ms: int, completions: list[Completion]) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            # Assignments of the generation being settled are void: followers must rejoin.
            for member in group.members.values():
                member.assignment = b""
                if member.sync_token is not None:
                    completions.append((member.sync_token, SyncResult(REBALANCE_IN_PROGRESS)))
                    member.sync_token = None
        delay = self.config.initial_rebalance_delay_ms
        if group.state is GroupState.EMPTY and delay > 0:
            group.delay_until_ms = now_ms + delay
            group.delay_limit_ms = now_ms + max(group.rebalance_timeout_ms(), delay)
        else:
            group.delay_until_ms = 0
        group.state = GroupState.PREPARING_REBALANCE
        group.rebalance_deadline_ms = now_ms + group.rebalance_timeout_ms()

    def _maybe_complete_join(
        self, group: Group, now_ms: int, completions: list[Completion]
    ) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        if now_ms < group.delay_until_ms:
            return
        if group.all_joined() or now_ms >= group.rebalance_deadline_ms:
            self._complete_join(group, now_ms, completions)

    def _complete_join(self, group: Group, now_ms: int, completions: list[Completion]) -> None:
        for member in list(group.members.values()):
            if member.join_token is None:  # did not rejoin in time
                self._remove_member(group, member.member_id, UNKNOWN_MEMBER_ID, completions)
        group.generation_id += 1
        if not group.members:
            group.state = GroupState.EMPTY
            group.empty_since_ms = now_ms
            group.protocol_name = None
            group.leader = None
            self._persist_group(group)
            return
        group.protocol_name = self._select_protocol(group)
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = GroupState.COMPLETING_REBALANCE
        group.rebalance_deadline_ms = now_ms + group.rebalance_timeout_ms()
        everyone = [
            JoinedMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
            for m in group.members.values()
        ]
        for member in group.members.values():
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            assert member.join_token is not None
            completions.append((member.join_token, self._join_result(group, member, everyone)))
            member.join_token = None

    def _join_result(
        self, group: Group, member: Member, everyone: list[JoinedMember] | None = None
    ) -> JoinResult:
        is_leader = member.member_id == group.leader
        if is_leader and everyone is None:
            everyone = [
                JoinedMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
                for m in group.members.values()
            ]
        return JoinResult(
            NONE,
            generation_id=group.generation_id,
            protocol_type=group.protocol_type,
            protocol_name=group.protocol_name,
            leader=group.leader or "",
            member_id=member.member_id,
            members=(everyone or []) if is_leader else [],
        )

    # --- JoinGroup ------------------------------------------------------------------------

    def join(
        self,
        token: int,
        now_ms: int,
        *,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        require_known_member_id: bool,
    ) -> list[Completion]:
        """Handle a JoinGroup; the answer for `token` may come now or from a later call."""
        completions: list[Completion] = []
        protocols = list(protocols)

        def fail(error: int, answered_member_id: str = member_id) -> list[Completion]:
            completions.append((token, JoinResult(error, member_id=answered_member_id)))
            return completions

        if not group_id:
            return fail(INVALID_GROUP_ID)
        if not (
            self.config.session_timeout_ms_min
            <= session_timeout_ms
            <= self.config.session_timeout_ms_max
        ):
            return fail(INVALID_SESSION_TIMEOUT)
        if rebalance_timeout_ms < 0:  # v0 has none: Kafka uses the session timeout
            rebalance_timeout_ms = session_timeout_ms
        if (
            not protocol_type
            or not protocols
            or len(protocols) > PROTOCOLS_PER_MEMBER_MAX
            or any(len(metadata) > PROTOCOL_METADATA_BYTES_MAX for _, metadata in protocols)
        ):
            return fail(INCONSISTENT_GROUP_PROTOCOL)
        group = self.groups.get(group_id)
        if group is None:
            if member_id:
                return fail(UNKNOWN_MEMBER_ID)
            if not self._room_for_group():
                return fail(GROUP_MAX_SIZE_REACHED)
            group = self._new_group(group_id)
        if group.state is GroupState.DEAD:
            return fail(COORDINATOR_NOT_AVAILABLE)
        if (group.members and group.protocol_type != protocol_type) or not (
            self._supports_group_protocols(group, protocols)
        ):
            return fail(INCONSISTENT_GROUP_PROTOCOL)

        def new_member(new_id: str) -> Member:
            return Member(
                new_id,
                group_instance_id,
                client_id,
                client_host,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
                join_token=token,
            )

        if not member_id:
            new_id = f"{group_instance_id or client_id}-{uuid.uuid4()}"
            if group_instance_id is not None and group_instance_id in group.static_members:
                return self._replace_static_member(
                    group, token, now_ms, new_member(new_id), completions
                )
            if len(group.members) + len(group.pending_members) >= self.config.group_members_max:
                return fail(GROUP_MAX_SIZE_REACHED)
            if group_instance_id is None and require_known_member_id:
                group.pending_members[new_id] = now_ms + session_timeout_ms
                return fail(MEMBER_ID_REQUIRED, new_id)
            self._add_and_rebalance(group, new_member(new_id), protocol_type, now_ms, completions)
            return completions

        if member_id in group.pending_members:
            del group.pending_members[member_id]
            self._add_and_rebalance(
                group, new_member(member_id), protocol_type, now_ms, completions
            )
            return completions
        member = group.members.get(member_id)
        if member is None:
            if group_instance_id is not None and group_instance_id in group.static_members:
                return fail(FENCED_INSTANCE_ID)
            return fail(UNKNOWN_MEMBER_ID)
        if (
            group_instance_id is not None
            and group.static_members.get(group_instance_id) != member_id
        ):
            return fail(FENCED_INSTANCE_ID)
        if group.state is GroupState.EMPTY:
            return fail(UNKNOWN_MEMBER_ID)
        if member.join_token is not None:  # a retried join replaces the waiting one
            completions.append((member.join_token, JoinResult(REBALANCE_IN_PROGRESS)))
            member.join_token = None
        unchanged = member.same_protocols(protocols)
        member.heartbeat_deadline_ms = now_ms + session_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.protocols = protocols
        if group.state is GroupState.PREPARING_REBALANCE:
            member.join_token = token
            self._maybe_complete_join(group, now_ms, completions)
        elif group.state is GroupState.COMPLETING_REBALANCE and unchanged:
            completions.append((token, self._join_result(group, member)))  # a lost response
        elif group.state is GroupState.STABLE and unchanged and member_id != group.leader:
            completions.append((token, self._join_result(group, member)))
        else:
            member.join_token = token
            self._prepare_rebalance(group, now_ms, completions)
            self._maybe_complete_join(group, now_ms, completions)
        return completions

    def _add_and_rebalance(
        self,
        group: Group,
        member: Member,
        protocol_type: str,
        now_ms: int,
        completions: list[Completion],
    ) -> None:
        if not group.members:
            group.protocol_type = protocol_type
        self._add_member(group, member, now_ms)
        if group.state is GroupState.PREPARING_REBALANCE:
            if group.delay_until_ms > now_ms:  # a new member during the initial delay extends it
                group.delay_until_ms = min(
                    now_ms + self.config.initial_rebalance_delay_ms, group.delay_limit_ms
                )
            group.rebalance_deadline_ms = max(
                group.rebalance_deadline_ms, now_ms + member.rebalance_timeout_ms
            )
        else:
            self._prepare_rebalance(group, now_ms, completions)
        self._maybe_complete_join(group, now_ms, completions)

    def _replace_static_member(
        self, group: Group, token: int, now_ms: int, member: Member, completions: list[Completion]
    ) -> list[Completion]:
        """A known group.instance.id rejoined with no member id: the new member takes the old
        one's place (the old one is fenced). In a Stable group it keeps its assignment and no
        rebalance happens (KIP-345), unless its protocols would change the group's selected
        protocol: as in Kafka, new subscription bytes alone (a restarted client reporting its
        owned partitions) do not rebalance."""
        assert member.group_instance_id is not None
        old_id = group.static_members[member.group_instance_id]
        old = group.members[old_id]
        was_leader = group.leader == old_id
        self._remove_member(group, old_id, FENCED_INSTANCE_ID, completions)
        member.assignment = old.assignment
        if was_leader:
            group.leader = member.member_id
        group.members[member.member_id] = member  # for the protocol vote below
        same_protocol = self._select_protocol(group) == group.protocol_name
        del group.members[member.member_id]
        if group.state is GroupState.STABLE and same_protocol:
            member.join_token = None
            self._add_member(group, member, now_ms)
            self._persist_group(group)
            result = self._join_result(group, member)
            result.skip_assignment = was_leader
            completions.append((token, result))
            return completions
        self._add_member(group, member, now_ms)
        if group.state is not GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(group, now_ms, completions)
        self._maybe_complete_join(group, now_ms, completions)
        return completions

    # --- SyncGroup ------------------------------------------------------------------------

    def sync(
        self,
        token: int,
        now_ms: int,
        *,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Iterable[tuple[str, bytes]],
    ) -> list[Completion]:
        """Handle a SyncGroup: followers wait for the leader's assignments."""
        completions: list[Completion] = []

        def answer(error: int) -> list[Completion]:
            completions.append((token, SyncResult(error)))
            return completions

        group = self.groups.get(group_id)
        if group is None:
            return answer(UNKNOWN_MEMBER_ID)
        member = group.members.get(member_id)
        if member is None:
            return answer(UNKNOWN_MEMBER_ID)
        if (
            group_instance_id is not None
            and group.static_members.get(group_instance_id) != member_id
        ):
            return answer(FENCED_INSTANCE_ID)
        if generation_id != group.generation_id:
            return answer(ILLEGAL_GENERATION)
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return answer(INCONSISTENT_GROUP_PROTOCOL)
        if group.state is GroupState.PREPARING_REBALANCE:
            return answer(REBALANCE_IN_PROGRESS)
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if group.state is GroupState.STABLE:
            completions.append((token, self._sync_result(group, member)))
            return completions
        if group.state is not GroupState.COMPLETING_REBALANCE:
            return answer(UNKNOWN_MEMBER_ID)
        if member.sync_token is not None:
            completions.append((member.sync_token, SyncResult(REBALANCE_IN_PROGRESS)))
        member.sync_token = token
        if member_id == group.leader:
            given = dict(assignments)
            for each in group.members.values():
                each.assignment = given.get(each.member_id, b"")
            group.state = GroupState.STABLE
            self._persist_group(group)
            for each in group.members.values():
                if each.sync_token is not None:
                    completions.append((each.sync_token, self._sync_result(group, each)))
                    each.sync_token = None
        return completions

    @staticmethod
    def _sync_result(group: Group, member: Member) -> SyncResult:
        return SyncResult(NONE, group.protocol_type, group.protocol_name, member.assignment)

    # --- Heartbeat, LeaveGroup ------------------------------------------------------------

    def heartbeat(
        self,
        now_ms: int,
        *,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
    ) -> int:
        """The heartbeat's error code; REBALANCE_IN_PROGRESS tells the member to rejoin."""
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.EMPTY:
            return UNKNOWN_MEMBER_ID
        if group.state is GroupState.DEAD:
            return COORDINATOR_NOT_AVAILABLE
        member = group.members.get(member_id)
        if group_instance_id is not None and group.static_members.get(group_instance_id) not in (
            None,
            member_id,
        ):
            return FENCED_INSTANCE_ID
        if member is None:
            return UNKNOWN_MEMBER_ID
        if generation_id != group.generation_id:
            return ILLEGAL_GENERATION
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if group.state is GroupState.PREPARING_REBALANCE:
            return REBALANCE_IN_PROGRESS
        return NONE

    def leave(
        self, now_ms: int, *, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> tuple[list[int], list[Completion]]:
        """Remove members given as (member id, group instance id); one error code for each."""
        completions: list[Completion] = []
        group = self.groups.get(group_id)
        if group is None:
            return [UNKNOWN_MEMBER_ID] * len(members), completions
        errors: list[int] = []
        removed = False
        for member_id, instance_id in members:
            if instance_id is not None:
                known = group.static_members.get(instance_id)
                if known is None:
                    errors.append(UNKNOWN_MEMBER_ID)
                    continue
                if member_id and member_id != known:
                    errors.append(FENCED_INSTANCE_ID)
                    continue
                member_id = known
            if member_id in group.pending_members:
                del group.pending_members[member_id]
                errors.append(NONE)
                removed = True
                continue
            if self._remove_member(group, member_id, UNKNOWN_MEMBER_ID, completions) is None:
                errors.append(UNKNOWN_MEMBER_ID)
                continue
            errors.append(NONE)
            removed = True
        if removed:
            self._after_removal(group, now_ms, completions)
        return errors, completions

    def _after_removal(self, group: Group, now_ms: int, completions: list[Completion]) -> None:
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, now_ms, completions)
        self._maybe_complete_join(group, now_ms, completions)

    # --- time -----------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Completion]:
        """Expire sessions, pending members and rebalances that ran out of time; and, every
        `offsets_retention_check_interval_ms`, committed offsets past their retention."""
        if self._next_expiry_check_ms is None:
            self._next_expiry_check_ms = now_ms + self.config.offsets_retention_check_interval_ms
        elif now_ms >= self._next_expiry_check_ms:
            self._next_expiry_check_ms = now_ms + self.config.offsets_retention_check_interval_ms
            self.expire_offsets(now_ms)
        completions: list[Completion] = []
        for group in self.groups.values():
            expired_pending = [m for m, t in group.pending_members.items() if t <= now_ms]
            for member_id in expired_pending:
                del group.pending_members[member_id]
            removed = bool(expired_pending)
            for member in list(group.members.values()):
                waiting = member.join_token is not None or member.sync_token is not None
                if not waiting and member.heartbeat_deadline_ms <= now_ms:
                    self._remove_member(group, member.member_id, UNKNOWN_MEMBER_ID, completions)
                    removed = True
            if (
                group.state is GroupState.COMPLETING_REBALANCE
                and now_ms >= group.rebalance_deadline_ms
            ):
                removed = True  # the leader never sent its assignment: start over
            if removed:
                self._after_removal(group, now_ms, completions)
            else:
                self._maybe_complete_join(group, now_ms, completions)
        return completions

    # --- offsets --------------------------------------------------------------------------

    def commit_offsets(
        self,
        now_ms: int,
        *,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: Sequence[tuple[str, int, int, int, str | None]],
    ) -> list[int]:
        """Commit (topic, partition, offset, leader epoch, metadata) entries; an error each.

        Generation -1 with no member id is a "simple" commit from a consumer that assigns its
        own partitions: allowed only while the group has no members, as in Kafka.
        """
        error = self._commit_error(now_ms, group_id, generation_id, member_id, group_instance_id)
        if error != NONE:
            return [error] * len(offsets)
        group = self.groups.get(group_id)
        if group is None:
            group = self._new_group(group_id)
        errors: list[int] = []
        for topic, partition, offset, leader_epoch, metadata in offsets:
            text = metadata or ""
            if len(text.encode()) > self.config.offset_metadata_bytes_max:
                errors.append(OFFSET_METADATA_TOO_LARGE)
                continue
            key = (topic, partition)
            if key not in group.offsets and len(group.offsets) >= self.config.offsets_per_group_max:
                errors.append(UNKNOWN_SERVER_ERROR)
                continue
            entry = OffsetEntry(offset, leader_epoch, text, now_ms)
            group.offsets[key] = entry
            value = _OffsetValue(offset, leader_epoch, text, now_ms)
            self._records.append((offset_key(group_id, topic, partition), _encoder.encode(value)))
            self._supersede_pending(group_id, topic, partition)
            errors.append(NONE)
        return errors

    def _supersede_pending(self, group_id: str, topic: str, partition: int) -> None:
        if self.pending_transactional:
            for producer_id, pending in self.pending_transactional.items():
                if (group_id, topic, partition) in pending:
                    self._superseded.add((producer_id, group_id, topic, partition))

    def commit_transactional_offsets(
        self,
        now_ms: int,
        *,
        producer_id: int,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: Sequence[tuple[str, int, int, int, str | None]],
    ) -> list[int]:
        """TxnOffsetCommit: hold the offsets until `complete_transaction` for `producer_id`.

        The caller has checked the producer's transaction (the transaction coordinator's
        `check_offset_commit`). With a generation and member (KIP-447, v3+) they are checked
        as for a plain commit; without (v0-2, or a producer given only the group id) Kafka
        accepts the commit whatever the group's state, and so does this."""
        if generation_id < 0 and not member_id and group_instance_id is None:
            if not group_id:
                error = INVALID_GROUP_ID
            elif group_id not in self.groups and not self._room_for_group():
                error = GROUP_MAX_SIZE_REACHED
            else:
                error = NONE
        else:
            error = self._commit_error(
                now_ms, group_id, generation_id, member_id, group_instance_id
            )
        if error != NONE:
            return [error] * len(offsets)
        pending = self.pending_transactional.setdefault(producer_id, {})
        errors: list[int] = []
        for topic, partition, offset, leader_epoch, metadata in offsets:
            text = metadata or ""
            if len(text.encode()) > self.config.offset_metadata_bytes_max:
                errors.append(OFFSET_METADATA_TOO_LARGE)
                continue
            key = (group_id, topic, partition)
            if key not in pending:
                if self._pending_count >= PENDING_TRANSACTIONAL_OFFSETS_MAX:
                    errors.append(UNKNOWN_SERVER_ERROR)
                    continue
                self._pending_count += 1
            pending[key] = OffsetEntry(offset, leader_epoch, text, now_ms)
            self._superseded.discard((producer_id, group_id, topic, partition))
            value = _OffsetValue(offset, leader_epoch, text, now_ms)
            self._records.append(
                (
                    transactional_offset_key(producer_id, group_id, topic, partition),
                    _encoder.encode(value),
                )
            )
            errors.append(NONE)
        if not pending:
            del self.pending_transactional[producer_id]
        return errors

    def complete_transaction(self, producer_id: int, commit: bool, now_ms: int) -> int:
        """The transaction of `producer_id` ended: its offsets become committed (commit) or
        are dropped (abort). Idempotent, as markers may be written again after a restart;
        how many offsets it settled."""
        pending = self.pending_transactional.pop(producer_id, None)
        if not pending:
            return 0
        self._pending_count -= len(pending)
        for (group_id, topic, partition), entry in pending.items():
            superseded = (producer_id, group_id, topic, partition)
            if superseded in self._superseded:
                self._superseded.discard(superseded)
            elif commit:
                group = self.groups.get(group_id) or self._new_group(group_id)
                group.offsets[(topic, partition)] = entry
                value = _OffsetValue(
                    entry.offset, entry.leader_epoch, entry.metadata, entry.commit_timestamp_ms
                )
                self._records.append(
                    (offset_key(group_id, topic, partition), _encoder.encode(value))
                )
            self._records.append(
                (transactional_offset_key(producer_id, group_id, topic, partition), None)
            )
        return len(pending)

    def has_pending_offset(self, group_id: str, topic: str, partition: int) -> bool:
        """Whether an open transaction holds an offset for this partition of the group: Kafka
        answers UNSTABLE_OFFSET_COMMIT to an OffsetFetch that requires stable offsets."""
        return any(
            (group_id, topic, partition) in pending
            for pending in self.pending_transactional.values()
        )

    def _commit_error(
        self,
        now_ms: int,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
    ) -> int:
        if not group_id:
            return INVALID_GROUP_ID
        group = self.groups.get(group_id)
        if group is None:
            if generation_id >= 0:
                return ILLEGAL_GENERATION
            return NONE if self._room_for_group() else GROUP_MAX_SIZE_REACHED
        if group.state is GroupState.DEAD:
            return COORDINATOR_NOT_AVAILABLE
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return NONE
        if group_instance_id is not None and group.static_members.get(group_instance_id) not in (
            None,
            member_id,
        ):
            return FENCED_INSTANCE_ID
        if group.state is GroupState.COMPLETING_REBALANCE:
            return REBALANCE_IN_PROGRESS
        member = group.members.get(member_id)
        if member is None:
            return UNKNOWN_MEMBER_ID
        if generation_id != group.generation_id:
            return ILLEGAL_GENERATION
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        return NONE

    def expire_offsets(self, now_ms: int) -> int:
        """Delete committed offsets past `offsets_retention_ms`, as Kafka does; how many went.

        A consumer group's offsets expire together, once it has been Empty that long; a group
        that only ever committed (no protocol type: a consumer assigning its own partitions)
        loses each offset that long after its commit; a Stable consumer group keeps the offsets
        of topics it subscribes to, and loses the others by commit time (KIP-496). An Empty
        group left with no offsets is deleted (Dead), its metadata tombstoned.
        """
        retention_ms = self.config.offsets_retention_ms
        expired = 0
        for group in list(self.groups.values()):
            entries = group.offsets.items()
            if group.state is GroupState.EMPTY and group.protocol_type is not None:
                doomed = (
                    list(group.offsets) if now_ms >= group.empty_since_ms + retention_ms else []
                )
            elif group.state is GroupState.EMPTY:
                doomed = [k for k, e in entries if now_ms >= e.commit_timestamp_ms + retention_ms]
            elif group.state is GroupState.STABLE and group.protocol_type == "consumer":
                doomed = [
                    (topic, partition)
                    for (topic, partition), entry in entries
                    if now_ms >= entry.commit_timestamp_ms + retention_ms
                    and not self._subscribed(group, topic)
                ]
            else:
                continue  # mid-rebalance: decided again at the next check
            for topic, partition in doomed:
                del group.offsets[(topic, partition)]
                self._records.append((offset_key(group.group_id, topic, partition), None))
            expired += len(doomed)
            if group.state is GroupState.EMPTY and not group.offsets and not group.members:
                self._records.append((group_key(group.group_id), None))
                group.state = GroupState.DEAD
                del self.groups[group.group_id]
        return expired

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]] | None
    ) -> list[tuple[str, int, OffsetEntry | None]]:
        """Committed offsets of `partitions` (None: every committed one); None where none."""
        group = self.groups.get(group_id)
        committed = group.offsets if group is not None else {}
        if partitions is None:
            return [(t, p, entry) for (t, p), entry in sorted(committed.items())]
        return [(t, p, committed.get((t, p))) for t, p in partitions]

    # --- DeleteGroups, OffsetDelete -------------------------------------------------------

    def delete_groups(self, group_ids: Sequence[str]) -> list[int]:
        """Delete groups nobody is in, with their offsets; an error code for each group.

        Tombstones go to __consumer_offsets for every offset key and the group key, so a
        restart does not bring the group back.
        """
        errors: list[int] = []
        for group_id in group_ids:
            if not group_id:
                errors.append(INVALID_GROUP_ID)
                continue
            group = self.groups.get(group_id)
            if group is None or group.state is GroupState.DEAD:
                errors.append(GROUP_ID_NOT_FOUND)
                continue
            if group.state is not GroupState.EMPTY or group.members:
                errors.append(NON_EMPTY_GROUP)
                continue
            for topic, partition in sorted(group.offsets):
                self._records.append((offset_key(group_id, topic, partition), None))
            self._records.append((group_key(group_id), None))
            del self.groups[group_id]
            errors.append(NONE)
        return errors

    def delete_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]]
    ) -> tuple[int, list[int]]:
        """OffsetDelete: a top-level error code and one per (topic, partition).

        A partition of a topic the group's members subscribe to is refused with
        GROUP_SUBSCRIBED_TO_TOPIC; any other committed offset is deleted (tombstoned).
        """
        if not group_id:
            return INVALID_GROUP_ID, []
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return GROUP_ID_NOT_FOUND, []
        errors: list[int] = []
        for topic, partition in partitions:
            if self._subscribed(group, topic):
                errors.append(GROUP_SUBSCRIBED_TO_TOPIC)
                continue
            if group.offsets.pop((topic, partition), None) is not None:
                self._records.append((offset_key(group_id, topic, partition), None))
            errors.append(NONE)
        return NONE, errors

    @staticmethod
    def _subscribed(group: Group, topic: str) -> bool:
        """Whether a member may be consuming `topic`. Conservative: a member of a "consumer"
        group whose subscription cannot be decoded counts as subscribed to every topic."""
        if not group.members or group.state is GroupState.EMPTY:
            return False
        if group.protocol_type != "consumer":
            return False  # Kafka knows no subscriptions outside the consumer protocol
        for member in group.members.values():
            for _, metadata in member.protocols:
                topics = _subscription_topics(metadata)
                if topics is None or topic in topics:
                    return True
        return False

    # --- ListGroups, DescribeGroups -------------------------------------------------------

    def list_groups(self, states: Sequence[str] = ()) -> list[tuple[str, str, str]]:
        """(group id, protocol type, state) of every group, optionally filtered by state."""
        wanted = {state.lower() for state in states}
        return [
            (group.group_id, group.protocol_type or "", group.state.value)
            for group in self.groups.values()
            if not wanted or group.state.value.lower() in wanted
        ]

    def describe(self, group_id: str) -> GroupSummary:
        """Kafka's summary: member metadata and assignments only once the group is Stable."""
        group = self.groups.get(group_id)
        if group is None:
            return GroupSummary(group_id, GroupState.DEAD.value, "", "", [])
        stable = group.state is GroupState.STABLE
        return GroupSummary(
            group_id,
            group.state.value,
            group.protocol_type or "",
            (group.protocol_name or "") if stable else "",
            [
                (
                    member,
                    member.metadata(group.protocol_name) if stable else b"",
                    member.assignment if stable else b"",
                )
                for member in group.members.values()
            ],
        )


__all__ = [
    "GROUPS_MAX",
    "GROUP_ID_NOT_FOUND",
    "GROUP_MEMBERS_MAX",
    "GROUP_SUBSCRIBED_TO_TOPIC",
    "NON_EMPTY_GROUP",
    "Completion",
    "CoordinatorConfig",
    "GroupCoordinator",
    "GroupRecord",
    "GroupState",
    "GroupSummary",
    "JoinResult",
    "JoinedMember",
    "OffsetEntry",
    "SyncResult",
    "group_key",
    "offset_key",
]
