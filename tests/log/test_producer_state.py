"""The idempotent-producer state of a partition: sequences, duplicates, epochs, snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import InvalidRecordError
from headwater.log.producer_state import (
    BATCHES_PER_PRODUCER,
    SEQUENCE_MAX,
    CorruptProducerSnapshotError,
    DuplicateOf,
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
    ProducerStateManager,
    UnknownProducerIdError,
    last_sequence,
)
from headwater.log.record_batch import (
    BatchHeader,
    NewRecord,
    TimestampType,
    encode_batch,
    parse_header,
)

PID = 7


def header(
    count: int = 1,
    *,
    producer_id: int = PID,
    epoch: int = 0,
    sequence: int = 0,
    log_append_time: bool = False,
) -> BatchHeader:
    records = [NewRecord(b"k", b"v%d" % i, timestamp=1_000 + i) for i in range(count)]
    return parse_header(
        encode_batch(
            records,
            producer_id=producer_id,
            producer_epoch=epoch,
            base_sequence=sequence,
            timestamp_type=(
                TimestampType.LOG_APPEND_TIME if log_append_time else TimestampType.CREATE_TIME
            ),
            now_ms=5_000,
        )
    )


class Log:
    """A tiny stand-in for the partition log: check, append, update, as it will."""

    def __init__(self, state: ProducerStateManager | None = None) -> None:
        self.state = state if state is not None else ProducerStateManager()
        self.next_offset = 0
        self.batches: list[tuple[BatchHeader, int]] = []

    def append(self, batch: BatchHeader) -> tuple[int, int]:
        duplicate = self.state.check(batch)
        if duplicate is not None:
            return duplicate.base_offset, duplicate.last_offset
        base = self.next_offset
        self.state.update(batch, base, -1)
        self.batches.append((batch, base))
        self.next_offset = base + batch.last_offset_delta + 1
        return base, base + batch.last_offset_delta


# --- unit -------------------------------------------------------------------------------------


def test_batches_without_producer_id_are_not_checked() -> None:
    state = ProducerStateManager()
    plain = parse_header(encode_batch([NewRecord(None, b"v")]))
    assert state.check(plain) is None
    state.update(plain, 0, -1)
    assert len(state) == 0
    assert state.end_offset == 1


def test_in_order_sequences_are_accepted() -> None:
    log = Log()
    assert log.append(header(3, sequence=0)) == (0, 2)
    assert log.append(header(2, sequence=3)) == (3, 4)
    assert log.append(header(1, sequence=5)) == (5, 5)
    entry = log.state.entry(PID)
    assert entry is not None
    assert entry.epoch == 0
    assert [(b.base_sequence, b.last_sequence) for b in entry.batches] == [(0, 2), (3, 4), (5, 5)]


def test_duplicate_returns_the_original_offsets() -> None:
    log = Log()
    log.append(header(1, producer_id=99, sequence=0))  # another producer moves the offsets
    first = header(3, sequence=0)
    assert log.append(first) == (1, 3)
    log.append(header(2, sequence=3))
    assert log.state.check(first) == DuplicateOf(1, 3, -1)
    assert log.append(first) == (1, 3)
    assert log.next_offset == 6  # nothing appended again


def test_duplicate_reports_the_log_append_time() -> None:
    state = ProducerStateManager()
    batch = header(1, sequence=0)
    state.update(batch, 10, 123_456)
    assert state.check(batch) == DuplicateOf(10, 10, 123_456)


def test_last_five_batches_are_duplicates_the_sixth_is_out_of_order() -> None:
    log = Log()
    batches = [header(2, sequence=2 * i) for i in range(BATCHES_PER_PRODUCER + 1)]
    for batch in batches:
        log.append(batch)
    for index, batch in enumerate(batches[1:], start=1):
        assert log.state.check(batch) == DuplicateOf(2 * index, 2 * index + 1, -1)
    with pytest.raises(OutOfOrderSequenceError) as raised:
        log.state.check(batches[0])
    assert raised.value.error_code == 45


def test_partial_overlap_is_out_of_order() -> None:
    log = Log()
    log.append(header(3, sequence=0))
    with pytest.raises(OutOfOrderSequenceError):
        log.state.check(header(2, sequence=0))  # same first sequence, different last


def test_gap_is_out_of_order() -> None:
    log = Log()
    log.append(header(2, sequence=0))
    with pytest.raises(OutOfOrderSequenceError):
        log.state.check(header(1, sequence=3))


def test_check_does_not_change_the_state() -> None:
    log = Log()
    log.append(header(2, sequence=0))
    before = log.state.snapshot()
    assert log.state.check(header(1, sequence=2)) is None
    assert log.state.check(header(1, epoch=1, sequence=0)) is None
    assert log.state.check(header(1, producer_id=8, sequence=0)) is None
    assert log.state.snapshot() == before


def test_unknown_producer_must_start_at_zero() -> None:
    state = ProducerStateManager()
    assert state.check(header(1, sequence=0)) is None
    with pytest.raises(UnknownProducerIdError) as raised:
        state.check(header(1, sequence=5))
    assert raised.value.error_code == 59


def test_new_epoch_resets_sequences() -> None:
    log = Log()
    log.append(header(3, sequence=0))
    with pytest.raises(OutOfOrderSequenceError):
        log.state.check(header(1, epoch=1, sequence=3))
    assert log.append(header(1, epoch=1, sequence=0)) == (3, 3)
    entry = log.state.entry(PID)
    assert entry is not None
    assert entry.epoch == 1
    assert len(entry.batches) == 1
    assert log.append(header(1, epoch=1, sequence=1)) == (4, 4)


def test_old_epoch_is_rejected() -> None:
    log = Log()
    log.append(header(1, epoch=3, sequence=0))
    for sequence in (0, 1):  # even a retry of an old batch, even an in-sequence one
        with pytest.raises(InvalidProducerEpochError) as raised:
            log.state.check(header(1, epoch=2, sequence=sequence))
        assert raised.value.error_code == 47


def test_negative_sequence_with_a_producer_id_is_invalid() -> None:
    state = ProducerStateManager()
    with pytest.raises(InvalidRecordError):
        state.check(header(1, sequence=-1))


def test_last_sequence_wraps() -> None:
    assert last_sequence(0, 4) == 4
    assert last_sequence(SEQUENCE_MAX, 0) == SEQUENCE_MAX
    assert last_sequence(SEQUENCE_MAX, 1) == 0
    assert last_sequence(SEQUENCE_MAX - 1, 3) == 1


def test_sequences_wrap_around() -> None:
    state = ProducerStateManager()
    # `update` trusts the log, so it can place the producer right below the limit.
    state.update(header(1, sequence=SEQUENCE_MAX - 2), 0, -1)
    log = Log(state)
    log.next_offset = 1
    wrapping = header(3, sequence=SEQUENCE_MAX - 1)  # SEQUENCE_MAX - 1, SEQUENCE_MAX, 0
    assert log.append(wrapping) == (1, 3)
    entry = state.entry(PID)
    assert entry is not None
    assert entry.batches[-1].last_sequence == 0
    assert log.state.check(wrapping) == DuplicateOf(1, 3, -1)
    with pytest.raises(OutOfOrderSequenceError):
        state.check(header(1, sequence=SEQUENCE_MAX))
    assert log.append(header(1, sequence=1)) == (4, 4)


def test_sequence_max_is_followed_by_zero() -> None:
    state = ProducerStateManager()
    state.update(header(1, sequence=SEQUENCE_MAX), 0, -1)
    assert state.check(header(1, sequence=0)) is None
    assert state.check(header(1, sequence=SEQUENCE_MAX)) == DuplicateOf(0, 0, -1)
    with pytest.raises(OutOfOrderSequenceError):
        state.check(header(1, sequence=1))


def test_eviction_keeps_the_most_recently_written() -> None:
    state = ProducerStateManager(max_producer_ids=3)
    offset = 0
    for producer_id in (1, 2, 3):
        state.update(header(1, producer_id=producer_id, sequence=0), offset, -1)
        offset += 1
    state.update(header(1, producer_id=1, sequence=1), offset, -1)  # 1 is now the newest
    offset += 1
    state.update(header(1, producer_id=4, sequence=0), offset, -1)
    assert state.producer_ids() == [3, 1, 4]
    assert 2 not in state
    with pytest.raises(UnknownProducerIdError):
        state.check(header(1, producer_id=2, sequence=1))


def test_update_below_end_offset_is_a_bug() -> None:
    state = ProducerStateManager()
    state.update(header(2, sequence=0), 5, -1)
    with pytest.raises(Exception, match="below"):
        state.update(header(1, sequence=2), 6, -1)


def test_snapshot_round_trip() -> None:
    log = Log(ProducerStateManager(max_producer_ids=50))
    for producer_id in range(5):
        for sequence in range(0, 14, 2):
            log.append(header(2, producer_id=producer_id, sequence=sequence))
    data = log.state.snapshot()
    restored = ProducerStateManager.restore(data, max_producer_ids=50)
    assert restored.snapshot() == data
    assert restored.end_offset == log.state.end_offset
    assert restored.producer_ids() == log.state.producer_ids()
    for producer_id in range(5):
        assert restored.entry(producer_id) == log.state.entry(producer_id)
    assert restored.check(header(2, producer_id=3, sequence=12)) == log.state.check(
        header(2, producer_id=3, sequence=12)
    )


def test_restore_with_a_smaller_bound_keeps_the_newest() -> None:
    state = ProducerStateManager()
    for producer_id in range(10):
        state.update(header(1, producer_id=producer_id), producer_id, -1)
    restored = ProducerStateManager.restore(state.snapshot(), max_producer_ids=3)
    assert restored.producer_ids() == [7, 8, 9]


def test_empty_snapshot_round_trip() -> None:
    data = ProducerStateManager().snapshot()
    restored = ProducerStateManager.restore(data)
    assert len(restored) == 0
    assert restored.end_offset == 0


def test_corrupt_snapshots_are_detected() -> None:
    log = Log()
    log.append(header(2, sequence=0))
    log.append(header(2, producer_id=9, sequence=0))
    data = log.state.snapshot()
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        with pytest.raises(CorruptProducerSnapshotError):
            ProducerStateManager.restore(bytes(damaged))
    for length in range(len(data)):
        with pytest.raises(CorruptProducerSnapshotError):
            ProducerStateManager.restore(data[:length])
    with pytest.raises(CorruptProducerSnapshotError):
        ProducerStateManager.restore(data + b"\x00")


def test_rebuild_derives_the_log_append_time_from_the_header() -> None:
    batch = header(2, sequence=0, log_append_time=True)
    state = ProducerStateManager()
    state.rebuild([(batch, 0)])
    assert state.check(batch) == DuplicateOf(0, 1, 5_000)


def test_rebuild_after_a_snapshot_skips_what_it_holds() -> None:
    log = Log()
    for sequence in range(4):
        log.append(header(1, sequence=sequence))
    data = log.state.snapshot()
    for sequence in range(4, 8):
        log.append(header(1, sequence=sequence))
    recovered = ProducerStateManager.restore(data)
    recovered.rebuild(log.batches)  # replays from the start: the first four are skipped
    assert recovered.snapshot() == log.state.snapshot()


# --- properties ---------------------------------------------------------------------------


@st.composite
def producer_actions(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """(producer id, epoch bump?, record count) steps for a few well-behaved producers."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, 4),
                st.integers(0, 9).map(lambda n: int(n == 0)),
                st.integers(1, 4),
            ),
            max_size=40,
        )
    )


