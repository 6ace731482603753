"""The transaction coordinator state machine, driven by hand with a fake clock."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.coordinator.store import OFFSETS_TOPIC
from headwater.coordinator.transaction import (
    CONCURRENT_TRANSACTIONS,
    INVALID_PRODUCER_ID_MAPPING,
    INVALID_REQUEST,
    INVALID_TRANSACTION_TIMEOUT,
    INVALID_TXN_STATE,
    NONE,
    POLICY_VIOLATION,
    PRODUCER_EPOCH_EXHAUSTED,
    PRODUCER_EPOCH_MAX,
    PRODUCER_FENCED,
    InitProducerIdResult,
    MarkerRequest,
    TransactionConfig,
    TransactionCoordinator,
    TransactionEntry,
    TransactionRecordError,
    TransactionState,
    decode_key,
    decode_value,
    encode_value,
    transaction_key,
)
from headwater.errors import InvariantViolation

TXN = "txn"
TIMEOUT = 60_000
OFFSETS = (OFFSETS_TOPIC, 0)


class Harness:
    """A coordinator, a clock, a producer id allocator, and every record it ever drained."""

    def __init__(self, **config: Any) -> None:
        self.now = 1_000_000
        self.config = TransactionConfig(**config)
        self.coordinator = TransactionCoordinator(self.config)
        self.log: list[tuple[bytes, bytes | None]] = []
        self._ids = itertools.count(1000)
        self.allocated: list[int] = []

    def allocate(self) -> int:
        producer_id = next(self._ids)
        self.allocated.append(producer_id)
        return producer_id

    def drain(self) -> list[tuple[bytes, bytes | None]]:
        records = self.coordinator.drain_records()
        self.log.extend(records)
        return records

    def init(
        self, tid: str = TXN, timeout_ms: int = TIMEOUT, pid: int = -1, epoch: int = -1
    ) -> InitProducerIdResult:
        result = self.coordinator.init_producer_id(
            tid,
            timeout_ms,
            producer_id=pid,
            producer_epoch=epoch,
            now_ms=self.now,
            allocate=self.allocate,
        )
        self.drain()
        return result

    def add(self, pid: int, epoch: int, *partitions: tuple[str, int], tid: str = TXN) -> int:
        error = self.coordinator.add_partitions(tid, pid, epoch, partitions, self.now)
        self.drain()
        return error

    def add_offsets(self, pid: int, epoch: int, tid: str = TXN) -> int:
        error = self.coordinator.add_offsets(tid, pid, epoch, "group", self.now)
        self.drain()
        return error

    def end(self, pid: int, epoch: int, commit: bool, tid: str = TXN) -> int:
        error = self.coordinator.end_transaction(tid, pid, epoch, commit, self.now)
        self.drain()
        return error

    def written(self, epoch: int, tid: str = TXN) -> None:
        self.coordinator.markers_written(tid, epoch, self.now)
        self.drain()

    def expire(self) -> None:
        self.coordinator.expire(self.now)
        self.drain()

    def state(self, tid: str = TXN) -> TransactionState:
        entry = self.coordinator.entry(tid)
        assert entry is not None
        return entry.state

    def replayed(self) -> TransactionCoordinator:
        fresh = TransactionCoordinator(self.config)
        for key, value in self.log:
            fresh.replay(key, value, self.now + 123_456)
        assert fresh.drain_records() == []
        return fresh


def snapshot(coordinator: TransactionCoordinator) -> tuple[Any, ...]:
    """Everything observable or durable about a coordinator, for equality checks."""
    entries = {}
    for tid in coordinator.transactional_ids():
        entry = coordinator.entry(tid)
        assert entry is not None
        entries[tid] = (
            entry.producer_id,
            entry.producer_epoch,
            entry.last_producer_id,
            entry.last_producer_epoch,
            entry.transaction_timeout_ms,
            entry.state,
            entry.sorted_partitions(),
            entry.transaction_start_time_ms,
            entry.last_update_ms,
            coordinator.describe(tid),
        )
    return entries, sorted(coordinator.pending_markers())


def assert_replay_equivalent(h: Harness) -> None:
    assert snapshot(h.replayed()) == snapshot(h.coordinator)


# --- lifecycle ---------------------------------------------------------------------------------


def test_new_transactional_id_gets_a_new_producer_id_at_epoch_zero() -> None:
    h = Harness()
    result = h.init()
    assert result == InitProducerIdResult(NONE, 1000, 0)
    assert h.state() is TransactionState.EMPTY
    assert len(h.log) == 1 and decode_key(h.log[0][0]) == TXN
    description = h.coordinator.describe(TXN)
    assert description is not None
    assert description.state == "Empty"
    assert description.transaction_timeout_ms == TIMEOUT
    assert description.transaction_start_time_ms == -1
    assert h.coordinator.transactional_ids() == [TXN]
    assert h.coordinator.describe("other") is None


def test_commit_lifecycle_with_markers() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    h.now += 10
    assert h.add(pid, epoch, ("a", 1), ("a", 0)) == NONE
    start = h.now
    assert h.state() is TransactionState.ONGOING
    h.now += 10
    assert h.add_offsets(pid, epoch) == NONE
    assert h.coordinator.check_offset_commit(TXN, pid, epoch, "group") == NONE
    assert h.end(pid, epoch, commit=True) == NONE
    assert h.state() is TransactionState.PREPARE_COMMIT
    marker = MarkerRequest(TXN, pid, epoch, True, 0, (OFFSETS, ("a", 0), ("a", 1)))
    assert h.coordinator.pending_markers() == [marker]
    assert h.coordinator.pending_markers() == [marker]  # idempotent until confirmed
    description = h.coordinator.describe(TXN)
    assert description is not None and description.state == "PrepareCommit"
    assert description.transaction_start_time_ms == start
    # The next transaction waits for the markers.
    assert h.add(pid, epoch, ("b", 0)) == CONCURRENT_TRANSACTIONS
    assert h.init(pid=pid, epoch=epoch).error_code == CONCURRENT_TRANSACTIONS
    assert h.end(pid, epoch, commit=True) == CONCURRENT_TRANSACTIONS
    assert h.end(pid, epoch, commit=False) == INVALID_TXN_STATE
    before = len(h.log)
    h.written(epoch)
    assert h.state() is TransactionState.COMPLETE_COMMIT
    assert h.coordinator.pending_markers() == []
    assert len(h.log) == before + 1
    description = h.coordinator.describe(TXN)
    assert description is not None and description.partitions == ()
    assert h.end(pid, epoch, commit=True) == NONE  # a retry whose answer was lost
    assert h.end(pid, epoch, commit=False) == INVALID_TXN_STATE
    # The next transaction starts afresh with the same epoch (protocol version 1).
    h.now += 1000
    assert h.add(pid, epoch, ("b", 0)) == NONE
    description = h.coordinator.describe(TXN)
    assert description is not None
    assert description.partitions == (("b", 0),)
    assert description.transaction_start_time_ms == h.now
    assert_replay_equivalent(h)


def test_abort_lifecycle_with_markers() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0)) == NONE
    assert h.end(pid, epoch, commit=False) == NONE
    assert h.state() is TransactionState.PREPARE_ABORT
    assert h.coordinator.pending_markers() == [
        MarkerRequest(TXN, pid, epoch, False, 0, (("a", 0),))
    ]
    assert h.end(pid, epoch, commit=False) == CONCURRENT_TRANSACTIONS
    assert h.end(pid, epoch, commit=True) == INVALID_TXN_STATE
    h.written(epoch)
    assert h.state() is TransactionState.COMPLETE_ABORT
    assert h.end(pid, epoch, commit=False) == NONE
    assert h.end(pid, epoch, commit=True) == INVALID_TXN_STATE
    assert_replay_equivalent(h)


def test_end_transaction_on_empty_is_invalid_state_either_way() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.end(pid, epoch, commit=True) == INVALID_TXN_STATE
    assert h.end(pid, epoch, commit=False) == INVALID_TXN_STATE
    assert h.state() is TransactionState.EMPTY


def test_ongoing_without_partitions_completes_without_markers() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch) == NONE  # Kafka starts a transaction even for an empty add
    assert h.state() is TransactionState.ONGOING
    assert h.end(pid, epoch, commit=True) == NONE
    assert h.state() is TransactionState.COMPLETE_COMMIT
    assert h.coordinator.pending_markers() == []
    assert_replay_equivalent(h)


def test_adding_nothing_new_answers_none_without_a_record() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0), ("a", 1)) == NONE
    before = len(h.log)
    assert h.add(pid, epoch, ("a", 1)) == NONE
    assert h.add(pid, epoch) == NONE
    assert len(h.log) == before
    assert h.add(pid, epoch, ("a", 1), ("b", 0)) == NONE
    assert len(h.log) == before + 1
    description = h.coordinator.describe(TXN)
    assert description is not None
    assert description.partitions == (("a", 0), ("a", 1), ("b", 0))


def test_producer_checks_on_add_end_and_offset_commit() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0), tid="unknown") == INVALID_PRODUCER_ID_MAPPING
    assert h.add(pid + 1, epoch, ("a", 0)) == INVALID_PRODUCER_ID_MAPPING
    assert h.end(pid + 1, epoch, commit=True) == INVALID_PRODUCER_ID_MAPPING
    assert h.add(pid, epoch + 1, ("a", 0)) == PRODUCER_FENCED
    assert h.add_offsets(pid + 1, epoch) == INVALID_PRODUCER_ID_MAPPING
    assert h.add(pid, epoch, ("a", 0), tid="") == INVALID_REQUEST
    assert h.add(pid, epoch, ("a", -1)) == INVALID_REQUEST
    assert h.add(pid, epoch, ("", 0)) == INVALID_REQUEST
    assert h.state() is TransactionState.EMPTY
    check = h.coordinator.check_offset_commit
    assert check("unknown", pid, epoch, "group") == INVALID_PRODUCER_ID_MAPPING
    assert check(TXN, pid, epoch, "group") == INVALID_TXN_STATE  # nothing ongoing
    assert h.add(pid, epoch, ("a", 0)) == NONE
    assert check(TXN, pid, epoch, "group") == INVALID_TXN_STATE  # offsets not added
    assert h.add_offsets(pid, epoch) == NONE
    assert check(TXN, pid, epoch, "group") == NONE
    assert check(TXN, pid, epoch + 1, "group") == PRODUCER_FENCED
    assert h.end(pid, epoch, commit=True) == NONE
    assert check(TXN, pid, epoch, "group") == INVALID_TXN_STATE  # ending


# --- InitProducerId -----------------------------------------------------------------------------


def test_init_on_idle_states_bumps_the_epoch() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.init() == InitProducerIdResult(NONE, pid, 1)
    assert h.add(pid, 1, ("a", 0)) == NONE
    assert h.end(pid, 1, commit=True) == NONE
    h.written(1)
    assert h.init(timeout_ms=5_000) == InitProducerIdResult(NONE, pid, 2)
    description = h.coordinator.describe(TXN)
    assert description is not None
    assert description.state == "Empty" and description.transaction_timeout_ms == 5_000
    assert h.add(pid, 1, ("a", 0)) == PRODUCER_FENCED
    assert h.allocated == [pid]
    assert epoch == 0


def test_invalid_transaction_timeouts_and_requests() -> None:
    h = Harness(transaction_max_timeout_ms=10_000)
    for timeout in (0, -1, 10_001):
        assert h.init(timeout_ms=timeout).error_code == INVALID_TRANSACTION_TIMEOUT
    assert h.coordinator.transactional_ids() == []
    assert h.init(timeout_ms=10_000).error_code == NONE
    assert h.init(tid="", timeout_ms=10_000).error_code == INVALID_REQUEST
    assert h.init(timeout_ms=10_000, pid=5).error_code == INVALID_REQUEST  # half a pair
    assert h.init(timeout_ms=10_000, epoch=5).error_code == INVALID_REQUEST
    assert h.allocated == [1000]


def test_second_init_fences_an_ongoing_transaction() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0), ("b", 3)) == NONE
    # A second producer with the same transactional id starts.
    assert h.init() == InitProducerIdResult(CONCURRENT_TRANSACTIONS, -1, -1)
    assert h.state() is TransactionState.PREPARE_ABORT
    assert h.coordinator.pending_markers() == [
        MarkerRequest(TXN, pid, epoch + 1, False, 0, (("a", 0), ("b", 3)))
    ]
    assert_replay_equivalent(h)  # the fence is durable before anyone is told
    # The zombie is fenced everywhere.
    assert h.add(pid, epoch, ("c", 0)) == PRODUCER_FENCED
    assert h.end(pid, epoch, commit=True) == PRODUCER_FENCED
    assert h.coordinator.check_offset_commit(TXN, pid, epoch, "group") == PRODUCER_FENCED
    # The new producer retries until the abort markers are written.
    assert h.init().error_code == CONCURRENT_TRANSACTIONS
    h.written(epoch)  # a confirmation at the old epoch matches nothing
    assert h.state() is TransactionState.PREPARE_ABORT
    h.written(epoch + 1)
    assert h.state() is TransactionState.COMPLETE_ABORT
    assert h.init() == InitProducerIdResult(NONE, pid, epoch + 2)
    assert h.add(pid, epoch, ("a", 0)) == PRODUCER_FENCED
    assert h.add(pid, epoch + 1, ("a", 0)) == PRODUCER_FENCED
    assert h.add(pid, epoch + 2, ("a", 0)) == NONE
    assert_replay_equivalent(h)


def test_fence_of_an_ongoing_transaction_without_partitions_needs_no_markers() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch) == NONE
    assert h.init().error_code == CONCURRENT_TRANSACTIONS
    assert h.state() is TransactionState.COMPLETE_ABORT
    assert h.coordinator.pending_markers() == []
    assert h.init() == InitProducerIdResult(NONE, pid, epoch + 2)


def test_kip_360_init_with_the_current_pair_bumps_and_a_retry_gets_the_same_answer() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.init(pid=pid, epoch=epoch) == InitProducerIdResult(NONE, pid, epoch + 1)
    # The answer was lost: the retry carries the old pair and gets the same answer again.
    assert h.init(pid=pid, epoch=epoch) == InitProducerIdResult(NONE, pid, epoch + 1)
    # An older or unknown pair is fenced; so is a pair from another producer id.
    assert h.init(pid=pid, epoch=epoch + 5).error_code == PRODUCER_FENCED
    assert h.init(pid=pid + 7, epoch=epoch + 1).error_code == PRODUCER_FENCED
    # A bump without a pair forgets the previous one: the retry is now stale.
    assert h.init() == InitProducerIdResult(NONE, pid, epoch + 2)
    assert h.init(pid=pid, epoch=epoch).error_code == PRODUCER_FENCED
    assert_replay_equivalent(h)


def test_kip_360_pair_for_an_unknown_id_is_ignored() -> None:
    h = Harness()
    assert h.init(pid=77, epoch=3) == InitProducerIdResult(NONE, 1000, 0)


def test_kip_360_producer_fencing_its_own_transaction_may_retry() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0)) == NONE
    assert h.init(pid=pid, epoch=epoch).error_code == CONCURRENT_TRANSACTIONS
    assert h.init(pid=pid, epoch=epoch).error_code == CONCURRENT_TRANSACTIONS
    h.written(epoch + 1)
    assert h.init(pid=pid, epoch=epoch) == InitProducerIdResult(NONE, pid, epoch + 1)
    assert h.init(pid=pid, epoch=epoch) == InitProducerIdResult(NONE, pid, epoch + 1)


def test_kip_360_stale_pair_cannot_fence_an_ongoing_transaction() -> None:
    h = Harness()
    pid, _ = h.init()[1:]
    assert h.init(pid=pid, epoch=0) == InitProducerIdResult(NONE, pid, 1)
    assert h.add(pid, 1, ("a", 0)) == NONE
    # Epoch 0 was the previous pair, but the holder of epoch 1 has a transaction going.
    assert h.init(pid=pid, epoch=0).error_code == PRODUCER_FENCED
    assert h.init(pid=pid, epoch=9).error_code == PRODUCER_FENCED
    assert h.state() is TransactionState.ONGOING


def _seed(h: Harness, entry: TransactionEntry) -> None:
    """Start `h` from a stored state, as a restart would."""
    record = (transaction_key(entry.transactional_id), encode_value(entry))
    h.log.append(record)
    h.coordinator.replay(*record, h.now)


def test_epoch_exhaustion_allocates_a_new_producer_id() -> None:
    h = Harness()
    _seed(h, TransactionEntry(TXN, 500, PRODUCER_EPOCH_EXHAUSTED - 1, TIMEOUT))
    assert h.init() == InitProducerIdResult(NONE, 500, PRODUCER_EPOCH_EXHAUSTED)
    assert h.init() == InitProducerIdResult(NONE, 1000, 0)
    assert h.allocated == [1000]
    assert h.add(500, PRODUCER_EPOCH_EXHAUSTED, ("a", 0)) == INVALID_PRODUCER_ID_MAPPING
    assert h.add(1000, 0, ("a", 0)) == NONE
    assert_replay_equivalent(h)


def test_epoch_exhaustion_with_kip_360_pair_can_be_retried() -> None:
    h = Harness()
    _seed(h, TransactionEntry(TXN, 500, PRODUCER_EPOCH_EXHAUSTED, TIMEOUT))
    pair = {"pid": 500, "epoch": PRODUCER_EPOCH_EXHAUSTED}
    assert h.init(**pair) == InitProducerIdResult(NONE, 1000, 0)
    assert h.init(**pair) == InitProducerIdResult(NONE, 1000, 0)
    assert h.allocated == [1000]
    assert h.init(pid=1000, epoch=0) == InitProducerIdResult(NONE, 1000, 1)
    assert_replay_equivalent(h)


def test_fencing_at_the_last_epoch_uses_the_reserved_one_then_rotates() -> None:
    h = Harness()
    _seed(h, TransactionEntry(TXN, 500, PRODUCER_EPOCH_EXHAUSTED, TIMEOUT))
    assert h.add(500, PRODUCER_EPOCH_EXHAUSTED, ("a", 0)) == NONE
    assert h.init().error_code == CONCURRENT_TRANSACTIONS
    [marker] = h.coordinator.pending_markers()
    assert marker.producer_epoch == PRODUCER_EPOCH_MAX
    # No client holds the reserved epoch: claiming it is fenced.
    assert h.end(500, PRODUCER_EPOCH_MAX, commit=True) == PRODUCER_FENCED
    h.written(PRODUCER_EPOCH_MAX)
    assert h.init() == InitProducerIdResult(NONE, 1000, 0)


def test_allocator_handing_out_an_id_in_use_is_a_bug() -> None:
    h = Harness()
    h.init()
    coordinator = h.coordinator
    with pytest.raises(InvariantViolation):
        coordinator.init_producer_id(
            "other", TIMEOUT, producer_id=-1, producer_epoch=-1, now_ms=h.now, allocate=lambda: 1000
        )
    with pytest.raises(InvariantViolation):
        coordinator.init_producer_id(
            "other", TIMEOUT, producer_id=-1, producer_epoch=-1, now_ms=h.now, allocate=lambda: -3
        )


# --- time ---------------------------------------------------------------------------------------


def test_timed_out_transaction_is_aborted_with_a_bumped_epoch() -> None:
    h = Harness()
    pid, epoch = h.init(timeout_ms=10_000)[1:]
    assert h.add(pid, epoch, ("a", 0)) == NONE
    start = h.now
    h.now = start + 10_000
    h.expire()
    assert h.state() is TransactionState.ONGOING
    h.now = start + 10_001
    h.expire()
    assert h.state() is TransactionState.PREPARE_ABORT
    assert h.coordinator.pending_markers() == [
        MarkerRequest(TXN, pid, epoch + 1, False, 0, (("a", 0),))
    ]
    assert_replay_equivalent(h)
    # The timed-out producer is a zombie now.
    assert h.end(pid, epoch, commit=True) == PRODUCER_FENCED
    assert h.add(pid, epoch, ("b", 0)) == PRODUCER_FENCED
    assert h.init(pid=pid, epoch=epoch).error_code == PRODUCER_FENCED
    h.expire()  # nothing more to do: it is not Ongoing any more
    assert len(h.coordinator.pending_markers()) == 1
    h.written(epoch + 1)
    assert h.state() is TransactionState.COMPLETE_ABORT
    assert h.init() == InitProducerIdResult(NONE, pid, epoch + 2)


def test_replayed_ongoing_transaction_keeps_its_start_and_expires() -> None:
    h = Harness()
    pid, epoch = h.init(timeout_ms=10_000)[1:]
    assert h.add(pid, epoch, ("a", 0)) == NONE
    start = h.now
    restarted = h.replayed()
    restarted.expire(start + 10_001)
    entry = restarted.entry(TXN)
    assert entry is not None and entry.state is TransactionState.PREPARE_ABORT
    assert [m.producer_epoch for m in restarted.pending_markers()] == [epoch + 1]


def test_idle_transactional_ids_are_removed_with_a_tombstone() -> None:
    day_ms = 24 * 60 * 60 * 1000
    h = Harness(
        transactional_id_expiration_ms=7 * day_ms, transactional_id_expiration_check_interval_ms=0
    )
    pid, epoch = h.init("idle")[1:]
    busy_pid, busy_epoch = h.init("busy", timeout_ms=900_000)[1:]
    done_pid, done_epoch = h.init("done")[1:]
    assert h.add(done_pid, done_epoch, ("a", 0), tid="done") == NONE
    assert h.end(done_pid, done_epoch, True, tid="done") == NONE
    h.written(done_epoch, tid="done")
    h.now += 7 * day_ms - 1
    h.expire()
    assert h.coordinator.transactional_ids() == ["busy", "done", "idle"]
    # Keep "busy" in a transaction that has not timed out.
    assert h.add(busy_pid, busy_epoch, ("a", 0), tid="busy") == NONE
    h.now += 1
    h.expire()
    assert h.coordinator.transactional_ids() == ["busy"]
    tombstones = [decode_key(k) for k, v in h.log if v is None]
    assert sorted(tombstones) == ["done", "idle"]
    assert_replay_equivalent(h)
    # A returning producer starts over with a new producer id.
    assert h.init("idle") == InitProducerIdResult(NONE, max(h.allocated[:-1]) + 1, 0)
    assert h.add(pid, epoch, ("a", 0), tid="idle") == INVALID_PRODUCER_ID_MAPPING


def test_transactional_id_expiry_waits_for_its_check_interval() -> None:
    h = Harness(
        transactional_id_expiration_ms=100, transactional_id_expiration_check_interval_ms=1000
    )
    h.expire()  # the first check runs at once, and schedules the next
    h.init()
    h.now += 500
    h.expire()
    assert h.coordinator.transactional_ids() == [TXN]
    h.now += 500
    h.expire()
    assert h.coordinator.transactional_ids() == []


# --- bounds -------------------------------------------------------------------------------------


def test_transactional_ids_bound_refuses_new_ids_only() -> None:
    h = Harness(transactional_ids_max=2)
    assert h.init("a").error_code == NONE
    assert h.init("b").error_code == NONE
    assert h.init("c") == InitProducerIdResult(POLICY_VIOLATION, -1, -1)
    assert h.allocated == [1000, 1001]
    assert h.init("a") == InitProducerIdResult(NONE, 1000, 1)
    assert h.coordinator.transactional_ids() == ["a", "b"]


def test_partitions_bound_refuses_the_whole_add() -> None:
    h = Harness(transaction_partitions_max=3, transaction_topics_max=2)
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0), ("a", 1), ("a", 2), ("a", 3)) == POLICY_VIOLATION
    assert h.state() is TransactionState.EMPTY
    assert h.add(pid, epoch, ("a", 0), ("a", 1)) == NONE
    assert h.add(pid, epoch, ("a", 1), ("b", 0), ("b", 1)) == POLICY_VIOLATION
    assert h.add(pid, epoch, ("a", 1), ("b", 0)) == NONE
    assert h.add(pid, epoch, ("c", 0)) == POLICY_VIOLATION
    description = h.coordinator.describe(TXN)
    assert description is not None
    assert description.partitions == (("a", 0), ("a", 1), ("b", 0))


def test_topics_bound_refuses_the_whole_add() -> None:
    h = Harness(transaction_topics_max=2)
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0), ("b", 0), ("c", 0)) == POLICY_VIOLATION
    assert h.add(pid, epoch, ("a", 0), ("b", 0)) == NONE
    assert h.add(pid, epoch, ("b", 1)) == NONE
    assert h.add_offsets(pid, epoch) == POLICY_VIOLATION


# --- records ------------------------------------------------------------------------------------


def test_markers_written_without_a_pending_marker_changes_nothing() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    before = len(h.log)
    h.written(epoch)
    h.written(epoch, tid="unknown")
    assert h.add(pid, epoch, ("a", 0)) == NONE
    h.written(epoch)
    assert h.state() is TransactionState.ONGOING
    assert len(h.log) == before + 1


def test_replay_of_drained_records_at_every_step_reproduces_the_state() -> None:
    h = Harness(
        transactional_id_expiration_ms=10**9, transactional_id_expiration_check_interval_ms=0
    )
    pid, epoch = h.init()[1:]
    steps = [
        lambda: h.add(pid, epoch, ("a", 0)),
        lambda: h.add_offsets(pid, epoch),
        lambda: h.end(pid, epoch, commit=True),
        lambda: h.written(epoch),
        lambda: h.add(pid, epoch, ("b", 2)),
        lambda: h.init("second"),
        lambda: h.init(),  # fences the ongoing transaction
        lambda: h.written(epoch + 1),
        lambda: h.init(),
        lambda: h.add(pid, epoch + 2, ("c", 1)),
        lambda: h.end(pid, epoch + 2, commit=False),
    ]
    for step in steps:
        h.now += 17
        step()
        assert_replay_equivalent(h)
        restarted = h.replayed()
        assert sorted(restarted.pending_markers()) == sorted(h.coordinator.pending_markers())
    h.now += 10**9
    h.expire()
    assert h.coordinator.transactional_ids() == [TXN]  # still PrepareAbort: never expires
    assert_replay_equivalent(h)


def test_replay_restores_pending_markers_of_prepared_transactions() -> None:
    h = Harness()
    pid, epoch = h.init()[1:]
    assert h.add(pid, epoch, ("a", 0), ("a", 5)) == NONE
    assert h.end(pid, epoch, commit=True) == NONE
    restarted = h.replayed()
    assert restarted.pending_markers() == [
        MarkerRequest(TXN, pid, epoch, True, 0, (("a", 0), ("a", 5)))
    ]
    restarted.markers_written(TXN, epoch, h.now)
    entry = restarted.entry(TXN)
    assert entry is not None and entry.state is TransactionState.COMPLETE_COMMIT
    [(key, value)] = restarted.drain_records()
    assert decode_key(key) == TXN and value is not None
    assert decode_value(TXN, value).state is TransactionState.COMPLETE_COMMIT


def test_replay_last_record_wins_and_tombstone_removes() -> None:
    h = Harness()
    h.init()
    h.init()
    fresh = h.replayed()
    entry = fresh.entry(TXN)
    assert entry is not None and entry.producer_epoch == 1
    fresh.replay(transaction_key(TXN), None, h.now)
    assert fresh.transactional_ids() == []
    fresh.replay(transaction_key("never"), None, h.now)  # a tombstone for nothing: fine
    assert fresh.transactional_ids() == []


def _valid_value() -> bytes:
    entry = TransactionEntry(
        TXN,
        7,
        3,
        TIMEOUT,
        TransactionState.PREPARE_COMMIT,
        partitions={"topic": {0, 2}, "other": {1}},
        transaction_start_time_ms=5,
        last_update_ms=9,
    )
    return encode_value(entry)


def _header(**fields: int) -> bytes:
    values = {
        "version": 0,
        "pid": 7,
        "epoch": 3,
        "last_pid": -1,
        "last_epoch": -1,
        "timeout": TIMEOUT,
        "state": 0,
        "start": -1,
        "update": 9,
        "topics": 0,
    }
    values.update(fields)
    return struct.pack(">hqhqhibqqi", *values.values())


def _topic(name: bytes, *partitions: int, count: int | None = None) -> bytes:
    number = len(partitions) if count is None else count
    return (
        struct.pack(">H", len(name))
        + name
        + struct.pack(f">i{len(partitions)}i", number, *partitions)
    )


MALFORMED_KEYS = [
    b"",
    b"\x00",
    b"\x00\x01\x00\x01a",  # unknown version
    b"\x00\x00\x00\x02a",  # length past the end
    b"\x00\x00\x00\x01ab",  # trailing bytes
    b"\x00\x00\x00\x00",  # empty id
    b"\x00\x00\x00\x01\xff",  # not UTF-8
    b'["group","g"]',  # a group coordinator key is not ours
]


@pytest.mark.parametrize("key", MALFORMED_KEYS)
def test_malformed_keys_are_typed_errors(key: bytes) -> None:
    coordinator = TransactionCoordinator()
    with pytest.raises(TransactionRecordError):
        coordinator.replay(key, _valid_value(), 0)
    with pytest.raises(TransactionRecordError):
        coordinator.replay(key, None, 0)


MALFORMED_VALUES = [
    b"",
    b"\x00",
    b"\x00\x05" + _valid_value()[2:],  # unknown version
    _valid_value() + b"\x00",  # trailing bytes
    _header(state=9),
    _header(pid=-1),
    _header(epoch=-1),
    _header(epoch=-5),
    _header(last_pid=3, last_epoch=-7),
    _header(last_pid=5),  # half a last pair
    _header(last_pid=-1, last_epoch=4),
    _header(timeout=0),
    _header(start=-2),
    _header(update=-1),
    _header(topics=-1),
    _header(topics=1000),
    _header(state=2, start=5),  # PrepareCommit without partitions
    _header(state=1, start=-1),  # Ongoing without a start
    _header(state=4, start=5, topics=1) + _topic(b"a", 0),  # Complete with partitions
    _header(state=1, start=5, topics=1) + _topic(b"a", 0, 0),  # repeated partition
    _header(state=1, start=5, topics=1) + _topic(b"a", -1),
    _header(state=1, start=5, topics=1) + _topic(b"a"),  # no partitions for a topic
    _header(state=1, start=5, topics=1) + _topic(b"a", 0, count=2),  # count past the end
    _header(state=1, start=5, topics=1) + _topic(b"a", 0, count=-1),
    _header(state=1, start=5, topics=1) + _topic(b"", 0),
    _header(state=1, start=5, topics=1) + _topic(b"\xff", 0),
    _header(state=1, start=5, topics=2) + _topic(b"a", 0) + _topic(b"a", 1),  # topic twice
    _header(state=1, start=5, topics=2) + _topic(b"a", 0),  # a topic missing
]


@pytest.mark.parametrize("value", MALFORMED_VALUES)
def test_malformed_values_are_typed_errors(value: bytes) -> None:
    coordinator = TransactionCoordinator()
    with pytest.raises(TransactionRecordError):
        coordinator.replay(transaction_key(TXN), value, 0)
    assert coordinator.transactional_ids() == []


def test_every_truncation_of_a_value_is_a_typed_error() -> None:
    value = _valid_value()
    assert decode_value(TXN, value).partitions == {"topic": {0, 2}, "other": {1}}
    for length in range(len(value)):
        with pytest.raises(TransactionRecordError):
            decode_value(TXN, value[:length])


def test_a_producer_id_claimed_by_two_ids_is_a_typed_error() -> None:
    coordinator = TransactionCoordinator()
    coordinator.replay(transaction_key("a"), encode_value(TransactionEntry("a", 7, 0, TIMEOUT)), 0)
    with pytest.raises(TransactionRecordError):
        coordinator.replay(
            transaction_key("b"), encode_value(TransactionEntry("b", 7, 0, TIMEOUT)), 0
        )
    # The same id moving to a new producer id (a rotation) is fine, and frees the old one.
    coordinator.replay(transaction_key("a"), encode_value(TransactionEntry("a", 8, 0, TIMEOUT)), 0)
    coordinator.replay(transaction_key("b"), encode_value(TransactionEntry("b", 7, 0, TIMEOUT)), 0)
    assert coordinator.transactional_ids() == ["a", "b"]


# --- properties ---------------------------------------------------------------------------------

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def _entries(draw: st.DrawFn) -> TransactionEntry:
    state = draw(st.sampled_from(list(TransactionState)))
    if state in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT):
        min_topics = 1
    elif state is TransactionState.ONGOING:
        min_topics = 0
    else:
        min_topics = -1
    partitions: dict[str, set[int]] = {}
    if min_topics >= 0:
        partitions = draw(
            st.dictionaries(
                _names,
                st.sets(st.integers(0, 2**31 - 1), min_size=1, max_size=5),
                min_size=min_topics,
                max_size=4,
            )
        )
    last = draw(
        st.one_of(
            st.just((-1, -1)),
            st.tuples(st.integers(0, 2**63 - 1), st.integers(0, PRODUCER_EPOCH_MAX)),
        )
    )
    start_low = -1 if state is TransactionState.EMPTY else 0
    return TransactionEntry(
        draw(_names),
        draw(st.integers(0, 2**63 - 1)),
        draw(st.integers(0, PRODUCER_EPOCH_MAX)),
        draw(st.integers(1, 2**31 - 1)),
        state,
        last[0],
        last[1],
        partitions,
        draw(st.integers(start_low, 2**62)),
        draw(st.integers(0, 2**62)),
    )


@given(_entries())
def test_record_round_trip(entry: TransactionEntry) -> None:
    key = transaction_key(entry.transactional_id)
    assert decode_key(key) == entry.transactional_id
    assert decode_value(entry.transactional_id, encode_value(entry)) == entry


@given(st.binary(max_size=80))
def test_random_bytes_never_escape_as_anything_but_a_typed_error(data: bytes) -> None:
    coordinator = TransactionCoordinator()
    try:
        coordinator.replay(data, data, 0)
        coordinator.replay(transaction_key(TXN), data, 0)
    except TransactionRecordError:
        pass


_TIDS = ["t0", "t1", "t2"]
_TOPIC_PARTITIONS = [("a", 0), ("a", 1), ("b", 0)]

_modes = st.sampled_from(["own", "own", "own", "stale"])
_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("init"), st.sampled_from(_TIDS), st.sampled_from(["fresh", "own", "stale"])
        ),
        st.tuples(
            st.just("add"),
            st.sampled_from(_TIDS),
            _modes,
            st.lists(st.sampled_from(_TOPIC_PARTITIONS), max_size=3),
        ),
        st.tuples(st.just("offsets"), st.sampled_from(_TIDS), _modes),
        st.tuples(st.just("end"), st.sampled_from(_TIDS), _modes, st.booleans()),
        st.tuples(st.just("written"), st.integers(0, 3)),
        st.tuples(st.just("tick"), st.sampled_from([1, 1_000, 20_000, 200_000])),
        st.tuples(st.just("restart")),
    ),
    min_size=5,
    max_size=60,
)


def _check_invariants(
    h: Harness,
    history: dict[str, tuple[int, int]],
    owners: dict[int, str],
) -> None:
    coordinator = h.coordinator
    pending = {m.transactional_id: m for m in coordinator.pending_markers()}
    assert len(pending) == len(coordinator.pending_markers())
    for tid in coordinator.transactional_ids():
        entry = coordinator.entry(tid)
        assert entry is not None
        # A producer id serves one transactional id, ever.
        assert owners.setdefault(entry.producer_id, tid) == tid
        # Epochs never go down while the producer id stays; a new producer id starts at 0.
        previous = history.get(tid)
        if previous is not None and previous[0] == entry.producer_id:
            assert entry.producer_epoch >= previous[1]
        history[tid] = (entry.producer_id, entry.producer_epoch)
        assert 0 <= entry.producer_epoch <= PRODUCER_EPOCH_MAX
        state = entry.state
        if state in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT):
            marker = pending[tid]
            assert marker.producer_id == entry.producer_id
            assert marker.producer_epoch == entry.producer_epoch
            assert marker.commit == (state is TransactionState.PREPARE_COMMIT)
            assert marker.partitions == entry.sorted_partitions() != ()
        else:
            assert tid not in pending
        if state is TransactionState.ONGOING:
            assert entry.transaction_start_time_ms >= 0
        elif state not in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT):
            assert entry.partitions == {}
    assert set(pending) <= set(coordinator.transactional_ids())
    assert_replay_equivalent(h)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_operations)
def test_random_operations_keep_the_invariants(operations: list[tuple[Any, ...]]) -> None:
    h = Harness(
        transaction_max_timeout_ms=100_000,
        transactional_id_expiration_ms=300_000,
        transactional_id_expiration_check_interval_ms=0,
    )
    producers: dict[str, tuple[int, int]] = {}  # what each id's latest producer holds
    history: dict[str, tuple[int, int]] = {}
    owners: dict[int, str] = {}

    def pair(tid: str, mode: str) -> tuple[int, int]:
        held = producers.get(tid, (999, 0))
        return held if mode == "own" else (held[0], max(0, held[1] - 1))

    for tid in _TIDS:  # every id starts with a producer, so most operations get somewhere
        first = h.init(tid, timeout_ms=50_000)
        producers[tid] = (first.producer_id, first.producer_epoch)

    for operation in operations:
        kind = operation[0]
        h.now += 1
        if kind == "init":
            _, tid, mode = operation
            pid, epoch = (-1, -1) if mode == "fresh" else pair(tid, mode)
            if mode != "fresh" and tid not in producers:
                pid, epoch = -1, -1
            result = h.init(tid, timeout_ms=50_000, pid=pid, epoch=epoch)
            if result.error_code == NONE:
                assert result.producer_epoch < PRODUCER_EPOCH_MAX
                producers[tid] = (result.producer_id, result.producer_epoch)
            else:
                assert result.error_code in (CONCURRENT_TRANSACTIONS, PRODUCER_FENCED)
        elif kind == "add":
            _, tid, mode, partitions = operation
            error = h.add(*pair(tid, mode), *partitions, tid=tid)
            assert error in (
                NONE,
                CONCURRENT_TRANSACTIONS,
                PRODUCER_FENCED,
                INVALID_PRODUCER_ID_MAPPING,
            )
        elif kind == "offsets":
            _, tid, mode = operation
            h.add_offsets(*pair(tid, mode), tid=tid)
        elif kind == "end":
            _, tid, mode, commit = operation
            before = h.coordinator.entry(tid)
            was_ongoing = before is not None and before.state is TransactionState.ONGOING
            error = h.end(*pair(tid, mode), commit, tid=tid)
            if error == NONE and was_ongoing:
                assert h.state(tid) is not TransactionState.ONGOING
        elif kind == "written":
            markers = h.coordinator.pending_markers()
            if markers:
                marker = markers[operation[1] % len(markers)]
                h.written(marker.producer_epoch, tid=marker.transactional_id)
                assert h.state(marker.transactional_id) in (
                    TransactionState.COMPLETE_COMMIT,
                    TransactionState.COMPLETE_ABORT,
                )
        elif kind == "tick":
            h.now += operation[1]
            h.expire()
            for tid in h.coordinator.transactional_ids():
                entry = h.coordinator.entry(tid)
                assert entry is not None
                if entry.state is TransactionState.ONGOING:
                    assert h.now <= entry.transaction_start_time_ms + entry.transaction_timeout_ms
        else:
            h.coordinator = h.replayed()
        _check_invariants(h, history, owners)
    # Every producer id handed out was fresh.
    assert len(set(h.allocated)) == len(h.allocated)
