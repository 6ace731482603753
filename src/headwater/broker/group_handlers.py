"""Async glue between Kafka's group APIs and the `GroupCoordinator` state machine.

The state machine decides; this module decodes requests, hands each JoinGroup and SyncGroup a
token and a future, delivers the completions the machine returns, appends the records it
queues to the internal compacted topic `__consumer_offsets`, and ticks it every
`TICK_INTERVAL_MS` so sessions and rebalances expire. Owned by the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from headwater.broker.config import BrokerConfig
from headwater.coordinator.group import (
    NONE,
    UNKNOWN_SERVER_ERROR,
    Completion,
    CoordinatorConfig,
    JoinResult,
    SyncResult,
)
from headwater.coordinator.store import OFFSETS_TOPIC, GroupStore, TransactionStore
from headwater.errors import HeadwaterError
from headwater.log.manager import LogManager
from headwater.protocol import messages as m
from headwater.protocol.connection import Request

_log = logging.getLogger(__name__)

TICK_INTERVAL_MS = 100
UNKNOWN_TOPIC_OR_PARTITION = 3
KAFKA_STORAGE_ERROR = 56
INVALID_REQUEST = 42
COORDINATOR_KEY_TYPE_GROUP = 0
COORDINATOR_KEY_TYPE_TRANSACTION = 1
COORDINATOR_KEY_TYPES = (COORDINATOR_KEY_TYPE_GROUP, COORDINATOR_KEY_TYPE_TRANSACTION)
COORDINATOR_NOT_AVAILABLE = 15
UNSTABLE_OFFSET_COMMIT = 88

# What this module advertises: ranges librdkafka 2.x and the Java 4.x client negotiate.
GROUP_SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    8: (2, 8),  # OffsetCommit
    9: (1, 7),  # OffsetFetch (v8+ batches groups)
    10: (0, 4),  # FindCoordinator
    11: (0, 9),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 4),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 4),  # ListGroups
    42: (0, 2),  # DeleteGroups
    47: (0, 0),  # OffsetDelete
}

Reply = tuple[Any, int] | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def persist_store(store: GroupStore | TransactionStore) -> bool:
    """Append what a coordinator queued (or find what another request left unflushed) and
    wait until it is on disk, the fsync in an executor; False, logged, if it could not be."""
    try:
        end = store.append_or_unflushed_end()
        if end is None:
            return True
        await asyncio.get_running_loop().run_in_executor(None, store.flush, end)
    except (HeadwaterError, OSError):
        _log.exception("writing to %s failed", store.log.topic)
        return False
    return True


class GroupHandlers:
    """Kafka's group APIs for the broker's dispatch table (see `table`)."""

    def __init__(
        self,
        config: BrokerConfig,
        manager: LogManager,
        coordinator_config: CoordinatorConfig | None = None,
        *,
        port: Callable[[], int] | None = None,
    ) -> None:
        """`port` gives the advertised port when it is known only once listening (port 0)."""
        self.config = config
        self._port = port
        self.manager = manager
        self.supported_versions = dict(GROUP_SUPPORTED_VERSIONS)
        self.table: dict[int, Callable[[Request], Awaitable[Reply]]] = {
            8: self.offset_commit,
            9: self.offset_fetch,
            10: self.find_coordinator,
            11: self.join_group,
            12: self.heartbeat,
            13: self.leave_group,
            14: self.sync_group,
            15: self.describe_groups,
            16: self.list_groups,
            42: self.delete_groups,
            47: self.offset_delete,
        }
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[JoinResult | SyncResult]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.store = GroupStore(
            manager, coordinator_config or config.group_coordinator, now_ms=_now_ms()
        )
        self.coordinator = self.store.coordinator

    # --- storage --------------------------------------------------------------------------

    async def persist(self) -> bool:
        """Append the records the machine queued and wait until they are on disk."""
        return await persist_store(self.store)

    # --- completions and time -------------------------------------------------------------

    def _ensure_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_MS / 1000)
            try:
                self._deliver(self.coordinator.tick(_now_ms()))
                await self.persist()
            except Exception:  # a bug here must not stop every group's clock
                _log.exception("group coordinator tick failed")

    def _deliver(self, completions: Iterable[Completion]) -> None:
        for token, result in completions:
            future = self._waiting.pop(token, None)
            if future is not None and not future.done():
                future.set_result(result)

    async def _wait(self, call: Callable[[int], list[Completion]]) -> JoinResult | SyncResult:
        """Run one machine call under a fresh token and wait for that token's completion."""
        self._ensure_ticker()
        token = next(self._tokens)
        future: asyncio.Future[JoinResult | SyncResult] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        self._deliver(call(token))
        await self.persist()
        try:
            return await future
        finally:
            self._waiting.pop(token, None)

    async def close(self) -> None:
        """Stop the clock and answer whoever still waits (the connections are closing)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for future in self._waiting.values():
            if not future.done():
                future.set_result(JoinResult(COORDINATOR_NOT_AVAILABLE))
        self._waiting.clear()
        await self.persist()

    # --- FindCoordinator ------------------------------------------------------------------

    async def find_coordinator(self, request: Request) -> Reply:
        """Every group's and every transactional id's coordinator is this node."""
        body: m.FindCoordinatorRequest = request.body
        host, port = self.config.advertised
        if self._port is not None:
            port = self._port()
        node_id = self.config.node_id
        known = body.key_type in COORDINATOR_KEY_TYPES
        if request.api_version < 4:
            if not known:
                return m.FindCoordinatorResponse(
                    error_code=INVALID_REQUEST, node_id=-1, host="", port=-1
                ), request.api_version
            return m.FindCoordinatorResponse(
                error_code=NONE, node_id=node_id, host=host, port=port
            ), request.api_version
        return m.FindCoordinatorResponse(
            coordinators=[
                m.FindCoordinatorResponseCoordinator(
                    key=key,
                    node_id=node_id if known else -1,
                    host=host if known else "",
                    port=port if known else -1,
                    error_code=NONE if known else INVALID_REQUEST,
                )
                for key in body.coordinator_keys
            ]
        ), request.api_version

    # --- JoinGroup, SyncGroup, Heartbeat, LeaveGroup --------------------------------------

    async def join_group(self, request: Request) -> Reply:
        body: m.JoinGroupRequest = request.body
        version = request.api_version
        result = await self._wait(
            lambda token: self.coordinator.join(
                token,
                _now_ms(),
                group_id=body.group_id,
                member_id=body.member_id,
                group_instance_id=body.group_instance_id if version >= 5 else None,
                client_id=request.client_id or "",
                client_host="",
                session_timeout_ms=body.session_timeout_ms,
                rebalance_timeout_ms=body.rebalance_timeout_ms if version >= 1 else -1,
                protocol_type=body.protocol_type,
                protocols=[(p.name, p.metadata) for p in body.protocols],
                require_known_member_id=version >= 4,
            )
        )
        if not isinstance(result, JoinResult):
            result = JoinResult(UNKNOWN_SERVER_ERROR)
        response = m.JoinGroupResponse(
            error_code=result.error_code,
            generation_id=result.generation_id,
            protocol_type=result.protocol_type,
            protocol_name=result.protocol_name if version >= 7 else (result.protocol_name or ""),
            leader=result.leader,
            skip_assignment=result.skip_assignment and version >= 9,
            member_id=result.member_id,
            members=[
                m.JoinGroupResponseJoinGroupResponseMember(
                    member_id=member.member_id,
                    group_instance_id=member.group_instance_id if version >= 5 else None,
                    metadata=member.metadata,
                )
                for member in result.members
            ],
        )
        if version < 9 and result.skip_assignment:
            response.members = []  # before KIP-814 a rejoining static leader must not reassign
        return response, version

    async def sync_group(self, request: Request) -> Reply:
        body: m.SyncGroupRequest = request.body
        version = request.api_version
        result = await self._wait(
            lambda token: self.coordinator.sync(
                token,
                _now_ms(),
                group_id=body.group_id,
                generation_id=body.generation_id,
                member_id=body.member_id,
                group_instance_id=body.group_instance_id if version >= 3 else None,
                protocol_type=body.protocol_type if version >= 5 else None,
                protocol_name=body.protocol_name if version >= 5 else None,
                assignments=[(a.member_id, a.assignment) for a in body.assignments],
            )
        )
        if not isinstance(result, SyncResult):
            result = SyncResult(result.error_code or UNKNOWN_SERVER_ERROR)
        return m.SyncGroupResponse(
            error_code=result.error_code,
            protocol_type=result.protocol_type,
            protocol_name=result.protocol_name,
            assignment=result.assignment,
        ), version

    async def heartbeat(self, request: Request) -> Reply:
        self._ensure_ticker()
        body: m.HeartbeatRequest = request.body
        error = self.coordinator.heartbeat(
            _now_ms(),
            group_id=body.group_id,
            generation_id=body.generation_id,
            member_id=body.member_id,
            group_instance_id=body.group_instance_id if request.api_version >= 3 else None,
        )
        return m.HeartbeatResponse(error_code=error), request.api_version

    async def leave_group(self, request: Request) -> Reply:
        self._ensure_ticker()
        body: m.LeaveGroupRequest = request.body
        version = request.api_version
        if version >= 3:
            leaving = [(member.member_id, member.group_instance_id) for member in body.members]
        else:
            leaving = [(body.member_id, None)]
        errors, completions = self.coordinator.leave(
            _now_ms(), group_id=body.group_id, members=leaving
        )
        self._deliver(completions)
        await self.persist()
        if version < 3:
            return m.LeaveGroupResponse(error_code=errors[0]), version
        return m.LeaveGroupResponse(
            error_code=NONE,
            members=[
                m.LeaveGroupResponseMemberResponse(
                    member_id=member_id, group_instance_id=instance_id, error_code=error
                )
                for (member_id, instance_id), error in zip(leaving, errors, strict=True)
            ],
        ), version

    # --- OffsetCommit, OffsetFetch --------------------------------------------------------

    async def offset_commit(self, request: Request) -> Reply:
        self._ensure_ticker()
        body: m.OffsetCommitRequest = request.body
        version = request.api_version
        entries: list[tuple[str, int, int, int, str | None]] = []
        unknown: set[tuple[str, int]] = set()
        for topic in body.topics:
            partition_count = self._partition_count(topic.name)
            for partition in topic.partitions:
                if not 0 <= partition.partition_index < partition_count:
                    unknown.add((topic.name, partition.partition_index))
                    continue
                entries.append(
                    (
                        topic.name,
                        partition.partition_index,
                        partition.committed_offset,
                        partition.committed_leader_epoch if version >= 6 else -1,
                        partition.committed_metadata,
                    )
                )
        errors = self.coordinator.commit_offsets(
            _now_ms(),
            group_id=body.group_id,
            generation_id=body.generation_id_or_member_epoch,
            member_id=body.member_id,
            group_instance_id=body.group_instance_id if version >= 7 else None,
            offsets=entries,
        )
        if not await self.persist():
            errors = [KAFKA_STORAGE_ERROR if e == NONE else e for e in errors]
        by_partition = {(t, p): e for (t, p, *_), e in zip(entries, errors, strict=True)}
        return m.OffsetCommitResponse(
            topics=[
                m.OffsetCommitResponseOffsetCommitResponseTopic(
                    name=topic.name,
                    partitions=[
                        m.OffsetCommitResponseOffsetCommitResponsePartition(
                            partition_index=p.partition_index,
                            error_code=UNKNOWN_TOPIC_OR_PARTITION
                            if (topic.name, p.partition_index) in unknown
                            else by_partition[(topic.name, p.partition_index)],
                        )
                        for p in topic.partitions
                    ],
                )
                for topic in body.topics
            ]
        ), version

    def _partition_count(self, topic: str) -> int:
        try:
            return self.manager.topic(topic).partition_count
        except HeadwaterError:
            return 0

    async def offset_fetch(self, request: Request) -> Reply:
        body: m.OffsetFetchRequest = request.body
        version = request.api_version
        wanted: list[tuple[str, int]] | None = None
        if body.topics is not None:
            wanted = [(t.name, p) for t in body.topics for p in t.partition_indexes]
        fetched = self.coordinator.fetch_offsets(body.group_id, wanted)
        # A read-committed consumer (v7+) must not start from an offset an open transaction
        # is about to replace: Kafka answers UNSTABLE_OFFSET_COMMIT and the client retries.
        require_stable = version >= 7 and body.require_stable
        topics: dict[str, list[m.OffsetFetchResponseOffsetFetchResponsePartition]] = {}
        for topic, partition, entry in fetched:
            unstable = require_stable and self.coordinator.has_pending_offset(
                body.group_id, topic, partition
            )
            topics.setdefault(topic, []).append(
                m.OffsetFetchResponseOffsetFetchResponsePartition(
                    partition_index=partition,
                    committed_offset=entry.offset if entry is not None and not unstable else -1,
                    committed_leader_epoch=entry.leader_epoch if entry is not None else -1,
                    metadata=entry.metadata if entry is not None else "",
                    error_code=UNSTABLE_OFFSET_COMMIT if unstable else NONE,
                )
            )
        return m.OffsetFetchResponse(
            error_code=NONE,
            topics=[
                m.OffsetFetchResponseOffsetFetchResponseTopic(name=name, partitions=partitions)
                for name, partitions in topics.items()
            ],
        ), version

    # --- DeleteGroups, OffsetDelete -------------------------------------------------------

    async def delete_groups(self, request: Request) -> Reply:
        body: m.DeleteGroupsRequest = request.body
        errors = self.coordinator.delete_groups(body.groups_names)
        if not await self.persist():
            errors = [KAFKA_STORAGE_ERROR if e == NONE else e for e in errors]
        return m.DeleteGroupsResponse(
            results=[
                m.DeleteGroupsResponseDeletableGroupResult(group_id=group_id, error_code=error)
                for group_id, error in zip(body.groups_names, errors, strict=True)
            ]
        ), request.api_version

    async def offset_delete(self, request: Request) -> Reply:
        body: m.OffsetDeleteRequest = request.body
        wanted = [(t.name, p.partition_index) for t in body.topics for p in t.partitions]
        error, errors = self.coordinator.delete_offsets(body.group_id, wanted)
        if error != NONE:
            return m.OffsetDeleteResponse(error_code=error), request.api_version
        if not await self.persist():
            errors = [KAFKA_STORAGE_ERROR if e == NONE else e for e in errors]
        by_partition = dict(zip(wanted, errors, strict=True))
        return m.OffsetDeleteResponse(
            error_code=NONE,
            topics=[
                m.OffsetDeleteResponseOffsetDeleteResponseTopic(
                    name=topic.name,
                    partitions=[
                        m.OffsetDeleteResponseOffsetDeleteResponsePartition(
                            partition_index=p.partition_index,
                            error_code=by_partition[(topic.name, p.partition_index)],
                        )
                        for p in topic.partitions
                    ],
                )
                for topic in body.topics
            ],
        ), request.api_version

    # --- ListGroups, DescribeGroups -------------------------------------------------------

    async def list_groups(self, request: Request) -> Reply:
        body: m.ListGroupsRequest = request.body
        states = body.states_filter if request.api_version >= 4 else []
        return m.ListGroupsResponse(
            error_code=NONE,
            groups=[
                m.ListGroupsResponseListedGroup(
                    group_id=group_id, protocol_type=protocol_type, group_state=state
                )
                for group_id, protocol_type, state in self.coordinator.list_groups(states)
            ],
        ), request.api_version

    async def describe_groups(self, request: Request) -> Reply:
        body: m.DescribeGroupsRequest = request.body
        described = []
        for group_id in body.groups:
            summary = self.coordinator.describe(group_id)
            described.append(
                m.DescribeGroupsResponseDescribedGroup(
                    error_code=NONE,
                    group_id=group_id,
                    group_state=summary.state,
                    protocol_type=summary.protocol_type,
                    protocol_data=summary.protocol_name,
                    members=[
                        m.DescribeGroupsResponseDescribedGroupMember(
                            member_id=member.member_id,
                            group_instance_id=member.group_instance_id,
                            client_id=member.client_id,
                            client_host=member.client_host,
                            member_metadata=metadata,
                            member_assignment=assignment,
                        )
                        for member, metadata, assignment in summary.members
                    ],
                    authorized_operations=-2147483648,
                )
            )
        return m.DescribeGroupsResponse(groups=described), request.api_version


__all__ = ["GROUP_SUPPORTED_VERSIONS", "OFFSETS_TOPIC", "GroupHandlers", "persist_store"]