def _play(actions: list[tuple[int, int, int]], state: ProducerStateManager) -> Log:
    """Well-behaved producers: every batch continues its sequence; all must be accepted."""
    log = Log(state)
    position: dict[int, tuple[int, int]] = {}  # producer -> (epoch, next sequence)
    for producer_id, bump, count in actions:
        epoch, sequence = position.get(producer_id, (0, 0))
        if producer_id in position and (bump or producer_id not in log.state):
            # A bump, or what a client does on UNKNOWN_PRODUCER_ID after its state was evicted.
            epoch, sequence = epoch + 1, 0
        batch = header(count, producer_id=producer_id, epoch=epoch, sequence=sequence)
        base = log.next_offset
        assert log.append(batch) == (base, base + count - 1)
        position[producer_id] = (epoch, sequence + count)
    return log


@settings(max_examples=60, deadline=None)
@given(producer_actions())
def test_well_behaved_producers_are_always_accepted(actions: list[tuple[int, int, int]]) -> None:
    _play(actions, ProducerStateManager())


@settings(max_examples=60, deadline=None)
@given(producer_actions(), st.data())
def test_retries_of_recent_batches_return_the_original_offsets(
    actions: list[tuple[int, int, int]], data: st.DataObject
) -> None:
    log = _play(actions, ProducerStateManager())
    for batch, base in log.batches:
        entry = log.state.entry(batch.producer_id)
        assert entry is not None
        recent = any(b.base_offset == base for b in entry.batches)
        if entry.epoch != batch.producer_epoch:
            with pytest.raises(InvalidProducerEpochError):
                log.state.check(batch)
        elif recent:
            assert log.state.check(batch) == DuplicateOf(base, base + batch.last_offset_delta, -1)
        else:
            with pytest.raises(OutOfOrderSequenceError):
                log.state.check(batch)
    retriable = [
        (batch, base)
        for batch, base in log.batches
        if any(
            b.base_offset == base
            for b in getattr(log.state.entry(batch.producer_id), "batches", ())
        )
    ]
    if retriable:
        before = log.state.snapshot()
        batch, base = data.draw(st.sampled_from(retriable))
        assert log.append(batch) == (base, base + batch.last_offset_delta)
        assert log.state.snapshot() == before  # a retry changes nothing


