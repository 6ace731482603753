"""Consumer groups for the embedded backend: the broker's `GroupCoordinator`, driven from threads.

`EmbeddedGroups` is the group coordinator of one open data directory in this process. It runs
the very state machine the broker runs (`headwater.coordinator.group`, through the same
`GroupStore` and its `__consumer_offsets` log), so a directory's groups look the same whether a
broker, the `headwater group` commands or an embedded client opened it last. Where the broker
gives each JoinGroup/SyncGroup a token and a future, this module gives it a token and a
`GroupMember` to deliver the completion to; where the broker persists before answering, so do
we: every coordinator call that queued records is followed by `GroupStore.persist()` (append and
flush) before any answer is handed to anyone.

`GroupMember` is the client half, Kafka's consumer coordinator: a member of one group for one
consumer, speaking Kafka's consumer protocol (protocol type "consumer", one protocol per
assignor in `partition.assignment.strategy` order, `ConsumerProtocolSubscription` metadata). The
leader computes the assignment with `_assignors`. Joins, syncs and heartbeats are made by the
`EmbeddedGroups` ticker thread; the consumer thread only polls for events (see `GroupMember`).
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from headwater.client._assignors import ASSIGNORS, COOPERATIVE, MemberSubscription, assign
from headwater.client._config import setting
from headwater.client._consumer_protocol import (
    PROTOCOL_TYPE,
    Assignment,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from headwater.client._types import (
    GroupDescription,
    GroupListing,
    MemberDescription,
    TopicPartition,
)
from headwater.coordinator.group import (
    COORDINATOR_NOT_AVAILABLE,
    FENCED_INSTANCE_ID,
    ILLEGAL_GENERATION,
    MEMBER_ID_REQUIRED,
    NONE,
    PROTOCOL_METADATA_BYTES_MAX,
    REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID,
    UNKNOWN_SERVER_ERROR,
    Completion,
    CoordinatorConfig,
    JoinedMember,
    JoinResult,
    SyncResult,
)
from headwater.coordinator.store import INTERNAL_TOPICS, OFFSETS_TOPIC, GroupStore
from headwater.errors import ClientClosedError, ClientError, ConfigError, HeadwaterError
from headwater.log.manager import LogManager
from headwater.protocol._primitives import MalformedFrameError

_log = logging.getLogger(__name__)

# How often the ticker expires sessions and rebalances (the broker's cadence) and, at the
# latest, drives every member's timers (heartbeats, poll timeout, metadata checks).
TICK_INTERVAL_MS = 100
# How often a member re-reads topic metadata: a pattern subscription picks up new matching
# topics, and the leader notices partition counts changing, within this long.
METADATA_REFRESH_INTERVAL_MS = 1_000
# Wait before retrying a JoinGroup the coordinator could not take (Kafka's retry.backoff.ms).
RETRY_BACKOFF_MS = 100
# Exchanges (JoinGroup, SyncGroup) one drive of a member may make before yielding the thread.
EXCHANGES_PER_DRIVE_MAX = 8
# How long `EmbeddedGroups.close` waits for the ticker thread to stop.
TICKER_STOP_TIMEOUT_S = 5.0
# Reported as every embedded member's client host (there is no connection to name).
CLIENT_HOST = "localhost"
# Topics a pattern never matches (Kafka's exclude.internal.topics).

UNKNOWN_TOPIC_OR_PARTITION = 3
KAFKA_STORAGE_ERROR = 56

_ERROR_NAMES = {
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    12: "OFFSET_METADATA_TOO_LARGE",
    15: "COORDINATOR_NOT_AVAILABLE",
    22: "ILLEGAL_GENERATION",
    23: "INCONSISTENT_GROUP_PROTOCOL",
    24: "INVALID_GROUP_ID",
    25: "UNKNOWN_MEMBER_ID",
    26: "INVALID_SESSION_TIMEOUT",
    27: "REBALANCE_IN_PROGRESS",
    56: "KAFKA_STORAGE_ERROR",
    68: "NON_EMPTY_GROUP",
    69: "GROUP_ID_NOT_FOUND",
    79: "MEMBER_ID_REQUIRED",
    81: "GROUP_MAX_SIZE_REACHED",
    82: "FENCED_INSTANCE_ID",
}
_RETRIABLE = frozenset({COORDINATOR_NOT_AVAILABLE, REBALANCE_IN_PROGRESS, KAFKA_STORAGE_ERROR})

Event = tuple[str, list[TopicPartition]]


def _wall_ms() -> int:
    """The coordinator's clock (deadlines and commit timestamps), as the broker's."""
    return time.time_ns() // 1_000_000


def _mono_ms() -> int:
    """Members' own timers."""
    return time.monotonic_ns() // 1_000_000


