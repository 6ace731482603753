"""Async glue between Kafka's transaction APIs and the `TransactionCoordinator` state machine.

The machine decides; this module decodes requests, makes each decision durable in
`__transaction_state` before answering, and writes the transaction markers the machine asks
for: a control batch on every data partition the transaction touched, and, for the
`__consumer_offsets` partition (a transaction that sent offsets), the settling of the group
coordinator's pending offsets. Markers are written before EndTxn is answered, so a committed
transaction is readable by read-committed consumers as soon as the producer's commit returns;
a marker that could not be written is retried by the ticker, which also aborts transactions
past their timeout. Owned by the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from headwater.broker.config import BrokerConfig
from headwater.broker.group_handlers import GroupHandlers, persist_store
from headwater.broker.producer_ids import ProducerIdAllocator, init_producer_id
from headwater.coordinator.store import OFFSETS_TOPIC, TransactionStore
from headwater.coordinator.transaction import (
    CONCURRENT_TRANSACTIONS,
    NONE,
    PRODUCER_FENCED,
    MarkerRequest,
    TransactionState,
)
from headwater.errors import HeadwaterError, UnknownTopicOrPartitionError
from headwater.log.manager import LogManager
from headwater.log.partition_log import PartitionLog
from headwater.log.producer_state import InvalidProducerEpochError
from headwater.log.record_batch import BATCH_HEADER_SIZE, ControlType, parse_header
from headwater.protocol import messages as m
from headwater.protocol.connection import Request

_log = logging.getLogger(__name__)

# How often transactions past their timeout are aborted and unwritten markers retried.
TICK_INTERVAL_MS = 500
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
COORDINATOR_NOT_AVAILABLE = 15
INVALID_REQUEST = 42
# A batch's attributes are the int16 at bytes 21-22; bit 4 marks it transactional.
_ATTRIBUTES_LOW_BYTE = 22
_TRANSACTIONAL = 0x10

# Client versions of the transaction APIs (protocol v1 transactions, before KIP-890).
TRANSACTION_SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    22: (0, 4),  # InitProducerId
    24: (0, 3),  # AddPartitionsToTxn (v4+ is broker to broker)
    25: (0, 3),  # AddOffsetsToTxn
    26: (0, 3),  # EndTxn (v5 bumps the epoch per transaction: KIP-890 part 2)
    28: (0, 3),  # TxnOffsetCommit
    65: (0, 0),  # DescribeTransactions
    66: (0, 1),  # ListTransactions
}

# The first version of each API that knows PRODUCER_FENCED; older ones get
# INVALID_PRODUCER_EPOCH, which their clients treat as the same fatal error.
_PRODUCER_FENCED_SINCE = {22: 4, 24: 2, 25: 2, 26: 2, 28: 99}

Reply = tuple[Any, int] | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fenced_for(api_key: int, version: int, error_code: int) -> int:
    if error_code == PRODUCER_FENCED and version < _PRODUCER_FENCED_SINCE[api_key]:
        return INVALID_PRODUCER_EPOCH
    return error_code


class TransactionHandlers:
    """Kafka's transaction APIs for the broker's dispatch table (see `table`)."""

    def __init__(
        self,
        config: BrokerConfig,
        manager: LogManager,
        producer_ids: ProducerIdAllocator,
        groups: GroupHandlers,
        *,
        data_arrived: Callable[[], None],
    ) -> None:
        """`data_arrived` wakes waiting fetches: a marker moves the last stable offset."""
        self.config = config
        self.manager = manager
        self.producer_ids = producer_ids
        self.groups = groups
        self._data_arrived = data_arrived
        self.supported_versions = dict(TRANSACTION_SUPPORTED_VERSIONS)
        self.table: dict[int, Callable[[Request], Awaitable[Reply]]] = {
            22: self.init_producer_id,
            24: self.add_partitions_to_txn,
            25: self.add_offsets_to_txn,
            26: self.end_txn,
            28: self.txn_offset_commit,
            65: self.describe_transactions,
            66: self.list_transactions,
        }
        self.store = TransactionStore(manager, now_ms=_now_ms())
        self.coordinator = self.store.coordinator
        self._markers_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    # --- storage and time -----------------------------------------------------------------

    async def _persist(self) -> bool:
        """Append what the machine queued and wait until it is on disk."""
        return await persist_store(self.store)

    def _ensure_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            try:
                self.coordinator.expire(_now_ms())
                if await self._persist():
                    await self._write_markers()
            except Exception:  # a bug here must not stop every transaction's clock
                _log.exception("transaction coordinator tick failed")
            await asyncio.sleep(TICK_INTERVAL_MS / 1000)

    async def start(self) -> None:
        """Drive markers of transactions a restart found half-ended, then keep the clock."""
        self._ensure_ticker()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self._persist()

    # --- markers --------------------------------------------------------------------------

    async def _write_markers(self) -> None:
        """Write every pending marker, durably, then record the transactions as complete."""
        async with self._markers_lock:
            markers = self.coordinator.pending_markers()
            # Each decision durable before its markers: a caller persisted before waiting
            # here, but a decision made meanwhile may still be on its way to disk.
            if not markers or not await self._persist():
                return
            written = False
            for marker in markers:
                if await self._write_marker(marker):
                    self.coordinator.markers_written(
                        marker.transactional_id, marker.producer_epoch, _now_ms()
                    )
                    written = True
            if written:
                await self._persist()
                self._data_arrived()

    async def _write_marker(self, marker: MarkerRequest) -> bool:
        loop = asyncio.get_running_loop()
        control = ControlType.COMMIT if marker.commit else ControlType.ABORT
        flushes = []
        failed = False
        for topic, partition in marker.partitions:
            if topic == OFFSETS_TOPIC:
                # The group coordinator holds the offsets itself: settle them there (a record
                # it could not write stays queued for the next try).
                self.groups.coordinator.complete_transaction(
                    marker.producer_id, marker.commit, _now_ms()
                )
                if not await self.groups.persist():
                    failed = True
                    break
                continue
            try:
                log = self.manager.partition(topic, partition)
                result = log.append_transaction_marker(
                    marker.producer_id,
                    marker.producer_epoch,
                    control,
                    marker.coordinator_epoch,
                    wait_for_flush=False,
                )
            except UnknownTopicOrPartitionError:
                continue  # deleted since: nothing left to mark
            except InvalidProducerEpochError:
                continue  # a newer epoch already ended it there
            except HeadwaterError:
                _log.exception("writing a transaction marker to %s-%d failed", topic, partition)
                failed = True
                break
            flushes.append(loop.run_in_executor(None, log.flush, result.last_offset + 1))
        outcomes = await asyncio.gather(*flushes, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                _log.error("flushing a transaction marker failed: %s", outcome)
                failed = True
        return not failed

    # --- Produce: transaction verification -----------------------------------------------

    def verify_produce(
        self, transactional_id: str | None, log: PartitionLog, records: bytes | memoryview
    ) -> tuple[int, str | None]:
        """Kafka's transaction verification (KIP-890 part 1) for one partition's batch.

        A transactional data batch is accepted only from the producer id and epoch the
        transactional id has now, in an open transaction that added this partition, unless
        the partition already holds that producer's open transaction. Without it, a produce
        delayed past its transaction's end would open a transaction nobody ends, and hold
        every read-committed consumer of the partition back for good. An error code and
        message; (NONE, None) for a batch that is not transactional or passes.
        """
        if len(records) < BATCH_HEADER_SIZE or not records[_ATTRIBUTES_LOW_BYTE] & _TRANSACTIONAL:
            return NONE, None
        if transactional_id is None:
            return TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None
        header = parse_header(records)
        if header.is_control:
            return NONE, None  # the log refuses a client's marker (INVALID_RECORD)
        found = self.coordinator.entry(transactional_id)  # read only, no copy per batch
        if found is None or found.producer_id != header.producer_id:
            return INVALID_PRODUCER_ID_MAPPING, None
        if found.producer_epoch != header.producer_epoch:
            return INVALID_PRODUCER_EPOCH, None
        if log.has_open_transaction(header.producer_id):
            return NONE, None  # verified when the transaction's first batch came
        if found.state is not TransactionState.ONGOING or not found.has_partition(
            log.topic, log.partition
        ):
            return INVALID_TXN_STATE, "Partition was not added to the transaction"
        return NONE, None

    # --- InitProducerId -------------------------------------------------------------------

    async def init_producer_id(self, request: Request) -> Reply:
        body: m.InitProducerIdRequest = request.body
        version = request.api_version
        if not body.transactional_id:  # None: idempotent only; "": INVALID_REQUEST
            return init_producer_id(self.producer_ids, body, version), version
        self._ensure_ticker()
        result = self.coordinator.init_producer_id(
            body.transactional_id,
            body.transaction_timeout_ms,
            producer_id=body.producer_id if version >= 3 else -1,
            producer_epoch=body.producer_epoch if version >= 3 else -1,
            now_ms=_now_ms(),
            allocate=self.producer_ids.allocate,
        )
        error = result.error_code
        if not await self._persist():
            error = COORDINATOR_NOT_AVAILABLE
        if error == CONCURRENT_TRANSACTIONS:
            await self._write_markers()  # a fenced transaction's abort: the retry succeeds
        return m.InitProducerIdResponse(
            error_code=_fenced_for(22, version, error),
            producer_id=result.producer_id if error == NONE else -1,
            producer_epoch=result.producer_epoch if error == NONE else -1,
        ), version

    # --- AddPartitionsToTxn, AddOffsetsToTxn ----------------------------------------------

    async def add_partitions_to_txn(self, request: Request) -> Reply:
        body: m.AddPartitionsToTxnRequest = request.body
        version = request.api_version
        if version >= 4:  # batched broker-to-broker form: not advertised
            return m.AddPartitionsToTxnResponse(error_code=INVALID_REQUEST), version
        self._ensure_ticker()
        wanted = [(t.name, p) for t in body.v3_and_below_topics for p in t.partitions]
        unknown = {(t, p) for t, p in wanted if not self._exists(t, p)}
        if unknown:
            # Kafka adds none of them: the unknown ones fail, the rest are OPERATION_NOT_ATTEMPTED.
            errors = {tp: 3 if tp in unknown else 55 for tp in wanted}
        else:
            error = self.coordinator.add_partitions(
                body.v3_and_below_transactional_id,
                body.v3_and_below_producer_id,
                body.v3_and_below_producer_epoch,
                wanted,
                _now_ms(),
            )
            if not await self._persist():
                error = COORDINATOR_NOT_AVAILABLE
            errors = {tp: _fenced_for(24, version, error) for tp in wanted}
        return m.AddPartitionsToTxnResponse(
            results_by_topic_v3_and_below=[
                m.AddPartitionsToTxnResponseAddPartitionsToTxnTopicResult(
                    name=topic.name,
                    results_by_partition=[
                        m.AddPartitionsToTxnResponseAddPartitionsToTxnPartitionResult(
                            partition_index=partition,
                            partition_error_code=errors[(topic.name, partition)],
                        )
                        for partition in topic.partitions
                    ],
                )
                for topic in body.v3_and_below_topics
            ]
        ), version

    def _exists(self, topic: str, partition: int) -> bool:
        try:
            return 0 <= partition < self.manager.topic(topic).partition_count
        except HeadwaterError:
            return False

    async def add_offsets_to_txn(self, request: Request) -> Reply:
        body: m.AddOffsetsToTxnRequest = request.body
        self._ensure_ticker()
        error = self.coordinator.add_offsets(
            body.transactional_id, body.producer_id, body.producer_epoch, body.group_id, _now_ms()
        )
        if not await self._persist():
            error = COORDINATOR_NOT_AVAILABLE
        return m.AddOffsetsToTxnResponse(
            error_code=_fenced_for(25, request.api_version, error)
        ), request.api_version

    # --- EndTxn ---------------------------------------------------------------------------

    async def end_txn(self, request: Request) -> Reply:
        body: m.EndTxnRequest = request.body
        self._ensure_ticker()
        error = self.coordinator.end_transaction(
            body.transactional_id,
            body.producer_id,
            body.producer_epoch,
            body.committed,
            _now_ms(),
        )
        if not await self._persist():
            error = COORDINATOR_NOT_AVAILABLE
        elif error == NONE:
            # The decision is durable; the markers make it visible before the client hears.
            await self._write_markers()
        return m.EndTxnResponse(
            error_code=_fenced_for(26, request.api_version, error),
            producer_id=-1,
            producer_epoch=-1,
        ), request.api_version

    # --- TxnOffsetCommit ------------------------------------------------------------------

    async def txn_offset_commit(self, request: Request) -> Reply:
        body: m.TxnOffsetCommitRequest = request.body
        version = request.api_version
        error = self.coordinator.check_offset_commit(
            body.transactional_id, body.producer_id, body.producer_epoch, body.group_id
        )
        entries = [
            (
                topic.name,
                partition.partition_index,
                partition.committed_offset,
                partition.committed_leader_epoch if version >= 2 else -1,
                partition.committed_metadata,
            )
            for topic in body.topics
            for partition in topic.partitions
        ]
        if error != NONE:
            errors = [_fenced_for(28, version, error)] * len(entries)
        else:
            errors = self.groups.coordinator.commit_transactional_offsets(
                _now_ms(),
                producer_id=body.producer_id,
                group_id=body.group_id,
                generation_id=body.generation_id if version >= 3 else -1,
                member_id=body.member_id if version >= 3 else "",
                group_instance_id=body.group_instance_id if version >= 3 else None,
                offsets=entries,
            )
            if not await self.groups.persist():
                errors = [COORDINATOR_NOT_AVAILABLE if e == NONE else e for e in errors]
        by_partition = {(t, p): e for (t, p, *_), e in zip(entries, errors, strict=True)}
        return m.TxnOffsetCommitResponse(
            topics=[
                m.TxnOffsetCommitResponseTxnOffsetCommitResponseTopic(
                    name=topic.name,
                    partitions=[
                        m.TxnOffsetCommitResponseTxnOffsetCommitResponsePartition(
                            partition_index=p.partition_index,
                            error_code=by_partition[(topic.name, p.partition_index)],
                        )
                        for p in topic.partitions
                    ],
                )
                for topic in body.topics
            ]
        ), version

    # --- DescribeTransactions, ListTransactions -------------------------------------------

    async def describe_transactions(self, request: Request) -> Reply:
        body: m.DescribeTransactionsRequest = request.body
        states = []
        for transactional_id in body.transactional_ids:
            found = self.coordinator.describe(transactional_id)
            if found is None:
                states.append(
                    m.DescribeTransactionsResponseTransactionState(
                        error_code=105,  # TRANSACTIONAL_ID_NOT_FOUND
                        transactional_id=transactional_id,
                        transaction_state="",
                        transaction_timeout_ms=0,
                        transaction_start_time_ms=-1,
                        producer_id=-1,
                        producer_epoch=-1,
                    )
                )
                continue
            topics: dict[str, list[int]] = {}
            for topic, partition in sorted(found.partitions):
                topics.setdefault(topic, []).append(partition)
            states.append(
                m.DescribeTransactionsResponseTransactionState(
                    error_code=NONE,
                    transactional_id=transactional_id,
                    transaction_state=found.state,
                    transaction_timeout_ms=found.transaction_timeout_ms,
                    transaction_start_time_ms=found.transaction_start_time_ms,
                    producer_id=found.producer_id,
                    producer_epoch=found.producer_epoch,
                    topics=[
                        m.DescribeTransactionsResponseTopicData(topic=topic, partitions=parts)
                        for topic, parts in topics.items()
                    ],
                )
            )
        return m.DescribeTransactionsResponse(transaction_states=states), request.api_version

    async def list_transactions(self, request: Request) -> Reply:
        body: m.ListTransactionsRequest = request.body
        wanted_states = set(body.state_filters)
        wanted_producers = set(body.producer_id_filters)
        older_than_ms = body.duration_filter if request.api_version >= 1 else -1
        now = _now_ms()
        listed = []
        for transactional_id in self.coordinator.transactional_ids():
            found = self.coordinator.describe(transactional_id)
            if found is None:
                continue
            if wanted_states and found.state not in wanted_states:
                continue
            if wanted_producers and found.producer_id not in wanted_producers:
                continue
            if (
                older_than_ms >= 0
                and found.transaction_start_time_ms >= 0
                and now - found.transaction_start_time_ms <= older_than_ms
            ):
                continue
            listed.append(
                m.ListTransactionsResponseTransactionState(
                    transactional_id=transactional_id,
                    producer_id=found.producer_id,
                    transaction_state=found.state,
                )
            )
        known = {"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit"}
        known |= {"CompleteAbort", "PrepareEpochFence", "Dead"}
        return m.ListTransactionsResponse(
            error_code=NONE,
            unknown_state_filters=sorted(wanted_states - known),
            transaction_states=listed,
        ), request.api_version


__all__ = ["TRANSACTION_SUPPORTED_VERSIONS", "TransactionHandlers"]