@settings(max_examples=60, deadline=None)
@given(producer_actions(), st.integers(1, 5), st.data())
def test_rebuild_and_snapshot_equal_incremental_state(
    actions: list[tuple[int, int, int]], bound: int, data: st.DataObject
) -> None:
    log = _play(actions, ProducerStateManager(max_producer_ids=bound))
    rebuilt = ProducerStateManager(max_producer_ids=bound)
    rebuilt.rebuild(log.batches)
    assert rebuilt.snapshot() == log.state.snapshot()
    assert len(rebuilt) <= bound
    # A snapshot part way plus the headers after it gives the same state too.
    cut = data.draw(st.integers(0, len(log.batches)))
    partial = ProducerStateManager(max_producer_ids=bound)
    partial.rebuild(log.batches[:cut])
    resumed = ProducerStateManager.restore(partial.snapshot(), max_producer_ids=bound)
    resumed.rebuild(log.batches)
    assert resumed.snapshot() == log.state.snapshot()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, SEQUENCE_MAX), st.integers(0, 1000), st.integers(1, 100))
def test_gaps_and_next_sequence(start: int, delta: int, gap: int) -> None:
    state = ProducerStateManager()
    state.update(header(1, sequence=start), 0, -1)
    following = (start + 1) % (SEQUENCE_MAX + 1)
    assert state.check(header(1, sequence=following)) is None
    skipped = (start + 1 + gap) % (SEQUENCE_MAX + 1)
    if skipped != start:
        with pytest.raises(OutOfOrderSequenceError):
            state.check(header(1, sequence=skipped))
    assert last_sequence(start, delta) == (start + delta) % (SEQUENCE_MAX + 1)