def _error(what: str, code: int) -> ClientError:
    name = _ERROR_NAMES.get(code, "error")
    return ClientError(f"{what}: {name} ({code})", error_code=code, retriable=code in _RETRIABLE)


class EmbeddedGroups:
    """Owns one data directory's `GroupStore` (coordinator + `__consumer_offsets`), the ticker
    thread and its members; thread-safe (`_lock` serializes every coordinator and store call).

    One per open data directory per process. Lock order: a member's lock, then this one; never
    the reverse (answers reach members through their inbox, not their lock)."""

    def __init__(
        self, manager: LogManager, coordinator_config: CoordinatorConfig | None = None
    ) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        self._store = GroupStore(
            manager, coordinator_config or CoordinatorConfig(), now_ms=_wall_ms()
        )
        self._tokens = itertools.count(1)
        self._waiting: dict[int, GroupMember] = {}  # token -> the member its answer goes to
        self._members: list[GroupMember] = []
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._ticker = threading.Thread(target=self._run, name="headwater-groups", daemon=True)
        self._ticker.start()

    # --- members ------------------------------------------------------------------------

    def member(
        self,
        group_id: str,
        config: dict[str, Any],
        list_topics: Callable[[], list[str]],
        partition_count: Callable[[str], int],
    ) -> GroupMember:
        """A new member of `group_id` (it joins once subscribed). `list_topics` and
        `partition_count` are its view of metadata; they are called without this object's lock
        held and must not call back into the member."""
        member = GroupMember(self, group_id, config, list_topics, partition_count)
        with self._lock:
            self._check_open()
            self._members.append(member)
        return member

    def _forget(self, member: GroupMember) -> None:
        with self._lock:
            if member in self._members:
                self._members.remove(member)
            for token in [t for t, m in self._waiting.items() if m is member]:
                del self._waiting[token]

    def _poke(self) -> None:
        """Have the ticker drive the members now rather than at the next tick."""
        self._wake.set()

    # --- the coordinator, under the lock --------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the embedded group coordinator is closed")

    def _persist(self) -> bool:
        """Make what the coordinator queued durable; False (logged) if the disk refused."""
        try:
            self._store.persist()
        except (HeadwaterError, OSError):
            _log.exception("writing to %s failed", OFFSETS_TOPIC)
            return False
        return True

    def _route(self, completions: list[Completion]) -> None:
        """Hand each answer to the member waiting for it (after `_persist`, never before)."""
        for token, result in completions:
            member = self._waiting.pop(token, None)
            if member is not None:
                member._inbox.append((token, result))
        if completions:
            self._wake.set()

    def _join(self, member: GroupMember, **request: Any) -> int:
        with self._lock:
            self._check_open()
            token = next(self._tokens)
            self._waiting[token] = member
            completions = self._store.coordinator.join(token, _wall_ms(), **request)
            self._persist()
            self._route(completions)
        return token

    def _sync(self, member: GroupMember, **request: Any) -> int:
        with self._lock:
            self._check_open()
            token = next(self._tokens)
            self._waiting[token] = member
            completions = self._store.coordinator.sync(token, _wall_ms(), **request)
            self._persist()
            self._route(completions)
        return token

    def _heartbeat(self, **request: Any) -> int:
        with self._lock:
            self._check_open()
            return self._store.coordinator.heartbeat(_wall_ms(), **request)

    def _leave(self, group_id: str, member_id: str, instance_id: str | None) -> int:
        with self._lock:
            if self._closed:
                return NONE
            errors, completions = self._store.coordinator.leave(
                _wall_ms(), group_id=group_id, members=[(member_id, instance_id)]
            )
            self._persist()
            self._route(completions)
        return errors[0]

    def _partition_count(self, topic: str) -> int:
        try:
            return self._manager.topic(topic).partition_count
        except HeadwaterError:
            return 0

    def _commit(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        instance_id: str | None,
        offsets: Mapping[TopicPartition, int],
    ) -> None:
        """Commit, durably, or raise `ClientError` with Kafka's code for the first failure.
        Partitions that exist are committed even when others do not (as a broker does)."""
        entries: list[tuple[str, int, int, int, str | None]] = []
        unknown: list[TopicPartition] = []
        for tp, offset in offsets.items():
            if 0 <= tp.partition < self._partition_count(tp.topic):
                entries.append((tp.topic, tp.partition, int(offset), -1, None))
            else:
                unknown.append(tp)
        errors: list[int] = []
        durable = True
        if entries:
            with self._lock:
                self._check_open()
                errors = self._store.coordinator.commit_offsets(
                    _wall_ms(),
                    group_id=group_id,
                    generation_id=generation_id,
                    member_id=member_id,
                    group_instance_id=instance_id,
                    offsets=entries,
                )
                durable = self._persist()
        for (topic, partition, *_), code in zip(entries, errors, strict=True):
            if code != NONE:
                raise _error(f"committing {topic}/{partition} for group {group_id!r}", code)
        if unknown:
            tp = unknown[0]
            raise _error(
                f"committing {tp.topic}/{tp.partition} for group {group_id!r}",
                UNKNOWN_TOPIC_OR_PARTITION,
            )
        if not durable:
            raise _error(f"committing for group {group_id!r}", KAFKA_STORAGE_ERROR)

    # --- offsets and groups (consumers without membership, and the admin client) ---------

    def commit_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """A "simple" commit (generation -1, no member): allowed while the group has no
        members, as in Kafka; else `ClientError` with the coordinator's code."""
        self._commit(group_id, -1, "", None, offsets)

    def committed(
        self, group_id: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        with self._lock:
            self._check_open()
            fetched = self._store.coordinator.fetch_offsets(
                group_id, [(tp.topic, tp.partition) for tp in partitions]
            )
        return {
            TopicPartition(topic, partition): entry.offset if entry is not None else None
            for topic, partition, entry in fetched
        }

    def list_groups(self) -> list[GroupListing]:
        with self._lock:
            self._check_open()
            groups = self._store.coordinator.list_groups()
        return [
            GroupListing(group_id, state, protocol_type)
            for group_id, protocol_type, state in sorted(groups)
        ]

    def describe_group(self, group_id: str) -> GroupDescription:
        """Kafka's DescribeGroups: an unknown group is "Dead" with no members; assignments are
        known once the group is Stable."""
        with self._lock:
            self._check_open()
            summary = self._store.coordinator.describe(group_id)
            members = [
                (m.member_id, m.client_id, m.client_host, m.group_instance_id, assignment)
                for m, _, assignment in summary.members
            ]
        described: list[MemberDescription] = []
        for member_id, client_id, host, instance_id, assignment in members:
            partitions: list[TopicPartition] = []
            if summary.protocol_type == PROTOCOL_TYPE and assignment:
                try:
                    partitions = sorted(decode_assignment(assignment).partitions)
                except MalformedFrameError:
                    _log.warning(
                        "member %s of %s has an undecodable assignment", member_id, group_id
                    )
            described.append(MemberDescription(member_id, client_id, host, instance_id, partitions))
        return GroupDescription(
            summary.group_id, summary.state, summary.protocol_type, summary.protocol_name, described
        )

    def list_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        with self._lock:
            self._check_open()
            fetched = self._store.coordinator.fetch_offsets(group_id, None)
        return {
            TopicPartition(topic, partition): entry.offset
            for topic, partition, entry in fetched
            if entry is not None
        }

    def alter_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Set committed offsets, as Kafka's admin client does: a commit without a member, so a
        group with members refuses it (UNKNOWN_MEMBER_ID, or REBALANCE_IN_PROGRESS mid-sync)."""
        self._commit(group_id, -1, "", None, offsets)

    def delete_groups(self, group_ids: Sequence[str]) -> None:
        """Delete every group that can be; `ClientError` for the first that could not
        (NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, ...)."""
        with self._lock:
            self._check_open()
            errors = self._store.coordinator.delete_groups(list(group_ids))
            durable = self._persist()
        for group_id, code in zip(group_ids, errors, strict=True):
            if code != NONE:
                raise _error(f"deleting group {group_id!r}", code)
        if not durable:
            raise _error("deleting groups", KAFKA_STORAGE_ERROR)

    # --- the ticker ------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = _mono_ms()
        while not self._stopping:
            self._wake.wait(max(0, next_tick - _mono_ms()) / 1000)
            self._wake.clear()
            if self._stopping:
                break
            if _mono_ms() >= next_tick:
                next_tick = _mono_ms() + TICK_INTERVAL_MS
                try:
                    with self._lock:
                        completions = self._store.coordinator.tick(_wall_ms())
                        self._persist()
                        self._route(completions)
                except Exception:  # a bug here must not stop every group's clock
                    _log.exception("group coordinator tick failed")
            with self._lock:
                members = list(self._members)
            for member in members:
                try:
                    member._drive()
                except Exception:
                    _log.exception("driving a member of group %r failed", member.group_id)

    def close(self) -> None:
        """Stop the ticker, have every member leave (static members stay, as in Kafka), and
        persist. Idempotent."""
        with self._lock:
            if self._closed or self._stopping:
                return
            self._stopping = True
        self._wake.set()
        if self._ticker is not threading.current_thread():
            self._ticker.join(TICKER_STOP_TIMEOUT_S)
        with self._lock:
            members = list(self._members)
        for member in members:
            try:
                member.close()
            except Exception:
                _log.exception("closing a member of group %r failed", member.group_id)
        with self._lock:
            self._persist()
            self._closed = True
            self._waiting.clear()


class _Phase(enum.Enum):
    IDLE = "idle"  # not subscribed
    WAITING = "waiting"  # wants to join: after the consumer handled revocations, or a backoff
    JOINING = "joining"  # JoinGroup sent, awaiting its answer
    SYNCING = "syncing"  # SyncGroup sent, awaiting its answer
    STABLE = "stable"  # assigned; heartbeating
    LEAVING = "leaving"  # unsubscribed: leaves once the consumer handled the revocation
    POLL_EXPIRED = "poll-expired"  # left after max.poll.interval.ms; rejoins on the next poll
    FAILED = "failed"  # a fatal error (fenced, bad config); raised from `poll_seen`
    CLOSED = "closed"


class GroupMember:
    """Owns one consumer's membership of one group (ids, generation, owned partitions, events);
    thread-safe (`_lock`): the ticker drives it, the consumer thread calls the public methods.

    State machine (Kafka's consumer coordinator, classic protocol):
    IDLE -subscribe-> WAITING -JoinGroup-> JOINING -answer-> SYNCING -answer-> STABLE;
    STABLE -heartbeat says rebalance / subscription or metadata changed / cooperative revoke->
    WAITING (eager: revoke everything first; cooperative: only what moves). WAITING does not
    send its JoinGroup until the consumer handled every revoke and lost event (bounded by
    max.poll.interval.ms), so commits in on_revoke still use the old generation. A reset
    generation (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION) reports owned partitions "lost". No poll
    for max.poll.interval.ms: leave, report "lost", POLL_EXPIRED until the next poll.

    Events (`take_events`), in order: ("revoke", tps) before partitions go, only when non-empty;
    ("assign", tps) after every completed rebalance with the partitions added (possibly none,
    as Kafka calls onPartitionsAssigned after every rebalance); ("lost", tps) when partitions
    were taken without a revoke. `assignment()` already reflects queued events.
    """

    def __init__(
        self,
        groups: EmbeddedGroups,
        group_id: str,
        config: dict[str, Any],
        list_topics: Callable[[], list[str]],
        partition_count: Callable[[str], int],
    ) -> None:
        self._groups = groups
        self.group_id = group_id
        self._list_topics = list_topics
        self._partition_count = partition_count
        self._instance_id: str | None = setting(config, "group.instance.id")
        self._client_id: str = setting(config, "client.id")
        self._session_timeout_ms: int = setting(config, "session.timeout.ms")
        self._heartbeat_interval_ms: int = setting(config, "heartbeat.interval.ms")
        self._rebalance_timeout_ms: int = setting(config, "max.poll.interval.ms")
        strategies = setting(config, "partition.assignment.strategy")
        if isinstance(strategies, str):
            strategies = [name.strip() for name in strategies.split(",") if name.strip()]
        self._strategies: tuple[str, ...] = tuple(strategies)
        if not self._strategies or any(name not in ASSIGNORS for name in self._strategies):
            raise ConfigError(f"partition.assignment.strategy {strategies!r}: unknown assignor")
        self._cooperative = all(name in COOPERATIVE for name in self._strategies)
        self._lock = threading.Lock()
        self._inbox: collections.deque[tuple[int, JoinResult | SyncResult]] = collections.deque()
        self._phase = _Phase.IDLE
        self._token: int | None = None  # the request whose answer we wait for
        self._member_id = ""
        self._generation = -1
        self._protocol: str | None = None
        self._leader = False
        self._leader_counts: dict[str, int] = {}  # partition counts the leader assigned from
        self._explicit: list[str] | None = None
        self._pattern: re.Pattern[str] | None = None
        self._topics: list[str] = []  # the subscription, resolved
        self._joined_topics: list[str] | None = None  # what the last JoinGroup subscribed to
        self._rejoin = False
        self._owned: set[TopicPartition] = set()
        self._events: list[Event] = []
        self._drops_pending = 0  # revoke/lost events queued or taken but not yet handled
        self._drops_taken = 0  # ... of which taken by the consumer
        self._drops_since_ms = 0
        self._fatal: ClientError | None = None
        now = _mono_ms()
        self._last_poll_ms = now
        self._next_heartbeat_ms = now
        self._next_metadata_ms = now
        self._retry_at_ms = now

    # --- the consumer's side ------------------------------------------------------------

    @property
    def member_id(self) -> str:
        with self._lock:
            return self._member_id

    @property
    def generation_id(self) -> int:
        with self._lock:
            return self._generation

    def subscribe(self, topics: list[str] | None, pattern: re.Pattern[str] | None) -> None:
        """Subscribe to `topics`, or to topics matching `pattern` (searched, as librdkafka
        does), and start joining; None and None (or no topics) unsubscribes: everything owned
        is revoked and, once that is handled, the member leaves the group."""
        if topics is not None and pattern is not None:
            raise ValueError("subscribe to topics or to a pattern, not both")
        with self._lock:
            self._check_usable()
            now = _mono_ms()
            if pattern is None and not topics:
                self._unsubscribe(now)
            else:
                self._explicit = sorted(set(topics)) if topics is not None else None
                self._pattern = pattern
                self._topics = self._resolve_topics()
                self._last_poll_ms = now
                self._next_metadata_ms = now + METADATA_REFRESH_INTERVAL_MS
                if self._phase in (_Phase.IDLE, _Phase.LEAVING):
                    self._phase = _Phase.WAITING
                    self._retry_at_ms = now
                elif self._topics != self._joined_topics:
                    self._rejoin = True
        self._groups._poke()

    def take_events(self) -> list[Event]:
        """Events for the consumer to apply, in order (see the class); call `events_handled`
        once they are applied."""
        with self._lock:
            events, self._events = self._events, []
            self._drops_taken += sum(1 for kind, _ in events if kind != "assign")
            return events

    def events_handled(self) -> None:
        """The consumer applied (and ran the callbacks of) every event it took."""
        with self._lock:
            self._drops_pending = max(0, self._drops_pending - self._drops_taken)
            self._drops_taken = 0
        self._groups._poke()

    def assignment(self) -> set[TopicPartition]:
        with self._lock:
            return set(self._owned)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit as this member (its id and generation); `ClientError` with Kafka's code on
        failure: REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID."""
        if not offsets:
            return
        with self._lock:
            if self._fatal is not None:
                raise self._fatal
            if self._phase is _Phase.CLOSED:
                raise ClientClosedError(f"the member of group {self.group_id!r} is closed")
            if self._generation < 0 or not self._member_id:
                joining = self._phase in (_Phase.WAITING, _Phase.JOINING, _Phase.SYNCING)
                code = REBALANCE_IN_PROGRESS if joining else UNKNOWN_MEMBER_ID
                raise _error(f"committing for group {self.group_id!r}", code)
            generation, member_id = self._generation, self._member_id
            self._groups._commit(self.group_id, generation, member_id, self._instance_id, offsets)

    def poll_seen(self) -> None:
        """The consumer polled. Raises the `ClientError` that ended the membership for good
        (a fenced static member, an invalid session timeout, ...), as Kafka's poll does."""
        with self._lock:
            if self._fatal is not None:
                raise self._fatal
            self._last_poll_ms = _mono_ms()
            if self._phase is not _Phase.POLL_EXPIRED:
                return
            self._phase = _Phase.WAITING
            self._retry_at_ms = self._last_poll_ms
        self._groups._poke()

    def close(self) -> None:
        """Leave the group, unless static (group.instance.id): a static member stays until its
        session times out, so a restart within session.timeout.ms keeps its partitions. Emits no
        events: the consumer revokes its assignment itself before closing. Idempotent."""
        with self._lock:
            if self._phase is _Phase.CLOSED:
                return
            if self._member_id and self._instance_id is None and self._phase is not _Phase.FAILED:
                self._groups._leave(self.group_id, self._member_id, None)
            self._phase = _Phase.CLOSED
            self._token = None
            self._owned.clear()
        self._groups._forget(self)

    # --- driving (the ticker's side) ----------------------------------------------------

    def _check_usable(self) -> None:
        if self._phase is _Phase.CLOSED:
            raise ClientClosedError(f"the member of group {self.group_id!r} is closed")
        if self._fatal is not None:
            raise self._fatal

    def _drive(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # the consumer thread is in here; the next tick comes soon
        try:
            for _ in range(EXCHANGES_PER_DRIVE_MAX):
                now = _mono_ms()
                self._take_answers(now)
                if not self._act(now):
                    break
        finally:
            self._lock.release()

    def _act(self, now: int) -> bool:
        """One step of the state machine; True when it sent a JoinGroup (its answer may be in
        the inbox already)."""
        phase = self._phase
        if phase in (_Phase.IDLE, _Phase.CLOSED, _Phase.FAILED, _Phase.POLL_EXPIRED):
            return False
        if phase is not _Phase.LEAVING and now - self._last_poll_ms > self._rebalance_timeout_ms:
            self._expire_poll(now)
            return False
        if phase is _Phase.LEAVING:
            self._heartbeat_if_due(now)
            if self._phase is _Phase.LEAVING and self._gate_open(now):
                if self._member_id and self._instance_id is None:
                    self._groups._leave(self.group_id, self._member_id, None)
                self._reset_generation(now)
                self._phase = _Phase.IDLE
            return False
        if now >= self._next_metadata_ms:
            self._refresh_metadata(now)
        if self._phase is _Phase.STABLE:
            if not self._rejoin:
                self._heartbeat_if_due(now)
            if self._phase is _Phase.STABLE and self._rejoin:
                self._prepare_rejoin(now)
        if self._phase is _Phase.WAITING:
            self._heartbeat_if_due(now)
            if self._phase is _Phase.WAITING and now >= self._retry_at_ms and self._gate_open(now):
                return self._send_join(now)
        return False

    def _take_answers(self, now: int) -> None:
        while self._inbox:
            token, result = self._inbox.popleft()
            if token != self._token:
                continue  # an answer to a request we gave up on
            self._token = None
            if isinstance(result, JoinResult):
                self._on_join(result, now)
            else:
                self._on_sync(result, now)

    # --- events and the revoke gate -----------------------------------------------------

    def _queue(self, kind: str, partitions: set[TopicPartition], now: int) -> None:
        if kind == "assign":
            self._owned |= partitions
        else:
            if not partitions:
                return
            self._owned -= partitions
            if self._drops_pending == 0:
                self._drops_since_ms = now
            self._drops_pending += 1
        self._events.append((kind, sorted(partitions)))

    def _gate_open(self, now: int) -> bool:
        """No revoke or lost event awaits the consumer, or it has had max.poll.interval.ms."""
        if self._drops_pending <= 0:
            return True
        if now - self._drops_since_ms < self._rebalance_timeout_ms:
            return False
        _log.warning(
            "group %r: the consumer did not handle a revocation within %d ms; going on",
            self.group_id,
            self._rebalance_timeout_ms,
        )
        self._drops_pending = self._drops_taken = 0
        return True

    # --- transitions ---------------------------------------------------------------------

    def _reset_generation(self, now: int) -> None:
        """Forget the generation (Kafka's resetGenerationOnResponseError): what is still owned
        is lost."""
        self._queue("lost", set(self._owned), now)
        self._member_id = ""
        self._generation = -1
        self._leader = False
        self._leader_counts = {}

    def _fail(self, error: ClientError, now: int) -> None:
        _log.error("group %r: %s", self.group_id, error)
        self._queue("lost", set(self._owned), now)
        self._fatal = error
        self._phase = _Phase.FAILED
        self._token = None

    def _expire_poll(self, now: int) -> None:
        """max.poll.interval.ms passed without a poll: leave like Java's consumer (a static
        member only forgets its generation), report "lost", rejoin on the next poll."""
        _log.warning(
            "group %r: no poll for %d ms (max.poll.interval.ms); leaving the group",
            self.group_id,
            self._rebalance_timeout_ms,
        )
        if self._member_id and self._instance_id is None:
            self._groups._leave(self.group_id, self._member_id, None)
        self._reset_generation(now)
        self._token = None
        self._phase = _Phase.POLL_EXPIRED

    def _prepare_rejoin(self, now: int) -> None:
        """Kafka's onJoinPrepare: eager revokes everything, cooperative only what the
        subscription no longer covers; then wait for the consumer before joining."""
        if self._pattern is not None:
            self._topics = self._resolve_topics()
        if self._cooperative:
            subscribed = set(self._topics)
            self._queue("revoke", {tp for tp in self._owned if tp.topic not in subscribed}, now)
        else:
            self._queue("revoke", set(self._owned), now)
        self._rejoin = False
        self._phase = _Phase.WAITING
        self._retry_at_ms = now

    def _unsubscribe(self, now: int) -> None:
        self._explicit = None
        self._pattern = None
        self._topics = []
        self._rejoin = False
        self._queue("revoke", set(self._owned), now)
        if self._member_id or self._phase in (_Phase.JOINING, _Phase.SYNCING):
            self._phase = _Phase.LEAVING
        else:
            self._phase = _Phase.IDLE

    # --- metadata ------------------------------------------------------------------------

    def _resolve_topics(self) -> list[str]:
        if self._explicit is not None:
            return list(self._explicit)
        if self._pattern is None:
            return []
        try:
            names = self._list_topics()
        except HeadwaterError:
            _log.warning("group %r: listing topics failed", self.group_id, exc_info=True)
            return list(self._topics)
        pattern = self._pattern
        return sorted(n for n in set(names) if n not in INTERNAL_TOPICS and pattern.search(n))

    def _count(self, topic: str) -> int:
        try:
            return max(0, int(self._partition_count(topic)))
        except HeadwaterError:
            return 0

    def _refresh_metadata(self, now: int) -> None:
        """Rejoin when a pattern now matches other topics, or (leader) when a partition count
        the assignment was made from changed, as Kafka's consumer does on metadata updates."""
        self._next_metadata_ms = now + METADATA_REFRESH_INTERVAL_MS
        if self._pattern is not None:
            topics = self._resolve_topics()
            if topics != self._topics:
                self._topics = topics
                self._rejoin = True
        if self._leader and self._phase is _Phase.STABLE:
            counts = {topic: self._count(topic) for topic in self._leader_counts}
            if counts != self._leader_counts:
                self._rejoin = True

    # --- JoinGroup ------------------------------------------------------------------------

    def _protocols(self) -> list[tuple[str, bytes]]:
        """One protocol per assignor, each with our ConsumerProtocolSubscription. A static
        member that comes back keeps its place even though its bytes differ: the coordinator
        rebalances only if the group's selected protocol would change (KIP-345)."""
        owned = sorted(self._owned) if self._cooperative else []
        metadata = encode_subscription(
            Subscription(list(self._topics), None, owned, self._generation)
        )
        if len(metadata) > PROTOCOL_METADATA_BYTES_MAX:
            raise _error(
                f"group {self.group_id!r}: a subscription of {len(self._topics)} topics is too "
                "large to join with",
                UNKNOWN_SERVER_ERROR,
            )
        return [(name, metadata) for name in self._strategies]

    def _send_join(self, now: int) -> bool:
        if self._pattern is not None:
            self._topics = self._resolve_topics()
        try:
            protocols = self._protocols()
        except ClientError as error:
            self._fail(error, now)
            return False
        self._joined_topics = list(self._topics)
        self._rejoin = False
        token = self._groups._join(
            self,
            group_id=self.group_id,
            member_id=self._member_id,
            group_instance_id=self._instance_id,
            client_id=self._client_id,
            client_host=CLIENT_HOST,
            session_timeout_ms=self._session_timeout_ms,
            rebalance_timeout_ms=self._rebalance_timeout_ms,
            protocol_type=PROTOCOL_TYPE,
            protocols=protocols,
            require_known_member_id=True,
        )
        self._token, self._phase = token, _Phase.JOINING  # its answer may be in the inbox
        return True

    def _on_join(self, result: JoinResult, now: int) -> None:
        code = result.error_code
        if self._phase is _Phase.LEAVING:
            if code == NONE or (code == MEMBER_ID_REQUIRED and result.member_id):
                self._member_id = result.member_id  # so that leaving removes it
            return
        if code == NONE:
            self._member_id = result.member_id
            self._generation = result.generation_id
            self._protocol = result.protocol_name
            self._leader = result.leader == result.member_id
            assignments: list[tuple[str, bytes]] = []
            if self._leader:
                assignments = self._assign(result.members, compute=not result.skip_assignment)
            else:
                self._leader_counts = {}
            token = self._groups._sync(
                self,
                group_id=self.group_id,
                generation_id=self._generation,
                member_id=self._member_id,
                group_instance_id=self._instance_id,
                protocol_type=PROTOCOL_TYPE,
                protocol_name=self._protocol,
                assignments=assignments,
            )
            self._token, self._phase = token, _Phase.SYNCING
        elif code == MEMBER_ID_REQUIRED:
            self._member_id = result.member_id  # Kafka's KIP-394: join again with this id
            self._phase = _Phase.WAITING
            self._retry_at_ms = now
        elif code in (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION):
            self._reset_generation(now)
            self._phase = _Phase.WAITING
            self._retry_at_ms = now
        elif code in (REBALANCE_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, UNKNOWN_SERVER_ERROR):
            self._phase = _Phase.WAITING
            self._retry_at_ms = now + RETRY_BACKOFF_MS
        else:  # FENCED_INSTANCE_ID, INVALID_SESSION_TIMEOUT, INCONSISTENT_GROUP_PROTOCOL, ...
            self._fail(_error(f"joining group {self.group_id!r}", code), now)

    def _assign(self, joined: list[JoinedMember], *, compute: bool) -> list[tuple[str, bytes]]:
        """The leader's SyncGroup assignments from every member's subscription (or none, when
        the coordinator says the assignment stands: a static leader's return)."""
        members: list[MemberSubscription] = []
        for each in joined:
            try:
                subscription = decode_subscription(each.metadata)
            except MalformedFrameError:
                _log.warning(
                    "group %r: member %s sent an undecodable subscription",
                    self.group_id,
                    each.member_id,
                )
                subscription = Subscription([])
            generation = subscription.generation_id
            data = subscription.user_data
            if generation < 0 and data is not None and len(data) == 4:
                generation = int.from_bytes(data, "big", signed=True)  # older sticky clients
            members.append(
                MemberSubscription(
                    each.member_id,
                    frozenset(subscription.topics),
                    frozenset(subscription.owned_partitions),
                    generation,
                    each.group_instance_id,
                )
            )
        topics = sorted({topic for m in members for topic in m.topics})
        counts = {topic: self._count(topic) for topic in topics}
        self._leader_counts = counts
        if not compute:
            return []
        protocol = self._protocol or ""
        if protocol not in ASSIGNORS:
            _log.error("group %r: no assignor named %r", self.group_id, protocol)
            return []
        present = {topic: count for topic, count in counts.items() if count > 0}
        result = assign(protocol, members, present)
        return [
            (m.member_id, encode_assignment(Assignment(result.get(m.member_id, []))))
            for m in members
        ]

    # --- SyncGroup, Heartbeat ------------------------------------------------------------

    def _on_sync(self, result: SyncResult, now: int) -> None:
        code = result.error_code
        if self._phase is _Phase.LEAVING:
            return
        if code == NONE:
            try:
                assigned = set(decode_assignment(result.assignment).partitions)
            except MalformedFrameError:
                _log.warning("group %r: undecodable assignment; taking none", self.group_id)
                assigned = set()
            revoked = self._owned - assigned
            self._queue("revoke", revoked, now)
            self._queue("assign", assigned - self._owned, now)
            self._phase = _Phase.STABLE
            self._next_heartbeat_ms = now + self._heartbeat_interval_ms
            if revoked and self._cooperative:
                self._rejoin = True  # the revoked partitions go to their owners next round
            if self._topics != self._joined_topics:
                self._rejoin = True
        elif code in (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION):
            self._reset_generation(now)
            self._phase = _Phase.WAITING
            self._retry_at_ms = now
        elif code in (REBALANCE_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, UNKNOWN_SERVER_ERROR):
            self._prepare_rejoin(now)
            if code != REBALANCE_IN_PROGRESS:
                self._retry_at_ms = now + RETRY_BACKOFF_MS
        else:
            self._fail(_error(f"syncing group {self.group_id!r}", code), now)

    def _heartbeat_if_due(self, now: int) -> None:
        if self._generation < 0 or not self._member_id or now < self._next_heartbeat_ms:
            return
        self._next_heartbeat_ms = now + self._heartbeat_interval_ms
        code = self._groups._heartbeat(
            group_id=self.group_id,
            generation_id=self._generation,
            member_id=self._member_id,
            group_instance_id=self._instance_id,
        )
        if code == NONE:
            return
        if code == REBALANCE_IN_PROGRESS:
            if self._phase is _Phase.STABLE:
                self._rejoin = True
        elif code in (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION):
            self._reset_generation(now)
            if self._phase is _Phase.STABLE:
                self._phase = _Phase.WAITING
                self._retry_at_ms = now
        elif code == FENCED_INSTANCE_ID:
            self._fail(_error(f"heartbeat for group {self.group_id!r}", code), now)
        # COORDINATOR_NOT_AVAILABLE and the like: try again at the next interval


__all__ = [
    "CLIENT_HOST",
    "METADATA_REFRESH_INTERVAL_MS",
    "TICK_INTERVAL_MS",
    "EmbeddedGroups",
    "GroupMember",
]
